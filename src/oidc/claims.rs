//! What roster says about a person to a client: the claims of the ID token and userinfo,
//! from the User as declared and the scopes granted (pure). `sub` is the User's uid, so it
//! stays the same when the email or username changes.

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value, json};

use crate::api::{Scope, User};
use crate::credentials::record::EMAIL_VERIFIED_FOR;
use crate::facts::text;

/// Whether the person proved (by using an emailed link) the address the User has now.
pub fn email_verified(user: &User, credentials: Option<&Secret>) -> bool {
    credentials
        .and_then(|c| text(c, EMAIL_VERIFIED_FOR))
        .is_some_and(|address| address.eq_ignore_ascii_case(user.spec.email.trim()))
}

/// The person's claims for `scopes`; `email_verified` when they proved the address the User
/// has now.
pub fn claims(user: &User, scopes: &[Scope], email_verified: bool) -> Map<String, Value> {
    let spec = &user.spec;
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.metadata.uid.clone().unwrap_or_default()));
    if scopes.contains(&Scope::Email) {
        claims.insert("email".into(), json!(spec.email));
        claims.insert("email_verified".into(), json!(email_verified));
    }
    if scopes.contains(&Scope::Profile) {
        let username = spec.username.clone().or_else(|| user.metadata.name.clone());
        let name = spec.display_name.clone().or_else(|| {
            let parts: Vec<&str> =
                [spec.given_name.as_deref(), spec.family_name.as_deref()].into_iter().flatten().collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        for (key, value) in [
            ("name", name),
            ("given_name", spec.given_name.clone()),
            ("family_name", spec.family_name.clone()),
            ("preferred_username", username),
            ("locale", spec.locale.clone()),
            ("zoneinfo", spec.timezone.clone()),
        ] {
            if let Some(value) = value {
                claims.insert(key.into(), json!(value));
            }
        }
    }
    if scopes.contains(&Scope::Groups) {
        claims.insert("groups".into(), json!(spec.groups));
    }
    if scopes.contains(&Scope::Phone)
        && let Some(phone) = &spec.phone
    {
        claims.insert("phone_number".into(), json!(phone));
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::UserSpec;

    fn user() -> User {
        let spec: UserSpec = serde_json::from_value(json!({
            "email": "jane@example.com",
            "givenName": "Jane",
            "familyName": "Doe",
            "phone": "+4915112345678",
            "locale": "de",
            "timezone": "Europe/Berlin",
            "groups": ["dev", "ops"],
        }))
        .unwrap();
        let mut user = User::new("jane", spec);
        user.metadata.uid = Some("uid-1".into());
        user
    }

    #[test]
    fn each_scope_adds_its_claims_and_no_more() {
        let only = claims(&user(), &[Scope::OpenId], true);
        assert_eq!(Value::Object(only), json!({"sub": "uid-1"}));
        let all = claims(
            &user(),
            &[Scope::OpenId, Scope::Email, Scope::Profile, Scope::Groups, Scope::Phone],
            false,
        );
        assert_eq!(
            Value::Object(all),
            json!({
                "sub": "uid-1", "email": "jane@example.com", "email_verified": false,
                "name": "Jane Doe", "given_name": "Jane", "family_name": "Doe",
                "preferred_username": "jane", "locale": "de", "zoneinfo": "Europe/Berlin",
                "groups": ["dev", "ops"], "phone_number": "+4915112345678",
            })
        );
    }
}
