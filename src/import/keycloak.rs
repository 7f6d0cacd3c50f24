//! People from a Keycloak realm export (`kc.sh export`, or the admin console's partial
//! export): its `users` array. Credentials, required actions and TOTP devices are never read
//! — roster invites the people, who choose a password and enrol an authenticator themselves.
//! Service-account users (a client's, not a person's) and the attributes LDAP federation keeps
//! (`LDAP_ENTRY_DN`, `LDAP_ID`, …) are left out.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Candidate, Defaults, finish};

/// The part of a realm export roster reads.
#[derive(Deserialize)]
struct Realm {
    #[serde(default)]
    users: Option<Vec<serde_json::Value>>,
}

/// The part of a Keycloak user roster reads; everything else (credentials among it) is
/// skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakUser {
    username: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    enabled: Option<bool>,
    #[serde(default)]
    attributes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    groups: Vec<String>,
    service_account_client_id: Option<String>,
}

/// Why the export cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Not JSON, or not a realm.
    #[error("not a Keycloak realm export: {0}")]
    NotARealm(String),
}

/// One candidate per person in the export's `users`, and how many service accounts were
/// left out.
pub fn read(bytes: &[u8], defaults: &Defaults) -> Result<(Vec<Candidate>, usize), Unreadable> {
    let realm: Realm = serde_json::from_slice(bytes).map_err(|e| Unreadable::NotARealm(e.to_string()))?;
    let users = realm.users.ok_or_else(|| {
        Unreadable::NotARealm("it has no \"users\" array (export the realm with its users)".into())
    })?;
    let mut candidates = Vec::new();
    let mut service_accounts = 0;
    for (i, value) in users.into_iter().enumerate() {
        let origin = format!("users[{i}]");
        let person = match serde_json::from_value::<KeycloakUser>(value) {
            Ok(person) => person,
            Err(e) => {
                candidates.push(Candidate { origin, user: Err(format!("is not a Keycloak user: {e}")) });
                continue;
            }
        };
        if person.service_account_client_id.is_some() {
            service_accounts += 1;
            continue;
        }
        let origin = match &person.username {
            Some(username) => format!("{origin} ({username})"),
            None => origin,
        };
        candidates.push(Candidate { origin, user: user(person, defaults) });
    }
    Ok((candidates, service_accounts))
}

/// Attributes Keycloak keeps for itself (LDAP federation's bookkeeping): not the person's,
/// and not carried over.
const INTERNAL: &[&str] = &["LDAP_ENTRY_DN", "LDAP_ID", "createTimestamp", "modifyTimestamp"];

/// Keycloak attributes roster has a field for; the rest stay attributes.
fn field_of(attribute: &str) -> Option<&'static str> {
    match attribute {
        "phoneNumber" | "phone" | "mobile" => Some("phone"),
        "locale" => Some("locale"),
        "zoneinfo" | "timezone" => Some("timezone"),
        "displayName" => Some("displayName"),
        _ => None,
    }
}

fn user(person: KeycloakUser, defaults: &Defaults) -> Result<crate::api::User, String> {
    let mut spec = serde_json::Map::new();
    let mut put = |field: &str, value: Option<String>| {
        if let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
            spec.insert(field.to_owned(), value.into());
        }
    };
    put("email", person.email);
    put("username", person.username);
    put("givenName", person.first_name);
    put("familyName", person.last_name);
    let mut attributes = BTreeMap::new();
    for (key, values) in person.attributes {
        if INTERNAL.contains(&key.as_str()) {
            continue;
        }
        let value = values.join(";");
        match field_of(&key) {
            Some(field) => put(field, Some(value)),
            None => drop(attributes.insert(key, value)),
        }
    }
    if person.enabled == Some(false) {
        spec.insert("state".into(), "Inactive".into());
    }
    // Keycloak's group paths ("/engineering/sre") without the leading slash.
    let mut groups: Vec<String> = Vec::new();
    for group in person.groups.iter().map(|g| g.trim_start_matches('/')).filter(|g| !g.is_empty()) {
        if !groups.iter().any(|g| g == group) {
            groups.push(group.to_owned());
        }
    }
    if !groups.is_empty() {
        spec.insert("groups".into(), groups.into());
    }
    finish(spec, attributes, None, defaults)
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::api::UserState;

    const EXPORT: &str = r#"{
      "realm": "corp",
      "users": [
        {"username": "jane", "email": "Jane@Example.com", "firstName": "Jane", "lastName": "Doe",
         "enabled": true, "emailVerified": true,
         "attributes": {"phoneNumber": ["+15551234567"], "locale": ["de"], "department": ["SRE", "Ops"],
                        "LDAP_ENTRY_DN": ["uid=jane,ou=people,dc=example,dc=com"], "LDAP_ID": ["1234"]},
         "groups": ["/engineering/sre", "/admins", "/admins"],
         "credentials": [{"type": "password", "secretData": "{\"value\":\"hash-marker\"}", "credentialData": "{}"},
                         {"type": "otp", "secretData": "{\"value\":\"totp-marker\"}"}],
         "requiredActions": ["CONFIGURE_TOTP"]},
        {"username": "service-account-argo", "serviceAccountClientId": "argo", "enabled": true},
        {"username": "bob", "enabled": false},
        {"username": "carol", "email": "carol@example.com", "groups": "not-a-list"}
      ]
    }"#;

    #[test]
    fn people_are_read_without_their_credentials() {
        let (candidates, service_accounts) = read(EXPORT.as_bytes(), &Defaults::default()).unwrap();
        assert_eq!(service_accounts, 1);
        assert_eq!(candidates.len(), 3);
        assert_eq!(candidates[0].origin, "users[0] (jane)");
        let jane = candidates[0].user.as_ref().unwrap();
        assert_eq!(jane.name_any(), "jane");
        assert_eq!(jane.spec.email, "Jane@Example.com");
        assert_eq!(jane.spec.phone.as_deref(), Some("+15551234567"));
        assert_eq!(jane.spec.locale.as_deref(), Some("de"));
        assert_eq!(jane.spec.groups, ["engineering/sre", "admins"]);
        assert_eq!(jane.spec.attributes.get("department").map(String::as_str), Some("SRE;Ops"));
        assert_eq!(
            jane.spec.attributes.len(),
            1,
            "LDAP bookkeeping is left behind: {:?}",
            jane.spec.attributes
        );
        let written = serde_json::to_string(jane).unwrap();
        assert!(!written.contains("marker") && !written.contains("credential"), "{written}");
        assert_eq!(candidates[1].origin, "users[2] (bob)");
        assert!(candidates[1].user.as_ref().unwrap_err().contains("spec.email: is required"));
        assert!(candidates[2].user.as_ref().unwrap_err().contains("is not a Keycloak user"));
    }

    #[test]
    fn a_disabled_user_is_imported_inactive() {
        let export = r#"{"users": [{"username": "bob", "email": "bob@example.com", "enabled": false}]}"#;
        let (candidates, _) = read(export.as_bytes(), &Defaults::default()).unwrap();
        assert_eq!(candidates[0].user.as_ref().unwrap().spec.state, UserState::Inactive);
    }

    #[test]
    fn other_json_is_not_a_realm() {
        assert!(read(b"[1, 2]", &Defaults::default()).is_err());
        assert!(
            read(b"{\"realm\": \"corp\"}", &Defaults::default())
                .unwrap_err()
                .to_string()
                .contains("no \"users\"")
        );
    }
}
