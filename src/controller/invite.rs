//! The UserInvite reconciler: issues a fresh single-use token per issuance (only its
//! SHA-256 is stored, in `<invite>-token`), delivers the link (email, or the admin-only
//! `<invite>-link` Secret), and keeps the phase: Pending → Sent → Expired, Revoked when the
//! user is deactivated, Failed when the SMTP server refuses the message.
//!
//! Delivery is at-least-once: the attempt is claimed by writing its token Secret (created,
//! or updated at the version the decision was made on, so one writer wins), then the email
//! sent, then the result recorded on status — two writes per delivery. A crash between
//! sending and recording the result sends again once the claim is a minute old (with a new
//! token; the first link then no longer works) — the only window for a duplicate.

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

use super::names::{
    INVITE_LABEL, INVITE_LINK_TYPE, INVITE_TOKEN_TYPE, RETIRED_HASHES, TOKEN_ATTEMPT, TOKEN_ATTEMPT_AT,
    TOKEN_EXPIRES_AT, TOKEN_HASH, TOKEN_ISSUANCE, TOKEN_RECIPIENT, link_secret_name, token_secret_name,
};
use super::{
    Context, SetupError, Undelivered, apply_link_secret, apply_status, apply_status_unless_changed, cache,
    delete_owned_secret, now, publish, read_secret, requeue_at, write_owned_secret,
};
use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::status_time;
use crate::api::{
    Delivery, InvitePhase, LocalObjectReference, User, UserInvite, UserInviteStatus, UserState,
};
use crate::credentials::{CredentialFacts, Token};
use crate::directory::Conflict;
use crate::facts::text;
use crate::mail::{Invitation, SendError};
use crate::{Error, Result};

/// How many earlier token hashes an invite remembers.
const RETIRED_KEPT: usize = 8;

/// What the reconciler does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing, until `at` (or a change).
    Wait(Option<Timestamp>),
    /// Issue a fresh token for issuance `issuance` and deliver it.
    Deliver {
        /// The `spec.resend` the token belongs to.
        issuance: u32,
        /// Delivery attempts already made for it.
        attempts: u32,
    },
    /// The link's time ran out.
    Expire,
    /// The link must stop working: the user is deactivated.
    Revoke,
    /// The person completed onboarding with the current link, at this time.
    Accept(Timestamp),
    /// The user does not exist.
    UserMissing,
    /// The person completed onboarding with another link: this open link ends.
    Supersede,
    /// The person completed onboarding: nothing is delivered (credentials of an onboarded
    /// person change only through an operation that proves who asks).
    AlreadyOnboarded,
    /// The directory refuses the user: nothing is delivered until the conflict goes.
    Hold(Conflict),
}

/// What the user's credentials and the directory say, as an invite sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Person {
    /// The person finished onboarding (with any link).
    pub onboarded: bool,
    /// The directory rule the user breaks, if any.
    pub refused: Option<Conflict>,
}

/// How long an attempt without a recorded result is presumed still running.
const ATTEMPT_TIMEOUT: SignedDuration = SignedDuration::from_secs(60);
/// How far ahead of this clock a claim's time may be (another replica's clock): a claim
/// from further in the future is no claim (it would hold delivery back indefinitely).
const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// The delivery attempt the invite's token Secret was last written for: the claim of that
/// attempt, whose result status may not record yet (still sending, or the sender crashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Claim {
    /// The issuance (`spec.resend`) it belongs to.
    pub issuance: u32,
    /// The attempt, 1-based.
    pub attempt: u32,
    /// When it was claimed.
    pub at: Timestamp,
}

impl Claim {
    /// The claim recorded in a token Secret (`None` for one written before claims were).
    pub(super) fn of(token: &Secret) -> Option<Self> {
        Some(Self {
            issuance: text(token, TOKEN_ISSUANCE)?.parse().ok()?,
            attempt: text(token, TOKEN_ATTEMPT)?.parse().ok()?,
            at: text(token, TOKEN_ATTEMPT_AT)?.parse().ok()?,
        })
    }
}

/// Delay before delivery attempt `attempts + 1`: 1 s after the first, doubling, at most 10
/// minutes.
pub(super) fn delivery_backoff(attempts: u32) -> SignedDuration {
    let seconds = 1i64 << attempts.saturating_sub(1).min(10);
    SignedDuration::from_secs(seconds.min(600))
}

