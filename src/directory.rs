//! The directory rules: among the Users one roster instance watches, email and username are
//! unique (compared case-insensitively; the older User keeps them), and emails must be in the
//! allowed domains. Pure: callers pass the Users from the watch cache.

use k8s_openapi::jiff::Timestamp;

use crate::api::User;

/// What the directory rules need to know of one User. Ordered oldest first (creation time,
/// then `namespace/name`): the first of those sharing an identifier holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When it was created: the older of two Users keeps a contested identifier.
    pub created: Option<Timestamp>,
    /// `namespace/name`, to name it in messages and break ties.
    pub key: String,
    /// Lowercased email.
    pub email: String,
    /// Lowercased username (metadata.name when unset).
    pub username: String,
}

impl Entry {
    /// The directory's view of `user`.
    pub fn of(user: &User) -> Self {
        let name = user.metadata.name.clone().unwrap_or_default();
        let namespace = user.metadata.namespace.clone().unwrap_or_default();
        Self {
            key: format!("{namespace}/{name}"),
            created: user.metadata.creation_timestamp.as_ref().map(|t| t.0),
            email: user.spec.email.to_lowercase(),
            username: user.spec.username.as_deref().unwrap_or(&name).to_lowercase(),
        }
    }

    /// The terms the directory index files it under: its email and its username.
    pub fn terms(&self) -> Vec<String> {
        vec![Identifier::Email(&self.email).term(), Identifier::Username(&self.username).term()]
    }

    /// Whether `self` was there before `other`: older creation time, then name order.
    fn precedes(&self, other: &Entry) -> bool {
        match (self.created, other.created) {
            (Some(a), Some(b)) if a != b => a < b,
            _ => self.key < other.key,
        }
    }

    /// Whether the two share an email or a username, so that a change to one may unblock or
    /// block the other.
    pub fn overlaps(&self, other: &Entry) -> bool {
        self.key != other.key && (self.email == other.email || self.username == other.username)
    }
}

