//! Every file in `examples/` is what it claims: each document parses into roster's types,
//! the API server accepts it under strict field validation, and the operator picks it up.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use libtest_mimic::Trial;
use roster::api::{MfaReset, OidcClient, PasswordReset, User, UserInvite};
use serde::Deserialize;

use crate::harness::{is_reconciled, repo_path, trial, wait_for};

pub fn trials() -> Vec<Trial> {
    vec![trial("examples::apply_and_are_acknowledged", |ns| async move {
        let documents = documents()?;
        ensure!(!documents.is_empty(), "examples/ holds no manifests");
        let mut kinds = Vec::new();
        for (file, document) in &documents {
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            parse_typed(&kind, document)
                .with_context(|| format!("{} does not parse as {kind}", file.display()))?;
            ns.apply(document.clone()).await.with_context(|| format!("applying {}", file.display()))?;
            kinds.push(kind);
        }
        for kind in ["User", "UserInvite", "MfaReset", "PasswordReset", "OidcClient"] {
            ensure!(kinds.iter().any(|k| k == kind), "examples/ has no {kind}");
        }
        for (_, document) in &documents {
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            let api = match document["kind"].as_str() {
                Some("User") => ns.raw::<User>(),
                Some("UserInvite") => ns.raw::<UserInvite>(),
                Some("PasswordReset") => ns.raw::<PasswordReset>(),
                Some("OidcClient") => ns.raw::<OidcClient>(),
                _ => ns.raw::<MfaReset>(),
            };
            wait_for(&api, name, "reconciled", is_reconciled).await?;
        }
        Ok(())
    })]
}

/// Every YAML document under `examples/` (not its subdirectories), with its file.
fn documents() -> anyhow::Result<Vec<(PathBuf, serde_json::Value)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("examples"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("parsing {}", file.display()))?;
            out.push((file.clone(), value));
        }
    }
    Ok(out)
}

fn parse_typed(kind: &str, document: &serde_json::Value) -> anyhow::Result<()> {
    match kind {
        "User" => drop(User::deserialize(document)?),
        "UserInvite" => drop(UserInvite::deserialize(document)?),
        "MfaReset" => drop(MfaReset::deserialize(document)?),
        "PasswordReset" => drop(PasswordReset::deserialize(document)?),
        "OidcClient" => drop(OidcClient::deserialize(document)?),
        other => bail!("unexpected kind {other:?}"),
    }
    Ok(())
}
