//! What roster observes of a one-shot reset — an `MfaReset` or a `PasswordReset`: both
//! record the same facts on status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// What roster observed of a reset (an MfaReset or a PasswordReset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetStatus {
    /// Pending, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ResetPhase>,

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

    /// When the link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Email deliveries tried for the link (or, for Link delivery, the notification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempts: Option<u32>,

    /// When the last delivery was tried, for the retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,

    /// Link delivery: the Secret with the URL, for admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_secret_ref: Option<LocalObjectReference>,
}

/// Phase of a reset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResetPhase {
    /// Not done yet.
    Pending,
    /// The link was issued (for an MfaReset, the enrolment cleared), or there was nothing
    /// to reset.
    Completed,
    /// The reset cannot be done, e.g. the user does not exist or is inactive.
    Failed,
}
