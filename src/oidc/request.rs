//! The authorization request: what a relying party asks for, checked before anyone is asked
//! to sign in (pure). A request whose client or redirect URI is not registered is answered
//! with a page, never a redirect (no open redirect); any other fault goes back to the
//! registered redirect URI as an OAuth error, with `state`.

use serde::{Deserialize, Serialize};

use crate::api::{OidcClient, Scope};
use crate::registration;

/// Longest `state`, `nonce` or `login_hint` roster carries (they come back in redirects and
/// tokens).
pub const MAX_ECHOED: usize = 512;

/// The parameters as they arrive (query of the GET; hidden fields of the sign-in form).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Params {
    /// `client_id`.
    #[serde(default)]
    pub client_id: String,
    /// `redirect_uri`.
    #[serde(default)]
    pub redirect_uri: String,
    /// `response_type`: `code`.
    #[serde(default)]
    pub response_type: String,
    /// `scope`, space-separated.
    #[serde(default)]
    pub scope: String,
    /// `state`, returned as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `nonce`, put into the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `code_challenge` (PKCE).
    #[serde(default)]
    pub code_challenge: String,
    /// `code_challenge_method`: `S256`.
    #[serde(default)]
    pub code_challenge_method: String,
    /// `prompt`: `none`, `login` (others are accepted and mean nothing here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `max_age`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// `login_hint`: prefills the identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// `response_mode`: only `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mode: Option<String>,
    /// `request` (request objects are not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `request_uri` (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uri: Option<String>,
}

/// What `prompt` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Nothing special.
    Default,
    /// Sign in again even with a session.
    Login,
    /// Never show a page: answer `login_required` unless a session suffices.
    None,
}

