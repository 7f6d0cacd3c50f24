//! The portal's sign-in door (`POST /api/v1/login`): what it takes and what it answers. The
//! decision is [`crate::signin`]'s, shared with the OpenID Connect sign-in page.

use std::sync::Arc;

use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::Portal;
use crate::api::User;
use crate::directory::Identifier;
use crate::facts;
use crate::signin::{self, Outcome};

/// What a sign-in sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// The username, or …
    #[serde(default)]
    pub username: Option<String>,
    /// … the email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The password.
    pub password: String,
    /// The current TOTP code, when the user has a second factor.
    #[serde(default)]
    pub code: Option<String>,
}

/// What a signed-in person may learn of their account.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The User's namespace.
    pub namespace: String,
    /// The User's name.
    pub name: String,
    /// The login name.
    pub username: String,
    /// The email address.
    pub email: String,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Language of emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Free-form attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Profile {
    /// The profile of `user` as declared.
    pub fn of(user: &User) -> Self {
        let spec = user.spec.clone();
        Self {
            namespace: user.namespace().unwrap_or_default(),
            name: user.name_any(),
            username: spec.username.unwrap_or_else(|| user.name_any()),
            email: spec.email,
            given_name: spec.given_name,
            family_name: spec.family_name,
            display_name: spec.display_name,
            locale: spec.locale,
            timezone: spec.timezone,
            groups: spec.groups,
            attributes: spec.attributes,
        }
    }
}

/// How a sign-in through the portal ended.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Success(Box<Profile>),
    /// Wrong credentials, no such user, or an account that may not sign in.
    Denied,
    /// Right credentials, for an account that is deactivated, locked or refused.
    Inactive,
    /// Every password check is busy: try again shortly.
    Busy,
}

/// Signs a person in from `address` with the shared decision; the profile is the answer.
pub async fn login(
    portal: &Arc<Portal>,
    request: &LoginRequest,
    address: std::net::IpAddr,
) -> Result<LoginOutcome, facts::WriteError> {
    let identifier = Identifier::typed(request.email.as_deref(), request.username.as_deref());
    let code = request.code.as_deref().unwrap_or_default();
    Ok(match signin::sign_in(&portal.signin, identifier, &request.password, code, Some(address)).await? {
        Outcome::Success { user, .. } => LoginOutcome::Success(Box::new(Profile::of(&user))),
        Outcome::Denied => LoginOutcome::Denied,
        Outcome::Inactive => LoginOutcome::Inactive,
        Outcome::Busy => LoginOutcome::Busy,
    })
}
