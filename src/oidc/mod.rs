//! roster as an OpenID Connect provider for the people it manages, served by `roster run`
//! under `--issuer-url`'s path on the portal's port: discovery ([`discovery`]), keys
//! ([`keys`], [`key_store`]), the authorization endpoint with its sign-in page
//! ([`authorize`]), the token endpoint ([`exchange`]), userinfo ([`userinfo`]), revocation
//! ([`revocation`]) and logout ([`logout`]). Sign-in sessions ([`session`]) and what each
//! gave a client ([`grant`]) live in Secrets ([`state`]), so they survive restarts and every
//! replica sees them; [`sweeper`] removes them when they end. The sign-in itself is
//! [`crate::signin`]'s, the same as the portal's.

pub mod authorize;
pub mod claims;
pub mod client_auth;
pub mod device;
pub mod discovery;
pub mod exchange;
pub mod grant;
pub mod key_store;
pub mod keys;
pub mod logout;
pub mod request;
pub mod revocation;
pub mod session;
pub mod standing;
pub mod state;
pub mod sweeper;
pub mod tokens;
pub mod userinfo;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::portal::Portal;
use crate::portal::rate_limit::RateLimiter;
use key_store::KeyStore;

/// What the issuer's handlers share.
pub struct Issuer {
    /// The issuer URL, exactly as the `iss` claim carries it.
    pub url: String,
    /// Its path (`""` at the root), where the endpoints are served.
    pub path: String,
    /// The signing keys.
    pub keys: Arc<KeyStore>,
    /// The portal: its pages, its form guard and the shared sign-in.
    pub portal: Arc<Portal>,
    /// Namespaces whose clients may admit other namespaces' Users.
    pub trusted_namespaces: Vec<String>,
    /// How long sign-in sessions last (`--session-lifetime`, `--session-idle-timeout`).
    pub sessions: session::Policy,
    /// The sweeper, which also counts each client's waiting device requests.
    pub sweeper: Arc<sweeper::Sweeper>,
}

impl Issuer {
    /// The issuer at `url`.
    pub fn new(
        url: &str,
        keys: Arc<KeyStore>,
        portal: Arc<Portal>,
        trusted_namespaces: Vec<String>,
        sessions: session::Policy,
        sweeper: Arc<sweeper::Sweeper>,
    ) -> Self {
        let path =
            url::Url::parse(url).map(|u| u.path().trim_end_matches('/').to_owned()).unwrap_or_default();
        Self { url: url.to_owned(), path, keys, portal, trusted_namespaces, sessions, sweeper }
    }

    /// The public URL of the endpoint at `path` (which starts with `/`).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The endpoint's path on this server, as the pages link to it.
    pub fn endpoint_path(&self, path: &str) -> String {
        format!("{}{path}", self.path)
    }

    /// Whether the issuer is served over https (its cookies are `Secure`).
    pub fn https(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// Where the pages find the stylesheet.
    pub fn root(&self) -> String {
        format!("{}/", self.path)
    }
}

/// A page whose form posts to the issuer's `endpoint`, carrying `params` (a request checked
/// again on every post) as hidden fields, with the browser's form token and a policy that
/// lets the answer redirect to `redirect_uri`'s origin. `extra` adds to the page's values.
#[allow(clippy::too_many_arguments)]
pub fn form_page(
    issuer: &Issuer,
    headers: &axum::http::HeaderMap,
    status: StatusCode,
    template: &str,
    endpoint: &str,
    params: &impl serde::Serialize,
    redirect_uri: Option<&str>,
    extra: minijinja::Value,
) -> Response {
    let Ok(token) = crate::portal::guard::form_token(headers) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let page = issuer.portal.pages.render(
        status,
        template,
        minijinja::context! {
            org => &issuer.portal.org_name,
            root => issuer.root(),
            action => issuer.endpoint_path(endpoint),
            params => hidden_fields(params),
            form_token => &token,
            forgot => issuer.portal.forgot_password_url(),
            ..extra
        },
    );
    let mut response = crate::portal::pages::with_form_cookie(&issuer.portal, page, &token);
    allow_form_redirect(&mut response, redirect_uri);
    response
}

/// The string fields of a request's parameters, carried through a form as hidden inputs.
fn hidden_fields(params: &impl serde::Serialize) -> Vec<(String, String)> {
    match serde_json::to_value(params) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a request comes from the issuer's own pages, as far as the browser says: allowing
/// a device with one click, or a change on the account page, must not be triggered by a
/// form or script on another site — even a sibling subdomain, which `SameSite` counts as the
/// same site and which could plant a form cookie.
pub fn same_origin(issuer: &Issuer, headers: &axum::http::HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    // Fetch metadata, where the browser sends it, is its own word (no script can set it) and
    // holds behind a proxy that changes the host; else the Origin, if any, must be ours.
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin";
    }
    let own = url::Url::parse(&issuer.url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    header("origin").is_none_or(|origin| origin == own)
}

/// An OAuth error answer (JSON).
pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(serde_json::json!({"error": code, "error_description": description}))).into_response()
}

/// Sets the page's content security policy so that its form may post here and the answer
/// may redirect to `redirect_uri`'s origin (browsers apply `form-action` to the redirect).
fn allow_form_redirect(response: &mut Response, redirect_uri: Option<&str>) {
    let origin = redirect_uri
        .and_then(|uri| url::Url::parse(uri).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|origin| origin != "null")
        .unwrap_or_default();
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self' {origin}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The issuer's routes, under its path; merged into the portal's router, so its guards
/// (security headers, body limit) apply. Two rate limits per client address: the pages a
/// browser opens (`front`, the portal's) and the endpoints relying parties' servers call
/// (`back`: one address asks for all of an application's users, so its budget is larger;
/// per address rather than per client ID, which anyone may claim for a public client).
pub fn router(issuer: Arc<Issuer>, front: Arc<RateLimiter>, back: Arc<RateLimiter>) -> Router {
    let at = |path: &str| issuer.endpoint_path(path);
    let pages = Router::new()
        .route(&at("/authorize"), get(authorize::start).post(authorize::sign_in))
        .route(&at("/logout"), get(logout::start).post(logout::confirm))
        .route(&at("/device"), get(device::page).post(device::step))
        .merge(crate::account::routes(&issuer));
    // Under a path of its own, the pages find the stylesheet there too (the Ingress may
    // route only that path to roster).
    let pages = if issuer.path.is_empty() {
        pages
    } else {
        pages.route(&at("/assets/portal.css"), get(crate::portal::pages::stylesheet))
    };
    let backchannel = Router::new()
        .route(&at("/.well-known/openid-configuration"), get(discovery::configuration))
        .route(&at("/keys"), get(discovery::keys))
        .route(&at("/token"), axum::routing::post(exchange::token))
        .route(&at("/userinfo"), get(userinfo::userinfo).post(userinfo::userinfo))
        .route(&at("/revoke"), axum::routing::post(revocation::revoke))
        .route(&at("/device_authorization"), axum::routing::post(device::start));
    let limited = |router: Router<Arc<Issuer>>, limiter| {
        // `layer`, not `route_layer`, and the 405 fallback set first: a wrong method's 405
        // counts too.
        router
            .method_not_allowed_fallback(crate::portal::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(limiter, crate::portal::guard::rate_limit))
    };
    limited(pages, front).merge(limited(backchannel, back)).with_state(issuer)
}