/// Decides the next step from the user's state, the person's standing, the invite's spec
/// and status, the last attempt claimed in its token Secret, when the person completed
/// onboarding with the current link (if they did), and now.
pub(super) fn decide(
    user_state: Option<UserState>,
    person: &Person,
    resend: u32,
    status: &UserInviteStatus,
    claim: Option<Claim>,
    accepted_at: Option<Timestamp>,
    now: Timestamp,
) -> Step {
    let new_issuance = status.observed_resend.is_none_or(|observed| resend > observed);
    let issued = status.observed_resend.is_some();
    let revoked =
        matches!(status.phase, Some(InvitePhase::Revoked | InvitePhase::Accepted | InvitePhase::Superseded));
    match user_state {
        // A link already issued for a user that is gone must stop working; an invite made
        // before its user (e.g. applied together) waits for it.
        None if issued && !revoked && status.phase != Some(InvitePhase::Expired) => return Step::Revoke,
        None if revoked => return Step::Wait(None),
        None => return Step::UserMissing,
        Some(UserState::Inactive) => {
            return if revoked { Step::Wait(None) } else { Step::Revoke };
        }
        Some(UserState::Active) => {}
    }
    let undelivered = new_issuance || matches!(status.phase, None | Some(InvitePhase::Pending));
    if undelivered && person.onboarded {
        return Step::AlreadyOnboarded;
    }
    if undelivered && let Some(conflict) = &person.refused {
        return Step::Hold(conflict.clone());
    }
    // An attempt claimed for this issuance whose result status does not show: it is still
    // sending (here or in another replica), or its sender crashed. It gets the time one SMTP
    // exchange may take before the next attempt.
    let recorded = if new_issuance { 0 } else { status.delivery_attempts.unwrap_or(0) };
    let believable = |c: &Claim| now.checked_add(CLOCK_SKEW).is_ok_and(|latest| c.at <= latest);
    let claimed = claim.filter(|c| c.issuance == resend && c.attempt > recorded && believable(c));
    if undelivered && let Some(claim) = claimed {
        let retry_at = claim.at.checked_add(ATTEMPT_TIMEOUT).unwrap_or(Timestamp::MAX);
        return if now < retry_at {
            Step::Wait(Some(retry_at))
        } else {
            Step::Deliver { issuance: resend, attempts: claim.attempt }
        };
    }
    if new_issuance {
        return Step::Deliver { issuance: resend, attempts: 0 };
    }
    let attempts = status.delivery_attempts.unwrap_or(0);
    match status.phase {
        Some(InvitePhase::Sent) if let Some(at) = accepted_at => Step::Accept(at),
        Some(InvitePhase::Sent) if person.onboarded => Step::Supersede,
        Some(InvitePhase::Sent) => match status.expires_at.as_ref().map(|t| t.0) {
            Some(expiry) if now >= expiry => Step::Expire,
            expiry => Step::Wait(expiry),
        },
        None | Some(InvitePhase::Pending) => {
            // An attempt recorded on status by an earlier version of roster, still in
            // flight: the same patience.
            let in_flight =
                status.conditions.iter().any(|c| c.type_ == types::DELIVERED && c.status == status::UNKNOWN);
            let wait = if in_flight { ATTEMPT_TIMEOUT } else { delivery_backoff(attempts) };
            let next = status.last_attempt_at.as_ref().map(|t| t.0 + wait);
            match next {
                Some(at) if attempts > 0 && now < at => Step::Wait(Some(at)),
                _ => Step::Deliver { issuance: resend, attempts },
            }
        }
        Some(
            InvitePhase::Accepted
            | InvitePhase::Expired
            | InvitePhase::Revoked
            | InvitePhase::Failed
            | InvitePhase::Superseded,
        ) => Step::Wait(None),
    }
}

pub(super) fn cond(
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: impl Into<String>,
) -> Desired {
    Desired { type_, status, reason, message: message.into() }
}

/// Ready, Reconciling, Stalled and Delivered for an invite in `phase`.
fn conditions_for(phase: InvitePhase, delivered: Desired, stalled: Option<&'static str>) -> Vec<Desired> {
    let (ready, reconciling) = match phase {
        InvitePhase::Pending if stalled.is_none() => (
            cond(types::READY, status::FALSE, reasons::DELIVERING, "roster is delivering the invitation"),
            true,
        ),
        InvitePhase::Pending | InvitePhase::Failed => (
            cond(
                types::READY,
                status::FALSE,
                stalled.unwrap_or(reasons::SMTP_REJECTED),
                delivered.message.clone(),
            ),
            false,
        ),
        InvitePhase::Sent => (
            cond(types::READY, status::TRUE, reasons::INVITE_SENT, "waiting for the person to use the link"),
            false,
        ),
        InvitePhase::Accepted => {
            (cond(types::READY, status::TRUE, reasons::ACCEPTED, "the person used the link"), false)
        }
        InvitePhase::Expired => (
            cond(
                types::READY,
                status::TRUE,
                reasons::EXPIRED,
                "the link expired; increase spec.resend to send a new one",
            ),
            false,
        ),
        InvitePhase::Revoked => {
            (cond(types::READY, status::TRUE, reasons::REVOKED, "the link was revoked"), false)
        }
        InvitePhase::Superseded => (
            cond(
                types::READY,
                status::TRUE,
                reasons::SUPERSEDED,
                "the person completed onboarding with another invitation; this link no longer works",
            ),
            false,
        ),
    };
    let mut all = vec![ready];
    all.extend(conditions::kstatus(reconciling, stalled));
    all.push(delivered);
    all
}

