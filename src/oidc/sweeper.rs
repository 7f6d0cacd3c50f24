//! Removes sessions when they end (and device requests at their expiry) and keeps what one
//! person — or one client's callers — can pile up bounded: a
//! [`Ledger`] kept from the Secret watch's events (no listing, O(log N) per event) knows
//! each session's end, each user's sessions and each session's grants per client; the
//! sweeper deletes a session at its end (its grants go with it), a grant whose code was
//! never redeemed once the code expired, a user's oldest sessions beyond
//! [`SESSIONS_PER_USER`], and a session's grants for one client beyond [`GRANTS_PER_CLIENT`]
//! — unredeemed ones first: any page can send a signed-in browser to the issuer and make a
//! grant each time, and that must not push out the grant an application really uses.
//! Only Secrets whose controller is what roster makes them owned by are filed (a session's
//! User, a grant's session), grouped by that owner's uid, so a look-alike planted with
//! labels alone is neither counted nor deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::device::Device;
use super::grant::Grant;
use super::session::Session;
use super::state;
use crate::controller::names::{DEVICE_TYPE, GRANT_TYPE, SESSION_TYPE};
use crate::leader::Leadership;

/// Sessions one user may hold at once; signing in again removes the oldest.
pub const SESSIONS_PER_USER: usize = 16;
/// Grants one session may hold for one client; a new one removes the oldest.
pub const GRANTS_PER_CLIENT: usize = 8;
/// Device requests one client may have waiting (anyone may start one for a public client);
/// a new one removes the oldest.
pub const DEVICES_PER_CLIENT: usize = 64;

/// `namespace/name`.
type Key = String;

/// What must be deleted: the Secret and the uid it was judged on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doomed {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (a Secret made again under the name is not touched).
    pub uid: Option<String>,
}

#[derive(Clone, Debug)]
struct Entry {
    uid: Option<String>,
    /// Its place in its group: the first goes first beyond the cap.
    rank: Rank,
    /// A session's end; an unredeemed grant's code expiry.
    ends: Option<Timestamp>,
    /// A session's user; a grant's (session, client).
    group: String,
    /// A grant's session (uid).
    session: Option<String>,
}

/// What a session's grant shows on the account page: for which client, last used when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantUse {
    /// The client ID.
    pub client: String,
    /// When its code or a refresh token was last redeemed (else when it was made).
    pub last_used: Option<Timestamp>,
}

/// Unredeemed grants before redeemed ones, then the oldest.
type Rank = (bool, Timestamp, Key);

/// The sessions and grants the watch has shown, indexed for the sweeper.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<Key, Entry>,
    /// Sessions by end.
    ends: BTreeSet<(Timestamp, Key)>,
    /// Sessions by user, grants by (session, client): first to go first.
    groups: HashMap<String, BTreeSet<Rank>>,
    /// Beyond a cap, waiting to be deleted.
    doomed: VecDeque<Key>,
    /// Each session's grants (by session uid), for the account page.
    uses: HashMap<String, HashMap<Key, GrantUse>>,
}

