//! The device authorization grant (RFC 8628), for CLIs on machines without a browser. The
//! device asks `POST /device_authorization` and gets a device code (a 256-bit token only it
//! holds) and a short user code to show; the person opens `/device` anywhere, types the
//! user code, and — signed in on the form, or confirming with a live session, never without
//! seeing which application asks — allows it. The device polls `/token` with its device
//! code until then.
//!
//! State: one Secret per request, `<client>-device-<random>` (type `roster.dev/oidc-device`)
//! in the client's namespace, owned by the OidcClient, holding the SHA-256 of both codes,
//! the scopes and the expiry; the token index files it by its user code's hash (O(1) look-up
//! from the watch, no listing). Allowing it makes an ordinary grant in the person's session
//! whose code is the device code, and names that grant in the device Secret: the token
//! endpoint then redeems it through the same path as an authorization code. The sweeper
//! removes it at its expiry, and keeps at most [`super::sweeper::DEVICES_PER_CLIENT`] per
//! client.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::authorize::{NOT_ADMITTED, NotStarted, SOMETHING_WRONG, Typed, admitted, start_session};
use super::state::{self, Kind};
use super::sweeper::DEVICES_PER_CLIENT;
use super::{Issuer, client_auth, grant, oauth_error, session};
use crate::api::{OidcClient, Scope};
use crate::controller::controlled_by;
use crate::controller::names::{DEVICE_TYPE, TOKEN_HASH, token_term};
use crate::credentials::{hash_token, hashes_match};
use crate::facts::{self, Changes, text};
use crate::portal::guard::form_token_matches;
use crate::registration;

/// How long a device request waits for the person.
pub const DEVICE_LIFETIME: SignedDuration = SignedDuration::from_mins(10);
/// Seconds a device waits between polls (RFC 8628's default).
pub const INTERVAL: u64 = 5;
/// The user code's letters: consonants only (no words, no 0/O or 1/I confusion), 20 of them;
/// 8 letters are 20⁸ ≈ 2.6 × 10¹⁰ codes.
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LENGTH: usize = 8;

const CLIENT: &str = "client";
const SCOPE: &str = "scope";
const DEVICE_CODE_HASH: &str = "deviceCodeHash";
const EXPIRES_AT: &str = "expiresAt";
const CREATED_AT: &str = "createdAt";
/// `namespace/name` of the grant the person allowed.
const GRANT: &str = "grant";

/// A device request as its Secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The client ID that asked.
    pub client: String,
    /// The scopes it will get.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the device code.
    pub device_code_hash: String,
    /// Until when it may be allowed and redeemed.
    pub expires_at: Timestamp,
    /// When it was made.
    pub created_at: Timestamp,
    /// The grant it became, once allowed: `(namespace, name)`.
    pub grant: Option<(String, String)>,
}

impl Device {
    /// Reads a device Secret; `None` when it is not one.
    pub fn of(secret: &Secret) -> Option<Self> {
        if secret.type_.as_deref() != Some(DEVICE_TYPE) {
            return None;
        }
        let time = |key| text(secret, key).and_then(|v| v.parse::<Timestamp>().ok());
        Some(Self {
            client: text(secret, CLIENT)?.to_owned(),
            scopes: text(secret, SCOPE)
                .unwrap_or_default()
                .split(' ')
                .filter_map(grant::scope_named)
                .collect(),
            device_code_hash: text(secret, DEVICE_CODE_HASH)?.to_owned(),
            expires_at: time(EXPIRES_AT)?,
            created_at: time(CREATED_AT).unwrap_or(Timestamp::UNIX_EPOCH),
            grant: text(secret, GRANT)
                .and_then(|g| g.split_once('/'))
                .map(|(ns, name)| (ns.to_owned(), name.to_owned())),
        })
    }
}