#[instrument(skip_all, fields(invite = %cache::key(invite.as_ref())))]
pub(super) async fn reconcile(invite: Arc<UserInvite>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches.ready().await {
        return Ok(Action::await_change());
    }
    let namespace = invite.namespace().unwrap_or_default();
    let user = ctx.caches.users.get(&ObjectRef::<User>::new(&invite.spec.user_ref.name).within(&namespace));
    let previous = invite.status.clone().unwrap_or_default();
    let now = now();
    let credentials = user.as_ref().and_then(|u| ctx.caches.credentials_of(u));
    // The token Secret, if the invite controls it: the current token and the last claim.
    let token = ctx.caches.owned_secret(invite.as_ref(), &token_secret_name(&invite.name_any()));
    let accepted_at = accepted_at(token.as_deref(), credentials.as_deref());
    let person = Person {
        onboarded: user
            .as_ref()
            .zip(credentials.as_ref())
            .is_some_and(|(u, c)| CredentialFacts::of(c).onboarded(u.spec.mfa.required)),
        refused: user
            .as_ref()
            .and_then(|u| ctx.caches.directory_conflict(u, &ctx.settings.allowed_email_domains)),
    };
    let step = decide(
        user.as_ref().map(|u| u.spec.state_at(now.0)),
        &person,
        invite.spec.resend,
        &previous,
        token.as_deref().and_then(Claim::of),
        accepted_at,
        now.0,
    );
    let mut status = UserInviteStatus { observed_generation: invite.metadata.generation, ..previous.clone() };
    let mut requeue = None;
    // Only the status of a delivery is decided on the API server's copy; every other step
    // on the cache's, which may lag roster's own last write: written only at that version.
    let delivering = matches!(step, Step::Deliver { .. });
    let delivered_now = |reason, message: &str| cond(types::DELIVERED, status::TRUE, reason, message);
    let desired = match step {
        Step::UserMissing => {
            status.phase = Some(previous.phase.unwrap_or(InvitePhase::Pending));
            let mut all = vec![cond(
                types::READY,
                status::FALSE,
                reasons::USER_NOT_FOUND,
                "the referenced User does not exist",
            )];
            all.extend(conditions::kstatus(false, Some(reasons::USER_NOT_FOUND)));
            all
        }
        Step::Supersede => {
            withdraw_link(&ctx, &invite).await?;
            status.phase = Some(InvitePhase::Superseded);
            conditions_for(
                InvitePhase::Superseded,
                cond(
                    types::DELIVERED,
                    status::TRUE,
                    reasons::SUPERSEDED,
                    "the link was delivered and superseded",
                ),
                None,
            )
        }
        Step::AlreadyOnboarded => {
            status.phase = Some(InvitePhase::Failed);
            status.observed_resend = Some(invite.spec.resend);
            let message = "the person already completed onboarding: an invitation would let whoever holds it set new credentials; use a PasswordReset or an MfaReset instead";
            let reason = reasons::ALREADY_ONBOARDED;
            conditions_for(
                InvitePhase::Failed,
                cond(types::DELIVERED, status::FALSE, reason, message),
                Some(reason),
            )
        }
        Step::Hold(conflict) => {
            status.phase = Some(InvitePhase::Pending);
            let (reason, message) = crate::lifecycle::conflict_text(&conflict);
            let message = format!("nothing is delivered while {message}");
            conditions_for(
                InvitePhase::Pending,
                cond(types::DELIVERED, status::FALSE, reason, message),
                Some(reason),
            )
        }
        Step::Revoke => {
            withdraw_link(&ctx, &invite).await?;
            status.phase = Some(InvitePhase::Revoked);
            conditions_for(
                InvitePhase::Revoked,
                cond(types::DELIVERED, status::FALSE, reasons::REVOKED, "the link was revoked"),
                None,
            )
        }
        Step::Accept(at) => {
            withdraw_link(&ctx, &invite).await?;
            status.phase = Some(InvitePhase::Accepted);
            status.accepted_at = Some(status_time(at));
            conditions_for(
                InvitePhase::Accepted,
                delivered_now(reasons::ACCEPTED, "the link was delivered and used"),
                None,
            )
        }
        Step::Expire => {
            withdraw_link(&ctx, &invite).await?;
            status.phase = Some(InvitePhase::Expired);
            conditions_for(
                InvitePhase::Expired,
                delivered_now(reasons::EXPIRED, "the link was delivered and has expired"),
                None,
            )
        }
        Step::Wait(at) if previous == UserInviteStatus::default() => {
            // No status yet: the first attempt is under way (or the cache has not shown its
            // result yet); nothing to write until that attempt records it.
            return Ok(requeue_at(at, now.0));
        }
        Step::Wait(at) => {
            // Nothing changed: the conditions stay as the last step left them.
            requeue = at;
            status.conditions = conditions::restamp(&previous.conditions, invite.metadata.generation);
            Vec::new()
        }
        Step::Deliver { .. } => {
            let Some(user) = user else { return Ok(Action::await_change()) };
            // The cache may lag roster's own last writes: decide again on the invite as the
            // API server has it, and claim the attempt only at the cached token Secret's
            // version — a cache that is behind makes the claim conflict, and nothing is sent.
            // Each way of finding the cache behind is retried with the object's backoff.
            let behind = || Error::Conflict { object: cache::key(invite.as_ref()) };
            let api: Api<UserInvite> = Api::namespaced(ctx.client.clone(), &namespace);
            let fresh = api.get(&invite.name_any()).await.map_err(|source| Error::Kube {
                action: "reading",
                kind: "UserInvite".into(),
                object: cache::key(invite.as_ref()),
                source: Box::new(source),
            })?;
            if fresh.uid() != invite.uid() {
                return Err(behind());
            }
            let fresh_status = fresh.status.clone().unwrap_or_default();
            // When the cache shows no token Secret and creating one conflicts, the API
            // server's is decided on once more: the cache was behind, or the Secret lost the
            // label the cache selects on (writing it puts the label back).
            let mut seen: Option<Secret> = token.as_deref().cloned();
            let mut may_read = seen.is_none();
            let outcome = loop {
                let Step::Deliver { issuance, attempts } = decide(
                    Some(user.spec.state_at(now.0)),
                    &person,
                    fresh.spec.resend,
                    &fresh_status,
                    seen.as_ref().and_then(Claim::of),
                    accepted_at,
                    now.0,
                ) else {
                    return Err(behind());
                };
                let attempt = Attempt { issuance, attempts, token: seen.as_ref() };
                match deliver(&ctx, &fresh, &user, attempt, &now).await? {
                    Some(outcome) => break outcome,
                    None if may_read => {
                        may_read = false;
                        let name = token_secret_name(&fresh.name_any());
                        seen = read_secret(&ctx, &fresh, &name)
                            .await?
                            .filter(|t| cache::controlled_by(t, &fresh));
                    }
                    None => return Err(behind()),
                }
            };
            if let Some(delivered) = outcome.conditions.iter().find(|c| c.type_ == types::DELIVERED) {
                if delivered.status == status::TRUE {
                    tracing::info!(reason = delivered.reason, "invitation delivered");
                } else {
                    let retry_at = outcome.requeue.map_or_else(|| "never".to_owned(), |at| at.to_string());
                    tracing::warn!(reason = delivered.reason, problem = %delivered.message, %retry_at, "invitation not delivered");
                }
            }
            status = outcome.status;
            requeue = outcome.requeue;
            outcome.conditions
        }
    };
    if !desired.is_empty() {
        status.conditions = conditions::merge(&status.conditions, &desired, invite.metadata.generation, &now);
    }
    if status != previous {
        if delivering {
            // The email went out: its result is recorded whatever changed meanwhile.
            apply_status(&ctx, invite.as_ref(), &status).await?;
        } else if !apply_status_unless_changed(&ctx, invite.as_ref(), &status).await? {
            // The cache was behind: the change on its way triggers the next reconcile.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    if status.phase == Some(InvitePhase::Revoked) && previous.phase != Some(InvitePhase::Revoked) {
        let note = format!("the invitation for {} was revoked", invite.spec.user_ref.name);
        publish(&ctx, invite.as_ref(), EventType::Normal, "Revoked", "Revoke", note).await;
    }
    Ok(requeue_at(requeue, now.0))
}

struct Outcome {
    status: UserInviteStatus,
    conditions: Vec<Desired>,
    requeue: Option<Timestamp>,
}

/// The attempt to make: for which issuance, after how many, over which token Secret (as
/// cached, controlled by the invite).
struct Attempt<'a> {
    issuance: u32,
    attempts: u32,
    token: Option<&'a Secret>,
}

