//! The authorization endpoint and its sign-in page: `GET /authorize` checks the request and
//! either signs the client in with the browser's live session ([`super::session`]; unless
//! `prompt=login` or `max_age` asks for a fresh sign-in) or shows the form; `POST
//! /authorize` signs the person in with the shared decision ([`crate::signin`]: password and
//! TOTP code together, lockout, replay guard, generic errors), starts a session and sends
//! them back to the client with a code. A person who may not have tokens (deactivated,
//! locked, re-enrolling, not admitted by the client) is told why on a page whose link
//! returns `access_denied` to the client. Usable without JavaScript: the request travels in
//! hidden fields and is checked again on every post.

use std::sync::Arc;

use axum::Form;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use minijinja::context;
use serde::Deserialize;

use super::request::{self, AuthRequest, Params, Prompt, Refusal};
use super::session::{self, Next, Session};
use super::{Issuer, client_auth, grant, state};
use crate::api::{OidcClient, User};
use crate::directory::Identifier;
use crate::portal::guard::form_token_matches;
use crate::registration;
use crate::signin::{self, Outcome};

/// What the sign-in form posts: the person's answers and the request, carried along.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(flatten)]
    params: Params,
}

/// `GET /authorize`.
pub async fn start(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let (client, request) = match checked(&issuer, &params) {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let now = Timestamp::now();
    let live = session::usable(&issuer, &headers, now).await;
    let max_age = max_age_for(&client, &request);
    match session::next(live.as_ref().map(|live| &live.session), request.prompt, max_age, now) {
        Next::LoginRequired => back_with_error(
            &issuer,
            &request.redirect_uri,
            "login_required",
            "the person must sign in",
            request.state.as_deref(),
        ),
        Next::SignIn => {
            let hint = request.login_hint.clone().unwrap_or_default();
            form(&issuer, &client, &params, &headers, StatusCode::OK, &hint, None)
        }
        Next::Reuse => {
            let Some(live) = live else { return unavailable(&issuer) };
            if !admitted(&client, &live.user) {
                if request.prompt == Prompt::None {
                    return back_with_error(
                        &issuer,
                        &request.redirect_uri,
                        "access_denied",
                        "the person may not sign in to this client",
                        request.state.as_deref(),
                    );
                }
                return denied(&issuer, &client, &request, NOT_ADMITTED);
            }
            session::touch(&issuer, &live, now).await;
            match code_for(&issuer, &live.user, &live.secret, &live.session, &request, now).await {
                Ok(redirect) => redirect,
                Err(()) => unavailable(&issuer),
            }
        }
    }
}

/// `POST /authorize`: the sign-in.
pub async fn sign_in(
    State(issuer): State<Arc<Issuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(posted): Form<SignInForm>,
) -> Response {
    let (client, request) = match checked(&issuer, &posted.params) {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let again = |status, error: &str| {
        form(&issuer, &client, &posted.params, &headers, status, &posted.identifier, Some(error))
    };
    if !form_token_matches(&headers, &posted.form_token) {
        return again(
            StatusCode::FORBIDDEN,
            "This form expired. Sign in again. (Cookies must be allowed for this site.)",
        );
    }
    let now = Timestamp::now();
    let typed = Typed { identifier: &posted.identifier, password: &posted.password, code: &posted.code };
    let address = issuer.portal.address_of(peer, &headers);
    let started = start_session(&issuer, Some(&client), &headers, &typed, address, now).await;
    let started = match started {
        Ok(started) => started,
        Err(NotStarted::Again(status, error)) => return again(status, error),
        Err(NotStarted::Denied(message)) => return denied(&issuer, &client, &request, message),
    };
    let Ok(mut response) =
        code_for(&issuer, &started.user, &started.secret, &started.session, &request, now).await
    else {
        return again(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WRONG);
    };
    started.set_cookie(&mut response);
    response
}

pub(crate) const SOMETHING_WRONG: &str = "Something went wrong. Try again in a moment.";

/// A person signed in on one of the issuer's forms, with the session that started.
pub(crate) struct Started {
    /// Who.
    pub user: Arc<User>,
    /// The session's Secret, as created.
    pub secret: Secret,
    /// The session.
    pub session: Session,
    /// The `Set-Cookie` value that hands the session to the browser.
    cookie: String,
}

impl Started {
    /// Hands the session to the browser.
    pub fn set_cookie(&self, response: &mut Response) {
        if let Ok(value) = HeaderValue::from_str(&self.cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// Why a form's sign-in started no session.
pub(crate) enum NotStarted {
    /// The form again, with this status and error.
    Again(StatusCode, &'static str),
    /// A page that tells the person why they cannot sign in to this client.
    Denied(&'static str),
}

/// What a person typed on a sign-in form.
pub(crate) struct Typed<'a> {
    /// Email or username.
    pub identifier: &'a str,
    /// Password.
    pub password: &'a str,
    /// TOTP code, or empty.
    pub code: &'a str,
}

/// Signs the person in with what they `typed` on one of the issuer's forms, from `address`
/// (the shared decision: lockout, replay guard, generic errors), checks that they may have
/// tokens and that `client` (if the form is for one) admits them, and starts their session.
/// Another person's session on this browser ends.
pub(crate) async fn start_session(
    issuer: &Issuer,
    client: Option<&OidcClient>,
    headers: &HeaderMap,
    typed: &Typed<'_>,
    address: IpAddr,
    now: Timestamp,
) -> Result<Started, NotStarted> {
    let identifier = Identifier::typed_in(typed.identifier);
    let outcome =
        signin::sign_in(&issuer.portal.signin, identifier, typed.password, typed.code, Some(address)).await;
    let (user, totp) = match outcome {
        Ok(Outcome::Success { user, totp }) => (user, totp),
        Ok(Outcome::Denied) => {
            return Err(NotStarted::Again(
                StatusCode::UNAUTHORIZED,
                "That did not work. Check your email or username, password and code.",
            ));
        }
        Ok(Outcome::Inactive) => {
            return Err(NotStarted::Denied(
                "Your account cannot sign in now: it is deactivated or locked. Ask your administrator.",
            ));
        }
        Ok(Outcome::Busy) => {
            return Err(NotStarted::Again(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins at once. Try again in a moment.",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording a sign-in failed");
            return Err(NotStarted::Again(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WRONG));
        }
    };
    let Some(credentials) = issuer.portal.signin.caches.credentials_of(&user) else {
        return Err(NotStarted::Again(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WRONG));
    };
    if let Some(barrier) = issuer.portal.signin.barrier(&user, &credentials, now) {
        return Err(NotStarted::Denied(barrier.message()));
    }
    if client.is_some_and(|client| !admitted(client, &user)) {
        return Err(NotStarted::Denied(NOT_ADMITTED));
    }
    let amr: &[&str] = if totp { &["pwd", "otp"] } else { &["pwd"] };
    let stamp = grant::stamp(&credentials);
    let signed_in = Session::signed_in(&user, amr, stamp, now, &issuer.sessions, Some(address.to_string()));
    let started = match session::new(&user, &signed_in) {
        Ok((secret, token)) => {
            state::create(&issuer.portal.signin.client, &secret).await.map(|made| (made, token))
        }
        Err(e) => Err(e),
    };
    let (secret, token) = match started {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "starting a sign-in session failed");
            return Err(NotStarted::Again(StatusCode::SERVICE_UNAVAILABLE, SOMETHING_WRONG));
        }
    };
    // Another person signed in on this browser before: their session ends here.
    if let Some(previous) = session::current(issuer, headers, now)
        && previous.session.user_uid != signed_in.user_uid
    {
        session::end_logged(issuer, &previous.secret, "another person signed in on the same browser").await;
    }
    let cookie = session::cookie(&token, issuer.https(), signed_in.expires_at, now);
    Ok(Started { user, secret, session: signed_in, cookie })
}

pub(super) const NOT_ADMITTED: &str =
    "Your account may not use this application. Ask your administrator if you need it.";

/// The oldest sign-in (seconds) `request` accepts: its `max_age`, and for refresh tokens
/// the client's `refreshTokenAbsolute` — past it the person signs in again, rather than be
/// handed a refresh token that no longer works.
fn max_age_for(client: &OidcClient, request: &AuthRequest) -> Option<u64> {
    let absolute = client.spec.token_lifetimes.refresh_token_absolute.as_ref();
    let limit = absolute
        .filter(|_| request.scopes.contains(&crate::api::Scope::OfflineAccess))
        .map(|limit| std::time::Duration::from(*limit).as_secs());
    match (request.max_age, limit) {
        (Some(asked), Some(limit)) => Some(asked.min(limit)),
        (asked, limit) => asked.or(limit),
    }
}

/// Whether `client` admits `user` (logged when not).
pub(super) fn admitted(client: &OidcClient, user: &User) -> bool {
    let namespace = client.namespace().unwrap_or_default();
    let admits = registration::admits(&client.spec, &namespace, user);
    if !admits {
        let client = registration::client_id(&namespace, &client.name_any());
        tracing::info!(user = %signin::who(user), %client, "sign-in refused: the client does not admit the user");
    }
    admits
}

/// Makes the grant for `request` in the session and sends the person back to the client
/// with its code.
async fn code_for(
    issuer: &Issuer,
    user: &User,
    session_secret: &Secret,
    session: &Session,
    request: &AuthRequest,
    now: Timestamp,
) -> Result<Response, ()> {
    let made = match grant::new(user, session_secret, request, session, now) {
        Ok((secret, code)) => state::create(&issuer.portal.signin.client, &secret).await.map(|_| code),
        Err(e) => Err(e),
    };
    match made {
        Ok(code) => {
            tracing::info!(user = %signin::who(user), client = %request.client_id, "signed in to a client");
            let mut pairs = vec![("code", code.as_str()), ("iss", issuer.url.as_str())];
            if let Some(state) = request.state.as_deref() {
                pairs.push(("state", state));
            }
            Ok(Redirect::to(&request::redirect_with(&request.redirect_uri, &pairs)).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "making a grant failed");
            Err(())
        }
    }
}

/// A page that says the issuer cannot answer now.
fn unavailable(issuer: &Issuer) -> Response {
    issuer.portal.pages.render(
        StatusCode::SERVICE_UNAVAILABLE,
        "problem.html",
        context! { org => &issuer.portal.org_name, root => issuer.root(), title => "Try again in a moment", message => "Signing in is not possible right now." },
    )
}

/// The registered client and the checked request, or the answer that refuses it.
fn checked(issuer: &Issuer, params: &Params) -> Result<(Arc<OidcClient>, AuthRequest), Box<Response>> {
    let client = client_auth::registered(issuer, &params.client_id);
    match request::check(params, client.as_deref()) {
        Ok(request) => Ok((client.unwrap_or_else(|| unreachable!("check refuses a missing client")), request)),
        Err(Refusal::Page(message)) => Err(Box::new(issuer.portal.pages.render(
            StatusCode::BAD_REQUEST,
            "problem.html",
            context! { org => &issuer.portal.org_name, root => issuer.root(), title => "This sign-in link is not valid", message => message },
        ))),
        Err(Refusal::Redirect { redirect_uri, error, description, state }) => {
            Err(Box::new(back_with_error(issuer, &redirect_uri, error, description, state.as_deref())))
        }
    }
}

/// Back to the client with an OAuth error.
fn back_with_error(
    issuer: &Issuer,
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    Redirect::to(&error_uri(issuer, redirect_uri, error, description, state)).into_response()
}

fn error_uri(
    issuer: &Issuer,
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> String {
    let mut pairs = vec![("error", error), ("error_description", description), ("iss", issuer.url.as_str())];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    request::redirect_with(redirect_uri, &pairs)
}

/// A page that tells the person why, with a link that gives the client `access_denied`.
fn denied(issuer: &Issuer, client: &OidcClient, request: &AuthRequest, message: &str) -> Response {
    let back = error_uri(
        issuer,
        &request.redirect_uri,
        "access_denied",
        "the person may not sign in to this client",
        request.state.as_deref(),
    );
    issuer.portal.pages.render(
        StatusCode::FORBIDDEN,
        "denied.html",
        context! { org => &issuer.portal.org_name, root => issuer.root(), title => "You cannot sign in", message => message, back => back, client => client.name_any() },
    )
}

/// The sign-in form, carrying `params`; its content security policy lets the form's
/// answer redirect to the client.
fn form(
    issuer: &Issuer,
    client: &OidcClient,
    params: &Params,
    headers: &HeaderMap,
    status: StatusCode,
    identifier: &str,
    error: Option<&str>,
) -> Response {
    super::form_page(
        issuer,
        headers,
        status,
        "signin.html",
        "/authorize",
        params,
        Some(&params.redirect_uri),
        context! { client => client.name_any(), hint => identifier, error => error },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_clients_absolute_limit_a_refresh_token_needs_a_fresh_sign_in() {
        let client: OidcClient = serde_json::from_value(serde_json::json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "cli"},
            "spec": {"redirectUris": ["https://app.example.com/cb"], "tokenLifetimes": {"refreshTokenAbsolute": "8h"}},
        }))
        .unwrap();
        let mut request = AuthRequest {
            client_id: "team.cli".into(),
            redirect_uri: "https://app.example.com/cb".into(),
            scopes: vec![crate::api::Scope::OpenId],
            state: None,
            nonce: None,
            challenge: "c".into(),
            prompt: Prompt::Default,
            max_age: None,
            login_hint: None,
        };
        assert_eq!(max_age_for(&client, &request), None, "no refresh token asked for");
        request.scopes = vec![crate::api::Scope::OpenId, crate::api::Scope::OfflineAccess];
        assert_eq!(max_age_for(&client, &request), Some(8 * 3600));
        request.max_age = Some(60);
        assert_eq!(max_age_for(&client, &request), Some(60), "the request's own is shorter");
    }
}
