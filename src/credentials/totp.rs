//! TOTP second factors (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, ±1 step), with a
//! replay guard: a step once accepted is never accepted again.

use std::fmt;

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use super::{CredentialError, random_bytes};

const DIGITS: u8 = 6;
const STEP_SECONDS: u64 = 30;
const SKEW_STEPS: u64 = 1;

/// A TOTP shared secret (160 bits, as RFC 4226 recommends). Its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A fresh secret from the OS RNG.
    pub fn generate() -> Result<Self, CredentialError> {
        Ok(Self(random_bytes::<20>()?.to_vec()))
    }

    /// Parses the base32 form (RFC 4648, no padding), as stored and as typed into an app.
    pub fn from_base32(encoded: &str) -> Result<Self, CredentialError> {
        Secret::try_from_base32(encoded.trim())
            .map(|secret| Self(secret.as_bytes().to_vec()))
            .map_err(|_| CredentialError::Totp("the stored secret is not base32".into()))
    }

    /// The base32 form: what is stored, and what a person types into an app by hand.
    pub fn to_base32(&self) -> String {
        Secret::from(self.0.clone()).to_base32()
    }

    /// The code an authenticator app shows at `unix` seconds: what a person types in (and
    /// what tests compute).
    pub fn code_at(&self, unix: u64) -> Result<String, CredentialError> {
        Ok(self.totp(DIGITS, None, "")?.generate(unix).to_string())
    }

    fn totp(&self, digits: u8, issuer: Option<&str>, account: &str) -> Result<Totp, CredentialError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_skew(SKEW_STEPS as u16)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.clone())
            .with_issuer(issuer.map(|i| i.replace(':', " ")))
            .with_account_name(account.replace(':', " "))
            .build()
            .map_err(|e| CredentialError::Totp(e.to_string()))
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The `otpauth://totp/…` URI an authenticator app scans, naming `issuer` (the
/// organisation) and `account` (the person's login).
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> Result<String, CredentialError> {
    secret.totp(DIGITS, Some(issuer), account)?.to_url().map_err(|e| CredentialError::Totp(e.to_string()))
}

/// Why a code was refused. Deliberately coarse: callers answer one generic message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpRejected {
    /// No step within ±1 of now produces this code.
    #[error("the code is wrong or expired")]
    Wrong,
    /// The code is right but its step was already used.
    #[error("the code was already used")]
    Replayed,
}

/// Checks `code` at `now` (Unix seconds) against `secret`, refusing any step at or before
/// `last_used_step`. Returns the step that matched, to be stored as the new
/// `last_used_step`.
pub fn verify_totp(
    secret: &TotpSecret,
    code: &str,
    now: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpRejected> {
    verify_digits(secret, DIGITS, code, now, last_used_step)
}

fn verify_digits(
    secret: &TotpSecret,
    digits: u8,
    code: &str,
    now: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpRejected> {
    let code = code.trim();
    if code.len() != usize::from(digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpRejected::Wrong);
    }
    let totp = secret.totp(digits, None, "").map_err(|_| TotpRejected::Wrong)?;
    let current = now / STEP_SECONDS;
    let mut replayed = false;
    // Every candidate step is computed and compared, so timing does not tell which matched.
    let mut matched = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current + SKEW_STEPS {
        let expected = totp.generate(step * STEP_SECONDS).to_string();
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            if last_used_step.is_some_and(|last| step <= last) {
                replayed = true;
            } else if matched.is_none() {
                matched = Some(step);
            }
        }
    }
    match (matched, replayed) {
        (Some(step), _) => Ok(step),
        (None, true) => Err(TotpRejected::Replayed),
        (None, false) => Err(TotpRejected::Wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret(b"12345678901234567890".to_vec())
    }

    /// RFC 6238 Appendix B, SHA-1 column (8 digits).
    const RFC6238_SHA1: [(u64, &str); 6] = [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ];

    #[test]
    fn rfc6238_appendix_b_vectors() {
        for (time, code) in RFC6238_SHA1 {
            assert_eq!(verify_digits(&rfc_secret(), 8, code, time, None), Ok(time / 30), "T={time}");
        }
    }

    #[test]
    fn six_digit_codes_are_the_last_six_digits_of_the_vectors() {
        for (time, code) in RFC6238_SHA1 {
            assert_eq!(verify_totp(&rfc_secret(), &code[2..], time, None), Ok(time / 30), "T={time}");
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let (time, code) = (1234567890, "005924");
        assert!(verify_totp(&rfc_secret(), code, time + 30, None).is_ok());
        assert!(verify_totp(&rfc_secret(), code, time - 30, None).is_ok());
        assert_eq!(verify_totp(&rfc_secret(), code, time + 60, None), Err(TotpRejected::Wrong));
        assert_eq!(verify_totp(&rfc_secret(), code, time - 60, None), Err(TotpRejected::Wrong));
    }

    #[test]
    fn a_used_step_is_never_accepted_again() {
        let (time, code) = (1234567890, "005924");
        let step = verify_totp(&rfc_secret(), code, time, None).unwrap();
        assert_eq!(verify_totp(&rfc_secret(), code, time, Some(step)), Err(TotpRejected::Replayed));
        assert_eq!(verify_totp(&rfc_secret(), code, time + 30, Some(step)), Err(TotpRejected::Replayed));
        assert_eq!(verify_totp(&rfc_secret(), code, time, Some(step - 1)), Ok(step));
    }

    #[test]
    fn malformed_codes_are_wrong() {
        for code in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(verify_totp(&rfc_secret(), code, 59, None), Err(TotpRejected::Wrong), "{code:?}");
        }
    }

    #[test]
    fn secrets_round_trip_through_base32_and_hide_in_debug() {
        let secret = TotpSecret::generate().unwrap();
        assert_eq!(TotpSecret::from_base32(&secret.to_base32()).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&secret.to_base32()));
        assert!(TotpSecret::from_base32("not base32!").is_err());
    }

    #[test]
    fn otpauth_uri_names_issuer_account_and_parameters() {
        let secret = rfc_secret();
        let uri = otpauth_uri(&secret, "Example Corp", "jane.doe").unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={}", secret.to_base32())), "{uri}");
        assert!(uri.contains("issuer=Example"), "{uri}");
        assert!(uri.contains("jane.doe"), "{uri}");
    }
}
