//! Setting a new password through a PasswordReset's link — one step, shared by the page and
//! the JSON API: the new password (policy enforced) and, when a second factor is enrolled, a
//! current code (a link alone does not take an account over). Success sets the password,
//! ends the failed-sign-in count and the lock (see [`ends_lock`]), and spends the link. A link is judged like
//! the others: by the token's hash in the index, the reset's phase and expiry, and what the
//! credentials Secret records (which reset's link is open, which was used, wrong codes).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Portal;
use super::links::{LinkProblem, account, find_token, owner};
use super::onboarding::{StepError, caught_up, internal, new_password_hash, unwritten};
use crate::api::{Delivery, Initiator, PasswordReset, ResetPhase, User, UserState};
use crate::controller::names::{PASSWORD_RESET_TOKEN_TYPE, TOKEN_EXPIRES_AT};
use crate::credentials::record::{
    FAILED_LOGINS, LOCKED_AT, PASSWORD_CHANGED_AT, PASSWORD_HASH, PASSWORD_RESET_DONE_FOR,
    PASSWORD_RESET_FAILURES, PASSWORD_RESET_MAX_FAILURES, PASSWORD_RESET_UID, PASSWORD_SET_AT,
    TOTP_LAST_STEP, TOTP_SECRET,
};
use crate::credentials::{CredentialFacts, Standing, TotpSecret, verify_totp};
use crate::facts::{self, Changes, text};

/// A password-reset link that can be used. Its `Debug` leaves the credentials Secret out.
#[derive(Clone)]
pub struct OpenPasswordReset {
    /// The reset the link belongs to.
    pub reset: Arc<PasswordReset>,
    /// Its user.
    pub user: Arc<User>,
    /// The user's credentials Secret, as cached.
    pub credentials: Arc<Secret>,
    /// When the link expires.
    pub expires_at: Option<Timestamp>,
    /// Whether a current TOTP code must come with the new password.
    pub code_required: bool,
}

impl std::fmt::Debug for OpenPasswordReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPasswordReset")
            .field("reset", &crate::index::object_key(self.reset.as_ref()))
            .field("user", &crate::index::object_key(self.user.as_ref()))
            .field("expires_at", &self.expires_at)
            .field("code_required", &self.code_required)
            .finish_non_exhaustive()
    }
}

/// The facts [`judge`] decides on.
#[derive(Clone, Debug, Default)]
pub struct PasswordResetFacts<'a> {
    /// The reset's uid.
    pub uid: &'a str,
    /// Its phase.
    pub phase: Option<ResetPhase>,
    /// When the token expires.
    pub expires_at: Option<Timestamp>,
    /// The user's desired state; `None` when the user is gone.
    pub user_state: Option<UserState>,
    /// The directory refuses the user.
    pub refused: bool,
    /// The reset whose link is open.
    pub open: Option<&'a str>,
    /// The reset whose link was used.
    pub used: Option<&'a str>,
    /// Wrong codes entered through the open link.
    pub failures: u32,
}

/// Whether a found password-reset link can be used. A locked-out user may use it: that is
/// who needs it.
pub fn judge(facts: &PasswordResetFacts<'_>, now: Timestamp) -> Result<(), LinkProblem> {
    if facts.used == Some(facts.uid) {
        return Err(LinkProblem::Used);
    }
    if facts.phase == Some(ResetPhase::Failed) || facts.failures >= PASSWORD_RESET_MAX_FAILURES {
        return Err(LinkProblem::Revoked);
    }
    if facts.open != Some(facts.uid) {
        return Err(LinkProblem::Replaced);
    }
    match facts.user_state {
        None => return Err(LinkProblem::Revoked),
        Some(UserState::Inactive) => return Err(LinkProblem::UserInactive),
        Some(UserState::Active) => {}
    }
    if facts.refused {
        return Err(LinkProblem::Refused);
    }
    if facts.expires_at.is_none_or(|at| now >= at) {
        return Err(LinkProblem::Expired);
    }
    Ok(())
}

