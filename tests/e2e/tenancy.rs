//! Namespaces as tenants: an invite or reset reaches only a User of its own namespace (a
//! reference has no namespace to name), and a link for one person acts on that person only,
//! even when another namespace has a User of the same name. (OidcClients that name other
//! namespaces are refused unless trusted: `oidc_clients::`.)

use anyhow::ensure;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use serde_json::json;

use crate::harness::{Ns, condition, is_reconciled, trial, wait_for};
use crate::invites::{invite, messages_to, phase_of};
use crate::lifecycle::{email, phase, user_manifest};
use crate::portal::{PASSWORD, linked_user, login, post};

/// The other sam's password.
const OTHER_PASSWORD: &str = "Harbor-Violet-Engine-5182";

pub fn trials() -> Vec<Trial> {
    vec![trial("tenancy::a_link_or_reset_reaches_only_its_own_namespaces_user", |ns| async move {
        let other = Ns::create(ns.client.clone(), "tenancy-other").await?;
        let outcome = scenario(&ns, &other).await;
        other.delete().await;
        outcome
    })]
}

async fn scenario(ns: &Ns, other: &Ns) -> anyhow::Result<()> {
    // The same object name in two namespaces (usernames are unique directory-wide, so
    // each has its own), each with a link of its own.
    let spec = |username: &str| json!({"mfa": {"required": false}, "username": username});
    let theirs = linked_user(other, "sam", spec("sam.other")).await?;
    let ours = linked_user(ns, "sam", spec("sam.ours")).await?;
    let credentials = roster::controller::names::credentials_secret_name("sam");
    let before = other.api::<Secret>().get_opt(&credentials).await?.and_then(|s| s.metadata.resource_version);
    let (status, body) =
        post(&format!("/api/v1/invites/{ours}/accept"), json!({"password": PASSWORD})).await?;
    ensure!(status == 200, "accepting our link: {status} {body}");
    wait_for(&ns.raw::<User>(), "sam", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    // The other namespace's sam is untouched, as the API server has it: its credentials
    // Secret unchanged, still invited.
    let after = other.api::<Secret>().get_opt(&credentials).await?.and_then(|s| s.metadata.resource_version);
    ensure!(before == after, "accepting our link wrote the other sam's credentials");
    let them = other.raw::<User>().get("sam").await?;
    ensure!(phase(&them) == "PENDING", "the other sam moved: {}", them.data["status"]);
    // Their link, used now, acts on their sam alone: each signs in with their own password only.
    let (status, body) =
        post(&format!("/api/v1/invites/{theirs}/accept"), json!({"password": OTHER_PASSWORD})).await?;
    ensure!(status == 200, "accepting their link: {status} {body}");
    wait_for(&other.raw::<User>(), "sam", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    for (who, password, expected) in [
        (email("sam", ns), PASSWORD, 200),
        (email("sam", ns), OTHER_PASSWORD, 401),
        (email("sam", other), OTHER_PASSWORD, 200),
        (email("sam", other), PASSWORD, 401),
    ] {
        let (status, _) = login(json!({"email": who, "password": password})).await?;
        ensure!(
            status == expected,
            "{who} with the {} password: {status}",
            if password == PASSWORD { "first" } else { "second" }
        );
    }

    // A reference names no namespace: one that tries is refused at admission, by field —
    // also for a client that does not ask for strict field validation (a plain POST), which
    // would otherwise have the namespace dropped and the object aimed at a same-named User here.
    for kind in ["UserInvite", "MfaReset", "PasswordReset"] {
        let mut reaching = json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": kind, "metadata": {"name": "reaching"},
            "spec": {"userRef": {"name": "sam", "namespace": other.name}, "delivery": "Email"},
        });
        if kind != "UserInvite" {
            reaching["spec"]["reason"] = json!("lost phone");
        }
        let strict = ns.apply(reaching.clone()).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
        let plain = match ns
            .kind_api(kind)
            .create(&PostParams::default(), &serde_json::from_value(reaching)?)
            .await
        {
            Ok(_) => String::from("accepted"),
            Err(e) => e.to_string(),
        };
        for refused in [strict, plain] {
            ensure!(
                refused.contains("spec.userRef.namespace") && refused.contains("reaches only this namespace"),
                "a {kind} naming a namespace was not refused by field: {refused}"
            );
        }
    }

    // A User that exists only elsewhere is not found from here, for an invite and either
    // reset: no link is made, no email goes out.
    let lee =
        json!({"email": email("lee", other), "username": "lee.tenancy", "invite": {"policy": "Manual"}});
    other.apply(user_manifest("lee", lee, json!({}))).await?;
    wait_for(&other.raw::<User>(), "lee", "reconciled", is_reconciled).await?;
    let lee_credentials = other.api::<Secret>().get("lee-credentials").await?;
    ns.apply(invite("lee-invite", json!({"userRef": {"name": "lee"}, "delivery": "Email"}))).await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "lee-reset"},
        "spec": {"userRef": {"name": "lee"}, "reason": "lost phone", "delivery": "Email"},
    }))
    .await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "PasswordReset", "metadata": {"name": "lee-password"},
        "spec": {"userRef": {"name": "lee"}, "reason": "forgot password", "delivery": "Link"},
    }))
    .await?;
    let reason = |o: &kube::core::DynamicObject| condition(o, "Ready")["reason"] == "UserNotFound";
    wait_for(&ns.raw::<UserInvite>(), "lee-invite", "UserNotFound", reason).await?;
    wait_for(&ns.raw::<roster::api::MfaReset>(), "lee-reset", "UserNotFound", reason).await?;
    wait_for(&ns.raw::<roster::api::PasswordReset>(), "lee-password", "UserNotFound", reason).await?;
    let links = ns.api::<Secret>().list(&kube::api::ListParams::default()).await?;
    let made: Vec<String> =
        links.iter().map(kube::ResourceExt::name_any).filter(|n| n.starts_with("lee-")).collect();
    ensure!(made.is_empty(), "Secrets made for another namespace's User: {made:?}");
    let after = other.api::<Secret>().get("lee-credentials").await?;
    ensure!(
        after.metadata.resource_version == lee_credentials.metadata.resource_version,
        "the other namespace's lee had their credentials written"
    );
    let stuck = ns.api::<UserInvite>().get("lee-invite").await?;
    ensure!(phase_of(&stuck) != "Sent", "an invite reached another namespace's User");
    ensure!(messages_to(&email("lee", other)).await?.is_empty(), "lee got an email from another namespace");
    Ok(())
}
