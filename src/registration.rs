//! What an `OidcClient` registration means, decided once for the controller that reports
//! it and the issuer that honours it: the client ID, which redirect URIs are sound and which
//! one a request may use, how strong a client secret must be, and which people a client
//! admits. Pure.

use url::{Host, Url};

use crate::api::{OidcClientSpec, User};

/// Fewest characters a client secret may have: 32 random characters are beyond guessing
/// through a rate-limited token endpoint; roster generates 43 (32 random bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// The client ID of the OidcClient `name` in `namespace`: `<namespace>.<name>`. A namespace
/// name has no dots, so the ID names exactly one client, and a client in one namespace can
/// never take another namespace's ID.
pub fn client_id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The namespace and name a client ID names (see [`client_id`]).
pub fn parse_client_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('.').filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
}

/// Why a registration cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A redirect URI is not one roster may send codes to.
    #[error("redirect URI {uri:?} {problem}")]
    RedirectUri {
        /// The URI as declared.
        uri: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A post-logout redirect URI is not one roster may send people to.
    #[error("post-logout redirect URI {uri:?} {problem}")]
    PostLogoutRedirectUri {
        /// The URI as declared.
        uri: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The client names other namespaces' Users, and its namespace is not trusted with that.
    #[error(
        "userNamespaces names {namespace}, but only clients in the namespaces --oidc-trusted-namespaces lists may admit other namespaces' Users"
    )]
    UserNamespaces {
        /// The first other namespace named.
        namespace: String,
    },
}

impl Invalid {
    /// The condition reason for it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RedirectUri { .. } => crate::api::conditions::reasons::INVALID_REDIRECT_URI,
            Self::PostLogoutRedirectUri { .. } => {
                crate::api::conditions::reasons::INVALID_POST_LOGOUT_REDIRECT_URI
            }
            Self::UserNamespaces { .. } => crate::api::conditions::reasons::USER_NAMESPACES_NOT_ALLOWED,
        }
    }
}

/// Checks what admission checks too (the CRD's CEL rules), for objects that predate them or
/// a rule the API server's URL parser reads differently; and that a client in `namespace`
/// names other namespaces' Users only if `namespace` is one of `trusted` — a namespace
/// admin must not reach another tenant's people.
pub fn validate(spec: &OidcClientSpec, namespace: &str, trusted: &[String]) -> Result<(), Invalid> {
    if !trusted.iter().any(|t| t == namespace)
        && let Some(other) = spec.user_namespaces.iter().find(|n| *n != namespace)
    {
        return Err(Invalid::UserNamespaces { namespace: other.clone() });
    }
    for uri in &spec.redirect_uris {
        sound_uri(uri).map_err(|problem| Invalid::RedirectUri { uri: uri.clone(), problem })?;
    }
    for uri in &spec.post_logout_redirect_uris {
        sound_uri(uri).map_err(|problem| Invalid::PostLogoutRedirectUri { uri: uri.clone(), problem })?;
    }
    Ok(())
}

/// A URI roster may send a person to, or serve as its issuer at: absolute, https (http only
/// on a loopback host), with a host, no user info and no fragment. What is wrong otherwise.
pub fn sound_uri(uri: &str) -> Result<Url, &'static str> {
    let url = Url::parse(uri).map_err(|_| "is not an absolute URL")?;
    if url.fragment().is_some() {
        return Err("has a #fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("carries a user name or password");
    }
    match (url.scheme(), url.host()) {
        (_, None) => Err("has no host"),
        ("https", Some(_)) => Ok(url),
        ("http", Some(host)) if is_loopback(&host) => Ok(url),
        ("http", Some(_)) => Err("uses http on a host other than localhost, 127.0.0.1 or [::1]"),
        _ => Err("is neither https nor http"),
    }
}

/// Whether `host` is this machine as admission accepts it: `localhost`, `127.0.0.1` or
/// `[::1]` exactly (not the rest of 127/8 or `localhost.`, which the CRD's rule refuses).
fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => *name == "localhost",
        Host::Ipv4(ip) => *ip == std::net::Ipv4Addr::LOCALHOST,
        Host::Ipv6(ip) => *ip == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// Whether a request may send its answer to `requested`: one of the sound URIs in
/// `registered`, character for character — except that for an http loopback URI any port is
/// allowed, as RFC 8252 §7.3 asks (a CLI listens on whatever port is free). An unsound
/// registered URI (one admission would refuse today) matches nothing.
pub fn redirect_allowed(registered: &[String], requested: &str) -> bool {
    let Ok(asked) = sound_uri(requested) else {
        return false;
    };
    registered.iter().filter_map(|uri| Some((uri, sound_uri(uri).ok()?))).any(|(uri, known)| {
        uri == requested
            || (asked.scheme() == "http"
                && known.scheme() == "http"
                && known.host() == asked.host()
                && known.path() == asked.path()
                && known.query() == asked.query())
    })
}

/// Whether the client `spec` in `namespace` admits `user`: a User of its own namespace, or
/// of one `userNamespaces` names, in one of `allowedGroups` when any are named.
pub fn admits(spec: &OidcClientSpec, namespace: &str, user: &User) -> bool {
    let home = user.metadata.namespace.as_deref().unwrap_or_default();
    let group_ok = spec.allowed_groups.is_empty()
        || user.spec.groups.iter().any(|group| spec.allowed_groups.contains(group));
    admits_namespace(spec, namespace, home) && group_ok
}

