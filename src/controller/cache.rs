//! Watch caches shared by the controllers (client-go's "shared informers"): one watch per
//! kind and namespace (or one for all namespaces) feeds one store, and every change —
//! deletions included — is handed to each subscriber only after the store has applied it. A
//! reconcile triggered by a change therefore always reads a cache that already contains
//! that change.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::directory::{self, Conflict, Entry, Identifier};
use crate::index::{Named, Shared, user_term};

/// Whether a cache holds its initial list. kube's `Store::wait_until_ready` wakes only one
/// of several concurrent waiters (and the controller that owns the store is one), so roster
/// signals readiness itself.
pub type ReadySignal = watch::Receiver<bool>;

/// Changes a subscriber may fall behind by before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// The watches of `K`, their cache, and its subscribers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    apis: Vec<(Option<String>, Api<K>)>,
    config: watcher::Config,
    reader: Store<K>,
    writer: Writer<K>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
    followers: Vec<Follower<K>>,
    ready: watch::Sender<bool>,
}

/// What a watch calls with each change before it applies it to the store: an index kept in
/// step with the cache.
pub type Follower<K> = Box<dyn FnMut(&watcher::Event<K>) + Send>;

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A cache of what `apis` list under `config`: one API per watched namespace (named
    /// with it), or one for all namespaces (named `None`). Objects are cached without what
    /// roster never reads (see `trim`).
    pub fn new(apis: Vec<(Option<String>, Api<K>)>, config: watcher::Config) -> Self {
        let (reader, writer) = reflector::store();
        Self {
            apis,
            config,
            reader,
            writer,
            subscribers: Vec::new(),
            followers: Vec::new(),
            ready: watch::Sender::new(false),
        }
    }

    /// Turns true once the cache holds the initial list of every watch (and stays true
    /// across re-lists).
    pub fn ready_signal(&self) -> ReadySignal {
        self.ready.subscribe()
    }

    /// A reader of the cache.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// Keeps `follower` (an index) in step with the cache: it sees every change just before
    /// the store applies it, so a subscriber woken by a change reads both updated.
    pub fn follow(&mut self, follower: impl FnMut(&watcher::Event<K>) + Send + 'static) {
        self.followers.push(Box::new(follower));
    }

    /// A stream of every object that changes (applied or deleted), once the cache has it.
    pub fn subscribe(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(sender);
        receiver
    }

    /// Runs the watches until the process stops. Watch errors are retried with backoff.
    ///
    /// Each watch's (re-)list is applied object by object, and what the list no longer
    /// holds is deleted at its end, so that several watches can share one store (a
    /// reflector's own list handling would replace the whole store with one watch's list).
    pub async fn run(self) {
        let Self { apis, config, mut writer, reader, mut subscribers, mut followers, ready } = self;
        let watches = apis.into_iter().enumerate().map(|(index, (namespace, api))| {
            watcher(api, config.clone())
                .default_backoff()
                .modify(trim)
                .map(move |event| (index, namespace.clone(), event))
                .boxed()
        });
        let mut events = futures::stream::select_all(watches);
        // kube's controllers wait for their store to be ready before they reconcile, and a
        // store turns ready only when a list replaces its whole content. It is marked ready
        // here, empty, and filled object by object: the reconcilers wait for every cache's
        // list themselves (`Caches::ready`), and no copy of the whole cache is made.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let count = events.len();
        let mut listing: Vec<Option<HashSet<ObjectRef<K>>>> = vec![None; count];
        let mut listed = vec![false; count];
        while let Some((index, namespace, event)) = events.next().await {
            let changed: Vec<watcher::Event<K>> = match event {
                Ok(watcher::Event::Init) => {
                    listing[index] = Some(HashSet::new());
                    continue;
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(seen) = listing[index].as_mut() {
                        seen.insert(ObjectRef::from_obj(&obj));
                    }
                    vec![watcher::Event::Apply(obj)]
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = listing[index].take().unwrap_or_default();
                    listed[index] = true;
                    if listed.iter().all(|done| *done) && !*ready.borrow() {
                        ready.send_replace(true);
                    }
                    // Objects deleted while the watch was down.
                    let gone = reader.state().into_iter().filter(|obj| {
                        namespace.as_ref().is_none_or(|ns| obj.namespace().as_ref() == Some(ns))
                            && !seen.contains(&ObjectRef::from_obj(obj.as_ref()))
                    });
                    gone.map(|obj| watcher::Event::Delete(obj.as_ref().clone())).collect()
                }
                Ok(event @ (watcher::Event::Apply(_) | watcher::Event::Delete(_))) => vec![event],
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                    continue;
                }
            };
            for event in changed {
                crate::memory::note_work();
                for follower in &mut followers {
                    follower(&event);
                }
                writer.apply_watcher_event(&event);
                let obj = match event {
                    // The store's copy: subscribers share it instead of holding another.
                    watcher::Event::Apply(obj) => {
                        reader.get(&ObjectRef::from_obj(&obj)).unwrap_or_else(|| Arc::new(obj))
                    }
                    watcher::Event::Delete(obj) => Arc::new(obj),
                    _ => continue,
                };
                for subscriber in &mut subscribers {
                    // A subscriber only goes away when its controller stopped.
                    let _ = subscriber.send(obj.clone()).await;
                }
            }
        }
    }
}

/// What roster never reads is not cached: managedFields, and the copy of the whole object
/// that `kubectl apply` (client-side) and tools like it keep in an annotation — at 10,000
/// Users from Git, that copy alone would double the cache.
pub(super) fn trim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