/// Looks the token up and judges it.
pub fn open(portal: &Portal, token: &str, now: Timestamp) -> Result<OpenPasswordReset, LinkProblem> {
    let caches = &portal.signin.caches;
    let (_, secret, reset) = find_token(caches, token, PASSWORD_RESET_TOKEN_TYPE, |secret| {
        owner(&caches.password_resets, secret)
    })?;
    let namespace = secret.namespace().unwrap_or_default();
    let uid = reset.uid().unwrap_or_default();
    let (user, credentials) = account(caches, &namespace, &reset.spec.user_ref.name);
    let (Some(user), Some(credentials)) = (user, credentials) else { return Err(LinkProblem::Revoked) };
    let expires_at = text(&secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse().ok());
    let facts = PasswordResetFacts {
        uid: &uid,
        phase: reset.status.as_ref().and_then(|s| s.phase),
        expires_at,
        user_state: Some(user.spec.state_at(now)),
        refused: caches.directory_conflict(&user, &portal.signin.allowed_email_domains).is_some(),
        open: text(&credentials, PASSWORD_RESET_UID),
        used: text(&credentials, PASSWORD_RESET_DONE_FOR),
        failures: wrong_codes(&credentials),
    };
    judge(&facts, now)?;
    let progress = CredentialFacts::of(&credentials);
    // A second factor due but not enrolled (an MfaReset cleared it, or it was never set up):
    // an emailed link proves nothing then; a handed-over one is the admin vouching.
    let vouched = reset.spec.delivery == Delivery::Link;
    if progress.reset_link_unproven(user.spec.mfa.required, vouched) {
        return Err(LinkProblem::SecondFactorMissing);
    }
    let code_required = progress.totp_enrolled;
    Ok(OpenPasswordReset { reset, user, credentials, expires_at, code_required })
}