impl Ledger {
    /// Records a Secret the watch applied (only sessions and grants are kept).
    pub fn apply(&mut self, secret: &Secret) {
        let key = crate::index::object_key(secret);
        let controller = secret.owner_references().iter().find(|r| r.controller == Some(true));
        let (entry, cap) = match (secret.type_.as_deref(), controller) {
            (Some(SESSION_TYPE), Some(owner)) if owner.kind == "User" => {
                let Some(session) = Session::of(secret) else { return self.remove(&key) };
                let entry = Entry {
                    uid: secret.metadata.uid.clone(),
                    rank: (true, session.created_at, key.clone()),
                    ends: Some(session.ends()),
                    group: sessions_group(&owner.uid),
                    session: None,
                };
                (entry, SESSIONS_PER_USER)
            }
            (Some(GRANT_TYPE), Some(owner)) if owner.kind == "Secret" => {
                let Some(grant) = Grant::of(secret) else { return self.remove(&key) };
                let created = grant.created_at.unwrap_or(Timestamp::UNIX_EPOCH);
                let entry = Entry {
                    uid: secret.metadata.uid.clone(),
                    rank: (grant.code_redeemed, created, key.clone()),
                    ends: if grant.code_redeemed { None } else { grant.code_expires_at },
                    group: format!("grants:{} {}", owner.uid, grant.client),
                    session: Some(owner.uid.clone()),
                };
                let used =
                    GrantUse { client: grant.client, last_used: grant.last_used_at.or(grant.created_at) };
                self.uses.entry(owner.uid.clone()).or_default().insert(key.clone(), used);
                (entry, GRANTS_PER_CLIENT)
            }
            (Some(DEVICE_TYPE), Some(owner)) if owner.kind == "OidcClient" => {
                let Some(device) = Device::of(secret) else { return self.remove(&key) };
                // Ranked by when the API server made it (not a time the Secret claims), kept
                // past its expiry for a while so that a late poll hears `expired_token`.
                let made = secret.metadata.creation_timestamp.as_ref().map_or(device.created_at, |t| t.0);
                let entry = Entry {
                    uid: secret.metadata.uid.clone(),
                    rank: (false, made, key.clone()),
                    ends: Some(device.expires_at + super::device::DEVICE_LIFETIME),
                    group: devices_group(&secret.namespace().unwrap_or_default(), &owner.uid),
                    session: None,
                };
                (entry, DEVICES_PER_CLIENT)
            }
            (Some(SESSION_TYPE | GRANT_TYPE | DEVICE_TYPE), _) => return self.remove(&key),
            _ => return,
        };
        if self.entries.get(&key).is_some_and(|known| {
            known.uid == entry.uid && known.ends == entry.ends && known.rank == entry.rank
        }) {
            // Already filed (a grant is written at every refresh).
            return;
        }
        self.forget(&key);
        if let Some(ends) = entry.ends {
            self.ends.insert((ends, key.clone()));
        }
        let group = self.groups.entry(entry.group.clone()).or_default();
        group.insert(entry.rank.clone());
        let mut pushed_out = Vec::new();
        while group.len() > cap {
            if let Some((_, _, first)) = group.pop_first() {
                pushed_out.push(first);
            }
        }
        self.entries.insert(key, entry);
        for first in pushed_out {
            // Handed out once: not again at its end.
            if let Some(ends) = self.entries.get(&first).and_then(|e| e.ends) {
                self.ends.remove(&(ends, first.clone()));
            }
            self.doomed.push_back(first);
        }
    }

    /// Forgets a Secret the watch deleted.
    pub fn remove(&mut self, key: &str) {
        if let Some(Entry { session: Some(session), .. }) = self.entries.get(key)
            && let Some(uses) = self.uses.get_mut(session)
        {
            uses.remove(key);
            if uses.is_empty() {
                self.uses.remove(session);
            }
        }
        self.forget(key);
    }

    /// Takes a Secret out of the indexes the sweeper works from (its use stays).
    fn forget(&mut self, key: &str) {
        let Some(entry) = self.entries.remove(key) else { return };
        if let Some(ends) = entry.ends {
            self.ends.remove(&(ends, key.to_owned()));
        }
        if let Some(group) = self.groups.get_mut(&entry.group) {
            group.remove(&entry.rank);
            if group.is_empty() {
                self.groups.remove(&entry.group);
            }
        }
    }

    /// What is due for deletion at `now`: sessions that ended, and what a cap pushed out.
    /// Each is handed out once; the watch's delete event forgets it.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<Doomed> {
        let mut due: Vec<Key> = self.doomed.drain(..).collect();
        while let Some((ends, key)) = self.ends.first().cloned() {
            if ends > now {
                break;
            }
            self.ends.pop_first();
            due.push(key);
        }
        due.sort_unstable();
        due.dedup();
        due.into_iter()
            .filter_map(|key| {
                // Gone already (a retry of something the watch has since deleted): nothing to do.
                let uid = self.entries.get(&key)?.uid.clone();
                let (namespace, name) = key.split_once('/')?;
                Some(Doomed { namespace: namespace.to_owned(), name: name.to_owned(), uid })
            })
            .collect()
    }

    /// When the next session ends.
    pub fn next_end(&self) -> Option<Timestamp> {
        self.ends.first().map(|(ends, _)| *ends)
    }

    /// How many sessions and grants are filed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many device requests the client with `uid` in `namespace` has waiting.
    pub fn devices_waiting(&self, namespace: &str, uid: &str) -> usize {
        self.groups.get(&devices_group(namespace, uid)).map_or(0, BTreeSet::len)
    }

    /// What the grants of the session with `uid` were used for, by client: the latest use
    /// of each (at most a client's [`GRANTS_PER_CLIENT`] grants are looked at).
    pub fn uses_of(&self, uid: &str) -> Vec<GrantUse> {
        let mut latest: BTreeMap<&str, Option<Timestamp>> = BTreeMap::new();
        for used in self.uses.get(uid).into_iter().flat_map(HashMap::values) {
            let seen = latest.entry(&used.client).or_default();
            *seen = (*seen).max(used.last_used);
        }
        latest
            .into_iter()
            .map(|(client, last_used)| GrantUse { client: client.to_owned(), last_used })
            .collect()
    }

    /// The sessions of the User with `uid`, oldest first (at most [`SESSIONS_PER_USER`]).
    pub fn sessions_of(&self, uid: &str) -> Vec<Doomed> {
        let Some(group) = self.groups.get(&sessions_group(uid)) else { return Vec::new() };
        group
            .iter()
            .filter_map(|(_, _, key)| {
                let (namespace, name) = key.split_once('/')?;
                let uid = self.entries.get(key)?.uid.clone();
                Some(Doomed { namespace: namespace.to_owned(), name: name.to_owned(), uid })
            })
            .collect()
    }
}

