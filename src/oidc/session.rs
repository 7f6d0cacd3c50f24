//! The sign-in session: once a person signed in on the issuer's page, their browser holds a
//! cookie naming a session Secret (`<user>-session-<random>`, type roster.dev/oidc-session,
//! owned by the User), so the next client they open signs them in without asking again.
//! The Secret holds when and how they signed in, a fingerprint of their credentials and the
//! SHA-256 of the cookie's token; the grants made in the session are owned by it, so ending
//! the session (sign-out, expiry, deleting the User) ends them too. A session ends at its
//! lifetime whatever happens, and sooner when it goes unused for the idle timeout
//! ([`Policy`]): each use — a client signed in with it, a refresh token of one of its
//! grants, the account page — moves `idleUntil` on, written at most once a minute.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::Issuer;
use super::request::Prompt;
use super::state::{self, Kind, StateError};
use crate::api::User;
use crate::controller::controlled_by;
use crate::controller::names::{SESSION_TYPE, USER_LABEL};
use crate::credentials::{hash_token, hashes_match};
use crate::facts::{Changes, text};

/// The cookie that carries the session's token over https: `__Host-` makes browsers refuse
/// one set by a sibling domain or for a narrower path (a planted session), and requires
/// `Secure` and `Path=/`.
pub const COOKIE: &str = "__Host-roster_session";
/// Its name over plain http (a demo on localhost), where `__Host-` cookies are refused.
pub const PLAIN_COOKIE: &str = "roster_session";

const USER_UID: &str = "userUID";
const AUTH_TIME: &str = "authTime";
const AMR: &str = "amr";
const STAMP: &str = "credentialsStamp";
const TOKEN_HASH: &str = "tokenHash";
const CREATED_AT: &str = "createdAt";
const EXPIRES_AT: &str = "expiresAt";
const ADDRESS: &str = "address";
const LAST_USED_AT: &str = "lastUsedAt";
const IDLE_UNTIL: &str = "idleUntil";

/// Longest time between two writes of a session's last use.
const TOUCH_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// How long sign-in sessions last (`--session-lifetime`, `--session-idle-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// From the sign-in, whatever happens.
    pub lifetime: SignedDuration,
    /// Without use; `None`: only the lifetime counts.
    pub idle: Option<SignedDuration>,
}

impl Policy {
    /// How long a use may go unwritten: a tenth of the idle timeout, at most a minute.
    fn touch_every(&self) -> SignedDuration {
        self.idle.map_or(TOUCH_EVERY, |idle| (idle / 10).min(TOUCH_EVERY))
    }
}

/// A session as its Secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The uid of the User who signed in.
    pub user_uid: String,
    /// When they proved who they are.
    pub auth_time: Timestamp,
    /// How (`pwd`, `otp`).
    pub amr: Vec<String>,
    /// Their credentials' fingerprint then ([`super::grant::stamp`]).
    pub stamp: String,
    /// SHA-256 of the cookie's token.
    pub token_hash: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it ends, whatever happens.
    pub expires_at: Timestamp,
    /// The client address it was started from.
    pub address: Option<String>,
    /// When it was last used (written at most once a minute).
    pub last_used_at: Option<Timestamp>,
    /// When it ends unless used again (the idle timeout).
    pub idle_until: Option<Timestamp>,
}

impl Session {
    /// Reads a session Secret; `None` when it is not one.
    pub fn of(secret: &Secret) -> Option<Self> {
        if secret.type_.as_deref() != Some(SESSION_TYPE) {
            return None;
        }
        let get = |key| text(secret, key).map(str::to_owned);
        let time = |key| text(secret, key).and_then(|v| v.parse::<Timestamp>().ok());
        Some(Self {
            user_uid: get(USER_UID)?,
            auth_time: time(AUTH_TIME)?,
            amr: get(AMR).map(|v| v.split(' ').map(str::to_owned).collect()).unwrap_or_default(),
            stamp: get(STAMP)?,
            token_hash: get(TOKEN_HASH)?,
            created_at: time(CREATED_AT)?,
            expires_at: time(EXPIRES_AT)?,
            address: get(ADDRESS),
            last_used_at: time(LAST_USED_AT),
            idle_until: time(IDLE_UNTIL),
        })
    }

