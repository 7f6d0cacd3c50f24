//! `roster import`: people from a CSV file or a Keycloak realm export, turned into User
//! manifests for Git. Every row is checked by the rules admission applies (the CRD's schema
//! and CEL rules, run locally) and by the directory rules (email and username unique, within
//! the file and, when given, against the Users a cluster already has), so that what reaches
//! Git applies cleanly. Pure: the caller reads the file and the cluster, and writes.

pub mod csv;
pub mod keycloak;
pub mod manifests;

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;

use crate::api::admission::Admission;
use crate::api::{InvitePolicy, User, UserSpec};
use crate::directory::Entry;

/// Longest name a User may have (its CRD rule): its Secrets and invite are named after it.
pub const NAME_MAX: usize = 56;

/// One person read from the file, and where.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Where in the file: `row 12`, `users[3]`.
    pub origin: String,
    /// The User it becomes (its name and namespace set), or why it cannot be one.
    pub user: Result<User, String>,
}

/// One refused row: where, and every problem with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Where in the file.
    pub origin: String,
    /// Each problem: the field, the rule, and what to do.
    pub problems: Vec<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.origin)?;
        }
        Ok(())
    }
}

/// The verdict on a file: the Users that may be written, and the rows refused.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Valid Users, in file order.
    pub accepted: Vec<User>,
    /// Refused rows, in file order.
    pub refused: Vec<Refusal>,
}

/// What the directory rules compare rows with: the Users a cluster already has (when
/// asked), the namespace rows without one will be applied to, and the allowed email domains.
#[derive(Debug, Default)]
pub struct Directory {
    by_email: HashMap<String, String>,
    by_username: HashMap<String, String>,
    /// `namespace/name` → (email, username), lowercased.
    by_key: HashMap<String, (String, String)>,
    /// Where rows without a namespace land: kubectl's current namespace.
    namespace: String,
    allowed_domains: Vec<String>,
}

impl Directory {
    /// A directory of no Users: rows without a namespace land in `namespace`; emails must be
    /// in `allowed_domains` (any, when empty), as `--allowed-email-domains` has it.
    pub fn new(namespace: &str, allowed_domains: &[String]) -> Self {
        Self { namespace: namespace.to_owned(), allowed_domains: allowed_domains.to_vec(), ..Self::default() }
    }

    /// The directory with `users` (listed from the cluster) in it.
    pub fn with(mut self, users: &[User]) -> Self {
        for user in users {
            let entry = Entry::of(user);
            self.by_email.entry(entry.email.clone()).or_insert_with(|| entry.key.clone());
            self.by_username.entry(entry.username.clone()).or_insert_with(|| entry.key.clone());
            self.by_key.insert(entry.key.clone(), (entry.email, entry.username));
        }
        self
    }

    /// `namespace/name` of `user` where it will be applied.
    fn key_of(&self, user: &User) -> String {
        let namespace = user.namespace().unwrap_or_else(|| self.namespace.clone());
        format!("{namespace}/{}", user.name_any())
    }
}

/// Checks every candidate: admission's rules, then the directory rules within the file (a
/// later row that repeats an email, username or name is refused, naming the earlier one) and
/// against `directory` (an email outside the allowed domains; an identifier another User
/// holds; a name an existing User has with another email or username — importing it would
/// change that person's address or login).
pub fn check(candidates: Vec<Candidate>, admission: &Admission, directory: &Directory) -> Verdict {
    let mut verdict = Verdict::default();
    let mut seen_email: HashMap<String, String> = HashMap::new();
    let mut seen_username: HashMap<String, String> = HashMap::new();
    let mut seen_key: HashMap<String, String> = HashMap::new();
    for Candidate { origin, user } in candidates {
        let user = match user {
            Ok(user) => user,
            Err(problem) => {
                verdict.refused.push(Refusal { origin, problems: vec![problem] });
                continue;
            }
        };
        let mut problems: Vec<String> = match serde_json::to_value(&user) {
            Ok(object) => admission.check(&object).into_iter().map(|v| v.to_string()).collect(),
            Err(e) => vec![format!("cannot be written as JSON: {e}")],
        };
        let entry = Entry::of(&user);
        let key = directory.key_of(&user);
        let name = user.name_any();
        if let Some(domain) = crate::directory::domain_refused(&entry.email, &directory.allowed_domains) {
            problems.push(format!(
                "spec.email: the domain {domain} is not among --allowed-email-domains (directory rule)"
            ));
        }
        let mut twice = |seen: &mut HashMap<String, String>, value: &str, field: &str| {
            match seen.get(value) {
                Some(first) => problems.push(format!(
                    "{field} {value:?} is also on {first} (directory rule: unique in the directory, compared case-insensitively)"
                )),
                None => drop(seen.insert(value.to_owned(), origin.clone())),
            }
        };
        twice(&mut seen_email, &entry.email, "spec.email");
        twice(&mut seen_username, &entry.username, "spec.username (metadata.name when unset)");
        if let Some(first) = seen_key.get(&key) {
            problems.push(format!(
                "metadata.name {name:?} is also the name of {first}: give one of them a username (or a metadata.name column)"
            ));
        } else {
            seen_key.insert(key.clone(), origin.clone());
        }
        for (value, holders, field) in [
            (&entry.email, &directory.by_email, "spec.email"),
            (&entry.username, &directory.by_username, "spec.username (metadata.name when unset)"),
        ] {
            if let Some(holder) = holders.get(value).filter(|holder| **holder != key) {
                problems.push(format!(
                    "{field} {value:?} is already held by User {holder} (directory rule: unique in the directory)"
                ));
            }
        }
        if let Some((email, username)) = directory.by_key.get(&key)
            && (*email != entry.email || *username != entry.username)
        {
            problems.push(format!(
                "User {key} already exists as {email} (username {username}): importing would change that person's address or login; rename the row, or change the User on purpose"
            ));
        }
        if problems.is_empty() {
            verdict.accepted.push(user);
        } else {
            verdict.refused.push(Refusal { origin, problems });
        }
    }
    verdict
}