/// A fresh user code (8 letters of [`ALPHABET`], unbiased).
fn user_code() -> Result<String, crate::credentials::CredentialError> {
    let mut code = String::with_capacity(USER_CODE_LENGTH);
    while code.len() < USER_CODE_LENGTH {
        for byte in crate::credentials::random_bytes::<16>()? {
            // 240 = 12 × 20: the bytes above would favour the first letters.
            if byte < 240 && code.len() < USER_CODE_LENGTH {
                code.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(code)
}

/// A user code as typed (any case, dashes, spaces) reduced to its letters; `None` when it
/// cannot be one.
fn normalized(typed: &str) -> Option<String> {
    let code: String =
        typed.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == USER_CODE_LENGTH && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// `BCDFGHJK` as `BCDF-GHJK`, as people read it.
fn shown(code: &str) -> String {
    let (a, b) = code.split_at(code.len() / 2);
    format!("{a}-{b}")
}

/// What a device authorization request posts.
/// (No `Debug`: it holds the client secret.)
#[derive(Default, Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scope: String,
}

/// `POST /device_authorization`.
pub async fn start(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(form): Form<DeviceForm>,
) -> Response {
    let client = match client_auth::proven(
        &issuer,
        &headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )
    .await
    {
        Ok(client) => client,
        Err(answer) => return *answer,
    };
    if !client.spec.device_authorization {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client may not use the device authorization grant (spec.deviceAuthorization)",
        );
    }
    // A full client's new requests are refused, not the waiting ones pushed out: anyone may
    // ask for a public client, and must not crowd out the people's own devices.
    let uid = client.metadata.uid.clone().unwrap_or_default();
    if issuer.sweeper.devices_waiting(&client.namespace().unwrap_or_default(), &uid) >= DEVICES_PER_CLIENT {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many device sign-ins are waiting for this client; try again later",
        );
    }
    let Some(scopes) = super::request::granted_scopes(&form.scope, &client) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "the openid scope is required");
    };
    let now = Timestamp::now();
    let made = new(&client, &scopes, now);
    let (secret, device_code, user_code) = match made {
        Ok(made) => made,
        Err(e) => {
            tracing::warn!(error = %e, "making a device request failed");
            return super::exchange::unavailable();
        }
    };
    if let Err(e) = state::create(&issuer.portal.signin.client, &secret).await {
        tracing::warn!(error = %e, "making a device request failed");
        return super::exchange::unavailable();
    }
    let verification = issuer.endpoint("/device");
    let shown = shown(&user_code);
    Json(json!({
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification,
        "verification_uri_complete": format!("{verification}?user_code={shown}"),
        "expires_in": DEVICE_LIFETIME.as_secs(),
        "interval": INTERVAL,
    }))
    .into_response()
}