/// One delivery attempt: new token (hash stored) claiming the attempt, link delivered.
/// `None` when another writer claimed it first (e.g. a second replica): nothing was sent.
async fn deliver(
    ctx: &Context,
    invite: &UserInvite,
    user: &User,
    Attempt { issuance, attempts, token: previous }: Attempt<'_>,
    now: &Time,
) -> Result<Option<Outcome>> {
    let name = invite.name_any();
    let ttl = SignedDuration::try_from(std::time::Duration::from(invite.spec.ttl))
        .unwrap_or(SignedDuration::from_hours(720));
    let expires = now.0 + ttl;
    let mut status = invite.status.clone().unwrap_or_default();
    status.phase = Some(InvitePhase::Pending);
    status.observed_resend = Some(issuance);
    status.delivery_attempts = Some(attempts.saturating_add(1));
    status.last_attempt_at = Some(now.clone());
    status.sent_at = None;
    status.expires_at = None;
    status.observed_generation = invite.metadata.generation;
    let token = Token::generate()?;
    let mut token_data = BTreeMap::from([
        (TOKEN_HASH.to_owned(), token.hash()),
        (TOKEN_ISSUANCE.to_owned(), issuance.to_string()),
        (TOKEN_ATTEMPT.to_owned(), (attempts.saturating_add(1)).to_string()),
        (TOKEN_ATTEMPT_AT.to_owned(), now.0.to_string()),
        (TOKEN_EXPIRES_AT.to_owned(), expires.to_string()),
        (RETIRED_HASHES.to_owned(), retire(previous)),
    ]);
    if invite.spec.delivery == Delivery::Email {
        token_data.insert(TOKEN_RECIPIENT.to_owned(), recipient(invite, user).to_lowercase());
    }
    let link = format!("{}/invite/{}", ctx.settings.portal_url.trim_end_matches('/'), token.expose());
    let token_name = token_secret_name(&name);
    let claimed =
        write_owned_secret(ctx, invite, &token_name, (INVITE_TOKEN_TYPE, INVITE_LABEL), token_data, previous)
            .await;
    let claimed = match claimed {
        Ok(false) => return Ok(None),
        Ok(true) if invite.spec.delivery == Delivery::Link => {
            apply_link_secret(ctx, invite, (INVITE_LINK_TYPE, INVITE_LABEL), &link).await
        }
        Ok(true) => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(Error::SecretNotOwned { secret }) = &claimed {
        // An admin must rename the invite or remove the look-alike; tried again with backoff.
        let message = format!("the Secret {secret} exists and is not this invite's: roster leaves it alone");
        let reason = reasons::SECRET_NOT_OWNED;
        return Ok(Some(Outcome {
            status,
            conditions: conditions_for(
                InvitePhase::Pending,
                cond(types::DELIVERED, status::FALSE, reason, message),
                Some(reason),
            ),
            requeue: Some(now.0 + delivery_backoff(attempts.saturating_add(1))),
        }));
    }
    claimed?;
    let result = match invite.spec.delivery {
        Delivery::Link => {
            status.link_secret_ref = Some(LocalObjectReference { name: link_secret_name(&name) });
            Ok(reasons::LINK_CREATED)
        }
        Delivery::Email => {
            send_email(ctx, invite, user, &link, expires, issuance).await.map(|()| reasons::EMAIL_SENT)
        }
    };
    drop(token);
    let next_try = now.0 + delivery_backoff(attempts.saturating_add(1));
    Ok(Some(match result {
        Ok(reason) => {
            ctx.metrics.email(if reason == reasons::EMAIL_SENT { "sent" } else { "link" });
            status.phase = Some(InvitePhase::Sent);
            status.sent_at = Some(now.clone());
            status.expires_at = Some(status_time(expires));
            let message = if reason == reasons::EMAIL_SENT {
                "the invitation email was accepted by the SMTP server"
            } else {
                "the link is in the Secret named by status.linkSecretRef"
            };
            Outcome {
                status,
                conditions: conditions_for(
                    InvitePhase::Sent,
                    cond(types::DELIVERED, status::TRUE, reason, message),
                    None,
                ),
                requeue: Some(expires),
            }
        }
        Err(Undelivered::Send(SendError::Unavailable(reply))) => {
            ctx.metrics.email("unavailable");
            let delivered = cond(
                types::DELIVERED,
                status::FALSE,
                reasons::SMTP_UNAVAILABLE,
                format!("{reply}; retrying"),
            );
            Outcome {
                status,
                conditions: conditions_for(InvitePhase::Pending, delivered, None),
                requeue: Some(next_try),
            }
        }
        Err(Undelivered::Send(refusal @ (SendError::Rejected(_) | SendError::Message(_)))) => {
            let (outcome, message) = match refusal {
                SendError::Rejected(reply) => {
                    ("rejected", format!("the SMTP server refused the message: {reply}"))
                }
                other => ("invalid", other.to_string()),
            };
            ctx.metrics.email(outcome);
            status.phase = Some(InvitePhase::Failed);
            let delivered = cond(types::DELIVERED, status::FALSE, reasons::SMTP_REJECTED, message);
            Outcome {
                status,
                conditions: conditions_for(InvitePhase::Failed, delivered, Some(reasons::SMTP_REJECTED)),
                requeue: None,
            }
        }
        Err(Undelivered::Setup(problem)) => {
            // An admin must fix the settings; retried with backoff so the fix is picked up.
            ctx.metrics.email(if matches!(problem, SetupError::Smtp(_)) {
                "not_configured"
            } else {
                "template_invalid"
            });
            let reason = problem.reason();
            let delivered = cond(types::DELIVERED, status::FALSE, reason, format!("{problem}; retrying"));
            Outcome {
                status,
                conditions: conditions_for(InvitePhase::Pending, delivered, Some(reason)),
                requeue: Some(next_try),
            }
        }
    }))
}

/// How an email addresses the person: display name, given name, username, or the User's name.
pub(super) fn addressed_as(user: &User) -> String {
    let spec = &user.spec;
    spec.display_name
        .clone()
        .or_else(|| spec.given_name.clone())
        .or_else(|| spec.username.clone())
        .unwrap_or_else(|| user.name_any())
}

async fn send_email(
    ctx: &Context,
    invite: &UserInvite,
    user: &User,
    link: &str,
    expires: Timestamp,
    issuance: u32,
) -> std::result::Result<(), Undelivered> {
    let mailer = ctx.mail.mailer().await.map_err(Undelivered::Setup)?;
    let templates = ctx.mail.templates().await.map_err(Undelivered::Setup)?;
    let spec = &user.spec;
    let name = addressed_as(user);
    let mail = templates
        .invitation(
            spec.locale.as_deref(),
            &Invitation {
                org: ctx.settings.org_name.clone(),
                name,
                link: link.to_owned(),
                expires: crate::mail::for_people(expires),
            },
        )
        .map_err(|e| Undelivered::Setup(SetupError::Templates(e.to_string())))?;
    let recipient = recipient(invite, user);
    let message_id = format!("{}.{issuance}", invite.uid().unwrap_or_default());
    mailer.send(recipient, &mail, &message_id).await.map_err(Undelivered::Send)
}

/// Where an invite's email goes: its own `email`, else the user's.
fn recipient<'a>(invite: &'a UserInvite, user: &'a User) -> &'a str {
    invite.spec.email.as_deref().unwrap_or(&user.spec.email)
}

/// The retired hashes after the token in `previous` (the token Secret as it was) is
/// replaced: its list plus its current hash, the oldest dropped beyond [`RETIRED_KEPT`].
fn retire(previous: Option<&Secret>) -> String {
    let data = previous.and_then(|s| s.data.as_ref());
    let text = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .unwrap_or_default()
            .to_owned()
    };
    let retired = text(RETIRED_HASHES);
    let current = text(TOKEN_HASH);
    let mut hashes: Vec<&str> = retired.split_whitespace().chain(current.split_whitespace()).collect();
    let excess = hashes.len().saturating_sub(RETIRED_KEPT);
    hashes.drain(..excess);
    hashes.join(" ")
}

