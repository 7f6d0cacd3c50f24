//! The lockout rule, once for every door: `threshold` consecutive failed sign-ins lock an
//! account for `duration` from the failure that reached it (or until an admin acts, when
//! there is no duration). A lock that has run out counts as no failures at all.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::CredentialFacts;

/// How failed sign-ins lock an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Consecutive failures that lock.
    pub threshold: u32,
    /// How long a lock lasts; `None`: until an admin deactivates and reactivates the user.
    pub duration: Option<SignedDuration>,
}

/// Where an account stands with respect to failed sign-ins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Sign-ins are open; this many consecutive failures count towards a lock.
    Open {
        /// Failures that count.
        failed: u32,
    },
    /// Locked until then (`None`: until an admin acts).
    Locked {
        /// When the lock ends by itself.
        until: Option<Timestamp>,
    },
}

impl Lockout {
    /// The standing of an account with `failed` consecutive failures, the last lock having
    /// started at `locked_at`. A count at the threshold with no recorded start (written by
    /// hand, or before locks had a duration) stays locked until an admin acts.
    pub fn standing(&self, failed: u32, locked_at: Option<Timestamp>, now: Timestamp) -> Standing {
        if failed < self.threshold.max(1) {
            return Standing::Open { failed };
        }
        // A start so far ahead that its end overflows (written by hand) locks until an admin acts.
        match (self.duration, locked_at.and_then(|at| self.duration.and_then(|d| at.checked_add(d).ok()))) {
            (Some(_), Some(until)) if now >= until => Standing::Open { failed: 0 },
            (Some(_), Some(until)) => Standing::Locked { until: Some(until) },
            _ => Standing::Locked { until: None },
        }
    }

    /// The standing the credentials Secret's facts give.
    pub fn of(&self, facts: &CredentialFacts, now: Timestamp) -> Standing {
        self.standing(facts.failed_logins, facts.locked_at, now)
    }

    /// `standing` with `unwritten` failures (counted, not yet in the Secret: the API server
    /// cannot take them now) added: an open account they bring to the threshold is locked
    /// until they are written (the lock's start is written with them).
    pub fn with_unwritten(&self, standing: Standing, unwritten: u32) -> Standing {
        match standing {
            Standing::Open { failed } if failed.saturating_add(unwritten) >= self.threshold.max(1) => {
                Standing::Locked { until: None }
            }
            other => other,
        }
    }
}

impl Standing {
    /// Whether sign-ins are refused.
    pub fn is_locked(self) -> bool {
        matches!(self, Standing::Locked { .. })
    }

    /// Failures that count now (0 once a lock has run out).
    pub fn failed(self) -> u32 {
        match self {
            Standing::Open { failed } => failed,
            Standing::Locked { .. } => u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn failures_not_yet_written_lock_an_account_they_bring_to_the_threshold() {
        let rule = Lockout { threshold: 5, duration: Some(SignedDuration::from_mins(15)) };
        assert_eq!(rule.with_unwritten(Standing::Open { failed: 2 }, 2), Standing::Open { failed: 2 });
        assert!(rule.with_unwritten(Standing::Open { failed: 2 }, 3).is_locked());
        assert!(rule.with_unwritten(Standing::Open { failed: 0 }, 5).is_locked());
        let locked = Standing::Locked { until: Some(at(60)) };
        assert_eq!(rule.with_unwritten(locked, 0), locked, "a lock stands as it is");
    }

    #[test]
    fn a_lock_lasts_its_duration_from_the_failure_that_reached_the_threshold() {
        let rule = Lockout { threshold: 5, duration: Some(SignedDuration::from_mins(15)) };
        assert_eq!(rule.standing(4, None, at(0)), Standing::Open { failed: 4 });
        assert_eq!(rule.standing(5, Some(at(100)), at(100)), Standing::Locked { until: Some(at(1000)) });
        assert_eq!(rule.standing(5, Some(at(100)), at(999)), Standing::Locked { until: Some(at(1000)) });
        assert_eq!(rule.standing(5, Some(at(100)), at(1000)), Standing::Open { failed: 0 }, "ran out");
        assert_eq!(rule.standing(9, None, at(5000)), Standing::Locked { until: None }, "no start recorded");
        let far = Timestamp::MAX;
        assert_eq!(
            rule.standing(5, Some(far), at(0)),
            Standing::Locked { until: None },
            "no overflow, no panic"
        );
    }

    #[test]
    fn without_a_duration_a_lock_waits_for_an_admin() {
        let rule = Lockout { threshold: 3, duration: None };
        assert_eq!(rule.standing(3, Some(at(0)), at(1_000_000)), Standing::Locked { until: None });
        assert!(rule.standing(3, Some(at(0)), at(1)).is_locked());
        assert!(!rule.standing(2, None, at(1)).is_locked());
    }
}
