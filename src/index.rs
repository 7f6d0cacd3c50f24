//! Indexes over the watch caches, kept from watch events: a look-up by key (an email, a
//! username, a token hash, a user's invites) costs O(log N) instead of a scan of every cached
//! object. The reconcilers, their watch mappers and the portal share them, so that no event,
//! reconcile or request grows with the directory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// A multi-map from terms (e.g. `email:jane@example.com`) to the objects that carry them,
/// in the values' order, and from each object to its terms (to forget them when it changes).
/// A term's objects are a sorted `Vec`: almost every term has one, which a `Vec` holds in
/// exactly its size, where a B-tree node has room for eleven.
#[derive(Debug)]
pub struct Index<V> {
    by_term: HashMap<String, Vec<V>>,
    by_object: HashMap<String, (V, Vec<String>)>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Self { by_term: HashMap::new(), by_object: HashMap::new() }
    }
}

impl<V: Ord + Clone> Index<V> {
    /// Records that `object` (its `namespace/name`) is `value` and carries `terms`,
    /// replacing what was recorded for it before.
    pub fn set(&mut self, object: &str, value: V, terms: Vec<String>) {
        self.remove(object);
        for term in &terms {
            match self.by_term.entry(term.clone()) {
                // Allocated for exactly one: most terms never get a second.
                Entry::Vacant(vacant) => drop(vacant.insert(vec![value.clone()])),
                Entry::Occupied(mut occupied) => {
                    let values = occupied.get_mut();
                    if let Err(at) = values.binary_search(&value) {
                        values.insert(at, value.clone());
                    }
                }
            }
        }
        self.by_object.insert(object.to_owned(), (value, terms));
    }

    /// Forgets `object`.
    pub fn remove(&mut self, object: &str) {
        let Some((value, terms)) = self.by_object.remove(object) else { return };
        for term in terms {
            if let Some(values) = self.by_term.get_mut(&term) {
                if let Ok(at) = values.binary_search(&value) {
                    values.remove(at);
                }
                if values.is_empty() {
                    self.by_term.remove(&term);
                }
            }
        }
    }

    /// The objects carrying `term`, in order.
    pub fn get(&self, term: &str) -> Vec<V> {
        self.by_term.get(term).cloned().unwrap_or_default()
    }

    /// The first (least) object carrying `term`.
    pub fn first(&self, term: &str) -> Option<V> {
        self.by_term.get(term).and_then(|values| values.first().cloned())
    }

    /// How many objects are indexed.
    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_object.is_empty()
    }
}

/// What an object is filed as in an index, and under which terms (`None`: not indexed).
pub type Filing<V> = Option<(V, Vec<String>)>;

/// An [`Index`] shared between the watch that keeps it and its readers.
#[derive(Debug)]
pub struct Shared<V>(Arc<RwLock<Index<V>>>);

impl<V> Clone for Shared<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V> Default for Shared<V> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<V: Ord + Clone + Send + Sync + 'static> Shared<V> {
    /// Reads the index.
    pub fn read<T>(&self, with: impl FnOnce(&Index<V>) -> T) -> T {
        with(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The objects carrying `term`.
    pub fn get(&self, term: &str) -> Vec<V> {
        self.read(|index| index.get(term))
    }

    /// The first object carrying `term`.
    pub fn first(&self, term: &str) -> Option<V> {
        self.read(|index| index.first(term))
    }

    /// What a watch of `K` calls with each event it applies: records the object's value
    /// and terms (`None`: not indexed), or forgets a deleted one.
    pub fn follower<K>(&self, terms: fn(&K) -> Filing<V>) -> impl FnMut(&watcher::Event<K>) + Send + 'static
    where
        K: Resource + 'static,
    {
        let shared = self.0.clone();
        move |event| {
            let mut index = shared.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            match event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                    let key = object_key(obj);
                    match terms(obj) {
                        Some((value, terms)) => index.set(&key, value, terms),
                        None => index.remove(&key),
                    }
                }
                watcher::Event::Delete(obj) => index.remove(&object_key(obj)),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    }
}

/// `namespace/name`, the key of an object in an index.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// An object named by namespace and name, as the per-user indexes hold them.
pub type Named = (String, String);

/// The term under which objects referring to the User `name` in `namespace` are indexed.
pub fn user_term(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_found_by_each_term_until_it_changes_or_goes() {
        let mut index = Index::default();
        index.set("ns/a", (2, "a"), vec!["x".into(), "y".into()]);
        index.set("ns/b", (1, "b"), vec!["x".into()]);
        assert_eq!(index.get("x"), vec![(1, "b"), (2, "a")]);
        assert_eq!(index.first("y"), Some((2, "a")));
        index.set("ns/a", (2, "a"), vec!["z".into()]);
        assert_eq!(index.get("x"), vec![(1, "b")]);
        assert_eq!(index.first("y"), None);
        index.remove("ns/b");
        index.remove("ns/unknown");
        assert!(index.get("x").is_empty());
        assert_eq!(index.len(), 1);
        index.remove("ns/a");
        assert!(index.is_empty() && index.by_term.is_empty(), "no empty term is kept");
    }
}
