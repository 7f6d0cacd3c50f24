//! How relying parties find roster: the discovery document
//! (`/.well-known/openid-configuration`) and the public keys (`/keys`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Issuer;
use crate::api::Scope;

/// What the issuer supports, as discovery says it.
pub fn document(issuer: &Issuer) -> serde_json::Value {
    let scopes =
        [Scope::OpenId, Scope::Email, Scope::Profile, Scope::Groups, Scope::Phone, Scope::OfflineAccess];
    json!({
        "issuer": issuer.url,
        "authorization_endpoint": issuer.endpoint("/authorize"),
        "token_endpoint": issuer.endpoint("/token"),
        "userinfo_endpoint": issuer.endpoint("/userinfo"),
        "jwks_uri": issuer.endpoint("/keys"),
        "revocation_endpoint": issuer.endpoint("/revoke"),
        "device_authorization_endpoint": issuer.endpoint("/device_authorization"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "end_session_endpoint": issuer.endpoint("/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", super::exchange::DEVICE_GRANT],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "at_hash", "email",
            "email_verified", "name", "given_name", "family_name", "preferred_username", "groups",
            "locale", "zoneinfo", "phone_number"
        ],
        "prompt_values_supported": ["none", "login"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    })
}

/// `GET /.well-known/openid-configuration`.
pub async fn configuration(State(issuer): State<Arc<Issuer>>) -> Response {
    cacheable(Json(document(&issuer)).into_response())
}

/// `GET /keys`: the published keys (current and retired ones still valid); 503 until roster
/// has keys.
pub async fn keys(State(issuer): State<Arc<Issuer>>) -> Response {
    match issuer.keys.keyring().await {
        Ok(ring) => cacheable(Json(ring.jwks()).into_response()),
        Err(unavailable) => {
            tracing::warn!(error = %unavailable, "no signing keys to publish");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "temporarily_unavailable"})))
                .into_response()
        }
    }
}

/// Public documents may be cached briefly; relying parties fetch the keys again when a
/// token names a key id they do not know (a rotation).
fn cacheable(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
