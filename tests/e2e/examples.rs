//! Every file in `examples/` and `examples/oidc/` is what it claims: each document parses
//! into its type (roster's, or a ConfigMap of a relying party's), the API server accepts it
//! under strict field validation (in the test's namespace), and the operator picks up each
//! of roster's objects.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use libtest_mimic::Trial;
use roster::api::{MfaReset, OidcClient, PasswordReset, User, UserInvite};
use serde::Deserialize;

use crate::harness::{is_reconciled, repo_path, trial, wait_for};

pub fn trials() -> Vec<Trial> {
    vec![trial("examples::apply_and_are_acknowledged", |ns| async move {
        let mut documents = documents()?;
        ensure!(!documents.is_empty(), "examples/ holds no manifests");
        let mut kinds = Vec::new();
        for (file, document) in &mut documents {
            // Into the test's namespace, wherever the example puts it.
            if let Some(metadata) = document["metadata"].as_object_mut() {
                metadata.remove("namespace");
            }
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
                Some("MfaReset") => ns.raw::<MfaReset>(),
                _ => continue,
            };
            wait_for(&api, name, "reconciled", is_reconciled).await?;
        }
        Ok(())
    })]
}

/// Every YAML document of the Kubernetes manifests under `examples/` and `examples/oidc/`
/// (the Argo CD health customisation under `examples/argocd/` has tests of its own; the
/// AuthenticationConfiguration and kubeconfig are not manifests), with its file.
fn documents() -> anyhow::Result<Vec<(PathBuf, serde_json::Value)>> {
    let mut files = Vec::new();
    for dir in ["examples", "examples/oidc"] {
        files.extend(
            std::fs::read_dir(repo_path(dir))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .filter(|p| !p.ends_with("authentication-config.yaml") && !p.ends_with("kubeconfig.yaml")),
        );
    }
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
        "ConfigMap" => drop(k8s_openapi::api::core::v1::ConfigMap::deserialize(document)?),
        other => bail!("unexpected kind {other:?}"),
    }
    Ok(())
}
