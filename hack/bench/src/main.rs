//! `roster-bench`: what onboarding N people costs roster — time, API requests, memory —
//! next to the floor (a client that makes only the writes onboarding cannot avoid), then
//! start-up, idle writes, sign-in and link look-up throughput. Runs against the test
//! control plane and Mailpit; prints a table and writes the figures as JSON.
//!
//! `hack/bench.sh [N]` builds roster in release mode and runs this.

mod floor;
mod import;
mod load;
mod mailbox;
mod onboarding;
mod operator;
mod report;
mod signin;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use roster_testenv::{ControlPlane, Mailpit};

use crate::mailbox::Mailbox;
use crate::operator::Operator;
use crate::report::{Figures, Memory};

/// Namespace of the Users roster onboards.
const BENCH_NS: &str = "bench";
/// Namespace of the floor's Users (roster does not watch it).
const FLOOR_NS: &str = "floor";
/// Namespace and name of the SMTP Secret roster sends with.
const SMTP_SECRET: (&str, &str) = ("roster-system", "smtp");

/// Benchmark roster at N users.
#[derive(Parser)]
#[command(name = "roster-bench")]
struct Args {
    /// How many Users to onboard.
    #[arg(default_value_t = 1000)]
    users: usize,
    /// The roster binary to measure (a release build).
    #[arg(long)]
    roster: PathBuf,
    /// Where the figures (`<N>.json`) and the processes' logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Parallel clients creating the Users (and touching them).
    #[arg(long, default_value_t = 16)]
    creators: usize,
    /// roster's `--concurrency` (reconciles per controller); the floor runs twice as many
    /// workers, one set per controller that onboarding involves (User and UserInvite).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of sign-in load.
    #[arg(long, default_value_t = 20)]
    signin_seconds: u64,
    /// Seconds of link look-up load.
    #[arg(long, default_value_t = 10)]
    lookup_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.users;
    // Absolute: the control plane's kubeconfig names files under it.
    let out = std::path::absolute(&args.out)?;
    let work = out.join(format!("work-{n}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("roster-bench: N = {n}, {cores} cores, work under {}", work.display());

    let argon2 = signin::Argon2Floor::measure().await?;
    let crds = roster::api::crds_yaml()?;
    let plane = ControlPlane::start(&work.join("control-plane"), &crds).await?;
    // Both runs' messages, with room to spare: a duplicate must not push one out.
    let mailpit = Mailpit::start_keeping(&work.join("mailpit"), "mailpit", false, 2 * n + 1000).await?;
    let client = plane.client().await?;
    for namespace in [SMTP_SECRET.0, BENCH_NS, FLOOR_NS] {
        create_namespace(&client, namespace).await?;
    }
    smtp_secret(&client, mailpit.smtp_port).await?;
    let mailbox = Mailbox::new(&mailpit.api_url);

    // 1–2. The floor, then roster, each from an empty namespace.
    eprintln!("floor: {n} users …");
    let floor =
        floor::run(&client, FLOOR_NS, n, args.creators, 2 * args.concurrency, mailpit.smtp_port, &mailbox)
            .await?;
    mailbox.clear().await?;

    let flags = operator::flags(args.concurrency, BENCH_NS, SMTP_SECRET);
    let (mut roster, _) = Operator::start(&args.roster, plane.kubeconfig(), &work, "roster", &flags).await?;
    let before = traffic::snapshot(&client).await?;
    eprintln!("roster: {n} users …");
    let onboarding = onboarding::run(&client, BENCH_NS, n, args.creators, &mailbox).await?;
    roster.quiescent().await?;
    let onboarding_traffic = traffic::snapshot(&client).await?.since(&before);
    let memory_onboarding = roster.memory()?;

    // 4, 7. Restart with N settled Users: time to /readyz, then every User touched.
    eprintln!("restart and touch …");
    roster.stop();
    let before = traffic::snapshot(&client).await?;
    let (mut roster, startup) =
        Operator::start(&args.roster, plane.kubeconfig(), &work, "roster-again", &flags).await?;
    roster.quiescent().await?;
    let reconciled = roster.counters().await?.user;
    onboarding::touch(&client, BENCH_NS, n, args.creators).await?;
    roster.reconciled_users(reconciled + n as u64).await?;
    roster.quiescent().await?;
    let idle_traffic = traffic::snapshot(&client).await?.since(&before);
    let memory_settled = roster.memory()?;

    // 8. Link look-ups against N token Secrets; 6. sign-in.
    eprintln!("link look-ups …");
    let clients = 4 * cores;
    let lookups =
        signin::lookups(&roster.portal_url, clients, Duration::from_secs(args.lookup_seconds)).await?;
    eprintln!("sign-in …");
    let signin = signin::run(
        &client,
        BENCH_NS,
        &roster.portal_url,
        clients,
        cores,
        Duration::from_secs(args.signin_seconds),
        &argon2,
    )
    .await?;

    eprintln!("import …");
    let import = import::run(&args.roster, plane.kubeconfig(), &work, n)?;

    // Counted last: a duplicate sent late (a retried claim waits a minute) is counted too.
    let deliveries = mailbox.deliveries().await?;
    let figures = Figures::new(
        n,
        cores,
        floor,
        onboarding,
        deliveries,
        &onboarding_traffic,
        &idle_traffic,
        Memory { onboarding: memory_onboarding, settled: memory_settled },
        startup,
        signin,
        lookups,
        import,
    );
    print!("{}", figures.table());
    let path = out.join(format!("{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("figures written to {}", path.display());
    drop(roster);
    figures.check()
}

/// An HTTP client whose requests give up after a while: the benchmark never hangs on a
/// stuck server.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// The SMTP Secret pointing roster at Mailpit.
async fn smtp_secret(client: &Client, port: u16) -> anyhow::Result<()> {
    let (namespace, name) = SMTP_SECRET;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {
            "host": "127.0.0.1", "port": port.to_string(), "tls": "none",
            "from": "Example Corp <no-reply@example.com>",
        }
    }))?;
    Api::namespaced(client.clone(), namespace).create(&PostParams::default(), &secret).await?;
    Ok(())
}
