//! The self-service portal: where an invited person sets a password and enrols TOTP, and the
//! sign-in API a company's own front end can use. Served by `roster run` on its own port:
//! server-rendered HTML pages ([`pages`]) that work without JavaScript, and a JSON API
//! ([`api`]) over the same steps ([`onboarding`], [`reenrolment`], [`login`]).
//!
//! Every look-up comes from the operator's watch caches; every write goes to the user's
//! credentials Secret ([`crate::facts`]) under a resourceVersion precondition. The reconcilers turn
//! those facts into phases and conditions.

pub mod api;
pub mod guard;
pub mod links;
pub mod login;
pub mod onboarding;
pub mod pages;
pub mod password_reset;
pub mod rate_limit;
pub mod recovery;
pub mod reenrolment;
pub mod verification;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::credentials::PasswordPolicy;
use crate::signin::SignIn;
use crate::{Error, Result};

/// Largest request body the portal reads: a password form is a few hundred bytes.
const BODY_LIMIT: usize = 16 * 1024;
/// How long a request body may take to arrive in full: a client that announces more than it
/// sends, or trickles it, is answered 400 instead of holding a handler.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the portal's handlers share.
pub struct Portal {
    /// The sign-in decision, shared with the OpenID Connect sign-in page, and what it
    /// holds for every step: the API client, the caches, the hasher, the lockout rule, the
    /// allowed email domains and the metrics.
    pub signin: Arc<SignIn>,
    /// The rules a new password must pass.
    pub policy: PasswordPolicy,
    /// The organisation's name, on every page and in the authenticator app.
    pub org_name: String,
    /// Whether the portal is reached over HTTPS (cookies are then `Secure`).
    pub https: bool,
    /// The portal's public URL, without a trailing slash.
    pub url: String,
    /// The HTML pages.
    pub pages: pages::Pages,
    /// "Forgot your password?" requests, worked off after the answer.
    pub recovery: recovery::Recovery,
}

impl Portal {
    /// The portal's shared state, over the shared sign-in decision.
    pub fn new(
        signin: Arc<SignIn>,
        policy: PasswordPolicy,
        org_name: String,
        portal_url: &str,
        recovery: recovery::Recovery,
    ) -> Result<Self> {
        Ok(Self {
            recovery,
            policy,
            org_name,
            https: portal_url.starts_with("https://"),
            url: portal_url.trim_end_matches('/').to_owned(),
            pages: pages::Pages::new().map_err(|e| Error::Startup(e.to_string()))?,
            signin,
        })
    }
}

use crate::signin::who;

impl Portal {
    /// The client address of a request from `peer` with `headers`: `peer`, or what a
    /// trusted proxy says (see [`rate_limit::RateLimiter::client`]).
    pub fn address_of(&self, peer: SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        self.recovery.client(peer.ip(), headers)
    }

    /// Where "Forgot your password?" leads, on every sign-in page.
    pub fn forgot_password_url(&self) -> String {
        format!("{}/forgot-password", self.url)
    }
}

/// Every route of the portal and the `more` routes served beside it (the OpenID Connect
/// issuer, which brings rate limits of its own), with their guards: the portal's rate limit
/// per client address, security headers, a body size limit.
pub fn router(portal: Arc<Portal>, limiter: Arc<rate_limit::RateLimiter>, more: Router) -> Router {
    let own = Router::new()
        .route("/invite/{token}", get(pages::invite).post(pages::invite_step))
        .route("/assets/portal.css", get(pages::stylesheet))
        .route("/api/v1/invites/{token}", get(api::invite))
        .route("/api/v1/invites/{token}/accept", post(api::accept))
        .route("/api/v1/invites/{token}/totp", post(api::totp))
        .route("/mfa-reset/{token}", get(pages::reset).post(pages::reset_step))
        .route("/api/v1/mfa-resets/{token}", get(api::reset))
        .route("/api/v1/mfa-resets/{token}/accept", post(api::reset_accept))
        .route("/api/v1/mfa-resets/{token}/totp", post(api::reset_totp))
        .route("/password-reset/{token}", get(pages::password_reset).post(pages::password_reset_step))
        .route("/forgot-password", get(pages::forgot_password).post(pages::forgot_password_step))
        .route("/api/v1/password-resets", post(api::recover))
        .route("/api/v1/password-resets/{token}", get(api::password_reset).post(api::password_reset_set))
        .route("/verify-email/{token}", get(pages::verification).post(pages::verification_step))
        .route("/api/v1/email-verifications/{token}", get(api::verification).post(api::verify))
        .route("/api/v1/login", post(api::login))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::readyz))
        .fallback(pages::not_found)
        // Before the rate limit: a wrong method's 405 counts too.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(portal)
        .layer(axum::middleware::from_fn_with_state(limiter, guard::rate_limit));
    own.merge(more)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyDeadlineLayer::new(BODY_DEADLINE))
        // Outermost: a 429 carries the same headers as every other answer.
        .layer(axum::middleware::from_fn(guard::security_headers))
}

/// 405 for a method a route does not take, saying so (axum's own has no body); the `Allow`
/// header lists the methods it takes. Set on each router before its rate limit.
pub async fn method_not_allowed() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "this address does not take that method; see the Allow header\n",
    )
}

/// How long a client may take to send a request's headers (and how long a kept-alive
/// connection may sit idle): one that trickles them, or never finishes, is disconnected
/// instead of holding a connection for as long as it likes. hyper's own default: shorter
/// idle closes would race more often with relying parties' pooled connections.
const HEADER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// The pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a shutdown waits for the requests in flight (a handler stuck, a client that
/// does not read its answer) before it drops them; within the pod's grace period.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves the portal on `addr` until `shutdown` is cancelled; then answers the requests in
/// flight and closes every connection.
pub async fn serve(
    addr: SocketAddr,
    portal: Arc<Portal>,
    limiter: Arc<rate_limit::RateLimiter>,
    more: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Startup(format!("binding the portal to {addr}: {e}")))?;
    tracing::info!(%addr, "serving the portal");
    let app = router(portal, limiter, more);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The client gave up during the handshake: nothing wrong here.
                Err(error) if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(error) => {
                    tracing::warn!(%error, "accepting a portal connection failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        connections.spawn(connection(stream, peer, app.clone(), shutdown.clone()));
        while connections.try_join_next().is_some() {}
    }
    // New clients are refused at once rather than queued behind a listener nobody reads.
    drop(listener);
    let drained =
        tokio::time::timeout(DRAIN_DEADLINE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(left = connections.len(), "portal requests still in flight at shutdown were dropped");
    }
    Ok(())
}

/// One client connection: HTTP/1.1 with the header deadline, each request given the
/// client's address (`ConnectInfo`, for the rate limit); closed gracefully on `shutdown`.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) {
    use tower::ServiceExt as _;
    let service =
        hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_DEADLINE);
    let served = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}
