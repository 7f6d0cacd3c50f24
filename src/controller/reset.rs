//! One-shot resets — `MfaReset` and `PasswordReset` — through one reconciler: a reset claims
//! the user's credentials exactly once (its uid recorded in the credentials Secret, so
//! re-applying the same object never claims again; an MfaReset's claim also clears the
//! enrolled second factor), issues a single-use link (only its SHA-256 stored in
//! `<reset>-token`), delivers it — by email, or into the admin-only `<reset>-link` with an
//! email telling the person — and marks the reset Completed. A newer reset of the same kind
//! and user supersedes an open one; a finished reset deletes itself after
//! `ttlSecondsAfterFinished`, like a Job. What differs between the kinds is [`ResetKind`].
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
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::invite::{addressed_as, cond, delivery_backoff};
use super::names::{TOKEN_EXPIRES_AT, TOKEN_HASH, credentials_secret_name, link_secret_name};
use super::{
    Context, Undelivered, apply_link_secrets, apply_status, apply_status_unless_changed, cache,
    delete_owned_secret, now, publish, requeue_at,
};
use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::status_time;
use crate::api::{Delivery, LocalObjectReference, ResetPhase, ResetStatus, User};
use crate::credentials::{CredentialFacts, Token};
use crate::facts::{self, Changes, text};
use crate::mail::{ResetNotice, SendError};
use crate::{Error, Result};

/// What a reset's spec says, whatever its kind.
pub(super) struct ResetSpec<'a> {
    /// The User it is for.
    pub user: &'a str,
    /// Why it was asked for (audit).
    pub reason: &'a str,
    /// How the link reaches the person.
    pub delivery: Delivery,
    /// Seconds after finishing before it deletes itself.
    pub ttl_after_finished: Option<i64>,
    /// How long the link works.
    pub link_ttl: SignedDuration,
    /// The person asked for it themselves (a PasswordReset with `initiator: Self`).
    pub requested_by_person: bool,
}

/// What differs between the kinds of reset.
pub(super) trait ResetKind:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// The kind's name, in Events and messages.
    const KIND: &'static str;
    /// Type of its token Secret.
    const TOKEN_TYPE: &'static str;
    /// Type of its admin-only link Secret.
    const LINK_TYPE: &'static str;
    /// Label naming it on its Secrets.
    const LABEL: &'static str;
    /// The portal path its links start with.
    const PATH: &'static str;
    /// Credentials-Secret key naming the reset of this kind whose link is open.
    const OPEN_KEY: &'static str;
    /// Credentials-Secret key naming the reset of this kind whose link was used.
    const USED_KEY: &'static str;
    /// The email template of the notice (`<template>.<language>.subject.txt`, …).
    const TEMPLATE: &'static str;
    /// Ready's reason once the link is issued.
    const ISSUED: &'static str;
    /// Ready's reason once the person used the link, and its message.
    const USED: (&'static str, &'static str);

    /// Its spec.
    fn spec(&self) -> ResetSpec<'_>;
    /// Its status as recorded.
    fn status(&self) -> ResetStatus;
    /// Whether the user has anything this kind resets.
    fn applies(user: &User, credentials: &CredentialFacts) -> bool;
    /// Why the user's standing stops a reset of this kind, as a reason (deactivated; locked
    /// out, for an MfaReset; no second factor to prove, for a PasswordReset).
    fn stops(&self, user: &User, credentials: &CredentialFacts, ctx: &Context) -> Option<&'static str>;
    /// What claiming the credentials writes besides [`Self::OPEN_KEY`] (e.g. clearing TOTP).
    fn claim(now: &str) -> Changes;
    /// Ready's message once the link is issued.
    fn issued_message(delivery: Delivery) -> &'static str;
}

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
#[derive(Clone, Debug, Default)]
pub(super) struct UserView<'a> {
    /// Why the reset may not proceed (the user is deactivated, refused by the directory, …).
    pub stop: Option<&'static str>,
    /// The reset of this kind whose link is open (it claimed the credentials last).
    pub open: Option<&'a str>,
    /// The reset of this kind whose link was used.
    pub used: Option<&'a str>,
    /// Whether the user has anything this kind resets.
    pub applies: bool,
}

