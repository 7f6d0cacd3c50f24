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
use crate::credentials::CredentialFacts;
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

/// One account's failures not yet written: the batch being written — kept, and counted,
/// until its write is done; tried again as it is when the write fails for now (a write that
/// timed out may have landed: [`landed`] recognises exactly that batch) — and those that
/// arrived since.
#[derive(Debug, Default)]
struct Waiting {
    writing: Option<Pending>,
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
                // The cache's copy: usually current, so a batch seldom meets a conflict. A
                // Secret of another uid belongs to a User made since under the same name.
                let latest = signin.caches.secrets.get(&ObjectRef::from_obj(credentials.as_ref()));
                let current = latest.as_deref().unwrap_or(&credentials);
                let done = current.metadata.uid != credentials.metadata.uid
                    || write(&signin, &user, current, &batch, pause == RETRY_FIRST).await;
                if done {
                    signin.failures.written(&key);
                    pause = RETRY_FIRST;
                } else {
                    // Backoff while the API server cannot take it, spread so that the
                    // accounts of an outage do not all try again at once.
                    tokio::time::sleep(jittered(pause)).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        });
    }

    /// How many failures of the account with credentials `cached` (the watch cache's copy)
    /// are not written yet: they count towards its lock, so that guesses made while writes
    /// fail reach it all the same. A batch whose write landed though it seemed to fail is in
    /// `cached`'s count already.
    pub fn pending(&self, cached: &Secret) -> u32 {
        let key = crate::index::object_key(cached);
        self.lock().get(&key).map_or(0, |w| {
            let writing = w.writing.as_ref().filter(|batch| !landed(cached, &batch.attempts));
            w.fresh.count.saturating_add(writing.map_or(0, |batch| batch.count))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The batch to write for `key`: the one being written, as it was, if its last write
    /// failed; else what arrived since (which then is the one being written). `None` (and
    /// `key` forgotten) when there is nothing left: the writer stops.
    fn take(&self, key: &str) -> Option<Pending> {
        let mut pending = self.lock();
        let waiting = pending.get_mut(key)?;
        if waiting.writing.is_none() && waiting.fresh.count > 0 {
            waiting.writing = Some(std::mem::take(&mut waiting.fresh));
        }
        let batch = waiting.writing.clone();
        if batch.is_none() {
            pending.remove(key);
        }
        batch
    }

    /// The batch being written for `key` is done with (written, or given up for good).
    fn written(&self, key: &str) {
        if let Some(waiting) = self.lock().get_mut(key) {
            waiting.writing = None;
        }
    }
}

/// `pause`, give or take a quarter.
fn jittered(pause: Duration) -> Duration {
    let spread = u64::try_from(pause.as_millis() / 2).unwrap_or(0).max(1);
    let random = u64::from_le_bytes(crate::credentials::random_bytes::<8>().unwrap_or_default());
    pause - pause / 4 + Duration::from_millis(random % spread)
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

/// Whether the person signed in after `at` (a batch that waited out an outage): failures
/// before a success are not consecutive with what follows it.
fn signed_in_since(current: &Secret, at: Timestamp) -> bool {
    CredentialFacts::of(current).last_login_at.is_some_and(|last| last > at)
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
/// `first` says whether this is the batch's first try (a failure to write is logged once).
async fn write(signin: &SignIn, user: &User, credentials: &Secret, waiting: &Pending, first: bool) -> bool {
    let lockout = signin.lockout;
    let count = waiting.count;
    // Counted as of the latest failure: a lock starts then, not when an outage ended.
    let at = waiting.attempts.last().map_or_else(Timestamp::now, |attempt| attempt.at);
    let written = facts::update(&signin.client, credentials, |current| {
        if landed(current, &waiting.attempts) || signed_in_since(current, at) {
            return (None, Changes::new());
        }
        counted(current, count, &waiting.attempts, &lockout, at)
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
            if first {
                tracing::warn!(user = %who(user), %error, failures = count, "failed sign-ins not counted yet; trying again until they are");
            }
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
    use crate::facts::secret_with;

    #[test]
    fn a_batch_already_in_the_history_is_not_counted_again() {
        let at = |n| Timestamp::from_second(1_800_000_000).unwrap() + std::time::Duration::from_nanos(n);
        let batch = [Attempt::new(at(1), false, None), Attempt::new(at(2), false, None)];
        assert!(!landed(&secret_with(&[]), &batch), "nothing written yet");
        let earlier = history::with(None, &[Attempt::new(at(0), false, None)]);
        let secret = secret_with(&[(RECENT_SIGN_INS, &earlier)]);
        assert!(!landed(&secret, &batch), "another batch a nanosecond earlier is not this one");
        let after = history::with(Some(&earlier), &batch);
        assert!(landed(&secret_with(&[(RECENT_SIGN_INS, &after)]), &batch), "the batch was written");
    }

    #[test]
    fn failures_arriving_meanwhile_are_added_up_and_the_writer_then_stops() {
        let log = FailureLog::default();
        let key = "ns/a-credentials";
        let attempt = Attempt::new(Timestamp::UNIX_EPOCH, false, None);
        log.lock().entry(key.into()).or_default().fresh.add(attempt.clone());
        assert_eq!(log.take(key).map(|p| p.count), Some(1));
        log.written(key);
        for _ in 0..3 {
            log.lock().get_mut(key).unwrap().fresh.add(attempt.clone());
        }
        let three = log.take(key).unwrap();
        assert_eq!((three.count, three.attempts.len()), (3, 3), "three arrived while the first was written");
        log.written(key);
        assert_eq!(log.take(key), None);
        assert!(log.lock().is_empty(), "the account is forgotten once written");
        let mut many = Pending::default();
        for _ in 0..100 {
            many.add(attempt.clone());
        }
        assert_eq!((many.count, many.attempts.len()), (100, history::KEPT), "the history is bounded");
    }

    /// `ns/b-credentials`, with `history` as its recent sign-ins.
    fn credentials(history: &str) -> Secret {
        let mut secret = secret_with(&[(RECENT_SIGN_INS, history)]);
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some("b-credentials".into());
        secret
    }

    #[test]
    fn the_batch_being_written_counts_until_done_and_is_tried_again_as_it_was() {
        let log = FailureLog::default();
        let (cached, key) = (credentials(""), "ns/b-credentials");
        let at = |n| Attempt::new(Timestamp::from_second(n).unwrap(), false, None);
        log.lock().entry(key.into()).or_default().fresh.add(at(1));
        log.lock().get_mut(key).unwrap().fresh.add(at(2));
        let batch = log.take(key).unwrap();
        assert_eq!(log.pending(&cached), 2, "counted while it is written");
        log.lock().get_mut(key).unwrap().fresh.add(at(3));
        assert_eq!(log.pending(&cached), 3, "and what arrives meanwhile");
        assert_eq!(log.take(key), Some(batch.clone()), "its write failed: the same batch again");
        let landed_here = credentials(&history::with(None, &batch.attempts));
        assert_eq!(log.pending(&landed_here), 1, "once the cache shows it landed, it is not counted twice");
        log.written(key);
        assert_eq!(log.take(key).map(|p| p.attempts), Some(vec![at(3)]), "then what came since");
        log.written(key);
        assert_eq!(log.take(key), None);
        assert_eq!(log.pending(&cached), 0);
    }

    #[test]
    fn failures_before_a_later_sign_in_are_not_counted() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        assert!(!signed_in_since(&secret_with(&[]), at));
        let later = (at + std::time::Duration::from_secs(5)).to_string();
        let secret = secret_with(&[(crate::credentials::record::LAST_LOGIN_AT, &later)]);
        assert!(signed_in_since(&secret, at));
        assert!(!signed_in_since(&secret, at + std::time::Duration::from_secs(6)));
    }

    #[test]
    fn a_retry_waits_its_pause_give_or_take_a_quarter() {
        for pause in [RETRY_FIRST, RETRY_MAX] {
            let waited = jittered(pause);
            assert!(waited >= pause - pause / 4 && waited <= pause + pause / 4, "{waited:?} for {pause:?}");
        }
    }
}
