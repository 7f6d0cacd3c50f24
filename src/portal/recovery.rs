//! "Forgot your password?": a person names their account (email or username) and, if it
//! exists and may recover, roster creates a `PasswordReset` with `initiator: Self` — which
//! the reset controller emails like any other, with a one-hour link. Whoever asks gets the
//! same answer at the same speed whether or not the account exists: the request is only
//! queued before the answer; looking the account up, judging it and writing happen after,
//! in one worker. Per address, requests are rate-limited; per user, at most one is open
//! (the last asked within the link's hour, the password not set since) and
//! [`PER_DAY`] a day, counted in the credentials Secret under a resourceVersion
//! precondition (every replica counts the same requests).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use super::rate_limit::RateLimiter;
use k8s_openapi::api::core::v1::Secret;

use crate::api::{
    Delivery, Initiator, PasswordReset, PasswordResetSpec, ResetPhase, UserReference, UserState,
};
use crate::credentials::record::{
    EmailProof, PASSWORD_RESET_DONE_FOR, PASSWORD_RESET_UID, RECOVERY_REQUESTS,
};
use crate::credentials::{CredentialFacts, Standing};
use crate::directory::Identifier;
use crate::facts::{self, Changes, text};
use crate::signin::{SignIn, who};

/// Recoveries one person may ask for in a day.
pub const PER_DAY: usize = 3;
/// How long a recovery link works: one is open at a time, so this is also how long a second
/// request waits.
pub const LINK_TTL: SignedDuration = SignedDuration::from_hours(1);
/// How long a finished self-service PasswordReset is kept for audit before it deletes
/// itself (seconds): a day, so that strangers' requests leave few objects behind.
pub const KEPT_FOR: i64 = 24 * 3600;
/// Requests waiting for the worker; beyond, a request is dropped (logged). The per-address
/// limit keeps a flood from one client far below it.
pub const QUEUE: usize = 1024;
/// The longest an identifier may be (an email address's).
const MAX_IDENTIFIER: usize = 254;

/// What the answer to a recovery request is, whatever the account.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// Taken (whether anything is sent is not told).
    Taken,
    /// The client's address has used up its requests: wait this long.
    TooMany(Duration),
    /// Nothing usable was typed.
    Empty,
}

/// One request, as queued.
struct Request {
    identifier: String,
    client: IpAddr,
}

/// Takes recovery requests and works them off after answering.
pub struct Recovery {
    queue: mpsc::Sender<Request>,
    limiter: RateLimiter,
}

impl Recovery {
    /// Starts the worker over `signin`'s caches and client; `per_hour` requests per client
    /// address (of `trusted` proxies' clients).
    pub fn start(signin: Arc<SignIn>, per_hour: u32, trusted: Vec<ipnet::IpNet>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(work(signin, requests));
        Self { queue, limiter: RateLimiter::per_period(per_hour, Duration::from_secs(3600), trusted) }
    }

    /// The client address of a request from `peer` with `headers` (see
    /// [`RateLimiter::client`]).
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        self.limiter.client(peer, headers)
    }

    /// Takes a request from `client` naming `identifier`. Costs the same for any account:
    /// nothing is looked up here.
    pub fn ask(&self, identifier: &str, client: IpAddr) -> Asked {
        let identifier = identifier.trim();
        if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER {
            return Asked::Empty;
        }
        if let Err(wait) = self.limiter.check(client, Instant::now()) {
            return Asked::TooMany(wait);
        }
        match self.queue.try_send(Request { identifier: identifier.to_owned(), client }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("too many password recovery requests waiting; one was dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the password recovery worker has stopped; a request was dropped");
            }
        }
        Asked::Taken
    }
}

/// The facts a recovery is judged on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryFacts {
    /// The User's state now (an expired account is Inactive).
    pub state: UserState,
    /// The directory refuses the User.
    pub refused: bool,
    /// The person finished onboarding (before, their invitation is the way in).
    pub onboarded: bool,
    /// A second factor is due but none is enrolled: nothing would prove who holds the link.
    pub unproven: bool,
    /// No second factor is enrolled and the person never proved they read mail at their
    /// address: the link alone would open the account, sent to an address nobody vouched for.
    pub mailbox_unproven: bool,
    /// Locked until an admin acts: recovery cannot lift that.
    pub locked_for_good: bool,
    /// An admin's reset link is open: a stranger's request must not replace it.
    pub admin_link_open: bool,
    /// When the person asked before (what the credentials Secret recorded).
    pub asked: Vec<Timestamp>,
    /// When the password was last set.
    pub password_set_at: Option<Timestamp>,
}

/// Whether a recovery link is sent, or why not (for the log only: the person is never told).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record the request (these times, the new one last) and create the PasswordReset.
    Send(Vec<Timestamp>),
    /// Not sent, for this reason.
    Skip(&'static str),
}