/// The annotation client-side apply keeps the last applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The caches every reconcile reads instead of the API server.
#[derive(Clone)]
pub struct Caches {
    /// Readiness of each cache.
    pub ready: Vec<ReadySignal>,
    /// Users.
    pub users: Store<crate::api::User>,
    /// UserInvites.
    pub invites: Store<crate::api::UserInvite>,
    /// MfaResets.
    pub resets: Store<crate::api::MfaReset>,
    /// PasswordResets.
    pub password_resets: Store<crate::api::PasswordReset>,
    /// OidcClients.
    pub oidc_clients: Store<crate::api::OidcClient>,
    /// Secrets labelled `app.kubernetes.io/managed-by: roster`.
    pub secrets: Store<k8s_openapi::api::core::v1::Secret>,
    /// Users by email and username (`email:…`, `username:…`, lowercased), oldest first.
    pub directory: Shared<Entry>,
    /// Token Secrets by `<type>:<hash>` of their current and retired tokens.
    pub tokens: Shared<Named>,
    /// UserInvites by the user they name (`namespace/user`).
    pub invites_by_user: Shared<Named>,
    /// MfaResets by the user they name.
    pub resets_by_user: Shared<Named>,
    /// PasswordResets by the user they name.
    pub password_resets_by_user: Shared<Named>,
}

impl Caches {
    /// Whether every cache holds its initial list, now.
    pub fn is_ready(&self) -> bool {
        self.ready.iter().all(|signal| *signal.borrow())
    }

    /// Waits until every cache has its initial list; instant afterwards. `false` if a
    /// cache's watch is gone (the process is stopping).
    pub async fn ready(&self) -> bool {
        for signal in &self.ready {
            if signal.clone().wait_for(|ready| *ready).await.is_err() {
                return false;
            }
        }
        true
    }
}

impl Caches {
    /// The UserInvites that refer to the User `name` in `namespace`.
    pub fn invites_of(&self, namespace: &str, name: &str) -> Vec<Arc<crate::api::UserInvite>> {
        named(&self.invites, &self.invites_by_user, namespace, name)
    }

    /// The MfaResets that refer to the User `name` in `namespace`.
    pub fn resets_of(&self, namespace: &str, name: &str) -> Vec<Arc<crate::api::MfaReset>> {
        named(&self.resets, &self.resets_by_user, namespace, name)
    }

    /// The Secret `name` in `owner`'s namespace, from the cache, if `owner` controls it.
    pub fn owned_secret(
        &self,
        owner: &impl Resource,
        name: &str,
    ) -> Option<Arc<k8s_openapi::api::core::v1::Secret>> {
        let namespace = owner.meta().namespace.clone().unwrap_or_default();
        let secret = self.secrets.get(&ObjectRef::new(name).within(&namespace))?;
        controlled_by(secret.as_ref(), owner).then_some(secret)
    }

    /// The credentials Secret of `user`: only one the User controls holds their credentials.
    pub fn credentials_of(&self, user: &crate::api::User) -> Option<Arc<k8s_openapi::api::core::v1::Secret>> {
        self.owned_secret(user, &crate::controller::names::credentials_secret_name(&user.name_any()))
    }

    /// The PasswordResets that refer to the User `name` in `namespace`.
    pub fn password_resets_of(&self, namespace: &str, name: &str) -> Vec<Arc<crate::api::PasswordReset>> {
        named(&self.password_resets, &self.password_resets_by_user, namespace, name)
    }

    /// The User that holds `identifier` in the directory (the oldest of those that have it).
    pub fn holder(&self, identifier: Identifier<'_>) -> Option<Arc<crate::api::User>> {
        if let Identifier::EmailOrUsername(text) = identifier {
            return self.holder(Identifier::Email(text)).or_else(|| self.holder(Identifier::Username(text)));
        }
        let entry = self.directory.first(&identifier.term())?;
        let (namespace, name) = entry.key.split_once('/')?;
        self.users.get(&ObjectRef::new(name).within(namespace))
    }

    /// Which directory rule `user` breaks, if any, among the Users this instance watches.
    pub fn directory_conflict(
        &self,
        user: &crate::api::User,
        allowed_domains: &[String],
    ) -> Option<Conflict> {
        let me = Entry::of(user);
        let holders: Vec<Entry> = me.terms().iter().filter_map(|term| self.directory.first(term)).collect();
        directory::conflict(&me, &holders, allowed_domains)
    }
}

/// The objects of `store` that `index` files under the User `name` in `namespace`.
fn named<K>(store: &Store<K>, index: &Shared<Named>, namespace: &str, name: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let found = index.get(&user_term(namespace, name));
    found.iter().filter_map(|(ns, name)| store.get(&ObjectRef::new(name).within(ns))).collect()
}

/// Whether `owner` controls `obj`: `obj`'s controller ownerReference names `owner`'s uid.
/// Labels and names prove nothing: anyone who may create Secrets can copy them.
pub fn controlled_by(obj: &impl Resource, owner: &impl Resource) -> bool {
    let uid = owner.meta().uid.as_deref();
    uid.is_some()
        && obj.owner_references().iter().any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// `namespace/name` of an object, for logs and messages.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_neither_managed_fields_nor_the_last_applied_copy() {
        let mut user: crate::api::User = serde_json::from_value(serde_json::json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "User",
            "metadata": {
                "name": "jane", "namespace": "team",
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team.example/owner": "platform"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
            "spec": {"email": "jane@example.com", "username": "jane"},
        }))
        .unwrap();
        trim(&mut user);
        assert!(user.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
        let kept: Vec<&String> = user.annotations().keys().collect();
        assert_eq!(kept, ["team.example/owner"], "other annotations stay");
    }
}
