//! The figures of one run, each next to its target: a table for people, JSON for
//! comparisons, and the checks that make a run fail (what must hold at any size).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::ensure;
use serde::Serialize;

use crate::floor::Floor;
use crate::load::Load;
use crate::mailbox::Deliveries;
use crate::onboarding::Onboarding;
use crate::operator::Rss;
use crate::signin::Signin;
use crate::traffic::{Key, Snapshot};

/// Resident memory after onboarding (the process that did it) and settled (a fresh process
/// with N settled Users, after every User was touched).
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub onboarding: Rss,
    pub settled: Rss,
}

/// Requests on roster's kinds during a phase.
#[derive(Clone, Debug, Serialize)]
pub struct Traffic {
    /// Write requests roster made, per user.
    pub writes_per_user: f64,
    /// Write requests answered 409.
    pub conflicts: f64,
    /// Every counter that moved.
    pub requests: Vec<(Key, f64)>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub users: usize,
    pub cores: usize,
    pub cpu: String,
    pub floor: Floor,
    pub onboarding: Onboarding,
    /// roster's onboarding time ÷ the floor's.
    pub ratio: f64,
    /// roster's onboarding time per user, ms.
    pub ms_per_user: f64,
    pub deliveries: Deliveries,
    pub traffic: Traffic,
    /// Write requests roster made after a restart while every User was touched.
    pub idle_writes: f64,
    pub memory: Memory,
    /// Seconds from process start to `/readyz` with N settled Users.
    pub startup_s: f64,
    pub signin: Signin,
    pub lookups: Load,
    pub import: crate::import::Import,
}

