//! The account page's JSON API, for a company's own front end on the issuer's origin:
//! `GET /api/v1/account` (the [`super::overview`]), `POST …/password`,
//! `POST …/authenticator` and `…/authenticator/confirm`, `DELETE …/sessions[/{id}]`.
//! Behind the session cookie; a request another site's page makes is refused (the browser's
//! `Origin` and `Sec-Fetch-Site`), and a POST must carry JSON, which a form elsewhere cannot
//! send without the browser asking first. Errors are `{"error", "message"}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AccountError, credentials, overview, sessions, signed_in};
use crate::oidc::session::{self, Live};
use crate::oidc::{Issuer, same_origin};
use crate::portal::api::{busy, problem, unavailable};

/// `POST /api/v1/account/password`. (No `Debug`: it holds passwords.)
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    #[serde(default)]
    code: String,
    new_password: String,
}

/// `POST /api/v1/account/authenticator`: a current code, or the password when no
/// authenticator is enrolled.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

/// `POST /api/v1/account/authenticator/confirm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    code: String,
}

/// `GET /api/v1/account`.
pub async fn overview(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    match person(&issuer, &headers).await {
        Ok(live) => Json(overview::of(&issuer, &live)).into_response(),
        Err(refused) => *refused,
    }
}

/// `POST /api/v1/account/password`: 204 once changed (other sessions are signed out).
pub async fn password(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<PasswordChange>,
) -> Response {
    let live = match person(&issuer, &headers).await {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    let address = issuer.portal.address_of(peer, &headers);
    let changed = credentials::change_password(
        &issuer,
        &live,
        &body.current_password,
        &body.code,
        &body.new_password,
        address,
    )
    .await;
    answer(changed.map(|()| StatusCode::NO_CONTENT.into_response()))
}

/// `POST /api/v1/account/authenticator`: the new app's secret and `otpauth://` URI.
pub async fn authenticator(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Replacement>,
) -> Response {
    let live = match person(&issuer, &headers).await {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    let address = issuer.portal.address_of(peer, &headers);
    let begun = credentials::begin_replacement(&issuer, &live, &body.password, &body.code, address).await;
    answer(begun.map(|offer| Json(offer).into_response()))
}

/// `POST /api/v1/account/authenticator/confirm`: 204 once the new app replaced the old one.
pub async fn confirm(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Json(body): Json<Confirmation>,
) -> Response {
    let live = match person(&issuer, &headers).await {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    answer(
        credentials::confirm_replacement(&issuer, &live, &body.code)
            .await
            .map(|()| StatusCode::NO_CONTENT.into_response()),
    )
}

/// `DELETE /api/v1/account/sessions/{id}`: 204; this browser's own session clears its cookie.
pub async fn end_one(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let live = match person(&issuer, &headers).await {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    answer(sessions::end(&issuer, &live, &id).await.map(|current| signed_out(&issuer, current)))
}

/// `DELETE /api/v1/account/sessions`: every session signed out, this one too.
pub async fn end_all(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    let live = match person(&issuer, &headers).await {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    answer(sessions::end_all(&issuer, &live).await.map(|_| signed_out(&issuer, true)))
}

/// 204, clearing the session cookie when `current`.
fn signed_out(issuer: &Issuer, current: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if current {
        session::clear_cookie(&mut response, issuer.https());
    }
    response
}

/// The person signed in on this browser, or the answer that refuses the request.
async fn person(issuer: &Issuer, headers: &HeaderMap) -> Result<Live, Box<Response>> {
    if !same_origin(issuer, headers) {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "crossOrigin",
            "the account API answers the issuer's own pages only",
        )));
    }
    signed_in(issuer, headers).await.ok_or_else(|| {
        Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "signInRequired",
            "no signed-in session on this browser: sign in at the account page first",
        ))
    })
}

fn answer(result: Result<Response, AccountError>) -> Response {
    match result {
        Ok(response) => response,
        Err(AccountError::Busy) => busy(),
        Err(AccountError::Unavailable) => unavailable(),
        Err(e) => problem(e.status(), e.code(), e.to_string()),
    }
}
