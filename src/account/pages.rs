//! The account page: `GET /account` shows it (or a sign-in form without a session);
//! its forms post to `/account/signin`, `/account/password`, `/account/authenticator`,
//! `/account/authenticator/confirm` and `/account/sessions/end`, each answered with the page
//! again and what happened. Works without JavaScript; every form carries the form token and
//! must come from the issuer's own origin.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::jiff::Timestamp;
use minijinja::context;
use serde::Deserialize;

use super::credentials::Pending;
use super::{AccountError, credentials, overview, sessions, signed_in};
use crate::mail::for_people;
use crate::oidc::authorize::{NotStarted, Typed, start_session};
use crate::oidc::session::{self, Live};
use crate::oidc::{Issuer, form_page, same_origin};
use crate::portal::guard::form_token_matches;
use crate::portal::pages::{grouped, qr_data_uri};

/// What the account page's forms post (each form some of it). No `Debug`: passwords.
#[derive(Default, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirm: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    all: String,
}

const EXPIRED_FORM: &str = "This form expired. Try again. (Cookies must be allowed for this site.)";

/// `GET /account`.
pub async fn show(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    match signed_in(&issuer, &headers).await {
        Some(live) => page(&issuer, &headers, &live, StatusCode::OK, Said::Nothing),
        None => sign_in_form(&issuer, &headers, StatusCode::OK, "", Said::Nothing),
    }
}

/// `POST /account/signin`: signs the person in and shows the page.
pub async fn sign_in(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(posted): Form<AccountForm>,
) -> Response {
    if !form_token_matches(&headers, &posted.form_token) || !same_origin(&issuer, &headers) {
        return sign_in_form(
            &issuer,
            &headers,
            StatusCode::FORBIDDEN,
            &posted.identifier,
            Said::Error(EXPIRED_FORM),
        );
    }
    let typed = Typed { identifier: &posted.identifier, password: &posted.password, code: &posted.code };
    let address = issuer.portal.address_of(peer, &headers);
    match start_session(&issuer, None, &headers, &typed, address, Timestamp::now()).await {
        Ok(started) => {
            // The page the browser is sent to looks the session up in this replica's cache.
            if let Some(version) = started.secret.metadata.resource_version.as_deref() {
                crate::facts::await_cached(&issuer.portal.signin.caches.secrets, &started.secret, version)
                    .await;
            }
            let mut response = Redirect::to(&issuer.endpoint_path("/account")).into_response();
            started.set_cookie(&mut response);
            response
        }
        Err(NotStarted::Again(status, error)) => {
            sign_in_form(&issuer, &headers, status, &posted.identifier, Said::Error(error))
        }
        Err(NotStarted::Denied(message)) => {
            sign_in_form(&issuer, &headers, StatusCode::FORBIDDEN, &posted.identifier, Said::Error(message))
        }
    }
}

/// `POST /account/password`.
pub async fn password(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(posted): Form<AccountForm>,
) -> Response {
    let live = match guarded(&issuer, &headers, &posted).await {
        Ok(live) => live,
        Err(answer) => return *answer,
    };
    if posted.new_password != posted.new_password_confirm {
        let said = Said::Error("The two new passwords differ. Type the same one twice.");
        return page(&issuer, &headers, &live, StatusCode::UNPROCESSABLE_ENTITY, said);
    }
    let address = issuer.portal.address_of(peer, &headers);
    let changed = credentials::change_password(
        &issuer,
        &live,
        &posted.current_password,
        &posted.code,
        &posted.new_password,
        address,
    )
    .await;
    outcome(
        &issuer,
        &headers,
        &live,
        changed,
        "Your password was changed. Everywhere else you are signed out.",
    )
}

/// `POST /account/authenticator`: the new app's setup, shown on the page.
pub async fn authenticator(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(posted): Form<AccountForm>,
) -> Response {
    let live = match guarded(&issuer, &headers, &posted).await {
        Ok(live) => live,
        Err(answer) => return *answer,
    };
    let address = issuer.portal.address_of(peer, &headers);
    let begun = credentials::begin_replacement(&issuer, &live, &posted.password, &posted.code, address).await;
    outcome(&issuer, &headers, &live, begun.map(drop), "Now add the new app and confirm it with its code.")
}

/// `POST /account/authenticator/confirm`.
pub async fn confirm(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(posted): Form<AccountForm>,
) -> Response {
    let live = match guarded(&issuer, &headers, &posted).await {
        Ok(live) => live,
        Err(answer) => return *answer,
    };
    let confirmed = credentials::confirm_replacement(&issuer, &live, &posted.code).await;
    let done = "Your new authenticator app is set up; the old one no longer works. Everywhere else you are signed out.";
    outcome(&issuer, &headers, &live, confirmed, done)
}

