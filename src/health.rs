//! The metrics port: `/healthz` (the process serves), `/readyz` (every watch cache has
//! synced, so reconciles and look-ups see the cluster, and an issuer has signing keys) and
//! Prometheus `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Whether roster is ready to serve: its watch caches have synced (flipped once by the
/// controllers) and, when it is an OpenID Connect issuer, it has keys to sign with (a fresh
/// install makes them just after start; until then the token endpoint could only say 503).
pub struct Readiness {
    caches: AtomicBool,
    keys: AtomicBool,
}

impl Readiness {
    /// For a process that signs tokens (`issuer`) or not.
    pub fn new(issuer: bool) -> Self {
        Self { caches: AtomicBool::new(false), keys: AtomicBool::new(!issuer) }
    }

    /// The watch caches have synced.
    pub fn set_ready(&self) {
        self.caches.store(true, Ordering::Release);
    }

    /// The signing keys are loaded.
    pub fn set_keys_loaded(&self) {
        self.keys.store(true, Ordering::Release);
    }

    /// What readiness still waits for, if anything.
    pub fn waiting_for(&self) -> Option<&'static str> {
        if !self.caches.load(Ordering::Acquire) {
            Some("watch caches not synced yet")
        } else if !self.keys.load(Ordering::Acquire) {
            Some("signing keys not loaded yet")
        } else {
            None
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Serves the metrics port on `addr` until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Startup(format!("binding the metrics port {addr}: {e}")))?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| crate::Error::Startup(format!("serving the metrics port: {e}")))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.waiting_for() {
        None => (StatusCode::OK, "ok"),
        Some(waiting) => (StatusCode::SERVICE_UNAVAILABLE, waiting),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
