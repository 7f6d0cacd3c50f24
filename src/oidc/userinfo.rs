//! Userinfo (`GET` or `POST /userinfo` with a bearer access token): the person's claims as
//! the User says now, for the scopes of the grant — only while the grant and its session
//! exist and the person may still hold tokens (a revoked grant or a deactivated user gets 401 at once,
//! before the access token expires).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use super::grant::Grant;
use super::state::{self, Kind};
use super::{Issuer, claims, client_auth, session, standing, tokens};

fn unauthorized() -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(
            "Bearer error=\"invalid_token\", error_description=\"the access token is missing, expired or revoked\"",
        ));
    response
}

/// `GET|POST /userinfo`.
pub async fn userinfo(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let Ok(ring) = issuer.keys.keyring().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let Some(access) = tokens::verify_access_token(&ring, &issuer.url, token.trim()) else {
        return unauthorized();
    };
    let Some((namespace, name)) = state::located(&access.sid, Kind::Grant) else { return unauthorized() };
    // The grant existed when the token was signed: the watch has it, unless it is gone or
    // this replica's watch is behind (then the API server answers).
    let signin = &issuer.portal.signin;
    let secret = match signin.caches.secrets.get(&ObjectRef::new(&name).within(&namespace)) {
        Some(secret) => secret,
        None => match state::read(&signin.client, &namespace, &name).await {
            Ok(Some(secret)) => Arc::new(secret),
            Ok(None) => return unauthorized(),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
    };
    let now = Timestamp::now();
    let user = match session::of_grant(&issuer, &secret, now).await {
        Ok(Some(live)) => live.user,
        Ok(None) => return unauthorized(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let Some(found) = Grant::of(&secret) else { return unauthorized() };
    let Some(client) = client_auth::registered(&issuer, &found.client) else { return unauthorized() };
    if found.user_uid != access.sub
        || standing::with_client(signin, &client, &user, &found.user_uid, &found.stamp, now).is_err()
    {
        return unauthorized();
    }
    let verified =
        claims::email_verified(&user, issuer.portal.signin.caches.credentials_of(&user).as_deref());
    Json(Value::Object(claims::claims(&user, &found.scopes, verified))).into_response()
}
