//! `PasswordReset`: a one-shot, audited way for a person who forgot their password to set a
//! new one — the only way besides onboarding that a password is set.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::invite::{Delivery, USER_REF_IMMUTABLE};
use super::reset::ResetStatus;

/// A request to let a user set a new password through a single-use link. When the user has
/// a second factor, the link also asks for a current code: a link alone does not take over an
/// account.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "PasswordReset",
    namespaced,
    status = "ResetStatus",
    shortname = "pwr",
    category = "roster",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: roster labels the reset's Secrets with it"),
    doc = "A one-shot password reset, kept for audit; the person sets a new password through a single-use link (proving a current TOTP code when they have one).",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userRef.name",
        description = "The user whose password is reset"
    ),
    printcolumn(
        name = "Initiator",
        type_ = "string",
        json_path = ".spec.initiator",
        description = "Admin, or Self (the person asked)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Completed or Failed"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the link stops working"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // `kubectl get passwordresets --field-selector spec.userRef.name=jane`: one person's, on the API server.
    selectable = ".spec.userRef.name"
)]
#[serde(rename_all = "camelCase")]
pub struct PasswordResetSpec {
    /// The User (same namespace) whose password is reset. Immutable.
    #[x_kube(validation = Rule::new(USER_REF_IMMUTABLE).message("userRef is immutable; create a new PasswordReset instead"))]
    pub user_ref: super::UserReference,

    /// Why the reset was requested (e.g. "forgot password, ticket 4711"), kept for audit.
    /// Immutable.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("reason is immutable; it is the audit record of this reset"))]
    pub reason: String,

    /// Email: roster emails the link to the user's address. Link: roster stores it in the
    /// Secret <name>-link for an admin to hand over, and emails the person that a reset was
    /// issued. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("delivery is immutable; create a new PasswordReset instead"))]
    pub delivery: Delivery,

    /// Who asked for it: Admin (the default: someone with kubectl), or Self (the person,
    /// through "Forgot your password?" on a sign-in page; roster creates it). A Self reset
    /// clears only a lock that ends by itself, and its email says the person asked.
    /// Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("initiator is immutable; it is the audit record of this reset"))]
    pub initiator: Initiator,

    /// How long the link works, as a duration such as 24h or 30m, between 1m and 168h (7
    /// days).
    #[serde(default = "default_ttl")]
    #[schemars(length(max = 32), extend("default" = "24h"))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('168h')"
    ).message("must be a duration such as 24h or 30m, between 1m and 168h"))]
    pub ttl: kube::core::Duration,

    /// Seconds after the reset finishes before roster deletes it, like a Job's field of the
    /// same name. Unset: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Who asked for a password reset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Initiator {
    /// An admin, with kubectl or through Git.
    #[default]
    Admin,
    /// The person, through the sign-in page's "Forgot your password?".
    #[serde(rename = "Self")]
    Person,
}

fn default_ttl() -> kube::core::Duration {
    std::time::Duration::from_secs(24 * 3600).into()
}
