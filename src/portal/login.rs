//! Sign-in: password (argon2id) and TOTP code against the credentials Secret. Any wrong
//! credential, an unknown user, and an inactive, locked or refused account all get the same
//! answer after the same work (a dummy hash is verified for an unknown one); consecutive
//! failures are counted in the Secret and lock the user at the threshold for the lockout's
//! duration; success resets the count and records the time and the TOTP step used.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::Portal;
use super::failures::FailureLog;
use crate::api::{User, UserState};
use crate::credentials::record::{
    FAILED_LOGINS, LAST_LOGIN_AT, LOCKED_AT, PASSWORD_HASH, TOTP_LAST_STEP, TOTP_SECRET,
};
use crate::credentials::{CredentialError, CredentialFacts, Lockout, Standing, TotpSecret};
use crate::directory::Identifier;
use crate::facts::{self, Changes, text};

/// What a sign-in sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// The username, or …
    #[serde(default)]
    pub username: Option<String>,
    /// … the email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The password.
    pub password: String,
    /// The current TOTP code, when the user has a second factor.
    #[serde(default)]
    pub code: Option<String>,
}

/// What a signed-in person may learn of their account.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The User's namespace.
    pub namespace: String,
    /// The User's name.
    pub name: String,
    /// The login name.
    pub username: String,
    /// The email address.
    pub email: String,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Language of emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Free-form attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Profile {
    fn of(user: &User) -> Self {
        let spec = user.spec.clone();
        Self {
            namespace: user.namespace().unwrap_or_default(),
            name: user.name_any(),
            username: spec.username.unwrap_or_else(|| user.name_any()),
            email: spec.email,
            given_name: spec.given_name,
            family_name: spec.family_name,
            display_name: spec.display_name,
            locale: spec.locale,
            timezone: spec.timezone,
            groups: spec.groups,
            attributes: spec.attributes,
        }
    }
}

/// How a sign-in ended.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Success(Box<Profile>),
    /// Wrong credentials, no such user, or an account that may not sign in: one answer for
    /// all, after the same work.
    Denied,
    /// Right credentials, for an account that is deactivated, locked or refused by the
    /// directory.
    Inactive,
    /// Every password check is busy: try again shortly.
    Busy,
}

/// The facts a sign-in is judged on, read from the credentials Secret as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The password verified against the hash now stored.
    pub password_ok: bool,
    /// The user must present a TOTP code.
    pub totp_required: bool,
    /// The TOTP step the code matched, unused before; `None` for a wrong or replayed code.
    pub totp_step: Option<u64>,
    /// Where the account stands with respect to failed sign-ins.
    pub standing: Standing,
    /// The account may sign in at all: active, and not refused by the directory.
    pub admitted: bool,
}

/// The verdict on an attempt: what to write and what to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success: reset the count, record the step.
    Success {
        /// The TOTP step to remember, if a code was used.
        step: Option<u64>,
    },
    /// A failure that counts; `locks` when this one reaches the threshold.
    Failure {
        /// The new count.
        failed: u32,
        /// Whether the account is now locked.
        locks: bool,
    },
    /// Right credentials for an account that may not sign in now: say so (403).
    Refused,
    /// Wrong credentials for an account that may not sign in now: the generic answer, and
    /// nothing is written.
    Ignored,
}

/// Judges one attempt: only password and code learn that an account is inactive, locked or
/// refused. A password alone never does: such an account counts no failures, so a 403 for
/// the right password would confirm guesses without limit.
pub fn verdict(attempt: &Attempt, threshold: u32) -> Verdict {
    let right = attempt.password_ok && (!attempt.totp_required || attempt.totp_step.is_some());
    match (right, attempt.standing, attempt.admitted) {
        (true, Standing::Open { .. }, true) => {
            Verdict::Success { step: attempt.totp_step.filter(|_| attempt.totp_required) }
        }
        (true, _, _) if !attempt.totp_required => Verdict::Ignored,
        (true, _, _) => Verdict::Refused,
        (false, Standing::Open { failed }, true) => {
            let failed = failed.saturating_add(1);
            Verdict::Failure { failed, locks: failed >= threshold }
        }
        (false, _, _) => Verdict::Ignored,
    }
}

