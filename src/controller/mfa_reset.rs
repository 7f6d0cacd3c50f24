//! The MfaReset reconciler: clears the user's TOTP enrolment exactly once (the reset's uid
//! is recorded in the credentials Secret, so re-applying the same object never clears
//! again), issues a single-use re-enrolment link (24 h, only its SHA-256 stored in
//! `<reset>-token`), delivers it — by email, or into the admin-only `<reset>-link` with an
//! email telling the person of the reset — and marks the reset Completed. A newer reset of
//! the same user supersedes an open one; a finished reset deletes itself after
//! `ttlSecondsAfterFinished`, like a Job.
//!
//! Delivery is at-least-once like an invite's: the attempt is recorded on status (under a
//! resourceVersion precondition), then sent, then the result recorded; a crash between the
//! last two sends again, with a new link (the first then answers 410).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::instrument;

use super::invite::{addressed_as, cond, delivery_backoff};
use super::names::{
    LINK_URL, RESET_LABEL, RESET_LINK_TYPE, RESET_TOKEN_TYPE, TOKEN_EXPIRES_AT, TOKEN_HASH,
    credentials_secret_name, link_secret_name, token_secret_name,
};
use super::{
    Context, Undelivered, apply_owned_secret, apply_status, apply_status_unless_changed, cache,
    delete_owned_secret, now, publish, requeue_at,
};
use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::status_time;
use crate::api::{Delivery, LocalObjectReference, MfaReset, MfaResetPhase, MfaResetStatus, User, UserState};
use crate::credentials::record::{
    MFA_RESET_AT, MFA_RESET_UID, REENROL_TOKEN, TOTP_ENROLLED_AT, TOTP_LAST_STEP, TOTP_PENDING, TOTP_SECRET,
};
use crate::credentials::{CredentialFacts, Token};
use crate::facts::{self, Changes, text};
use crate::mail::{MfaResetNotice, SendError};
use crate::{Error, Result};

/// How long a re-enrolment link works.
pub const LINK_TTL: SignedDuration = SignedDuration::from_hours(24);

/// What became of a finished reset's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkFate {
    /// No link was issued (nothing to reset, or the reset failed).
    NoLink,
    /// Waiting for the person.
    Open,
    /// The person enrolled a new authenticator through it.
    Used,
    /// A newer reset of the same user replaced it.
    Superseded,
}

/// What the reconciler does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Finished: keep until `delete_at` (never when `None`); the link's fate.
    Finished { delete_at: Option<Timestamp>, link: LinkFate },
    /// `ttlSecondsAfterFinished` has passed.
    Delete,
    /// The reset cannot be done.
    Fail(&'static str),
    /// The user has no second factor to reset.
    NothingToReset,
    /// Clear the enrolment (recording this reset), then deliver the link.
    Clear,
    /// The enrolment is cleared by this reset: deliver the link (attempt `attempts + 1`).
    Deliver { attempts: u32 },
    /// A delivery failed; try again at this time.
    Wait(Timestamp),
    /// Its status was lost, but the Secret shows its link was already used: finish quietly.
    AlreadyUsed,
    /// The User does not exist (yet): wait for it until this time, then fail.
    AwaitUser(Timestamp),
}

/// The user, as a reset sees it.
#[derive(Clone, Debug)]
pub(super) struct UserView<'a> {
    /// Deactivated, or locked out.
    pub inactive: bool,
    /// The credentials Secret's facts.
    pub credentials: &'a CredentialFacts,
}

