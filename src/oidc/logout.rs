//! RP-Initiated Logout (`GET|POST /logout`, OpenID Connect RP-Initiated Logout 1.0): ends
//! the person's sign-in session here — and with it every grant made in it, so the refresh
//! tokens of the apps they opened stop working — then sends them back to the client's
//! registered `post_logout_redirect_uri` (with `state`) or shows that they are signed out.
//!
//! Who may end a session: a client that shows an ID token roster signed (`id_token_hint`)
//! ends the session that token came from; otherwise the person confirms on a page (a form
//! with a form token), so a link on another site cannot sign anyone out. A return address
//! that the client did not register is refused on a page, never followed.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::state::{self, Kind};
use super::tokens::{self, IdHint};
use super::{Issuer, client_auth, request, session};
use crate::portal::guard::form_token_matches;

/// A logout request's parameters (query or form).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct LogoutParams {
    /// An ID token roster issued to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_hint: Option<String>,
    /// The client asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Where to send the person afterwards: one the client registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_logout_redirect_uri: Option<String>,
    /// Passed back to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The confirmation form's post.
#[derive(Deserialize)]
pub struct Confirmation {
    #[serde(default)]
    form_token: String,
    #[serde(flatten)]
    params: LogoutParams,
}

/// A checked logout request.
struct Plan {
    /// The hint, if it is an ID token roster signed for the client.
    hint: Option<IdHint>,
    /// Where to go afterwards, with `state`.
    back: Option<String>,
}

/// `GET /logout`: with a valid `id_token_hint`, signs out at once; otherwise asks.
pub async fn start(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Query(params): Query<LogoutParams>,
) -> Response {
    let plan = match checked(&issuer, &params).await {
        Ok(plan) => plan,
        Err(refused) => return *refused,
    };
    if plan.hint.is_some() {
        return sign_out(&issuer, &headers, plan).await;
    }
    match session::current(&issuer, &headers, Timestamp::now()) {
        Some(_) => confirmation(&issuer, &headers, &params),
        // Nothing to end here.
        None => finish(&issuer, plan),
    }
}

/// `POST /logout`: the person confirmed.
pub async fn confirm(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(posted): Form<Confirmation>,
) -> Response {
    let plan = match checked(&issuer, &posted.params).await {
        Ok(plan) => plan,
        Err(refused) => return *refused,
    };
    if !form_token_matches(&headers, &posted.form_token) {
        return confirmation(&issuer, &headers, &posted.params);
    }
    sign_out(&issuer, &headers, plan).await
}

/// Checks the client, the hint and the return address.
async fn checked(issuer: &Issuer, params: &LogoutParams) -> Result<Plan, Box<Response>> {
    let refuse = |message: &str| Box::new(problem(issuer, StatusCode::BAD_REQUEST, message));
    let hint = match params.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some(token) => {
            let ring = issuer.keys.keyring().await.map_err(|_| {
                Box::new(problem(
                    issuer,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Signing out is not possible right now.",
                ))
            })?;
            // One that does not verify (forged, or signed by a key long retired) is no hint:
            // the person is asked instead.
            tokens::verify_id_token_hint(&ring, &issuer.url, token)
        }
    };
    let client_id = match (hint.as_ref().map(|h| h.aud.as_str()), params.client_id.as_deref()) {
        (Some(aud), Some(id)) if aud != id => {
            return Err(refuse("The sign-out link names two different applications."));
        }
        (Some(aud), _) => Some(aud),
        (None, id) => id,
    };
    let client = client_id.and_then(|id| client_auth::registered(issuer, id));
    let back = match params.post_logout_redirect_uri.as_deref() {
        None | Some("") => None,
        Some(uri) => {
            let registered =
                client.as_ref().is_some_and(|c| c.spec.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                return Err(refuse(
                    "This sign-out link returns to an address the application did not register.",
                ));
            }
            let state = params.state.as_deref().filter(|s| s.len() <= request::MAX_ECHOED);
            Some(match state {
                Some(state) => request::redirect_with(uri, &[("state", state)]),
                None => uri.to_owned(),
            })
        }
    };
    Ok(Plan { hint, back })
}

/// Ends the hinted session and the browser's own (when it is the same person's), then
/// finishes. The browser's cookie is removed only when its session ended (or is gone): a
/// hint for someone else does not sign this browser's person out.
async fn sign_out(issuer: &Issuer, headers: &HeaderMap, plan: Plan) -> Response {
    let now = Timestamp::now();
    let client = &issuer.portal.signin.client;
    let mut ended = Vec::new();
    if let Some(hint) = &plan.hint {
        let hinted = match state::located(&hint.sid, Kind::Grant) {
            Some((namespace, name)) => match state::read(client, &namespace, &name).await {
                Ok(Some(grant)) => session::of_grant(issuer, &grant, now).await,
                other => other.map(|_| None),
            },
            None => Ok(None),
        };
        match hinted {
            Ok(Some(live)) if live.session.user_uid == hint.sub => ended.push(live.secret),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the hinted session failed");
                return problem(
                    issuer,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Signing out did not work. Try again in a moment.",
                );
            }
        }
    }
    let browser = session::current(issuer, headers, now);
    let clear = match browser {
        Some(live) if plan.hint.as_ref().is_none_or(|hint| hint.sub == live.session.user_uid) => {
            if !ended.iter().any(|s| s.metadata.uid == live.secret.metadata.uid) {
                ended.push(live.secret);
            }
            true
        }
        Some(_) => false,
        None => true,
    };
    for secret in &ended {
        if let Err(e) = session::end(issuer, secret).await {
            tracing::warn!(error = %e, "ending a sign-in session failed");
            return problem(
                issuer,
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing out did not work. Try again in a moment.",
            );
        }
        tracing::info!(session = %secret.name_any(), "signed out");
    }
    let mut response = finish(issuer, plan);
    if clear {
        session::clear_cookie(&mut response, issuer.https());
    }
    response
}

/// Back to the client, or a page that says the person is signed out.
fn finish(issuer: &Issuer, plan: Plan) -> Response {
    match plan.back {
        Some(back) => Redirect::to(&back).into_response(),
        None => issuer.portal.pages.render(
            StatusCode::OK,
            "signed_out.html",
            context! { org => &issuer.portal.org_name, root => issuer.root() },
        ),
    }
}

/// The page that asks the person to confirm.
fn confirmation(issuer: &Issuer, headers: &HeaderMap, params: &LogoutParams) -> Response {
    super::form_page(
        issuer,
        headers,
        StatusCode::OK,
        "logout.html",
        "/logout",
        params,
        params.post_logout_redirect_uri.as_deref(),
        minijinja::context! {},
    )
}

fn problem(issuer: &Issuer, status: StatusCode, message: &str) -> Response {
    issuer.portal.pages.render(
        status,
        "problem.html",
        context! { org => &issuer.portal.org_name, root => issuer.root(), title => "Signing out", message => message },
    )
}