/// What `count` counted failures write into the credentials Secret as it is now: the new
/// count, and the lock's start when it reaches the threshold. `None` when the account is
/// locked already (nothing counts then). Shared by every door that checks a password.
pub fn failures(
    current: &Secret,
    count: u32,
    lockout: &Lockout,
    now: Timestamp,
) -> Option<(Verdict, Changes)> {
    let facts = CredentialFacts::of(current);
    let Standing::Open { failed } = lockout.of(&facts, now) else { return None };
    let failed = failed.saturating_add(count);
    let locks = failed >= lockout.threshold;
    let mut changes = Changes::from([(FAILED_LOGINS, Some(failed.to_string()))]);
    changes.insert(LOCKED_AT, locks.then(|| now.to_string()));
    Some((Verdict::Failure { failed, locks }, changes))
}

/// Signs a person in. Every identifier — unknown, inactive, locked or active — costs one
/// password check, and every wrong answer is the same: which accounts exist cannot be read
/// off the answers or their timing. A counted failure is recorded after the answer.
pub async fn login(portal: &Arc<Portal>, request: &LoginRequest) -> Result<LoginOutcome, facts::WriteError> {
    let identifier = match (&request.email, &request.username) {
        (Some(email), _) if !email.trim().is_empty() => Some(Identifier::Email(email)),
        (_, Some(username)) if !username.trim().is_empty() => Some(Identifier::Username(username)),
        _ => None,
    };
    let found = identifier.and_then(|identifier| account(portal, identifier));
    let stored =
        found.as_ref().and_then(|(_, credentials)| text(credentials, PASSWORD_HASH)).map(str::to_owned);
    let password_ok = match portal
        .hasher
        .verify(&request.password, stored.as_deref().unwrap_or(&portal.dummy_hash))
        .await
    {
        Ok(matched) => matched && stored.is_some(),
        Err(CredentialError::Busy) => return Ok(LoginOutcome::Busy),
        Err(_) => false,
    };
    let Some((user, credentials)) = found else {
        portal.metrics.login("denied");
        return Ok(LoginOutcome::Denied);
    };
    let admitted = user.spec.state == UserState::Active
        && portal.caches.directory_conflict(&user, &portal.allowed_email_domains).is_none();
    let totp_required = user.spec.mfa.required || text(&credentials, TOTP_SECRET).is_some();
    let code = request.code.clone().unwrap_or_default();
    let now = Timestamp::now();
    let unix = u64::try_from(now.as_second()).unwrap_or(0);
    let lockout = portal.lockout;
    let judge = move |current: &Secret| {
        let facts = CredentialFacts::of(current);
        let attempt = Attempt {
            password_ok: password_ok && text(current, PASSWORD_HASH) == stored.as_deref(),
            totp_required,
            totp_step: totp_step(current, &code, unix),
            standing: lockout.of(&facts, now),
            admitted,
        };
        verdict(&attempt, lockout.threshold)
    };
    match judge(&credentials) {
        Verdict::Success { .. } => {}
        Verdict::Refused => {
            portal.metrics.login("inactive");
            return Ok(LoginOutcome::Inactive);
        }
        Verdict::Ignored => {
            portal.metrics.login("denied");
            return Ok(LoginOutcome::Denied);
        }
        Verdict::Failure { .. } => {
            portal.metrics.login("denied");
            FailureLog::record(portal, user, credentials);
            return Ok(LoginOutcome::Denied);
        }
    }
    // Success is written before it is answered: the TOTP step is spent only once.
    let verdict = facts::update(&portal.client, &credentials, |current: &Secret| {
        let verdict = judge(current);
        let changes = match &verdict {
            Verdict::Success { step } => {
                let mut changes = Changes::from([
                    (FAILED_LOGINS, Some("0".to_owned())),
                    (LOCKED_AT, None),
                    (LAST_LOGIN_AT, Some(now.to_string())),
                ]);
                if let Some(step) = step {
                    changes.insert(TOTP_LAST_STEP, Some(step.to_string()));
                }
                changes
            }
            _ => Changes::new(),
        };
        (verdict, changes)
    })
    .await?
    .0;
    Ok(match verdict {
        Verdict::Success { .. } => {
            portal.metrics.login("success");
            LoginOutcome::Success(Box::new(Profile::of(&user)))
        }
        Verdict::Refused => {
            portal.metrics.login("inactive");
            LoginOutcome::Inactive
        }
        // The code was spent, or the password changed, in the meantime.
        Verdict::Failure { .. } | Verdict::Ignored => {
            portal.metrics.login("denied");
            LoginOutcome::Denied
        }
    })
}

