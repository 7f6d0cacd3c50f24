//! The layout of a user's credentials Secret (`<user>-credentials`): which keys hold which
//! fact. The portal writes these facts; the reconciler reads them to derive the phase.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;

/// Key of the argon2id PHC string.
pub const PASSWORD_HASH: &str = "passwordHash";
/// Key of when the password was set (RFC 3339).
pub const PASSWORD_SET_AT: &str = "passwordSetAt";
/// Key of the base32 TOTP secret, once enrolled.
pub const TOTP_SECRET: &str = "totpSecret";
/// Key of when TOTP was enrolled (RFC 3339).
pub const TOTP_ENROLLED_AT: &str = "totpEnrolledAt";
/// Key of the last accepted TOTP time step (replay guard).
pub const TOTP_LAST_STEP: &str = "totpLastStep";
/// Key of the count of consecutive failed logins.
pub const FAILED_LOGINS: &str = "failedLogins";
/// Key of when the failure that reached the lockout threshold happened (RFC 3339): a
/// temporary lock runs from it.
pub const LOCKED_AT: &str = "lockedAt";
/// Key of the person's recent sign-ins and failed attempts (see [`crate::signin::history`]).
pub const RECENT_SIGN_INS: &str = "recentSignIns";
/// Key of when the person last signed in (RFC 3339).
pub const LAST_LOGIN_AT: &str = "lastLoginAt";
/// Key of when the person proved their mailbox by using an emailed link (RFC 3339).
pub const EMAIL_VERIFIED_AT: &str = "emailVerifiedAt";
/// Key of the address (lowercased) that emailed link went to: the verification holds for
/// that address only.
pub const EMAIL_VERIFIED_FOR: &str = "emailVerifiedFor";
/// Key of a TOTP secret shown to the person but not yet confirmed with a code.
pub const TOTP_PENDING: &str = "totpPending";
/// Key of a new TOTP secret the person asked for on their account page, not yet confirmed
/// with a code (an MfaReset removes it with the factor it would replace).
pub const TOTP_REPLACEMENT: &str = "totpReplacement";
/// Key of the SHA-256 of the invite token onboarding was started with: the link is in use.
pub const ONBOARDING_TOKEN: &str = "onboardingToken";
/// Key of when onboarding with that token was completed (RFC 3339): the link is spent.
pub const ONBOARDING_COMPLETED_AT: &str = "onboardingCompletedAt";

/// Key of the uid of the MfaReset that last cleared the TOTP enrolment (written once per
/// reset: a reset never clears twice).
pub const MFA_RESET_UID: &str = "mfaResetUid";
/// Key of when that reset cleared it (RFC 3339).
pub const MFA_RESET_AT: &str = "mfaResetAt";
/// Key of the SHA-256 of the re-enrolment token the person proved their password with.
pub const REENROL_TOKEN: &str = "reenrolToken";
/// Key of the uid of the MfaReset whose link the person re-enrolled through: its link is
/// spent.
pub const MFA_REENROLLED_FOR: &str = "mfaReenrolledFor";

/// Key of the uid of the PasswordReset whose link is open (the newest one issued).
pub const PASSWORD_RESET_UID: &str = "passwordResetUid";
/// Key of when that reset was issued (RFC 3339).
pub const PASSWORD_RESET_AT: &str = "passwordResetAt";
/// Key of the uid of the PasswordReset whose link set the password: its link is spent.
pub const PASSWORD_RESET_DONE_FOR: &str = "passwordResetDoneFor";
/// Key of wrong codes entered through the open PasswordReset's link: at
/// [`PASSWORD_RESET_MAX_FAILURES`] the link is spent.
pub const PASSWORD_RESET_FAILURES: &str = "passwordResetFailures";
/// Key of when the person asked to recover their password ("Forgot your password?"), the
/// last day's requests, space-separated RFC 3339: the per-user limits count them.
pub const RECOVERY_REQUESTS: &str = "recoveryRequests";
/// Key of when the person changed a password they had (through a reset link or the account
/// page; not the first one, set while onboarding): the security notice names it.
pub const PASSWORD_CHANGED_AT: &str = "passwordChangedAt";
/// Key of when the person replaced their authenticator (re-enrolment after an MfaReset).
pub const TOTP_REPLACED_AT: &str = "totpReplacedAt";
/// Key of the [`PASSWORD_CHANGED_AT`] the person was last told about by email.
pub const NOTICED_PASSWORD_CHANGE: &str = "noticedPasswordChange";
/// Key of the [`TOTP_REPLACED_AT`] the person was last told about by email.
pub const NOTICED_TOTP_REPLACEMENT: &str = "noticedTotpReplacement";
/// Key of the [`LOCKED_AT`] the person was last told about by email.
pub const NOTICED_LOCK: &str = "noticedLock";
/// Wrong codes a password-reset link tolerates before it stops working (a link holder
/// without the authenticator must not guess codes for a day).
pub const PASSWORD_RESET_MAX_FAILURES: u32 = 5;

