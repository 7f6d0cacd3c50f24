//! Failed sign-ins counted after the answer, so that a wrong password for an existing account
//! takes as long as one for an unknown account — with one writer per account that adds up
//! what arrived meanwhile (no count lost to conflicts between concurrent writes), and a
//! bounded number of accounts in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use super::history::{self, Attempt};
use super::{SignIn, Verdict, failures, who};
use crate::api::User;
use crate::credentials::record::RECENT_SIGN_INS;
use crate::facts::{self, Changes};

/// Accounts whose failures may be waiting to be written at once; beyond, a failure is
/// logged and not counted (the per-client rate limit keeps this out of reach).
pub const MAX_ACCOUNTS: usize = 10_000;
/// The pause before a batch whose write failed for the time being (the API server down or
/// slow) is tried again; it doubles up to [`RETRY_MAX`]. The batch is kept meanwhile, and
/// counts towards the lock ([`FailureLog::pending`]).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Failures per credentials Secret (`namespace/name`) not yet written.
#[derive(Default)]
pub struct FailureLog(Mutex<HashMap<String, Waiting>>);

/// One account's failures not yet written: a batch whose write failed, to be tried again as
/// it is (a write that timed out may have landed: [`landed`] recognises exactly that batch),
/// and those that arrived since.
#[derive(Debug, Default)]
struct Waiting {
    failed: Option<Pending>,
    fresh: Pending,
}

/// One account's failures not yet written: how many, and the latest few for its history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Pending {
    count: u32,
    attempts: Vec<Attempt>,
}

impl Pending {
    fn add(&mut self, attempt: Attempt) {
        self.count = self.count.saturating_add(1);
        if self.attempts.len() >= history::KEPT {
            self.attempts.remove(0);
        }
        self.attempts.push(attempt);
    }
}

