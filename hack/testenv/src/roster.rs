//! A `roster run` process for the tests and the benchmark: on free loopback ports (metrics
//! and portal, the portal's own URL in its links), started once its `/readyz` answers 200.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Process, Result, free_ports};

/// How often `/readyz` is asked while waiting.
const POLL: Duration = Duration::from_millis(10);

/// A started `roster run`.
pub struct Roster {
    /// The process.
    pub process: Process,
    /// Base URL of its metrics port (`/metrics`, `/readyz`).
    pub metrics_url: String,
    /// Base URL of its portal, which is also the `--portal-url` in its links.
    pub portal_url: String,
    /// From spawning the process to `/readyz` answering 200.
    pub startup: Duration,
}

impl Roster {
    /// Runs `binary run` with the ports and `flags`, `env` added to `KUBECONFIG=kubeconfig`,
    /// logging under `log_dir` as `name`; waits up to `deadline` for `/readyz`.
    pub async fn start(
        binary: &Path,
        kubeconfig: &Path,
        (log_dir, name): (&Path, &str),
        flags: &[String],
        env: &[(&str, &str)],
        deadline: Duration,
    ) -> Result<Self> {
        let [metrics, free] = free_ports()?;
        // A `--portal-addr` in `flags` (a port the caller had to know first) replaces the free one.
        let given = flags.iter().find_map(|f| f.strip_prefix("--portal-addr=")).map(str::to_owned);
        let portal_addr = given.clone().unwrap_or_else(|| format!("127.0.0.1:{free}"));
        let portal_url = format!("http://{portal_addr}");
        let mut args = vec!["run".to_owned(), format!("--metrics-addr=127.0.0.1:{metrics}")];
        if given.is_none() {
            args.push(format!("--portal-addr={portal_addr}"));
        }
        args.push(format!("--portal-url={portal_url}"));
        args.extend(flags.iter().cloned());
        let kubeconfig = kubeconfig.display().to_string();
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", kubeconfig.as_str()));
        let started = Instant::now();
        let mut process = Process::spawn(name, binary, &args, &env, log_dir)?;
        let metrics_url = format!("http://127.0.0.1:{metrics}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        loop {
            process.check_running()?;
            let ready = http.get(format!("{metrics_url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(Self { process, metrics_url, portal_url, startup: started.elapsed() });
            }
            if started.elapsed() > deadline {
                return Err(process.not_ready(format!("GET /readyz not 200 within {deadline:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
