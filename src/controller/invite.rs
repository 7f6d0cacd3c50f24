//! The UserInvite reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use tracing::instrument;

use super::{Context, acknowledged, apply_status};
use crate::Result;
use crate::api::{UserInvite, UserInviteStatus};

/// Records that roster has seen this generation of the UserInvite; writes nothing when the
/// status already says so.
#[instrument(skip_all, fields(name = %invite.metadata.name.as_deref().unwrap_or_default(), namespace = %invite.metadata.namespace.as_deref().unwrap_or_default()))]
pub(super) async fn reconcile(invite: Arc<UserInvite>, ctx: Arc<Context>) -> Result<Action> {
    let current = invite.status.clone().unwrap_or_default();
    let generation = invite.metadata.generation;
    let desired = UserInviteStatus {
        observed_generation: generation,
        conditions: acknowledged(&current.conditions, generation),
        ..current.clone()
    };
    if desired != current {
        apply_status(&ctx, invite.as_ref(), &desired).await?;
    }
    Ok(Action::await_change())
}
