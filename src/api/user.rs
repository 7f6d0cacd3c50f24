//! `User`: one person's account, declared by a platform team.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// CEL: an address with a local part and a dotted domain (what SMTP servers accept, without
/// quoted local parts or IP literals, which no directory should hold).
pub(crate) const EMAIL_RULE: &str = "self.matches('^[^@[:space:]]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$')";
/// What a person is told when [`EMAIL_RULE`] fails.
pub(crate) const EMAIL_MESSAGE: &str = "must be an email address such as jane.doe@example.com";

/// What a platform team declares about a person: who they are, whether they may sign in,
/// and how roster invites them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    status = "UserStatus",
    shortname = "usr",
    category = "roster",
    validation = Rule::new("size(self.metadata.name) <= 56").message("metadata.name must be at most 56 characters: roster labels the user's Secrets with it and names its automatic invite <name>-invite, a label value too (at most 63)"),
    doc = "A person's account. roster invites them, lets them set a password and enrol TOTP, and reports the lifecycle (NEW, PENDING, ACTIVE, INACTIVE) on status.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.email", description = "Login email"),
    printcolumn(
        name = "MFA",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"MfaEnrolled\")].status",
        description = "Whether a second factor is enrolled"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".spec.expiresAt",
        priority = "1",
        description = "When the account ends (spec.expiresAt)"
    ),
    printcolumn(
        name = "Last-Sign-In",
        type_ = "date",
        json_path = ".status.lastLoginAt",
        priority = "1",
        description = "When the user last signed in"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = "1",
        description = "Whether roster has done all it can for this generation"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // `kubectl get users --field-selector status.phase=PENDING` (exact, case-sensitive matches).
    selectable = ".spec.email",
    selectable = ".spec.username",
    selectable = ".status.phase"
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// Email address: where invitations go, and a login identifier. Unique in the directory
    /// (compared case-insensitively).
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(EMAIL_RULE).message(EMAIL_MESSAGE))]
    pub email: String,

    /// Login name. Defaults to metadata.name. Unique in the directory (compared
    /// case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9._@-]*[A-Za-z0-9])?$')")
        .message("must be letters, digits, '.', '_', '@' or '-', starting and ending with a letter or digit"))]
    pub username: Option<String>,

    /// Given (first) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub given_name: Option<String>,

    /// Family (last) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub family_name: Option<String>,

    /// Name shown to people, e.g. in emails and the portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// Phone number in E.164 form, e.g. +15551234567.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[+][1-9][0-9]{1,14}$')")
        .message("must be an E.164 phone number: '+', country code and number, digits only, e.g. +15551234567"))]
    pub phone: Option<String>,

    /// Language of the emails sent to this user, as a BCP 47 tag (e.g. en, de, pt-BR).
    /// Unknown languages fall back to English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$')")
        .message("must be a BCP 47 language tag such as en, de or pt-BR"))]
    pub locale: Option<String>,

    /// Time zone, as an IANA name such as Europe/Berlin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')")
        .message("must be an IANA time zone name such as Europe/Berlin"))]
    pub timezone: Option<String>,

    /// Groups the user belongs to (at most 64, each at most 128 characters, no duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub groups: Vec<String>,

    /// Free-form string attributes, e.g. orgUnit or position (at most 64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::attributes")]
    pub attributes: BTreeMap<String, String>,

    /// Desired state: Active lets the person onboard and sign in; Inactive revokes
    /// outstanding invites and refuses sign-ins.
    #[serde(default)]
    pub state: UserState,

    /// When the account ends, in RFC 3339 (e.g. 2027-03-31T18:00:00Z): from then on the
    /// user is INACTIVE with reason Expired, sign-ins are refused and sessions end. Moving it
    /// later (or removing it) reactivates the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Second-factor policy.
    #[serde(default)]
    pub mfa: MfaSettings,

    /// How the person is invited.
    #[serde(default)]
    pub invite: InviteSettings,
}

impl UserSpec {
    /// Whether the account has ended at `now` (`expiresAt` reached).
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.as_ref().is_some_and(|at| at.0 <= now)
    }

    /// The state in force at `now`: the one asked for, and Inactive once the account ended.
    /// Every door that lets a person in asks this, not `state` alone.
    pub fn state_at(&self, now: Timestamp) -> UserState {
        if self.expired(now) { UserState::Inactive } else { self.state }
    }
}

/// The state an admin asks for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UserState {
    /// The person may onboard and sign in.
    #[default]
    Active,
    /// Invites are revoked and sign-ins refused.
    Inactive,
}

/// Second-factor policy for one user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaSettings {
    /// Whether a TOTP authenticator must be enrolled before the user becomes ACTIVE.
    #[serde(default = "default_true")]
    pub required: bool,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self { required: true }
    }
}

fn default_true() -> bool {
    true
}

/// Invitation policy for one user.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteSettings {
    /// Auto: roster creates and sends a UserInvite. Manual: an admin creates one.
    #[serde(default)]
    pub policy: InvitePolicy,
}

/// Who creates a user's invitation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InvitePolicy {
    /// roster creates and sends a UserInvite for a new user.
    #[default]
    Auto,
    /// An admin creates the UserInvite.
    Manual,
}

/// What roster observed of a user. Derived on every reconcile from facts (spec, the
/// credentials Secret, invites); never the only copy of a fact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// NEW, PENDING, ACTIVE or INACTIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UserPhase>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (the summary), Reconciling and Stalled (kstatus), and details such as Invited,
    /// PasswordSet, MfaEnrolled, EmailVerified and LockedOut.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// What the person still has to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_actions: Vec<RequiredAction>,

    /// The Secret holding this user's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,

    /// The user's current invitation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<InviteSummary>,

    /// The enrolled second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaStatus>,

    /// When the user last became ACTIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Time>,

    /// When the user last became INACTIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Time>,

    /// When the user last signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<Time>,

    /// When a temporary lockout ends (unset when not locked, or locked until an admin
    /// deactivates and reactivates the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Time>,

    /// Consecutive failed sign-ins since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_login_attempts: Option<u32>,
}

/// Lifecycle phase of a user.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserPhase {
    /// Nothing delivered yet.
    New,
    /// Invited; onboarding not complete.
    Pending,
    /// Password set and, when required, TOTP enrolled.
    Active,
    /// Deactivated by an admin, expired (spec.expiresAt), or locked out.
    Inactive,
}

impl std::fmt::Display for UserPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UserPhase::New => "NEW",
            UserPhase::Pending => "PENDING",
            UserPhase::Active => "ACTIVE",
            UserPhase::Inactive => "INACTIVE",
        })
    }
}

/// Something the person has to do before they are ACTIVE.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequiredAction {
    /// Choose a password.
    SetPassword,
    /// Enrol a TOTP authenticator.
    ConfigureTotp,
}

/// The user's current invitation, as the user's status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteSummary {
    /// Name of the UserInvite.
    pub name: String,
    /// When its link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

/// The enrolled second factor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaStatus {
    /// The method, TOTP.
    pub method: String,
    /// When it was enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<Time>,
}