/// The group of a user's sessions: the User's uid.
fn sessions_group(uid: &str) -> String {
    format!("user:{uid}")
}

/// The group of a client's device requests: its namespace and uid (a look-alike in another
/// namespace naming the uid is a group of its own).
fn devices_group(namespace: &str, uid: &str) -> String {
    format!("devices:{namespace}/{uid}")
}

/// The ledger, kept by the Secret watch and read by the sweeping task.
#[derive(Default)]
pub struct Sweeper {
    ledger: Mutex<Ledger>,
    changed: Notify,
}

impl Sweeper {
    /// How many device requests the client with `uid` in `namespace` has waiting.
    pub fn devices_waiting(&self, namespace: &str, uid: &str) -> usize {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).devices_waiting(namespace, uid)
    }

    /// What the session with `uid` was used for (see [`Ledger::uses_of`]).
    pub fn uses_of(&self, uid: &str) -> Vec<GrantUse> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).uses_of(uid)
    }

    /// The sessions of the User with `uid` (see [`Ledger::sessions_of`]).
    pub fn sessions_of(&self, uid: &str) -> Vec<Doomed> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).sessions_of(uid)
    }

    /// Ends every session of the User with `uid` (their grants go with them); how many.
    pub async fn end_sessions_of(&self, client: &Client, uid: &str) -> Result<usize, state::StateError> {
        let sessions = self.sessions_of(uid);
        for session in &sessions {
            state::delete_named(client, &session.namespace, &session.name, session.uid.clone()).await?;
        }
        Ok(sessions.len())
    }

    /// What the Secret watch calls with each event.
    pub fn follower(self: &Arc<Self>) -> impl FnMut(&watcher::Event<Secret>) + Send + 'static {
        let sweeper = self.clone();
        move |event| {
            let mut ledger = sweeper.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match event {
                watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) => ledger.apply(secret),
                watcher::Event::Delete(secret) => ledger.remove(&crate::index::object_key(secret)),
                watcher::Event::Init | watcher::Event::InitDone => return,
            }
            drop(ledger);
            sweeper.changed.notify_one();
        }
    }

    /// Deletes what is due, then sleeps until the next session ends or the ledger changes,
    /// until `shutdown`. Only while this replica leads: the others keep their ledgers for
    /// look-ups and delete nothing.
    pub async fn run(
        self: Arc<Self>,
        client: Client,
        mut leadership: Leadership,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = leadership.leading() => {}
            }
            let (due, next) = {
                let mut ledger = self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                (ledger.take_due(Timestamp::now()), ledger.next_end())
            };
            for doomed in due {
                // Not leading (any more): put back, as the next term catches up.
                let deleting =
                    state::delete_named(&client, &doomed.namespace, &doomed.name, doomed.uid.clone());
                let Some(deleted) = leadership.while_leading(deleting).await else {
                    self.retry_later(&doomed);
                    continue;
                };
                if let Err(e) = deleted {
                    // The watch still has it; the next session end or change tries again.
                    tracing::warn!(error = %e, secret = %format!("{}/{}", doomed.namespace, doomed.name), "removing an ended session or grant failed");
                    self.retry_later(&doomed);
                }
            }
            let wait = next.map_or(std::time::Duration::from_secs(3600), |at| {
                std::time::Duration::try_from(at.duration_since(Timestamp::now()))
                    .unwrap_or_default()
                    .max(std::time::Duration::from_millis(100))
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Puts back what could not be deleted, a little later (no hot loop while the API
    /// server is away).
    fn retry_later(&self, doomed: &Doomed) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = format!("{}/{}", doomed.namespace, doomed.name);
        if ledger.entries.contains_key(&key) {
            let later = Timestamp::now().checked_add(k8s_openapi::jiff::SignedDuration::from_secs(30));
            ledger.ends.insert((later.unwrap_or(Timestamp::MAX), key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::User;
    use crate::oidc::request::AuthRequest;
    use k8s_openapi::jiff::SignedDuration;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn user() -> User {
        let mut user = User::new(
            "jane",
            serde_json::from_value(serde_json::json!({"email": "jane@example.com"})).unwrap(),
        );
        user.metadata.namespace = Some("team".into());
        user.metadata.uid = Some("u1".into());
        user
    }

    fn session(created: &str) -> Secret {
        let now = at(created);
        let policy = crate::oidc::session::Policy { lifetime: SignedDuration::from_hours(1), idle: None };
        let signed_in = Session::signed_in(&user(), &["pwd"], "s".into(), now, &policy, None);
        let (mut secret, _) = crate::oidc::session::new(&user(), &signed_in).unwrap();
        secret.metadata.uid = Some(format!("uid-{}", secret.name_any()));
        secret
    }

    fn grant(session: &Secret, client: &str, created: &str) -> Secret {
        let request = AuthRequest {
            client_id: client.into(),
            redirect_uri: "https://app.example.com/cb".into(),
            scopes: vec![],
            state: None,
            nonce: None,
            challenge: "c".into(),
            prompt: crate::oidc::request::Prompt::Default,
            max_age: None,
            login_hint: None,
        };
        let signed_in = Session::of(session).unwrap();
        let (mut secret, _) =
            crate::oidc::grant::new(&user(), session, &request, &signed_in, at(created)).unwrap();
        secret.metadata.uid = Some(format!("uid-{}", secret.name_any()));
        secret.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(created)));
        secret
    }

    fn names(due: &[Doomed]) -> Vec<&str> {
        due.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn a_session_is_due_when_it_ends_and_only_then() {
        let mut ledger = Ledger::default();
        let first = session("2026-01-01T00:00:00Z");
        ledger.apply(&first);
        ledger.apply(&first);
        assert_eq!(ledger.next_end(), Some(at("2026-01-01T01:00:00Z")));
        assert!(ledger.take_due(at("2026-01-01T00:59:59Z")).is_empty());
        let due = ledger.take_due(at("2026-01-01T01:00:00Z"));
        assert_eq!(names(&due), [first.name_any().as_str()]);
        assert_eq!(due[0].uid, first.metadata.uid);
        assert!(ledger.take_due(at("2026-01-01T02:00:00Z")).is_empty(), "handed out once");
        let mut shortened = first.clone();
        let data = shortened.data.get_or_insert_default();
        data.insert("expiresAt".into(), k8s_openapi::ByteString(b"2026-01-01T00:30:00Z".to_vec()));
        ledger.apply(&shortened);
        assert_eq!(ledger.next_end(), Some(at("2026-01-01T00:30:00Z")), "an end moved is filed again");
        ledger.remove(&crate::index::object_key(&first));
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_device_request_is_due_at_its_expiry_and_one_clients_are_capped() {
        let mut client = crate::api::OidcClient::new(
            "tv",
            serde_json::from_value(serde_json::json!({"redirectUris": ["https://tv.example.com/cb"]}))
                .unwrap(),
        );
        client.metadata.namespace = Some("team".into());
        client.metadata.uid = Some("c1".into());
        let device = |minute: u32| {
            let (mut secret, _, _) =
                crate::oidc::device::new(&client, &[], at(&format!("2026-01-01T00:{minute:02}:00Z")))
                    .unwrap();
            secret.metadata.uid = Some(format!("uid-{}", secret.name_any()));
            secret
        };
        let mut ledger = Ledger::default();
        let first = device(0);
        ledger.apply(&first);
        assert_eq!(ledger.devices_waiting("team", "c1"), 1);
        assert_eq!(ledger.devices_waiting("elsewhere", "c1"), 0, "grouped by namespace too");
        // Kept ten minutes past its expiry, so that a late poll hears expired_token.
        assert!(ledger.take_due(at("2026-01-01T00:19:59Z")).is_empty());
        assert_eq!(names(&ledger.take_due(at("2026-01-01T00:20:00Z"))), [first.name_any().as_str()]);
        let mut ledger = Ledger::default();
        let many: Vec<Secret> = (0..=DEVICES_PER_CLIENT).map(|i| device(1 + (i as u32 % 5))).collect();
        for secret in &many {
            ledger.apply(secret);
        }
        assert_eq!(ledger.devices_waiting("team", "c1"), DEVICES_PER_CLIENT);
        assert_eq!(ledger.take_due(at("2026-01-01T00:10:30Z")).len(), 1, "one beyond the cap (a race)");
    }

    #[test]
    fn the_oldest_sessions_beyond_the_cap_are_due_at_once() {
        let mut ledger = Ledger::default();
        let sessions: Vec<Secret> =
            (0..=SESSIONS_PER_USER).map(|i| session(&format!("2026-01-01T00:{:02}:00Z", i))).collect();
        for secret in &sessions {
            ledger.apply(secret);
        }
        let due = ledger.take_due(at("2026-01-01T00:30:00Z"));
        assert_eq!(names(&due), [sessions[0].name_any().as_str()]);
    }

    #[test]
    fn a_sessions_oldest_grants_for_one_client_beyond_the_cap_are_due() {
        let mut ledger = Ledger::default();
        let owner = session("2026-01-01T00:00:00Z");
        ledger.apply(&owner);
        let grants: Vec<Secret> = (0..=GRANTS_PER_CLIENT)
            .map(|i| grant(&owner, "team.app", &format!("2026-01-01T00:00:{:02}Z", i)))
            .collect();
        for secret in &grants {
            ledger.apply(secret);
        }
        ledger.apply(&grant(&owner, "team.other", "2026-01-01T00:00:00Z"));
        let session_uid = owner.metadata.uid.clone().unwrap();
        let uses = ledger.uses_of(&session_uid);
        assert_eq!(uses.iter().map(|u| u.client.as_str()).collect::<Vec<_>>(), ["team.app", "team.other"]);
        assert_eq!(uses[0].last_used, Some(at(&format!("2026-01-01T00:00:{GRANTS_PER_CLIENT:02}Z"))));
        let due = ledger.take_due(at("2026-01-01T00:00:30Z"));
        assert_eq!(names(&due), [grants[0].name_any().as_str()], "the other client's grant stays");
        assert_eq!(ledger.len(), 1 + GRANTS_PER_CLIENT + 2, "filed until the watch deletes them");
        for secret in &grants {
            ledger.remove(&crate::index::object_key(secret));
        }
        assert_eq!(ledger.uses_of(&session_uid).len(), 1, "a client's uses go with its grants");
    }

    #[test]
    fn an_unredeemed_grant_goes_when_its_code_expires_and_before_a_redeemed_one() {
        let mut ledger = Ledger::default();
        let owner = session("2026-01-01T00:00:00Z");
        let mut used = grant(&owner, "team.app", "2026-01-01T00:00:00Z");
        used.data
            .get_or_insert_default()
            .insert("codeRedeemedAt".into(), k8s_openapi::ByteString(b"2026-01-01T00:00:01Z".to_vec()));
        ledger.apply(&used);
        let unused: Vec<Secret> = (1..=GRANTS_PER_CLIENT)
            .map(|i| grant(&owner, "team.app", &format!("2026-01-01T00:00:{:02}Z", i)))
            .collect();
        for secret in &unused {
            ledger.apply(secret);
        }
        let due = ledger.take_due(at("2026-01-01T00:00:30Z"));
        assert_eq!(names(&due), [unused[0].name_any().as_str()], "the redeemed grant stays though older");
        let due = ledger.take_due(at("2026-01-01T00:01:08Z"));
        assert_eq!(due.len(), GRANTS_PER_CLIENT - 1, "the other unredeemed ones at their codes' expiry");
        assert!(!names(&due).contains(&used.name_any().as_str()));
    }

    #[test]
    fn look_alikes_without_roster_owner_are_not_filed() {
        let mut ledger = Ledger::default();
        let mut planted = session("2026-01-01T00:00:00Z");
        planted.metadata.owner_references = None;
        ledger.apply(&planted);
        assert!(ledger.is_empty());
    }

    #[test]
    fn other_secrets_are_not_filed() {
        let mut ledger = Ledger::default();
        ledger.apply(&Secret::default());
        assert!(ledger.is_empty());
    }
}
