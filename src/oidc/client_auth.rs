//! Which client is asking: the registered OidcClient a client ID names (only while its
//! registration is sound), and — at the token endpoint — proof that the caller is that client:
//! its secret (HTTP Basic or form fields, compared in constant time) for a confidential
//! client, nothing for a public one (PKCE binds its code instead).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Issuer;
use crate::api::OidcClient;
use crate::controller::names::{CLIENT_SECRET, oidc_secret_name};
use crate::facts::text;
use crate::registration;

/// The registered client `id` names, if its registration is sound now.
pub fn registered(issuer: &Issuer, id: &str) -> Option<Arc<OidcClient>> {
    let (namespace, name) = registration::parse_client_id(id)?;
    let client = issuer.portal.signin.caches.oidc_clients.get(&ObjectRef::new(name).within(namespace))?;
    registration::validate(&client.spec, namespace, &issuer.trusted_namespaces).ok()?;
    Some(client)
}

/// Why a caller is not taken for a client (`invalid_client`; the reason is logged).
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// Credentials both in the header and the form, or a malformed header.
    #[error("malformed client authentication")]
    Malformed,
    /// No such client, a wrong secret, or a public client that sent one.
    #[error("client authentication failed: {0}")]
    Failed(&'static str),
    /// The client's secret could not be read.
    #[error("the client's secret could not be read: {0}")]
    Unavailable(String),
}

/// [`authenticate`], or the answer that refuses the caller: `invalid_client` (401, with
/// `WWW-Authenticate: Basic` when it tried Basic) or 503 when its secret cannot be read.
pub async fn proven(
    issuer: &Issuer,
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Arc<OidcClient>, Box<Response>> {
    match authenticate(issuer, headers, form_id, form_secret).await {
        Ok(client) => Ok(client),
        Err(ClientAuthError::Unavailable(reason)) => {
            tracing::warn!(%reason, "a client's secret could not be read");
            Err(Box::new(super::exchange::unavailable()))
        }
        Err(refused) => {
            tracing::info!(reason = %refused, "client authentication failed");
            let mut response = super::oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
            if headers.contains_key(header::AUTHORIZATION) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            }
            Err(Box::new(response))
        }
    }
}

/// The client the caller proves to be, from the `Authorization: Basic` header or the
/// `client_id` / `client_secret` form fields.
pub async fn authenticate(
    issuer: &Issuer,
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Arc<OidcClient>, ClientAuthError> {
    let basic = basic_credentials(headers)?;
    let (id, secret) = match (basic, form_secret) {
        (Some(_), Some(_)) => return Err(ClientAuthError::Malformed),
        (Some((id, secret)), None) => {
            if form_id.is_some_and(|form| form != id) {
                return Err(ClientAuthError::Malformed);
            }
            (id, Some(secret))
        }
        (None, secret) => (form_id.unwrap_or_default().to_owned(), secret.map(str::to_owned)),
    };
    let client = registered(issuer, &id).ok_or(ClientAuthError::Failed("no such client"))?;
    match (client.spec.public, secret) {
        (true, None) => Ok(client),
        (true, Some(_)) => Err(ClientAuthError::Failed("a public client has no secret")),
        (false, None) => Err(ClientAuthError::Failed("no client secret")),
        (false, Some(presented)) => {
            let expected = expected_secret(issuer, &client).await?;
            let digest = |s: &str| Sha256::digest(s.as_bytes());
            if bool::from(digest(&presented).ct_eq(&digest(&expected))) {
                Ok(client)
            } else {
                Err(ClientAuthError::Failed("wrong client secret"))
            }
        }
    }
}

/// The confidential client's secret: the Secret roster generated (from the cache, only if
/// the client owns it), or the one `secretRef` names (read now: it is not roster's, so not
/// cached).
async fn expected_secret(issuer: &Issuer, client: &OidcClient) -> Result<String, ClientAuthError> {
    let namespace = client.namespace().unwrap_or_default();
    let secret: Arc<Secret> = match &client.spec.secret_ref {
        None => issuer
            .portal
            .signin
            .caches
            .owned_secret(client, &oidc_secret_name(&client.name_any()))
            .ok_or_else(|| ClientAuthError::Unavailable("the generated Secret is not there yet".into()))?,
        Some(reference) => Api::<Secret>::namespaced(issuer.portal.signin.client.clone(), &namespace)
            .get(&reference.name)
            .await
            .map(Arc::new)
            .map_err(|e| {
                ClientAuthError::Unavailable(format!("Secret {namespace}/{}: {e}", reference.name))
            })?,
    };
    text(&secret, CLIENT_SECRET)
        .filter(|value| value.len() >= registration::MIN_SECRET_LEN)
        .map(str::to_owned)
        .ok_or_else(|| ClientAuthError::Unavailable(format!("no usable {CLIENT_SECRET}")))
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ClientAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ClientAuthError::Malformed)?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let Some(encoded) =
        value.get(..6).filter(|scheme| scheme.eq_ignore_ascii_case("basic ")).map(|_| &value[6..])
    else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ClientAuthError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ClientAuthError::Malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or(ClientAuthError::Malformed)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or(ClientAuthError::Malformed)
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("team.app:a%2Bb%3Ac");
        assert_eq!(
            basic_credentials(&with(&format!("Basic {encoded}"))).unwrap(),
            Some(("team.app".into(), "a+b:c".into()))
        );
        assert!(basic_credentials(&with(&format!("basic {encoded}"))).unwrap().is_some());
        assert_eq!(basic_credentials(&HeaderMap::new()).unwrap(), None);
        assert_eq!(basic_credentials(&with("Bearer x")).unwrap(), None);
        assert!(basic_credentials(&with("Basic !!!")).is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("team.app");
        assert!(basic_credentials(&with(&format!("Basic {no_colon}"))).is_err());
    }
}
