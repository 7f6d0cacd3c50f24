//! What protects every portal route: a rate limit per client address (429), security
//! headers on every response, and the double-submit token that keeps other sites from
//! posting the portal's forms.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::rate_limit::RateLimiter;

/// The cookie that carries the form token; the form carries the same value.
pub const FORM_COOKIE: &str = "roster_form";

/// Answers 429 once a client address has used up its requests.
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = limiter.client(peer.ip(), request.headers());
    match limiter.check(client, std::time::Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let response =
                (StatusCode::TOO_MANY_REQUESTS, "too many requests; try again shortly\n").into_response();
            retry_after(response, wait)
        }
    }
}

/// `response` with a `Retry-After` of `wait`, rounded up to whole seconds.
pub fn retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().saturating_add(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Headers on every response: nothing is cached (pages show secrets, links carry tokens),
/// nothing may frame the portal, no referrer leaks the token in the URL, and the content
/// security policy allows only the portal's own stylesheet and inline QR images. A handler
/// that set its own cache policy or content security policy (public discovery documents;
/// the sign-in page, whose form ends in a redirect to the application) keeps it.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// The form token of this browser: the cookie's, or a fresh one.
pub fn form_token(headers: &HeaderMap) -> Result<String, crate::credentials::CredentialError> {
    match cookie(headers, FORM_COOKIE) {
        Some(value) if value.len() >= 32 => Ok(value),
        _ => Ok(crate::credentials::Token::generate()?.expose().to_owned()),
    }
}

/// The `Set-Cookie` value that hands `token` to the browser: `SameSite=Strict` and
/// `HttpOnly`, `Secure` over HTTPS.
pub fn form_cookie(token: &str, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{FORM_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// Whether a posted form carries the browser's own form token (compared in constant time).
pub fn form_token_matches(headers: &HeaderMap, posted: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|expected| {
        !posted.is_empty() && bool::from(expected.as_bytes().ct_eq(posted.as_bytes()))
    })
}

/// The value of the cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_form_token_must_match_the_cookie() {
        let token = "t".repeat(43);
        let with_cookie = headers(&[("cookie", &format!("other=1; {FORM_COOKIE}={token}"))]);
        assert!(form_token_matches(&with_cookie, &token));
        assert!(!form_token_matches(&with_cookie, "forged"));
        assert!(!form_token_matches(&with_cookie, ""));
        assert!(!form_token_matches(&HeaderMap::new(), &token));
        assert_eq!(form_token(&with_cookie).unwrap(), token);
        assert_ne!(form_token(&HeaderMap::new()).unwrap(), token);
    }

    #[test]
    fn the_cookie_is_strict_and_secure_over_https() {
        assert_eq!(form_cookie("x", true), "roster_form=x; Path=/; HttpOnly; SameSite=Strict; Secure");
        assert!(!form_cookie("x", false).contains("Secure"));
    }
}
