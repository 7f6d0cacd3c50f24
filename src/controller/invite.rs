//! The UserInvite reconciler. This part of it withdraws links: an invite whose user is
//! deactivated is Revoked, and stays so until `spec.resend` is increased. Delivery (tokens,
//! email) builds on it.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::instrument;

use super::{Context, apply_status, cache, now, publish};
use crate::Result;
use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::{InvitePhase, User, UserInvite, UserInviteStatus, UserState};

/// What the invite's phase and conditions should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct InviteDecision {
    pub phase: InvitePhase,
    pub conditions: Vec<Desired>,
    pub observed_resend: u32,
}

/// Decides an invite's phase from its user's state, its current phase and the resend
/// counter. `user_state` is `None` when the user does not exist (yet).
pub(super) fn decide(
    user_state: Option<UserState>,
    current: Option<InvitePhase>,
    resend: u32,
    observed_resend: Option<u32>,
) -> InviteDecision {
    let resent = observed_resend.is_some_and(|observed| resend > observed);
    let was_revoked = current == Some(InvitePhase::Revoked) && !resent;
    let (phase, ready, reconciling, stalled) = match user_state {
        Some(UserState::Inactive) => (
            InvitePhase::Revoked,
            cond(
                types::READY,
                status::TRUE,
                reasons::REVOKED,
                "the user is deactivated; the link no longer works",
            ),
            false,
            None,
        ),
        _ if was_revoked => (
            InvitePhase::Revoked,
            cond(
                types::READY,
                status::TRUE,
                reasons::REVOKED,
                "the link was revoked; increase spec.resend to issue a new one",
            ),
            false,
            None,
        ),
        None => (
            current.unwrap_or(InvitePhase::Pending),
            cond(types::READY, status::FALSE, reasons::USER_NOT_FOUND, "the referenced User does not exist"),
            false,
            Some(reasons::USER_NOT_FOUND),
        ),
        Some(UserState::Active) => {
            let phase = match current {
                Some(phase) if phase != InvitePhase::Revoked && !resent => phase,
                _ => InvitePhase::Pending,
            };
            let delivering = "roster is delivering the invitation";
            (phase, cond(types::READY, status::UNKNOWN, reasons::RECONCILING, delivering), true, None)
        }
    };
    let mut conditions = vec![ready];
    conditions.extend(conditions::kstatus(reconciling, stalled));
    InviteDecision { phase, conditions, observed_resend: resend }
}

fn cond(type_: &'static str, status: &'static str, reason: &'static str, message: &str) -> Desired {
    Desired { type_, status, reason, message: message.into() }
}

#[instrument(skip_all, fields(invite = %cache::key(invite.as_ref())))]
pub(super) async fn reconcile(invite: Arc<UserInvite>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches.ready().await {
        return Ok(Action::await_change());
    }
    let namespace = invite.namespace().unwrap_or_default();
    let user = ctx.caches.users.get(&ObjectRef::<User>::new(&invite.spec.user_ref.name).within(&namespace));
    let previous = invite.status.clone().unwrap_or_default();
    let decision =
        decide(user.map(|u| u.spec.state), previous.phase, invite.spec.resend, previous.observed_resend);
    let generation = invite.metadata.generation;
    let status = UserInviteStatus {
        phase: Some(decision.phase),
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &decision.conditions, generation, &now()),
        observed_resend: Some(decision.observed_resend),
        ..previous.clone()
    };
    if status != previous {
        apply_status(&ctx, invite.as_ref(), &status).await?;
        if decision.phase == InvitePhase::Revoked && previous.phase != Some(InvitePhase::Revoked) {
            let note = format!("the invitation for {} was revoked", invite.spec.user_ref.name);
            publish(&ctx, invite.as_ref(), EventType::Normal, "Revoked", "Revoke", note).await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_table() {
        use InvitePhase::*;
        /// name, user state, current phase, resend, observed resend → phase, Ready status.
        type Case = (
            &'static str,
            Option<UserState>,
            Option<InvitePhase>,
            u32,
            Option<u32>,
            InvitePhase,
            &'static str,
        );
        let cases: [Case; 8] = [
            ("new invite for an active user", Some(UserState::Active), None, 0, None, Pending, "Unknown"),
            ("a sent invite stays sent", Some(UserState::Active), Some(Sent), 0, Some(0), Sent, "Unknown"),
            (
                "deactivating the user revokes",
                Some(UserState::Inactive),
                Some(Sent),
                0,
                Some(0),
                Revoked,
                "True",
            ),
            (
                "revoked stays revoked on reactivation",
                Some(UserState::Active),
                Some(Revoked),
                0,
                Some(0),
                Revoked,
                "True",
            ),
            (
                "a resend after revocation issues anew",
                Some(UserState::Active),
                Some(Revoked),
                1,
                Some(0),
                Pending,
                "Unknown",
            ),
            (
                "a resend while deactivated stays revoked",
                Some(UserState::Inactive),
                Some(Revoked),
                1,
                Some(0),
                Revoked,
                "True",
            ),
            ("a missing user is not a revocation", None, None, 0, None, Pending, "False"),
            (
                "a resend of a sent invite issues anew",
                Some(UserState::Active),
                Some(Sent),
                2,
                Some(1),
                Pending,
                "Unknown",
            ),
        ];
        for (name, user, current, resend, observed, phase, ready) in cases {
            let decision = decide(user, current, resend, observed);
            assert_eq!(decision.phase, phase, "{name}");
            assert_eq!(decision.conditions[0].status, ready, "{name}");
            assert_eq!(decision.observed_resend, resend, "{name}");
        }
    }

    #[test]
    fn a_missing_user_stalls_with_a_reason() {
        let decision = decide(None, None, 0, None);
        let stalled = decision.conditions.iter().find(|c| c.type_ == types::STALLED).unwrap();
        assert_eq!((stalled.status, stalled.reason), (status::TRUE, reasons::USER_NOT_FOUND));
    }
}
