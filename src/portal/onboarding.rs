//! The two onboarding steps an invite link allows, shared by the HTML pages and the JSON
//! API: set a password (which also proposes a TOTP secret), then confirm the authenticator
//! app with a code. Each step writes facts into the credentials Secret under a
//! resourceVersion precondition, so of two requests racing on one link exactly one wins.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Portal;
use super::links::{LinkProblem, OpenLink, Stage};
use crate::api::User;
use crate::credentials::record::{
    EMAIL_VERIFIED_AT, EMAIL_VERIFIED_FOR, FAILED_LOGINS, ONBOARDING_COMPLETED_AT, ONBOARDING_TOKEN,
    PASSWORD_HASH, PASSWORD_SET_AT, TOTP_ENROLLED_AT, TOTP_LAST_STEP, TOTP_PENDING, TOTP_SECRET,
};
use crate::credentials::{
    CredentialError, CredentialFacts, PolicyViolation, TotpRejected, TotpSecret, otpauth_uri, verify_totp,
};
use crate::facts::{self, Changes, text};

/// Why a step was refused.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The link cannot be used.
    #[error("{}", .0.message())]
    Link(LinkProblem),
    /// The password was already set with this link (another request won): continue with TOTP.
    #[error("the password was already set with this link")]
    AlreadyDone,
    /// The TOTP step came before the password step.
    #[error("set a password first")]
    PasswordFirst,
    /// The current password, asked as proof, is wrong (counted as a failed sign-in).
    #[error("the password is not correct")]
    WrongPassword,
    /// The new password breaks a rule.
    #[error("the password {0}")]
    Policy(PolicyViolation),
    /// The confirmation code does not match.
    #[error("{0}")]
    Code(TotpRejected),
    /// Every password check is busy: try again shortly.
    #[error("too many requests at once; try again in a moment")]
    Busy,
    /// The cluster cannot take the write now (the API server or etcd is down, slow or
    /// overloaded): try again shortly. (A write that timed out may still land: the person
    /// is not told that nothing changed.)
    #[error("this could not be confirmed just now: reload to see whether it took effect, then try again")]
    Unavailable,
    /// roster failed; the log says why.
    #[error("something went wrong on our side; please try again")]
    Internal,
}

/// The authenticator app's setup: the secret (base32, to type by hand) and its URI. Its
/// `Debug` shows neither.
#[derive(Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TotpOffer {
    /// Base32.
    pub secret: String,
    /// `otpauth://totp/…`, what the QR code holds.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpOffer(<redacted>)")
    }
}

/// The TOTP offer for a pending secret: the URI names the organisation and the email.
pub fn offer(portal: &Portal, user: &User, secret: &str) -> Result<TotpOffer, StepError> {
    let parsed = TotpSecret::from_base32(secret).map_err(internal)?;
    let uri = otpauth_uri(&parsed, &portal.org_name, &user.spec.email).map_err(internal)?;
    Ok(TotpOffer { secret: secret.to_owned(), otpauth_uri: uri })
}

