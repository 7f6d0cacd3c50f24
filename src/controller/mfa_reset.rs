//! The MfaReset reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use tracing::instrument;

use super::{Context, acknowledged, apply_status};
use crate::Result;
use crate::api::{MfaReset, MfaResetStatus};

/// Records that roster has seen this generation of the MfaReset; writes nothing when the
/// status already says so.
#[instrument(skip_all, fields(name = %reset.metadata.name.as_deref().unwrap_or_default(), namespace = %reset.metadata.namespace.as_deref().unwrap_or_default()))]
pub(super) async fn reconcile(reset: Arc<MfaReset>, ctx: Arc<Context>) -> Result<Action> {
    let current = reset.status.clone().unwrap_or_default();
    let generation = reset.metadata.generation;
    let desired = MfaResetStatus {
        observed_generation: generation,
        conditions: acknowledged(&current.conditions, generation),
        ..current.clone()
    };
    if desired != current {
        apply_status(&ctx, reset.as_ref(), &desired).await?;
    }
    Ok(Action::await_change())
}
