//! The roster process under measurement: started with default flags (plus what the
//! benchmark's one client address and namespaces need), timed to `/readyz`, its reconcile
//! counters and memory read while it runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use roster_testenv::{Process, Roster};
use serde::Serialize;

/// How long the operator may take to answer `/readyz`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// How long reconciles may keep going before the operator counts as not settling.
const SETTLE_DEADLINE: Duration = Duration::from_secs(1800);
/// Reconcile counters unchanged for this long: nothing is under way.
const QUIET: Duration = Duration::from_secs(3);

/// A running `roster run`.
pub struct Operator {
    process: Process,
    metrics_url: String,
    /// Base URL of its portal.
    pub portal_url: String,
    http: reqwest::Client,
}

/// Reconciles run so far, per controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub user: u64,
    pub invite: u64,
    pub failures: u64,
}

/// Resident memory of the process, MiB.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rss {
    /// Now.
    pub current_mib: f64,
    /// The most it has held (the kernel's high-water mark).
    pub peak_mib: f64,
}

/// The flags beyond roster's defaults: one namespace watched, Mailpit as SMTP server, and a
/// rate limit the benchmark's single client address does not hit.
pub fn flags(concurrency: usize, namespace: &str, (smtp_ns, smtp_name): (&str, &str)) -> Vec<String> {
    vec![
        format!("--concurrency={concurrency}"),
        format!("--watch-namespaces={namespace}"),
        format!("--smtp-secret={smtp_ns}/{smtp_name}"),
        "--portal-rate-limit=1000000".to_owned(),
        "--org-name=Example Corp".to_owned(),
    ]
}

impl Operator {
    /// Starts `roster run` and waits until `/readyz` answers 200: returns it and how long
    /// that took from the process's start.
    pub async fn start(
        binary: &Path,
        kubeconfig: &Path,
        log_dir: &Path,
        name: &str,
        extra: &[String],
    ) -> anyhow::Result<(Self, Duration)> {
        let started =
            Roster::start(binary, kubeconfig, (log_dir, name), extra, &[], STARTUP_DEADLINE).await?;
        let operator = Self {
            process: started.process,
            metrics_url: started.metrics_url,
            portal_url: started.portal_url,
            http: crate::http_client(),
        };
        Ok((operator, started.startup))
    }

    /// The reconcile counters from the operator's metrics.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let text = self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
            .context("reading roster's metrics")?
            .text()
            .await?;
        let mut counters = Counters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
            if line.starts_with("roster_reconciles_total{controller=\"user\"}") {
                counters.user = value;
            } else if line.starts_with("roster_reconciles_total{controller=\"userinvite\"}") {
                counters.invite = value;
            } else if line.starts_with("roster_reconcile_failures_total{") {
                counters.failures += value;
            }
        }
        Ok(counters)
    }

    /// Waits until no reconcile has run for a few seconds: whatever the last change set off
    /// has finished (its writes included).
    pub async fn quiescent(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + SETTLE_DEADLINE;
        let mut last = self.counters().await?;
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            self.process.check_running()?;
            if Instant::now() > until {
                bail!("roster still reconciling after {SETTLE_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.counters().await?;
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        Ok(())
    }

    /// Waits until the User controller has run at least `count` reconciles.
    pub async fn reconciled_users(&mut self, count: u64) -> anyhow::Result<()> {
        let until = Instant::now() + SETTLE_DEADLINE;
        loop {
            self.process.check_running()?;
            let done = self.counters().await?.user;
            if done >= count {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("roster reconciled {done} of {count} Users within {SETTLE_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resident memory now and at its peak, from `/proc`.
    pub fn memory(&self) -> anyhow::Result<Rss> {
        let path = format!("/proc/{}/status", self.process.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = |field: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(Rss { current_mib: kib("VmRSS:") / 1024.0, peak_mib: kib("VmHWM:") / 1024.0 })
    }

    /// Stops the operator (SIGTERM; it finishes in-flight reconciles).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
