//! The settings of `roster run`: flags, each with an environment-variable fallback so a
//! Deployment can set them either way.

use std::net::SocketAddr;

use k8s_openapi::jiff::SignedDuration;

use crate::credentials::{Argon2Settings, Lockout, PasswordPolicy};

/// Log line format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Settings of `roster run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunConfig {
    /// Address of the metrics port: `/healthz`, `/readyz` and Prometheus `/metrics`.
    #[arg(long, env = "ROSTER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address of the self-service portal (HTML pages and the JSON API).
    #[arg(long, env = "ROSTER_PORTAL_ADDR", default_value = "0.0.0.0:8081")]
    pub portal_addr: SocketAddr,

    /// Requests per minute one client address may make to the portal (bursts up to the
    /// same number); more are answered 429.
    #[arg(long, env = "ROSTER_PORTAL_RATE_LIMIT", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub portal_rate_limit: u32,

    /// Requests per minute one client address may make to the issuer's endpoints that
    /// applications' servers call — token, userinfo, revocation, discovery, keys — (bursts
    /// up to the same number); more are answered 429. One server asks for all of an
    /// application's users, so it gets more than a browser.
    #[arg(long, env = "ROSTER_OIDC_RATE_LIMIT", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub oidc_rate_limit: u32,

    /// "Forgot your password?" requests per hour one client address may make (bursts up to
    /// the same number); more are answered 429. Each person can also get at most 3 recovery
    /// emails a day, one at a time.
    #[arg(long, env = "ROSTER_RECOVERY_RATE_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub recovery_rate_limit: u32,

    /// The proxies in front of the portal (e.g. the Ingress controller's pods), as CIDRs,
    /// comma-separated. From a trusted proxy, the client is the right-most
    /// `X-Forwarded-For` address that is not a trusted proxy; otherwise the peer itself.
    #[arg(long, env = "ROSTER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Password checks (argon2id) running at once; each holds --argon2-memory-kib of memory,
    /// and 8 more requests per check may wait (beyond them the portal answers 503). Default:
    /// the CPUs this process may use (its cgroup's CPU quota, else the cores).
    #[arg(long, env = "ROSTER_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub hash_concurrency: Option<u16>,

    /// Watch only these namespaces, comma-separated (default: all namespaces). The
    /// directory — where emails and usernames are unique — is the Users of these namespaces.
    #[arg(long, env = "ROSTER_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Most reconciles of one kind running at once. 8 from the benchmark: onboarding 1,000
    /// people took 34, 22, 15 and 15 s at 2, 4, 8 and 16; beyond 8 the API server is the limit.
    #[arg(long, env = "ROSTER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Consecutive failed sign-ins that lock a user (INACTIVE, reason LockedOut) for
    /// --lockout-duration.
    #[arg(long, env = "ROSTER_LOCKOUT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub lockout_threshold: u32,

    /// How long a lock lasts, as a duration such as 15m or 1h; 0 keeps it until an admin
    /// deactivates and reactivates the user.
    #[arg(long, env = "ROSTER_LOCKOUT_DURATION", default_value = "15m", value_parser = parse_duration)]
    pub lockout_duration: std::time::Duration,

    /// Email domains users may have, comma-separated (a domain allows its subdomains).
    /// Empty: any domain.
    #[arg(long, env = "ROSTER_ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    pub allowed_email_domains: Vec<String>,

    /// argon2id memory per password hash, in KiB (OWASP: 19456 = 19 MiB).
    #[arg(long, env = "ROSTER_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub argon2_memory_kib: u32,

    /// argon2id passes over that memory (OWASP: 2).
    #[arg(long, env = "ROSTER_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes (OWASP: 1).
    #[arg(long, env = "ROSTER_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Fewest characters a new password may have (NIST SP 800-63B: at least 8; 12 is wiser).
    #[arg(long, env = "ROSTER_PASSWORD_MIN_LENGTH", default_value_t = 12, value_parser = clap::value_parser!(u16).range(8..=128))]
    pub password_min_length: u16,

    /// The Secret with SMTP settings, as NAMESPACE/NAME (keys: host, port, username,
    /// password, from, tls = none | starttls | tls). Without it, email invitations cannot be
    /// delivered (Link delivery still works).
    #[arg(long, env = "ROSTER_SMTP_SECRET")]
    pub smtp_secret: Option<ObjectName>,

    /// A ConfigMap, as NAMESPACE/NAME, whose keys replace or add email templates by name
    /// (`invitation.<language>.subject.txt`, `.body.txt`, `.body.html`). Read at each
    /// delivery, so edits apply without a restart.
    #[arg(long, env = "ROSTER_TEMPLATES_CONFIGMAP")]
    pub templates_configmap: Option<ObjectName>,

    /// Public base URL of the portal, as people reach it; links are
    /// `<portal-url>/invite/<token>`.
    #[arg(long, env = "ROSTER_PORTAL_URL", default_value = "http://localhost:8081")]
    pub portal_url: String,

    /// The OpenID Connect issuer's URL, as relying parties reach roster (e.g.
    /// https://id.example.com): https, or http on localhost for a demo. Unset: roster serves
    /// no OpenID Connect and every OidcClient reports IssuerNotConfigured.
    #[arg(long, env = "ROSTER_ISSUER_URL", value_parser = parse_issuer)]
    pub issuer_url: Option<IssuerUrl>,

    /// The Secret, as NAMESPACE/NAME in roster's own namespace, that holds the issuer's
    /// signing keys: roster creates it (type roster.dev/signing-keys) and rotates the keys
    /// in it; every replica signs with the same keys. Required with --issuer-url.
    #[arg(long, env = "ROSTER_SIGNING_KEYS_SECRET", requires = "issuer_url")]
    pub signing_keys_secret: Option<ObjectName>,

    /// How long a signing key signs before a new one takes over, as a duration (at least
    /// 1h). The previous key stays published until every token it signed has expired.
    #[arg(long, env = "ROSTER_SIGNING_KEY_ROTATION", default_value = "720h", value_parser = parse_rotation)]
    pub signing_key_rotation: std::time::Duration,

    /// How long a sign-in session on the issuer lasts, as a duration (at least 5m): within
    /// it, a second application signs the person in without asking again. Signing out, a
    /// PasswordReset, an MfaReset, deactivation or deleting the User ends it sooner. The
    /// refresh tokens of the applications opened in it end with it.
    #[arg(long, env = "ROSTER_SESSION_LIFETIME", default_value = "24h", value_parser = parse_session_lifetime)]
    pub session_lifetime: std::time::Duration,

    /// How long a sign-in session lasts unused, as a duration (`0`: no idle timeout; else at
    /// least 10s). Each use moves it on: an application signed in with it, a refresh of one
    /// of its applications' tokens, the account page. Unused longer, it ends with its
    /// applications' refresh tokens, as at its lifetime.
    #[arg(long, env = "ROSTER_SESSION_IDLE_TIMEOUT", default_value = "2h", value_parser = parse_idle_timeout)]
    pub session_idle_timeout: std::time::Duration,

    /// The Lease, as NAMESPACE/NAME (in roster's own namespace), the replicas elect a leader
    /// with: only its holder reconciles; every replica serves the portal and the issuer.
    /// Unset: no election — this process reconciles (run one replica only).
    #[arg(long, env = "ROSTER_LEADER_ELECTION_LEASE")]
    pub leader_election_lease: Option<ObjectName>,

    /// How long the leader's Lease stands without a renewal (2s-5m): after a crash, another
    /// replica takes over within it. The leader stops at 2/3 of it if it cannot renew; each
    /// replica tries every 2/15 of it. A leader that shuts down releases the Lease at once.
    #[arg(long, env = "ROSTER_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub leader_election_lease_duration: std::time::Duration,

    /// Namespaces whose OidcClients may admit other namespaces' Users (`userNamespaces`),
    /// comma-separated. Elsewhere a client that names another namespace reports
    /// UserNamespacesNotAllowed: a namespace admin cannot reach another tenant's people.
    #[arg(long, env = "ROSTER_OIDC_TRUSTED_NAMESPACES", value_delimiter = ',')]
    pub oidc_trusted_namespaces: Vec<String>,

    /// The organisation's name, shown in emails and the portal.
    #[arg(long, env = "ROSTER_ORG_NAME", default_value = "roster")]
    pub org_name: String,

    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `roster=debug,kube=info`).
    #[arg(long, env = "ROSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A namespaced object named by a flag, written `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::str::FromStr for ObjectName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl RunConfig {
    /// The argon2id parameters the flags ask for.
    pub fn argon2(&self) -> Argon2Settings {
        Argon2Settings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    /// The lockout rule the flags ask for.
    pub fn lockout(&self) -> Lockout {
        Lockout {
            threshold: self.lockout_threshold,
            duration: (!self.lockout_duration.is_zero())
                .then(|| SignedDuration::try_from(self.lockout_duration).unwrap_or(SignedDuration::MAX)),
        }
    }

    /// The password policy the flags ask for.
    pub fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy { min_length: usize::from(self.password_min_length), ..PasswordPolicy::default() }
    }
}