/// How long a reset waits for its User to appear before it fails: a User and its reset
/// applied together (from Git) reach the caches in either order.
pub const USER_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// Decides the next step from the reset's own record (and when it was created), its user
/// and now.
pub(super) fn decide(
    uid: &str,
    status: &MfaResetStatus,
    ttl_after_finished: Option<i64>,
    created: Option<Timestamp>,
    user: Option<UserView<'_>>,
    now: Timestamp,
) -> Step {
    let mine = |value: &Option<String>| value.as_deref() == Some(uid);
    if let Some(phase @ (MfaResetPhase::Completed | MfaResetPhase::Failed)) = status.phase {
        let finished = status.completed_at.as_ref().map_or(now, |t| t.0);
        let delete_at = ttl_after_finished.map(|ttl| finished + SignedDuration::from_secs(ttl));
        if delete_at.is_some_and(|at| now >= at) {
            return Step::Delete;
        }
        let issued = phase == MfaResetPhase::Completed && status.expires_at.is_some();
        let link = match user.as_ref().map(|u| u.credentials) {
            _ if !issued => LinkFate::NoLink,
            Some(c) if mine(&c.mfa_reenrolled_for) => LinkFate::Used,
            Some(c) if !mine(&c.mfa_reset_uid) => LinkFate::Superseded,
            _ => LinkFate::Open,
        };
        return Step::Finished { delete_at, link };
    }
    let Some(user) = user else {
        return match created.map(|at| at + USER_GRACE) {
            Some(until) if now < until => Step::AwaitUser(until),
            _ => Step::Fail(reasons::USER_NOT_FOUND),
        };
    };
    if user.inactive {
        return Step::Fail(reasons::USER_INACTIVE);
    }
    let credentials = user.credentials;
    if mine(&credentials.mfa_reenrolled_for) {
        return Step::AlreadyUsed;
    }
    if mine(&credentials.mfa_reset_uid) {
        let attempts = status.delivery_attempts.unwrap_or(0);
        let retry_at = status.last_attempt_at.as_ref().map(|t| t.0 + delivery_backoff(attempts));
        return match retry_at {
            Some(at) if attempts > 0 && now < at => Step::Wait(at),
            _ => Step::Deliver { attempts },
        };
    }
    if credentials.totp_enrolled || credentials.mfa_reset_pending() {
        Step::Clear
    } else {
        Step::NothingToReset
    }
}

/// Ready, Reconciling and Stalled for a reset.
fn summary(ready: Desired, reconciling: bool, stalled: Option<&'static str>) -> Vec<Desired> {
    let mut all = vec![ready];
    all.extend(conditions::kstatus(reconciling, stalled));
    all
}

fn reenrolled() -> Vec<Desired> {
    let ready =
        cond(types::READY, status::TRUE, reasons::REENROLLED, "the person enrolled a new authenticator");
    summary(ready, false, None)
}