/// What the person proved about the User's email address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailProof {
    /// No emailed link used yet.
    None,
    /// A link sent to this address was used.
    Verified,
    /// A link was used, but sent to an address the User no longer has.
    OtherAddress,
}

/// The facts a credentials Secret holds that decide a user's phase and its invite's. No
/// secret material: only whether it exists and when it was set (and the hash of the invite
/// token in use, which is no secret: the invite's token Secret holds it too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFacts {
    /// When a password was set; `Some` also when the time is unreadable but a hash exists.
    pub password_set_at: Option<Timestamp>,
    /// Whether a password hash is present.
    pub password_set: bool,
    /// Whether a TOTP secret is present.
    pub totp_enrolled: bool,
    /// When TOTP was enrolled.
    pub totp_enrolled_at: Option<Timestamp>,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// When the last lock started.
    pub locked_at: Option<Timestamp>,
    /// When the person last signed in.
    pub last_login_at: Option<Timestamp>,
    /// When the person proved their mailbox.
    pub email_verified_at: Option<Timestamp>,
    /// The address (lowercased) they proved.
    pub email_verified_for: Option<String>,
    /// The hash of the invite token onboarding was started with.
    pub onboarding_token: Option<String>,
    /// When onboarding with that token was completed.
    pub onboarding_completed_at: Option<Timestamp>,
    /// The MfaReset that last cleared the TOTP enrolment.
    pub mfa_reset_uid: Option<String>,
    /// The MfaReset whose link the person re-enrolled through.
    pub mfa_reenrolled_for: Option<String>,
}

impl CredentialFacts {
    /// Reads the facts from a credentials Secret (one without data has none).
    pub fn of(secret: &k8s_openapi::api::core::v1::Secret) -> Self {
        secret.data.as_ref().map(Self::from_data).unwrap_or_default()
    }

