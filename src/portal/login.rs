//! Sign-in: password (argon2id) and TOTP code against the credentials Secret. Any wrong
//! credential, and an unknown user, get the same answer after about the same time (a dummy
//! hash is verified); consecutive failures are counted in the Secret and lock the user at
//! the threshold; success resets the count and records the time and the TOTP step used.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::Portal;
use crate::api::{User, UserState};
use crate::credentials::TotpSecret;
use crate::credentials::record::{FAILED_LOGINS, LAST_LOGIN_AT, PASSWORD_HASH, TOTP_LAST_STEP, TOTP_SECRET};
use crate::directory::{self, Entry, Identifier};
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
    /// Wrong credentials, or no such user: one answer for all.
    Denied,
    /// The account is deactivated or locked.
    Inactive,
}

/// The facts a sign-in is judged on, read from the credentials Secret as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The password verified against the hash now stored.
    pub password_ok: bool,
    /// The user must present a TOTP code.
    pub totp_required: bool,
    /// The TOTP step the code matched, unused before; `None` for a wrong or replayed code.
    pub totp_step: Option<u64>,
    /// Failed sign-ins so far.
    pub failed: u32,
}

/// The verdict on an attempt: what to write and what to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success: reset the count, record the step.
    Success {
        /// The TOTP step to remember, if a code was used.
        step: Option<u64>,
    },
    /// A failure; `locks` when this one reaches the threshold.
    Failure {
        /// The new count.
        failed: u32,
        /// Whether the user is now locked.
        locks: bool,
    },
    /// Already locked: nothing is written.
    Locked,
}

/// Judges one attempt.
pub fn verdict(attempt: &Attempt, threshold: u32) -> Verdict {
    if attempt.failed >= threshold {
        return Verdict::Locked;
    }
    let second_factor_ok = !attempt.totp_required || attempt.totp_step.is_some();
    if attempt.password_ok && second_factor_ok {
        Verdict::Success { step: attempt.totp_step.filter(|_| attempt.totp_required) }
    } else {
        let failed = attempt.failed.saturating_add(1);
        Verdict::Failure { failed, locks: failed >= threshold }
    }
}

/// Signs a person in.
pub async fn login(portal: &Portal, request: &LoginRequest) -> Result<LoginOutcome, facts::WriteError> {
    let identifier = match (&request.email, &request.username) {
        (Some(email), _) if !email.trim().is_empty() => Some(Identifier::Email(email)),
        (_, Some(username)) if !username.trim().is_empty() => Some(Identifier::Username(username)),
        _ => None,
    };
    let found = identifier.and_then(|identifier| account(portal, identifier));
    let Some((user, credentials)) = found else {
        // Take as long as a real check.
        let _ = portal.hasher.verify(&request.password, &portal.dummy_hash).await;
        portal.metrics.login("denied");
        return Ok(LoginOutcome::Denied);
    };
    let failed_now = text(&credentials, FAILED_LOGINS).and_then(|v| v.parse().ok()).unwrap_or(0u32);
    if user.spec.state == UserState::Inactive || failed_now >= portal.lockout_threshold {
        portal.metrics.login("inactive");
        return Ok(LoginOutcome::Inactive);
    }
    let stored = text(&credentials, PASSWORD_HASH).map(str::to_owned);
    let password_ok = portal
        .hasher
        .verify(&request.password, stored.as_deref().unwrap_or(&portal.dummy_hash))
        .await
        .unwrap_or(false)
        && stored.is_some();
    let totp_required = user.spec.mfa.required || text(&credentials, TOTP_SECRET).is_some();
    let code = request.code.clone().unwrap_or_default();
    let now = Timestamp::now();
    let unix = u64::try_from(now.as_second()).unwrap_or(0);
    let threshold = portal.lockout_threshold;
    let verdict = facts::update(&portal.client, &credentials, |current: &Secret| {
        let attempt = Attempt {
            password_ok: password_ok && text(current, PASSWORD_HASH) == stored.as_deref(),
            totp_required,
            totp_step: totp_step(current, &code, unix),
            failed: text(current, FAILED_LOGINS).and_then(|v| v.parse().ok()).unwrap_or(0),
        };
        let verdict = verdict(&attempt, threshold);
        let changes = match &verdict {
            Verdict::Success { step } => {
                let mut changes = Changes::from([
                    (FAILED_LOGINS, Some("0".to_owned())),
                    (LAST_LOGIN_AT, Some(now.to_string())),
                ]);
                if let Some(step) = step {
                    changes.insert(TOTP_LAST_STEP, Some(step.to_string()));
                }
                changes
            }
            Verdict::Failure { failed, .. } => Changes::from([(FAILED_LOGINS, Some(failed.to_string()))]),
            Verdict::Locked => Changes::new(),
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
        Verdict::Failure { locks, .. } => {
            portal.metrics.login("denied");
            if locks {
                portal.metrics.lockout();
                tracing::warn!(user = %super::who(&user), "locked out after too many failed sign-ins");
            }
            LoginOutcome::Denied
        }
        Verdict::Locked => {
            portal.metrics.login("inactive");
            LoginOutcome::Inactive
        }
    })
}

/// The TOTP step `code` matches in `credentials`, if it is right and unused.
fn totp_step(credentials: &Secret, code: &str, unix: u64) -> Option<u64> {
    let secret = TotpSecret::from_base32(text(credentials, TOTP_SECRET)?).ok()?;
    let last = text(credentials, TOTP_LAST_STEP).and_then(|v| v.parse().ok());
    crate::credentials::verify_totp(&secret, code, unix, last).ok()
}

/// The User that holds `identifier`, with its credentials Secret, from the caches.
fn account(portal: &Portal, identifier: Identifier<'_>) -> Option<(Arc<User>, Arc<Secret>)> {
    let users = portal.caches.users.state();
    let entries: Vec<Entry> = users.iter().map(|u| Entry::of(u)).collect();
    let user = users.get(directory::holder(&entries, identifier)?)?.clone();
    let credentials = super::links::credentials_of(&portal.caches, &user)?;
    Some((user, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(password_ok: bool, totp_step: Option<u64>, failed: u32) -> Attempt {
        Attempt { password_ok, totp_required: true, totp_step, failed }
    }

    #[test]
    fn both_factors_are_needed() {
        assert_eq!(verdict(&attempt(true, Some(7), 2), 5), Verdict::Success { step: Some(7) });
        assert_eq!(verdict(&attempt(true, None, 2), 5), Verdict::Failure { failed: 3, locks: false });
        assert_eq!(verdict(&attempt(false, Some(7), 0), 5), Verdict::Failure { failed: 1, locks: false });
    }

    #[test]
    fn without_a_second_factor_the_password_suffices() {
        let password_only = Attempt { password_ok: true, totp_required: false, totp_step: None, failed: 0 };
        assert_eq!(verdict(&password_only, 5), Verdict::Success { step: None });
    }

    #[test]
    fn the_failure_that_reaches_the_threshold_locks() {
        assert_eq!(verdict(&attempt(false, None, 4), 5), Verdict::Failure { failed: 5, locks: true });
        assert_eq!(
            verdict(&attempt(true, Some(7), 5), 5),
            Verdict::Locked,
            "locked even with the right password"
        );
    }
}