/// Which identifier a sign-in names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identifier<'a> {
    /// An email address, any case.
    Email(&'a str),
    /// A username, any case.
    Username(&'a str),
    /// Either, as typed into one field: the email's holder, else the username's (usernames
    /// may contain `@`).
    EmailOrUsername(&'a str),
}

impl<'a> Identifier<'a> {
    /// The identifier of a request that may carry an email, a username or both (the email
    /// wins); `None` when neither holds anything.
    pub fn typed(email: Option<&'a str>, username: Option<&'a str>) -> Option<Self> {
        match (email, username) {
            (Some(email), _) if !email.trim().is_empty() => Some(Identifier::Email(email)),
            (_, Some(username)) if !username.trim().is_empty() => Some(Identifier::Username(username)),
            _ => None,
        }
    }

    /// What a person typed into one "email or username" field; `None` when empty.
    pub fn typed_in(text: &'a str) -> Option<Self> {
        (!text.trim().is_empty()).then_some(Identifier::EmailOrUsername(text))
    }

    /// The directory index's term for this identifier (trimmed, lowercased).
    pub fn term(&self) -> String {
        match self {
            Identifier::Email(v) => format!("email:{}", v.trim().to_lowercase()),
            Identifier::Username(v) => format!("username:{}", v.trim().to_lowercase()),
            Identifier::EmailOrUsername(v) => Identifier::Email(v).term(),
        }
    }
}

/// Remembers each User's last identifiers, so that a change of email or username also
/// reaches the Users that shared the *old* one (a User blocked by it is freed).
#[derive(Debug, Default)]
pub struct Identities(std::collections::HashMap<String, Entry>);

impl Identities {
    /// Records `entry` and returns the identities a change to it touches: the new one and,
    /// when different, the one it replaces.
    pub fn record(&mut self, entry: Entry) -> Vec<Entry> {
        match self.0.insert(entry.key.clone(), entry.clone()) {
            Some(old) if old != entry => vec![entry, old],
            _ => vec![entry],
        }
    }

    /// Forgets the User `key` (it was deleted).
    pub fn forget(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// Why a User may not take its place in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The email's domain is not among `--allowed-email-domains`.
    EmailDomainNotAllowed {
        /// The refused domain.
        domain: String,
    },
    /// An older User has the same email.
    DuplicateEmail {
        /// `namespace/name` of that User.
        holder: String,
    },
    /// An older User has the same username.
    DuplicateUsername {
        /// `namespace/name` of that User.
        holder: String,
    },
}

/// The domain of `email` (lowercased) when `allowed_domains` does not allow it. An empty
/// `allowed_domains` allows every domain; a listed domain also allows its subdomains.
pub fn domain_refused<'a>(email: &'a str, allowed_domains: &[String]) -> Option<&'a str> {
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    let allowed = allowed_domains.is_empty()
        || allowed_domains.iter().any(|a| {
            let a = a.trim().trim_start_matches('@').to_lowercase();
            domain == a || domain.ends_with(&format!(".{a}"))
        });
    (!allowed).then_some(domain)
}

/// The first rule `me` breaks among `others` (which may include `me`), if any. Domains are
/// checked first, then email, then username. An empty `allowed_domains` allows every domain;
/// a listed domain also allows its subdomains.
pub fn conflict<'a>(
    me: &Entry,
    others: impl IntoIterator<Item = &'a Entry>,
    allowed_domains: &[String],
) -> Option<Conflict> {
    if let Some(domain) = domain_refused(&me.email, allowed_domains) {
        return Some(Conflict::EmailDomainNotAllowed { domain: domain.to_owned() });
    }
    let mut email_holder: Option<&Entry> = None;
    let mut username_holder: Option<&Entry> = None;
    for other in others {
        if other.key == me.key || !other.precedes(me) {
            continue;
        }
        if other.email == me.email && email_holder.is_none_or(|h| other.precedes(h)) {
            email_holder = Some(other);
        }
        if other.username == me.username && username_holder.is_none_or(|h| other.precedes(h)) {
            username_holder = Some(other);
        }
    }
    email_holder
        .map(|h| Conflict::DuplicateEmail { holder: h.key.clone() })
        .or_else(|| username_holder.map(|h| Conflict::DuplicateUsername { holder: h.key.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, created: i64, email: &str, username: &str) -> Entry {
        Entry {
            key: key.into(),
            created: Some(Timestamp::from_second(created).unwrap()),
            email: email.to_lowercase(),
            username: username.to_lowercase(),
        }
    }

    #[test]
    fn the_older_user_keeps_the_email_and_the_newer_is_told_who_has_it() {
        let old = entry("a/jane", 10, "jane@example.com", "jane");
        let new = entry("b/jane2", 20, "Jane@Example.com", "jane2");
        let all = [old.clone(), new.clone()];
        assert_eq!(conflict(&old, &all, &[]), None);
        assert_eq!(conflict(&new, &all, &[]), Some(Conflict::DuplicateEmail { holder: "a/jane".into() }));
    }

    #[test]
    fn the_index_names_the_oldest_holder_of_an_identifier() {
        let mut index = crate::index::Index::default();
        for entry in [
            entry("b/jane2", 20, "jane@example.com", "jane2"),
            entry("a/jane", 10, "jane@example.com", "jane"),
            entry("c/joe", 5, "joe@example.com", "joe"),
        ] {
            index.set(&entry.key.clone(), entry.clone(), entry.terms());
        }
        let holder = |identifier: Identifier<'_>| index.first(&identifier.term()).map(|e| e.key);
        assert_eq!(holder(Identifier::Email(" JANE@example.com")), Some("a/jane".into()));
        assert_eq!(holder(Identifier::Username("Jane2")), Some("b/jane2".into()));
        assert_eq!(holder(Identifier::Username("jane@example.com")), None);
        assert_eq!(holder(Identifier::Email("nobody@example.com")), None);
    }

    #[test]
    fn usernames_are_unique_across_namespaces() {
        let old = entry("team-a/jane", 10, "jane@a.example", "jane");
        let new = entry("team-b/jane", 20, "jane@b.example", "JANE");
        let all = [old.clone(), new.clone()];
        assert_eq!(
            conflict(&new, &all, &[]),
            Some(Conflict::DuplicateUsername { holder: "team-a/jane".into() })
        );
        assert_eq!(conflict(&old, &all, &[]), None);
    }

    #[test]
    fn equal_creation_times_fall_back_to_name_order() {
        let a = entry("ns/a", 10, "x@example.com", "a");
        let b = entry("ns/b", 10, "x@example.com", "b");
        let all = [a.clone(), b.clone()];
        assert_eq!(conflict(&a, &all, &[]), None);
        assert_eq!(conflict(&b, &all, &[]), Some(Conflict::DuplicateEmail { holder: "ns/a".into() }));
    }

    #[test]
    fn the_oldest_of_several_holders_is_named() {
        let first = entry("ns/first", 1, "x@example.com", "first");
        let second = entry("ns/second", 2, "x@example.com", "second");
        let third = entry("ns/third", 3, "x@example.com", "third");
        let all = [third.clone(), second.clone(), first.clone()];
        assert_eq!(conflict(&third, &all, &[]), Some(Conflict::DuplicateEmail { holder: "ns/first".into() }));
    }

    #[test]
    fn when_the_holder_goes_the_conflict_goes() {
        let new = entry("b/jane2", 20, "jane@example.com", "jane2");
        assert_eq!(conflict(&new, std::slice::from_ref(&new), &[]), None);
    }

    #[test]
    fn allowed_domains_include_subdomains_and_ignore_case() {
        let allowed = vec!["Example.com".to_owned(), "@corp.example".to_owned()];
        let ok = entry("ns/a", 1, "a@example.com", "a");
        let sub = entry("ns/b", 1, "b@eu.example.com", "b");
        let at = entry("ns/c", 1, "c@corp.example", "c");
        let bad = entry("ns/d", 1, "d@gmail.com", "d");
        let lookalike = entry("ns/e", 1, "e@notexample.com", "e");
        assert_eq!(conflict(&ok, [], &allowed), None);
        assert_eq!(conflict(&sub, [], &allowed), None);
        assert_eq!(conflict(&at, [], &allowed), None);
        assert_eq!(
            conflict(&bad, [], &allowed),
            Some(Conflict::EmailDomainNotAllowed { domain: "gmail.com".into() })
        );
        assert!(conflict(&lookalike, [], &allowed).is_some());
    }

    #[test]
    fn domain_rules_come_before_duplicates() {
        let old = entry("ns/a", 1, "x@gmail.com", "a");
        let new = entry("ns/b", 2, "x@gmail.com", "b");
        assert_eq!(
            conflict(&new, &[old], &["example.com".to_owned()]),
            Some(Conflict::EmailDomainNotAllowed { domain: "gmail.com".into() })
        );
    }

    #[test]
    fn a_renamed_user_still_reaches_those_that_shared_its_old_name() {
        let mut identities = Identities::default();
        let before = entry("ns/a", 1, "a@example.com", "shared");
        assert_eq!(identities.record(before.clone()).len(), 1);
        let after = entry("ns/a", 1, "a@example.com", "renamed");
        assert_eq!(identities.record(after.clone()), vec![after.clone(), before]);
        assert_eq!(identities.record(after.clone()), vec![after]);
    }

    #[test]
    fn overlap_is_what_makes_one_user_reconcile_another() {
        let a = entry("ns/a", 1, "x@example.com", "a");
        assert!(a.overlaps(&entry("ns/b", 2, "X@example.com", "b")));
        assert!(a.overlaps(&entry("ns/c", 2, "c@example.com", "A")));
        assert!(!a.overlaps(&entry("ns/d", 2, "d@example.com", "d")));
        assert!(!a.overlaps(&a));
    }
}
