//! Account expiry (`spec.expiresAt`) against the real control plane and issuer: the user
//! turns INACTIVE with reason Expired at the deadline (the reconciler is woken then, not
//! polling), the person's sign-in sessions are deleted and a relying party's refresh token
//! stops working; a later date makes the user ACTIVE again and they can sign in.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use libtest_mimic::Trial;
use openidconnect::OAuth2TokenResponse;
use roster::api::User;
use serde_json::json;

use crate::harness::{Ns, condition, poll_until, trial, wait_for};
use crate::oidc::{SignIn, note, refresh, registered, userinfo};
use crate::portal::{PASSWORD, onboard};

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "expiry::an_account_ends_at_its_expiry_with_its_sessions_and_a_later_date_reactivates_it",
        |ns| async move {
            onboard(&ns, "ines", json!({"mfa": {"required": false}})).await?;
            let (client, _) = registered(&ns, "timesheets", json!({})).await?;
            let flow = SignIn::start(&client, &["offline_access"]).await?;
            let answer = flow.page().await?.submit("ines", PASSWORD, "").await?;
            let session = answer.cookie("__Host-roster_session").context("no session cookie")?;
            note(session.split_once('=').map_or("", |(_, v)| v));
            let tokens = flow.redeem(&client, &answer).await?;
            ensure!(sessions(&ns, "ines").await? == 1, "the sign-in made one session");

            let ends = Timestamp::now() + SignedDuration::from_secs(6);
            set_expiry(&ns, "ines", Some(ends)).await?;
            let user = wait_for(&ns.raw::<User>(), "ines", "reconciled", |u| {
                u.data["status"]["observedGeneration"].as_i64() == u.metadata.generation
            })
            .await?;
            ensure!(
                Timestamp::now() >= ends || user.data["status"]["phase"] == "ACTIVE",
                "inactive before its end: {:?}",
                user.data["status"]
            );
            let ended =
                wait_for(&ns.raw::<User>(), "ines", "INACTIVE", |u| u.data["status"]["phase"] == "INACTIVE")
                    .await?;
            ensure!(Timestamp::now() >= ends, "INACTIVE before spec.expiresAt");
            let ready = condition(&ended, "Ready");
            ensure!(ready["reason"] == "Expired", "Ready: {ready}");
            poll_until("the sessions are ended", || async { Ok(sessions(&ns, "ines").await? == 0) }).await?;
            ensure!(
                refresh(&client, tokens.refresh_token().context("no refresh token")?).await.is_err(),
                "a refresh token outlived the account"
            );
            ensure!(
                userinfo(tokens.access_token().secret()).await?.0 == 401,
                "userinfo for an ended account"
            );
            let again = SignIn::start(&client, &[]).await?;
            let refused = again.page().await?.submit("ines", PASSWORD, "").await?;
            ensure!(refused.location.is_none(), "an ended account signed in: {:?}", refused.location);

            set_expiry(&ns, "ines", Some(Timestamp::now() + SignedDuration::from_hours(1))).await?;
            wait_for(&ns.raw::<User>(), "ines", "ACTIVE again", |u| u.data["status"]["phase"] == "ACTIVE")
                .await?;
            let back = SignIn::start(&client, &[]).await?;
            let answer = back.page().await?.submit("ines", PASSWORD, "").await?;
            back.redeem(&client, &answer).await.context("signing in after the end moved later")?;
            Ok(())
        },
    )]
}

async fn set_expiry(ns: &Ns, name: &str, at: Option<Timestamp>) -> anyhow::Result<()> {
    let patch = json!({"spec": {"expiresAt": at.map(|t| t.to_string())}});
    ns.api::<User>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// How many sign-in sessions `user` holds.
async fn sessions(ns: &Ns, user: &str) -> anyhow::Result<usize> {
    let params = ListParams::default()
        .labels(&format!("roster.dev/user={user}"))
        .fields("type=roster.dev/oidc-session");
    Ok(ns.api::<Secret>().list(&params).await?.items.len())
}
