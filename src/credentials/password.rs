//! argon2id password hashes (PHC strings), computed on tokio's blocking pool with at most
//! a bounded number at a time: each holds `memory_kib` of memory.

use std::sync::Arc;

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

/// Hashes and verifies passwords off the async workers, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// A hasher with `settings`, running at most `max_concurrent` hashes at once (about one
    /// per core is right: each is CPU-bound).
    pub fn new(settings: Argon2Settings, max_concurrent: usize) -> Result<Self, CredentialError> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| CredentialError::Hashing(format!("invalid argon2 parameters: {e}")))?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(max_concurrent.max(1))) })
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
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CredentialError::Blocking(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| CredentialError::Blocking(e.to_string()))?
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