    /// When it ends: its lifetime, or sooner its idle timeout.
    pub fn ends(&self) -> Timestamp {
        self.idle_until.map_or(self.expires_at, |idle| idle.min(self.expires_at))
    }

    /// When it was last used, as far as written.
    pub fn last_used(&self) -> Timestamp {
        self.last_used_at.unwrap_or(self.created_at)
    }

    /// What a use at `now` writes: the last use and the new idle deadline, unless the last
    /// one written is recent (`None`).
    pub fn touched(&self, policy: &Policy, now: Timestamp) -> Option<Changes> {
        let written = self.last_used().checked_add(policy.touch_every()).unwrap_or(Timestamp::MAX);
        if now < written && self.idle_until.is_some() == policy.idle.is_some() {
            return None;
        }
        let idle_until = policy.idle.map(|idle| now.checked_add(idle).unwrap_or(Timestamp::MAX));
        Some(Changes::from([
            (LAST_USED_AT, Some(now.to_string())),
            (IDLE_UNTIL, idle_until.map(|at| at.to_string())),
        ]))
    }

    /// A person who just signed in from `address`: the session to record, before it has a
    /// token.
    pub fn signed_in(
        user: &User,
        amr: &[&str],
        stamp: String,
        now: Timestamp,
        policy: &Policy,
        address: Option<String>,
    ) -> Self {
        Self {
            user_uid: user.metadata.uid.clone().unwrap_or_default(),
            auth_time: now,
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            stamp,
            token_hash: String::new(),
            created_at: now,
            expires_at: now.checked_add(policy.lifetime).unwrap_or(Timestamp::MAX),
            address,
            last_used_at: None,
            idle_until: policy.idle.map(|idle| now.checked_add(idle).unwrap_or(Timestamp::MAX)),
        }
    }
}

/// What an authorization request does about the browser's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Sign the client in with it: no form.
    Reuse,
    /// Show the sign-in form.
    SignIn,
    /// `prompt=none` and nothing to reuse: `login_required` to the client.
    LoginRequired,
}

/// Decides, for a live session (or none), `prompt` and `max_age` (seconds).
pub fn next(live: Option<&Session>, prompt: Prompt, max_age: Option<u64>, now: Timestamp) -> Next {
    let fresh = live.is_some_and(|session| {
        max_age.is_none_or(|seconds| {
            let limit = SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
            session.auth_time.checked_add(limit).ok().is_none_or(|until| now <= until)
        })
    });
    match (prompt, fresh) {
        (Prompt::Login, _) => Next::SignIn,
        (_, true) => Next::Reuse,
        (Prompt::None, false) => Next::LoginRequired,
        (Prompt::Default, false) => Next::SignIn,
    }
}

/// The Secret that records `session` for `user`, and the cookie's token.
pub fn new(user: &User, session: &Session) -> Result<(Secret, String), StateError> {
    let namespace = user.namespace().unwrap_or_default();
    let name = Kind::Session.new_name(&user.name_any())?;
    let token = state::new_token(&state::locator(&namespace, &name)).map_err(StateError::Random)?;
    let mut data = BTreeMap::from([
        (USER_UID, session.user_uid.clone()),
        (AUTH_TIME, session.auth_time.to_string()),
        (AMR, session.amr.join(" ")),
        (STAMP, session.stamp.clone()),
        (TOKEN_HASH, hash_token(&token)),
        (CREATED_AT, session.created_at.to_string()),
        (EXPIRES_AT, session.expires_at.to_string()),
    ]);
    if let Some(address) = &session.address {
        data.insert(ADDRESS, address.clone());
    }
    if let Some(idle_until) = session.idle_until {
        data.insert(IDLE_UNTIL, idle_until.to_string());
    }
    let owner = OwnerReference {
        api_version: User::api_version(&()).into_owned(),
        kind: User::kind(&()).into_owned(),
        name: user.name_any(),
        uid: user.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    let secret = state::secret(name, namespace, SESSION_TYPE, &[(USER_LABEL, user.name_any())], owner, data);
    Ok((secret, token))
}

/// The session cookie's name for an issuer served over https or not.
pub fn cookie_name(https: bool) -> &'static str {
    if https { COOKIE } else { PLAIN_COOKIE }
}