/// An issuer URL (`--issuer-url`): https, or http on a loopback host; no query, fragment or
/// user info; without a trailing slash, as the `iss` claim and discovery compare it exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerUrl(String);

impl std::fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_issuer(text: &str) -> Result<IssuerUrl, String> {
    // Sound as a redirect URI is (https, or http on a loopback host; no user info or
    // fragment), and without a query.
    let url = crate::registration::sound_uri(text).map_err(|problem| format!("{text:?} {problem}"))?;
    if url.query().is_some() {
        return Err(format!("{text:?} must have no query"));
    }
    Ok(IssuerUrl(url.as_str().trim_end_matches('/').to_owned()))
}

/// A key rotation period: a duration of at least an hour (a retired key is published for a
/// day, so a shorter one would pile keys up in the JWKS).
fn parse_rotation(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    if duration < std::time::Duration::from_secs(3600) {
        return Err(format!("{text:?} must be at least 1h"));
    }
    Ok(duration)
}

/// A session lifetime: a duration of at least five minutes (a session must outlast the
/// sign-in that starts it and the redirects that follow).
fn parse_session_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    if duration < std::time::Duration::from_secs(300) {
        return Err(format!("{text:?} must be at least 5m"));
    }
    Ok(duration)
}

/// An idle timeout: `0` (none) or at least ten seconds (a session must outlast the redirects
/// of one sign-in).
fn parse_idle_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    if !duration.is_zero() && duration < std::time::Duration::from_secs(10) {
        return Err(format!("{text:?} must be 0 (none) or at least 10s"));
    }
    Ok(duration)
}