/// Whether the client `spec` in `namespace` admits Users of namespace `home` at all: what
/// a token request may name before roster reads anything there.
pub fn admits_namespace(spec: &OidcClientSpec, namespace: &str, home: &str) -> bool {
    if spec.user_namespaces.is_empty() {
        home == namespace
    } else {
        spec.user_namespaces.iter().any(|n| n == home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(redirects: &[&str]) -> OidcClientSpec {
        serde_json::from_value(serde_json::json!({"redirectUris": redirects})).unwrap()
    }

    fn user(namespace: &str, groups: &[&str]) -> User {
        let mut user = User::new(
            "ada",
            serde_json::from_value(serde_json::json!({"email": "ada@example.com"})).unwrap(),
        );
        user.metadata.namespace = Some(namespace.into());
        user.spec.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        user
    }

    #[test]
    fn client_ids_name_one_client() {
        assert_eq!(client_id("team-a", "argo.cd"), "team-a.argo.cd");
        assert_eq!(parse_client_id("team-a.argo.cd"), Some(("team-a", "argo.cd")));
        for bad in ["argo", ".argo", "team-a.", ""] {
            assert_eq!(parse_client_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn sound_redirect_uris_are_https_or_loopback_http() {
        for good in [
            "https://argocd.example.com/auth/callback",
            "https://grafana.example.com:8443/login/generic_oauth?x=1",
            "http://localhost:8000",
            "http://127.0.0.1:18000/callback",
            "http://[::1]/cb",
        ] {
            assert!(validate(&spec(&[good]), "team-a", &[]).is_ok(), "{good}");
        }
        let cases = [
            ("http://argocd.example.com/cb", "uses http on a host other than localhost, 127.0.0.1 or [::1]"),
            ("https://argocd.example.com/cb#top", "has a #fragment"),
            ("/auth/callback", "is not an absolute URL"),
            ("https://user:pw@example.com/cb", "carries a user name or password"),
            ("javascript:alert(1)", "has no host"),
            ("ftp://example.com/cb", "is neither https nor http"),
            ("http://127.0.0.2/cb", "uses http on a host other than localhost, 127.0.0.1 or [::1]"),
            ("http://localhost./cb", "uses http on a host other than localhost, 127.0.0.1 or [::1]"),
            ("https://app.example.com@evil.example.net/cb", "carries a user name or password"),
        ];
        for (uri, problem) in cases {
            let error = validate(&spec(&[uri]), "team-a", &[]).unwrap_err();
            assert_eq!(error, Invalid::RedirectUri { uri: uri.into(), problem }, "{uri}");
            assert_eq!(error.reason(), "InvalidRedirectURI");
        }
        let mut logout = spec(&["https://ok.example.com/cb"]);
        logout.post_logout_redirect_uris = vec!["http://evil.example.com/".into()];
        assert_eq!(validate(&logout, "team-a", &[]).unwrap_err().reason(), "InvalidPostLogoutRedirectURI");
    }

    #[test]
    fn only_a_trusted_namespace_may_admit_other_namespaces_users() {
        let mut client = spec(&["https://a.example.com/cb"]);
        client.user_namespaces = vec!["team-a".into()];
        assert!(validate(&client, "team-a", &[]).is_ok(), "its own namespace, named");
        client.user_namespaces.push("team-b".into());
        let refused = validate(&client, "team-a", &[]).unwrap_err();
        assert_eq!(refused, Invalid::UserNamespaces { namespace: "team-b".into() });
        assert_eq!(refused.reason(), "UserNamespacesNotAllowed");
        assert!(validate(&client, "team-a", &["identity".into()]).is_err());
        assert!(validate(&client, "identity", &["identity".into()]).is_ok());
    }

    #[test]
    fn a_redirect_must_match_exactly_except_a_loopback_port() {
        // The last was registered before admission refused it: it matches nothing.
        let registered = vec![
            "https://app.example.com/cb".to_owned(),
            "http://127.0.0.1:8000/cb".to_owned(),
            "http://evil.example.net/cb".to_owned(),
        ];
        assert!(redirect_allowed(&registered, "https://app.example.com/cb"));
        assert!(redirect_allowed(&registered, "http://127.0.0.1:51234/cb"));
        for refused in [
            "https://app.example.com/cb/",
            "https://app.example.com/cb?next=/",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com.evil.net/cb",
            "https://app.example.com/cb#x",
            "http://localhost:51234/cb",
            "http://evil.example.net/cb",
            "http://127.0.0.1:8000/other",
            "https://127.0.0.1:8000/cb",
            "",
        ] {
            assert!(!redirect_allowed(&registered, refused), "{refused}");
        }
    }

    #[test]
    fn a_client_admits_its_namespace_or_the_named_ones_and_the_allowed_groups() {
        let mut client = spec(&["https://a.example.com/cb"]);
        assert!(admits(&client, "team-a", &user("team-a", &[])));
        assert!(!admits(&client, "team-a", &user("team-b", &[])));
        client.user_namespaces = vec!["team-b".into()];
        assert!(admits(&client, "team-a", &user("team-b", &[])));
        assert!(!admits(&client, "team-a", &user("team-a", &[])), "naming others replaces its own");
        assert!(
            admits_namespace(&client, "team-a", "team-b") && !admits_namespace(&client, "team-a", "team-a")
        );
        client.allowed_groups = vec!["ops".into()];
        assert!(!admits(&client, "team-a", &user("team-b", &["dev"])));
        assert!(admits(&client, "team-a", &user("team-b", &["dev", "ops"])));
    }
}
