//! A settled directory gets no writes: an enrolled user who signed in, an invited one, a
//! deactivated one and a locked one, each touched with unrelated annotations, cost roster no
//! write — counted by the API server itself (`apiserver_request_total`), on a control plane
//! of its own so that no other test's writes are counted.

use anyhow::{Context as _, ensure};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use serde_json::json;

use crate::harness::{
    Ns, Operator, condition, is_reconciled, own_plane, poll_until, shared, standalone, wait_for,
};
use crate::invites::{invite, phase_of};
use crate::lifecycle::{MARKER_HASH, MARKER_TOTP, email, phase, user_manifest, write_facts};

/// Rounds of unrelated annotations on every user.
const ROUNDS: usize = 3;

pub fn trials() -> Vec<Trial> {
    vec![standalone("settle::a_settled_directory_gets_zero_writes", scenario)]
}

/// Whether a user has reached the state it settles in.
type Settled = fn(&DynamicObject) -> bool;

/// Each user and the state it settles in.
const USERS: [(&str, Settled); 4] = [
    ("enrolled", |u| phase(u) == "ACTIVE" && u.data["status"]["lastLoginAt"].is_string()),
    ("invited", |u| phase(u) == "PENDING" && condition(u, "Invited")["status"] == "True"),
    ("deactivated", |u| phase(u) == "INACTIVE" && condition(u, "Ready")["reason"] == "Deactivated"),
    ("locked", |u| condition(u, "Ready")["reason"] == "LockedOut"),
];

async fn scenario() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("settle");
    let (plane, ns) = own_plane(&dir, &[], "settle").await?;
    let client = ns.client.clone();
    let watch = format!("--watch-namespaces={}", ns.name);
    let operator = Operator::start(plane.kubeconfig(), &dir, "operator", &[&watch]).await?;
    let log = operator.process.log().to_owned();

    // Facts as the portal writes them: times with nanoseconds (status keeps whole seconds).
    let precise = || Timestamp::now().to_string();
    let manual = |name: &str| json!({"email": email(name, &ns), "invite": {"policy": "Manual"}});
    for (name, _) in USERS {
        let mut spec = manual(name);
        if name == "deactivated" {
            spec["state"] = json!("Inactive");
        }
        ns.apply(user_manifest(name, spec, json!({}))).await?;
        wait_for(&ns.raw::<User>(), name, "reconciled", is_reconciled).await?;
    }
    let onboarded = json!({
        "passwordHash": MARKER_HASH, "passwordSetAt": precise(), "totpSecret": MARKER_TOTP,
        "totpEnrolledAt": precise(), "totpLastStep": "1", "onboardingCompletedAt": precise(),
    });
    write_facts(&ns, "enrolled", onboarded.clone()).await?;
    write_facts(&ns, "enrolled", json!({"lastLoginAt": precise(), "failedLogins": "0"})).await?;
    write_facts(&ns, "locked", onboarded).await?;
    write_facts(&ns, "locked", json!({"failedLogins": "5", "lockedAt": precise()})).await?;
    ns.apply(invite("invited-invite", json!({"userRef": {"name": "invited"}, "delivery": "Link"}))).await?;
    wait_for(&ns.api::<UserInvite>(), "invited-invite", "Sent", |i| phase_of(i) == "Sent").await?;
    for (name, settled) in USERS {
        wait_for(&ns.raw::<User>(), name, "settled", settled).await?;
    }

    // One round lets anything still under way land; the rounds after it are counted.
    touch_every_user(&ns, &log, 0).await?;
    let before = writes(&client).await?;
    ensure!(before > 0.0, "no writes counted at all: the API server's metrics were not read");
    for round in 1..=ROUNDS {
        touch_every_user(&ns, &log, round).await?;
    }
    let after = writes(&client).await?;
    let ours = (ROUNDS * USERS.len()) as f64;
    let roster = after - before - ours;
    ensure!(
        roster == 0.0,
        "roster made {roster} writes for {} unrelated annotations on settled users (API server's count)",
        ROUNDS * USERS.len()
    );
    Ok(())
}

/// Annotates every user and waits until the operator has reconciled each after it.
async fn touch_every_user(ns: &Ns, log: &std::path::Path, round: usize) -> anyhow::Result<()> {
    for (name, _) in USERS {
        let seen = reconciles(log, ns, name);
        let patch = json!({"metadata": {"annotations": {"example.com/touched": round.to_string()}}});
        ns.raw::<User>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        poll_until(&format!("{name} reconciled after round {round}"), || async {
            Ok(reconciles(log, ns, name) > seen)
        })
        .await?;
    }
    Ok(())
}

/// Reconciles of the User `name` the operator has logged.
fn reconciles(log: &std::path::Path, ns: &Ns, name: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!("user={}/{name}", ns.name);
    text.lines().filter(|l| l.contains(&needle) && l.contains("reconciled")).count()
}

/// Writes (POST, PUT, PATCH, server-side APPLY, DELETE) the API server has answered on the kinds roster writes:
/// its own three, Secrets and Events.
async fn writes(client: &kube::Client) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(request).await.context("reading the API server's metrics")?;
    let mut total = 0.0;
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            line[start..].split('"').next()
        };
        let write = matches!(label("verb"), Some("POST" | "PUT" | "PATCH" | "APPLY" | "DELETE"));
        let ours =
            matches!(label("resource"), Some("users" | "userinvites" | "mfaresets" | "secrets" | "events"));
        if write && ours {
            total += line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    Ok(total)
}
