//! The one sign-in decision, below every door that signs a person in (the portal's
//! `POST /api/v1/login`, the OpenID Connect sign-in page): password (argon2id) and TOTP code
//! against the credentials Secret. Any wrong credential, an unknown user, and an inactive,
//! locked or refused account all get the same answer after the same work (a dummy hash is
//! verified for an unknown one); consecutive failures are counted in the Secret ([`failures`])
//! and lock the user at the threshold for the lockout's duration; success resets the count
//! and records the time and the TOTP step used, so a code is never accepted twice.

pub mod failures;
pub mod history;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Client, ResourceExt};

use crate::api::{User, UserState};
use crate::controller::Caches;
use crate::credentials::record::{
    FAILED_LOGINS, LAST_LOGIN_AT, LOCKED_AT, PASSWORD_HASH, RECENT_SIGN_INS, TOTP_LAST_STEP, TOTP_SECRET,
};
use crate::credentials::{CredentialError, CredentialFacts, Lockout, PasswordHasher, Standing, TotpSecret};
use crate::directory::Identifier;
use crate::facts::{self, Changes, text};
use crate::telemetry::Metrics;
use failures::FailureLog;

/// What every sign-in needs, shared by the doors.
pub struct SignIn {
    /// Writes the outcome into credentials Secrets.
    pub client: Client,
    /// Users and their credentials Secrets, as watched.
    pub caches: Caches,
    /// argon2id, at most about one hash per core at a time.
    pub hasher: PasswordHasher,
    /// How failed sign-ins lock a user.
    pub lockout: Lockout,
    /// Email domains users may have (the directory rules); empty: any.
    pub allowed_email_domains: Vec<String>,
    /// A hash of nothing anyone knows, verified when a sign-in names no user, so that an
    /// unknown user takes as long as a wrong password.
    pub dummy_hash: String,
    /// Sign-ins and lockouts.
    pub metrics: Arc<Metrics>,
    /// Failed sign-ins waiting to be counted.
    pub failures: FailureLog,
}