/// The device Secret for `client` asking for `scopes`, its device code and its user code.
pub(super) fn new(
    client: &OidcClient,
    scopes: &[Scope],
    now: Timestamp,
) -> Result<(Secret, String, String), state::StateError> {
    let namespace = client.namespace().unwrap_or_default();
    let name = Kind::Device.new_name(&client.name_any())?;
    let device_code =
        state::new_token(&state::locator(&namespace, &name)).map_err(state::StateError::Random)?;
    let user_code = user_code().map_err(state::StateError::Random)?;
    let words: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let data = BTreeMap::from([
        (CLIENT, registration::client_id(&namespace, &client.name_any())),
        (SCOPE, words.join(" ")),
        (TOKEN_HASH, hash_token(&user_code)),
        (DEVICE_CODE_HASH, hash_token(&device_code)),
        (EXPIRES_AT, (now + DEVICE_LIFETIME).to_string()),
        (CREATED_AT, now.to_string()),
    ]);
    let owner = OwnerReference {
        api_version: "roster.dev/v1alpha1".into(),
        kind: "OidcClient".into(),
        name: client.name_any(),
        uid: client.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    let secret = state::secret(name, namespace, DEVICE_TYPE, &[], owner, data);
    Ok((secret, device_code, user_code))
}

/// A pending request found by its user code, with the client that made it.
struct Pending {
    secret: Arc<Secret>,
    device: Device,
    client: Arc<OidcClient>,
}

/// The pending request `typed` names (from the watch cache and the token index): owned by
/// the registered client it says, not expired, not yet allowed.
fn pending(issuer: &Issuer, typed: &str, now: Timestamp) -> Option<Pending> {
    let code = normalized(typed)?;
    let caches = &issuer.portal.signin.caches;
    let found = caches.tokens.get(&token_term(DEVICE_TYPE, &hash_token(&code)));
    let [(namespace, name)] = found.as_slice() else { return None };
    let secret = caches.secrets.get(&ObjectRef::new(name).within(namespace))?;
    let device = Device::of(&secret)?;
    let client = client_auth::registered(issuer, &device.client)?;
    let owned = controlled_by(secret.as_ref(), client.as_ref());
    let in_place = client.namespace().as_deref() == Some(namespace.as_str());
    let open = client.spec.device_authorization && device.expires_at > now && device.grant.is_none();
    (owned && in_place && open).then_some(Pending { secret, device, client })
}

/// What `/device` shows or posts.
#[derive(Default, Deserialize)]
pub struct DevicePage {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    user_code: String,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    allow: Option<String>,
}

const NOT_VALID: &str = "That code is not valid or has expired. Check it, or start again on your device.";

/// `GET /device`: the form for the code (filled in from `?user_code=`).
pub async fn page(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Query(query): Query<DevicePage>,
) -> Response {
    let typed = query.user_code.chars().take(32).collect::<String>();
    render(&issuer, &headers, StatusCode::OK, context! { mode => "code", user_code => typed })
}

/// `POST /device`: the code typed in, then the sign-in (or the confirmation with a live
/// session) that allows the device.
pub async fn step(
    State(issuer): State<Arc<Issuer>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(posted): Form<DevicePage>,
) -> Response {
    let typed: String = posted.user_code.chars().take(32).collect();
    let code_again = |status, error: &str| {
        render(&issuer, &headers, status, context! { mode => "code", user_code => &typed, error => error })
    };
    if !form_token_matches(&headers, &posted.form_token) || !super::same_origin(&issuer, &headers) {
        return code_again(
            StatusCode::FORBIDDEN,
            "This form expired. Enter the code again. (Cookies must be allowed for this site.)",
        );
    }
    let now = Timestamp::now();
    let Some(found) = pending(&issuer, &typed, now) else {
        return code_again(StatusCode::BAD_REQUEST, NOT_VALID);
    };
    let client_name = found.client.name_any();
    let scopes: Vec<&str> = found.device.scopes.iter().map(|s| s.as_str()).collect();
    let scopes = scopes.join(" ");
    let offline = found.device.scopes.contains(&Scope::OfflineAccess);
    let shown_code = normalized(&typed).map(|c| shown(&c)).unwrap_or_default();
    let live = session::usable(&issuer, &headers, now).await;
    let ask = |status, identifier: &str, error: Option<&str>| {
        let (mode, who) = match &live {
            Some(live) if error.is_none() => ("confirm", live.user.spec.email.clone()),
            _ => ("signin", String::new()),
        };
        render(
            &issuer,
            &headers,
            status,
            context! { mode, client => &client_name, user_code => &shown_code, who, identifier, error, scopes => &scopes, offline },
        )
    };
    // Allowed with the browser's session, or signed in on the form; otherwise: ask.
    let started = match (&live, posted.allow.as_deref(), posted.identifier.as_deref()) {
        (Some(live), Some("yes"), _) => {
            if !admitted(&found.client, &live.user) {
                return ask(StatusCode::FORBIDDEN, "", Some(NOT_ADMITTED));
            }
            session::touch(&issuer, live, now).await;
            (live.user.clone(), Secret::clone(&live.secret), live.session.clone(), None)
        }
        (_, _, Some(identifier)) => {
            let typed = Typed { identifier, password: &posted.password, code: &posted.code };
            let address = issuer.portal.address_of(peer, &headers);
            match start_session(&issuer, Some(&found.client), &headers, &typed, address, now).await {
                Ok(started) => {
                    (started.user.clone(), started.secret.clone(), started.session.clone(), Some(started))
                }
                Err(NotStarted::Again(status, error)) => return ask(status, identifier, Some(error)),
                Err(NotStarted::Denied(message)) => {
                    return ask(StatusCode::FORBIDDEN, identifier, Some(message));
                }
            }
        }
        _ => return ask(StatusCode::OK, "", None),
    };
    let (user, session_secret, signed_in, new_session) = started;
    let mut response = match allow(&issuer, &found, &user, &session_secret, &signed_in, now).await {
        Ok(()) => {
            tracing::info!(user = %crate::signin::who(&user), client = %found.device.client, "allowed a device");
            render(&issuer, &headers, StatusCode::OK, context! { mode => "done", client => &client_name })
        }
        Err(Allow::Gone) => code_again(StatusCode::BAD_REQUEST, NOT_VALID),
        Err(Allow::Failed) => code_again(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WRONG),
    };
    // The person signed in: the browser keeps the session it started, allowed or not.
    if let Some(started) = new_session {
        started.set_cookie(&mut response);
    }
    response
}

/// Why allowing a device did not happen.
enum Allow {
    /// Allowed already, expired or gone meanwhile.
    Gone,
    /// The API server could not be written.
    Failed,
}

/// Makes the grant in the person's session and names it in the device Secret (decided
/// again on the Secret as it is: a request is allowed once).
async fn allow(
    issuer: &Issuer,
    found: &Pending,
    user: &crate::api::User,
    session_secret: &Secret,
    signed_in: &session::Session,
    now: Timestamp,
) -> Result<(), Allow> {
    let client = &issuer.portal.signin.client;
    let device = &found.device;
    let grant = grant::new_device(
        user,
        session_secret,
        &device.client,
        device.scopes.clone(),
        signed_in,
        &device.device_code_hash,
        device.expires_at,
        now,
    )
    .map_err(|_| Allow::Failed)?;
    let grant = state::create(client, &grant).await.map_err(|e| {
        tracing::warn!(error = %e, "making a device grant failed");
        Allow::Failed
    })?;
    let named = format!("{}/{}", grant.namespace().unwrap_or_default(), grant.name_any());
    let written = facts::update(client, &found.secret, |current: &Secret| match Device::of(current) {
        Some(current) if current.grant.is_none() && current.expires_at > now => {
            (true, Changes::from([(GRANT, Some(named.clone()))]))
        }
        _ => (false, Changes::new()),
    })
    .await;
    match written {
        Ok((true, _)) => Ok(()),
        outcome => {
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "allowing a device failed");
            }
            // Not this one's to redeem: the grant goes.
            let _ = state::delete(client, &grant).await;
            Err(if outcome.is_err() { Allow::Failed } else { Allow::Gone })
        }
    }
}