/// How long a reset waits for its User to appear before it fails: a User and its reset
/// applied together (from Git) reach the caches in either order.
pub const USER_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// Decides the next step from the reset's own record (and when it was created), its user
/// and now.
pub(super) fn decide(
    uid: &str,
    status: &ResetStatus,
    ttl_after_finished: Option<i64>,
    created: Option<Timestamp>,
    user: Option<UserView<'_>>,
    now: Timestamp,
) -> Step {
    let mine = |value: Option<&str>| value == Some(uid);
    if let Some(phase @ (ResetPhase::Completed | ResetPhase::Failed)) = status.phase {
        let finished = status.completed_at.as_ref().map_or(now, |t| t.0);
        let delete_at = ttl_after_finished.map(|ttl| finished + SignedDuration::from_secs(ttl));
        if delete_at.is_some_and(|at| now >= at) {
            return Step::Delete;
        }
        let issued = phase == ResetPhase::Completed && status.expires_at.is_some();
        let link = match &user {
            _ if !issued => LinkFate::NoLink,
            Some(u) if mine(u.used) => LinkFate::Used,
            Some(u) if !mine(u.open) => LinkFate::Superseded,
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
    if let Some(reason) = user.stop {
        return Step::Fail(reason);
    }
    if mine(user.used) {
        return Step::AlreadyUsed;
    }
    if mine(user.open) {
        let attempts = status.delivery_attempts.unwrap_or(0);
        let retry_at = status.last_attempt_at.as_ref().map(|t| t.0 + delivery_backoff(attempts));
        return match retry_at {
            Some(at) if attempts > 0 && now < at => Step::Wait(at),
            _ => Step::Deliver { attempts },
        };
    }
    if user.applies { Step::Clear } else { Step::NothingToReset }
}

/// Ready, Reconciling and Stalled for a reset.
fn summary(ready: Desired, reconciling: bool, stalled: Option<&'static str>) -> Vec<Desired> {
    let mut all = vec![ready];
    all.extend(conditions::kstatus(reconciling, stalled));
    all
}

fn used<K: ResetKind>() -> Vec<Desired> {
    let (reason, message) = K::USED;
    summary(cond(types::READY, status::TRUE, reason, message), false, None)
}

#[instrument(skip_all, fields(kind = K::KIND, reset = %cache::key(reset.as_ref())))]
pub(super) async fn reconcile<K: ResetKind>(reset: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches.ready().await {
        return Ok(Action::await_change());
    }
    let namespace = reset.namespace().unwrap_or_default();
    let uid = reset
        .uid()
        .ok_or_else(|| Error::MissingUid { kind: K::KIND.into(), object: cache::key(reset.as_ref()) })?;
    let spec = reset.spec();
    let user = ctx.caches.users.get(&ObjectRef::<User>::new(spec.user).within(&namespace));
    let secret = user.as_ref().and_then(|u| ctx.caches.credentials_of(u));
    let taken = user.as_ref().is_some_and(|u| {
        ctx.caches
            .secrets
            .get(&ObjectRef::new(&credentials_secret_name(&u.name_any())).within(&namespace))
            .is_some()
    });
    if secret.is_none() && taken {
        // A look-alike holds the credentials Secret's name: the User reports it; nothing to reset.
        return finish(&ctx, reset.as_ref(), Step::Fail(reasons::SECRET_NOT_OWNED)).await;
    }
    if user.is_some() && secret.is_none() {
        // The user's reconciler creates the Secret on its first pass; its event (watched
        // through the credentials label) brings the reset back.
        return Ok(Action::await_change());
    }
    let credentials = secret.as_ref().map(|s| CredentialFacts::of(s));
    let view =
        user.as_deref().zip(credentials.as_ref()).zip(secret.as_deref()).map(|((u, facts), secret)| {
            UserView {
                stop: reset.stops(u, facts, &ctx).or_else(|| {
                    ctx.caches
                        .directory_conflict(u, &ctx.settings.allowed_email_domains)
                        .map(|_| reasons::USER_INACTIVE)
                }),
                open: text(secret, K::OPEN_KEY),
                used: text(secret, K::USED_KEY),
                applies: K::applies(u, facts),
            }
        });
    let created = reset.meta().creation_timestamp.as_ref().map(|t| t.0);
    let step = decide(&uid, &reset.status(), spec.ttl_after_finished, created, view, now().0);
    match (step, secret) {
        (Step::Clear, Some(secret)) => {
            claim::<K>(&ctx, &secret, &uid).await?;
            // The cleared Secret's watch event brings the reset back to deliver the link.
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        (step, _) => finish(&ctx, reset.as_ref(), step).await,
    }
}

/// Carries out every step but claiming, and records the outcome.
async fn finish<K: ResetKind>(ctx: &Context, reset: &K, step: Step) -> Result<Action> {
    let previous = reset.status();
    let generation = reset.meta().generation;
    let now = now();
    let mut status = ResetStatus { observed_generation: generation, ..previous.clone() };
    let mut requeue = None;
    let desired = match step {
        Step::Delete => {
            let api: Api<K> = Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
            match api.delete(&reset.name_any(), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(Error::Kube {
                        action: "deleting the finished",
                        kind: K::KIND.into(),
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
                LinkFate::Used => used::<K>(),
                LinkFate::Superseded => {
                    // Only one roster made (labelled, so cached) is there to delete: no GET on
                    // every later event.
                    let link = link_secret_name(&reset.name_any());
                    if ctx.caches.owned_secret(reset, &link).is_some() {
                        delete_owned_secret(ctx, reset, &link).await?;
                    }
                    summary(
                        cond(
                            types::READY,
                            status::TRUE,
                            reasons::SUPERSEDED,
                            format!("a newer {} of this user replaced this one's link", K::KIND),
                        ),
                        false,
                        None,
                    )
                }
                LinkFate::Open | LinkFate::NoLink => Vec::new(),
            }
        }
        Step::Fail(reason) => {
            status.phase = Some(ResetPhase::Failed);
            status.completed_at = Some(now.clone());
            let user = reset.spec().user;
            let message = match reason {
                reasons::USER_NOT_FOUND => format!("the User {user} does not exist"),
                reasons::SECRET_NOT_OWNED => {
                    format!("the User {user}'s credentials Secret is not roster's; see the User's status")
                }
                reasons::SECOND_FACTOR_MISSING => format!(
                    "the User {user} must prove a second factor and has none enrolled; reset the second factor (MfaReset) first"
                ),
                _ => format!("the User {user} may not be reset now (see its status)"),
            };
            summary(cond(types::READY, status::FALSE, reason, message), false, Some(reason))
        }
        Step::NothingToReset => {
            status.phase = Some(ResetPhase::Completed);
            status.completed_at = Some(now.clone());
            summary(
                cond(
                    types::READY,
                    status::TRUE,
                    reasons::NOTHING_TO_RESET,
                    format!("the user had nothing a {} resets", K::KIND),
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
            status.phase = Some(ResetPhase::Pending);
            let message = format!("waiting for the User {} to appear", reset.spec().user);
            summary(cond(types::READY, status::FALSE, reasons::USER_NOT_FOUND, message), true, None)
        }
        Step::AlreadyUsed => {
            status.phase = Some(ResetPhase::Completed);
            status.completed_at = Some(now.clone());
            used::<K>()
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
async fn announce<K: ResetKind>(ctx: &Context, reset: &K, previous: &ResetStatus, status: &ResetStatus) {
    if previous.phase == status.phase {
        return;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == types::READY);
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    let spec = reset.spec();
    let why = spec.reason;
    let (type_, note) = match status.phase {
        Some(ResetPhase::Completed) if reason == K::ISSUED => {
            (EventType::Normal, format!("{} {}: link issued (reason: {why})", K::KIND, reset.name_any()))
        }
        Some(ResetPhase::Completed) => (EventType::Normal, format!("nothing to reset (reason: {why})")),
        Some(ResetPhase::Failed) => (EventType::Warning, format!("reset not done: {reason} (reason: {why})")),
        _ => return,
    };
    publish(ctx, reset, type_, K::KIND, "Reset", note.clone()).await;
    if let Some(user) = ctx
        .caches
        .users
        .get(&ObjectRef::<User>::new(spec.user).within(&reset.namespace().unwrap_or_default()))
    {
        publish(ctx, user.as_ref(), type_, K::KIND, "Reset", note).await;
    }
}

/// Claims the credentials for this reset — records its uid under [`ResetKind::OPEN_KEY`]
/// with the kind's own changes — once: a Secret that already names this reset is left
/// alone.
async fn claim<K: ResetKind>(ctx: &Context, secret: &Secret, uid: &str) -> Result<()> {
    let now = Timestamp::now().to_string();
    facts::update(&ctx.client, secret, |current| {
        if text(current, K::OPEN_KEY) == Some(uid) {
            return ((), Changes::new());
        }
        let mut changes = K::claim(&now);
        changes.insert(K::OPEN_KEY, Some(uid.to_owned()));
        ((), changes)
    })
    .await
    .map(drop)
    .map_err(|e| Error::Facts(Box::new(e)))
}

struct Outcome {
    status: ResetStatus,
    conditions: Vec<Desired>,
    requeue: Option<Timestamp>,
}

/// One delivery attempt of a fresh link. `None` when another writer changed
/// the reset first: nothing was sent.
async fn deliver<K: ResetKind>(
    ctx: &Context,
    reset: &K,
    attempts: u32,
    now: &Time,
) -> Result<Option<Outcome>> {
    let name = reset.name_any();
    let spec = reset.spec();
    let expires = now.0 + spec.link_ttl;
    let mut status = reset.status();
    status.phase = Some(ResetPhase::Pending);
    status.delivery_attempts = Some(attempts + 1);
    status.last_attempt_at = Some(now.clone());
    status.observed_generation = reset.meta().generation;
    let attempt = summary(
        cond(types::READY, status::FALSE, reasons::DELIVERING, format!("delivery attempt {}", attempts + 1)),
        true,
        None,
    );
    status.conditions = conditions::merge(&status.conditions, &attempt, reset.meta().generation, now);
    if !apply_status_unless_changed(ctx, reset, &status).await? {
        return Ok(None);
    }
    let token = Token::generate()?;
    let link = format!("{}/{}/{}", ctx.settings.portal_url.trim_end_matches('/'), K::PATH, token.expose());
    let token_data = BTreeMap::from([
        (TOKEN_HASH.to_owned(), token.hash()),
        (TOKEN_EXPIRES_AT.to_owned(), expires.to_string()),
    ]);
    let handed_over = (spec.delivery == Delivery::Link).then_some(link.as_str());
    let written =
        apply_link_secrets(ctx, reset, (K::TOKEN_TYPE, K::LINK_TYPE, K::LABEL), token_data, handed_over);
    match written.await {
        Ok(()) => {}
        Err(Error::SecretNotOwned { secret }) => {
            status.phase = Some(ResetPhase::Failed);
            status.completed_at = Some(now.clone());
            let message =
                format!("the Secret {secret} belongs to something else; name the {} differently", K::KIND);
            let stalled = reasons::SECRET_NOT_OWNED;
            let conditions =
                summary(cond(types::READY, status::FALSE, stalled, message), false, Some(stalled));
            return Ok(Some(Outcome { status, conditions, requeue: None }));
        }
        Err(other) => return Err(other),
    }
    let emailed_link = match spec.delivery {
        Delivery::Email => Some(link),
        Delivery::Link => {
            status.link_secret_ref = Some(LocalObjectReference { name: link_secret_name(&name) });
            None
        }
    };
    drop(token);
    let sent = notify::<K>(ctx, reset, emailed_link, expires, attempts + 1).await;
    let next_try = now.0 + delivery_backoff(attempts + 1);
    let failed = |status: &mut ResetStatus, reason: &'static str, message: String, retry: bool| {
        if !retry {
            status.phase = Some(ResetPhase::Failed);
            status.completed_at = Some(now.clone());
        }
        let stalled = (!retry || reason != reasons::SMTP_UNAVAILABLE).then_some(reason);
        summary(cond(types::READY, status::FALSE, reason, message), retry && stalled.is_none(), stalled)
    };
    let outcome = match sent {
        Ok(()) => {
            ctx.metrics.email("sent");
            status.phase = Some(ResetPhase::Completed);
            status.completed_at = Some(now.clone());
            status.expires_at = Some(status_time(expires));
            let message = K::issued_message(spec.delivery);
            let conditions = summary(cond(types::READY, status::TRUE, K::ISSUED, message), false, None);
            let requeue = spec.ttl_after_finished.map(|ttl| now.0 + SignedDuration::from_secs(ttl));
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
    if outcome.status.phase != Some(ResetPhase::Completed) {
        tracing::warn!(attempt = attempts + 1, "the reset email was not sent");
    }
    Ok(Some(outcome))
}

/// Emails the user of the reset, with the link when it is emailed.
async fn notify<K: ResetKind>(
    ctx: &Context,
    reset: &K,
    link: Option<String>,
    expires: Timestamp,
    attempt: u32,
) -> std::result::Result<(), Undelivered> {
    let namespace = reset.namespace().unwrap_or_default();
    let Some(user) = ctx.caches.users.get(&ObjectRef::<User>::new(reset.spec().user).within(&namespace))
    else {
        return Err(Undelivered::Send(SendError::Message("the user is gone".into())));
    };
    let mailer = ctx.mail.mailer().await.map_err(Undelivered::Setup)?;
    let templates = ctx.mail.templates().await.map_err(Undelivered::Setup)?;
    let notice = ResetNotice {
        org: ctx.settings.org_name.clone(),
        name: addressed_as(&user),
        link,
        expires: crate::mail::for_people(expires),
        requested: reset.spec().requested_by_person,
    };
    let mail = templates
        .notice(K::TEMPLATE, user.spec.locale.as_deref(), &notice)
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

    /// A user with something to reset, whose credentials name `open` and `used`.
    fn view<'a>(open: Option<&'a str>, used: Option<&'a str>) -> Option<UserView<'a>> {
        Some(UserView { stop: None, open, used, applies: true })
    }

    fn finished(phase: ResetPhase, completed: i64, issued: bool) -> ResetStatus {
        ResetStatus {
            phase: Some(phase),
            completed_at: Some(Time(at(completed))),
            expires_at: issued.then(|| Time(at(completed + 86400))),
            ..Default::default()
        }
    }

    #[test]
    fn a_user_is_claimed_once_then_the_link_delivered() {
        let pending = ResetStatus::default();
        assert_eq!(decide("r1", &pending, None, None, view(None, None), at(100)), Step::Clear);
        assert_eq!(
            decide("r1", &pending, None, None, view(Some("r1"), None), at(100)),
            Step::Deliver { attempts: 0 }
        );
        let nothing_left = Some(UserView { applies: false, ..view(Some("r1"), None).unwrap() });
        assert_eq!(
            decide("r1", &pending, None, None, nothing_left, at(100)),
            Step::Deliver { attempts: 0 },
            "a Secret naming this reset is never claimed again"
        );
    }

    #[test]
    fn edge_cases_have_their_own_outcome() {
        let pending = ResetStatus::default();
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
        let inactive = Some(UserView { stop: Some(reasons::USER_INACTIVE), ..view(None, None).unwrap() });
        assert_eq!(decide("r1", &pending, None, None, inactive, at(100)), Step::Fail(reasons::USER_INACTIVE));
        let never = Some(UserView::default());
        assert_eq!(decide("r1", &pending, None, None, never, at(100)), Step::NothingToReset);
        assert_eq!(
            decide("r1", &pending, None, None, view(Some("r0"), None), at(100)),
            Step::Clear,
            "supersedes r0"
        );
        assert_eq!(
            decide("r1", &pending, None, None, view(Some("r0"), Some("r1")), at(100)),
            Step::AlreadyUsed
        );
    }

    #[test]
    fn failed_deliveries_wait_their_backoff() {
        let tried = ResetStatus {
            phase: Some(ResetPhase::Pending),
            delivery_attempts: Some(2),
            last_attempt_at: Some(Time(at(100))),
            ..Default::default()
        };
        assert_eq!(decide("r1", &tried, None, None, view(Some("r1"), None), at(101)), Step::Wait(at(102)));
        assert_eq!(
            decide("r1", &tried, None, None, view(Some("r1"), None), at(102)),
            Step::Deliver { attempts: 2 }
        );
    }

    #[test]
    fn a_finished_reset_is_never_redone_and_deletes_itself_after_its_ttl() {
        let done = finished(ResetPhase::Completed, 100, true);
        let mine = view(Some("r1"), None);
        assert_eq!(
            decide("r1", &done, Some(60), None, mine.clone(), at(120)),
            Step::Finished { delete_at: Some(at(160)), link: LinkFate::Open }
        );
        assert_eq!(decide("r1", &done, Some(60), None, mine.clone(), at(160)), Step::Delete);
        assert_eq!(
            decide("r1", &done, None, None, mine.clone(), at(999_999)),
            Step::Finished { delete_at: None, link: LinkFate::Open }
        );
        let failed = finished(ResetPhase::Failed, 100, false);
        assert_eq!(decide("r1", &failed, Some(0), None, mine, at(100)), Step::Delete);
    }

    #[test]
    fn a_finished_reset_learns_the_fate_of_its_link() {
        let done = finished(ResetPhase::Completed, 100, true);
        let fate = |user: Option<UserView<'_>>| match decide("r1", &done, None, None, user, at(120)) {
            Step::Finished { link, .. } => link,
            other => panic!("{other:?}"),
        };
        assert_eq!(fate(view(Some("r1"), Some("r1"))), LinkFate::Used);
        assert_eq!(fate(view(Some("r2"), None)), LinkFate::Superseded);
        let nothing = finished(ResetPhase::Completed, 100, false);
        assert_eq!(
            decide("r1", &nothing, None, None, view(Some("r2"), None), at(120)),
            Step::Finished { delete_at: None, link: LinkFate::NoLink }
        );
    }
}
