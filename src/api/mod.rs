//! The custom resources roster serves (group `roster.dev`, version `v1alpha1`): their Rust
//! types are the single source of the CRDs, so every field's `///` comment is what
//! `kubectl explain` prints and every admission rule lives beside the field it checks.
//! Types only; no I/O.

pub mod conditions;
mod invite;
mod mfa_reset;
mod schema;
mod user;

pub use invite::{Delivery, InvitePhase, UserInvite, UserInviteSpec, UserInviteStatus};
pub use mfa_reset::{MfaReset, MfaResetPhase, MfaResetSpec, MfaResetStatus};
pub use user::{
    InvitePolicy, InviteSettings, InviteSummary, MfaSettings, MfaStatus, RequiredAction, User,
    UserPhase, UserSpec, UserState, UserStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every roster resource.
pub const GROUP: &str = "roster.dev";

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The CRDs of every kind roster serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![User::crd(), UserInvite::crd(), MfaReset::crd()]
}

/// The CRDs as one multi-document YAML stream: what `roster crd` prints and `crds/` holds.
pub fn crds_yaml() -> crate::Result<String> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}
