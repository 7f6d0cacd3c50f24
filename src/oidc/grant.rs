//! A grant: what one sign-in gave one client — the authorization code until it is redeemed,
//! then the refresh-token family. One Secret per grant (`<user>-grant-<random>`, type
//! roster.dev/oidc-grant) in the User's namespace, owned by the sign-in session it came from
//! (see [`super::state`]): ending the session ends its grants. Only hashes of the code and
//! refresh tokens are stored; each write carries the resourceVersion it decided on, so a
//! code is redeemed once and a refresh token rotates once, whichever replica is asked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::request::{AuthRequest, pkce_verified};
use super::session::Session;
use super::state::{self, Kind, StateError};
use crate::api::{Scope, User};
use crate::controller::names::{GRANT_TYPE, SESSION_LABEL, USER_LABEL};
use crate::credentials::record::{PASSWORD_HASH, TOTP_SECRET};
use crate::credentials::{hash_token, hashes_match};
use crate::facts::{Changes, text};

/// The redirect URI a device grant (RFC 8628) records: it is redeemed with its device code
/// at the token endpoint, never with a code sent anywhere.
pub const DEVICE_REDIRECT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long an authorization code may wait to be redeemed.
pub const CODE_LIFETIME: SignedDuration = SignedDuration::from_secs(60);
/// Spent refresh tokens remembered per grant, to tell reuse (revoke) from garbage.
const SPENT_KEPT: usize = 16;

const CLIENT: &str = "client";
const USER_UID: &str = "userUID";
const SCOPE: &str = "scope";
const NONCE: &str = "nonce";
const AUTH_TIME: &str = "authTime";
const AMR: &str = "amr";
const REDIRECT_URI: &str = "redirectUri";
const CHALLENGE: &str = "codeChallenge";
const CODE_HASH: &str = "codeHash";
const CODE_EXPIRES_AT: &str = "codeExpiresAt";
const CODE_REDEEMED_AT: &str = "codeRedeemedAt";
const REFRESH_HASH: &str = "refreshHash";
const REFRESH_EXPIRES_AT: &str = "refreshExpiresAt";
const SPENT_REFRESH: &str = "spentRefreshHashes";
const STAMP: &str = "credentialsStamp";
const CREATED_AT: &str = "createdAt";
const LAST_USED_AT: &str = "lastUsedAt";

/// A grant as its Secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The client ID it was given to.
    pub client: String,
    /// The uid of the User it is for.
    pub user_uid: String,
    /// The scopes granted.
    pub scopes: Vec<Scope>,
    /// The authorization request's nonce.
    pub nonce: Option<String>,
    /// When the person proved who they are.
    pub auth_time: Timestamp,
    /// How (`pwd`, `otp`).
    pub amr: Vec<String>,
    /// The redirect URI the code was sent to.
    pub redirect_uri: String,
    /// The PKCE challenge.
    pub challenge: String,
    /// SHA-256 of the code.
    pub code_hash: String,
    /// Until when the code may be redeemed.
    pub code_expires_at: Option<Timestamp>,
    /// Whether the code was redeemed.
    pub code_redeemed: bool,
    /// SHA-256 of the current refresh token.
    pub refresh_hash: Option<String>,
    /// Until when it works.
    pub refresh_expires_at: Option<Timestamp>,
    /// Hashes of refresh tokens already used, newest last.
    pub spent: Vec<String>,
    /// The credentials the person signed in with ([`stamp`]).
    pub stamp: String,
    /// When it was made.
    pub created_at: Option<Timestamp>,
    /// When its code or a refresh token was last redeemed.
    pub last_used_at: Option<Timestamp>,
}

