//! The authorization endpoint and its sign-in page: `GET /authorize` checks the request and
//! shows the form; `POST /authorize` signs the person in with the shared decision
//! ([`crate::signin`]: password and TOTP code together, lockout, replay guard, generic
//! errors) and sends them back to the client with a code. A person who may not have tokens
//! (deactivated, locked, re-enrolling, not admitted by the client) is told why on a page
//! whose link returns `access_denied` to the client. Usable without JavaScript: the request
//! travels in hidden fields and is checked again on every post.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use minijinja::context;
use serde::Deserialize;

use super::request::{self, AuthRequest, Params, Prompt, Refusal};
use super::{Issuer, client_auth, grant};
use crate::api::OidcClient;
use crate::directory::Identifier;
use crate::portal::guard::{form_cookie, form_token, form_token_matches};
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
    if request.prompt == Prompt::None {
        // No sign-in session yet: every sign-in shows the form.
        return back_with_error(
            &issuer,
            &request.redirect_uri,
            "login_required",
            "the person must sign in",
            request.state.as_deref(),
        );
    }
    let hint = request.login_hint.clone().unwrap_or_default();
    form(&issuer, &client, &params, &headers, StatusCode::OK, &hint, None)
}

/// `POST /authorize`: the sign-in.
pub async fn sign_in(
    State(issuer): State<Arc<Issuer>>,
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
    let identifier = Identifier::typed_in(&posted.identifier);
    let outcome = signin::sign_in(&issuer.portal.signin, identifier, &posted.password, &posted.code).await;
    let (user, totp) = match outcome {
        Ok(Outcome::Success { user, totp }) => (user, totp),
        Ok(Outcome::Denied) => {
            return again(
                StatusCode::UNAUTHORIZED,
                "That did not work. Check your email or username, password and code.",
            );
        }
        Ok(Outcome::Inactive) => {
            return denied(
                &issuer,
                &client,
                &request,
                "Your account cannot sign in now: it is deactivated or locked. Ask your administrator.",
            );
        }
        Ok(Outcome::Busy) => {
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins at once. Try again in a moment.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording a sign-in failed");
            return again(StatusCode::SERVICE_UNAVAILABLE, "Something went wrong. Try again in a moment.");
        }
    };
    let now = Timestamp::now();
    let Some(credentials) = issuer.portal.signin.caches.credentials_of(&user) else {
        return again(StatusCode::SERVICE_UNAVAILABLE, "Something went wrong. Try again in a moment.");
    };
    if let Some(barrier) = issuer.portal.signin.barrier(&user, &credentials, now) {
        return denied(&issuer, &client, &request, barrier.message());
    }
    if !registration::admits(&client.spec, &client.namespace().unwrap_or_default(), &user) {
        tracing::info!(user = %signin::who(&user), client = %request.client_id, "sign-in refused: the client does not admit the user");
        return denied(
            &issuer,
            &client,
            &request,
            "Your account may not use this application. Ask your administrator if you need it.",
        );
    }
    let amr: &[&str] = if totp { &["pwd", "otp"] } else { &["pwd"] };
    match grant::create(
        &issuer.portal.signin.client,
        &user,
        &request,
        amr,
        now,
        grant::stamp(&credentials),
        now,
    )
    .await
    {
        Ok(code) => {
            tracing::info!(user = %signin::who(&user), client = %request.client_id, "signed in to a client");
            let mut pairs = vec![("code", code.as_str()), ("iss", issuer.url.as_str())];
            if let Some(state) = request.state.as_deref() {
                pairs.push(("state", state));
            }
            Redirect::to(&request::redirect_with(&request.redirect_uri, &pairs)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "making a grant failed");
            again(StatusCode::SERVICE_UNAVAILABLE, "Something went wrong. Try again in a moment.")
        }
    }
}

/// The registered client and the checked request, or the answer that refuses it.
fn checked(issuer: &Issuer, params: &Params) -> Result<(Arc<OidcClient>, AuthRequest), Box<Response>> {
    let client = client_auth::registered(issuer, &params.client_id);
    match request::check(params, client.as_deref()) {
        Ok(request) => Ok((client.unwrap_or_else(|| unreachable!("check refuses a missing client")), request)),
        Err(Refusal::Page(message)) => Err(Box::new(issuer.portal.pages.render(
            StatusCode::BAD_REQUEST,
            "problem.html",
            context! { org => &issuer.portal.org_name, root => root(issuer), title => "This sign-in link is not valid", message => message },
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
        context! { org => &issuer.portal.org_name, root => root(issuer), title => "You cannot sign in", message => message, back => back, client => client.name_any() },
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
    let token = match form_token(headers) {
        Ok(token) => token,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let carried: Vec<(String, String)> = match serde_json::to_value(params) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    };
    let mut response = issuer.portal.pages.render(
        status,
        "signin.html",
        context! {
            org => &issuer.portal.org_name,
            root => root(issuer),
            action => issuer.endpoint_path("/authorize"),
            client => client.name_any(),
            params => carried,
            form_token => &token,
            hint => identifier,
            error => error,
        },
    );
    let headers = response.headers_mut();
    if let Ok(cookie) = HeaderValue::from_str(&form_cookie(&token, issuer.portal.https)) {
        headers.append(header::SET_COOKIE, cookie);
    }
    let origin =
        url::Url::parse(&params.redirect_uri).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self' {origin}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// Where the pages find the stylesheet.
fn root(issuer: &Issuer) -> String {
    format!("{}/", issuer.path)
}
