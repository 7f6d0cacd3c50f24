//! Re-enrolling a second factor through an MfaReset's link: prove the current password (a
//! wrong one counts as a failed sign-in), then confirm a new authenticator app with a code.
//! The link is judged like an invite's: by the token's hash in the watch cache, the reset's
//! phase, its expiry, and what the credentials Secret records (which reset cleared the
//! factor, and through which link the person re-enrolled).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Portal;
use super::links::{LinkProblem, Stage, account, find_token, owner};
use super::onboarding::{StepError, TotpOffer, caught_up, internal, offer, unwritten};
use crate::api::{MfaReset, ResetPhase, User, UserState};
use crate::controller::names::{RESET_TOKEN_TYPE, TOKEN_EXPIRES_AT};
use crate::credentials::record::{
    FAILED_LOGINS, LOCKED_AT, MFA_REENROLLED_FOR, MFA_RESET_UID, PASSWORD_HASH, REENROL_TOKEN,
    TOTP_ENROLLED_AT, TOTP_LAST_STEP, TOTP_PENDING, TOTP_REPLACED_AT, TOTP_SECRET,
};
use crate::credentials::{CredentialFacts, TotpSecret, verify_totp};
use crate::facts::{self, Changes, text};
use crate::signin::failures;

/// A re-enrolment link that can be used. Its `Debug` leaves out the credentials Secret and
/// the stage (they hold the password hash and TOTP secrets).
#[derive(Clone)]
pub struct OpenReset {
    /// The reset the link belongs to.
    pub reset: Arc<MfaReset>,
    /// Its user.
    pub user: Arc<User>,
    /// The user's credentials Secret, as cached.
    pub credentials: Arc<Secret>,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// When the link expires.
    pub expires_at: Option<Timestamp>,
    /// The next step.
    pub stage: Stage,
}

impl std::fmt::Debug for OpenReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenReset")
            .field("reset", &crate::index::object_key(self.reset.as_ref()))
            .field("user", &crate::index::object_key(self.user.as_ref()))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The facts [`judge`] decides on. Its `Debug` hides the pending TOTP secret.
#[derive(Clone, Default)]
pub struct ResetLinkFacts<'a> {
    /// The reset's uid.
    pub uid: &'a str,
    /// Its phase.
    pub phase: Option<ResetPhase>,
    /// When the token expires.
    pub expires_at: Option<Timestamp>,
    /// The user's desired state; `None` when the user is gone.
    pub user_state: Option<UserState>,
    /// The user is locked out.
    pub locked: bool,
    /// The token's hash.
    pub token_hash: &'a str,
    /// The reset that last cleared the factor.
    pub cleared_by: Option<&'a str>,
    /// The reset whose link the person re-enrolled through.
    pub reenrolled_for: Option<&'a str>,
    /// The link the password was proven with.
    pub proven_with: Option<&'a str>,
    /// A TOTP secret shown but not yet confirmed.
    pub totp_pending: Option<&'a str>,
}

