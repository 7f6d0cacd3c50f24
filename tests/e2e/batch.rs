//! A batch of people onboarded at once, for the fault tests: applying it, and checking —
//! after crashes, a lost leader or outages — that it converged with nothing lost, orphaned
//! or doubled, and how many emails went out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::ensure;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ListParams;
use roster::api::{User, UserInvite};
use serde_json::{Value, json};

use crate::harness::{Ns, poll_within};
use crate::invites::phase_of;
use crate::lifecycle::{email, user_manifest};

/// How long a batch may take to converge after its last fault.
pub const SETTLE: Duration = Duration::from_secs(180);

/// `ROSTER_<name>` from the environment (a larger run by hand), else `default`.
pub fn size(name: &str, default: usize) -> usize {
    std::env::var(format!("ROSTER_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A random duration between `from` and `to` (when a fault strikes).
pub fn random_between(from: Duration, to: Duration) -> Duration {
    let bytes = roster::credentials::random_bytes::<4>().unwrap_or_default();
    let spread = to.saturating_sub(from).as_millis().max(1);
    from + Duration::from_millis(u64::try_from(u128::from(u32::from_le_bytes(bytes)) % spread).unwrap_or(0))
}

/// The people of one batch: `<prefix>-<n>`, each with their own address.
pub struct Batch {
    pub names: Vec<String>,
}

impl Batch {
    /// Applies `count` Users named `<prefix>-<n>` (16 at a time).
    pub async fn apply(ns: &Ns, prefix: &str, count: usize) -> anyhow::Result<Self> {
        let names: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
        futures::stream::iter(names.clone())
            .map(|name| async move {
                ns.apply(user_manifest(&name, json!({"email": email(&name, ns)}), json!({}))).await
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Self { names })
    }

    /// How many of the batch's invites are Sent now.
    pub async fn sent(&self, ns: &Ns) -> anyhow::Result<usize> {
        let invites = ns.api::<UserInvite>().list(&ListParams::default()).await?;
        let ours: BTreeSet<&String> = self.names.iter().collect();
        Ok(invites.iter().filter(|i| ours.contains(&i.spec.user_ref.name) && phase_of(i) == "Sent").count())
    }

    /// Waits until every User is PENDING with a Sent invite; then checks that each has
    /// exactly one invite, that every Secret roster made is owned by an object that exists
    /// and is the only one of its kind for it, and that every person got an email. Returns
    /// the figures.
    pub async fn converged(&self, ns: &Ns, mailpit_api: &str) -> anyhow::Result<Figures> {
        let total = self.names.len();
        poll_within(&format!("all {total} Users PENDING with a Sent invite"), SETTLE, || async {
            let users = ns.api::<User>().list(&ListParams::default()).await?;
            let pending = users
                .iter()
                .filter(|u| self.names.contains(&u.name_any()))
                .filter(|u| {
                    u.status.as_ref().and_then(|s| s.phase.as_ref()).map(ToString::to_string).as_deref()
                        == Some("PENDING")
                })
                .count();
            Ok(pending == total && self.sent(ns).await? == total)
        })
        .await?;

        let invites = ns.api::<UserInvite>().list(&ListParams::default()).await?.items;
        let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
        for invite in &invites {
            *per_user.entry(invite.spec.user_ref.name.as_str()).or_default() += 1;
        }
        let doubled: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(doubled.is_empty(), "Users with more than one invite: {doubled:?}");

        let users = ns.api::<User>().list(&ListParams::default()).await?.items;
        let owners: BTreeSet<String> =
            users.iter().filter_map(|u| u.uid()).chain(invites.iter().filter_map(|i| i.uid())).collect();
        let secrets = ns
            .api::<Secret>()
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=roster"))
            .await?
            .items;
        let mut per_owner: BTreeMap<(String, String), usize> = BTreeMap::new();
        for secret in &secrets {
            let owner = secret.owner_references().iter().find(|r| r.controller == Some(true));
            let Some(owner) = owner else { anyhow::bail!("Secret {} has no controller", secret.name_any()) };
            ensure!(
                owners.contains(&owner.uid),
                "Secret {} is orphaned (owner {} gone)",
                secret.name_any(),
                owner.name
            );
            *per_owner.entry((owner.uid.clone(), secret.type_.clone().unwrap_or_default())).or_default() += 1;
        }
        let doubled: Vec<_> = per_owner.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(doubled.is_empty(), "objects with two Secrets of one type: {doubled:?}");

        let received = received(mailpit_api).await?;
        let mut missing = Vec::new();
        let mut duplicates = 0;
        for name in &self.names {
            match received.get(&email(name, ns).to_lowercase()).copied().unwrap_or(0) {
                0 => missing.push(name.clone()),
                n => duplicates += n - 1,
            }
        }
        ensure!(missing.is_empty(), "no email for {} people: {missing:?}", missing.len());
        Ok(Figures { users: total, secrets: secrets.len(), emails: received.values().sum(), duplicates })
    }
}

/// What a converged batch shows.
#[derive(Debug)]
pub struct Figures {
    pub users: usize,
    pub secrets: usize,
    pub emails: usize,
    pub duplicates: usize,
}

/// Messages Mailpit holds, per recipient address (lowercase). The token of each invitation
/// is noted for the log check after every test (this Mailpit is gone by then).
async fn received(api: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let list: Value = reqwest::get(format!("{api}/api/v1/messages?limit=100000")).await?.json().await?;
    let messages = list["messages"].as_array().cloned().unwrap_or_default();
    let mut counts = BTreeMap::new();
    for message in &messages {
        for to in message["To"].as_array().cloned().unwrap_or_default() {
            *counts.entry(to["Address"].as_str().unwrap_or_default().to_lowercase()).or_default() += 1;
        }
    }
    let texts: Vec<String> = futures::stream::iter(&messages)
        .map(|message| crate::invites::message_text_at(api, message))
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for text in texts {
        if let Some(token) = crate::invites::token_after(&text, "/invite/") {
            crate::oidc::note(&token);
        }
    }
    Ok(counts)
}