/// Deletes the admin's link Secret (if roster made it): the plaintext link is no longer
/// needed. The token's hash stays, so that the portal can tell a spent link (410, by the
/// invite's phase) from an unknown one (404).
async fn withdraw_link(ctx: &Context, invite: &UserInvite) -> Result<()> {
    delete_owned_secret(ctx, invite, &link_secret_name(&invite.name_any())).await
}

/// When the person completed onboarding with the invite's current token, as the user's
/// credentials Secret records it (the portal writes it there). Only Secrets their owners
/// control count: the caller passes the invite's own token Secret and the user's own
/// credentials Secret.
fn accepted_at(token: Option<&Secret>, credentials: Option<&Secret>) -> Option<Timestamp> {
    let token = token?;
    let onboarding = CredentialFacts::of(credentials?);
    let current = text(token, TOKEN_HASH)?;
    (onboarding.onboarding_token.as_deref() == Some(current))
        .then_some(onboarding.onboarding_completed_at)
        .flatten()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn status(
        phase: Option<InvitePhase>,
        observed: Option<u32>,
        attempts: u32,
        last: Option<i64>,
        expires: Option<i64>,
    ) -> UserInviteStatus {
        let failed = Condition {
            type_: types::DELIVERED.into(),
            status: status::FALSE.into(),
            reason: reasons::SMTP_UNAVAILABLE.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(0)),
        };
        UserInviteStatus {
            conditions: vec![failed],
            phase,
            observed_resend: observed,
            delivery_attempts: Some(attempts),
            last_attempt_at: last.map(|s| Time(at(s))),
            expires_at: expires.map(|s| Time(at(s))),
            ..Default::default()
        }
    }

    #[test]
    fn step_table() {
        use InvitePhase::*;
        use UserState::*;
        let cases = [
            (
                "a new invite is delivered",
                Some(Active),
                0,
                status(None, None, 0, None, None),
                Step::Deliver { issuance: 0, attempts: 0 },
            ),
            (
                "a sent invite waits for its expiry",
                Some(Active),
                0,
                status(Some(Sent), Some(0), 1, Some(10), Some(500)),
                Step::Wait(Some(at(500))),
            ),
            (
                "a sent invite past its expiry expires",
                Some(Active),
                0,
                status(Some(Sent), Some(0), 1, Some(10), Some(90)),
                Step::Expire,
            ),
            (
                "a failed attempt waits its backoff",
                Some(Active),
                0,
                status(Some(Pending), Some(0), 3, Some(97), None),
                Step::Wait(Some(at(101))),
            ),
            (
                "after the backoff it tries again",
                Some(Active),
                0,
                status(Some(Pending), Some(0), 3, Some(90), None),
                Step::Deliver { issuance: 0, attempts: 3 },
            ),
            (
                "a resend issues anew",
                Some(Active),
                2,
                status(Some(Sent), Some(1), 1, Some(10), Some(500)),
                Step::Deliver { issuance: 2, attempts: 0 },
            ),
            (
                "a resend after revocation issues anew",
                Some(Active),
                1,
                status(Some(Revoked), Some(0), 1, Some(10), None),
                Step::Deliver { issuance: 1, attempts: 0 },
            ),
            (
                "revoked stays revoked without a resend",
                Some(Active),
                0,
                status(Some(Revoked), Some(0), 1, Some(10), None),
                Step::Wait(None),
            ),
            (
                "a deactivated user revokes",
                Some(Inactive),
                0,
                status(Some(Sent), Some(0), 1, Some(10), Some(500)),
                Step::Revoke,
            ),
            (
                "a deactivated user's revoked invite waits",
                Some(Inactive),
                1,
                status(Some(Revoked), Some(0), 1, Some(10), None),
                Step::Wait(None),
            ),
            ("a missing user is reported", None, 0, status(None, None, 0, None, None), Step::UserMissing),
            (
                "a deleted user revokes an issued link",
                None,
                0,
                status(Some(Sent), Some(0), 1, Some(10), Some(500)),
                Step::Revoke,
            ),
            (
                "a deleted user's revoked invite waits",
                None,
                0,
                status(Some(Revoked), Some(0), 1, Some(10), None),
                Step::Wait(None),
            ),
            (
                "a rejected invite waits for a resend",
                Some(Active),
                0,
                status(Some(Failed), Some(0), 1, Some(10), None),
                Step::Wait(None),
            ),
            (
                "an expired invite waits for a resend",
                Some(Active),
                0,
                status(Some(Expired), Some(0), 1, Some(10), Some(90)),
                Step::Wait(None),
            ),
        ];
        for (name, user, resend, status, expected) in cases {
            assert_eq!(
                decide(user, &Person::default(), resend, &status, None, None, at(100)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn onboarding_with_the_current_link_accepts_the_invite() {
        let sent = status(Some(InvitePhase::Sent), Some(0), 1, Some(10), Some(500));
        let active = Some(UserState::Active);
        assert_eq!(
            decide(active, &Person::default(), 0, &sent, None, Some(at(50)), at(100)),
            Step::Accept(at(50))
        );
        let expired_meanwhile = status(Some(InvitePhase::Sent), Some(0), 1, Some(10), Some(90));
        assert_eq!(
            decide(active, &Person::default(), 0, &expired_meanwhile, None, Some(at(50)), at(100)),
            Step::Accept(at(50))
        );
        let accepted = status(Some(InvitePhase::Accepted), Some(0), 1, Some(10), Some(500));
        assert_eq!(
            decide(active, &Person::default(), 0, &accepted, None, Some(at(50)), at(100)),
            Step::Wait(None)
        );
        assert_eq!(
            decide(Some(UserState::Inactive), &Person::default(), 0, &accepted, None, Some(at(50)), at(100)),
            Step::Wait(None)
        );
        assert_eq!(
            decide(active, &Person::default(), 1, &accepted, None, Some(at(50)), at(100)),
            Step::Deliver { issuance: 1, attempts: 0 },
            "a resend after acceptance issues anew"
        );
    }

    #[test]
    fn replaced_tokens_are_remembered_newest_last_and_bounded() {
        let secret = |current: &str, retired: &str| Secret {
            data: Some(BTreeMap::from([
                (TOKEN_HASH.to_owned(), ByteString(current.as_bytes().to_vec())),
                (RETIRED_HASHES.to_owned(), ByteString(retired.as_bytes().to_vec())),
            ])),
            ..Default::default()
        };
        assert_eq!(retire(None), "");
        assert_eq!(retire(Some(&secret("b", "a"))), "a b");
        let full = (0..RETIRED_KEPT).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let kept = retire(Some(&secret("new", &full)));
        assert_eq!(kept.split(' ').count(), RETIRED_KEPT);
        assert!(kept.ends_with(" new") && !kept.starts_with("0 "), "{kept}");
    }

    #[test]
    fn an_attempt_without_a_result_is_not_repeated_at_once() {
        let mut in_flight = status(Some(InvitePhase::Pending), Some(0), 1, Some(99), None);
        in_flight.conditions[0].status = status::UNKNOWN.into();
        assert_eq!(
            decide(Some(UserState::Active), &Person::default(), 0, &in_flight, None, None, at(100)),
            Step::Wait(Some(at(159)))
        );
        assert_eq!(
            decide(Some(UserState::Active), &Person::default(), 0, &in_flight, None, None, at(160)),
            Step::Deliver { issuance: 0, attempts: 1 }
        );
    }

    #[test]
    fn a_claimed_attempt_without_a_result_waits_a_minute_then_is_made_again() {
        let active = Some(UserState::Active);
        let claim = |issuance, attempt| Some(Claim { issuance, attempt, at: at(99) });
        let fresh = status(None, None, 0, None, None);
        let decide_at = |status: &UserInviteStatus, resend, claim, now| {
            decide(active, &Person::default(), resend, status, claim, None, at(now))
        };
        assert_eq!(decide_at(&fresh, 0, claim(0, 1), 100), Step::Wait(Some(at(159))), "still sending");
        assert_eq!(decide_at(&fresh, 0, claim(0, 1), 160), Step::Deliver { issuance: 0, attempts: 1 });
        let sent = status(Some(InvitePhase::Sent), Some(0), 1, Some(99), Some(500));
        assert_eq!(
            decide_at(&sent, 0, claim(0, 1), 100),
            Step::Wait(Some(at(500))),
            "its result is recorded"
        );
        assert_eq!(
            decide_at(&sent, 1, claim(0, 1), 100),
            Step::Deliver { issuance: 1, attempts: 0 },
            "a claim of an earlier issuance holds nothing back"
        );
        assert_eq!(decide_at(&sent, 1, claim(1, 1), 100), Step::Wait(Some(at(159))), "the resend is sending");
        let failed_once = status(Some(InvitePhase::Pending), Some(0), 1, Some(99), None);
        assert_eq!(
            decide_at(&failed_once, 0, claim(0, 2), 120),
            Step::Wait(Some(at(159))),
            "a retry claimed after a failure"
        );
        let secret = Secret {
            data: Some(BTreeMap::from([
                (TOKEN_ISSUANCE.to_owned(), ByteString(b"2".to_vec())),
                (TOKEN_ATTEMPT.to_owned(), ByteString(b"3".to_vec())),
                (TOKEN_ATTEMPT_AT.to_owned(), ByteString(at(99).to_string().into_bytes())),
            ])),
            ..Default::default()
        };
        assert_eq!(Claim::of(&secret), Some(Claim { issuance: 2, attempt: 3, at: at(99) }));
        assert_eq!(Claim::of(&Secret::default()), None, "a token Secret from before claims");
        let forged = Some(Claim { issuance: 0, attempt: u32::MAX, at: Timestamp::MAX });
        assert_eq!(
            decide_at(&fresh, 0, forged, 100),
            Step::Deliver { issuance: 0, attempts: 0 },
            "a claim from the future is no claim"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_ten_minutes() {
        let delays: Vec<i64> = (1..=12).map(|n| delivery_backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }
}