/// The TOTP step `code` matches in `credentials`, if it is right and unused.
fn totp_step(credentials: &Secret, code: &str, unix: u64) -> Option<u64> {
    let secret = TotpSecret::from_base32(text(credentials, TOTP_SECRET)?).ok()?;
    let last = text(credentials, TOTP_LAST_STEP).and_then(|v| v.parse().ok());
    crate::credentials::verify_totp(&secret, code, unix, last).ok()
}

/// The User that holds `identifier` in the directory, with its credentials Secret.
fn account(portal: &Portal, identifier: Identifier<'_>) -> Option<(Arc<User>, Arc<Secret>)> {
    let user = portal.caches.holder(identifier)?;
    let credentials = portal.caches.credentials_of(&user)?;
    Some((user, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Standing = Standing::Open { failed: 2 };

    fn attempt(password_ok: bool, totp_step: Option<u64>, standing: Standing, admitted: bool) -> Attempt {
        Attempt { password_ok, totp_required: true, totp_step, standing, admitted }
    }

    #[test]
    fn both_factors_are_needed() {
        assert_eq!(verdict(&attempt(true, Some(7), OPEN, true), 5), Verdict::Success { step: Some(7) });
        assert_eq!(
            verdict(&attempt(true, None, OPEN, true), 5),
            Verdict::Failure { failed: 3, locks: false }
        );
        assert_eq!(
            verdict(&attempt(false, Some(7), OPEN, true), 5),
            Verdict::Failure { failed: 3, locks: false }
        );
    }

    #[test]
    fn without_a_second_factor_the_password_suffices() {
        let password_only = Attempt {
            password_ok: true,
            totp_required: false,
            totp_step: None,
            standing: OPEN,
            admitted: true,
        };
        assert_eq!(verdict(&password_only, 5), Verdict::Success { step: None });
    }

    #[test]
    fn the_failure_that_reaches_the_threshold_locks() {
        let four = Standing::Open { failed: 4 };
        assert_eq!(
            verdict(&attempt(false, None, four, true), 5),
            Verdict::Failure { failed: 5, locks: true }
        );
    }

    #[test]
    fn only_right_credentials_learn_that_an_account_may_not_sign_in() {
        let locked = Standing::Locked { until: None };
        assert_eq!(verdict(&attempt(true, Some(7), locked, true), 5), Verdict::Refused);
        assert_eq!(verdict(&attempt(true, Some(7), OPEN, false), 5), Verdict::Refused, "inactive or refused");
        assert_eq!(verdict(&attempt(true, None, locked, true), 5), Verdict::Ignored, "no code: generic");
        let password_only = Attempt { totp_required: false, ..attempt(true, None, locked, true) };
        assert_eq!(verdict(&password_only, 5), Verdict::Ignored, "a lock confirms no password alone");
        let inactive_password_only = Attempt { totp_required: false, ..attempt(true, None, OPEN, false) };
        assert_eq!(verdict(&inactive_password_only, 5), Verdict::Ignored, "nor does deactivation");
        assert_eq!(verdict(&attempt(false, Some(7), locked, true), 5), Verdict::Ignored);
        assert_eq!(verdict(&attempt(false, Some(7), OPEN, false), 5), Verdict::Ignored, "nothing counted");
    }

    #[test]
    fn a_failure_records_the_lock_start_when_it_reaches_the_threshold() {
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let rule = Lockout { threshold: 3, duration: Some(k8s_openapi::jiff::SignedDuration::from_mins(15)) };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let (verdict, changes) = failures(&secret(&[(FAILED_LOGINS, "2")]), 1, &rule, now).unwrap();
        assert_eq!(verdict, Verdict::Failure { failed: 3, locks: true });
        assert_eq!(changes[LOCKED_AT].as_deref(), Some("2026-01-01T00:00:00Z"));
        let (_, changes) = failures(&secret(&[(FAILED_LOGINS, "0")]), 1, &rule, now).unwrap();
        assert_eq!(changes[LOCKED_AT], None);
        let locked = secret(&[(FAILED_LOGINS, "3"), (LOCKED_AT, "2025-12-31T23:59:00Z")]);
        assert!(failures(&locked, 1, &rule, now).is_none(), "a locked account counts nothing");
        let ran_out = secret(&[(FAILED_LOGINS, "3"), (LOCKED_AT, "2025-12-31T23:00:00Z")]);
        assert_eq!(
            failures(&ran_out, 1, &rule, now).unwrap().0,
            Verdict::Failure { failed: 1, locks: false }
        );
        assert_eq!(
            failures(&ran_out, 4, &rule, now).unwrap().0,
            Verdict::Failure { failed: 4, locks: true },
            "added up"
        );
    }
}
