//! The User reconciler: read the facts from the caches, derive the lifecycle
//! ([`crate::lifecycle::decide`]), make sure the credentials Secret and the automatic invite
//! exist, clear a lockout on deactivation, and record the result on status with an Event
//! per phase change.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::instrument;

use super::names::{CREDENTIALS_TYPE, USER_LABEL, auto_invite_name, credentials_secret_name};
use super::{
    Context, Creation, apply_status, cache, create_unless_known, now, owned_meta, publish, requeue_at,
};
use crate::api::conditions::{self, reasons, types};
use crate::api::status_time;
use crate::api::{
    Delivery, InvitePhase, LocalObjectReference, MfaStatus, User, UserInvite, UserInviteSpec, UserPhase,
    UserStatus,
};
use crate::credentials::CredentialFacts;
use crate::credentials::record::{FAILED_LOGINS, LOCKED_AT};
use crate::lifecycle::{self, Blocker, InviteFact, UserFacts};
use crate::{Error, Result};

#[instrument(skip_all, fields(user = %cache::key(user.as_ref())))]
pub(super) async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches.ready().await {
        return Ok(Action::await_change());
    }
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let now = now();

    // Dereference: every fact from the caches.
    let secret_name = credentials_secret_name(&name);
    let secret = ctx.caches.secrets.get(&ObjectRef::new(&secret_name).within(&namespace));
    let owned = secret.as_ref().map(|s| cache::controlled_by(s.as_ref(), user.as_ref()));
    let invites: Vec<InviteFact> =
        ctx.caches.invites_of(&namespace, &name).iter().map(|i| invite_fact(i)).collect();
    let blocker = ctx
        .caches
        .directory_conflict(&user, &ctx.settings.allowed_email_domains)
        .map(Blocker::Directory)
        .or_else(|| {
            (owned == Some(false)).then(|| Blocker::CredentialsSecretTaken { name: secret_name.clone() })
        });

    // The credentials Secret exists from the first reconcile on; roster never overwrites it.
    let credentials = match (&secret, owned) {
        (Some(secret), Some(true)) => Some(CredentialFacts::of(secret)),
        (None, _) => Some(CredentialFacts::default()),
        (Some(_), _) => None,
    };

    let decision = lifecycle::decide(&UserFacts {
        spec: &user.spec,
        credentials: credentials.as_ref(),
        invites: &invites,
        blocker,
        lockout: ctx.settings.lockout,
        created: user.metadata.creation_timestamp.as_ref().map(|t| t.0),
        now: now.0,
    });

    // The credentials Secret and the automatic invite are independent: created together.
    let (credentials_created, invite_created) = futures::try_join!(
        async {
            match secret {
                None => create_unless_known(&ctx, &credentials_secret(&user, &secret_name)?, false).await,
                Some(_) => Ok(Creation::Present),
            }
        },
        async {
            if decision.ensure_auto_invite {
                ensure_auto_invite(&ctx, &user).await
            } else {
                Ok(Creation::Present)
            }
        },
    )?;
    // Creations the cache does not show yet: reconcile again if their events never come.
    let awaited = credentials_created == Creation::Awaited || invite_created == Creation::Awaited;

    if decision.clear_lockout
        && let Some(secret) = &secret
    {
        clear_failed_logins(&ctx, secret).await?;
    }
    if decision.sessions_end {
        end_sessions(&ctx, &user).await?;
    }

    // Status: derived, compared, written only when it changed.
    let previous = user.status.clone().unwrap_or_default();
    let facts = credentials.unwrap_or_default();
    let generation = user.metadata.generation;
    let status = UserStatus {
        phase: Some(decision.phase),
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &decision.conditions, generation, &now),
        required_actions: decision.required_actions.clone(),
        credentials_secret_ref: (owned != Some(false)).then_some(LocalObjectReference { name: secret_name }),
        invite: decision.invite.clone(),
        mfa: facts.totp_enrolled.then(|| MfaStatus {
            method: "TOTP".into(),
            enrolled_at: facts.totp_enrolled_at.map(status_time),
        }),
        activated_at: since(
            &previous,
            UserPhase::Active,
            decision.phase,
            previous.activated_at.clone(),
            &now,
        ),
        deactivated_at: since(
            &previous,
            UserPhase::Inactive,
            decision.phase,
            previous.deactivated_at.clone(),
            &now,
        ),
        last_login_at: facts.last_login_at.map(status_time),
        locked_until: decision.locked_until.map(status_time),
        failed_login_attempts: Some(facts.failed_logins),
    };
    // A new user's first status is the one it settles in (see `Decision::settling`).
    let changed = status != previous && !(decision.settling && previous.phase.is_none());
    if changed {
        apply_status(&ctx, user.as_ref(), &status).await?;
    }
    // After the status write: a delivery problem is retried, and never keeps status stale.
    let verification_due =
        if decision.verify_email { super::verification::ensure_sent(&ctx, &user).await? } else { None };
    tracing::debug!(phase = %decision.phase, wrote_status = changed, "reconciled");
    if previous.phase != Some(decision.phase) {
        announce(&ctx, &user, previous.phase, &status).await;
    }
    // Last: a notice that cannot be sent yet holds nothing above back.
    if let (Some(secret), Some(true)) = (&secret, owned) {
        super::notices::send_due(&ctx, &user, secret).await?;
    }

    let recheck = awaited.then(|| now.0 + super::expectations::RECHECK);
    Ok(requeue_at(decision.recheck_at.into_iter().chain(verification_due).chain(recheck).min(), now.0))
}

