//! Namespaces as tenants: an invite or reset reaches only a User of its own namespace (a
//! reference has no namespace to name), and a link for one person acts on that person only,
//! even when another namespace has a User of the same name. (OidcClients that name other
//! namespaces are refused unless trusted: `oidc_clients::`.)

use anyhow::ensure;
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use serde_json::json;

use crate::harness::{Ns, condition, trial, wait_for};
use crate::invites::{invite, messages_to, phase_of};
use crate::lifecycle::{email, phase, user_manifest};
use crate::portal::{PASSWORD, expect_link, linked_user, login, post};

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
    let (status, body) =
        post(&format!("/api/v1/invites/{ours}/accept"), json!({"password": PASSWORD})).await?;
    ensure!(status == 200, "accepting our link: {status} {body}");
    wait_for(&ns.raw::<User>(), "sam", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    // The other namespace's sam is untouched: still invited, its link still open, no password.
    let them = other.raw::<User>().get("sam").await?;
    ensure!(phase(&them) == "PENDING", "the other sam moved: {}", them.data["status"]);
    expect_link(&theirs, 200, "").await?;
    let (status, _) = login(json!({"email": email("sam", other), "password": PASSWORD})).await?;
    ensure!(status == 401, "the other namespace's sam signs in with our sam's password: {status}");
    let (status, _) = login(json!({"email": email("sam", ns), "password": PASSWORD})).await?;
    ensure!(status == 200, "our sam cannot sign in: {status}");

    // A reference names no namespace: one that tries is refused at admission, by field.
    let reaching = invite("reaching", json!({"userRef": {"name": "lee", "namespace": other.name}}));
    let refused = ns.apply(reaching).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(
        refused.contains("spec.userRef.namespace"),
        "an invite naming a namespace was not refused by field: {refused}"
    );

    // A User that exists only elsewhere is not found from here, for an invite and a reset.
    other
        .apply(user_manifest(
            "lee",
            json!({"email": email("lee", other), "invite": {"policy": "Manual"}}),
            json!({}),
        ))
        .await?;
    ns.apply(invite("lee-invite", json!({"userRef": {"name": "lee"}, "delivery": "Email"}))).await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "lee-reset"},
        "spec": {"userRef": {"name": "lee"}, "reason": "lost phone", "delivery": "Email"},
    }))
    .await?;
    let reason = |o: &kube::core::DynamicObject| condition(o, "Ready")["reason"] == "UserNotFound";
    wait_for(&ns.raw::<UserInvite>(), "lee-invite", "UserNotFound", reason).await?;
    wait_for(&ns.raw::<roster::api::MfaReset>(), "lee-reset", "UserNotFound", reason).await?;
    let stuck = ns.api::<UserInvite>().get("lee-invite").await?;
    ensure!(phase_of(&stuck) != "Sent", "an invite reached another namespace's User");
    ensure!(messages_to(&email("lee", other)).await?.is_empty(), "lee got an email from another namespace");
    Ok(())
}
