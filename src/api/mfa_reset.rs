//! `MfaReset`: a one-shot, audited reset of a user's second factor.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;
use super::invite::{Delivery, USER_REF_IMMUTABLE};

/// A request to clear a user's TOTP enrolment once and let them enrol a new authenticator
/// through a single-use link (valid 24 hours).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "MfaReset",
    namespaced,
    status = "MfaResetStatus",
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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MfaResetSpec {
    /// The User (same namespace) whose second factor is reset. Immutable.
    #[x_kube(validation = Rule::new(USER_REF_IMMUTABLE).message("userRef is immutable; create a new MfaReset instead"))]
    pub user_ref: LocalObjectReference,

    /// Why the reset was requested (e.g. "lost phone"), kept for audit. Immutable.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("reason is immutable; it is the audit record of this reset"))]
    pub reason: String,

    /// Email: roster emails the re-enrolment link. Link: roster stores it in the Secret
    /// <name>-link for an admin to hand over.
    #[serde(default)]
    pub delivery: Delivery,

    /// Seconds after the reset finishes before roster deletes it, like a Job's field of the
    /// same name. Unset: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// What roster observed of a reset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaResetStatus {
    /// Pending, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MfaResetPhase>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled and details of the reset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// When the reset finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// When the re-enrolment link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Email deliveries tried for the link (or, for Link delivery, the notification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempts: Option<u32>,

    /// When the last delivery was tried, for the retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,

    /// Link delivery: the Secret with the re-enrolment URL, for admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_secret_ref: Option<LocalObjectReference>,
}

/// Phase of a reset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MfaResetPhase {
    /// Not done yet.
    Pending,
    /// The enrolment was cleared and the link issued (or there was nothing to reset).
    Completed,
    /// The reset cannot be done, e.g. the user does not exist or is inactive.
    Failed,
}
