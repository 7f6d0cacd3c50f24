//! Invitations against the real control plane and a real SMTP server (Mailpit): the email
//! that actually arrived carries a token whose SHA-256 is the stored one; Link delivery
//! sends nothing and hands the admin a working link; overrides and expiry.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use roster::credentials::hash_token;
use serde_json::{Value, json};

use crate::harness::{Ns, condition, shared, trial, wait_for};
use crate::lifecycle::{email, phase, user_manifest};
use crate::portal::{expect_link, link_token};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("invites::an_emailed_invitation_carries_the_stored_token", |ns| async move {
            let address = email("mailed", &ns);
            ns.apply(user_manifest(
                "mailed",
                json!({"email": address, "locale": "de", "displayName": "Jana Beispiel"}),
                json!({}),
            ))
            .await?;
            wait_for(&ns.api::<UserInvite>(), "mailed-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            let messages = messages_to(&address).await?;
            ensure!(
                messages.len() == 1,
                "expected exactly one message to {address}, found {}",
                messages.len()
            );
            ensure!(
                messages[0]["Subject"].as_str().unwrap_or_default().contains("Einladung"),
                "not German: {}",
                messages[0]["Subject"]
            );
            let text = message_text(&messages[0]).await?;
            ensure!(text.contains("Jana Beispiel") && text.contains("Example Corp"), "{text}");
            let token = token_in(&text).context("no link in the email")?;
            ensure!(
                hash_token(&token) == stored_hash(&ns, "mailed-invite").await?,
                "the emailed token does not match the stored hash"
            );

            let user = wait_for(&ns.raw::<User>(), "mailed", "PENDING", |u| phase(u) == "PENDING").await?;
            ensure!(condition(&user, "Ready")["status"] == "True", "{}", user.data["status"]);
            ensure!(condition(&user, "Invited")["status"] == "True", "{}", user.data["status"]);
            let invite = ns.api::<UserInvite>().get("mailed-invite").await?;
            let status = invite.status.context("no status")?;
            ensure!(status.delivery_attempts == Some(1), "delivery attempts: {:?}", status.delivery_attempts);
            let (sent, expires) =
                (status.sent_at.context("no sentAt")?.0, status.expires_at.context("no expiresAt")?.0);
            ensure!(expires.as_second() - sent.as_second() == 720 * 3600, "expiresAt is not sentAt + 720h");
            Ok(())
        }),
        trial("invites::link_delivery_sends_nothing_and_stores_a_working_link", |ns| async move {
            let address = email("linked", &ns);
            ns.apply(user_manifest(
                "linked",
                json!({"email": address, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("linked-invite", json!({"userRef": {"name": "linked"}, "delivery": "Link"})))
                .await?;
            let invite =
                wait_for(&ns.api::<UserInvite>(), "linked-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            ensure!(
                invite.status.and_then(|s| s.link_secret_ref).map(|r| r.name)
                    == Some("linked-invite-link".into()),
                "no linkSecretRef"
            );
            let link = ns.api::<Secret>().get("linked-invite-link").await?.data.unwrap_or_default();
            let url = String::from_utf8(link.get("url").context("no url")?.0.clone())?;
            ensure!(url.starts_with(&format!("{}/invite/", shared().portal_url)), "{url}");
            let token = token_in(&url).context("no token in the link")?;
            ensure!(
                hash_token(&token) == stored_hash(&ns, "linked-invite").await?,
                "the link's token does not match the stored hash"
            );
            ensure!(messages_to(&address).await?.is_empty(), "Link delivery sent an email");
            wait_for(&ns.raw::<User>(), "linked", "PENDING", |u| phase(u) == "PENDING").await?;
            Ok(())
        }),
        trial("invites::the_recipient_override_is_honoured", |ns| async move {
            let own = email("override", &ns);
            let other = email("override-personal", &ns);
            ns.apply(user_manifest(
                "override",
                json!({"email": own, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("override-invite", json!({"userRef": {"name": "override"}, "email": other})))
                .await?;
            wait_for(&ns.api::<UserInvite>(), "override-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            ensure!(messages_to(&other).await?.len() == 1, "nothing sent to the override address");
            ensure!(
                messages_to(&own).await?.is_empty(),
                "sent to the user's own address despite the override"
            );
            Ok(())
        }),
        trial("invites::a_resend_mails_a_new_token_and_the_old_one_stops_working", |ns| async move {
            let address = email("again", &ns);
            ns.apply(user_manifest("again", json!({"email": address}), json!({}))).await?;
            let invites = ns.api::<UserInvite>();
            wait_for(&invites, "again-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            let first =
                token_in(&message_text(&messages_to(&address).await?[0]).await?).context("no first token")?;

            let bump = json!({"spec": {"resend": 1}});
            invites
                .patch("again-invite", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&bump))
                .await?;
            wait_for(&invites, "again-invite", "resent", |i| {
                phase_of(i) == "Sent" && i.status.as_ref().and_then(|s| s.observed_resend) == Some(1)
            })
            .await?;
            let second = resent_token(&address, &first).await?;
            let stored = stored_hash(&ns, "again-invite").await?;
            ensure!(hash_token(&second) == stored, "the new token is not the stored one");
            ensure!(hash_token(&first) != stored, "the old token still matches");
            Ok(())
        }),
        trial(
            "invites::a_token_secret_that_lost_its_label_is_found_written_and_labelled_again",
            |ns| async move {
                // The cache selects roster's Secrets by label: one whose label an admin removed is
                // invisible to it, and must neither stop deliveries nor loop.
                let address = email("relabel", &ns);
                ns.apply(user_manifest("relabel", json!({"email": address}), json!({}))).await?;
                let invites = ns.api::<UserInvite>();
                wait_for(&invites, "relabel-invite", "Sent", |i| phase_of(i) == "Sent").await?;
                let first = token_in(&message_text(&messages_to(&address).await?[0]).await?)
                    .context("no first token")?;
                let secrets = ns.api::<Secret>();
                let merge = |patch: Value| kube::api::Patch::Merge(patch);
                let unlabel = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
                secrets.patch("relabel-invite-token", &Default::default(), &merge(unlabel)).await?;
                let bump = json!({"spec": {"resend": 1}});
                invites.patch("relabel-invite", &Default::default(), &merge(bump)).await?;
                wait_for(&invites, "relabel-invite", "resent", |i| {
                    phase_of(i) == "Sent" && i.status.as_ref().and_then(|s| s.observed_resend) == Some(1)
                })
                .await?;
                let labels = secrets.get("relabel-invite-token").await?.metadata.labels.unwrap_or_default();
                ensure!(
                    labels.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("roster"),
                    "the token Secret was not labelled again: {labels:?}"
                );
                let second = resent_token(&address, &first).await?;
                ensure!(
                    hash_token(&second) == stored_hash(&ns, "relabel-invite").await?,
                    "the new token is not stored"
                );
                Ok(())
            },
        ),
        trial("invites::deleting_the_user_revokes_its_invites", |ns| async move {
            let address = email("leaver", &ns);
            ns.apply(user_manifest(
                "leaver",
                json!({"email": address, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("leaver-invite", json!({"userRef": {"name": "leaver"}, "delivery": "Link"})))
                .await?;
            wait_for(&ns.api::<UserInvite>(), "leaver-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            let token = link_token(&ns, "leaver-invite").await?;
            ns.raw::<User>().delete("leaver", &Default::default()).await?;
            wait_for(&ns.api::<UserInvite>(), "leaver-invite", "Revoked", |i| phase_of(i) == "Revoked")
                .await?;
            ensure!(ns.api::<Secret>().get_opt("leaver-invite-link").await?.is_none(), "the link survived");
            expect_link(&token, 410, "revoked").await?;
            Ok(())
        }),
        trial("invites::fifty_users_at_once_get_fifty_messages_without_duplicates", |ns| async move {
            let names: Vec<String> = (0..50).map(|i| format!("crowd-{i:02}")).collect();
            let applies = names
                .iter()
                .map(|name| ns.apply(user_manifest(name, json!({"email": email(name, &ns)}), json!({}))));
            for applied in futures::future::join_all(applies).await {
                applied?;
            }
            let invites = ns.api::<UserInvite>();
            for name in &names {
                wait_for(&invites, &format!("{name}-invite"), "Sent", |i| phase_of(i) == "Sent").await?;
            }
            for name in &names {
                let received = messages_to(&email(name, &ns)).await?.len();
                ensure!(received == 1, "{name} received {received} messages");
            }
            Ok(())
        }),
        trial("invites::a_short_ttl_expires_on_time_without_polling", |ns| async move {
            let address = email("brief", &ns);
            ns.apply(user_manifest(
                "brief",
                json!({"email": address, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite(
                "brief-invite",
                json!({"userRef": {"name": "brief"}, "delivery": "Link", "ttl": "3s"}),
            ))
            .await?;
            wait_for(&ns.api::<UserInvite>(), "brief-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            let token = link_token(&ns, "brief-invite").await?;
            wait_for(&ns.api::<UserInvite>(), "brief-invite", "Expired", |i| phase_of(i) == "Expired")
                .await?;
            ensure!(ns.api::<Secret>().get_opt("brief-invite-link").await?.is_none(), "the link survived");
            expect_link(&token, 410, "expired").await?;
            let user = wait_for(&ns.raw::<User>(), "brief", "told of the expiry", |u| {
                condition(u, "Ready")["reason"] == "InviteExpired"
            })
            .await?;
            ensure!(phase(&user) == "PENDING", "{}", user.data["status"]);
            Ok(())
        }),
    ]
}

pub fn invite(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "UserInvite", "metadata": {"name": name}, "spec": spec})
}

pub fn phase_of(invite: &UserInvite) -> String {
    invite.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}")).unwrap_or_default()
}

/// Messages the shared Mailpit received for `address`.
pub async fn messages_to(address: &str) -> anyhow::Result<Vec<Value>> {
    messages_at(&shared().mailpit_api, address).await
}

/// Messages the Mailpit whose API is at `api` received for `address`.
pub async fn messages_at(api: &str, address: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!("{api}/api/v1/search");
    let found: Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", format!("to:\"{address}\""))])
        .send()
        .await?
        .json()
        .await?;
    Ok(found["messages"].as_array().cloned().unwrap_or_default())
}

pub async fn message_text(summary: &Value) -> anyhow::Result<String> {
    message_text_at(&shared().mailpit_api, summary).await
}

/// The text part of a message the Mailpit whose API is at `api` received.
pub async fn message_text_at(api: &str, summary: &Value) -> anyhow::Result<String> {
    let id = summary["ID"].as_str().context("no ID")?;
    let message: Value = reqwest::get(format!("{api}/api/v1/message/{id}")).await?.json().await?;
    Ok(message["Text"].as_str().unwrap_or_default().to_owned())
}

/// The token of the first `/invite/<token>` link in `text`.
pub fn token_in(text: &str) -> Option<String> {
    token_after(text, "/invite/")
}

/// The token of the first link in `text` whose path starts with `prefix`.
pub fn token_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let token: String =
        text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    (!token.is_empty()).then_some(token)
}

async fn stored_hash(ns: &Ns, invite: &str) -> anyhow::Result<String> {
    let secret = ns.api::<Secret>().get(&format!("{invite}-token")).await?;
    let data = secret.data.unwrap_or_default();
    Ok(String::from_utf8(data.get("tokenHash").context("no tokenHash")?.0.clone())?)
}

/// The token of the second of exactly two messages to `address`, the one that is not `first`.
async fn resent_token(address: &str, first: &str) -> anyhow::Result<String> {
    let messages = messages_to(address).await?;
    ensure!(messages.len() == 2, "expected a second message, found {}", messages.len());
    let mut tokens = Vec::new();
    for message in &messages {
        tokens.push(token_in(&message_text(message).await?).context("no token")?);
    }
    tokens.into_iter().find(|t| t != first).context("the resend reused the old token")
}