/// Sets the password. Returns the TOTP offer to confirm next, or `None` when the user needs
/// no second factor (onboarding is then complete).
pub async fn set_password(
    portal: &Portal,
    link: &OpenLink,
    password: &str,
) -> Result<Option<TotpOffer>, StepError> {
    if link.stage != Stage::Password {
        return Err(StepError::AlreadyDone);
    }
    let user = &link.user.spec;
    let hash = new_password_hash(portal, &link.user, password).await?;
    let pending = user.mfa.required.then(TotpSecret::generate).transpose().map_err(internal)?;
    let now = Timestamp::now().to_string();
    // The link proves the mailbox it was emailed to — if that is still the user's address.
    let proved = link.recipient.clone().filter(|to| to.eq_ignore_ascii_case(user.email.trim()));
    let written = facts::update(&portal.signin.client, &link.credentials, |current| {
        if text(current, ONBOARDING_TOKEN) == Some(link.token_hash.as_str()) {
            return (Err(StepError::AlreadyDone), Changes::new());
        }
        // Decided again on the Secret as it is now: another link may have finished first.
        let now_facts = CredentialFacts::of(current);
        if now_facts.onboarded(user.mfa.required) {
            return (Err(StepError::Link(LinkProblem::Superseded)), Changes::new());
        }
        let mut changes = Changes::from([
            (PASSWORD_HASH, Some(hash.clone())),
            (PASSWORD_SET_AT, Some(now.clone())),
            (ONBOARDING_TOKEN, Some(link.token_hash.clone())),
            (FAILED_LOGINS, Some("0".to_owned())),
        ]);
        if let Some(address) = &proved {
            changes.insert(EMAIL_VERIFIED_AT, Some(now.clone()));
            changes.insert(EMAIL_VERIFIED_FOR, Some(address.clone()));
        }
        match &pending {
            Some(secret) => changes.insert(TOTP_PENDING, Some(secret.to_base32())),
            None => changes.insert(ONBOARDING_COMPLETED_AT, Some(now.clone())),
        };
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    caught_up(portal, &link.credentials, written).await?;
    match pending {
        Some(secret) => offer(portal, &link.user, &secret.to_base32()).map(Some),
        None => {
            completed(portal, link);
            Ok(None)
        }
    }
}

/// Confirms the authenticator app with a code: TOTP is enrolled, the link is spent.
pub async fn confirm_totp(portal: &Portal, link: &OpenLink, code: &str) -> Result<(), StepError> {
    let Stage::EnrolTotp(secret) = &link.stage else { return Err(StepError::PasswordFirst) };
    let parsed = TotpSecret::from_base32(secret).map_err(internal)?;
    let unix = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    let step = verify_totp(&parsed, code, unix, None).map_err(StepError::Code)?;
    let now = Timestamp::now().to_string();
    let written = facts::update(&portal.signin.client, &link.credentials, |current: &Secret| {
        if text(current, ONBOARDING_COMPLETED_AT).is_some() && text(current, TOTP_PENDING).is_none() {
            return (Err(StepError::Link(LinkProblem::Used)), Changes::new());
        }
        if text(current, TOTP_PENDING) != Some(secret.as_str()) {
            return (Err(StepError::Link(LinkProblem::Used)), Changes::new());
        }
        let changes = Changes::from([
            (TOTP_SECRET, Some(secret.clone())),
            (TOTP_ENROLLED_AT, Some(now.clone())),
            (TOTP_LAST_STEP, Some(step.to_string())),
            (TOTP_PENDING, None),
            (ONBOARDING_COMPLETED_AT, Some(now.clone())),
        ]);
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    caught_up(portal, &link.credentials, written).await?;
    completed(portal, link);
    Ok(())
}

/// The hash of a new password for `user`, once it passes the policy: every door that sets a
/// password (onboarding, a password reset) goes through here.
pub(crate) async fn new_password_hash(
    portal: &Portal,
    user: &User,
    password: &str,
) -> Result<String, StepError> {
    let spec = &user.spec;
    let username = spec.username.clone().unwrap_or_else(|| user.name_any());
    portal.policy.check(password, &username, &spec.email).map_err(StepError::Policy)?;
    portal.signin.hasher.hash(password).await.map_err(|e| match e {
        CredentialError::Busy => StepError::Busy,
        other => internal(other),
    })
}

/// The step's verdict, once the watch cache shows what it wrote.
pub(crate) async fn caught_up<T, E>(
    portal: &Portal,
    credentials: &Secret,
    (verdict, version): (Result<T, E>, Option<String>),
) -> Result<T, E> {
    if let Some(version) = version {
        facts::await_cached(&portal.signin.caches.secrets, credentials, &version).await;
    }
    verdict
}

fn completed(portal: &Portal, link: &OpenLink) {
    portal.signin.metrics.onboarding_completed();
    tracing::info!(user = %super::who(&link.user), "onboarding completed");
}

/// A credentials write that failed: [`StepError::Unavailable`] when trying again may work,
/// else [`StepError::Internal`]. Logged either way (the error names the Secret, no value).
pub(crate) fn unwritten(error: impl crate::facts::Transient) -> StepError {
    if error.is_transient() {
        tracing::warn!(%error, "a step could not be saved; the person is asked to try again");
        StepError::Unavailable
    } else {
        internal(error)
    }
}

pub(super) fn internal(error: impl std::fmt::Display) -> StepError {
    tracing::error!(%error, "an onboarding step failed");
    StepError::Internal
}