#[instrument(skip_all, fields(reset = %cache::key(reset.as_ref())))]
pub(super) async fn reconcile(reset: Arc<MfaReset>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches.ready().await {
        return Ok(Action::await_change());
    }
    let namespace = reset.namespace().unwrap_or_default();
    let uid = reset
        .uid()
        .ok_or_else(|| Error::MissingUid { kind: "MfaReset".into(), object: cache::key(reset.as_ref()) })?;
    let user = ctx.caches.users.get(&ObjectRef::<User>::new(&reset.spec.user_ref.name).within(&namespace));
    let secret = user.as_ref().and_then(|u| ctx.caches.credentials_of(u));
    let taken = user.as_ref().is_some_and(|u| {
        ctx.caches
            .secrets
            .get(&ObjectRef::new(&credentials_secret_name(&u.name_any())).within(&namespace))
            .is_some()
    });
    if secret.is_none() && taken {
        // A look-alike holds the credentials Secret's name: the User reports it; nothing to reset.
        return finish(&ctx, &reset, Step::Fail(reasons::SECRET_NOT_OWNED)).await;
    }
    if user.is_some() && secret.is_none() {
        // The user's reconciler creates the Secret on its first pass; its event brings us back.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let credentials =
        secret.as_ref().map(|s| CredentialFacts::from_data(s.data.as_ref().unwrap_or(&BTreeMap::new())));
    let view = user.as_deref().zip(credentials.as_ref()).map(|(u, credentials)| UserView {
        inactive: u.spec.state == UserState::Inactive
            || ctx.settings.lockout.of(credentials, Timestamp::now()).is_locked(),
        credentials,
    });
    let created = reset.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let step = decide(&uid, &current(&reset), reset.spec.ttl_seconds_after_finished, created, view, now().0);
    match (step, secret) {
        (Step::Clear, Some(secret)) => {
            clear(&ctx, &secret, &uid).await?;
            // The cleared Secret's watch event brings the reset back to deliver the link.
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        (step, _) => finish(&ctx, &reset, step).await,
    }
}

fn current(reset: &MfaReset) -> MfaResetStatus {
    reset.status.clone().unwrap_or_default()
}

/// Carries out every step but clearing, and records the outcome.
async fn finish(ctx: &Context, reset: &MfaReset, step: Step) -> Result<Action> {
    let previous = current(reset);
    let generation = reset.metadata.generation;
    let now = now();
    let mut status = MfaResetStatus { observed_generation: generation, ..previous.clone() };
    let mut requeue = None;
    let desired = match step {
        Step::Delete => {
            let api: Api<MfaReset> =
                Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
            match api.delete(&reset.name_any(), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(Error::Kube {
                        action: "deleting the finished",
                        kind: "MfaReset".into(),
                        object: cache::key(reset),
                        source: Box::new(source),
                    });
                }
            }
            tracing::info!("deleted after ttlSecondsAfterFinished");
            return Ok(Action::await_change());
        }
        Step::Finished { delete_at, link } => {
            requeue = delete_at;
            match link {
                LinkFate::Used => reenrolled(),
                LinkFate::Superseded => {
                    delete_owned_secret(ctx, reset, &link_secret_name(&reset.name_any())).await?;
                    summary(
                        cond(
                            types::READY,
                            status::TRUE,
                            reasons::SUPERSEDED,
                            "a newer MfaReset of this user replaced this one's link",
                        ),
                        false,
                        None,
                    )
                }
                LinkFate::Open | LinkFate::NoLink => Vec::new(),
            }
        }
        Step::Fail(reason) => {
            status.phase = Some(MfaResetPhase::Failed);
            status.completed_at = Some(now.clone());
            let message = if reason == reasons::USER_NOT_FOUND {
                format!("the User {} does not exist", reset.spec.user_ref.name)
            } else if reason == reasons::SECRET_NOT_OWNED {
                format!(
                    "the User {}'s credentials Secret is not roster's; see the User's status",
                    reset.spec.user_ref.name
                )
            } else {
                format!(
                    "the User {} is deactivated or locked out; reactivate it first",
                    reset.spec.user_ref.name
                )
            };
            summary(cond(types::READY, status::FALSE, reason, message), false, Some(reason))
        }
        Step::NothingToReset => {
            status.phase = Some(MfaResetPhase::Completed);
            status.completed_at = Some(now.clone());
            summary(
                cond(
                    types::READY,
                    status::TRUE,
                    reasons::NOTHING_TO_RESET,
                    "the user had no second factor enrolled",
                ),
                false,
                None,
            )
        }
        Step::Wait(at) => {
            requeue = Some(at);
            Vec::new()
        }
        Step::AwaitUser(until) => {
            requeue = Some(until);
            status.phase = Some(MfaResetPhase::Pending);
            let message = format!("waiting for the User {} to appear", reset.spec.user_ref.name);
            summary(cond(types::READY, status::FALSE, reasons::USER_NOT_FOUND, message), true, None)
        }
        Step::AlreadyUsed => {
            status.phase = Some(MfaResetPhase::Completed);
            status.completed_at = Some(now.clone());
            reenrolled()
        }
        Step::Deliver { attempts } => {
            let Some(outcome) = deliver(ctx, reset, attempts, &now).await? else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            status = outcome.status;
            requeue = outcome.requeue;
            outcome.conditions
        }
        Step::Clear => Vec::new(),
    };
    if !desired.is_empty() {
        status.conditions = conditions::merge(&status.conditions, &desired, generation, &now);
    } else {
        status.conditions = conditions::restamp(&previous.conditions, generation);
        if status.conditions.is_empty() {
            status.conditions = super::acknowledged(&[], generation);
        }
    }
    if status != previous {
        apply_status(ctx, reset, &status).await?;
        announce(ctx, reset, &previous, &status).await;
    }
    Ok(requeue_at(requeue, now.0))
}

/// Events on the reset and its user when it completes or fails, naming the reason given.
async fn announce(ctx: &Context, reset: &MfaReset, previous: &MfaResetStatus, status: &MfaResetStatus) {
    if previous.phase == status.phase {
        return;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == types::READY);
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    let why = &reset.spec.reason;
    let (type_, note) = match status.phase {
        Some(MfaResetPhase::Completed) if reason == reasons::RESET => {
            (EventType::Normal, format!("second factor reset by {} (reason: {why})", reset.name_any()))
        }
        Some(MfaResetPhase::Completed) => {
            (EventType::Normal, format!("nothing to reset: no second factor enrolled (reason: {why})"))
        }
        Some(MfaResetPhase::Failed) => {
            (EventType::Warning, format!("reset not done: {reason} (reason: {why})"))
        }
        _ => return,
    };
    publish(ctx, reset, type_, "MfaReset", "Reset", note.clone()).await;
    if let Some(user) = ctx.caches.users.get(
        &ObjectRef::<User>::new(&reset.spec.user_ref.name).within(&reset.namespace().unwrap_or_default()),
    ) {
        publish(ctx, user.as_ref(), type_, "MfaReset", "Reset", note).await;
    }
}

/// Clears the TOTP enrolment in the credentials Secret and records this reset's uid there,
/// once: a Secret that already names this reset is left alone.
async fn clear(ctx: &Context, secret: &Secret, uid: &str) -> Result<()> {
    let now = Timestamp::now().to_string();
    facts::update(&ctx.client, secret, |current| {
        if text(current, MFA_RESET_UID) == Some(uid) {
            return ((), Changes::new());
        }
        let changes = Changes::from([
            (TOTP_SECRET, None),
            (TOTP_ENROLLED_AT, None),
            (TOTP_LAST_STEP, None),
            (TOTP_PENDING, None),
            (REENROL_TOKEN, None),
            (MFA_RESET_UID, Some(uid.to_owned())),
            (MFA_RESET_AT, Some(now.clone())),
        ]);
        ((), changes)
    })
    .await
    .map(drop)
    .map_err(|e| Error::Facts(Box::new(e)))
}

struct Outcome {
    status: MfaResetStatus,
    conditions: Vec<Desired>,
    requeue: Option<Timestamp>,
}

/// One delivery attempt of a fresh re-enrolment link. `None` when another writer changed
/// the reset first: nothing was sent.
async fn deliver(ctx: &Context, reset: &MfaReset, attempts: u32, now: &Time) -> Result<Option<Outcome>> {
    let name = reset.name_any();
    let expires = now.0 + LINK_TTL;
    let mut status = current(reset);
    status.phase = Some(MfaResetPhase::Pending);
    status.delivery_attempts = Some(attempts + 1);
    status.last_attempt_at = Some(now.clone());
    status.observed_generation = reset.metadata.generation;
    let attempt = summary(
        cond(types::READY, status::FALSE, reasons::DELIVERING, format!("delivery attempt {}", attempts + 1)),
        true,
        None,
    );
    status.conditions = conditions::merge(&status.conditions, &attempt, reset.metadata.generation, now);
    if !apply_status_unless_changed(ctx, reset, &status).await? {
        return Ok(None);
    }
    let token = Token::generate()?;
    let link = format!("{}/mfa-reset/{}", ctx.settings.portal_url.trim_end_matches('/'), token.expose());
    let written = async {
        apply_owned_secret(
            ctx,
            reset,
            &token_secret_name(&name),
            (RESET_TOKEN_TYPE, RESET_LABEL),
            BTreeMap::from([
                (TOKEN_HASH.to_owned(), token.hash()),
                (TOKEN_EXPIRES_AT.to_owned(), expires.to_string()),
            ]),
        )
        .await?;
        if reset.spec.delivery == Delivery::Link {
            let data = BTreeMap::from([(LINK_URL.to_owned(), link.clone())]);
            apply_owned_secret(ctx, reset, &link_secret_name(&name), (RESET_LINK_TYPE, RESET_LABEL), data)
                .await?;
        }
        Ok(())
    };
    match written.await {
        Ok(()) => {}
        Err(Error::SecretNotOwned { secret }) => {
            status.phase = Some(MfaResetPhase::Failed);
            status.completed_at = Some(now.clone());
            let message =
                format!("the Secret {secret} belongs to something else; name the MfaReset differently");
            let stalled = reasons::SECRET_NOT_OWNED;
            let conditions =
                summary(cond(types::READY, status::FALSE, stalled, message), false, Some(stalled));
            return Ok(Some(Outcome { status, conditions, requeue: None }));
        }
        Err(other) => return Err(other),
    }
    let emailed_link = match reset.spec.delivery {
        Delivery::Email => Some(link),
        Delivery::Link => {
            status.link_secret_ref = Some(LocalObjectReference { name: link_secret_name(&name) });
            None
        }
    };
    drop(token);
    let sent = notify(ctx, reset, emailed_link, expires, attempts + 1).await;
    let next_try = now.0 + delivery_backoff(attempts + 1);
    let failed = |status: &mut MfaResetStatus, reason: &'static str, message: String, retry: bool| {
        if !retry {
            status.phase = Some(MfaResetPhase::Failed);
            status.completed_at = Some(now.clone());
        }
        let stalled = (!retry || reason != reasons::SMTP_UNAVAILABLE).then_some(reason);
        summary(cond(types::READY, status::FALSE, reason, message), retry && stalled.is_none(), stalled)
    };
    let outcome = match sent {
        Ok(()) => {
            ctx.metrics.email("sent");
            status.phase = Some(MfaResetPhase::Completed);
            status.completed_at = Some(now.clone());
            status.expires_at = Some(status_time(expires));
            let message = match reset.spec.delivery {
                Delivery::Email => "the second factor was cleared; the re-enrolment link was emailed",
                Delivery::Link => {
                    "the second factor was cleared; the link is in the Secret named by status.linkSecretRef"
                }
            };
            let conditions = summary(cond(types::READY, status::TRUE, reasons::RESET, message), false, None);
            let requeue =
                reset.spec.ttl_seconds_after_finished.map(|ttl| now.0 + SignedDuration::from_secs(ttl));
            Outcome { status, conditions, requeue }
        }
        Err(Undelivered::Send(SendError::Unavailable(reply))) => {
            ctx.metrics.email("unavailable");
            let conditions =
                failed(&mut status, reasons::SMTP_UNAVAILABLE, format!("{reply}; retrying"), true);
            Outcome { status, conditions, requeue: Some(next_try) }
        }
        Err(Undelivered::Send(refusal)) => {
            ctx.metrics.email("rejected");
            let conditions = failed(&mut status, reasons::SMTP_REJECTED, refusal.to_string(), false);
            Outcome { status, conditions, requeue: None }
        }
        Err(Undelivered::Setup(problem)) => {
            let message = format!("{problem}; retrying");
            let conditions = failed(&mut status, problem.reason(), message, true);
            Outcome { status, conditions, requeue: Some(next_try) }
        }
    };
    if outcome.status.phase != Some(MfaResetPhase::Completed) {
        tracing::warn!(attempt = attempts + 1, "the second-factor reset email was not sent");
    }
    Ok(Some(outcome))
}

