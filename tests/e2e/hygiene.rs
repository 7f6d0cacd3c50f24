//! After every other test: the operators' logs hold no password, password hash, TOTP secret
//! or token, though the tests put such values in Secrets they watch, set passwords and
//! enrolled TOTP through the portal, and the operators emailed tokens (read back from
//! Mailpit here).

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
    let tokens = emailed_tokens()?;
    ensure!(!tokens.is_empty(), "no emailed token to look for: the invite tests sent nothing?");
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
            ("the SMTP password", crate::harness::SMTP_PASSWORD),
            ("a password set in the portal", crate::portal::PASSWORD),
            ("a TOTP enrolment URI", "otpauth://"),
            ("a pending TOTP secret", "totpPending\":"),
            ("an OIDC client secret", crate::oidc_clients::BROUGHT_SECRET),
            ("Secret data", "clientSecret\":"),
            ("a signing key", "PRIVATE KEY"),
            ("Secret data", "keys.json\":"),
            ("a grant's code hash", "codeHash\":"),
            ("a grant's refresh token hash", "refreshHash\":"),
        ] {
            ensure!(!text.contains(needle), "{} contains {what}", log.display());
        }
        for issued in crate::oidc::ISSUED.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            ensure!(
                !text.contains(issued.as_str()),
                "{} contains an OpenID Connect code or token",
                log.display()
            );
            ensure!(
                !text.contains(&roster::credentials::hash_token(issued)),
                "{} contains a code or token hash",
                log.display()
            );
        }
        for token in &tokens {
            ensure!(!text.contains(token.as_str()), "{} contains an emailed invitation token", log.display());
            ensure!(
                !text.contains(&roster::credentials::hash_token(token)),
                "{} contains a token hash",
                log.display()
            );
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

/// Every token in an `/invite/`, `/mfa-reset/` or `/password-reset/` link of the messages the shared Mailpit
/// received.
fn emailed_tokens() -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let api = &shared().mailpit_api;
        let list: serde_json::Value =
            reqwest::get(format!("{api}/api/v1/messages?limit=1000")).await?.json().await?;
        let mut tokens = Vec::new();
        for summary in list["messages"].as_array().cloned().unwrap_or_default() {
            let id = summary["ID"].as_str().unwrap_or_default();
            let message: serde_json::Value =
                reqwest::get(format!("{api}/api/v1/message/{id}")).await?.json().await?;
            let text = message["Text"].as_str().unwrap_or_default();
            tokens.extend(crate::invites::token_after(text, "/invite/"));
            tokens.extend(crate::invites::token_after(text, "/mfa-reset/"));
            tokens.extend(crate::invites::token_after(text, "/password-reset/"));
            tokens.extend(crate::invites::token_after(text, "/verify-email/"));
        }
        Ok(tokens)
    })
}
