//! `UserInvite`: one invitation for one user, with a single-use link.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;
use super::user::{EMAIL_MESSAGE, EMAIL_RULE};

/// CEL on `userRef`: a reference is fixed for the object's life.
pub(crate) const USER_REF_IMMUTABLE: &str = "self == oldSelf";

/// An invitation for a user to set a password and enrol a second factor through a
/// single-use link.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "UserInvite",
    namespaced,
    status = "UserInviteStatus",
    shortname = "uinv",
    category = "roster",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: roster labels the invite's Secrets with it"),
    doc = "An invitation for a user: roster issues a single-use link and, for Email delivery, sends it.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userRef.name",
        description = "The invited user"
    ),
    printcolumn(
        name = "Delivery",
        type_ = "string",
        json_path = ".spec.delivery",
        description = "Email or Link"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Invitation phase"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the link stops working"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // `kubectl get userinvites --field-selector spec.userRef.name=jane`: one person's, on the API server.
    selectable = ".spec.userRef.name"
)]
#[serde(rename_all = "camelCase")]
pub struct UserInviteSpec {
    /// The User (same namespace) this invitation is for. Immutable.
    #[x_kube(validation = Rule::new(USER_REF_IMMUTABLE).message("userRef is immutable; create a new UserInvite instead"))]
    pub user_ref: super::UserReference,

    /// Email: roster sends the link. Link: roster only creates it, in the Secret
    /// <name>-link, for an admin to hand over.
    #[serde(default)]
    pub delivery: Delivery,

    /// Recipient, when not the user's own email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(EMAIL_RULE).message(EMAIL_MESSAGE))]
    pub email: Option<String>,

    /// How long the link works after it is sent, as a duration such as 720h or 30m,
    /// between 1s and 8760h.
    #[serde(default = "default_ttl")]
    #[schemars(length(max = 32), extend("default" = "720h"))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('8760h')"
    ).message("must be a duration such as 720h or 30m, between 1s and 8760h"))]
    pub ttl: kube::core::Duration,

    /// Increase to send the invitation again: a fresh link is issued and the old one revoked.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("resend can only be increased"))]
    pub resend: u32,
}

fn default_ttl() -> kube::core::Duration {
    std::time::Duration::from_secs(720 * 3600).into()
}

/// How a link reaches the person.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Delivery {
    /// roster emails the link.
    #[default]
    Email,
    /// roster stores the link in an admin-only Secret and sends nothing.
    Link,
}

/// What roster observed of an invitation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInviteStatus {
    /// Pending, Sent, Accepted, Expired, Revoked or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InvitePhase>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled and Delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// When the link was last sent or created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,

    /// When the link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// When the person accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Time>,

    /// When roster last tried to deliver the current link; the next try waits a backoff
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,

    /// How many times roster tried to deliver the current link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempts: Option<u32>,

    /// The spec.resend the current link was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_resend: Option<u32>,

    /// For Link delivery: the Secret holding the URL, for admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_secret_ref: Option<LocalObjectReference>,
}

/// Phase of an invitation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InvitePhase {
    /// Not delivered yet.
    Pending,
    /// Delivered; waiting for the person.
    Sent,
    /// The person used the link.
    Accepted,
    /// The link's time ran out.
    Expired,
    /// Withdrawn: resent, the user deactivated or deleted.
    Revoked,
    /// The person completed onboarding with another invitation: this link no longer works.
    Superseded,
    /// Delivery failed for good (e.g. the SMTP server rejected the address).
    Failed,
}
