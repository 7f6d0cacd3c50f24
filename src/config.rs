//! The settings of `roster run`: flags, each with an environment-variable fallback so a
//! Deployment can set them either way.

use std::net::SocketAddr;

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

    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `roster=debug,kube=info`).
    #[arg(long, env = "ROSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}
