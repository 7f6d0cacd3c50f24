//! `MfaReset`: a one-shot, audited reset of a user's second factor.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::invite::{Delivery, USER_REF_IMMUTABLE};
use super::reset::ResetStatus;

/// A request to clear a user's TOTP enrolment once and let them enrol a new authenticator
/// through a single-use link (valid 24 hours).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "MfaReset",
    namespaced,
    status = "ResetStatus",
    shortname = "mfar",
    category = "roster",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: roster labels the reset's Secrets with it"),
    doc = "A one-shot reset of a user's second factor, kept for audit; the person re-enrols through a single-use link.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userRef.name",
        description = "The user whose second factor is reset"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Completed or Failed"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // `kubectl get mfaresets --field-selector spec.userRef.name=jane`: one person's, on the API server.
    selectable = ".spec.userRef.name"
)]
#[serde(rename_all = "camelCase")]
pub struct MfaResetSpec {
    /// The User (same namespace) whose second factor is reset. Immutable.
    #[x_kube(validation = Rule::new(USER_REF_IMMUTABLE).message("userRef is immutable; create a new MfaReset instead"))]
    pub user_ref: super::UserReference,

    /// Why the reset was requested (e.g. "lost phone"), kept for audit. Immutable.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("reason is immutable; it is the audit record of this reset"))]
    pub reason: String,

    /// Email: roster emails the re-enrolment link. Link: roster stores it in the Secret
    /// <name>-link for an admin to hand over. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("delivery is immutable; create a new MfaReset instead"))]
    pub delivery: Delivery,

    /// Seconds after the reset finishes before roster deletes it, like a Job's field of the
    /// same name. Unset: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
}