/// A request roster will serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// The client ID.
    pub client_id: String,
    /// The registered redirect URI it named.
    pub redirect_uri: String,
    /// The scopes granted: those asked for that the client may have (`openid` always).
    pub scopes: Vec<Scope>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub challenge: String,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age`, seconds.
    pub max_age: Option<u64>,
    /// `login_hint`.
    pub login_hint: Option<String>,
}

/// Why a request is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client or redirect URI is unknown: a page says so; nothing is redirected.
    Page(&'static str),
    /// Back to the client's redirect URI with this OAuth error.
    Redirect {
        /// Where.
        redirect_uri: String,
        /// `error`.
        error: &'static str,
        /// `error_description`.
        description: &'static str,
        /// `state`, as it came (if it was short enough to carry).
        state: Option<String>,
    },
}

/// Checks `params` against the registered `client` (`None`: no such client, or one that is
/// not ready).
pub fn check(params: &Params, client: Option<&OidcClient>) -> Result<AuthRequest, Refusal> {
    let Some(client) = client else {
        return Err(Refusal::Page("The application that sent you here is not registered with roster."));
    };
    if !registration::redirect_allowed(&client.spec.redirect_uris, &params.redirect_uri) {
        return Err(Refusal::Page(
            "The application sent you here with a return address it has not registered.",
        ));
    }
    let state = params.state.clone().filter(|s| s.len() <= MAX_ECHOED);
    let refuse = |error, description| Refusal::Redirect {
        redirect_uri: params.redirect_uri.clone(),
        error,
        description,
        state: state.clone(),
    };
    if params.state.as_ref().is_some_and(|s| s.len() > MAX_ECHOED) {
        return Err(refuse("invalid_request", "state is too long"));
    }
    if params.request.is_some() {
        return Err(refuse("request_not_supported", "request objects are not supported"));
    }
    if params.request_uri.is_some() {
        return Err(refuse("request_uri_not_supported", "request_uri is not supported"));
    }
    if params.response_type != "code" {
        return Err(refuse("unsupported_response_type", "only response_type=code is supported"));
    }
    if params.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err(refuse("invalid_request", "only response_mode=query is supported"));
    }
    let Some(scopes) = granted_scopes(&params.scope, client) else {
        return Err(refuse("invalid_scope", "the openid scope is required"));
    };
    if params.code_challenge_method != "S256" || !pkce_challenge_sound(&params.code_challenge) {
        return Err(refuse(
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        ));
    }
    if params.nonce.as_ref().is_some_and(|n| n.len() > MAX_ECHOED) {
        return Err(refuse("invalid_request", "nonce is too long"));
    }
    let prompts: Vec<&str> = params.prompt.as_deref().unwrap_or_default().split_ascii_whitespace().collect();
    let prompt = match (prompts.contains(&"none"), prompts.contains(&"login")) {
        (true, _) if prompts.len() > 1 => return Err(refuse("invalid_request", "prompt=none stands alone")),
        (true, _) => Prompt::None,
        (false, true) => Prompt::Login,
        (false, false) => Prompt::Default,
    };
    let max_age = match params.max_age.as_deref() {
        None | Some("") => None,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => return Err(refuse("invalid_request", "max_age must be a number of seconds")),
        },
    };
    Ok(AuthRequest {
        client_id: params.client_id.clone(),
        redirect_uri: params.redirect_uri.clone(),
        scopes,
        state,
        nonce: params.nonce.clone().filter(|n| !n.is_empty()),
        challenge: params.code_challenge.clone(),
        prompt,
        max_age,
        login_hint: params.login_hint.clone().filter(|h| h.len() <= MAX_ECHOED && !h.is_empty()),
    })
}

/// The scopes `client` gets for the space-separated `asked`: openid and those asked for that
/// it may have; `None` without openid.
pub fn granted_scopes(asked: &str, client: &OidcClient) -> Option<Vec<Scope>> {
    let asked: Vec<&str> = asked.split_ascii_whitespace().collect();
    if !asked.contains(&"openid") {
        return None;
    }
    let mut scopes = vec![Scope::OpenId];
    scopes.extend(client.spec.scopes.iter().filter(|s| **s != Scope::OpenId && asked.contains(&s.as_str())));
    Some(scopes)
}

/// RFC 7636: an S256 challenge is the base64url (unpadded) SHA-256 of the verifier: 43
/// characters.
fn pkce_challenge_sound(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` (43–128 unreserved characters) hashes to `challenge`, compared in
/// constant time.
pub fn pkce_verified(verifier: &str, challenge: &str) -> bool {
    use base64::Engine as _;
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let sound = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    sound && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// The URL that carries `pairs` back to `redirect_uri` in its query (after any query the
/// registered URI has).
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        Err(_) => redirect_uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OidcClientSpec;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn client() -> OidcClient {
        let spec: OidcClientSpec = serde_json::from_value(serde_json::json!({
            "redirectUris": ["https://app.example.com/callback", "http://127.0.0.1/cb"],
            "scopes": ["openid", "email", "groups"],
        }))
        .unwrap();
        OidcClient::new("app", spec)
    }

    fn params() -> Params {
        Params {
            client_id: "team.app".into(),
            redirect_uri: "https://app.example.com/callback".into(),
            response_type: "code".into(),
            scope: "openid email profile offline_access".into(),
            state: Some("xyz".into()),
            nonce: Some("n-1".into()),
            code_challenge: CHALLENGE.into(),
            code_challenge_method: "S256".into(),
            ..Params::default()
        }
    }

    #[test]
    fn a_sound_request_gets_the_scopes_the_client_may_have() {
        let request = check(&params(), Some(&client())).unwrap();
        assert_eq!(
            request.scopes,
            [Scope::OpenId, Scope::Email],
            "profile and offline_access are not the client's"
        );
        assert_eq!(request.state.as_deref(), Some("xyz"));
        assert_eq!(request.prompt, Prompt::Default);
        let loopback = Params { redirect_uri: "http://127.0.0.1:53127/cb".into(), ..params() };
        assert!(check(&loopback, Some(&client())).is_ok(), "any port on loopback (RFC 8252)");
    }

    #[test]
    fn an_unknown_client_or_redirect_uri_gets_a_page_never_a_redirect() {
        assert!(matches!(check(&params(), None), Err(Refusal::Page(_))));
        for uri in [
            "https://evil.example.com/callback",
            "https://app.example.com/callback/",
            "https://app.example.com/callback?x=1",
        ] {
            let p = Params { redirect_uri: uri.into(), ..params() };
            assert!(matches!(check(&p, Some(&client())), Err(Refusal::Page(_))), "{uri}");
        }
    }

    #[test]
    fn other_faults_go_back_to_the_client_with_state() {
        let error = |p: Params| match check(&p, Some(&client())) {
            Err(Refusal::Redirect { error, state, .. }) => (error, state),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            error(Params { response_type: "token".into(), ..params() }).0,
            "unsupported_response_type"
        );
        assert_eq!(error(Params { scope: "email".into(), ..params() }).0, "invalid_scope");
        assert_eq!(error(Params { code_challenge: String::new(), ..params() }).0, "invalid_request");
        assert_eq!(error(Params { code_challenge_method: "plain".into(), ..params() }).0, "invalid_request");
        assert_eq!(error(Params { prompt: Some("none login".into()), ..params() }).0, "invalid_request");
        assert_eq!(error(Params { max_age: Some("soon".into()), ..params() }).0, "invalid_request");
        assert_eq!(error(Params { request: Some("x".into()), ..params() }).0, "request_not_supported");
        let (code, state) = error(Params { response_mode: Some("fragment".into()), ..params() });
        assert_eq!((code, state.as_deref()), ("invalid_request", Some("xyz")));
        let (_, state) = error(Params { state: Some("s".repeat(MAX_ECHOED + 1)), ..params() });
        assert_eq!(state, None, "an oversized state is not echoed");
    }

    #[test]
    fn prompt_and_max_age_are_read() {
        let none = check(&Params { prompt: Some("none".into()), ..params() }, Some(&client())).unwrap();
        assert_eq!(none.prompt, Prompt::None);
        let login = check(
            &Params { prompt: Some("login consent".into()), max_age: Some("0".into()), ..params() },
            Some(&client()),
        )
        .unwrap();
        assert_eq!((login.prompt, login.max_age), (Prompt::Login, Some(0)));
    }

    #[test]
    fn pkce_verifies_the_rfc_7636_example_only() {
        assert!(pkce_verified(VERIFIER, CHALLENGE));
        assert!(!pkce_verified("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", CHALLENGE));
        assert!(!pkce_verified("short", CHALLENGE));
        assert!(!pkce_verified(CHALLENGE, CHALLENGE));
    }

    #[test]
    fn redirects_keep_the_registered_query() {
        assert_eq!(
            redirect_with("https://app.example.com/cb?tenant=1", &[("code", "a b"), ("state", "s")]),
            "https://app.example.com/cb?tenant=1&code=a+b&state=s"
        );
    }
}