    /// Reads the facts from a Secret's `data`. Unreadable values count as absent (a
    /// damaged timestamp must not make a set password look unset, so presence is read from
    /// the secret keys themselves).
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Self {
        let text = |key: &str| data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok()).map(str::trim);
        let present = |key: &str| text(key).is_some_and(|v| !v.is_empty());
        let time = |key: &str| text(key).and_then(|v| v.parse::<Timestamp>().ok());
        Self {
            password_set: present(PASSWORD_HASH),
            password_set_at: time(PASSWORD_SET_AT),
            totp_enrolled: present(TOTP_SECRET),
            totp_enrolled_at: time(TOTP_ENROLLED_AT),
            failed_logins: text(FAILED_LOGINS).and_then(|v| v.parse().ok()).unwrap_or(0),
            locked_at: time(LOCKED_AT),
            last_login_at: time(LAST_LOGIN_AT),
            email_verified_at: time(EMAIL_VERIFIED_AT),
            email_verified_for: text(EMAIL_VERIFIED_FOR).filter(|v| !v.is_empty()).map(str::to_lowercase),
            onboarding_token: text(ONBOARDING_TOKEN).filter(|v| !v.is_empty()).map(str::to_owned),
            onboarding_completed_at: time(ONBOARDING_COMPLETED_AT),
            mfa_reset_uid: text(MFA_RESET_UID).filter(|v| !v.is_empty()).map(str::to_owned),
            mfa_reenrolled_for: text(MFA_REENROLLED_FOR).filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// The person finished onboarding at least once: a password is set and onboarding was
    /// completed (or the second factor is enrolled, not required, or reset). From then on
    /// only an operation that proves who asks may change their credentials: no invite.
    pub fn onboarded(&self, mfa_required: bool) -> bool {
        self.password_set
            && (self.onboarding_completed_at.is_some()
                || self.totp_enrolled
                || !mfa_required
                || self.mfa_reset_pending())
    }

    /// Whether the person proved they receive mail at `email` (a proof for another address,
    /// or for an address not recorded, does not count).
    pub fn email_verified(&self, email: &str) -> EmailProof {
        match (&self.email_verified_at, &self.email_verified_for) {
            (None, _) => EmailProof::None,
            (Some(_), Some(proven)) if proven.eq_ignore_ascii_case(email.trim()) => EmailProof::Verified,
            (Some(_), _) => EmailProof::OtherAddress,
        }
    }

    /// Whether the person has, or should have, a second factor: then an emailed reset link
    /// must come with a current code — a link alone must not open such an account, not even
    /// between an MfaReset's claim and the person's re-enrolment.
    pub fn second_factor_due(&self, mfa_required: bool) -> bool {
        mfa_required || self.totp_enrolled || self.mfa_reset_pending()
    }

    /// Whether a password-reset link may set a password without a code: when a second factor
    /// is due but none is enrolled, only a handed-over link (`vouched`: the admin confirmed
    /// who the person is) while an MfaReset is open (lost phone and forgotten password).
    pub fn reset_link_unproven(&self, mfa_required: bool, vouched: bool) -> bool {
        self.second_factor_due(mfa_required) && !self.totp_enrolled && !(vouched && self.mfa_reset_pending())
    }

    /// A reset cleared the second factor and the person has not enrolled a new one yet.
    pub fn mfa_reset_pending(&self) -> bool {
        !self.totp_enrolled && self.mfa_reset_uid.is_some() && self.mfa_reenrolled_for != self.mfa_reset_uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn an_empty_secret_has_no_facts() {
        assert_eq!(CredentialFacts::from_data(&BTreeMap::new()), CredentialFacts::default());
    }

    #[test]
    fn facts_are_read_from_their_keys() {
        let facts = CredentialFacts::from_data(&data(&[
            (PASSWORD_HASH, "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA"),
            (PASSWORD_SET_AT, "2026-01-02T03:04:05Z"),
            (TOTP_SECRET, "JBSWY3DPEHPK3PXP"),
            (TOTP_ENROLLED_AT, "2026-01-02T03:05:00Z"),
            (FAILED_LOGINS, "3"),
        ]));
        assert!(facts.password_set && facts.totp_enrolled);
        assert_eq!(facts.password_set_at, Some("2026-01-02T03:04:05Z".parse().unwrap()));
        assert_eq!(facts.failed_logins, 3);
    }

    #[test]
    fn a_reset_is_pending_until_the_person_re_enrols_through_it() {
        let cleared =
            CredentialFacts::from_data(&data(&[(PASSWORD_HASH, "$argon2id$x"), (MFA_RESET_UID, "r1")]));
        assert!(cleared.mfa_reset_pending());
        let other_done =
            CredentialFacts::from_data(&data(&[(MFA_RESET_UID, "r2"), (MFA_REENROLLED_FOR, "r1")]));
        assert!(other_done.mfa_reset_pending(), "re-enrolled through an older reset's link");
        let done = CredentialFacts::from_data(&data(&[
            (MFA_RESET_UID, "r1"),
            (MFA_REENROLLED_FOR, "r1"),
            (TOTP_SECRET, "JBSWY3DPEHPK3PXP"),
        ]));
        assert!(!done.mfa_reset_pending());
        assert!(!CredentialFacts::default().mfa_reset_pending());
    }

    #[test]
    fn damaged_values_do_not_hide_a_set_password() {
        let facts = CredentialFacts::from_data(&data(&[
            (PASSWORD_HASH, "$argon2id$..."),
            (PASSWORD_SET_AT, "yesterday"),
            (FAILED_LOGINS, "many"),
        ]));
        assert!(facts.password_set);
        assert_eq!(facts.password_set_at, None);
        assert_eq!(facts.failed_logins, 0);
    }
}
