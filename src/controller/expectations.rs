//! Objects this process just created that its watch caches may not show yet (client-go's
//! "expectations"): a reconcile set off before the cache caught up — by the very writes of
//! the reconcile before it — must not create them again (a wasted request answered 409).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a creation is expected to show up in the cache; after that the cache is
/// believed again (the object may have been deleted at once).
const PATIENCE: Duration = Duration::from_secs(30);
/// Entries beyond which expired ones are swept on the next creation.
const SWEEP_ABOVE: usize = 1024;

/// Creations not yet seen in the cache, by `kind/namespace/name`.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Instant>>);

impl Expectations {
    /// Records that `key` was just created.
    pub fn created(&self, key: String) {
        let mut created = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if created.len() >= SWEEP_ABOVE {
            created.retain(|_, at| at.elapsed() < PATIENCE);
        }
        created.insert(key, Instant::now());
    }

    /// Whether `key`, absent from the cache, was created here moments ago: its watch event
    /// is on its way.
    pub fn awaited(&self, key: &str) -> bool {
        let mut created = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match created.get(key) {
            Some(at) if at.elapsed() < PATIENCE => true,
            Some(_) => {
                created.remove(key);
                false
            }
            None => false,
        }
    }

    /// The cache shows `key`: nothing is awaited any more.
    pub fn seen(&self, key: &str) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_is_awaited_until_seen() {
        let expectations = Expectations::default();
        assert!(!expectations.awaited("Secret/ns/a"));
        expectations.created("Secret/ns/a".into());
        assert!(expectations.awaited("Secret/ns/a"));
        assert!(!expectations.awaited("Secret/ns/b"));
        expectations.seen("Secret/ns/a");
        assert!(!expectations.awaited("Secret/ns/a"));
        assert_eq!(expectations.len(), 0);
    }

    #[test]
    fn an_old_creation_is_not_awaited_and_old_ones_are_swept() {
        let expectations = Expectations::default();
        let long_ago = Instant::now().checked_sub(PATIENCE * 2).unwrap();
        for i in 0..=SWEEP_ABOVE {
            expectations.0.lock().unwrap().insert(format!("Secret/ns/{i}"), long_ago);
        }
        assert!(!expectations.awaited("Secret/ns/0"), "the cache is believed again");
        expectations.created("Secret/ns/new".into());
        assert_eq!(expectations.len(), 1, "expired entries are swept");
    }
}
