//! `OidcClient`: an application whose people sign in through roster's OpenID Connect
//! issuer — where it may send them back to, whether it holds a secret, whom it admits and
//! what its tokens carry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// CEL on one redirect URI: an absolute https URL, or http on a loopback host (a CLI on the
/// person's machine, or the demo), without a fragment (RFC 6749 §3.1.2).
const REDIRECT_URI_RULE: &str = "self.all(u, isURL(u) && !u.contains('#') && !u.matches('^[^:/?#]*://[^/?#]*@') && url(u).getHostname() != '' && (url(u).getScheme() == 'https' || (url(u).getScheme() == 'http' && url(u).getHostname() in ['localhost', '127.0.0.1', '::1'])))";
/// The message of [`REDIRECT_URI_RULE`].
const REDIRECT_URI_MESSAGE: &str = "each must be an absolute https URL (http only on localhost, 127.0.0.1 or [::1]) without user info or a #fragment";
/// CEL on a token lifetime: a Go duration within bounds the field names.
const DURATION_PATTERN: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')";

/// An application that signs people in through roster: redirect URIs, a public (PKCE) or
/// confidential client, and the people it admits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "OidcClient",
    namespaced,
    status = "OidcClientStatus",
    shortname = "oidc",
    category = "roster",
    validation = Rule::new("size(self.metadata.name) <= 58").message("metadata.name must be at most 58 characters: roster names the client's Secret <name>-oidc and labels it with the name"),
    validation = Rule::new("!(has(self.spec.public) && self.spec.public && has(self.spec.secretRef))").message("a public client has no secret: remove secretRef, or set public: false"),
    validation = Rule::new("!has(self.spec.secretRef) || self.spec.secretRef.name != self.metadata.name + '-oidc'").message("secretRef must not name <name>-oidc, the Secret roster generates for this client: copy it to a Secret of another name"),
    doc = "An application whose people sign in through roster's OpenID Connect issuer.",
    printcolumn(
        name = "Client ID",
        type_ = "string",
        json_path = ".status.clientID",
        description = "What the application is configured with as its client ID"
    ),
    printcolumn(
        name = "Public",
        type_ = "boolean",
        json_path = ".spec.public",
        description = "A public client: PKCE, no secret"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether people can sign in through it"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why it is or is not ready"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcClientSpec {
    /// Where roster may send a person back with an authorization code: compared exactly, so
    /// list every URI the application uses (at most 16). https, or http on a loopback host.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new(REDIRECT_URI_RULE).message(REDIRECT_URI_MESSAGE))]
    pub redirect_uris: Vec<String>,

    /// Where roster may send a person after signing out (RP-initiated logout), compared
    /// exactly (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new(REDIRECT_URI_RULE).message(REDIRECT_URI_MESSAGE))]
    pub post_logout_redirect_uris: Vec<String>,

    /// true: a public client (a single-page app or a CLI) that cannot keep a secret: PKCE
    /// is required and there is no client secret. false (default): a confidential client,
    /// authenticated by its secret (and PKCE is still required).
    #[serde(default)]
    pub public: bool,

    /// true: the client may use the device authorization grant (RFC 8628), for CLIs on
    /// machines without a browser: a code shown on the device, typed in at the issuer's
    /// /device page. Off by default: a device code someone else started can be sent to a
    /// person to allow (phishing), so only clients that need it take it.
    #[serde(default)]
    pub device_authorization: bool,

    /// A confidential client's existing Secret in this namespace, with the key
    /// `clientSecret` (at least 32 characters), for applications whose configuration holds
    /// it already. Unset: roster generates the secret into the Secret <name>-oidc, which it
    /// owns (keys clientID and clientSecret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,

    /// Only people in one of these groups may sign in to this client (at most 64). Empty:
    /// everyone the client admits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_groups: Vec<String>,

    /// Namespaces whose Users may sign in to this client (at most 32). Empty: this
    /// client's own namespace. Naming another namespace is honoured only for clients in a
    /// namespace roster trusts with that (`--oidc-trusted-namespaces`): elsewhere the
    /// client reports UserNamespacesNotAllowed, so no tenant can reach another's people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("each must be a namespace name"))]
    pub user_namespaces: Vec<String>,

    /// Scopes the client may ask for; openid is always allowed. Default: openid, email,
    /// profile, groups and offline_access (refresh tokens); phone adds phone_number.
    #[serde(default = "default_scopes")]
    #[schemars(length(min = 1, max = 8), extend("default" = ["openid", "email", "profile", "groups", "offline_access"]))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub scopes: Vec<Scope>,

    /// How ID tokens are signed: RS256 (default; every relying party accepts it) or ES256.
    #[serde(default)]
    pub id_token_signing_alg: SigningAlgorithm,

    /// How long the client's tokens live.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub token_lifetimes: TokenLifetimes,
}

/// A scope an OidcClient may ask for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Scope {
    /// The ID token itself (`sub`, `auth_time`, `amr`).
    #[serde(rename = "openid")]
    OpenId,
    /// `email`, `email_verified`.
    #[serde(rename = "email")]
    Email,
    /// `name`, `given_name`, `family_name`, `preferred_username`, `locale`, `zoneinfo`.
    #[serde(rename = "profile")]
    Profile,
    /// `groups`.
    #[serde(rename = "groups")]
    Groups,
    /// `phone_number`.
    #[serde(rename = "phone")]
    Phone,
    /// A refresh token.
    #[serde(rename = "offline_access")]
    OfflineAccess,
}

