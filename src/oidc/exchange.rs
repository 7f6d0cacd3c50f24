//! The token endpoint (`POST /token`): an authorization code (with its PKCE verifier) or a
//! refresh token for an ID token, an access token and a new refresh token. Each use is
//! decided on the grant Secret as the API server has it and written under its
//! resourceVersion, so a code is redeemed once and a refresh token rotates once; a second
//! use revokes the grant. Every exchange looks at the person again: deactivated, deleted,
//! re-enrolling, locked, credentials changed since sign-in, or no longer admitted → refused
//! and the grant revoked (see [`Denied`]); signed out (the
//! session is gone) → refused.

use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::json;

use super::client_auth;
use super::device::{self, Polled};
use super::grant::{self, CodeVerdict, Grant, RefreshVerdict};
use super::session::{self, Live};
use super::standing::{self, Denied};
use super::state::{self, Kind};
use super::tokens::Signing;
use super::{Issuer, claims};
use crate::facts::{self, Changes};
use crate::registration;

/// What a token request posts.
/// (No `Debug`: it holds the code, the refresh token and the client secret.)
#[derive(Default, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    device_code: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

use super::oauth_error as error;

fn invalid_grant() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "the code or refresh token is invalid, expired or revoked",
    )
}

/// `temporarily_unavailable` (503).
pub fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again in a moment")
}

/// `POST /token`.
pub async fn token(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
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
    let client_id = registration::client_id(&client.namespace().unwrap_or_default(), &client.name_any());
    let now = Timestamp::now();
    let (mode, presented) = match form.grant_type.as_str() {
        "authorization_code" => (Mode::Code, form.code.as_deref()),
        "refresh_token" => (Mode::Refresh, form.refresh_token.as_deref()),
        DEVICE_GRANT => (Mode::Device, None),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "authorization_code, refresh_token or urn:ietf:params:oauth:grant-type:device_code",
            );
        }
    };
    // The device's request, when it asks: its grant once the person allowed it.
    let (target, device) = if mode == Mode::Device {
        match device::poll(&issuer, &client, &client_id, form.device_code.as_deref(), now).await {
            Polled::Allowed { device, namespace, name, hash } => {
                (Some((namespace, name, hash)), Some(device))
            }
            Polled::Answer(answer) => return answer,
        }
    } else {
        (presented.and_then(|token| state::token_target(token, Kind::Grant)), None)
    };
    let Some((namespace, name, hash)) = target else {
        return invalid_grant();
    };
    // A grant in a namespace whose people this client cannot have is not its own: refused
    // without asking the API server (the token names the namespace; the caller chose it).
    if !registration::admits_namespace(&client.spec, &client.namespace().unwrap_or_default(), &namespace) {
        return invalid_grant();
    }
    let secret = match state::read(&issuer.portal.signin.client, &namespace, &name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return invalid_grant(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a grant failed");
            return unavailable();
        }
    };
    // The session it was made in: signed out or ended → the grant is over.
    let live = match session::of_grant(&issuer, &secret, now).await {
        Ok(Some(live)) => live,
        Ok(None) => return invalid_grant(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a sign-in session failed");
            return unavailable();
        }
    };
    let user = live.user.clone();
    let lifetimes = &client.spec.token_lifetimes;
    let refresh_lifetime = duration(&lifetimes.refresh_token);
    let locator = state::locator(&namespace, &name);
    let verifier = form.code_verifier.clone().unwrap_or_default();
    let redirect_uri = form.redirect_uri.clone().unwrap_or_default();
    // What this use of the grant comes to; `None`: tokens may be issued.
    let judge = |found: &Grant| -> Option<Use> {
        let code = match mode {
            Mode::Code => grant::judge_code(found, &hash, &client_id, &redirect_uri, &verifier, now),
            Mode::Device if found.redirect_uri != grant::DEVICE_REDIRECT => {
                CodeVerdict::Refused("not a device grant")
            }
            Mode::Device => grant::judge_device(found, &hash, &client_id, now),
            Mode::Refresh => {
                return match grant::judge_refresh(found, &hash, &client_id, now) {
                    RefreshVerdict::Rotate => None,
                    RefreshVerdict::Reused => Some(Use::Reused),
                    RefreshVerdict::Refused(reason) => Some(Use::Refused(reason)),
                };
            }
        };
        match code {
            CodeVerdict::Redeem => None,
            CodeVerdict::Reused => Some(Use::Reused),
            CodeVerdict::Refused(reason) => Some(Use::Refused(reason)),
        }
    };
    // Everything that can fail is done before the code or refresh token is spent: a client
    // whose request failed for a passing reason may try again without looking like a replay.
    let Some(found) = Grant::of(&secret) else { return invalid_grant() };
    let refused = match judge(&found) {
        Some(refused) => Some(refused),
        None => standing::of_grant(&issuer.portal.signin, &client, &user, &found, &live.session.stamp, now)
            .err()
            .map(Use::Denied),
    };
    if let Some(refused) = refused {
        return refuse(&issuer, &secret, &live, &client_id, refused).await;
    }
    let ring = match issuer.keys.keyring().await {
        Ok(ring) => ring,
        Err(e) => {
            tracing::warn!(error = %e, "no signing keys");
            return unavailable();
        }
    };
    let signing = Signing { issuer: &issuer.url, ring: &ring, alg: client.spec.id_token_signing_alg, now };
    let verified =
        claims::email_verified(&user, issuer.portal.signin.caches.credentials_of(&user).as_deref());
    let person = claims::claims(&user, &found.scopes, verified);
    let access_lifetime = duration(&lifetimes.access_token);
    let nonce = if mode == Mode::Code { found.nonce.as_deref() } else { None };
    let issued = signing.access_token(&found, &locator, access_lifetime).and_then(|access| {
        let id = signing.id_token(&found, person, &access, nonce, &locator, duration(&lifetimes.id_token))?;
        Ok((access, id))
    });
    let (access, id) = match issued {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::error!(error = %e, "signing tokens failed");
            return unavailable();
        }
    };
    let absolute = lifetimes.refresh_token_absolute.as_ref().map(duration);
    let refresh_until = grant::refresh_until(&live.session, absolute);
    if mode == Mode::Refresh && refresh_until <= now {
        // The client's limit was shortened after this refresh token was issued.
        return refuse(&issuer, &secret, &live, &client_id, Use::Refused("past the absolute lifetime")).await;
    }
    // Spend it: decided again on the grant as it is now (another replica may have been first).
    let written = facts::update(&issuer.portal.signin.client, &secret, |current: &Secret| {
        let Some(current) = Grant::of(current) else { return (Use::Refused("not a grant"), Changes::new()) };
        if let Some(refused) = judge(&current) {
            return (refused, Changes::new());
        }
        match grant::issue_refresh(&current, &locator, now, refresh_lifetime, refresh_until) {
            Ok((refresh, changes)) => (Use::Issue(refresh), changes),
            Err(_) => (Use::Refused("no randomness"), Changes::new()),
        }
    })
    .await;
    let refresh = match written {
        Ok((Use::Issue(refresh), _)) => refresh,
        Ok((refused, _)) => return refuse(&issuer, &secret, &live, &client_id, refused).await,
        Err(e) => {
            tracing::warn!(error = %e, "writing a grant failed");
            return unavailable();
        }
    };
    // A use of the session: its idle deadline moves on.
    session::touch(&issuer, &live, now).await;
    let scopes: Vec<&str> = found.scopes.iter().map(|s| s.as_str()).collect();
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": access_lifetime.as_secs(),
        "id_token": id,
        "scope": scopes.join(" "),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    // A device request redeemed is done (the sweeper would remove it at its expiry).
    if let Some(device) = device {
        let _ = state::delete(&issuer.portal.signin.client, &device).await;
    }
    Json(body).into_response()
}