fn wrong_codes(credentials: &Secret) -> u32 {
    text(credentials, PASSWORD_RESET_FAILURES).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The TOTP step `code` matches in `credentials`, unused before.
fn step(credentials: &Secret, code: &str, unix: u64) -> Result<u64, StepError> {
    let secret =
        TotpSecret::from_base32(text(credentials, TOTP_SECRET).unwrap_or_default()).map_err(internal)?;
    let last = text(credentials, TOTP_LAST_STEP).and_then(|v| v.parse().ok());
    verify_totp(&secret, code, unix, last).map_err(StepError::Code)
}

/// Sets the new password, proving a current code when a second factor is enrolled (the
/// password is checked and hashed first, so every attempt costs the same). A wrong code
/// counts against the link (at [`PASSWORD_RESET_MAX_FAILURES`] it stops working).
pub async fn set_password(
    portal: &Portal,
    link: &OpenPasswordReset,
    password: &str,
    code: &str,
) -> Result<(), StepError> {
    let uid = link.reset.uid().unwrap_or_default();
    let unix = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    let hash = new_password_hash(portal, &link.user, password).await?;
    let now = Timestamp::now().to_string();
    let vouched = link.reset.spec.delivery == Delivery::Link;
    let mfa_required = link.user.spec.mfa.required;
    let requested = link.reset.spec.initiator == Initiator::Person;
    let (lockout, at) = (portal.signin.lockout, Timestamp::now());
    // One decision on the Secret as it is now, under its resourceVersion: the link may have
    // been used or replaced, the code spent, or the wrong codes used up, meanwhile — so every
    // code is judged once, and the cap on wrong codes holds however many requests race.
    let written = facts::update(&portal.signin.client, &link.credentials, |current| {
        if text(current, PASSWORD_RESET_DONE_FOR) == Some(uid.as_str()) {
            return (Err(StepError::Link(LinkProblem::Used)), Changes::new());
        }
        if text(current, PASSWORD_RESET_UID) != Some(uid.as_str()) {
            return (Err(StepError::Link(LinkProblem::Replaced)), Changes::new());
        }
        if wrong_codes(current) >= PASSWORD_RESET_MAX_FAILURES {
            return (Err(StepError::Link(LinkProblem::Revoked)), Changes::new());
        }
        let facts = CredentialFacts::of(current);
        if facts.reset_link_unproven(mfa_required, vouched) {
            return (Err(StepError::Link(LinkProblem::SecondFactorMissing)), Changes::new());
        }
        let enrolled = facts.totp_enrolled;
        let step = match enrolled.then(|| step(current, code, unix)) {
            Some(Err(error)) => {
                let failed = (wrong_codes(current) + 1).to_string();
                return (Err(error), Changes::from([(PASSWORD_RESET_FAILURES, Some(failed))]));
            }
            Some(Ok(step)) => Some(step),
            None => None,
        };
        let mut changes = Changes::from([
            (PASSWORD_HASH, Some(hash.clone())),
            (PASSWORD_SET_AT, Some(now.clone())),
            (PASSWORD_CHANGED_AT, Some(now.clone())),
            (PASSWORD_RESET_DONE_FOR, Some(uid.clone())),
            (PASSWORD_RESET_FAILURES, None),
        ]);
        if ends_lock(requested, lockout.of(&facts, at)) {
            changes.insert(FAILED_LOGINS, Some("0".to_owned()));
            changes.insert(LOCKED_AT, None);
        }
        if let Some(step) = step {
            changes.insert(TOTP_LAST_STEP, Some(step.to_string()));
        }
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    caught_up(portal, &link.credentials, written).await?;
    tracing::info!(user = %super::who(&link.user), reset = %link.reset.name_any(), "a new password was set through a reset link");
    Ok(())
}

/// Whether a new password set through a reset ends the account's lock: an admin's reset
/// ends any (the admin vouches); one the person asked for ends only a lock that would end by
/// itself — one an admin must lift stays for the admin.
pub fn ends_lock(requested_by_person: bool, standing: Standing) -> bool {
    !requested_by_person || !matches!(standing, Standing::Locked { until: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn open_link() -> PasswordResetFacts<'static> {
        PasswordResetFacts {
            uid: "r1",
            phase: Some(ResetPhase::Completed),
            expires_at: Some(at(1000)),
            user_state: Some(UserState::Active),
            open: Some("r1"),
            ..Default::default()
        }
    }

    #[test]
    fn the_persons_own_reset_ends_only_a_lock_that_ends_by_itself() {
        let temporary = Standing::Locked { until: Some(at(100)) };
        let for_good = Standing::Locked { until: None };
        assert!(ends_lock(false, for_good), "an admin's reset unlocks");
        assert!(ends_lock(true, temporary));
        assert!(!ends_lock(true, for_good), "a lock an admin must lift stays");
        assert!(ends_lock(true, Standing::Open { failed: 3 }), "failures so far are forgiven");
    }

    #[test]
    fn an_open_link_works_until_used_replaced_expired_or_guessed_at() {
        assert_eq!(judge(&open_link(), at(10)), Ok(()));
        let cases = [
            (PasswordResetFacts { used: Some("r1"), ..open_link() }, LinkProblem::Used),
            (PasswordResetFacts { open: Some("r2"), ..open_link() }, LinkProblem::Replaced),
            (PasswordResetFacts { phase: Some(ResetPhase::Failed), ..open_link() }, LinkProblem::Revoked),
            (
                PasswordResetFacts { failures: PASSWORD_RESET_MAX_FAILURES, ..open_link() },
                LinkProblem::Revoked,
            ),
            (
                PasswordResetFacts { user_state: Some(UserState::Inactive), ..open_link() },
                LinkProblem::UserInactive,
            ),
            (PasswordResetFacts { user_state: None, ..open_link() }, LinkProblem::Revoked),
            (PasswordResetFacts { refused: true, ..open_link() }, LinkProblem::Refused),
            (PasswordResetFacts { expires_at: Some(at(10)), ..open_link() }, LinkProblem::Expired),
        ];
        for (facts, problem) in cases {
            assert_eq!(judge(&facts, at(10)), Err(problem), "{facts:?}");
        }
    }
}
