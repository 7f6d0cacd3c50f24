//! After every other test: the operator's log holds no password hash, TOTP secret or
//! token, though the tests put such values in Secrets it watches.

use anyhow::ensure;
use libtest_mimic::Trial;

use crate::harness::shared;
use crate::lifecycle::{MARKER_HASH, MARKER_TOTP};

pub fn trials() -> Vec<Trial> {
    vec![Trial::test("hygiene::operator_logs_hold_no_secrets", || {
        check().map_err(|e| format!("{e:#}").into())
    })]
}

fn check() -> anyhow::Result<()> {
    let mut logs = vec![shared().operator_log.clone()];
    for entry in walk(&shared().work_dir) {
        if entry.extension().is_some_and(|e| e == "log") && entry.to_string_lossy().contains("operator") {
            logs.push(entry);
        }
    }
    ensure!(!logs.is_empty(), "no operator log found");
    let salt = MARKER_HASH.split('$').nth(4).unwrap_or(MARKER_HASH);
    for log in &logs {
        let text = std::fs::read_to_string(log)?;
        ensure!(
            !text.is_empty() || log != &shared().operator_log,
            "the operator log {} is empty",
            log.display()
        );
        for (what, needle) in [
            ("a password hash", "$argon2"),
            ("a password hash's salt", salt),
            ("a TOTP secret", MARKER_TOTP),
            ("Secret data", "passwordHash\":"),
        ] {
            ensure!(!text.contains(needle), "{} contains {what}", log.display());
        }
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
    }
    out
}