/// How a sign-in ended.
#[derive(Debug)]
pub enum Outcome {
    /// Signed in: the User as it was, and whether a TOTP code was part of the proof.
    Success {
        /// The person.
        user: Arc<User>,
        /// A TOTP code was verified (the `otp` in an ID token's `amr`).
        totp: bool,
    },
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

impl SignIn {
    /// The shared state; hashes the dummy password once, with the live parameters.
    pub async fn new(
        client: Client,
        caches: Caches,
        hasher: PasswordHasher,
        lockout: Lockout,
        allowed_email_domains: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CredentialError> {
        let nobody = crate::credentials::Token::generate()?;
        let dummy_hash = hasher.hash(nobody.expose()).await?;
        Ok(Self {
            client,
            caches,
            hasher,
            lockout,
            allowed_email_domains,
            dummy_hash,
            metrics,
            failures: FailureLog::default(),
        })
    }
}

/// Every password check is busy: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

impl SignIn {
    /// Whether `password` matches the `stored` hash. Without one, a hash of nothing anyone
    /// knows is checked, so that an account without a password costs the same.
    pub async fn verify_password(&self, password: &str, stored: Option<&str>) -> Result<bool, Busy> {
        match self.hasher.verify(password, stored.unwrap_or(&self.dummy_hash)).await {
            Ok(matched) => Ok(matched && stored.is_some()),
            Err(CredentialError::Busy) => Err(Busy),
            Err(_) => Ok(false),
        }
    }
}

/// Signs a person in by `identifier` (`None`: the person typed nothing usable) from
/// `address` (recorded in their history). Every
/// identifier — unknown, inactive, locked or active — costs one password check, and every
/// wrong answer is the same: which accounts exist cannot be read off the answers or their
/// timing. A counted failure is recorded after the answer.
pub async fn sign_in(
    signin: &Arc<SignIn>,
    identifier: Option<Identifier<'_>>,
    password: &str,
    code: &str,
    address: Option<std::net::IpAddr>,
) -> Result<Outcome, facts::WriteError> {
    let found = identifier.and_then(|identifier| account(signin, identifier));
    let stored =
        found.as_ref().and_then(|(_, credentials)| text(credentials, PASSWORD_HASH)).map(str::to_owned);
    let Ok(password_ok) = signin.verify_password(password, stored.as_deref()).await else {
        return Ok(Outcome::Busy);
    };
    let Some((user, credentials)) = found else {
        signin.metrics.login("denied");
        return Ok(Outcome::Denied);
    };
    let admitted = user.spec.state_at(Timestamp::now()) == UserState::Active
        && signin.caches.directory_conflict(&user, &signin.allowed_email_domains).is_none();
    let totp_required = user.spec.mfa.required || text(&credentials, TOTP_SECRET).is_some();
    let code = code.to_owned();
    let now = Timestamp::now();
    let unix = u64::try_from(now.as_second()).unwrap_or(0);
    let lockout = signin.lockout;
    // Failures not written yet count: guesses made while the API server cannot take them
    // still reach the lock, and the right password then gets the same answer as a wrong one.
    let unwritten = signin.failures.pending(&credentials);
    let judge = move |current: &Secret| {
        let facts = CredentialFacts::of(current);
        let attempt = Attempt {
            password_ok: password_ok && text(current, PASSWORD_HASH) == stored.as_deref(),
            totp_required,
            totp_step: totp_step(current, &code, unix),
            standing: lockout.with_unwritten(lockout.of(&facts, now), unwritten),
            admitted,
        };
        verdict(&attempt, lockout.threshold)
    };
    match judge(&credentials) {
        Verdict::Success { .. } => {}
        Verdict::Refused => {
            signin.metrics.login("inactive");
            return Ok(Outcome::Inactive);
        }
        Verdict::Ignored => {
            signin.metrics.login("denied");
            return Ok(Outcome::Denied);
        }
        Verdict::Failure { .. } => {
            signin.metrics.login("denied");
            FailureLog::record(signin, user, credentials, history::Attempt::new(now, false, address));
            return Ok(Outcome::Denied);
        }
    }
    // Success is written before it is answered: the TOTP step is spent only once.
    let verdict = facts::update(&signin.client, &credentials, |current: &Secret| {
        let verdict = judge(current);
        let changes = match &verdict {
            Verdict::Success { step } => {
                let mut changes = Changes::from([
                    (FAILED_LOGINS, Some("0".to_owned())),
                    (LOCKED_AT, None),
                    (LAST_LOGIN_AT, Some(now.to_string())),
                ]);
                let attempt = history::Attempt::new(now, true, address);
                changes
                    .insert(RECENT_SIGN_INS, Some(history::with(text(current, RECENT_SIGN_INS), &[attempt])));
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
        Verdict::Success { step } => {
            signin.metrics.login("success");
            Outcome::Success { user, totp: step.is_some() }
        }
        Verdict::Refused => {
            signin.metrics.login("inactive");
            Outcome::Inactive
        }
        // The code was spent, or the password changed, in the meantime.
        Verdict::Failure { .. } | Verdict::Ignored => {
            signin.metrics.login("denied");
            Outcome::Denied
        }
    })
}

/// Why a person who proved who they are may not hold tokens now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// The User is deactivated (`state: Inactive`).
    Inactive,
    /// Too many failed sign-ins locked the account.
    Locked,
    /// The directory refuses the User (a duplicate email or username, a domain not allowed).
    Refused,
    /// An MfaReset cleared the authenticator: the person must enrol a new one first.
    Reenrolment,
}

impl Barrier {
    /// What the person is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Inactive => "Your account is deactivated. Ask your administrator.",
            Self::Locked => {
                "Your account is locked after too many failed sign-ins. Try again later, or ask your administrator."
            }
            Self::Refused => {
                "Your account cannot be used until your administrator resolves a conflict with another account."
            }
            Self::Reenrolment => {
                "Your authenticator was reset. Set up a new one through the link you were emailed first."
            }
        }
    }
}

/// What stops a person from holding tokens now, if anything (pure).
pub fn barrier_of(
    active: bool,
    directory_ok: bool,
    standing: Standing,
    facts: &CredentialFacts,
    mfa_required: bool,
) -> Option<Barrier> {
    if !active {
        Some(Barrier::Inactive)
    } else if standing.is_locked() {
        Some(Barrier::Locked)
    } else if !directory_ok {
        Some(Barrier::Refused)
    } else if !facts.totp_enrolled && (mfa_required || facts.mfa_reset_uid.is_some()) {
        Some(Barrier::Reenrolment)
    } else {
        None
    }
}

impl SignIn {
    /// What stops `user` (with `credentials`) from holding tokens now: asked at sign-in, at
    /// every refresh and at every userinfo request.
    pub fn barrier(&self, user: &User, credentials: &Secret, now: Timestamp) -> Option<Barrier> {
        let facts = CredentialFacts::of(credentials);
        barrier_of(
            user.spec.state_at(now) == UserState::Active,
            self.caches.directory_conflict(user, &self.allowed_email_domains).is_none(),
            self.lockout.of(&facts, now),
            &facts,
            user.spec.mfa.required,
        )
    }
}

/// `namespace/name` of a user, for logs.
pub fn who(user: &User) -> String {
    format!("{}/{}", user.namespace().unwrap_or_default(), user.name_any())
}

/// The TOTP step `code` matches in `credentials`, if it is right and unused.
pub(crate) fn totp_step(credentials: &Secret, code: &str, unix: u64) -> Option<u64> {
    let secret = TotpSecret::from_base32(text(credentials, TOTP_SECRET)?).ok()?;
    let last = text(credentials, TOTP_LAST_STEP).and_then(|v| v.parse().ok());
    crate::credentials::verify_totp(&secret, code, unix, last).ok()
}

/// The User that holds `identifier` in the directory, with its credentials Secret.
fn account(signin: &SignIn, identifier: Identifier<'_>) -> Option<(Arc<User>, Arc<Secret>)> {
    let user = signin.caches.holder(identifier)?;
    let credentials = signin.caches.credentials_of(&user)?;
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
    fn tokens_wait_for_activation_unlock_agreement_and_a_new_authenticator() {
        let facts = CredentialFacts { password_set: true, totp_enrolled: true, ..Default::default() };
        let open = Standing::Open { failed: 0 };
        assert_eq!(barrier_of(true, true, open, &facts, true), None);
        assert_eq!(barrier_of(false, true, open, &facts, true), Some(Barrier::Inactive));
        assert_eq!(
            barrier_of(true, true, Standing::Locked { until: None }, &facts, true),
            Some(Barrier::Locked)
        );
        assert_eq!(barrier_of(true, false, open, &facts, true), Some(Barrier::Refused));
        let reset =
            CredentialFacts { totp_enrolled: false, mfa_reset_uid: Some("r".into()), ..facts.clone() };
        assert_eq!(
            barrier_of(true, true, open, &reset, false),
            Some(Barrier::Reenrolment),
            "even where MFA is optional"
        );
        let never = CredentialFacts { totp_enrolled: false, ..facts };
        assert_eq!(barrier_of(true, true, open, &never, false), None, "password-only users are fine");
    }

    #[test]
    fn a_failure_records_the_lock_start_when_it_reaches_the_threshold() {
        let secret = crate::facts::secret_with;
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