/// Why these attribute names cannot all be a User's, by `admission`'s rules on
/// `spec.attributes`: each name alone, then all of them together (their count). `None` when
/// they can.
pub fn attribute_names_refused(names: &[&str], admission: &Admission) -> Option<String> {
    let refused = |names: &[&str]| {
        let attributes: BTreeMap<&str, &str> = names.iter().map(|name| (*name, "")).collect();
        let probe = serde_json::json!({
            "metadata": {"name": "probe"}, "spec": {"email": "probe@example.com", "attributes": attributes},
        });
        admission.check(&probe).into_iter().find(|v| v.field.starts_with("spec.attributes"))
    };
    let mut rule = None;
    let bad: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let violation = refused(&[*name])?;
            rule.get_or_insert(violation.message);
            Some(format!("{name:?}"))
        })
        .collect();
    match rule {
        Some(rule) => Some(format!(
            "the columns {} would become attributes: {rule}; rename them (or map them to a field)",
            bad.join(", ")
        )),
        None => refused(names).map(|v| {
            format!("{} columns would become attributes: spec.attributes {}", names.len(), v.message)
        }),
    }
}

/// A User's name from what identifies the person: lowercased, every character a name may
/// not hold turned into `-`, trimmed to [`NAME_MAX`]. `None` when nothing usable is left.
pub fn name_from(identifier: &str) -> Option<String> {
    let mut name = String::new();
    for c in identifier.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' { c } else { '-' };
        // Neither "--" runs nor ".." (an empty DNS label) nor "-."/".-".
        match (name.chars().last(), c) {
            (Some('-' | '.'), '-' | '.') => {}
            _ => name.push(c),
        }
    }
    let trim = |s: &str| s.trim_matches(|c: char| c == '-' || c == '.').to_owned();
    let mut name = trim(&name);
    if name.len() > NAME_MAX {
        name = trim(&name[..NAME_MAX]);
    }
    (!name.is_empty()).then_some(name)
}

/// Settings every imported User gets.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// metadata.namespace, when the manifests should carry one.
    pub namespace: Option<String>,
    /// `spec.invite.policy`: Manual imports people without inviting them yet.
    pub invite_policy: InvitePolicy,
}

/// The User from the fields read: named by `name`, else its username, else its email's
/// local part.
pub(crate) fn finish(
    mut spec: serde_json::Map<String, serde_json::Value>,
    attributes: BTreeMap<String, String>,
    name: Option<String>,
    defaults: &Defaults,
) -> Result<User, String> {
    let email = spec.get("email").and_then(|e| e.as_str()).map(str::to_owned);
    let Some(email) = email else { return Err("spec.email: is required (the cell is empty)".into()) };
    if !attributes.is_empty() {
        spec.insert("attributes".into(), serde_json::to_value(attributes).map_err(|e| e.to_string())?);
    }
    spec.insert("invite".into(), serde_json::json!({"policy": defaults.invite_policy}));
    let spec: UserSpec =
        serde_json::from_value(serde_json::Value::Object(spec)).map_err(|e| e.to_string())?;
    let name = match name {
        Some(name) => name,
        None => {
            let from = spec
                .username
                .clone()
                .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
            name_from(&from).ok_or_else(|| {
                format!("metadata.name: cannot be made from {from:?}: add a metadata.name or username column with letters or digits")
            })?
        }
    };
    Ok(user(name, defaults.namespace.as_deref(), spec))
}

