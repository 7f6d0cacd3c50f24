//! argon2id password hashes (PHC strings), computed on tokio's blocking pool with at most
//! a bounded number at a time: each holds `memory_kib` of memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::CredentialError;

/// argon2id cost parameters. The defaults are OWASP's: 19 MiB, 2 passes, 1 lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Settings {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// Requests that may wait for a hashing slot, per slot: beyond them a request is refused at
/// once (the portal answers 503), so a flood holds neither memory nor sockets for long.
pub const QUEUE_PER_SLOT: usize = 8;

/// Hashes and verifies passwords off the async workers, a bounded number at a time, with a
/// bounded queue before them.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

impl PasswordHasher {
    /// A hasher with `settings`, running at most `max_concurrent` hashes at once (about one
    /// per core is right: each is CPU-bound).
    pub fn new(settings: Argon2Settings, max_concurrent: usize) -> Result<Self, CredentialError> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| CredentialError::Hashing(format!("invalid argon2 parameters: {e}")))?;
        let slots = max_concurrent.max(1);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(slots)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: slots * QUEUE_PER_SLOT,
        })
    }

    /// The argon2id PHC string of `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, CredentialError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let password = password.to_owned();
        self.blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| CredentialError::Hashing(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches the PHC string `stored` (with the parameters stored in it).
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, CredentialError> {
        let hash = PasswordHash::new(stored)
            .map_err(|e| CredentialError::Hashing(format!("the stored hash is not a PHC string: {e}")))?;
        let password = password.to_owned();
        self.blocking(move || Ok(Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, CredentialError> + Send + 'static,
    ) -> Result<T, CredentialError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let place = Waiting::join(&self.waiting, self.max_waiting).ok_or(CredentialError::Busy)?;
                let acquired = self.permits.clone().acquire_owned().await;
                drop(place);
                acquired.map_err(|e| CredentialError::Blocking(e.to_string()))?
            }
        };
        // Sign-in traffic is work too: memory is not trimmed under it, which would give
        // back the hash's freed 19 MiB only for the next check to fault it in again.
        crate::memory::note_work();
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| CredentialError::Blocking(e.to_string()))?
    }
}

/// A place in the queue, given back when dropped — also when the request waiting in it is
/// abandoned (the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: these tests check behaviour, not cost.
    fn hasher() -> PasswordHasher {
        PasswordHasher::new(Argon2Settings { memory_kib: 64, iterations: 1, parallelism: 1 }, 2).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let hasher = hasher();
        let hash = hasher.hash("correct horse battery staple").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(hasher.verify("correct horse battery staple", &hash).await.unwrap());
        assert!(!hasher.verify("correct horse battery stapler", &hash).await.unwrap());
    }

    #[tokio::test]
    async fn beyond_the_slots_and_their_queue_a_request_is_refused_at_once() {
        let hasher =
            PasswordHasher::new(Argon2Settings { memory_kib: 64, iterations: 1, parallelism: 1 }, 1).unwrap();
        let stored = hasher.hash("queued passphrase").await.unwrap();
        let held = hasher.permits.clone().acquire_owned().await.unwrap();
        let queued: Vec<_> = (0..QUEUE_PER_SLOT)
            .map(|_| {
                let (hasher, stored) = (hasher.clone(), stored.clone());
                tokio::spawn(async move { hasher.verify("queued passphrase", &stored).await })
            })
            .collect();
        while hasher.waiting.load(Ordering::SeqCst) < QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hasher.verify("queued passphrase", &stored).await, Err(CredentialError::Busy)));
        drop(held);
        for waiting in queued {
            assert!(waiting.await.unwrap().unwrap(), "a queued check completes once a slot frees");
        }
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn salts_differ_between_hashes_of_one_password() {
        let hasher = hasher();
        assert_ne!(hasher.hash("same password").await.unwrap(), hasher.hash("same password").await.unwrap());
    }

    #[tokio::test]
    async fn verification_uses_the_parameters_stored_in_the_hash() {
        let stored = hasher().hash("a long passphrase").await.unwrap();
        let other = PasswordHasher::new(Argon2Settings::default(), 1).unwrap();
        assert!(other.verify("a long passphrase", &stored).await.unwrap());
    }

    #[tokio::test]
    async fn a_stored_value_that_is_not_a_phc_string_is_an_error_without_the_password() {
        let error = hasher().verify("secret-password", "not a hash").await.unwrap_err();
        assert!(!error.to_string().contains("secret-password"));
    }

    #[test]
    fn defaults_are_owasp() {
        assert_eq!(
            Argon2Settings::default(),
            Argon2Settings { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
        );
        assert!(
            PasswordHasher::new(Argon2Settings { memory_kib: 1, iterations: 0, parallelism: 0 }, 1).is_err()
        );
    }
}