fn render(issuer: &Issuer, headers: &HeaderMap, status: StatusCode, extra: minijinja::Value) -> Response {
    super::form_page(issuer, headers, status, "device.html", "/device", &json!({}), None, extra)
}

/// What a device's poll of the token endpoint comes to.
pub enum Polled {
    /// Allowed: redeem the grant `(namespace, name)` with the device code's hash.
    Allowed {
        /// The device Secret (deleted once redeemed).
        device: Box<Secret>,
        /// The grant's namespace.
        namespace: String,
        /// The grant's name.
        name: String,
        /// The device code's hash.
        hash: String,
    },
    /// The answer for now (pending, expired, refused).
    Answer(Response),
}

/// Judges a device code presented by `client` (`client_id`) at the token endpoint.
pub async fn poll(
    issuer: &Issuer,
    client: &OidcClient,
    client_id: &str,
    device_code: Option<&str>,
    now: Timestamp,
) -> Polled {
    let invalid = || {
        Polled::Answer(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the device code is invalid, expired or used",
        ))
    };
    let Some(device_code) = device_code.filter(|c| !c.is_empty()) else {
        return Polled::Answer(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "device_code is required",
        ));
    };
    let Some((namespace, name, hash)) = state::token_target(device_code, Kind::Device) else {
        return invalid();
    };
    // A client's requests live in its own namespace: nothing elsewhere is read.
    if client.namespace().as_deref() != Some(namespace.as_str()) {
        return invalid();
    }
    let secret = match state::read(&issuer.portal.signin.client, &namespace, &name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return invalid(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a device request failed");
            return Polled::Answer(super::exchange::unavailable());
        }
    };
    let owned = controlled_by(&secret, client);
    let allowed = client.spec.device_authorization;
    let Some(device) = Device::of(&secret).filter(|d| owned && allowed && d.client == client_id) else {
        return invalid();
    };
    if !hashes_match(&hash, &device.device_code_hash) {
        return invalid();
    }
    if device.expires_at <= now {
        return Polled::Answer(oauth_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code expired",
        ));
    }
    match device.grant {
        None => Polled::Answer(oauth_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "the person has not allowed the device yet",
        )),
        Some((namespace, name)) => Polled::Allowed { device: Box::new(secret), namespace, name, hash },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_consonants_read_in_any_case_with_a_dash() {
        for _ in 0..100 {
            let code = user_code().unwrap();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
            assert_eq!(normalized(&shown(&code)).as_deref(), Some(code.as_str()));
            assert_eq!(normalized(&shown(&code).to_lowercase()).as_deref(), Some(code.as_str()));
        }
        assert_eq!(shown("BCDFGHJK"), "BCDF-GHJK");
        assert_eq!(normalized(" bcdf ghjk "), Some("BCDFGHJK".into()));
        assert_eq!(normalized("BCDF-GHJ"), None, "too short");
        assert_eq!(normalized("BCDF-GHJA"), None, "a vowel is no code letter");
        assert_eq!(normalized("BCDF-GHJKL"), None, "too long");
    }
}