/// Decides on a recovery request at `now`. A locked-out person may recover (that is who
/// needs it); a deactivated or expired one may not.
pub fn decide(facts: &RecoveryFacts, now: Timestamp) -> Verdict {
    if facts.state == UserState::Inactive {
        return Verdict::Skip("the account is deactivated or expired");
    }
    if facts.refused {
        return Verdict::Skip("the directory refuses the account");
    }
    if !facts.onboarded {
        return Verdict::Skip("the person has not finished onboarding");
    }
    if facts.unproven {
        return Verdict::Skip("a second factor is due and none is enrolled");
    }
    if facts.mailbox_unproven {
        return Verdict::Skip("no second factor, and the address was never proven");
    }
    if facts.locked_for_good {
        return Verdict::Skip("the account is locked until an admin acts");
    }
    if facts.admin_link_open {
        return Verdict::Skip("an admin's reset link is open");
    }
    let day_ago = now - SignedDuration::from_hours(24);
    let mut recent: Vec<Timestamp> =
        facts.asked.iter().copied().filter(|t| *t > day_ago && *t <= now).collect();
    recent.sort_unstable();
    if recent.len() >= PER_DAY {
        return Verdict::Skip("the daily limit of recoveries is reached");
    }
    if let Some(last) = recent.last()
        && now < *last + LINK_TTL
        && facts.password_set_at.is_none_or(|set| set < *last)
    {
        return Verdict::Skip("a recovery link is still open");
    }
    recent.push(now);
    Verdict::Send(recent)
}