/// A transition time kept on status: `now` when the phase just became `phase`, else what
/// was recorded before.
fn since(
    previous: &UserStatus,
    phase: UserPhase,
    current: UserPhase,
    recorded: Option<Time>,
    now: &Time,
) -> Option<Time> {
    if current == phase && previous.phase != Some(phase) { Some(now.clone()) } else { recorded }
}

fn invite_fact(invite: &UserInvite) -> InviteFact {
    let status = invite.status.as_ref();
    InviteFact {
        name: invite.name_any(),
        phase: status.and_then(|s| s.phase),
        expires_at: status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0),
        created: invite.metadata.creation_timestamp.as_ref().map(|t| t.0),
        failing: status.is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == types::DELIVERED && c.status == conditions::status::FALSE)
        }),
    }
}

fn credentials_secret(user: &User, name: &str) -> Result<Secret> {
    Ok(Secret {
        metadata: owned_meta(user, name, (USER_LABEL, user.name_any()))?,
        type_: Some(CREDENTIALS_TYPE.into()),
        data: Some(BTreeMap::new()),
        ..Default::default()
    })
}

fn auto_invite(user: &User) -> Result<UserInvite> {
    let name = auto_invite_name(&user.name_any());
    let mut invite = UserInvite::new(
        &name,
        UserInviteSpec {
            user_ref: crate::api::UserReference::to(user.name_any()),
            delivery: Delivery::Email,
            email: None,
            ttl: std::time::Duration::from_secs(720 * 3600).into(),
            resend: 0,
        },
    );
    invite.metadata = owned_meta(user, &name, (USER_LABEL, user.name_any()))?;
    Ok(invite)
}

/// Makes sure the automatic invite exists and can deliver: created when absent, resent
/// (`spec.resend` increased) when it was revoked — e.g. the user was deactivated before
/// onboarding and is active again. A resend already asked for is not asked for again.
async fn ensure_auto_invite(ctx: &Context, user: &User) -> Result<Creation> {
    let namespace = user.namespace().unwrap_or_default();
    let name = auto_invite_name(&user.name_any());
    let api: Api<UserInvite> = Api::namespaced(ctx.client.clone(), &namespace);
    let cached = ctx.caches.invites.get(&ObjectRef::new(&name).within(&namespace));
    let creation = create_unless_known(ctx, &auto_invite(user)?, cached.is_some()).await?;
    if creation == Creation::Created {
        tracing::info!(invite = %name, "created the automatic invite");
    }
    if let Some(invite) = cached
        && invite.status.as_ref().is_some_and(|s| {
            s.phase == Some(InvitePhase::Revoked) && s.observed_resend == Some(invite.spec.resend)
        })
        && cache::controlled_by(invite.as_ref(), user)
    {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": invite.resource_version()},
            "spec": {"resend": invite.spec.resend + 1},
        });
        api.patch(
            &name,
            &PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "resending",
            kind: "UserInvite".into(),
            object: format!("{namespace}/{name}"),
            source: Box::new(source),
        })?;
        tracing::info!(invite = %name, "resending the revoked automatic invite");
    }
    Ok(creation)
}

/// Ends the sign-in sessions of a user who may no longer hold any (their grants, and so
/// relying parties' refresh tokens, go with them). Read from the sweeper's index: nothing to
/// do is no request.
async fn end_sessions(ctx: &Context, user: &User) -> Result<()> {
    let (Some(sessions), Some(uid)) = (&ctx.sessions, user.uid()) else { return Ok(()) };
    let ended = sessions
        .end_sessions_of(&ctx.client, &uid)
        .await
        .map_err(|e| Error::Sessions { user: cache::key(user), source: Box::new(e) })?;
    if ended > 0 {
        tracing::info!(sessions = ended, "ended the sign-in sessions of a user who may no longer sign in");
    }
    Ok(())
}

/// Resets the failed-login count, with the Secret's resourceVersion as precondition so that
/// a sign-in failing at the same moment is not lost (a conflict is retried).
async fn clear_failed_logins(ctx: &Context, secret: &Secret) -> Result<()> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": secret.resource_version()},
        "data": {FAILED_LOGINS: ByteString(b"0".to_vec()), LOCKED_AT: null},
    });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret.namespace().unwrap_or_default());
    api.patch(&secret.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop).map_err(
        |source| Error::Kube {
            action: "clearing the lockout in",
            kind: "Secret".into(),
            object: cache::key(secret),
            source: Box::new(source),
        },
    )
}

/// An Event for a phase change, for `kubectl describe`.
async fn announce(ctx: &Context, user: &User, from: Option<UserPhase>, status: &UserStatus) {
    let Some(phase) = status.phase else { return };
    let ready = status.conditions.iter().find(|c| c.type_ == types::READY);
    let (type_, reason, note) = match phase {
        UserPhase::New => return,
        UserPhase::Pending => (EventType::Normal, "Invited", "an invitation was delivered".to_owned()),
        UserPhase::Active => (EventType::Normal, "Activated", "the user completed onboarding".to_owned()),
        UserPhase::Inactive if ready.is_some_and(|c| c.reason == reasons::LOCKED_OUT) => {
            (EventType::Warning, "LockedOut", "locked out after too many failed sign-ins".to_owned())
        }
        UserPhase::Inactive if ready.is_some_and(|c| c.reason == reasons::EXPIRED) => {
            (EventType::Normal, "Expired", "spec.expiresAt has passed; sign-ins are refused".to_owned())
        }
        UserPhase::Inactive => {
            (EventType::Normal, "Deactivated", "spec.state is Inactive; sign-ins are refused".to_owned())
        }
    };
    let from = from.map_or_else(|| "none".to_owned(), |p| p.to_string());
    publish(ctx, user, type_, reason, "Reconcile", format!("{note} (phase {from} → {phase})")).await;
}
