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

/// Creations not yet seen in the cache, by `kind/namespace/name/owner-uid` (a User deleted
/// and made again is a new owner), and the size that triggers the next sweep.
#[derive(Default)]
pub struct Expectations(Mutex<(HashMap<String, Instant>, usize)>);

/// How long a reconcile that found a creation awaited comes back, in case its watch event
/// never comes (the object was deleted at once).
pub const RECHECK: Duration = PATIENCE;

impl Expectations {
    /// Records that `key` was just created. Expired entries are swept when the map has
    /// doubled since the last sweep, so sweeping costs O(1) per creation on average.
    pub fn created(&self, key: String) {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (created, sweep_at) = &mut *guard;
        if created.len() >= (*sweep_at).max(SWEEP_ABOVE) {
            created.retain(|_, at| at.elapsed() < PATIENCE);
            *sweep_at = created.len() * 2;
        }
        created.insert(key, Instant::now());
    }

    /// Whether `key`, absent from the cache, was created here moments ago: its watch event
    /// is on its way.
    pub fn awaited(&self, key: &str) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let created = &mut guard.0;
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
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).0.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().0.len()
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
            expectations.0.lock().unwrap().0.insert(format!("Secret/ns/{i}"), long_ago);
        }
        assert!(!expectations.awaited("Secret/ns/0"), "the cache is believed again");
        expectations.created("Secret/ns/new".into());
        assert_eq!(expectations.len(), 1, "expired entries are swept");
    }
}
