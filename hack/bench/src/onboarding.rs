//! Onboarding at scale: N Users created at once by parallel clients, then the time until
//! every one is PENDING and Mailpit holds a message for each.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use roster::api::{User, UserPhase};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::mailbox::Mailbox;

/// How long onboarding may take per user before the benchmark gives up (plus a minute).
const SECONDS_PER_USER: f64 = 0.5;

/// The `i`th benchmark user's name.
pub fn name(i: usize) -> String {
    format!("user-{i:05}")
}

/// A User with an automatic invite by email (roster's defaults).
pub fn user(name: &str) -> anyhow::Result<User> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "roster.dev/v1alpha1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {"email": format!("{name}@example.com"), "givenName": "Bench", "familyName": name},
    }))?)
}

/// How long onboarding took.
#[derive(Clone, Debug, Serialize)]
pub struct Onboarding {
    /// Seconds until the last User was created.
    pub created_s: f64,
    /// Seconds until every User was PENDING.
    pub pending_s: f64,
    /// Seconds until Mailpit held N messages.
    pub mailed_s: f64,
    /// Seconds until both: the figure compared with the floor.
    pub total_s: f64,
}

/// Creates users `0..n` in `namespace` with `creators` parallel clients, handing each on to
/// `created` (when given) as the API server returned it. Returns when all exist.
pub async fn create(
    client: &Client,
    namespace: &str,
    n: usize,
    creators: usize,
    created: Option<mpsc::Sender<User>>,
) -> anyhow::Result<()> {
    let api: Api<User> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..n)
        .map(Ok::<_, anyhow::Error>)
        .try_for_each_concurrent(creators, |i| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let user = api.create(&PostParams::default(), &user(&name(i))?).await?;
                if let Some(created) = created {
                    created.send(user).await?;
                }
                Ok(())
            }
        })
        .await
}

/// Creates N Users with roster running, and times them to PENDING and mailed.
pub async fn run(
    client: &Client,
    namespace: &str,
    n: usize,
    creators: usize,
    mailbox: &Mailbox,
) -> anyhow::Result<Onboarding> {
    let deadline = Duration::from_secs_f64(60.0 + SECONDS_PER_USER * n as f64);
    let started = Instant::now();
    let pending = async {
        tokio::time::timeout(deadline, watch_pending(client, namespace, n))
            .await
            .map_err(|_| anyhow::anyhow!("not every User was PENDING within {deadline:?}"))??;
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let mailed = async {
        mailbox.wait_for(n, deadline).await?;
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let creation = async {
        create(client, namespace, n, creators, None).await?;
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let (created, pending, mailed) = futures::future::try_join3(creation, pending, mailed).await?;
    let seconds = Duration::as_secs_f64;
    Ok(Onboarding {
        created_s: seconds(&created),
        pending_s: seconds(&pending),
        mailed_s: seconds(&mailed),
        total_s: seconds(&pending.max(mailed)),
    })
}

/// Puts an unrelated annotation on every User, with `creators` parallel clients.
pub async fn touch(client: &Client, namespace: &str, n: usize, creators: usize) -> anyhow::Result<()> {
    let api: Api<User> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "bench"}}});
    futures::stream::iter(0..n)
        .map(Ok::<_, anyhow::Error>)
        .try_for_each_concurrent(creators, |i| {
            let (api, patch) = (api.clone(), patch.clone());
            async move {
                api.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch)).await?;
                Ok(())
            }
        })
        .await
}

/// Watches the Users of `namespace` until `n` of them are PENDING.
async fn watch_pending(client: &Client, namespace: &str, n: usize) -> anyhow::Result<()> {
    let api: Api<User> = Api::namespaced(client.clone(), namespace);
    let mut seen = HashSet::new();
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).applied_objects());
    while seen.len() < n {
        let Some(user) = events.try_next().await? else { bail!("the watch of Users ended") };
        if user.status.as_ref().and_then(|s| s.phase) == Some(UserPhase::Pending) {
            seen.insert(user.name_any());
        }
    }
    Ok(())
}