/// A leader election lease: whole seconds (what a Lease holds, so the renew deadline is
/// computed from what others read), between 2 seconds and 5 minutes (how long a crashed
/// leader may leave the reconcilers idle).
fn parse_lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    if !(std::time::Duration::from_secs(2)..=std::time::Duration::from_secs(300)).contains(&duration) {
        return Err(format!("{text:?} must be between 2s and 5m"));
    }
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} must be whole seconds (a Lease holds seconds)"));
    }
    Ok(duration)
}

/// A Go-style duration (`15m`, `1h30m`, `0`), at most a year.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let parsed: kube::core::Duration =
        text.parse().map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    let duration = std::time::Duration::from(parsed);
    if text.trim().starts_with('-') || duration > std::time::Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("{text:?} must be between 0 and 8784h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_namespace_slash_name() {
        let parsed: ObjectName = "roster-system/smtp".parse().unwrap();
        assert_eq!(parsed, ObjectName { namespace: "roster-system".into(), name: "smtp".into() });
        assert_eq!(parsed.to_string(), "roster-system/smtp");
        for bad in ["smtp", "/smtp", "roster-system/", "a/b/c"] {
            assert!(bad.parse::<ObjectName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn issuers_are_https_or_loopback_http_without_a_trailing_slash() {
        assert_eq!(parse_issuer("https://id.example.com/").unwrap().to_string(), "https://id.example.com");
        assert_eq!(
            parse_issuer("https://example.com/roster").unwrap().to_string(),
            "https://example.com/roster"
        );
        assert_eq!(parse_issuer("http://127.0.0.1:8081").unwrap().to_string(), "http://127.0.0.1:8081");
        for bad in [
            "http://id.example.com",
            "id.example.com",
            "https://id.example.com/?a=1",
            "https://u@id.example.com",
            "https://id.example.com/#x",
        ] {
            assert!(parse_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_go_style_and_bounded() {
        assert_eq!(parse_duration("15m").unwrap(), std::time::Duration::from_secs(900));
        assert_eq!(parse_duration("0").unwrap(), std::time::Duration::ZERO);
        for bad in ["-1m", "15", "forever", "9000h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_rotation("59m").is_err());
        assert_eq!(parse_rotation("720h").unwrap(), std::time::Duration::from_secs(720 * 3600));
        assert_eq!(parse_session_lifetime("24h").unwrap(), std::time::Duration::from_secs(24 * 3600));
        assert!(parse_session_lifetime("4m").is_err());
        assert_eq!(parse_idle_timeout("0").unwrap(), std::time::Duration::ZERO);
        assert!(parse_idle_timeout("9s").is_err());
        assert_eq!(parse_idle_timeout("30m").unwrap(), std::time::Duration::from_secs(1800));
        assert!(parse_lease_duration("1s").is_err());
        assert!(parse_lease_duration("6m").is_err());
        assert!(parse_lease_duration("2999ms").is_err());
        assert_eq!(parse_lease_duration("15s").unwrap(), std::time::Duration::from_secs(15));
    }
}
