//! Single-use link tokens: 256 bits from the OS RNG, shown to a person once (in an email or
//! an admin-only Secret) and stored only as their SHA-256.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{CredentialError, random_bytes};

/// A plaintext token. Its `Debug` hides the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token: 32 random bytes, URL-safe base64 without padding (43 characters).
    pub fn generate() -> Result<Self, CredentialError> {
        Ok(Self(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)))
    }

    /// The plaintext, for the one place that must show it (a link).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored instead of the token.
    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of `token`, lowercase hex: the only form a token is stored in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether two token hashes are equal, compared in constant time.
pub fn hashes_match(hash: &str, stored_hash: &str) -> bool {
    hash.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_url_safe_and_distinct() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn hash_is_sha256_hex() {
        // FIPS 180-2 test vector.
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn matching_uses_the_hash() {
        let token = Token::generate().unwrap();
        assert!(hashes_match(&hash_token(token.expose()), &token.hash()));
        assert!(!hashes_match(&hash_token("other"), &token.hash()));
        assert!(!hashes_match(&hash_token(token.expose()), ""));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let token = Token::generate().unwrap();
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