/// The times recorded under [`RECOVERY_REQUESTS`] (space-separated RFC 3339).
fn asked(secret: &Secret) -> Vec<Timestamp> {
    text(secret, RECOVERY_REQUESTS)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Works off the queue until every sender is gone.
async fn work(signin: Arc<SignIn>, mut requests: mpsc::Receiver<Request>) {
    while let Some(request) = requests.recv().await {
        if let Err(error) = recover(&signin, &request).await {
            tracing::warn!(%error, "a password recovery request failed");
        }
    }
}

/// Why a recovery could not be carried out.
#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error(transparent)]
    Facts(#[from] facts::WriteError),
    #[error("creating a PasswordReset for {user}: {source}")]
    Create { user: String, source: Box<kube::Error> },
}

async fn recover(signin: &SignIn, request: &Request) -> Result<(), RecoveryError> {
    let Some(identifier) = Identifier::typed_in(&request.identifier) else { return Ok(()) };
    // The identifier itself is not logged: people type passwords into the wrong field.
    let Some(user) = signin.caches.holder(identifier) else {
        tracing::info!(client = %request.client, "a password recovery named no account");
        return Ok(());
    };
    let Some(credentials) = signin.caches.credentials_of(&user) else { return Ok(()) };
    let now = Timestamp::now();
    let mfa_required = user.spec.mfa.required;
    let fixed = RecoveryFacts {
        state: user.spec.state_at(now),
        refused: signin.caches.directory_conflict(&user, &signin.allowed_email_domains).is_some(),
        ..Default::default()
    };
    let resets = signin.caches.password_resets_of(&user.namespace().unwrap_or_default(), &user.name_any());
    let (verdict, _) = facts::update(&signin.client, &credentials, |current| {
        let progress = CredentialFacts::of(current);
        let facts = RecoveryFacts {
            onboarded: progress.onboarded(mfa_required),
            unproven: progress.reset_link_unproven(mfa_required, false),
            mailbox_unproven: !progress.totp_enrolled
                && progress.email_verified(&user.spec.email) != EmailProof::Verified,
            locked_for_good: matches!(signin.lockout.of(&progress, now), Standing::Locked { until: None }),
            admin_link_open: admin_link_open(&resets, current, now),
            asked: asked(current),
            password_set_at: progress.password_set_at,
            ..fixed.clone()
        };
        match decide(&facts, now) {
            Verdict::Send(times) => {
                let recorded = times.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
                (Verdict::Send(times), Changes::from([(RECOVERY_REQUESTS, Some(recorded))]))
            }
            skip => (skip, Changes::new()),
        }
    })
    .await?;
    match verdict {
        Verdict::Skip(why) => {
            tracing::info!(user = %who(&user), client = %request.client, reason = why, "a password recovery was not sent");
            Ok(())
        }
        Verdict::Send(_) => match create(signin, &user).await {
            Ok(reset) => {
                tracing::info!(user = %who(&user), client = %request.client, reset = %reset, "a person asked to recover their password");
                Ok(())
            }
            Err(error) => {
                // Not made: the request does not count against the person's limits.
                let latest = signin.caches.credentials_of(&user).unwrap_or(credentials);
                let forget = facts::update(&signin.client, &latest, |current| {
                    let kept: Vec<String> =
                        asked(current).into_iter().filter(|t| *t != now).map(|t| t.to_string()).collect();
                    ((), Changes::from([(RECOVERY_REQUESTS, (!kept.is_empty()).then(|| kept.join(" ")))]))
                });
                if let Err(e) = forget.await {
                    tracing::warn!(user = %who(&user), error = %e, "a failed recovery still counts against the person's limits");
                }
                Err(error)
            }
        },
    }
}

/// Whether an admin's PasswordReset of the user has its link open: the one the credentials
/// name, not used, not failed, not expired.
fn admin_link_open(resets: &[Arc<PasswordReset>], credentials: &Secret, now: Timestamp) -> bool {
    let open = text(credentials, PASSWORD_RESET_UID);
    let used = text(credentials, PASSWORD_RESET_DONE_FOR);
    resets.iter().any(|reset| {
        let uid = reset.metadata.uid.as_deref();
        let status = reset.status.as_ref();
        reset.spec.initiator == Initiator::Admin
            && uid.is_some()
            && uid == open
            && uid != used
            && status.and_then(|s| s.phase) != Some(ResetPhase::Failed)
            && status.and_then(|s| s.expires_at.as_ref()).is_none_or(|at| now < at.0)
    })
}

/// Creates the PasswordReset (owned by the User, so it goes with them); its name.
async fn create(signin: &SignIn, user: &crate::api::User) -> Result<String, RecoveryError> {
    let namespace = user.namespace().unwrap_or_default();
    let failed = |source| RecoveryError::Create { user: who(user), source: Box::new(source) };
    let reset = PasswordReset {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", user.name_any())),
            namespace: Some(namespace.clone()),
            owner_references: user.controller_owner_ref(&()).map(|owner| vec![owner]),
            labels: Some(
                [(crate::controller::MANAGED_BY_LABEL.to_owned(), crate::controller::MANAGED_BY.to_owned())]
                    .into(),
            ),
            ..Default::default()
        },
        spec: PasswordResetSpec {
            user_ref: UserReference::to(user.name_any()),
            reason: "forgot password: the person asked on the sign-in page".to_owned(),
            delivery: Delivery::Email,
            initiator: Initiator::Person,
            ttl: std::time::Duration::try_from(LINK_TTL).unwrap_or(Duration::from_secs(3600)).into(),
            ttl_seconds_after_finished: Some(KEPT_FOR),
        },
        status: None,
    };
    let params =
        PostParams { field_manager: Some(crate::controller::FIELD_MANAGER.into()), ..Default::default() };
    let made = Api::<PasswordReset>::namespaced(signin.client.clone(), &namespace)
        .create(&params, &reset)
        .await
        .map_err(failed)?;
    Ok(made.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn may() -> RecoveryFacts {
        RecoveryFacts { onboarded: true, password_set_at: Some(at(0)), ..Default::default() }
    }

    const HOUR: i64 = 3600;

    #[test]
    fn only_an_onboarded_active_account_that_can_prove_itself_recovers() {
        let now = at(100 * HOUR);
        assert_eq!(decide(&may(), now), Verdict::Send(vec![now]));
        for facts in [
            RecoveryFacts { state: UserState::Inactive, ..may() },
            RecoveryFacts { refused: true, ..may() },
            RecoveryFacts { onboarded: false, ..may() },
            RecoveryFacts { unproven: true, ..may() },
            RecoveryFacts { mailbox_unproven: true, ..may() },
            RecoveryFacts { locked_for_good: true, ..may() },
            RecoveryFacts { admin_link_open: true, ..may() },
        ] {
            assert!(matches!(decide(&facts, now), Verdict::Skip(_)), "{facts:?}");
        }
    }

    #[test]
    fn one_link_is_open_at_a_time_and_a_few_a_day() {
        let now = at(100 * HOUR);
        let asked_at =
            |times: &[i64]| RecoveryFacts { asked: times.iter().map(|t| at(*t)).collect(), ..may() };
        let open = asked_at(&[100 * HOUR - 600]);
        assert!(matches!(decide(&open, now), Verdict::Skip(_)), "asked ten minutes ago");
        let used = RecoveryFacts { password_set_at: Some(at(100 * HOUR - 60)), ..open.clone() };
        assert_eq!(
            decide(&used, now),
            Verdict::Send(vec![at(100 * HOUR - 600), now]),
            "the last link was used: another may follow"
        );
        let expired = asked_at(&[99 * HOUR - 1]);
        assert!(matches!(decide(&expired, now), Verdict::Send(_)), "the last link expired");
        let three = asked_at(&[80 * HOUR, 90 * HOUR, 95 * HOUR]);
        assert_eq!(decide(&three, now), Verdict::Skip("the daily limit of recoveries is reached"));
        let old = asked_at(&[70 * HOUR, 90 * HOUR, 95 * HOUR]);
        assert_eq!(
            decide(&old, now),
            Verdict::Send(vec![at(90 * HOUR), at(95 * HOUR), now]),
            "a day later the oldest no longer counts, and is forgotten"
        );
        let future = asked_at(&[200 * HOUR]);
        assert_eq!(
            decide(&future, now),
            Verdict::Send(vec![now]),
            "a time ahead of now (a hand edit) is dropped"
        );
    }
}