impl Scope {
    /// The scope as OAuth spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenId => "openid",
            Self::Email => "email",
            Self::Profile => "profile",
            Self::Groups => "groups",
            Self::Phone => "phone",
            Self::OfflineAccess => "offline_access",
        }
    }
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::OpenId, Scope::Email, Scope::Profile, Scope::Groups, Scope::OfflineAccess]
}

/// The algorithm ID tokens are signed with.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key.
    #[default]
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

/// Token lifetimes of one client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenLifetimes {
    /// How long an access token works, between 1m and 24h. Default 1h.
    #[serde(default = "one_hour")]
    #[schemars(length(max = 32), extend("default" = "1h"))]
    #[x_kube(validation = Rule::new(format!("{DURATION_PATTERN} && duration(self) >= duration('1m') && duration(self) <= duration('24h')")).message("must be a duration such as 1h or 15m, between 1m and 24h"))]
    pub access_token: kube::core::Duration,

    /// How long an ID token is valid, between 1m and 24h. Default 1h.
    #[serde(default = "one_hour")]
    #[schemars(length(max = 32), extend("default" = "1h"))]
    #[x_kube(validation = Rule::new(format!("{DURATION_PATTERN} && duration(self) >= duration('1m') && duration(self) <= duration('24h')")).message("must be a duration such as 1h or 15m, between 1m and 24h"))]
    pub id_token: kube::core::Duration,

    /// How long a refresh token works unused, between 1m and 2160h (90 days); every use
    /// replaces it with a new one. Default 720h (30 days).
    #[serde(default = "thirty_days")]
    #[schemars(length(max = 32), extend("default" = "720h"))]
    #[x_kube(validation = Rule::new(format!("{DURATION_PATTERN} && duration(self) >= duration('1m') && duration(self) <= duration('2160h')")).message("must be a duration such as 720h or 12h, between 1m and 2160h"))]
    pub refresh_token: kube::core::Duration,

    /// How long refresh tokens keep coming after the sign-in, used or not, between 5m and
    /// 8760h (a year); then the application must send the person to sign in again. Unset:
    /// until the sign-in session ends (`--session-lifetime`, `--session-idle-timeout`), which
    /// bounds every refresh token anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("{DURATION_PATTERN} && duration(self) >= duration('5m') && duration(self) <= duration('8760h')")).message("must be a duration such as 12h or 168h, between 5m and 8760h"))]
    pub refresh_token_absolute: Option<kube::core::Duration>,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        Self {
            access_token: one_hour(),
            id_token: one_hour(),
            refresh_token: thirty_days(),
            refresh_token_absolute: None,
        }
    }
}

fn one_hour() -> kube::core::Duration {
    std::time::Duration::from_secs(3600).into()
}

fn thirty_days() -> kube::core::Duration {
    std::time::Duration::from_secs(30 * 24 * 3600).into()
}

/// What roster reports about a client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcClientStatus {
    /// The client ID the application is configured with.
    #[serde(rename = "clientID", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// The issuer URL the application discovers roster at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,

    /// The Secret holding clientID and clientSecret (confidential clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (the summary), Reconciling and Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