impl Grant {
    /// Reads a grant Secret; `None` when it is not one.
    pub fn of(secret: &Secret) -> Option<Self> {
        if secret.type_.as_deref() != Some(GRANT_TYPE) {
            return None;
        }
        let get = |key| text(secret, key).map(str::to_owned);
        let time = |key| text(secret, key).and_then(|v| v.parse::<Timestamp>().ok());
        let words =
            |key| get(key).map(|v| v.split(' ').map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default();
        Some(Self {
            client: get(CLIENT)?,
            user_uid: get(USER_UID)?,
            scopes: words(SCOPE).iter().filter_map(|s| scope_named(s)).collect(),
            nonce: get(NONCE),
            auth_time: time(AUTH_TIME)?,
            amr: words(AMR),
            redirect_uri: get(REDIRECT_URI)?,
            // None for a device grant; an authorization code's always has one.
            challenge: get(CHALLENGE).unwrap_or_default(),
            code_hash: get(CODE_HASH)?,
            code_expires_at: time(CODE_EXPIRES_AT),
            code_redeemed: get(CODE_REDEEMED_AT).is_some(),
            refresh_hash: get(REFRESH_HASH),
            refresh_expires_at: time(REFRESH_EXPIRES_AT),
            spent: words(SPENT_REFRESH),
            stamp: get(STAMP).unwrap_or_default(),
            created_at: time(CREATED_AT),
            last_used_at: time(LAST_USED_AT),
        })
    }
}

/// The scope of that name, if roster knows it.
pub fn scope_named(name: &str) -> Option<Scope> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// A fingerprint of the person's password hash and TOTP secret: a grant made with other
/// credentials (before a PasswordReset, an MfaReset, a password change) is void.
pub fn stamp(credentials: &Secret) -> String {
    stamp_of(text(credentials, PASSWORD_HASH), text(credentials, TOTP_SECRET))
}

/// [`stamp`] of a password hash and a TOTP secret (a change not yet written).
pub fn stamp_of(password_hash: Option<&str>, totp_secret: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(password_hash.unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(totp_secret.unwrap_or_default().as_bytes());
    hex::encode(&hasher.finalize()[..12])
}

/// What presenting a code leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeVerdict {
    /// Redeem it: tokens are issued.
    Redeem,
    /// It was redeemed before: the grant is revoked (RFC 6749 §4.1.2).
    Reused,
    /// `invalid_grant`, for this reason (logged, not told).
    Refused(&'static str),
}

/// Judges a code presented by `client` with `redirect_uri` and the PKCE `verifier`.
pub fn judge_code(
    grant: &Grant,
    hash: &str,
    client: &str,
    redirect_uri: &str,
    verifier: &str,
    now: Timestamp,
) -> CodeVerdict {
    if grant.redirect_uri == DEVICE_REDIRECT {
        return CodeVerdict::Refused("a device grant is redeemed with its device code");
    }
    match judge_device(grant, hash, client, now) {
        CodeVerdict::Redeem => {}
        other => return other,
    }
    if grant.redirect_uri != redirect_uri {
        return CodeVerdict::Refused("another redirect_uri");
    }
    if !pkce_verified(verifier, &grant.challenge) {
        return CodeVerdict::Refused("PKCE verifier does not match");
    }
    CodeVerdict::Redeem
}

/// Judges a code by what every code is bound to — its hash, a single use, the client, the
/// expiry: all a device grant's device code is judged by (the device code itself, a
/// 256-bit secret only the device holds, takes PKCE's place), and the first part of
/// judging an authorization code.
pub fn judge_device(grant: &Grant, hash: &str, client: &str, now: Timestamp) -> CodeVerdict {
    if !hashes_match(hash, &grant.code_hash) {
        return CodeVerdict::Refused("not this grant's code");
    }
    if grant.code_redeemed {
        return CodeVerdict::Reused;
    }
    if grant.client != client {
        return CodeVerdict::Refused("issued to another client");
    }
    if grant.code_expires_at.is_none_or(|expires| expires <= now) {
        return CodeVerdict::Refused("expired");
    }
    CodeVerdict::Redeem
}

/// What presenting a refresh token leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Rotate it: new tokens.
    Rotate,
    /// An already used token: the whole family is revoked.
    Reused,
    /// `invalid_grant`, for this reason.
    Refused(&'static str),
}

/// Judges a refresh token presented by `client`.
pub fn judge_refresh(grant: &Grant, hash: &str, client: &str, now: Timestamp) -> RefreshVerdict {
    if grant.spent.iter().any(|spent| hashes_match(hash, spent)) {
        return RefreshVerdict::Reused;
    }
    if !grant.refresh_hash.as_deref().is_some_and(|current| hashes_match(hash, current)) {
        return RefreshVerdict::Refused("not this grant's refresh token");
    }
    if grant.client != client {
        return RefreshVerdict::Refused("issued to another client");
    }
    if grant.refresh_expires_at.is_none_or(|expires| expires <= now) {
        return RefreshVerdict::Refused("expired");
    }
    RefreshVerdict::Rotate
}

/// Until when refresh tokens made in `session` may work: never past its end, nor the
/// client's `absolute` limit from the person's sign-in.
pub fn refresh_until(session: &Session, absolute: Option<SignedDuration>) -> Timestamp {
    absolute
        .and_then(|limit| session.auth_time.checked_add(limit).ok())
        .map_or(session.expires_at, |end| end.min(session.expires_at))
}

/// The changes that redeem the code (or rotate the refresh token): a new refresh token
/// when the grant carries offline_access, valid for `refresh_lifetime` but not past `until`
/// (its session's end or the client's absolute limit; none once that has passed); the spent
/// one remembered.
pub fn issue_refresh(
    grant: &Grant,
    locator: &str,
    now: Timestamp,
    refresh_lifetime: SignedDuration,
    until: Timestamp,
) -> Result<(Option<String>, Changes), crate::credentials::CredentialError> {
    let mut changes = Changes::from([(LAST_USED_AT, Some(now.to_string()))]);
    if !grant.code_redeemed {
        changes.insert(CODE_REDEEMED_AT, Some(now.to_string()));
    }
    if let Some(spent) = &grant.refresh_hash {
        let mut kept: Vec<&str> = grant.spent.iter().map(String::as_str).collect();
        kept.push(spent);
        let from = kept.len().saturating_sub(SPENT_KEPT);
        changes.insert(SPENT_REFRESH, Some(kept[from..].join(" ")));
    }
    // No refresh token without offline_access, nor one that would not work.
    if !grant.scopes.contains(&Scope::OfflineAccess) || until <= now {
        changes.insert(REFRESH_HASH, None);
        return Ok((None, changes));
    }
    let token = state::new_token(locator)?;
    changes.insert(REFRESH_HASH, Some(hash_token(&token)));
    let expires = now.checked_add(refresh_lifetime).map_or(until, |end| end.min(until));
    changes.insert(REFRESH_EXPIRES_AT, Some(expires.to_string()));
    Ok((Some(token), changes))
}

/// The grant Secret for a signed-in `user`, made in `session` for the checked `request`,
/// and its code.
pub fn new(
    user: &User,
    session: &Secret,
    request: &AuthRequest,
    signed_in: &Session,
    now: Timestamp,
) -> Result<(Secret, String), StateError> {
    let namespace = user.namespace().unwrap_or_default();
    let name = Kind::Grant.new_name(&user.name_any())?;
    let code = state::new_token(&state::locator(&namespace, &name)).map_err(StateError::Random)?;
    let secret = made(user, session, request, signed_in, name, &hash_token(&code), now + CODE_LIFETIME, now);
    Ok((secret, code))
}

/// The grant a device sign-in (RFC 8628) becomes once the person allowed it in `session`:
/// for `client_id` and `scopes`, redeemed with the device code (its hash `device_code_hash`)
/// until `expires`.
#[allow(clippy::too_many_arguments)]
pub fn new_device(
    user: &User,
    session: &Secret,
    client_id: &str,
    scopes: Vec<Scope>,
    signed_in: &Session,
    device_code_hash: &str,
    expires: Timestamp,
    now: Timestamp,
) -> Result<Secret, StateError> {
    let request = AuthRequest {
        client_id: client_id.to_owned(),
        redirect_uri: DEVICE_REDIRECT.to_owned(),
        scopes,
        state: None,
        nonce: None,
        challenge: String::new(),
        prompt: super::request::Prompt::Default,
        max_age: None,
        login_hint: None,
    };
    let name = Kind::Grant.new_name(&user.name_any())?;
    Ok(made(user, session, &request, signed_in, name, device_code_hash, expires, now))
}

/// The grant Secret `name`, its code stored as `code_hash` until `code_expires_at`.
#[allow(clippy::too_many_arguments)]
fn made(
    user: &User,
    session: &Secret,
    request: &AuthRequest,
    signed_in: &Session,
    name: String,
    code_hash: &str,
    code_expires_at: Timestamp,
    now: Timestamp,
) -> Secret {
    let namespace = user.namespace().unwrap_or_default();
    let scopes: Vec<&str> = request.scopes.iter().map(|s| s.as_str()).collect();
    let mut data: BTreeMap<&str, String> = BTreeMap::from([
        (CLIENT, request.client_id.clone()),
        (USER_UID, user.metadata.uid.clone().unwrap_or_default()),
        (SCOPE, scopes.join(" ")),
        (AUTH_TIME, signed_in.auth_time.to_string()),
        (AMR, signed_in.amr.join(" ")),
        (REDIRECT_URI, request.redirect_uri.clone()),
        (CHALLENGE, request.challenge.clone()),
        (CODE_HASH, code_hash.to_owned()),
        (CODE_EXPIRES_AT, code_expires_at.to_string()),
        (STAMP, signed_in.stamp.clone()),
        (CREATED_AT, now.to_string()),
    ]);
    if let Some(nonce) = &request.nonce {
        data.insert(NONCE, nonce.clone());
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: session.name_any(),
        uid: session.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    let labels = [(USER_LABEL, user.name_any()), (SESSION_LABEL, session.name_any())];
    state::secret(name, namespace, GRANT_TYPE, &labels, owner, data)
}

/// A grant for tests elsewhere.
#[cfg(test)]
pub(crate) fn tests_grant(scopes: Vec<Scope>) -> Grant {
    Grant { scopes, ..tests::grant() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    pub(super) fn grant() -> Grant {
        Grant {
            client: "team.app".into(),
            user_uid: "u1".into(),
            scopes: vec![Scope::OpenId, Scope::OfflineAccess],
            nonce: None,
            auth_time: at("2026-01-01T00:00:00Z"),
            amr: vec!["pwd".into()],
            redirect_uri: "https://app.example.com/cb".into(),
            challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            code_hash: hash_token("code"),
            code_expires_at: Some(at("2026-01-01T00:01:00Z")),
            code_redeemed: false,
            refresh_hash: None,
            refresh_expires_at: None,
            spent: vec![],
            stamp: "s".into(),
            created_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn a_code_is_redeemed_once_by_its_client_in_time_with_its_verifier() {
        let now = at("2026-01-01T00:00:30Z");
        let code = hash_token("code");
        let judge = |g: &Grant, client, uri, verifier, now| judge_code(g, &code, client, uri, verifier, now);
        let uri = "https://app.example.com/cb";
        assert_eq!(judge(&grant(), "team.app", uri, VERIFIER, now), CodeVerdict::Redeem);
        assert_eq!(
            judge(&grant(), "other.app", uri, VERIFIER, now),
            CodeVerdict::Refused("issued to another client")
        );
        assert_eq!(
            judge(&grant(), "team.app", "https://app.example.com/other", VERIFIER, now),
            CodeVerdict::Refused("another redirect_uri")
        );
        let wrong = "x".repeat(43);
        assert_eq!(
            judge(&grant(), "team.app", uri, &wrong, now),
            CodeVerdict::Refused("PKCE verifier does not match")
        );
        assert_eq!(
            judge(&grant(), "team.app", uri, VERIFIER, at("2026-01-01T00:01:00Z")),
            CodeVerdict::Refused("expired")
        );
        let redeemed = Grant { code_redeemed: true, ..grant() };
        assert_eq!(
            judge(&redeemed, "team.app", uri, VERIFIER, now),
            CodeVerdict::Reused,
            "even from another client"
        );
        assert_eq!(judge(&redeemed, "other.app", uri, VERIFIER, now), CodeVerdict::Reused);
        assert_eq!(
            judge_code(&grant(), &hash_token("guess"), "team.app", uri, VERIFIER, now),
            CodeVerdict::Refused("not this grant's code")
        );
    }

    #[test]
    fn a_device_grant_is_redeemed_with_its_device_code_only() {
        let now = at("2026-01-01T00:00:30Z");
        let device = Grant { redirect_uri: DEVICE_REDIRECT.into(), challenge: String::new(), ..grant() };
        assert_eq!(judge_device(&device, &hash_token("code"), "team.app", now), CodeVerdict::Redeem);
        assert_eq!(
            judge_code(&device, &hash_token("code"), "team.app", DEVICE_REDIRECT, "", now),
            CodeVerdict::Refused("a device grant is redeemed with its device code")
        );
        assert_eq!(
            judge_device(&device, &hash_token("code"), "team.other", now),
            CodeVerdict::Refused("issued to another client")
        );
        let spent = Grant { code_redeemed: true, ..device.clone() };
        assert_eq!(judge_device(&spent, &hash_token("code"), "team.app", now), CodeVerdict::Reused);
        assert_eq!(
            judge_device(&device, &hash_token("code"), "team.app", at("2026-01-01T00:01:00Z")),
            CodeVerdict::Refused("expired")
        );
    }

    #[test]
    fn refresh_tokens_rotate_and_a_spent_one_revokes_the_family() {
        let now = at("2026-01-02T00:00:00Z");
        let (first, changes) =
            issue_refresh(&grant(), "loc", now, SignedDuration::from_hours(1), Timestamp::MAX).unwrap();
        let first = first.unwrap();
        assert!(first.starts_with("loc."));
        assert_eq!(changes[REFRESH_HASH].as_deref(), Some(hash_token(&first).as_str()));
        assert_eq!(changes[REFRESH_EXPIRES_AT].as_deref(), Some("2026-01-02T01:00:00Z"));
        let (_, capped) =
            issue_refresh(&grant(), "loc", now, SignedDuration::from_hours(1), at("2026-01-02T00:30:00Z"))
                .unwrap();
        assert_eq!(
            capped[REFRESH_EXPIRES_AT].as_deref(),
            Some("2026-01-02T00:30:00Z"),
            "not past the session's end"
        );
        assert!(changes[CODE_REDEEMED_AT].is_some());
        let live = Grant {
            code_redeemed: true,
            refresh_hash: Some(hash_token(&first)),
            refresh_expires_at: Some(now + SignedDuration::from_hours(1)),
            ..grant()
        };
        assert_eq!(judge_refresh(&live, &hash_token(&first), "team.app", now), RefreshVerdict::Rotate);
        assert_eq!(
            judge_refresh(&live, &hash_token(&first), "other.app", now),
            RefreshVerdict::Refused("issued to another client")
        );
        assert_eq!(
            judge_refresh(&live, &hash_token(&first), "team.app", now + SignedDuration::from_hours(1)),
            RefreshVerdict::Refused("expired")
        );
        assert_eq!(
            judge_refresh(&live, &hash_token("guess"), "team.app", now),
            RefreshVerdict::Refused("not this grant's refresh token")
        );
        let (second, changes) =
            issue_refresh(&live, "loc", now, SignedDuration::from_hours(1), Timestamp::MAX).unwrap();
        assert_ne!(second.as_deref(), Some(first.as_str()));
        assert_eq!(changes[SPENT_REFRESH].as_deref(), Some(hash_token(&first).as_str()));
        assert!(!changes.contains_key(CODE_REDEEMED_AT), "redeemed once");
        let rotated = Grant {
            spent: vec![hash_token(&first)],
            refresh_hash: second.as_deref().map(hash_token),
            ..live
        };
        assert_eq!(judge_refresh(&rotated, &hash_token(&first), "team.app", now), RefreshVerdict::Reused);
    }

    #[test]
    fn refresh_tokens_end_with_the_session_or_the_clients_absolute_limit() {
        let policy = super::super::session::Policy { lifetime: SignedDuration::from_hours(24), idle: None };
        let mut user =
            User::new("jane", serde_json::from_value(serde_json::json!({"email": "j@example.com"})).unwrap());
        user.metadata.uid = Some("u1".into());
        let session =
            Session::signed_in(&user, &["pwd"], "s".into(), at("2026-01-01T00:00:00Z"), &policy, None);
        assert_eq!(refresh_until(&session, None), at("2026-01-02T00:00:00Z"));
        let eight_hours = Some(SignedDuration::from_hours(8));
        assert_eq!(refresh_until(&session, eight_hours), at("2026-01-01T08:00:00Z"), "from the sign-in");
        let long = Some(SignedDuration::from_hours(100));
        assert_eq!(refresh_until(&session, long), session.expires_at, "never past the session");
    }

    #[test]
    fn without_offline_access_there_is_no_refresh_token() {
        let online = Grant { scopes: vec![Scope::OpenId], ..grant() };
        let (token, changes) = issue_refresh(
            &online,
            "loc",
            at("2026-01-01T00:00:10Z"),
            SignedDuration::from_hours(1),
            Timestamp::MAX,
        )
        .unwrap();
        assert_eq!(token, None);
        assert_eq!(changes[REFRESH_HASH], None);
        let offline = Grant { scopes: vec![Scope::OpenId, Scope::OfflineAccess], ..grant() };
        let now = at("2026-01-01T00:00:10Z");
        let (token, changes) =
            issue_refresh(&offline, "loc", now, SignedDuration::from_hours(1), now).unwrap();
        assert_eq!(token, None, "none past the absolute limit");
        assert_eq!(changes[REFRESH_HASH], None);
    }
}