impl Figures {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: usize,
        cores: usize,
        floor: Floor,
        onboarding: Onboarding,
        deliveries: Deliveries,
        onboarding_traffic: &Snapshot,
        idle_traffic: &Snapshot,
        memory: Memory,
        startup: Duration,
        signin: Signin,
        lookups: Load,
        import: crate::import::Import,
    ) -> Self {
        let n = users as f64;
        // The benchmark's own writes: N User creations, then N annotations.
        let traffic = Traffic {
            writes_per_user: (onboarding_traffic.writes() - n) / n,
            conflicts: onboarding_traffic.conflicts(),
            requests: onboarding_traffic.rows(),
        };
        Self {
            users,
            cores,
            cpu: cpu_model(),
            ratio: onboarding.total_s / floor.total_s,
            ms_per_user: onboarding.total_s * 1000.0 / n,
            floor,
            onboarding,
            deliveries,
            traffic,
            idle_writes: idle_traffic.writes() - n,
            memory,
            startup_s: startup.as_secs_f64(),
            signin,
            lookups,
            import,
        }
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let n = self.users;
        let _ = writeln!(out, "\nroster benchmark, N = {n}, {} cores ({})\n", self.cores, self.cpu);
        let mut row = |figure: &str, value: String, target: &str, met: Option<bool>| {
            let met = match met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "",
            };
            let _ = writeln!(out, "{figure:<44} {value:<34} {target:<22} {met}");
        };
        row("figure", "value".into(), "target", None);
        let o = &self.onboarding;
        row(
            "onboarding: all PENDING and mailed",
            format!(
                "{:.1} s ({:.1} ms/user, {:.0} users/s)",
                o.total_s,
                self.ms_per_user,
                n as f64 / o.total_s
            ),
            "",
            None,
        );
        row("  Users created (parallel clients)", format!("{:.1} s", o.created_s), "", None);
        row("  all PENDING / all mailed", format!("{:.1} s / {:.1} s", o.pending_s, o.mailed_s), "", None);
        row(
            "floor (same writes, no logic)",
            format!("{:.1} s ({} workers)", self.floor.total_s, self.floor.workers),
            "",
            None,
        );
        row("roster ÷ floor", format!("{:.2}", self.ratio), "≤ 1.5", Some(self.ratio <= 1.5));
        let d = &self.deliveries;
        row(
            "emails: messages / recipients / duplicates",
            format!("{} / {} / {}", d.messages, d.recipients, d.duplicates),
            "N / N / 0",
            Some(d.recipients == n && d.duplicates == 0),
        );
        let t = &self.traffic;
        row(
            "write requests per user (Event included)",
            format!("{:.2} (floor {})", t.writes_per_user, self.floor.writes_per_user),
            "≤ 6",
            Some(t.writes_per_user <= 6.0),
        );
        row("conflicts (409) while onboarding", format!("{}", t.conflicts), "0", Some(t.conflicts == 0.0));
        row(
            "writes after restart + touching every User",
            format!("{}", self.idle_writes),
            "0",
            Some(self.idle_writes == 0.0),
        );
        row(
            "start-up to /readyz with N settled Users",
            format!("{:.2} s", self.startup_s),
            "< 5 s",
            Some(self.startup_s < 5.0),
        );
        let i = &self.import;
        row(
            "roster import: N CSV rows, --against-cluster",
            format!(
                "{:.2} s ({:.0} rows/s), peak {:.1} MiB",
                i.seconds,
                i.rows as f64 / i.seconds,
                i.peak_mib
            ),
            "",
            None,
        );
        let m = &self.memory;
        row(
            "RSS after onboarding: now / peak",
            format!("{:.1} / {:.1} MiB", m.onboarding.current_mib, m.onboarding.peak_mib),
            "",
            None,
        );
        row(
            "RSS settled (restarted, touched): now / peak",
            format!("{:.1} / {:.1} MiB", m.settled.current_mib, m.settled.peak_mib),
            "< 64 MiB",
            Some(m.settled.current_mib < 64.0),
        );
        let s = &self.signin;
        let share = s.load.per_second / s.floor_per_second;
        row(
            "sign-in: per second (share of argon2 floor)",
            format!("{:.1}/s ({:.0} % of {:.1}/s)", s.load.per_second, share * 100.0, s.floor_per_second),
            "≥ 80 %",
            Some(share >= 0.8),
        );
        row(
            "sign-in: p50 / p99 (one verification)",
            format!("{:.0} / {:.0} ms ({:.0} ms)", s.load.p50_ms, s.load.p99_ms, s.verify_ms),
            "p99 < 4 × verification",
            Some(s.load.p99_ms < 4.0 * s.verify_ms),
        );
        // Little's law: C closed-loop clients served at most at the floor rate wait C ÷ rate
        // on average, so with 4 × cores clients the mean alone is ≥ 4 × one verification.
        row(
            "  least possible mean: clients ÷ floor rate",
            format!("{:.0} ms ({} clients)", s.clients as f64 * 1000.0 / s.floor_per_second, s.clients),
            "",
            None,
        );
        row("  sign-in answers by status", format!("{:?}", s.load.statuses), "", None);
        let l = &self.lookups;
        row(
            &format!("link look-up, {n} token Secrets"),
            format!("{:.0}/s, p50 {:.1} ms, p99 {:.1} ms", l.per_second, l.p50_ms, l.p99_ms),
            "flat in N",
            None,
        );
        row("  look-up answers by status", format!("{:?}", l.statuses), "", None);
        let _ = writeln!(
            out,
            "\nAPI requests on roster's kinds while onboarding (the benchmark's {n} User POSTs included):"
        );
        for (key, count) in &t.requests {
            let resource = if key.subresource.is_empty() {
                key.resource.clone()
            } else {
                format!("{}/{}", key.resource, key.subresource)
            };
            let _ = writeln!(
                out,
                "  {:<7} {:<24} {:<4} {:>8}  ({:.2}/user)",
                key.verb,
                resource,
                key.code,
                count,
                count / n as f64
            );
        }
        out
    }

    /// What must hold at any N (timings are reported, never asserted: they depend on the
    /// machine).
    pub fn check(&self) -> anyhow::Result<()> {
        let d = &self.deliveries;
        ensure!(d.recipients == self.users && d.duplicates == 0, "not exactly one email per user: {d:?}");
        ensure!(self.idle_writes == 0.0, "{} writes after a restart with nothing to do", self.idle_writes);
        let t = &self.traffic;
        ensure!(t.writes_per_user <= 6.0, "{:.2} write requests per user (at most 6)", t.writes_per_user);
        ensure!(t.conflicts == 0.0, "{} conflicts (409) in an uncontended batch", t.conflicts);
        ensure!(
            self.lookups.statuses.keys().all(|s| *s == 404),
            "random tokens answered {:?}",
            self.lookups.statuses
        );
        ensure!(
            self.signin.load.statuses.keys().all(|s| *s == 200),
            "sign-ins answered {:?}",
            self.signin.load.statuses
        );
        Ok(())
    }
}

/// The CPU's model name, for the record.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