impl std::fmt::Debug for ResetLinkFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetLinkFacts")
            .field("uid", &self.uid)
            .field("phase", &self.phase)
            .field("expires_at", &self.expires_at)
            .field("user_state", &self.user_state)
            .field("locked", &self.locked)
            .field("totp_pending", &self.totp_pending.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Whether a found re-enrolment link can be used, and for which step.
pub fn judge(facts: &ResetLinkFacts<'_>, now: Timestamp) -> Result<Stage, LinkProblem> {
    if facts.reenrolled_for == Some(facts.uid) {
        return Err(LinkProblem::Used);
    }
    if facts.phase == Some(ResetPhase::Failed) {
        return Err(LinkProblem::Revoked);
    }
    if facts.cleared_by != Some(facts.uid) {
        return Err(LinkProblem::Replaced);
    }
    match facts.user_state {
        None => return Err(LinkProblem::Revoked),
        Some(UserState::Inactive) => return Err(LinkProblem::UserInactive),
        Some(UserState::Active) if facts.locked => return Err(LinkProblem::UserInactive),
        Some(UserState::Active) => {}
    }
    if facts.expires_at.is_none_or(|at| now >= at) {
        return Err(LinkProblem::Expired);
    }
    match (facts.proven_with == Some(facts.token_hash), facts.totp_pending) {
        (true, Some(secret)) => Ok(Stage::EnrolTotp(secret.to_owned())),
        _ => Ok(Stage::Password),
    }
}

/// Looks the token up in the caches and judges it.
pub fn open(portal: &Portal, token: &str, now: Timestamp) -> Result<OpenReset, LinkProblem> {
    let caches = &portal.signin.caches;
    let (hash, secret, reset) =
        find_token(caches, token, RESET_TOKEN_TYPE, |secret| owner(&caches.resets, secret))?;
    let namespace = secret.namespace().unwrap_or_default();
    let uid = reset.uid().unwrap_or_default();
    let (user, credentials) = account(caches, &namespace, &reset.spec.user_ref.name);
    let (Some(user), Some(credentials)) = (user, credentials) else { return Err(LinkProblem::Revoked) };
    let expires_at = text(&secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse().ok());
    let progress = CredentialFacts::of(&credentials);
    let facts = ResetLinkFacts {
        uid: &uid,
        phase: reset.status.as_ref().and_then(|s| s.phase),
        expires_at,
        user_state: Some(user.spec.state_at(now)),
        locked: portal.signin.lockout.of(&progress, now).is_locked()
            || caches.directory_conflict(&user, &portal.signin.allowed_email_domains).is_some(),
        token_hash: &hash,
        cleared_by: text(&credentials, MFA_RESET_UID),
        reenrolled_for: text(&credentials, MFA_REENROLLED_FOR),
        proven_with: text(&credentials, REENROL_TOKEN),
        totp_pending: text(&credentials, TOTP_PENDING),
    };
    let stage = judge(&facts, now)?;
    Ok(OpenReset { reset, user, credentials, token_hash: hash, expires_at, stage })
}

/// Checks the current password; right, it proposes a new TOTP secret to confirm next. A
/// wrong one counts as a failed sign-in (and may lock the user).
pub async fn prove_password(
    portal: &Portal,
    link: &OpenReset,
    password: &str,
) -> Result<TotpOffer, StepError> {
    if let Stage::EnrolTotp(secret) = &link.stage {
        return offer(portal, &link.user, secret);
    }
    let stored = text(&link.credentials, PASSWORD_HASH).map(str::to_owned);
    let right =
        portal.signin.verify_password(password, stored.as_deref()).await.map_err(|_| StepError::Busy)?;
    let pending = TotpSecret::generate().map_err(internal)?.to_base32();
    let lockout = portal.signin.lockout;
    let uid = link.reset.uid().unwrap_or_default();
    let written = facts::update(&portal.signin.client, &link.credentials, |current| {
        // Decided on the Secret as it is now: a lock or a newer reset may have come meanwhile.
        // A wrong password is only ever "wrong" (counted unless locked): it learns no state.
        if !right || text(current, PASSWORD_HASH) != stored.as_deref() {
            let counted = failures(current, 1, &lockout, Timestamp::now()).map(|(_, changes)| changes);
            return (Err(StepError::WrongPassword), counted.unwrap_or_default());
        }
        let facts = CredentialFacts::of(current);
        if lockout.of(&facts, Timestamp::now()).is_locked() {
            return (Err(StepError::Link(LinkProblem::UserInactive)), Changes::new());
        }
        if text(current, MFA_RESET_UID) != Some(uid.as_str()) {
            return (Err(StepError::Link(LinkProblem::Replaced)), Changes::new());
        }
        let changes = Changes::from([
            (TOTP_PENDING, Some(pending.clone())),
            (REENROL_TOKEN, Some(link.token_hash.clone())),
            (FAILED_LOGINS, Some("0".to_owned())),
            (LOCKED_AT, None),
        ]);
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    if matches!(written.0, Err(StepError::WrongPassword)) {
        portal.signin.metrics.login("denied");
    }
    caught_up(portal, &link.credentials, written).await?;
    offer(portal, &link.user, &pending)
}

/// Confirms the new authenticator app with a code: enrolled again, the link spent.
pub async fn confirm_totp(portal: &Portal, link: &OpenReset, code: &str) -> Result<(), StepError> {
    let Stage::EnrolTotp(secret) = &link.stage else { return Err(StepError::PasswordFirst) };
    let parsed = TotpSecret::from_base32(secret).map_err(internal)?;
    let unix = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    let step = verify_totp(&parsed, code, unix, None).map_err(StepError::Code)?;
    let uid = link.reset.uid().unwrap_or_default();
    let now = Timestamp::now().to_string();
    let written = facts::update(&portal.signin.client, &link.credentials, |current: &Secret| {
        if text(current, MFA_REENROLLED_FOR) == Some(uid.as_str()) {
            return (Err(StepError::Link(LinkProblem::Used)), Changes::new());
        }
        if text(current, MFA_RESET_UID) != Some(uid.as_str())
            || text(current, TOTP_PENDING) != Some(secret.as_str())
        {
            return (Err(StepError::Link(LinkProblem::Replaced)), Changes::new());
        }
        let changes = Changes::from([
            (TOTP_SECRET, Some(secret.clone())),
            (TOTP_ENROLLED_AT, Some(now.clone())),
            (TOTP_REPLACED_AT, Some(now.clone())),
            (TOTP_LAST_STEP, Some(step.to_string())),
            (TOTP_PENDING, None),
            (REENROL_TOKEN, None),
            (MFA_REENROLLED_FOR, Some(uid.clone())),
        ]);
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    caught_up(portal, &link.credentials, written).await?;
    tracing::info!(user = %super::who(&link.user), "second factor enrolled again after a reset");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn open_link() -> ResetLinkFacts<'static> {
        ResetLinkFacts {
            uid: "r1",
            phase: Some(ResetPhase::Completed),
            expires_at: Some(at(1000)),
            user_state: Some(UserState::Active),
            token_hash: "h1",
            cleared_by: Some("r1"),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_link_asks_for_the_password_then_the_code() {
        assert_eq!(judge(&open_link(), at(10)), Ok(Stage::Password));
        let proven = ResetLinkFacts { proven_with: Some("h1"), totp_pending: Some("S"), ..open_link() };
        assert_eq!(judge(&proven, at(10)), Ok(Stage::EnrolTotp("S".into())));
    }

    #[test]
    fn spent_replaced_late_and_refused_links() {
        let cases = [
            (ResetLinkFacts { reenrolled_for: Some("r1"), ..open_link() }, LinkProblem::Used),
            (ResetLinkFacts { cleared_by: Some("r2"), ..open_link() }, LinkProblem::Replaced),
            (ResetLinkFacts { phase: Some(ResetPhase::Failed), ..open_link() }, LinkProblem::Revoked),
            (ResetLinkFacts { expires_at: Some(at(5)), ..open_link() }, LinkProblem::Expired),
            (
                ResetLinkFacts { user_state: Some(UserState::Inactive), ..open_link() },
                LinkProblem::UserInactive,
            ),
            (ResetLinkFacts { locked: true, ..open_link() }, LinkProblem::UserInactive),
        ];
        for (facts, problem) in cases {
            assert_eq!(judge(&facts, at(10)), Err(problem), "{facts:?}");
        }
    }
}
