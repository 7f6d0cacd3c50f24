//! Directory rules against the real control plane: duplicates and disallowed domains stall
//! the newer User with a reason naming the holder, and clear by themselves when the
//! conflict goes away. creationTimestamp has one-second precision and ties go by name, so
//! each holder's name sorts before its claimant's.

use anyhow::ensure;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use serde_json::json;

use crate::harness::{condition, trial, wait_for};
use crate::lifecycle::{email, user_manifest};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("directory::duplicate_email_stalls_the_newer_user_until_the_holder_goes", |ns| async move {
            let users = ns.raw::<User>();
            let shared_email = email("dup", &ns);
            ns.apply(user_manifest("dup-a-holder", json!({"email": shared_email}), json!({}))).await?;
            wait_for(&users, "dup-a-holder", "reconciled", crate::harness::is_reconciled).await?;
            ns.apply(user_manifest(
                "dup-b-claimant",
                json!({"email": shared_email.to_uppercase()}),
                json!({}),
            ))
            .await?;
            let blocked = wait_for(&users, "dup-b-claimant", "stalled", |u| {
                condition(u, "Stalled")["status"] == "True"
            })
            .await?;
            let ready = condition(&blocked, "Ready");
            ensure!(ready["status"] == "False" && ready["reason"] == "DuplicateEmail", "Ready: {ready}");
            let holder = format!("{}/dup-a-holder", ns.name);
            ensure!(
                ready["message"].as_str().unwrap_or_default().contains(&holder),
                "the message does not name {holder}: {ready}"
            );
            ensure!(
                condition(&users.get("dup-a-holder").await?, "Stalled")["status"] == "False",
                "the older user is blocked too"
            );
            let invites = ns.api::<UserInvite>().list(&ListParams::default()).await?;
            ensure!(
                !invites.items.iter().any(|i| i.spec.user_ref.name == "dup-b-claimant"),
                "a blocked user was invited"
            );

            users.delete("dup-a-holder", &DeleteParams::default()).await?;
            let freed = wait_for(&users, "dup-b-claimant", "unblocked", |u| {
                condition(u, "Stalled")["status"] == "False"
            })
            .await?;
            ensure!(condition(&freed, "Ready")["reason"] != "DuplicateEmail", "{}", freed.data["status"]);
            wait_for(&ns.api::<UserInvite>(), "dup-b-claimant-invite", "created once unblocked", |_| true)
                .await?;
            Ok(())
        }),
        trial("directory::duplicate_username_clears_when_the_holder_renames", |ns| async move {
            let users = ns.raw::<User>();
            let username = format!("u-{}", &ns.name[ns.name.len().saturating_sub(8)..]);
            ns.apply(user_manifest(
                "name-a-holder",
                json!({"email": email("name-a-holder", &ns), "username": username}),
                json!({}),
            ))
            .await?;
            wait_for(&users, "name-a-holder", "reconciled", crate::harness::is_reconciled).await?;
            ns.apply(user_manifest(
                "name-b-claimant",
                json!({"email": email("name-b-claimant", &ns), "username": username.to_uppercase()}),
                json!({}),
            ))
            .await?;
            let blocked = wait_for(&users, "name-b-claimant", "stalled", |u| {
                condition(u, "Stalled")["status"] == "True"
            })
            .await?;
            ensure!(
                condition(&blocked, "Ready")["reason"] == "DuplicateUsername",
                "{}",
                blocked.data["status"]
            );

            let rename = json!({"spec": {"username": format!("{username}-renamed")}});
            users.patch("name-a-holder", &PatchParams::default(), &Patch::Merge(&rename)).await?;
            wait_for(&users, "name-b-claimant", "unblocked", |u| {
                condition(u, "Stalled")["status"] == "False"
            })
            .await?;
            Ok(())
        }),
        trial("directory::email_outside_the_allowed_domains_stalls_until_fixed", |ns| async move {
            let users = ns.raw::<User>();
            ns.apply(user_manifest(
                "outsider",
                json!({"email": format!("outsider@{}.example.net", ns.name)}),
                json!({}),
            ))
            .await?;
            let blocked =
                wait_for(&users, "outsider", "stalled", |u| condition(u, "Stalled")["status"] == "True")
                    .await?;
            let ready = condition(&blocked, "Ready");
            ensure!(ready["reason"] == "EmailDomainNotAllowed", "Ready: {ready}");
            ensure!(ready["message"].as_str().unwrap_or_default().contains("example.net"), "Ready: {ready}");

            let fix = json!({"spec": {"email": email("outsider", &ns)}});
            users.patch("outsider", &PatchParams::default(), &Patch::Merge(&fix)).await?;
            wait_for(&users, "outsider", "unblocked", |u| condition(u, "Stalled")["status"] == "False")
                .await?;
            Ok(())
        }),
    ]
}
