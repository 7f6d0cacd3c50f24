//! OidcClients as the operator registers them: a confidential client's secret is generated
//! once into a Secret the client owns and removed when no longer used; an admin's Secret is
//! used when named and checked; a look-alike Secret is never taken over; every refusal is a
//! condition with a reason.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use roster::api::OidcClient;
use serde_json::{Value, json};

use crate::harness::{ISSUER, condition, poll_until, trial, wait_for};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("oidc_clients::a_confidential_client_gets_a_secret_of_its_own_once", |ns| async move {
            let client = ns
                .apply(manifest("argocd", json!({"redirectUris": ["https://argocd.example.com/cb"]})))
                .await?;
            let registered = wait_for(&ns.raw::<OidcClient>(), "argocd", "Ready", |c| {
                condition(c, "Ready")["status"] == "True"
            })
            .await?;
            let status = &registered.data["status"];
            let id = format!("{}.argocd", ns.name);
            ensure!(
                status["clientID"] == id.as_str()
                    && status["issuer"] == ISSUER
                    && status["secretRef"]["name"] == "argocd-oidc"
                    && condition(&registered, "Ready")["reason"] == "Registered",
                "{status}"
            );
            let secrets = ns.api::<Secret>();
            let secret = secrets.get("argocd-oidc").await?;
            let owner = secret.owner_references().first().context("no ownerReference")?;
            ensure!(
                owner.controller == Some(true) && Some(&owner.uid) == client.metadata.uid.as_ref(),
                "not owned by the client: {:?}",
                secret.owner_references()
            );
            ensure!(secret.type_.as_deref() == Some("roster.dev/oidc-client"), "{:?}", secret.type_);
            ensure!(
                secret.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some("roster")
                    && secret.labels().get("roster.dev/oidc-client").map(String::as_str) == Some("argocd"),
                "{:?}",
                secret.labels()
            );
            let value = |secret: &Secret, key: &str| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            };
            ensure!(value(&secret, "clientID").as_deref() == Some(id.as_str()), "clientID");
            let client_secret = value(&secret, "clientSecret").unwrap_or_default();
            ensure!(client_secret.len() == 43, "a client secret of {} characters", client_secret.len());
            ensure!(!status.to_string().contains(&client_secret), "the secret is in the status");

            // A new generation is registered again; the secret stays as it was.
            let uris = json!(["https://argocd.example.com/cb", "https://argocd.example.com/cb2"]);
            ns.apply(manifest("argocd", json!({"redirectUris": uris}))).await?;
            wait_for(&ns.raw::<OidcClient>(), "argocd", "generation 2 registered", |c| {
                c.data["status"]["observedGeneration"] == 2 && condition(c, "Ready")["status"] == "True"
            })
            .await?;
            let again = secrets.get("argocd-oidc").await?;
            ensure!(again.resource_version() == secret.resource_version(), "the Secret was rewritten");

            // Turned public: the secret it no longer uses is deleted.
            let public = json!({"redirectUris": uris, "public": true});
            ns.apply(manifest("argocd", public)).await?;
            wait_for(&ns.raw::<OidcClient>(), "argocd", "public and Ready", |c| {
                c.data["status"]["observedGeneration"] == 3
                    && condition(c, "Ready")["status"] == "True"
                    && c.data["status"]["secretRef"].is_null()
            })
            .await?;
            poll_until("the unused Secret deleted", || async {
                Ok(secrets.get_opt("argocd-oidc").await?.is_none())
            })
            .await
        }),
        trial("oidc_clients::named_missing_weak_and_look_alike_secrets", |ns| async move {
            let secrets = ns.api::<Secret>();
            let brought = BROUGHT_SECRET;
            for (name, value) in [
                ("look-alike-oidc", "someone-elses-secret-value-0123456789"),
                ("weak", "weak-7"),
                ("good", brought),
            ] {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": name}, "stringData": {"clientSecret": value},
                }))?;
                secrets.create(&PostParams::default(), &secret).await?;
            }
            let uris = json!(["https://app.example.com/cb"]);
            let elsewhere =
                json!({"redirectUris": uris, "userNamespaces": [ns.name.clone(), "someone-else"]});
            let cases = [
                ("look-alike", json!({"redirectUris": uris}), "SecretNotOwned"),
                ("reaching-out", elsewhere, "UserNamespacesNotAllowed"),
                ("weak-app", json!({"redirectUris": uris, "secretRef": {"name": "weak"}}), "SecretInvalid"),
                ("absent", json!({"redirectUris": uris, "secretRef": {"name": "nowhere"}}), "SecretNotFound"),
            ];
            for (name, spec, reason) in cases {
                ns.apply(manifest(name, spec)).await?;
                let refused = wait_for(&ns.raw::<OidcClient>(), name, reason, move |c| {
                    condition(c, "Ready")["reason"] == reason
                })
                .await?;
                let ready = condition(&refused, "Ready");
                ensure!(
                    ready["status"] == "False" && condition(&refused, "Stalled")["status"] == "True",
                    "{name}: {}",
                    refused.data["status"]
                );
                let status = refused.data["status"].to_string();
                ensure!(
                    !status.contains("someone-elses-secret") && !status.contains(BROUGHT_SECRET),
                    "a secret in the status"
                );
            }
            let look_alike = secrets.get("look-alike-oidc").await?;
            ensure!(look_alike.owner_references().is_empty(), "the look-alike Secret was taken over");
            let kept = look_alike.data.as_ref().and_then(|d| d.get("clientSecret")).map(|v| v.0.clone());
            ensure!(
                kept.as_deref() == Some(b"someone-elses-secret-value-0123456789".as_slice()),
                "overwritten"
            );

            // An admin's own Secret, named: used as it is; nothing generated.
            ns.apply(manifest("brought", json!({"redirectUris": uris, "secretRef": {"name": "good"}})))
                .await?;
            let registered = wait_for(&ns.raw::<OidcClient>(), "brought", "Ready", |c| {
                condition(c, "Ready")["status"] == "True"
            })
            .await?;
            ensure!(
                registered.data["status"]["secretRef"]["name"] == "good",
                "{}",
                registered.data["status"]
            );
            ensure!(
                secrets.get_opt("brought-oidc").await?.is_none(),
                "a secret was generated beside the named one"
            );

            // The weak one fixed and the client touched: registered.
            let fixed = json!({"stringData": {"clientSecret": BROUGHT_SECRET}});
            secrets.patch("weak", &PatchParams::default(), &Patch::Merge(&fixed)).await?;
            let touch = json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
            ns.api::<OidcClient>().patch("weak-app", &PatchParams::default(), &Patch::Merge(&touch)).await?;
            wait_for(&ns.raw::<OidcClient>(), "weak-app", "Ready once fixed", |c| {
                condition(c, "Ready")["status"] == "True"
            })
            .await?;
            Ok(())
        }),
    ]
}

/// The client secret of an admin's own Secret; the log check looks for it.
pub const BROUGHT_SECRET: &str = "brought-client-secret-marker-0123456789abcdef";

fn manifest(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": name}, "spec": spec})
}
