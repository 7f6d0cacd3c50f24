//! The user lifecycle against the real control plane: the credentials Secret and its
//! garbage collection, automatic and manual invites, phases from the facts in the Secret,
//! deactivation, lockout and reactivation (zero writes once settled: `settle.rs`).
//!
//! Facts the portal will write (password hash, TOTP secret, failed sign-ins) are written
//! into the Secret directly here, with marker values the log-hygiene check looks for.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::wait::{await_condition, conditions};
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use serde_json::{Value, json};

use crate::harness::{
    ALLOWED_DOMAIN, DEADLINE, Ns, Operator, condition, is_reconciled, shared, trial, wait_for,
};
use crate::invites::phase_of;

/// A PHC string as the portal will store it; its salt and hash are markers for the log check.
pub const MARKER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bWFya2Vyc2FsdA$bWFya2VyaGFzaHZhbHVlMTIzNDU2Nzg5";
/// A base32 TOTP secret, also a marker for the log check.
pub const MARKER_TOTP: &str = "MARKERTOTPSECRETAAAAAAAAAAAAAAAA";

pub fn trials() -> Vec<Trial> {
    vec![
        trial("lifecycle::credentials_secret_is_owned_labelled_kept_and_collected", |ns| async move {
            ns.apply(user_manifest(
                "cs-user",
                json!({"email": email("cs-user", &ns), "invite": {"policy": "Manual"}}),
                json!({
                    "labels": {"app.kubernetes.io/instance": "argocd-app", "team": "a"},
                    "annotations": {"argocd.argoproj.io/tracking-id": "x"}
                }),
            ))
            .await?;
            let user = wait_for(&ns.raw::<User>(), "cs-user", "reconciled", is_reconciled).await?;
            let uid = user.metadata.uid.clone().context("no uid")?;
            let secrets = ns.api::<Secret>();
            let secret =
                secrets.get("cs-user-credentials").await.context("the credentials Secret was not created")?;
            let labels = secret.metadata.labels.clone().unwrap_or_default();
            ensure!(
                labels.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("roster"),
                "labels: {labels:?}"
            );
            ensure!(
                !labels.contains_key("app.kubernetes.io/instance") && !labels.contains_key("team"),
                "copied the owner's labels: {labels:?}"
            );
            ensure!(
                secret.metadata.annotations.unwrap_or_default().is_empty(),
                "copied the owner's annotations"
            );
            let owner = secret.metadata.owner_references.unwrap_or_default();
            ensure!(
                owner.len() == 1
                    && owner[0].uid == uid
                    && owner[0].controller == Some(true)
                    && owner[0].kind == "User",
                "owner references: {owner:?}"
            );
            ensure!(
                user.data["status"]["credentialsSecretRef"]["name"] == "cs-user-credentials",
                "status: {}",
                user.data["status"]
            );

            // Facts written by someone else survive later reconciles.
            write_facts(
                &ns,
                "cs-user",
                json!({"passwordSetAt": "2026-01-01T00:00:00Z", "passwordHash": MARKER_HASH}),
            )
            .await?;
            wait_for(&ns.raw::<User>(), "cs-user", "PasswordSet", |u| {
                condition(u, "PasswordSet")["status"] == "True"
            })
            .await?;
            touch(&ns, "cs-user").await?;
            wait_for(&ns.raw::<User>(), "cs-user", "reconciled after a touch", is_reconciled).await?;
            let data = secrets.get("cs-user-credentials").await?.data.unwrap_or_default();
            ensure!(
                data.get("passwordHash").map(|v| v.0.as_slice()) == Some(MARKER_HASH.as_bytes()),
                "the reconciler overwrote the Secret"
            );

            // The garbage collector removes it with its owner.
            let secret_uid = secrets.get("cs-user-credentials").await?.metadata.uid.unwrap_or_default();
            ns.raw::<User>().delete("cs-user", &DeleteParams::background()).await?;
            tokio::time::timeout(
                DEADLINE,
                await_condition(secrets, "cs-user-credentials", conditions::is_deleted(&secret_uid)),
            )
            .await
            .context("the credentials Secret outlived its User")??;
            Ok(())
        }),
        trial(
            "lifecycle::auto_policy_creates_and_sends_exactly_one_invite_even_with_two_operators",
            |ns| async move {
                // A second operator for this namespace races the shared one, as a restart would.
                let dir = shared().work_dir.join(&ns.name);
                std::fs::create_dir_all(&dir)?;
                let watch = format!("--watch-namespaces={}", ns.name);
                let _second =
                    Operator::start(&shared().kubeconfig, &dir, "second-operator", &[&watch]).await?;
                for name in ["auto-a", "auto-b", "auto-c"] {
                    ns.apply(user_manifest(name, json!({"email": email(name, &ns)}), json!({}))).await?;
                }
                let invites = ns.api::<UserInvite>();
                for name in ["auto-a", "auto-b", "auto-c"] {
                    let invite_name = format!("{name}-invite");
                    wait_for(&invites, &invite_name, "created", |_| true).await?;
                    let user = ns.api::<User>().get(name).await?;
                    let invite = invites.get(&invite_name).await?;
                    let owners = invite.metadata.owner_references.unwrap_or_default();
                    ensure!(
                        owners.len() == 1 && Some(&owners[0].uid) == user.metadata.uid.as_ref(),
                        "owners: {owners:?}"
                    );
                    ensure!(invite.spec.user_ref.name == name, "userRef: {:?}", invite.spec.user_ref);
                }
                for name in ["auto-a", "auto-b", "auto-c"] {
                    let sent = |i: &UserInvite| {
                        i.status
                            .as_ref()
                            .and_then(|s| s.phase)
                            .is_some_and(|p| p == roster::api::InvitePhase::Sent)
                    };
                    wait_for(&invites, &format!("{name}-invite"), "Sent", sent).await?;
                    let received = crate::invites::messages_to(&email(name, &ns)).await?.len();
                    ensure!(received == 1, "{name} received {received} invitations from two operators");
                }
                let all = invites.list(&ListParams::default()).await?;
                ensure!(
                    all.items.len() == 3,
                    "expected exactly 3 invites, found {:?}",
                    all.items.iter().map(|i| i.metadata.name.clone()).collect::<Vec<_>>()
                );
                Ok(())
            },
        ),
        trial("lifecycle::manual_policy_creates_no_invite", |ns| async move {
            ns.apply(user_manifest(
                "manual",
                json!({"email": email("manual", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            let user = wait_for(&ns.raw::<User>(), "manual", "reconciled", is_reconciled).await?;
            ensure!(user.data["status"]["phase"] == "NEW", "status: {}", user.data["status"]);
            let ready = condition(&user, "Ready");
            ensure!(ready["status"] == "True" && ready["reason"] == "AwaitingInvite", "Ready: {ready}");
            let invites = ns.api::<UserInvite>().list(&ListParams::default()).await?;
            ensure!(invites.items.is_empty(), "a Manual user got an invite");
            Ok(())
        }),
        trial("lifecycle::facts_in_the_secret_drive_the_phase", |ns| async move {
            let users = ns.raw::<User>();
            ns.apply(user_manifest(
                "facts",
                json!({"email": email("facts", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            wait_for(&users, "facts", "NEW", |u| phase(u) == "NEW").await?;

            write_facts(
                &ns,
                "facts",
                json!({"passwordHash": MARKER_HASH, "passwordSetAt": "2026-01-01T00:00:00Z"}),
            )
            .await?;
            let pending = wait_for(&users, "facts", "PENDING", |u| phase(u) == "PENDING").await?;
            ensure!(
                pending.data["status"]["requiredActions"] == json!(["CONFIGURE_TOTP"]),
                "{}",
                pending.data["status"]
            );

            write_facts(
                &ns,
                "facts",
                json!({"totpSecret": MARKER_TOTP, "totpEnrolledAt": "2026-01-01T00:01:00Z"}),
            )
            .await?;
            let active = wait_for(&users, "facts", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
            let status = &active.data["status"];
            ensure!(status.get("requiredActions").is_none(), "requiredActions left: {status}");
            ensure!(
                status["mfa"]["method"] == "TOTP" && status["mfa"]["enrolledAt"] == "2026-01-01T00:01:00Z",
                "{status}"
            );
            ensure!(status["activatedAt"].is_string(), "no activatedAt: {status}");
            ensure!(
                condition(&active, "MfaEnrolled")["status"] == "True"
                    && condition(&active, "Ready")["reason"] == "Active",
                "{status}"
            );
            ensure!(
                !status.to_string().contains(MARKER_HASH) && !status.to_string().contains(MARKER_TOTP),
                "a secret reached status"
            );

            // Without mfa.required, the password alone makes a user ACTIVE.
            ns.apply(user_manifest("nomfa", json!({"email": email("nomfa", &ns), "mfa": {"required": false}, "invite": {"policy": "Manual"}}), json!({}))).await?;
            wait_for(&users, "nomfa", "NEW", |u| phase(u) == "NEW").await?;
            write_facts(&ns, "nomfa", json!({"passwordHash": MARKER_HASH})).await?;
            let active = wait_for(&users, "nomfa", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
            ensure!(
                condition(&active, "MfaEnrolled")["reason"] == "NotRequired",
                "{}",
                active.data["status"]
            );
            Ok(())
        }),
        trial("lifecycle::deactivation_revokes_and_reactivation_restores", |ns| async move {
            let users = ns.raw::<User>();
            let invites = ns.api::<UserInvite>();
            ns.apply(user_manifest("deact", json!({"email": email("deact", &ns)}), json!({}))).await?;
            wait_for(&invites, "deact-invite", "Pending", |i| {
                i.status.as_ref().and_then(|s| s.phase).is_some()
            })
            .await?;

            set_state(&ns, "deact", "Inactive").await?;
            let inactive = wait_for(&users, "deact", "INACTIVE", |u| phase(u) == "INACTIVE").await?;
            ensure!(inactive.data["status"]["deactivatedAt"].is_string(), "{}", inactive.data["status"]);
            ensure!(condition(&inactive, "Ready")["reason"] == "Deactivated", "{}", inactive.data["status"]);
            wait_for(&invites, "deact-invite", "Revoked", |i| phase_of(i) == "Revoked").await?;

            set_state(&ns, "deact", "Active").await?;
            // NEW, then PENDING as soon as the resent invite is delivered: either may be seen.
            wait_for(&users, "deact", "active again", |u| matches!(phase(u), "NEW" | "PENDING")).await?;
            let invite = wait_for(&invites, "deact-invite", "issued anew", |i| {
                i.status.as_ref().and_then(|s| s.observed_resend) == Some(1)
                    && matches!(phase_of(i).as_str(), "Pending" | "Sent")
            })
            .await?;
            ensure!(
                invite.spec.resend == 1,
                "the revoked automatic invite was not resent: resend={}",
                invite.spec.resend
            );

            let events = events_for(&ns, "deact").await?;
            ensure!(events.iter().any(|r| r == "Deactivated"), "no Deactivated event: {events:?}");
            Ok(())
        }),
        trial("lifecycle::lockout_and_reactivation", |ns| async move {
            let users = ns.raw::<User>();
            ns.apply(user_manifest(
                "locked",
                json!({"email": email("locked", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            wait_for(&users, "locked", "NEW", |u| phase(u) == "NEW").await?;
            write_facts(&ns, "locked", json!({"passwordHash": MARKER_HASH, "totpSecret": MARKER_TOTP}))
                .await?;
            wait_for(&users, "locked", "ACTIVE", |u| phase(u) == "ACTIVE").await?;

            write_facts(&ns, "locked", json!({"failedLogins": "5"})).await?;
            let locked = wait_for(&users, "locked", "locked out", |u| phase(u) == "INACTIVE").await?;
            ensure!(condition(&locked, "LockedOut")["status"] == "True", "{}", locked.data["status"]);
            ensure!(condition(&locked, "Stalled")["reason"] == "LockedOut", "{}", locked.data["status"]);
            ensure!(locked.data["status"]["failedLoginAttempts"] == 5, "{}", locked.data["status"]);

            // The documented unlock: Inactive (roster clears the count), then Active.
            set_state(&ns, "locked", "Inactive").await?;
            let secrets = ns.api::<Secret>();
            crate::harness::poll_until("the failed-login count cleared", || async {
                let data = secrets.get("locked-credentials").await?.data.unwrap_or_default();
                Ok(data.get("failedLogins").map(|v| v.0.as_slice()) == Some(b"0".as_slice()))
            })
            .await?;
            set_state(&ns, "locked", "Active").await?;
            let back = wait_for(&users, "locked", "ACTIVE again", |u| phase(u) == "ACTIVE").await?;
            ensure!(condition(&back, "LockedOut")["status"] == "False", "{}", back.data["status"]);
            let events = events_for(&ns, "locked").await?;
            ensure!(events.iter().any(|r| r == "LockedOut"), "no LockedOut event: {events:?}");
            ensure!(events.iter().any(|r| r == "Activated"), "no Activated event: {events:?}");
            Ok(())
        }),
    ]
}

/// A User manifest with `spec` and extra `metadata`.
pub fn user_manifest(name: &str, spec: Value, metadata: Value) -> Value {
    let mut meta = json!({"name": name});
    if let (Some(meta), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        meta.extend(extra.clone());
    }
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "User", "metadata": meta, "spec": spec})
}

/// An email unique to this test, in the allowed domain: users of all tests share one
/// directory, where emails must be unique.
pub fn email(local: &str, ns: &Ns) -> String {
    format!("{local}@{}.{ALLOWED_DOMAIN}", ns.name)
}

pub fn phase(user: &DynamicObject) -> &str {
    user.data["status"]["phase"].as_str().unwrap_or_default()
}

/// Writes `facts` (string values) into a user's credentials Secret, as the portal will.
pub async fn write_facts(ns: &Ns, user: &str, facts: Value) -> anyhow::Result<()> {
    let patch = json!({"stringData": facts});
    ns.api::<Secret>()
        .patch(&format!("{user}-credentials"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("writing facts into {user}-credentials"))?;
    Ok(())
}

/// A person who onboarded and proved their address, as the portal leaves them: the hash of
/// `PASSWORD` and, given a base32 `totp` secret, an enrolled authenticator, written into the
/// credentials Secret of a User with `spec` (no invitation is sent). Returns the address.
pub async fn enrolled(ns: &Ns, name: &str, spec: Value, totp: Option<&str>) -> anyhow::Result<String> {
    let address = email(name, ns);
    let mut full = json!({"email": address, "invite": {"policy": "Manual"}});
    if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(spec.clone());
    }
    ns.apply(user_manifest(name, full, json!({}))).await?;
    wait_for(&ns.raw::<User>(), name, "its credentials Secret", |u| {
        u.data["status"]["credentialsSecretRef"].is_object()
    })
    .await?;
    let settings =
        roster::credentials::Argon2Settings { memory_kib: 1024, iterations: 1, ..Default::default() };
    let hash = roster::credentials::PasswordHasher::new(settings, 1)?.hash(crate::portal::PASSWORD).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut facts = json!({
        "passwordHash": hash, "onboardingCompletedAt": now, "emailVerifiedFor": address, "emailVerifiedAt": now,
    });
    if let (Some(facts), Some(secret)) = (facts.as_object_mut(), totp) {
        facts.insert("totpSecret".into(), secret.into());
        facts.insert("totpEnrolledAt".into(), now.clone().into());
    }
    write_facts(ns, name, facts).await?;
    wait_for(&ns.raw::<User>(), name, "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    Ok(address)
}

pub async fn set_state(ns: &Ns, user: &str, state: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"state": state}});
    ns.raw::<User>().patch(user, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn touch(ns: &Ns, user: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"displayName": "touched"}});
    ns.raw::<User>().patch(user, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Reasons of the Events about User `name`.
async fn events_for(ns: &Ns, name: &str) -> anyhow::Result<Vec<String>> {
    let events = ns.api::<k8s_openapi::api::events::v1::Event>().list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}
