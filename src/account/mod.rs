//! The person's own account, at `/account` under the issuer: what is declared about them
//! (read-only — it lives in Git), their phase and groups, their sessions and recent
//! sign-ins; and what they may change themselves — the password, the authenticator app,
//! which sessions stay signed in. It is behind the issuer's sign-in session (the cookie of
//! [`crate::oidc::session`]), and two doors — HTML pages ([`pages`]) and a JSON API
//! ([`api`]) — share one set of decisions: what proves the person ([`proof`]), the changes
//! ([`credentials`]), the sessions ([`sessions`]) and what the page shows ([`overview`]).

pub mod api;
pub mod credentials;
pub mod overview;
pub mod pages;
pub mod proof;
pub mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use k8s_openapi::jiff::Timestamp;

use crate::credentials::PolicyViolation;
use crate::oidc::Issuer;
use crate::oidc::session::{self, Live};

/// Why a change on the account page was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The current password or code is wrong (counted as a failed sign-in; which of them
    /// is not said).
    #[error("the current password or code is not correct")]
    WrongProof,
    /// The new authenticator app's code is wrong or expired.
    #[error("the code is wrong or expired")]
    WrongCode,
    /// The person's credentials changed since this session's sign-in (elsewhere, meanwhile).
    #[error("your password or authenticator changed meanwhile; sign in again")]
    CredentialsChanged,
    /// The new password breaks a rule.
    #[error("the new password {0}")]
    Policy(PolicyViolation),
    /// No new authenticator waits to be confirmed.
    #[error("no new authenticator is waiting to be confirmed; start again")]
    NothingPending,
    /// No session of this person has that ID.
    #[error("there is no such session")]
    NoSuchSession,
    /// Every password check is busy.
    #[error("too many requests at once; try again in a moment")]
    Busy,
    /// The cluster cannot take the write now (or did not confirm it in time).
    #[error("this could not be confirmed just now: reload to see whether it took effect, then try again")]
    Unavailable,
    /// roster failed; the log says why.
    #[error("something went wrong on our side; try again")]
    Internal,
}

impl AccountError {
    /// The HTTP status both doors answer it with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::WrongProof | Self::WrongCode => StatusCode::FORBIDDEN,
            Self::CredentialsChanged => StatusCode::CONFLICT,
            Self::Policy(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NothingPending => StatusCode::CONFLICT,
            Self::NoSuchSession => StatusCode::NOT_FOUND,
            Self::Busy | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongProof => "wrongProof",
            Self::WrongCode => "wrongCode",
            Self::CredentialsChanged => "credentialsChanged",
            Self::Policy(_) => "passwordPolicy",
            Self::NothingPending => "nothingPending",
            Self::NoSuchSession => "sessionNotFound",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// A credentials write that failed: [`AccountError::Unavailable`] when trying again may
/// work, else [`AccountError::Internal`]; logged either way.
fn unwritten(error: impl crate::facts::Transient) -> AccountError {
    if error.is_transient() {
        tracing::warn!(%error, "an account change could not be saved; the person is asked to try again");
        AccountError::Unavailable
    } else {
        internal(error)
    }
}

/// Logs what failed and answers [`AccountError::Internal`].
fn internal(error: impl std::fmt::Display) -> AccountError {
    tracing::error!(%error, "an account page step failed");
    AccountError::Internal
}

/// The person signed in on this browser, if their session is usable; the visit counts as a
/// use of the session.
pub async fn signed_in(issuer: &Issuer, headers: &HeaderMap) -> Option<Live> {
    let now = Timestamp::now();
    let live = session::usable(issuer, headers, now).await?;
    session::touch(issuer, &live, now).await;
    Some(live)
}

/// The account page's routes (pages and JSON API), under the issuer's path.
pub fn routes(issuer: &Issuer) -> Router<Arc<Issuer>> {
    let at = |path: &str| issuer.endpoint_path(path);
    Router::new()
        .route(&at("/account"), get(pages::show))
        .route(&at("/account/signin"), post(pages::sign_in))
        .route(&at("/account/password"), post(pages::password))
        .route(&at("/account/authenticator"), post(pages::authenticator))
        .route(&at("/account/authenticator/confirm"), post(pages::confirm))
        .route(&at("/account/sessions/end"), post(pages::end_sessions))
        .route(&at("/api/v1/account"), get(api::overview))
        .route(&at("/api/v1/account/password"), post(api::password))
        .route(&at("/api/v1/account/authenticator"), post(api::authenticator))
        .route(&at("/api/v1/account/authenticator/confirm"), post(api::confirm))
        .route(&at("/api/v1/account/sessions"), delete(api::end_all))
        .route(&at("/api/v1/account/sessions/{id}"), delete(api::end_one))
}
