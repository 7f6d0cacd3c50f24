//! The custom resources roster serves (group `roster.dev`, version `v1alpha1`): their Rust
//! types are the single source of the CRDs, so every field's `///` comment is what
//! `kubectl explain` prints and every admission rule lives beside the field it checks.
//! Types only; no I/O.

// Every `printcolumn(...)` in a `#[kube]` attribute repeats the keys `name`, `type_`, ….
#![allow(clippy::duplicated_attributes)]

pub mod admission;
pub mod conditions;
mod invite;
mod mfa_reset;
mod oidc_client;
mod password_reset;
mod reset;
mod schema;
mod user;

pub use invite::{Delivery, InvitePhase, UserInvite, UserInviteSpec, UserInviteStatus};
pub use mfa_reset::{MfaReset, MfaResetSpec};
pub use oidc_client::{
    OidcClient, OidcClientSpec, OidcClientStatus, Scope, SigningAlgorithm, TokenLifetimes,
};
pub use password_reset::{Initiator, PasswordReset, PasswordResetSpec};
pub use reset::{ResetPhase, ResetStatus};
pub use user::{
    InvitePolicy, InviteSettings, InviteSummary, MfaSettings, MfaStatus, RequiredAction, User, UserPhase,
    UserSpec, UserState, UserStatus,
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

/// The User an invite or reset is for: always in the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
pub struct UserReference {
    /// Name of the User, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Not allowed. Declared so that a namespace written here is refused at admission rather
    /// than dropped — by a client that does not validate fields strictly, dropping it would
    /// aim the object at the same-named User of its own namespace, perhaps another person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("false").message(
        "a userRef reaches only this namespace: remove namespace, or create this object in the User's namespace"
    ))]
    pub namespace: Option<String>,
}

impl UserReference {
    /// A reference to the User `name` of the same namespace.
    pub fn to(name: String) -> Self {
        Self { name, namespace: None }
    }
}

/// A time as status holds it: whole seconds, as the API server stores `metav1.Time`, so that
/// a status derived again compares equal to the one read back and nothing is rewritten.
pub fn status_time(at: k8s_openapi::jiff::Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let whole = k8s_openapi::jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(whole)
}

/// The CRDs of every kind roster serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![User::crd(), UserInvite::crd(), MfaReset::crd(), PasswordReset::crd(), OidcClient::crd()]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/roster.yaml` is generated; regenerate with `cargo run -- crd > crds/roster.yaml`.
    #[test]
    fn crds_directory_matches_roster_crd() {
        let committed = include_str!("../../crds/roster.yaml");
        let generated = crds_yaml().unwrap();
        assert!(
            committed == generated,
            "crds/roster.yaml is stale: run `cargo run -- crd > crds/roster.yaml`"
        );
    }

    #[test]
    fn schema_default_ttl_is_what_serde_assumes() {
        let invite: UserInviteSpec =
            serde_json::from_value(serde_json::json!({"userRef": {"name": "a"}})).unwrap();
        let schema_default: kube::core::Duration = "720h".parse().unwrap();
        assert_eq!(invite.ttl, schema_default);
        let crd = serde_json::to_value(UserInvite::crd()).unwrap();
        let ttl = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["ttl"];
        assert_eq!(ttl["default"], "720h");
    }

    #[test]
    fn status_times_are_whole_seconds() {
        let precise: k8s_openapi::jiff::Timestamp = "2026-11-23T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(status_time(precise).0.to_string(), "2026-11-23T10:00:00Z");
    }

    #[test]
    fn spec_defaults_match_the_design() {
        let user: UserSpec = serde_json::from_value(serde_json::json!({"email": "a@example.com"})).unwrap();
        assert_eq!(user.state, UserState::Active);
        assert!(user.mfa.required);
        assert_eq!(user.invite.policy, InvitePolicy::Auto);
        let reset: MfaResetSpec =
            serde_json::from_value(serde_json::json!({"userRef": {"name": "a"}, "reason": "r"})).unwrap();
        assert_eq!(reset.delivery, Delivery::Email);
    }
}
