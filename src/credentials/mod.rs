//! Credentials, as pure functions: argon2id password hashing, the password policy, TOTP
//! (RFC 6238) with a replay guard, the lockout rule, and single-use tokens stored only as SHA-256.
//! Nothing here logs, and no error carries a secret.

mod lockout;
mod password;
mod policy;
pub mod record;
mod token;
mod totp;

pub use lockout::{Lockout, Standing};
pub use password::{Argon2Settings, PasswordHasher};
pub use policy::{PasswordPolicy, PolicyViolation};
pub use record::CredentialFacts;
pub use token::{Token, hash_token, hashes_match};
pub use totp::{TotpRejected, TotpSecret, otpauth_uri, verify_totp};

/// Why a credential operation failed; never contains the secret it worked on.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    /// Argon2 refused its parameters or input, or a stored hash is not a PHC string.
    #[error("password hashing: {0}")]
    Hashing(String),
    /// Every hashing slot is taken and the queue before them is full: try again shortly.
    #[error("too many password checks at once; try again shortly")]
    Busy,
    /// The blocking pool is gone (the runtime is shutting down).
    #[error("password hashing task did not finish: {0}")]
    Blocking(String),
    /// A stored TOTP secret is not base32, or a TOTP could not be built.
    #[error("TOTP: {0}")]
    Totp(String),
}

/// Fills a buffer of `N` bytes from the OS random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CredentialError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CredentialError::Random(e.to_string()))?;
    Ok(bytes)
}
