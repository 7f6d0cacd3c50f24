//! The portal's JSON API, for a company's own front end: the same steps as the pages.
//! Bodies must be `application/json` (a browser will not send that cross-site without
//! CORS, which the portal does not allow), errors are `{"error": code, "message": text}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::links::{self, LinkProblem, Stage};
use super::login::{LoginOutcome, LoginRequest};
use super::onboarding::{self, StepError, TotpOffer};
use super::recovery::Asked;
use super::{Portal, login};
use super::{password_reset, reenrolment, verification};
use crate::api::User;

/// `POST /api/v1/invites/{token}/accept`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The new password.
    pub password: String,
}

/// `POST /api/v1/invites/{token}/totp`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpRequest {
    /// The code the authenticator app shows.
    pub code: String,
}

/// A JSON error answer: `{"error": code, "message": message}`.
pub fn problem(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": code, "message": message.into()}))).into_response()
}

/// 503 with `Retry-After`: every password check is busy.
pub fn busy() -> Response {
    try_again(problem(StatusCode::SERVICE_UNAVAILABLE, "busy", StepError::Busy.to_string()))
}

/// 503 with `Retry-After`: the cluster cannot take a write now (or did not confirm it in time).
pub fn unavailable() -> Response {
    try_again(problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", StepError::Unavailable.to_string()))
}

/// `response` with `Retry-After: 1`.
pub fn try_again(mut response: Response) -> Response {
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    response
}

fn link_problem(problem_: LinkProblem) -> Response {
    problem(problem_.status(), problem_.code(), problem_.message())
}

fn step_error(error: StepError) -> Response {
    match error {
        StepError::Link(p) => link_problem(p),
        StepError::AlreadyDone => problem(StatusCode::CONFLICT, "passwordAlreadySet", error.to_string()),
        StepError::PasswordFirst => problem(StatusCode::CONFLICT, "passwordNotSet", error.to_string()),
        StepError::WrongPassword => {
            problem(StatusCode::UNAUTHORIZED, "invalidCredentials", error.to_string())
        }
        StepError::Policy(violation) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "passwordPolicy", format!("the password {violation}"))
        }
        StepError::Code(rejected) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "invalidCode", rejected.to_string())
        }
        StepError::Busy => busy(),
        StepError::Unavailable => unavailable(),
        StepError::Internal => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()),
    }
}

/// The name of a link's next step, with the TOTP setup when that step is the app's.
fn next_step(
    portal: &Portal,
    user: &User,
    stage: &Stage,
) -> Result<(&'static str, Option<TotpOffer>), StepError> {
    match stage {
        Stage::Password => Ok(("password", None)),
        Stage::EnrolTotp(secret) => Ok(("totp", Some(onboarding::offer(portal, user, secret)?))),
    }
}

/// `GET /api/v1/invites/{token}`: whether the link can be used, for whom, and the next step.
pub async fn invite(State(portal): State<Arc<Portal>>, Path(token): Path<String>) -> Response {
    let link = match links::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    let spec = &link.user.spec;
    let (step, totp) = match next_step(&portal, &link.user, &link.stage) {
        Ok(next) => next,
        Err(e) => return step_error(e),
    };
    Json(json!({
        "valid": true,
        "user": {"email": spec.email, "displayName": spec.display_name, "givenName": spec.given_name},
        "expiresAt": link.expires_at.map(|t| t.to_string()),
        "mfaRequired": spec.mfa.required,
        "step": step,
        "totp": totp,
    }))
    .into_response()
}