/// The User for `spec`, named `name`, in `namespace` when one is given.
pub fn user(name: String, namespace: Option<&str>, spec: crate::api::UserSpec) -> User {
    let mut user = User::new(&name, spec);
    user.metadata.namespace = namespace.map(str::to_owned);
    user
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::api::UserSpec;

    fn spec(email: &str) -> UserSpec {
        serde_json::from_value(serde_json::json!({"email": email})).unwrap()
    }

    fn candidate(origin: &str, name: &str, email: &str) -> Candidate {
        Candidate { origin: origin.into(), user: Ok(user(name.into(), Some("team"), spec(email))) }
    }

    #[test]
    fn names_come_from_identifiers() {
        assert_eq!(name_from("Jane.Doe").as_deref(), Some("jane.doe"));
        assert_eq!(name_from("jane_doe@corp").as_deref(), Some("jane-doe-corp"));
        assert_eq!(name_from("Jürgen").as_deref(), Some("j-rgen"));
        assert_eq!(name_from("--a..b__c--").as_deref(), Some("a.b-c"));
        assert_eq!(name_from("日本"), None);
        let long = name_from(&format!("{}-.x", "a".repeat(55))).unwrap();
        assert_eq!(long, "a".repeat(55));
        assert!(crate::api::admission::is_dns_subdomain(&long));
    }

    #[test]
    fn a_later_row_repeating_an_identifier_is_refused_naming_the_first() {
        let admission = Admission::of(&User::crd()).unwrap();
        let verdict = check(
            vec![
                candidate("row 2", "jane", "jane@example.com"),
                candidate("row 3", "jane2", "JANE@example.com"),
                candidate("row 4", "jane", "other@example.com"),
                Candidate { origin: "row 5".into(), user: Err("spec.email: is required".into()) },
                candidate("row 6", "bob", "bob@example.com"),
            ],
            &admission,
            &Directory::new("team", &[]),
        );
        assert_eq!(verdict.accepted.iter().map(|u| u.name_any()).collect::<Vec<_>>(), ["jane", "bob"]);
        let refused: Vec<_> =
            verdict.refused.iter().map(|r| (r.origin.as_str(), r.problems.join(" | "))).collect();
        assert_eq!(refused.len(), 3, "{refused:#?}");
        assert!(refused[0].1.contains("spec.email \"jane@example.com\" is also on row 2"), "{refused:#?}");
        assert!(refused[1].1.contains("is also the name of row 2"), "{refused:#?}");
        assert!(refused[1].1.contains("spec.username"), "the name is the username too: {refused:#?}");
        assert_eq!(refused[2], ("row 5", "spec.email: is required".into()));
    }

    #[test]
    fn the_clusters_users_hold_their_identifiers_but_the_same_user_may_be_imported_again() {
        let admission = Admission::of(&User::crd()).unwrap();
        let directory = Directory::new("team", &[]).with(&[
            user("jane".into(), Some("team"), spec("jane@example.com")),
            user("ops".into(), Some("other"), spec("ops@example.com")),
        ]);
        let unplaced = |origin: &str, name: &str, email: &str| Candidate {
            origin: origin.into(),
            user: Ok(user(name.into(), None, spec(email))),
        };
        let mut renamed = user("jane".into(), None, spec("jane@example.com"));
        renamed.spec.username = Some("jane.new".into());
        let verdict = check(
            vec![
                candidate("row 2", "jane", "jane@example.com"),
                candidate("row 3", "ops2", "OPS@example.com"),
                candidate("row 4", "ops", "new@example.com"),
                candidate("row 5", "jane", "jane.new@example.com"),
                unplaced("row 6", "jane", "attacker@example.com"),
                Candidate { origin: "row 7".into(), user: Ok(renamed) },
            ],
            &admission,
            &directory,
        );
        assert_eq!(verdict.accepted.iter().map(|u| u.name_any()).collect::<Vec<_>>(), ["jane"]);
        let problems: Vec<_> = verdict.refused.iter().map(|r| r.to_string()).collect();
        assert!(
            problems[0].contains("row 3: spec.email \"ops@example.com\" is already held by User other/ops")
        );
        assert!(problems[1].contains("row 4: spec.username"), "{problems:#?}");
        assert!(problems[1].contains("already held by User other/ops"), "{problems:#?}");
        assert!(problems[2].contains("User team/jane already exists as jane@example.com"), "{problems:#?}");
        assert!(
            problems[3].contains("row 6: User team/jane already exists"),
            "a row without a namespace lands in the current one: {problems:#?}"
        );
        assert!(
            problems[4].contains("row 7: User team/jane already exists"),
            "a changed login: {problems:#?}"
        );
    }

    #[test]
    fn emails_outside_the_allowed_domains_are_refused() {
        let admission = Admission::of(&User::crd()).unwrap();
        let directory = Directory::new("team", &["example.com".to_owned()]);
        let verdict = check(
            vec![candidate("row 2", "a", "a@Sub.Example.com"), candidate("row 3", "b", "b@elsewhere.org")],
            &admission,
            &directory,
        );
        assert_eq!(verdict.accepted.len(), 1);
        assert!(
            verdict.refused[0]
                .to_string()
                .contains("row 3: spec.email: the domain elsewhere.org is not among")
        );
    }

    #[test]
    fn admission_rules_are_named_per_row() {
        let admission = Admission::of(&User::crd()).unwrap();
        let verdict =
            check(vec![candidate("row 9", "jane", "not-an-address")], &admission, &Directory::default());
        let refused = verdict.refused[0].to_string();
        assert!(refused.starts_with("row 9: spec.email: must be an email address"), "{refused}");
        assert!(refused.contains("(rule: self.matches("), "{refused}");
    }
}
