//! The settings of `roster run`: flags, each with an environment-variable fallback so a
//! Deployment can set them either way.

use std::net::SocketAddr;

use crate::credentials::{Argon2Settings, PasswordPolicy};

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

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ROSTER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Most reconciles of one kind running at once.
    #[arg(long, env = "ROSTER_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Consecutive failed sign-ins that lock a user (INACTIVE, reason LockedOut) until an
    /// admin reactivates them.
    #[arg(long, env = "ROSTER_LOCKOUT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub lockout_threshold: u32,

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
    pub smtp_secret: Option<String>,

    /// Public base URL of the portal; links are `<portal-url>/invite/<token>`.
    #[arg(long, env = "ROSTER_PORTAL_URL", default_value = "http://localhost:8081")]
    pub portal_url: String,

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

impl RunConfig {
    /// The argon2id parameters the flags ask for.
    pub fn argon2(&self) -> Argon2Settings {
        Argon2Settings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    /// The password policy the flags ask for.
    pub fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy { min_length: usize::from(self.password_min_length), ..PasswordPolicy::default() }
    }
}