/// Emails the user that their second factor was reset, with the link when it is emailed.
async fn notify(
    ctx: &Context,
    reset: &MfaReset,
    link: Option<String>,
    expires: Timestamp,
    attempt: u32,
) -> std::result::Result<(), Undelivered> {
    let namespace = reset.namespace().unwrap_or_default();
    let Some(user) =
        ctx.caches.users.get(&ObjectRef::<User>::new(&reset.spec.user_ref.name).within(&namespace))
    else {
        return Err(Undelivered::Send(SendError::Message("the user is gone".into())));
    };
    let mailer = ctx.mail.mailer().await.map_err(Undelivered::Setup)?;
    let templates = ctx.mail.templates().await.map_err(Undelivered::Setup)?;
    let notice = MfaResetNotice {
        org: ctx.settings.org_name.clone(),
        name: addressed_as(&user),
        link,
        expires: expires.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    };
    let mail = templates
        .mfa_reset(user.spec.locale.as_deref(), &notice)
        .map_err(|e| Undelivered::Setup(super::SetupError::Templates(e.to_string())))?;
    let message_id = format!("{}.reset.{attempt}", reset.uid().unwrap_or_default());
    mailer.send(&user.spec.email, &mail, &message_id).await.map_err(Undelivered::Send)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn enrolled() -> CredentialFacts {
        CredentialFacts { password_set: true, totp_enrolled: true, ..Default::default() }
    }

    fn view(credentials: &CredentialFacts) -> Option<UserView<'_>> {
        Some(UserView { inactive: false, credentials })
    }

    fn finished(phase: MfaResetPhase, completed: i64, issued: bool) -> MfaResetStatus {
        MfaResetStatus {
            phase: Some(phase),
            completed_at: Some(Time(at(completed))),
            expires_at: issued.then(|| Time(at(completed + 86400))),
            ..Default::default()
        }
    }

    #[test]
    fn an_enrolled_user_is_cleared_once_then_the_link_delivered() {
        let pending = MfaResetStatus::default();
        assert_eq!(decide("r1", &pending, None, None, view(&enrolled()), at(100)), Step::Clear);
        let cleared = CredentialFacts { mfa_reset_uid: Some("r1".into()), ..CredentialFacts::default() };
        assert_eq!(
            decide("r1", &pending, None, None, view(&cleared), at(100)),
            Step::Deliver { attempts: 0 }
        );
        let re_enrolled_since = CredentialFacts {
            mfa_reset_uid: Some("r1".into()),
            totp_enrolled: true,
            ..CredentialFacts::default()
        };
        assert_eq!(
            decide("r1", &pending, None, None, view(&re_enrolled_since), at(100)),
            Step::Deliver { attempts: 0 },
            "a Secret naming this reset is never cleared again"
        );
    }

    #[test]
    fn edge_cases_have_their_own_outcome() {
        let pending = MfaResetStatus::default();
        assert_eq!(decide("r1", &pending, None, None, None, at(100)), Step::Fail(reasons::USER_NOT_FOUND));
        assert_eq!(
            decide("r1", &pending, None, Some(at(95)), None, at(100)),
            Step::AwaitUser(at(105)),
            "a User applied with its reset may reach the cache second"
        );
        assert_eq!(
            decide("r1", &pending, None, Some(at(95)), None, at(105)),
            Step::Fail(reasons::USER_NOT_FOUND)
        );
        let inactive = enrolled();
        let user = Some(UserView { inactive: true, credentials: &inactive });
        assert_eq!(decide("r1", &pending, None, None, user, at(100)), Step::Fail(reasons::USER_INACTIVE));
        let never = CredentialFacts { password_set: true, ..Default::default() };
        assert_eq!(decide("r1", &pending, None, None, view(&never), at(100)), Step::NothingToReset);
        let open_elsewhere = CredentialFacts { mfa_reset_uid: Some("r0".into()), ..never.clone() };
        assert_eq!(
            decide("r1", &pending, None, None, view(&open_elsewhere), at(100)),
            Step::Clear,
            "supersedes r0"
        );
    }

    #[test]
    fn failed_deliveries_wait_their_backoff() {
        let cleared = CredentialFacts { mfa_reset_uid: Some("r1".into()), ..Default::default() };
        let tried = MfaResetStatus {
            phase: Some(MfaResetPhase::Pending),
            delivery_attempts: Some(2),
            last_attempt_at: Some(Time(at(100))),
            ..Default::default()
        };
        assert_eq!(decide("r1", &tried, None, None, view(&cleared), at(101)), Step::Wait(at(102)));
        assert_eq!(decide("r1", &tried, None, None, view(&cleared), at(102)), Step::Deliver { attempts: 2 });
    }

    #[test]
    fn a_finished_reset_is_never_redone_and_deletes_itself_after_its_ttl() {
        let done = finished(MfaResetPhase::Completed, 100, true);
        let mine = CredentialFacts { mfa_reset_uid: Some("r1".into()), ..enrolled() };
        assert_eq!(
            decide("r1", &done, Some(60), None, view(&mine), at(120)),
            Step::Finished { delete_at: Some(at(160)), link: LinkFate::Open }
        );
        assert_eq!(decide("r1", &done, Some(60), None, view(&mine), at(160)), Step::Delete);
        assert_eq!(
            decide("r1", &done, None, None, view(&mine), at(999_999)),
            Step::Finished { delete_at: None, link: LinkFate::Open }
        );
        let failed = finished(MfaResetPhase::Failed, 100, false);
        assert_eq!(decide("r1", &failed, Some(0), None, view(&mine), at(100)), Step::Delete);
    }

    #[test]
    fn a_finished_reset_learns_the_fate_of_its_link() {
        let done = finished(MfaResetPhase::Completed, 100, true);
        let used = CredentialFacts {
            mfa_reset_uid: Some("r1".into()),
            mfa_reenrolled_for: Some("r1".into()),
            ..enrolled()
        };
        let newer = CredentialFacts { mfa_reset_uid: Some("r2".into()), ..Default::default() };
        let fate = |c: &CredentialFacts| match decide("r1", &done, None, None, view(c), at(120)) {
            Step::Finished { link, .. } => link,
            other => panic!("{other:?}"),
        };
        assert_eq!(fate(&used), LinkFate::Used);
        assert_eq!(fate(&newer), LinkFate::Superseded);
        let nothing = finished(MfaResetPhase::Completed, 100, false);
        assert_eq!(
            decide("r1", &nothing, None, None, view(&newer), at(120)),
            Step::Finished { delete_at: None, link: LinkFate::NoLink }
        );
    }
}
