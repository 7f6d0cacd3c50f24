//! The `roster` binary: wiring, and the one call into the C allocator. `roster run` starts
//! the controllers, the portal and the metrics port; `roster crd` prints the CRDs.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use k8s_openapi::jiff::SignedDuration;
use roster::config::RunConfig;
use roster::credentials::PasswordHasher;
use roster::health::{self, Readiness};
use roster::leader::{Elector, Leadership, Timing};
use roster::mail::Templates;
use roster::oidc::{self, Issuer, key_store::KeyStore};
use roster::portal::{self, Portal, rate_limit::RateLimiter};
use roster::signin::SignIn;
use roster::telemetry::{self, Metrics};
use roster::{Error, api, cli, controller};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// roster manages people's accounts on Kubernetes: users, invitations, passwords and TOTP.
///
/// Installed as `kubectl-roster`, it is a kubectl plugin: `kubectl roster list --phase pending`.
#[derive(Parser)]
#[command(name = "roster", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, the portal and the metrics port until SIGTERM or SIGINT.
    Run(Box<RunConfig>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/roster.yaml` holds).
    Crd,
    /// Turn a CSV file or a Keycloak realm export into User manifests for Git, every row
    /// checked by the CRD's rules and the directory's.
    ///
    /// CSV headers map to fields (compared without case, spaces, '_' or '-'): email
    /// (required), username, givenName, familyName, displayName (or name), phone, locale,
    /// timezone, groups (separated by ';'), metadata.name (by default made from the username,
    /// else the email's local part); any other column becomes an attribute. A Keycloak
    /// export's users keep their username, email, names, groups and attributes; credentials
    /// are never carried over — roster invites the people. Nothing is written unless every
    /// row is valid (or --skip-invalid); each problem is printed with its row, field and rule.
    Import(Box<cli::import::ImportArgs>),
    /// Count Users, invites and resets by namespace and phase.
    Stat(cli::stat::StatArgs),
    /// List Users with their email, phase, last sign-in and expiry.
    List(cli::admin::ListArgs),
    /// Send a person a new invitation link (the old one stops working).
    Resend(cli::admin::UserArgs),
    /// Clear a person's authenticator once and send them a link to enrol a new one.
    ResetMfa(cli::admin::ResetArgs),
    /// Send a person a link to choose a new password.
    ResetPassword(cli::admin::ResetArgs),
    /// Print the links roster keeps for you to hand over (delivery Link).
    Link(cli::admin::UserArgs),
    /// Deactivate a User: invites revoked, sign-ins refused, sessions ended.
    Deactivate(cli::admin::UserArgs),
    /// Activate a User again.
    Activate(cli::admin::UserArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match parse().command {
        Command::Crd => api::crds_yaml().map(|yaml| print!("{yaml}")).map_err(|e| e.to_string()),
        Command::Run(config) => run(*config).await.map_err(|e| e.to_string()),
        Command::Import(args) => cli::import::run(*args).await.map_err(|e| e.to_string()),
        Command::Stat(args) => cli::stat::run(args).await.map_err(|e| e.to_string()),
        Command::List(args) => cli::admin::list(args).await.map_err(|e| e.to_string()),
        Command::Resend(args) => cli::admin::resend(args).await.map_err(|e| e.to_string()),
        Command::ResetMfa(args) => {
            cli::admin::reset(args, cli::admin::Reset::Mfa).await.map_err(|e| e.to_string())
        }
        Command::ResetPassword(args) => {
            cli::admin::reset(args, cli::admin::Reset::Password).await.map_err(|e| e.to_string())
        }
        Command::Link(args) => cli::admin::link(args).await.map_err(|e| e.to_string()),
        Command::Deactivate(args) => {
            cli::admin::set_state(args, api::UserState::Inactive).await.map_err(|e| e.to_string())
        }
        Command::Activate(args) => {
            cli::admin::set_state(args, api::UserState::Active).await.map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line; its help names the program as it was called, so that as a kubectl
/// plugin it says `kubectl roster`.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let called = std::env::args_os().next().and_then(|arg| {
        std::path::Path::new(&arg).file_name().map(|name| name.to_string_lossy().into_owned())
    });
    let mut command = Cli::command();
    if called.as_deref() == Some("kubectl-roster") {
        command = command.bin_name("kubectl roster");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

async fn run(config: RunConfig) -> roster::Result<()> {
    telemetry::init_logging(config.log_format, &config.log_level)?;
    // `available_parallelism` follows the cgroup's CPU quota (a pod's CPU limit), not the node's cores.
    let slots = config
        .hash_concurrency
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let hasher = PasswordHasher::new(config.argon2(), slots).map_err(|e| Error::Startup(e.to_string()))?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::Startup(format!("connecting to Kubernetes: {e}")))?;
    let templates = Templates::new(&Default::default()).map_err(|e| Error::Startup(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::new(config.issuer_url.is_some()));
    let shutdown = CancellationToken::new();

    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| Error::Startup(format!("handling SIGTERM: {e}")))?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        on_signal.cancel();
    });

    tokio::spawn(roster::memory::release_after_bursts(release_free_memory, shutdown.clone()));

    let (leadership, elector) = match config.leader_election_lease.clone() {
        None => (Leadership::always(), None),
        Some(lease) => {
            let timing = Timing::for_lease(config.leader_election_lease_duration);
            let (elector, leadership) = Elector::new(&client, lease, Elector::identity(), timing);
            (leadership, Some(elector))
        }
    };
    tokio::spawn(show_leadership(leadership.clone(), metrics.clone()));
    // Cancelled once the controllers have stopped: the leader then releases its Lease.
    let stop_leading = CancellationToken::new();

    let mut watches = controller::Watches::new(&client, &config.watch_namespaces);
    watches.count_phases(&metrics);
    let signin = Arc::new(
        SignIn::new(
            client.clone(),
            watches.caches(),
            hasher,
            config.lockout(),
            config.allowed_email_domains.clone(),
            metrics.clone(),
        )
        .await?,
    );
    let recovery = portal::recovery::Recovery::start(
        signin.clone(),
        config.recovery_rate_limit,
        config.trusted_proxies.clone(),
    );
    let portal = Arc::new(Portal::new(
        signin,
        config.password_policy(),
        config.org_name.clone(),
        &config.portal_url,
        recovery,
    )?);
    let limiter = Arc::new(RateLimiter::new(config.portal_rate_limit, config.trusted_proxies.clone()));
    let issuer_routes = match (&config.issuer_url, &config.signing_keys_secret) {
        (None, _) => axum::Router::new(),
        (Some(_), None) => {
            return Err(Error::Startup("--issuer-url needs --signing-keys-secret (NAMESPACE/NAME)".into()));
        }
        (Some(url), Some(keys_secret)) => {
            let schedule = oidc::keys::Schedule {
                rotation: SignedDuration::try_from(config.signing_key_rotation)
                    .map_err(|e| Error::Startup(format!("--signing-key-rotation: {e}")))?,
                keep: oidc::keys::KEEP_RETIRED,
            };
            let (keys, watch) = KeyStore::new(&client, keys_secret.clone(), schedule);
            let keys = Arc::new(keys);
            tokio::spawn(watch);
            tokio::spawn(keys.clone().keep(shutdown.clone()));
            let (loading, ready) = (keys.clone(), readiness.clone());
            tokio::spawn(async move {
                loading.loaded().await;
                ready.set_keys_loaded();
            });
            let sweeper = Arc::new(oidc::sweeper::Sweeper::default());
            watches.index_sessions(sweeper.clone());
            tokio::spawn(sweeper.clone().run(client.clone(), leadership.clone(), shutdown.clone()));
            let sessions = oidc::session::Policy {
                lifetime: SignedDuration::try_from(config.session_lifetime)
                    .map_err(|e| Error::Startup(format!("--session-lifetime: {e}")))?,
                idle: SignedDuration::try_from(config.session_idle_timeout)
                    .map_err(|e| Error::Startup(format!("--session-idle-timeout: {e}")))
                    .map(|idle| (!idle.is_zero()).then_some(idle))?,
            };
            let issuer = Issuer::new(
                &url.to_string(),
                keys,
                portal.clone(),
                config.oidc_trusted_namespaces.clone(),
                sessions,
                sweeper,
            );
            let backchannel =
                Arc::new(RateLimiter::new(config.oidc_rate_limit, config.trusted_proxies.clone()));
            oidc::router(Arc::new(issuer), limiter.clone(), backchannel)
        }
    };

    let server = async {
        let served =
            health::serve(config.metrics_addr, metrics.clone(), readiness.clone(), shutdown.clone()).await;
        shutdown.cancel();
        served
    };
    let portal_server = async {
        let served =
            portal::serve(config.portal_addr, portal, limiter, issuer_routes, shutdown.clone()).await;
        shutdown.cancel();
        served
    };
    let controllers = async {
        controller::run(
            client.clone(),
            watches,
            &config,
            templates,
            metrics.clone(),
            readiness.clone(),
            leadership,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        stop_leading.cancel();
        Ok(())
    };
    let election = async {
        if let Some(elector) = elector {
            elector.run(stop_leading.clone()).await;
        }
        Ok(())
    };
    tokio::try_join!(server, portal_server, controllers, election).map(drop)
}

/// Keeps the `roster_leader` gauge in step with this replica's leadership.
async fn show_leadership(mut leadership: Leadership, metrics: Arc<Metrics>) {
    loop {
        leadership.leading().await;
        metrics.leading(true);
        leadership.lost().await;
        metrics.leading(false);
    }
}

/// Asks glibc to return its free pages to the operating system (see `roster::memory`);
/// elsewhere nothing: musl and other allocators do not keep freed pages the same way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it only locks and
    // walks the allocator's own arenas. The only unsafe code in roster.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