/// `POST /account/sessions/end`: one session (`session`), or all (`all=yes`).
pub async fn end_sessions(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(posted): Form<AccountForm>,
) -> Response {
    let live = match guarded(&issuer, &headers, &posted).await {
        Ok(live) => live,
        Err(answer) => return *answer,
    };
    let ended = if posted.all == "yes" {
        sessions::end_all(&issuer, &live).await.map(|_| true)
    } else {
        sessions::end(&issuer, &live, &posted.session).await
    };
    match ended {
        Ok(true) => {
            let said = Said::Notice("You are signed out.");
            let mut response = sign_in_form(&issuer, &headers, StatusCode::OK, "", said);
            session::clear_cookie(&mut response, issuer.https());
            response
        }
        ended => outcome(&issuer, &headers, &live, ended.map(drop), "That session is signed out."),
    }
}

/// What the page says at the top.
#[derive(Clone, Copy)]
enum Said<'a> {
    Nothing,
    Notice(&'a str),
    Error(&'a str),
}

impl<'a> Said<'a> {
    /// The page's notice and error.
    fn parts(self) -> (Option<&'a str>, Option<&'a str>) {
        match self {
            Said::Nothing => (None, None),
            Said::Notice(text) => (Some(text), None),
            Said::Error(text) => (None, Some(text)),
        }
    }
}

/// The person of a posted form: its form token and origin checked, signed in.
async fn guarded(issuer: &Issuer, headers: &HeaderMap, posted: &AccountForm) -> Result<Live, Box<Response>> {
    let live = signed_in(issuer, headers).await;
    let trusted = form_token_matches(headers, &posted.form_token) && same_origin(issuer, headers);
    match live {
        Some(live) if trusted => Ok(live),
        Some(live) => {
            Err(Box::new(page(issuer, headers, &live, StatusCode::FORBIDDEN, Said::Error(EXPIRED_FORM))))
        }
        None => {
            let said = Said::Error("Sign in first: you are not signed in on this browser.");
            Err(Box::new(sign_in_form(issuer, headers, StatusCode::UNAUTHORIZED, "", said)))
        }
    }
}

/// The page again, saying how a change ended.
fn outcome(
    issuer: &Issuer,
    headers: &HeaderMap,
    live: &Live,
    result: Result<(), AccountError>,
    done: &str,
) -> Response {
    match result {
        Ok(()) => page(issuer, headers, live, StatusCode::OK, Said::Notice(done)),
        Err(e) => {
            let message = sentence(&e.to_string());
            page(issuer, headers, live, e.status(), Said::Error(&message))
        }
    }
}

/// `text` with a capital first letter and a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// The account page of the person signed in with `live`.
fn page(issuer: &Issuer, headers: &HeaderMap, live: &Live, status: StatusCode, said: Said<'_>) -> Response {
    let account = overview::of(issuer, live);
    let spec = &live.user.spec;
    let name = spec.display_name.clone().unwrap_or_else(|| {
        [spec.given_name.as_deref(), spec.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    });
    let sessions: Vec<_> = account
        .sessions
        .iter()
        .map(|s| {
            context! {
                id => &s.id, current => s.current, address => &s.address, clients => &s.clients,
                started => for_people(s.started), last_used => for_people(s.last_used),
            }
        })
        .collect();
    let history: Vec<_> = account
        .recent_sign_ins
        .iter()
        .map(|a| context! { at => for_people(a.at), succeeded => a.succeeded, address => a.address.map(|a| a.to_string()) })
        .collect();
    let (notice, error) = said.parts();
    let extra = context! {
        email => &account.profile.email,
        email_verified => account.email_verified,
        username => &account.profile.username,
        groups => account.profile.groups.join(", "),
        phase => account.phase.map(|phase| phase.to_string()),
        authenticator => account.authenticator,
        name => if name.is_empty() { live.user.spec.email.clone() } else { name },
        expires => account.expires_at.map(for_people),
        sessions => sessions,
        history => history,
        offer => pending_offer(issuer, live),
        base => issuer.endpoint_path("/account"),
        min_length => issuer.portal.policy.min_length,
        notice => notice,
        error => error,
    };
    form_page(issuer, headers, status, "account.html", "/account", &serde_json::json!({}), None, extra)
}

/// The new authenticator app this session asked for, waiting to be confirmed, as the page
/// shows it (to this session only, until it is confirmed or late).
fn pending_offer(issuer: &Issuer, live: &Live) -> Option<minijinja::Value> {
    let credentials = issuer.portal.signin.caches.credentials_of(&live.user)?;
    let pending = Pending::for_session(&credentials, live.secret.metadata.uid.as_deref(), Timestamp::now())?;
    let offer = crate::portal::onboarding::offer(&issuer.portal, &live.user, &pending.secret).ok()?;
    let qr = qr_data_uri(&offer.otpauth_uri)?;
    Some(context! { qr => qr, uri => &offer.otpauth_uri, grouped => grouped(&offer.secret) })
}

/// The sign-in form that leads to the account page.
fn sign_in_form(
    issuer: &Issuer,
    headers: &HeaderMap,
    status: StatusCode,
    identifier: &str,
    said: Said<'_>,
) -> Response {
    let (notice, error) = said.parts();
    let extra = context! { hint => identifier, error => error, notice => notice };
    form_page(issuer, headers, status, "signin.html", "/account/signin", &serde_json::json!({}), None, extra)
}
