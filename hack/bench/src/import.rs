//! `roster import` of N generated CSV rows, checked against the cluster's N Users
//! (`--against-cluster` lists them): how long it takes and how much memory the process
//! needed at most.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use serde::Serialize;

/// What one import measured.
#[derive(Clone, Debug, Serialize)]
pub struct Import {
    pub rows: usize,
    pub seconds: f64,
    /// The process's peak resident memory, MiB.
    pub peak_mib: f64,
}

/// Imports `rows` generated rows with the `roster` binary into a directory under `work`.
pub fn run(roster: &Path, kubeconfig: &Path, work: &Path, rows: usize) -> anyhow::Result<Import> {
    let file = work.join("import.csv");
    let mut csv = String::from("email,givenName,familyName,displayName,phone,locale,groups,orgUnit\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "import{i}@bench-import.example.com,Given{i},\"Family, {i}\",Person {i},+1555{i:07},en,sre;team-{},Unit {}\n",
            i % 10,
            i % 7
        ));
    }
    std::fs::write(&file, csv)?;
    let out = work.join("import");
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let mut child = std::process::Command::new(roster)
        .arg("import")
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .arg("--against-cluster")
        .env("KUBECONFIG", kubeconfig)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting roster import")?;
    let hwm = format!("/proc/{}/status", child.id());
    // The process's high-water mark, sampled until it exits (VmHWM only grows, so the last
    // sample is the peak but for its last 5 ms; getrusage would count the forked bench too).
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(text) = std::fs::read_to_string(&hwm) {
            let kib = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kib = peak_kib.max(kib.unwrap_or(0));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.success(), "roster import failed: {status}");
    ensure!(std::fs::read_dir(&out)?.count() == rows + 1, "roster import wrote not one file per row");
    Ok(Import { rows, seconds, peak_mib: peak_kib as f64 / 1024.0 })
}