/// The `Set-Cookie` value that hands the session's token to the browser until the session
/// ends: `HttpOnly`, `SameSite=Lax` (it must come along when a client sends the person
/// here), and over https `Secure` with the `__Host-` name.
pub fn cookie(token: &str, https: bool, expires: Timestamp, now: Timestamp) -> String {
    let max_age = expires.duration_since(now).as_secs().max(0);
    let secure = if https { "; Secure" } else { "" };
    let name = cookie_name(https);
    format!("{name}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// The `Set-Cookie` value that removes the cookie.
pub fn cleared(https: bool) -> String {
    cookie("", https, Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
}

/// Adds to `response` the `Set-Cookie` that removes the session cookie: signed out here.
pub fn clear_cookie(response: &mut axum::response::Response, https: bool) {
    if let Ok(value) = axum::http::HeaderValue::from_str(&cleared(https)) {
        response.headers_mut().append(axum::http::header::SET_COOKIE, value);
    }
}

/// A session found live, with its Secret and its User.
pub struct Live {
    /// The session's Secret.
    pub secret: Arc<Secret>,
    /// What it says.
    pub session: Session,
    /// Who signed in.
    pub user: Arc<User>,
}

/// The browser's session, if its cookie names a live one (from this replica's cache only:
/// a cookie costs the API server nothing; a session made a moment ago on another replica
/// may show the form once more).
pub fn current(issuer: &Issuer, headers: &HeaderMap, now: Timestamp) -> Option<Live> {
    let token = crate::portal::guard::cookie(headers, cookie_name(issuer.https()))?;
    let (namespace, name, hash) = state::token_target(&token, Kind::Session)?;
    let secret = issuer.portal.signin.caches.secrets.get(&ObjectRef::new(&name).within(&namespace))?;
    let live = live(issuer, secret, now)?;
    hashes_match(&hash, &live.session.token_hash).then_some(live)
}

/// [`current`], if its person may still use it; a session they may no longer use
/// (deactivated, locked, credentials changed) is ended here.
pub async fn usable(issuer: &Issuer, headers: &HeaderMap, now: Timestamp) -> Option<Live> {
    let live = current(issuer, headers, now)?;
    let session = &live.session;
    match super::standing::of_person(
        &issuer.portal.signin,
        &live.user,
        &session.user_uid,
        &session.stamp,
        now,
    ) {
        Ok(()) => Some(live),
        Err(denied) => {
            end_logged(issuer, &live.secret, denied.reason).await;
            None
        }
    }
}

/// The session a grant was made in, if it is live, as the API server has it now (a grant
/// is used moments after it was made, maybe by another replica, and sign-out must count at
/// once). Whether its person may still sign in is for the caller to ask, with the client.
pub async fn of_grant(issuer: &Issuer, grant: &Secret, now: Timestamp) -> Result<Option<Live>, StateError> {
    let Some(owner) =
        grant.owner_references().iter().find(|r| r.controller == Some(true) && r.kind == "Secret")
    else {
        return Ok(None);
    };
    let namespace = grant.namespace().unwrap_or_default();
    let Some(secret) = state::read(&issuer.portal.signin.client, &namespace, &owner.name).await? else {
        return Ok(None);
    };
    if secret.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(None);
    }
    Ok(live(issuer, Arc::new(secret), now))
}

/// The session in `secret`, if it is one, not being deleted, unexpired and owned by its User.
pub(crate) fn live(issuer: &Issuer, secret: Arc<Secret>, now: Timestamp) -> Option<Live> {
    let signin = &issuer.portal.signin;
    let namespace = secret.namespace()?;
    let session = Session::of(&secret)?;
    if session.ends() <= now || secret.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let user_name = secret.labels().get(USER_LABEL)?;
    let user = signin.caches.users.get(&ObjectRef::new(user_name).within(&namespace))?;
    controlled_by(secret.as_ref(), user.as_ref()).then_some(Live { secret, session, user })
}

/// Records a use of the live session (see [`Session::touched`]): logged, not fatal — a
/// session whose use could not be written ends at its idle deadline at worst.
pub async fn touch(issuer: &Issuer, live: &Live, now: Timestamp) {
    if live.session.touched(&issuer.sessions, now).is_none() {
        return;
    }
    let policy = issuer.sessions;
    let written = crate::facts::update(&issuer.portal.signin.client, &live.secret, |current| {
        ((), Session::of(current).and_then(|session| session.touched(&policy, now)).unwrap_or_default())
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, session = %live.secret.name_any(), "recording a session's use failed");
    }
}

/// Carries the session over a change of its person's credentials made in it (a password
/// changed, an authenticator replaced on the account page): it records `stamp`, the new
/// fingerprint, if it still has `old`. Its grants keep the old one, so applications sign
/// in again — through this session, without asking.
pub async fn restamp(issuer: &Issuer, secret: &Secret, old: &str, stamp: &str) -> Result<(), StateError> {
    let written = crate::facts::update(&issuer.portal.signin.client, secret, |current| {
        let changes = match Session::of(current) {
            Some(session) if session.stamp == old => Changes::from([(STAMP, Some(stamp.to_owned()))]),
            _ => Changes::new(),
        };
        ((), changes)
    })
    .await
    .map_err(|e| StateError::Write(Box::new(e)))?;
    if let (_, Some(version)) = written {
        crate::facts::await_cached(&issuer.portal.signin.caches.secrets, secret, &version).await;
    }
    Ok(())
}

/// Ends a session (its grants go with it) and returns once this replica's cache no longer
/// shows it, so the person's next request here finds no session.
pub async fn end(issuer: &Issuer, secret: &Secret) -> Result<(), StateError> {
    state::delete(&issuer.portal.signin.client, secret).await?;
    crate::facts::await_uncached(&issuer.portal.signin.caches.secrets, secret).await;
    Ok(())
}

/// [`end`], logged, not fatal: a session ends at its lifetime anyway.
pub async fn end_logged(issuer: &Issuer, secret: &Secret, why: &str) {
    match end(issuer, secret).await {
        Ok(()) => tracing::info!(session = %secret.name_any(), reason = why, "a sign-in session ended"),
        Err(e) => tracing::warn!(error = %e, session = %secret.name_any(), "ending a sign-in session failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn session() -> Session {
        Session {
            user_uid: "u1".into(),
            auth_time: at("2026-01-01T00:00:00Z"),
            amr: vec!["pwd".into(), "otp".into()],
            stamp: "s".into(),
            token_hash: "h".into(),
            created_at: at("2026-01-01T00:00:00Z"),
            expires_at: at("2026-01-02T00:00:00Z"),
            address: Some("203.0.113.9".into()),
            last_used_at: None,
            idle_until: Some(at("2026-01-01T08:00:00Z")),
        }
    }

    #[test]
    fn a_session_ends_at_its_idle_deadline_unless_used_and_never_after_its_lifetime() {
        let policy =
            Policy { lifetime: SignedDuration::from_hours(24), idle: Some(SignedDuration::from_hours(8)) };
        let fresh = session();
        assert_eq!(fresh.ends(), at("2026-01-01T08:00:00Z"));
        assert_eq!(fresh.touched(&policy, at("2026-01-01T00:00:59Z")), None, "used a moment ago");
        let changes = fresh.touched(&policy, at("2026-01-01T07:00:00Z")).unwrap();
        assert_eq!(changes.get(IDLE_UNTIL), Some(&Some("2026-01-01T15:00:00Z".to_owned())));
        assert_eq!(changes.get(LAST_USED_AT), Some(&Some("2026-01-01T07:00:00Z".to_owned())));
        let late = Session { idle_until: Some(at("2026-01-03T00:00:00Z")), ..session() };
        assert_eq!(late.ends(), late.expires_at, "the lifetime bounds the idle deadline");
        let short = Policy { idle: Some(SignedDuration::from_secs(20)), ..policy };
        assert!(fresh.touched(&short, at("2026-01-01T00:00:02Z")).is_some(), "a tenth of a short timeout");
        let none = Policy { idle: None, ..policy };
        let changes = fresh.touched(&none, at("2026-01-01T00:00:01Z")).unwrap();
        assert_eq!(changes.get(IDLE_UNTIL), Some(&None), "a timeout switched off is removed at once");
    }

    #[test]
    fn a_live_session_signs_in_unless_the_client_asks_for_a_fresh_sign_in() {
        let now = at("2026-01-01T00:10:00Z");
        let live = session();
        assert_eq!(next(Some(&live), Prompt::Default, None, now), Next::Reuse);
        assert_eq!(next(Some(&live), Prompt::None, None, now), Next::Reuse);
        assert_eq!(next(Some(&live), Prompt::Login, None, now), Next::SignIn);
        assert_eq!(next(Some(&live), Prompt::Default, Some(600), now), Next::Reuse, "exactly max_age");
        assert_eq!(next(Some(&live), Prompt::Default, Some(599), now), Next::SignIn, "older than max_age");
        assert_eq!(next(Some(&live), Prompt::None, Some(0), now), Next::LoginRequired);
        assert_eq!(next(Some(&live), Prompt::Default, Some(u64::MAX), now), Next::Reuse);
        assert_eq!(next(None, Prompt::Default, None, now), Next::SignIn);
        assert_eq!(next(None, Prompt::None, None, now), Next::LoginRequired);
        assert_eq!(next(None, Prompt::Login, None, now), Next::SignIn);
    }

    #[test]
    fn the_secret_holds_the_session_and_only_a_hash_of_its_token() {
        let mut user = User::new(
            "jane",
            serde_json::from_value(serde_json::json!({"email": "jane@example.com"})).unwrap(),
        );
        user.metadata.namespace = Some("team".into());
        user.metadata.uid = Some("u1".into());
        let (secret, token) = new(&user, &session()).unwrap();
        let read = Session::of(&secret).unwrap();
        assert_eq!(read.token_hash, hash_token(&token));
        assert_eq!(Session { token_hash: "h".into(), ..read }, session());
        let (namespace, name, hash) = state::token_target(&token, Kind::Session).unwrap();
        assert_eq!((namespace.as_str(), name.as_str()), ("team", secret.name_any().as_str()));
        assert_eq!(hash, hash_token(&token));
        assert!(controlled_by(&secret, &user));
        let stored = serde_json::to_string(&secret).unwrap();
        assert!(!stored.contains(token.split_once('.').unwrap().1), "the token itself is not stored");
    }

    #[test]
    fn the_cookie_lasts_as_long_as_the_session_and_is_host_only_over_https() {
        let now = at("2026-01-01T00:00:00Z");
        let cookie = cookie("t", true, at("2026-01-01T01:00:00Z"), now);
        assert_eq!(cookie, "__Host-roster_session=t; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure");
        assert_eq!(cleared(false), "roster_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }
}