/// The grant type of a device's poll (RFC 8628); a device grant records it as its
/// redirect URI.
pub const DEVICE_GRANT: &str = grant::DEVICE_REDIRECT;

/// Which grant a token request redeems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// An authorization code (with its PKCE verifier).
    Code,
    /// A refresh token.
    Refresh,
    /// A device code whose request the person allowed.
    Device,
}

/// What one use of a grant came to.
enum Use {
    /// Tokens, and the new refresh token if the grant has offline_access.
    Issue(Option<String>),
    /// A spent code or refresh token again: the grant is revoked.
    Reused,
    /// Not this grant's, expired, another client's: `invalid_grant`.
    Refused(&'static str),
    /// The person may not hold tokens now.
    Denied(Denied),
}

/// Answers a refused use: revokes the grant — or, when the person may no longer hold
/// tokens at all, ends their session (and so every grant made in it) — when the refusal
/// says so.
async fn refuse(issuer: &Issuer, secret: &Secret, live: &Live, client_id: &str, refused: Use) -> Response {
    let user = &live.user;
    let who = crate::signin::who(user);
    match refused {
        Use::Reused => {
            tracing::warn!(user = %who, client = %client_id, grant = %secret.name_any(), "a spent code or refresh token was presented again; the grant is revoked");
            revoke(issuer, secret).await;
        }
        Use::Denied(denied) => {
            tracing::info!(user = %who, client = %client_id, reason = denied.reason, "the person may not hold tokens now");
            if denied.person {
                session::end_logged(issuer, &live.secret, denied.reason).await;
            } else {
                revoke(issuer, secret).await;
            }
        }
        Use::Refused(reason) => tracing::info!(client = %client_id, %reason, "token request refused"),
        Use::Issue(_) => {}
    }
    invalid_grant()
}

async fn revoke(issuer: &Issuer, secret: &Secret) {
    if let Err(e) = state::delete(&issuer.portal.signin.client, secret).await {
        tracing::error!(error = %e, grant = %secret.name_any(), "revoking a grant failed");
    }
}

/// A token lifetime from the OidcClient's schema-bounded duration.
pub fn duration(value: &kube::core::Duration) -> SignedDuration {
    SignedDuration::try_from(std::time::Duration::from(*value)).unwrap_or(SignedDuration::from_hours(1))
}