/// `POST /api/v1/invites/{token}/accept`: sets the password; answers the TOTP setup, or
/// `ACTIVE` when the user needs no second factor.
pub async fn accept(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    Json(request): Json<AcceptRequest>,
) -> Response {
    let link = match links::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    match onboarding::set_password(&portal, &link, &request.password).await {
        Ok(Some(offer)) => Json(json!({"totp": offer})).into_response(),
        Ok(None) => Json(json!({"totp": null, "phase": "ACTIVE"})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `POST /api/v1/invites/{token}/totp`: confirms the authenticator app; onboarding is done.
pub async fn totp(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    Json(request): Json<TotpRequest>,
) -> Response {
    let link = match links::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    match onboarding::confirm_totp(&portal, &link, &request.code).await {
        Ok(()) => Json(json!({"phase": "ACTIVE"})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `GET /api/v1/mfa-resets/{token}`: whether the re-enrolment link can be used, and the
/// next step.
pub async fn reset(State(portal): State<Arc<Portal>>, Path(token): Path<String>) -> Response {
    let link = match reenrolment::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    let (step, totp) = match next_step(&portal, &link.user, &link.stage) {
        Ok(next) => next,
        Err(e) => return step_error(e),
    };
    Json(json!({
        "valid": true,
        "user": {"email": link.user.spec.email},
        "expiresAt": link.expires_at.map(|t| t.to_string()),
        "step": step,
        "totp": totp,
    }))
    .into_response()
}

/// `POST /api/v1/mfa-resets/{token}/accept`: proves the current password; answers the new
/// TOTP setup. A wrong password is 401 and counts as a failed sign-in.
pub async fn reset_accept(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    Json(request): Json<AcceptRequest>,
) -> Response {
    let link = match reenrolment::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    match reenrolment::prove_password(&portal, &link, &request.password).await {
        Ok(offer) => Json(json!({"totp": offer})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `POST /api/v1/mfa-resets/{token}/totp`: confirms the new authenticator app.
pub async fn reset_totp(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    Json(request): Json<TotpRequest>,
) -> Response {
    let link = match reenrolment::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    match reenrolment::confirm_totp(&portal, &link, &request.code).await {
        Ok(()) => Json(json!({"phase": "ACTIVE"})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `POST /api/v1/password-resets/{token}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPasswordRequest {
    /// The new password.
    pub password: String,
    /// A current code, when the user has a second factor.
    #[serde(default)]
    pub code: Option<String>,
}

/// `GET /api/v1/password-resets/{token}`: whether the link can be used, and whether a code
/// must come with the new password.
pub async fn password_reset(State(portal): State<Arc<Portal>>, Path(token): Path<String>) -> Response {
    match password_reset::open(&portal, &token, Timestamp::now()) {
        Ok(link) => Json(json!({
            "valid": true,
            "user": {"email": link.user.spec.email},
            "expiresAt": link.expires_at.map(|t| t.to_string()),
            "codeRequired": link.code_required,
        }))
        .into_response(),
        Err(problem_) => link_problem(problem_),
    }
}

/// `POST /api/v1/password-resets/{token}`: sets the new password; `{"phase": "ACTIVE"}`.
pub async fn password_reset_set(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    Json(request): Json<NewPasswordRequest>,
) -> Response {
    let link = match password_reset::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    let code = request.code.unwrap_or_default();
    match password_reset::set_password(&portal, &link, &request.password, &code).await {
        Ok(()) => Json(json!({"phase": "ACTIVE"})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `GET /api/v1/email-verifications/{token}`: whether the link can be used, for which address.
pub async fn verification(State(portal): State<Arc<Portal>>, Path(token): Path<String>) -> Response {
    match verification::open(&portal, &token, Timestamp::now()) {
        Ok(link) => Json(json!({"valid": true, "email": link.address})).into_response(),
        Err(problem_) => link_problem(problem_),
    }
}

/// `POST /api/v1/email-verifications/{token}`: marks the address verified.
pub async fn verify(State(portal): State<Arc<Portal>>, Path(token): Path<String>) -> Response {
    let link = match verification::open(&portal, &token, Timestamp::now()) {
        Ok(link) => link,
        Err(problem_) => return link_problem(problem_),
    };
    match verification::verify(&portal, &link).await {
        Ok(()) => Json(json!({"verified": link.address})).into_response(),
        Err(e) => step_error(e),
    }
}

/// `POST /api/v1/login`: 200 with the profile, 401 for any wrong credential, 403 when the
/// account is deactivated or locked.
pub async fn login(
    State(portal): State<Arc<Portal>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Response {
    if !portal.signin.caches.is_ready() {
        return link_problem(LinkProblem::Starting);
    }
    match login::login(&portal, &request, portal.address_of(peer, &headers)).await {
        Ok(LoginOutcome::Success(profile)) => Json(profile).into_response(),
        Ok(LoginOutcome::Denied) => {
            problem(StatusCode::UNAUTHORIZED, "invalidCredentials", "the sign-in details are not correct")
        }
        Ok(LoginOutcome::Busy) => busy(),
        Ok(LoginOutcome::Inactive) => problem(
            StatusCode::FORBIDDEN,
            "accountInactive",
            "this account is deactivated or locked; ask your administrator",
        ),
        Err(error) if crate::facts::Transient::is_transient(&error) => {
            tracing::warn!(%error, "a sign-in could not be recorded; the person is asked to try again");
            unavailable()
        }
        Err(error) => {
            tracing::error!(%error, "a sign-in could not be recorded");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; try again",
            )
        }
    }
}

/// `GET /readyz`: 200 once the watch caches are filled.
pub async fn readyz(State(portal): State<Arc<Portal>>) -> Response {
    if portal.signin.caches.is_ready() {
        "ready".into_response()
    } else {
        link_problem(LinkProblem::Starting)
    }
}

/// `POST /api/v1/password-resets`: "forgot your password?".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// The account's email address or username.
    pub identifier: String,
}

/// `POST /api/v1/password-resets`: 202 for any account, known or not (if it exists and may
/// recover, its email address gets a link that works for an hour); 429 with `Retry-After`
/// when this client address has asked too often; 400 when the identifier is empty.
pub async fn recover(
    State(portal): State<Arc<Portal>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<RecoverRequest>,
) -> Response {
    let client = portal.address_of(peer, &headers);
    match portal.recovery.ask(&request.identifier, client) {
        Asked::Taken => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "accepted",
                "message": "if an account with this email address or username exists and may recover, a link to choose a new password was emailed to it; it works for an hour",
            })),
        )
            .into_response(),
        Asked::TooMany(wait) => super::guard::retry_after(
            problem(StatusCode::TOO_MANY_REQUESTS, "tooManyRequests", "too many recovery requests; try again later"),
            wait,
        ),
        Asked::Empty => problem(
            StatusCode::BAD_REQUEST,
            "identifierRequired",
            "identifier must be the account's email address or username (at most 254 characters)",
        ),
    }
}