impl FailureLog {
    /// Counts one failed sign-in of `user` (`attempt`): adds it to the account's pending
    /// failures and, unless a writer for the account is running, starts one.
    pub fn record(signin: &Arc<SignIn>, user: Arc<User>, credentials: Arc<Secret>, attempt: Attempt) {
        let key = crate::index::object_key(credentials.as_ref());
        {
            let mut pending = signin.failures.lock();
            if let Some(waiting) = pending.get_mut(&key) {
                waiting.fresh.add(attempt);
                return;
            }
            if pending.len() >= MAX_ACCOUNTS {
                tracing::warn!(user = %who(&user), "too many accounts with failed sign-ins in flight; one not counted");
                return;
            }
            pending.entry(key.clone()).or_default().fresh.add(attempt);
        }
        let signin = signin.clone();
        tokio::spawn(async move {
            let mut pause = RETRY_FIRST;
            while let Some(batch) = signin.failures.take(&key) {
                // The cache's copy: usually current, so a batch seldom meets a conflict.
                let latest = signin.caches.secrets.get(&ObjectRef::from_obj(credentials.as_ref()));
                if write(&signin, &user, latest.as_deref().unwrap_or(&credentials), &batch).await {
                    pause = RETRY_FIRST;
                } else {
                    signin.failures.put_back(&key, batch);
                    tokio::time::sleep(pause).await; // backoff while the API server cannot take it
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        });
    }

    /// How many failures of the account with credentials `key` are not written yet: they
    /// count towards its lock, so that guesses made while writes fail reach it all the same.
    pub fn pending(&self, key: &str) -> u32 {
        self.lock()
            .get(key)
            .map_or(0, |w| w.fresh.count.saturating_add(w.failed.as_ref().map_or(0, |f| f.count)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next batch to write for `key` — one whose write failed first, as it was — reset
    /// to none; `None` (and `key` forgotten) when there are none left: the writer stops.
    fn take(&self, key: &str) -> Option<Pending> {
        let mut pending = self.lock();
        match pending.get_mut(key) {
            Some(waiting) if waiting.failed.is_some() => waiting.failed.take(),
            Some(waiting) if waiting.fresh.count > 0 => Some(std::mem::take(&mut waiting.fresh)),
            _ => {
                pending.remove(key);
                None
            }
        }
    }

    /// Keeps `batch`, whose write failed for now, to be tried again before what came since.
    fn put_back(&self, key: &str, batch: Pending) {
        self.lock().entry(key.to_owned()).or_default().failed = Some(batch);
    }
}

/// What counting `count` failures (the latest `attempts`) writes into the credentials
/// Secret as it is now: the count and lock ([`failures`]) and the history. Shared by every
/// door that checks a password.
pub fn counted(
    current: &Secret,
    count: u32,
    attempts: &[Attempt],
    lockout: &crate::credentials::Lockout,
    now: Timestamp,
) -> Option<(Verdict, Changes)> {
    let (verdict, mut changes) = failures(current, count, lockout, now)?;
    changes.insert(RECENT_SIGN_INS, Some(history::with(facts::text(current, RECENT_SIGN_INS), attempts)));
    Some((verdict, changes))
}

/// Whether a try that failed (timed out, or its answer lost) was written after all: the
/// history already holds the batch's attempts (to the nanosecond), so counting them again
/// would lock an account at half its threshold.
fn landed(current: &Secret, attempts: &[Attempt]) -> bool {
    let recorded = history::read(facts::text(current, RECENT_SIGN_INS));
    attempts.iter().any(|attempt| recorded.contains(attempt))
}

/// Writes the failures into the account's credentials Secret (re-read and decided again on
/// conflict). Whether it is done with them: `false` when the write failed for now and the
/// batch should be tried again.
async fn write(signin: &SignIn, user: &User, credentials: &Secret, waiting: &Pending) -> bool {
    let lockout = signin.lockout;
    let count = waiting.count;
    let written = facts::update(&signin.client, credentials, |current| {
        if landed(current, &waiting.attempts) {
            return (None, Changes::new());
        }
        counted(current, count, &waiting.attempts, &lockout, Timestamp::now())
            .map_or((None, Changes::new()), |(v, c)| (Some(v), c))
    })
    .await;
    match written {
        Ok((Some(Verdict::Failure { locks: true, .. }), _)) => {
            signin.metrics.lockout();
            tracing::warn!(user = %who(user), "locked out after too many failed sign-ins");
            true
        }
        Ok(_) => true,
        Err(error) if facts::Transient::is_transient(&error) => {
            tracing::warn!(user = %who(user), %error, failures = count, "failed sign-ins not counted yet; trying again");
            false
        }
        Err(error) => {
            tracing::error!(user = %who(user), %error, failures = count, "failed sign-ins could not be counted");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_already_in_the_history_is_not_counted_again() {
        let at = |n| Timestamp::from_second(1_800_000_000).unwrap() + std::time::Duration::from_nanos(n);
        let batch = [Attempt::new(at(1), false, None), Attempt::new(at(2), false, None)];
        let mut secret = Secret::default();
        assert!(!landed(&secret, &batch), "nothing written yet");
        let earlier = history::with(None, &[Attempt::new(at(0), false, None)]);
        secret.data = Some(
            [(RECENT_SIGN_INS.to_owned(), k8s_openapi::ByteString(earlier.clone().into_bytes()))].into(),
        );
        assert!(!landed(&secret, &batch), "another batch a nanosecond earlier is not this one");
        let after = history::with(Some(&earlier), &batch);
        secret.data =
            Some([(RECENT_SIGN_INS.to_owned(), k8s_openapi::ByteString(after.into_bytes()))].into());
        assert!(landed(&secret, &batch), "the batch was written");
    }

    #[test]
    fn failures_arriving_meanwhile_are_added_up_and_the_writer_then_stops() {
        let log = FailureLog::default();
        let attempt = Attempt::new(Timestamp::UNIX_EPOCH, false, None);
        log.0.lock().unwrap().entry("ns/a-credentials".into()).or_default().fresh.add(attempt.clone());
        assert_eq!(log.take("ns/a-credentials").map(|p| p.count), Some(1));
        for _ in 0..3 {
            log.0.lock().unwrap().get_mut("ns/a-credentials").unwrap().fresh.add(attempt.clone());
        }
        let three = log.take("ns/a-credentials").unwrap();
        assert_eq!((three.count, three.attempts.len()), (3, 3), "three arrived while the first was written");
        assert_eq!(log.take("ns/a-credentials"), None);
        assert!(log.0.lock().unwrap().is_empty(), "the account is forgotten once written");
        let mut many = Pending::default();
        for _ in 0..100 {
            many.add(attempt.clone());
        }
        assert_eq!((many.count, many.attempts.len()), (100, history::KEPT), "the history is bounded");
    }

    #[test]
    fn a_batch_that_could_not_be_written_is_kept_counted_and_tried_again_first_as_it_was() {
        let log = FailureLog::default();
        let key = "ns/b-credentials";
        let at = |n| Attempt::new(Timestamp::from_second(n).unwrap(), false, None);
        log.lock().entry(key.into()).or_default().fresh.add(at(1));
        log.lock().get_mut(key).unwrap().fresh.add(at(2));
        let batch = log.take(key).unwrap();
        assert_eq!(log.pending(key), 0, "taken to be written");
        log.lock().get_mut(key).unwrap().fresh.add(at(3));
        log.put_back(key, batch.clone());
        assert_eq!(log.pending(key), 3, "the failed batch and the newer failure both count");
        assert_eq!(log.take(key), Some(batch), "the failed batch again, unchanged");
        assert_eq!(log.take(key).map(|p| p.attempts), Some(vec![at(3)]), "then what came since");
        assert_eq!(log.take(key), None);
        assert_eq!(log.pending(key), 0);
    }
}
