//! Token revocation (RFC 7009, `POST /revoke`): a client that is done with a refresh token
//! or an access token (its user signed out of the app) ends the grant it came from, so
//! neither the refresh token nor userinfo answers for it again. Only the client the grant
//! was given to may revoke it; as the RFC says, an unknown, expired or foreign token is
//! answered 200 like a revoked one (the answer tells nothing about tokens).

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use serde::Deserialize;

use super::grant::Grant;
use super::state::{self, Kind};
use super::{Issuer, client_auth, exchange, tokens};
use crate::credentials::hashes_match;
use crate::registration;

/// What a revocation request posts. (No `Debug`: it holds a token and the client secret.)
#[derive(Default, Deserialize)]
pub struct RevocationForm {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// `POST /revoke`.
pub async fn revoke(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(form): Form<RevocationForm>,
) -> Response {
    let client = match client_auth::proven(
        &issuer,
        &headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )
    .await
    {
        Ok(client) => client,
        Err(answer) => return *answer,
    };
    let Some(token) = form.token.as_deref().filter(|t| !t.is_empty()) else {
        return super::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    let client_id = registration::client_id(&client.namespace().unwrap_or_default(), &client.name_any());
    // A refresh token names its grant and must match it; an access token is a signed JWT
    // whose `sid` names the grant.
    let target = match state::token_target(token, Kind::Grant) {
        Some((namespace, name, hash)) => Some((namespace, name, Some(hash))),
        None => match issuer.keys.keyring().await {
            Ok(ring) => tokens::verify_access_token(&ring, &issuer.url, token)
                .and_then(|access| state::located(&access.sid, Kind::Grant))
                .map(|(namespace, name)| (namespace, name, None)),
            Err(_) => return exchange::unavailable(),
        },
    };
    let Some((namespace, name, hash)) = target else { return StatusCode::OK.into_response() };
    // Not a namespace whose people this client may have: not its token; nothing is read.
    if !registration::admits_namespace(&client.spec, &client.namespace().unwrap_or_default(), &namespace) {
        return StatusCode::OK.into_response();
    }
    let secret = match state::read(&issuer.portal.signin.client, &namespace, &name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a grant failed");
            return exchange::unavailable();
        }
    };
    let Some(grant) = Grant::of(&secret) else { return StatusCode::OK.into_response() };
    // A refresh token (current; a code is no token RFC 7009 revokes), or an access token.
    let its_own = hash
        .as_deref()
        .is_none_or(|hash| grant.refresh_hash.as_deref().is_some_and(|current| hashes_match(hash, current)));
    if grant.client != client_id || !its_own {
        tracing::info!(client = %client_id, "revocation of a token that is not the client's: ignored");
        return StatusCode::OK.into_response();
    }
    if let Err(e) = state::delete(&issuer.portal.signin.client, &secret).await {
        tracing::warn!(error = %e, "revoking a grant failed");
        return exchange::unavailable();
    }
    tracing::info!(client = %client_id, grant = %name, "a client revoked its grant");
    StatusCode::OK.into_response()
}
