//! What a signed-in person proves on their account page before a credential changes, judged
//! on the credentials Secret as it is at the write: a session alone changes nothing (it may
//! be a borrowed laptop). Changing the password takes the current password, and a current
//! code when an authenticator is enrolled; replacing the authenticator takes a current code
//! (the current password when none is enrolled yet). Codes are spent like a sign-in's. A
//! failed proof does not say which part failed: a borrowed session must not learn whether a
//! password guess was right.

use k8s_openapi::api::core::v1::Secret;

use crate::credentials::record::{PASSWORD_HASH, TOTP_SECRET};
use crate::facts::text;
use crate::signin::totp_step;

/// What the person typed as proof.
#[derive(Clone, Copy, Debug)]
pub struct Proof<'a> {
    /// Whether the current password was asked for and verified against `seen_hash`
    /// (`None`: not asked).
    pub password_ok: Option<bool>,
    /// The hash the password was verified against.
    pub seen_hash: Option<&'a str>,
    /// The code from the authenticator app, or empty.
    pub code: &'a str,
}

/// The proof failed: a wrong, changed or missing password, or a wrong, used or missing code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrong;

/// Whether `proof` holds on `current` at `unix`; the TOTP step the code spent, if one was due.
/// At least one factor must be checked against `current` (an authenticator removed meanwhile
/// does not leave a proof of nothing).
pub fn judge(current: &Secret, proof: &Proof<'_>, unix: u64) -> Result<Option<u64>, Wrong> {
    let password = match proof.password_ok {
        Some(ok) if ok && proof.seen_hash.is_some() && text(current, PASSWORD_HASH) == proof.seen_hash => {
            true
        }
        Some(_) => return Err(Wrong),
        None => false,
    };
    if text(current, TOTP_SECRET).is_none() {
        return if password { Ok(None) } else { Err(Wrong) };
    }
    totp_step(current, proof.code, unix).map(Some).ok_or(Wrong)
}

/// Whether a password must come with a replacement of the authenticator: only when none is
/// enrolled (a code proves the person otherwise).
pub fn replacement_needs_password(credentials: &Secret) -> bool {
    text(credentials, TOTP_SECRET).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::TotpSecret;
    use crate::credentials::record::TOTP_LAST_STEP;

    use crate::facts::secret_with as secret;

    const UNIX: u64 = 1_800_000_000;

    #[test]
    fn the_password_and_an_unused_code_prove_the_person() {
        let totp = TotpSecret::generate().unwrap();
        let base32 = totp.to_base32();
        let current = secret(&[(PASSWORD_HASH, "h1"), (TOTP_SECRET, &base32)]);
        let code = totp.code_at(UNIX).unwrap();
        let proof = Proof { password_ok: Some(true), seen_hash: Some("h1"), code: &code };
        assert_eq!(judge(&current, &proof, UNIX), Ok(Some(UNIX / 30)));
        let spent = secret(&[
            (PASSWORD_HASH, "h1"),
            (TOTP_SECRET, &base32),
            (TOTP_LAST_STEP, &(UNIX / 30).to_string()),
        ]);
        assert_eq!(judge(&spent, &proof, UNIX), Err(Wrong), "a code counts once");
        assert_eq!(judge(&current, &Proof { code: "", ..proof }, UNIX), Err(Wrong));
        assert_eq!(judge(&current, &Proof { password_ok: Some(false), ..proof }, UNIX), Err(Wrong));
        let changed = secret(&[(PASSWORD_HASH, "h2"), (TOTP_SECRET, &base32)]);
        assert_eq!(judge(&changed, &proof, UNIX), Err(Wrong), "changed meanwhile");
        let code_only = Proof { password_ok: None, seen_hash: None, code: &code };
        assert_eq!(judge(&current, &code_only, UNIX), Ok(Some(UNIX / 30)));
    }

    #[test]
    fn without_an_authenticator_the_password_alone_proves_the_person() {
        let current = secret(&[(PASSWORD_HASH, "h1")]);
        let proof = Proof { password_ok: Some(true), seen_hash: Some("h1"), code: "" };
        assert_eq!(judge(&current, &proof, UNIX), Ok(None));
        assert!(replacement_needs_password(&current));
        let code_only = Proof { password_ok: None, seen_hash: None, code: "123456" };
        assert_eq!(
            judge(&current, &code_only, UNIX),
            Err(Wrong),
            "no authenticator left to check a code with"
        );
        let nothing = Proof { password_ok: Some(false), seen_hash: None, code: "" };
        assert_eq!(judge(&secret(&[]), &nothing, UNIX), Err(Wrong));
    }
}
