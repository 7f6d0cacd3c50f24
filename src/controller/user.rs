//! The User reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use tracing::instrument;

use super::{Context, acknowledged, apply_status};
use crate::Result;
use crate::api::{User, UserStatus};

/// Records that roster has seen this generation of the User; writes nothing when the
/// status already says so.
#[instrument(skip_all, fields(name = %user.metadata.name.as_deref().unwrap_or_default(), namespace = %user.metadata.namespace.as_deref().unwrap_or_default()))]
pub(super) async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action> {
    let current = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let desired = UserStatus {
        observed_generation: generation,
        conditions: acknowledged(&current.conditions, generation),
        ..current.clone()
    };
    if desired != current {
        apply_status(&ctx, user.as_ref(), &desired).await?;
    }
    Ok(Action::await_change())
}
