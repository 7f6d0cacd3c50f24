//! The token endpoint (`POST /token`): an authorization code (with its PKCE verifier) or a
//! refresh token for an ID token, an access token and a new refresh token. Each use is
//! decided on the grant Secret as the API server has it and written under its
//! resourceVersion, so a code is redeemed once and a refresh token rotates once; a second
//! use revokes the grant. Every exchange looks at the person again: deactivated, deleted,
//! re-enrolling, credentials changed since sign-in, or no longer admitted → refused and the
//! grant revoked; locked → refused while the lock lasts (see [`Denied`]).

use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use serde_json::json;

use super::client_auth::{self, ClientAuthError};
use super::grant::{self, CodeVerdict, Grant, RefreshVerdict};
use super::tokens::Signing;
use super::{Issuer, claims};
use crate::api::{OidcClient, User};
use crate::controller::names::USER_LABEL;
use crate::facts::{self, Changes};
use crate::registration;
use crate::signin::Barrier;

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
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// An OAuth error answer.
fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({"error": code, "error_description": description}))).into_response()
}

fn invalid_grant() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "the code or refresh token is invalid, expired or revoked",
    )
}

fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again in a moment")
}

/// `POST /token`.
pub async fn token(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let client = match client_auth::authenticate(
        &issuer,
        &headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )
    .await
    {
        Ok(client) => client,
        Err(ClientAuthError::Unavailable(reason)) => {
            tracing::warn!(%reason, "a client's secret could not be read");
            return unavailable();
        }
        Err(refused) => {
            tracing::info!(reason = %refused, "token request: client authentication failed");
            let mut response =
                error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
            if headers.contains_key(header::AUTHORIZATION) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic"));
            }
            return response;
        }
    };
    let client_id = registration::client_id(&client.namespace().unwrap_or_default(), &client.name_any());
    let presented = match form.grant_type.as_str() {
        "authorization_code" => form.code.as_deref(),
        "refresh_token" => form.refresh_token.as_deref(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "authorization_code or refresh_token",
            );
        }
    };
    let Some((namespace, name, hash)) = presented.and_then(grant::token_grant) else {
        return invalid_grant();
    };
    let secret = match grant::read(&issuer.portal.signin.client, &namespace, &name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return invalid_grant(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a grant failed");
            return unavailable();
        }
    };
    let Some(user) = owner(&issuer, &secret) else { return invalid_grant() };
    let now = Timestamp::now();
    let lifetimes = &client.spec.token_lifetimes;
    let refresh_lifetime = duration(&lifetimes.refresh_token);
    let locator = grant::locator(&namespace, &name);
    let verifier = form.code_verifier.clone().unwrap_or_default();
    let redirect_uri = form.redirect_uri.clone().unwrap_or_default();
    let code_flow = form.grant_type == "authorization_code";
    // What this use of the grant comes to; `None`: tokens may be issued.
    let judge = |found: &Grant| -> Option<Use> {
        if code_flow {
            match grant::judge_code(found, &hash, &client_id, &redirect_uri, &verifier, now) {
                CodeVerdict::Redeem => None,
                CodeVerdict::Reused => Some(Use::Reused),
                CodeVerdict::Refused(reason) => Some(Use::Refused(reason)),
            }
        } else {
            match grant::judge_refresh(found, &hash, &client_id, now) {
                RefreshVerdict::Rotate => None,
                RefreshVerdict::Reused => Some(Use::Reused),
                RefreshVerdict::Refused(reason) => Some(Use::Refused(reason)),
            }
        }
    };
    // Everything that can fail is done before the code or refresh token is spent: a client
    // whose request failed for a passing reason may try again without looking like a replay.
    let Some(found) = Grant::of(&secret) else { return invalid_grant() };
    let refused = match judge(&found) {
        Some(refused) => Some(refused),
        None => still_allowed(&issuer, &client, &user, &found, now).err().map(Use::Denied),
    };
    if let Some(refused) = refused {
        return refuse(&issuer, &secret, &user, &client_id, refused).await;
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
    let nonce = if code_flow { found.nonce.as_deref() } else { None };
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
    // Spend it: decided again on the grant as it is now (another replica may have been first).
    let written = facts::update(&issuer.portal.signin.client, &secret, |current: &Secret| {
        let Some(current) = Grant::of(current) else { return (Use::Refused("not a grant"), Changes::new()) };
        if let Some(refused) = judge(&current) {
            return (refused, Changes::new());
        }
        match grant::issue_refresh(&current, &locator, now, refresh_lifetime) {
            Ok((refresh, changes)) => (Use::Issue(refresh), changes),
            Err(_) => (Use::Refused("no randomness"), Changes::new()),
        }
    })
    .await;
    let refresh = match written {
        Ok((Use::Issue(refresh), _)) => refresh,
        Ok((refused, _)) => return refuse(&issuer, &secret, &user, &client_id, refused).await,
        Err(e) => {
            tracing::warn!(error = %e, "writing a grant failed");
            return unavailable();
        }
    };
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
    Json(body).into_response()
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

/// Answers a refused use: revokes the grant when the refusal says so.
async fn refuse(issuer: &Issuer, secret: &Secret, user: &User, client_id: &str, refused: Use) -> Response {
    let who = crate::signin::who(user);
    match refused {
        Use::Reused => {
            tracing::warn!(user = %who, client = %client_id, grant = %secret.name_any(), "a spent code or refresh token was presented again; the grant is revoked");
            revoke(issuer, secret).await;
        }
        Use::Denied(denied) => {
            tracing::info!(user = %who, client = %client_id, reason = denied.reason, revoked = denied.revoke, "the person may not hold tokens now");
            if denied.revoke {
                revoke(issuer, secret).await;
            }
        }
        Use::Refused(reason) => tracing::info!(client = %client_id, %reason, "token request refused"),
        Use::Issue(_) => {}
    }
    invalid_grant()
}

/// Why the person may not hold tokens now, and whether that ends the grant for good.
#[derive(Debug)]
pub struct Denied {
    /// For the log.
    pub reason: &'static str,
    /// Deactivation, changed credentials, lost admission: yes. A lock: no — anyone who
    /// knows an address can lock an account by failing sign-ins, and that must not end the
    /// person's sessions; they work again when the lock ends.
    pub revoke: bool,
}

/// The User that owns the grant Secret (by uid), from the cache.
pub fn owner(issuer: &Issuer, secret: &Secret) -> Option<Arc<User>> {
    let namespace = secret.namespace()?;
    let name = secret.labels().get(USER_LABEL)?;
    let user = issuer.portal.signin.caches.users.get(&ObjectRef::new(name).within(&namespace))?;
    crate::controller::controlled_by(secret, user.as_ref()).then_some(user)
}

/// Whether the person may still hold this client's tokens; why not.
pub fn still_allowed(
    issuer: &Issuer,
    client: &OidcClient,
    user: &User,
    found: &Grant,
    now: Timestamp,
) -> Result<(), Denied> {
    let ends = |reason| Denied { reason, revoke: true };
    if user.metadata.uid.as_deref() != Some(found.user_uid.as_str()) {
        return Err(ends("another User of that name"));
    }
    let credentials = issuer.portal.signin.caches.credentials_of(user).ok_or(ends("no credentials"))?;
    if let Some(barrier) = issuer.portal.signin.barrier(user, &credentials, now) {
        return Err(Denied { reason: barrier.message(), revoke: barrier != Barrier::Locked });
    }
    if grant::stamp(&credentials) != found.stamp {
        return Err(ends("credentials changed since the sign-in"));
    }
    if !registration::admits(&client.spec, &client.namespace().unwrap_or_default(), user) {
        return Err(ends("the client no longer admits this user"));
    }
    Ok(())
}

async fn revoke(issuer: &Issuer, secret: &Secret) {
    if let Err(e) = grant::revoke(&issuer.portal.signin.client, secret).await {
        tracing::error!(error = %e, grant = %secret.name_any(), "revoking a grant failed");
    }
}

/// A token lifetime from the OidcClient's schema-bounded duration.
pub fn duration(value: &kube::core::Duration) -> SignedDuration {
    SignedDuration::try_from(std::time::Duration::from(*value)).unwrap_or(SignedDuration::from_hours(1))
}
