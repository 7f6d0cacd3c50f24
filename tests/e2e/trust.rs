//! Takeover paths, each tried as an attacker or a careless admin would: a second invite for
//! an onboarded person, links left open after onboarding, a user the directory refuses, a
//! Secret roster never made sitting where roster writes or deletes, and a forged token
//! Secret. Each must fail to get into the account.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use roster::api::{MfaReset, User, UserInvite};
use roster::credentials::hash_token;
use serde_json::{Value, json};

use crate::harness::{Ns, condition, trial, wait_for};
use crate::invites::{invite, message_text, messages_to, phase_of, token_after, token_in};
use crate::lifecycle::{email, phase, set_state, user_manifest, write_facts};
use crate::portal::{
    PASSWORD, code, expect_link, get, link_token, linked_user, login, next_code, onboard, post,
};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("trust::a_second_invite_cannot_take_over_an_onboarded_account", |ns| async move {
            let totp = onboard(&ns, "owner", json!({})).await?;
            let thief = email("thief", &ns);
            ns.apply(invite("owner-again", json!({"userRef": {"name": "owner"}, "delivery": "Link"})))
                .await?;
            ns.apply(invite("owner-elsewhere", json!({"userRef": {"name": "owner"}, "email": thief})))
                .await?;
            for name in ["owner-again", "owner-elsewhere"] {
                let refused = wait_for(&ns.raw::<UserInvite>(), name, "Failed: AlreadyOnboarded", |i| {
                    i.data["status"]["phase"] == "Failed"
                        && condition(i, "Ready")["reason"] == "AlreadyOnboarded"
                })
                .await?;
                ensure!(condition(&refused, "Delivered")["status"] == "False", "{}", refused.data["status"]);
            }
            ensure!(
                ns.api::<Secret>().get_opt("owner-again-link").await?.is_none(),
                "a link was issued for an onboarded user"
            );
            ensure!(messages_to(&thief).await?.is_empty(), "an invitation went to another address");
            let (status, body) = login(json!({
                "username": "owner", "password": PASSWORD, "code": next_code(&totp)?,
            }))
            .await?;
            ensure!(status == 200, "the person's own credentials stopped working: {status} {body}");
            Ok(())
        }),
        trial("trust::onboarding_supersedes_every_other_open_link", |ns| async move {
            let first = linked_user(&ns, "relinked", json!({})).await?;
            ns.apply(invite("relinked-second", json!({"userRef": {"name": "relinked"}, "delivery": "Link"})))
                .await?;
            wait_for(&ns.api::<UserInvite>(), "relinked-second", "Sent", |i| phase_of(i) == "Sent").await?;
            let second = link_token(&ns, "relinked-second").await?;
            expect_link(&second, 200, "").await?;

            let (status, body) =
                post(&format!("/api/v1/invites/{first}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            let secret = body["totp"]["secret"].as_str().context("no TOTP secret")?.to_owned();
            let (status, body) =
                post(&format!("/api/v1/invites/{first}/totp"), json!({"code": code(&secret)?})).await?;
            ensure!(status == 200, "{status} {body}");
            wait_for(&ns.raw::<User>(), "relinked", "ACTIVE", |u| phase(u) == "ACTIVE").await?;

            let ended = wait_for(&ns.raw::<UserInvite>(), "relinked-second", "Superseded", |i| {
                i.data["status"]["phase"] == "Superseded"
            })
            .await?;
            ensure!(condition(&ended, "Ready")["reason"] == "Superseded", "{}", ended.data["status"]);
            expect_link(&second, 410, "superseded").await?;
            ensure!(
                ns.api::<Secret>().get_opt("relinked-second-link").await?.is_none(),
                "the superseded link is still in its Secret"
            );
            let (status, _) =
                post(&format!("/api/v1/invites/{second}/accept"), json!({"password": "Fresh-Takeover-99x"}))
                    .await?;
            ensure!(status == 410, "a superseded link set a password: {status}");
            Ok(())
        }),
        trial("trust::a_user_the_directory_refuses_gets_no_link_and_cannot_sign_in", |ns| async move {
            let taken = email("holder", &ns);
            onboard(&ns, "holder", json!({"mfa": {"required": false}})).await?;

            // A newer User with the holder's email and a manual invite: nothing is delivered.
            ns.apply(user_manifest(
                "late",
                json!({"email": taken, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("late-invite", json!({"userRef": {"name": "late"}, "delivery": "Link"}))).await?;
            let held = wait_for(&ns.raw::<UserInvite>(), "late-invite", "held back", |i| {
                condition(i, "Ready")["reason"] == "DuplicateEmail"
                    && condition(i, "Stalled")["status"] == "True"
            })
            .await?;
            ensure!(held.data["status"]["phase"] != "Sent", "{}", held.data["status"]);
            ensure!(ns.api::<Secret>().get_opt("late-invite-link").await?.is_none(), "a link was issued");

            // A link delivered before the User took someone else's email stops working.
            let pending = linked_user(&ns, "turncoat", json!({})).await?;
            take_email(&ns, "turncoat", &taken).await?;
            expect_link(&pending, 410, "").await?;

            // An onboarded User that takes someone else's email cannot sign in as itself …
            onboard(&ns, "switch", json!({"mfa": {"required": false}})).await?;
            take_email(&ns, "switch", &taken).await?;
            let (status, body) =
                login(json!({"username": "switch", "password": "Not-Its-Password-42"})).await?;
            ensure!(status == 401 && body["error"] == "invalidCredentials", "{status} {body}");
            let (status, body) = login(json!({"username": "switch", "password": PASSWORD})).await?;
            ensure!(
                status == 401 && body["error"] == "invalidCredentials",
                "a password alone learns nothing: {status} {body}"
            );
            // … and the holder is unaffected.
            let (status, body) = login(json!({"email": taken, "password": PASSWORD})).await?;
            ensure!(status == 200 && body["name"] == "holder", "{status} {body}");
            Ok(())
        }),
        trial("trust::roster_deletes_and_overwrites_only_secrets_it_owns", |ns| async move {
            let secrets = ns.api::<Secret>();
            let foreign = |name: &str| -> anyhow::Result<Secret> {
                Ok(serde_json::from_value(json!({
                    "metadata": {"name": name}, "stringData": {"keep": "me"},
                }))?)
            };
            // An invite named X is revoked: roster must not delete a Secret X-link it never made.
            secrets.create(&PostParams::default(), &foreign("bystander-link")?).await?;
            ns.apply(user_manifest(
                "bystander",
                json!({"email": email("bystander", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("bystander", json!({"userRef": {"name": "bystander"}}))).await?;
            wait_for(&ns.api::<UserInvite>(), "bystander", "Sent", |i| phase_of(i) == "Sent").await?;
            set_state(&ns, "bystander", "Inactive").await?;
            wait_for(&ns.api::<UserInvite>(), "bystander", "Revoked", |i| phase_of(i) == "Revoked").await?;
            ensure_untouched(&secrets, "bystander-link").await?;

            // Link delivery onto a Secret roster never made: reported, not overwritten.
            secrets.create(&PostParams::default(), &foreign("squatted-link")?).await?;
            ns.apply(user_manifest(
                "squatter",
                json!({"email": email("squatter", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(invite("squatted", json!({"userRef": {"name": "squatter"}, "delivery": "Link"})))
                .await?;
            wait_for(&ns.raw::<UserInvite>(), "squatted", "SecretNotOwned", |i| {
                condition(i, "Ready")["reason"] == "SecretNotOwned"
                    && condition(i, "Stalled")["status"] == "True"
            })
            .await?;
            ensure_untouched(&secrets, "squatted-link").await?;

            // The same for the token Secret, which roster writes without reading it first
            // (from its cache, where a foreign Secret does not show): reported, not overwritten.
            secrets.create(&PostParams::default(), &foreign("squatted-token-token")?).await?;
            ns.apply(invite("squatted-token", json!({"userRef": {"name": "squatter"}}))).await?;
            wait_for(&ns.raw::<UserInvite>(), "squatted-token", "SecretNotOwned", |i| {
                condition(i, "Ready")["reason"] == "SecretNotOwned"
                    && condition(i, "Stalled")["status"] == "True"
            })
            .await?;
            ensure_untouched(&secrets, "squatted-token-token").await?;

            // A superseded MfaReset must not delete a Secret <reset>-link it never made.
            onboard(&ns, "phoneless", json!({})).await?;
            secrets.create(&PostParams::default(), &foreign("phoneless-first-link")?).await?;
            ns.apply(mfa_reset("phoneless-first", "phoneless")).await?;
            wait_for(&ns.raw::<MfaReset>(), "phoneless-first", "Completed", |r| {
                r.data["status"]["phase"] == "Completed"
            })
            .await?;
            ns.apply(mfa_reset("phoneless-second", "phoneless")).await?;
            wait_for(&ns.raw::<MfaReset>(), "phoneless-first", "Superseded", |r| {
                condition(r, "Ready")["reason"] == "Superseded"
            })
            .await?;
            ensure_untouched(&secrets, "phoneless-first-link").await?;
            Ok(())
        }),
        trial("trust::a_forged_token_secret_opens_nothing", |ns| async move {
            linked_user(&ns, "target", json!({})).await?;
            let forged = "forged-token-chosen-by-someone-who-may-create-secrets";
            let expires = (Timestamp::now() + SignedDuration::from_hours(1)).to_string();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "lookalike-token", "labels": {
                    "app.kubernetes.io/managed-by": "roster", "roster.dev/invite": "target-invite",
                }},
                "type": "roster.dev/invite-token",
                "stringData": {"tokenHash": hash_token(forged), "expiresAt": expires, "issuance": "0"},
            }))?;
            ns.api::<Secret>().create(&PostParams::default(), &secret).await?;
            // A later change on the same watch: once roster has seen it, it has seen the forgery.
            write_facts(&ns, "target", json!({"failedLogins": "1"})).await?;
            wait_for(&ns.raw::<User>(), "target", "seen the later change", |u| {
                u.data["status"]["failedLoginAttempts"] == 1
            })
            .await?;
            let (status, body) = get(&format!("/api/v1/invites/{forged}")).await?;
            ensure!(
                status == 404 && body["error"] == "unknown",
                "a forged token Secret opened a link: {status} {body}"
            );
            let (status, _) =
                post(&format!("/api/v1/invites/{forged}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 404, "a forged token set a password: {status}");
            Ok(())
        }),
        trial("trust::email_verified_follows_the_address_it_verified", |ns| async move {
            let address = email("mover", &ns);
            ns.apply(user_manifest(
                "mover",
                json!({"email": address, "mfa": {"required": false}}),
                json!({}),
            ))
            .await?;
            wait_for(&ns.api::<UserInvite>(), "mover-invite", "Sent", |i| phase_of(i) == "Sent").await?;
            let messages = messages_to(&address).await?;
            let text = message_text(messages.first().context("no invitation")?).await?;
            let token = token_in(&text).context("no link in the invitation")?;
            let (status, body) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            wait_for(&ns.raw::<User>(), "mover", "verified", |u| {
                condition(u, "EmailVerified")["status"] == "True"
            })
            .await?;
            let elsewhere = email("mover-elsewhere", &ns);
            let moved = json!({"spec": {"email": elsewhere}});
            ns.raw::<User>().patch("mover", &PatchParams::default(), &Patch::Merge(&moved)).await?;
            wait_for(&ns.raw::<User>(), "mover", "no longer verified", |u| {
                condition(u, "EmailVerified")["status"] == "False"
                    && condition(u, "EmailVerified")["reason"] == "EmailChanged"
            })
            .await?;

            // A link to the new address confirms it, and changes nothing else.
            crate::harness::poll_until("a verification email to the new address", || async {
                Ok(!messages_to(&elsewhere).await?.is_empty())
            })
            .await?;
            let messages = messages_to(&elsewhere).await?;
            ensure!(messages.len() == 1, "{} verification emails to the new address", messages.len());
            let text = message_text(messages.first().context("no message")?).await?;
            let token = token_after(&text, "/verify-email/").context("no verification link")?;
            let path = format!("/api/v1/email-verifications/{token}");
            let (status, body) = get(&path).await?;
            ensure!(status == 200 && body["email"] == elsewhere, "{status} {body}");
            let before = ns.api::<Secret>().get("mover-credentials").await?.data.unwrap_or_default();
            let (status, body) = post(&path, json!({})).await?;
            ensure!(status == 200 && body["verified"] == elsewhere, "{status} {body}");
            wait_for(&ns.raw::<User>(), "mover", "verified again", |u| {
                condition(u, "EmailVerified")["status"] == "True"
            })
            .await?;
            let after = ns.api::<Secret>().get("mover-credentials").await?.data.unwrap_or_default();
            ensure!(
                after.get("passwordHash") == before.get("passwordHash"),
                "the verification changed the password"
            );
            let (status, body) = get(&path).await?;
            ensure!(status == 410 && body["error"] == "used", "{status} {body}");
            Ok(())
        }),
    ]
}

/// Changes a User's email to `address`, and waits until the directory refuses it.
async fn take_email(ns: &Ns, user: &str, address: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"email": address}});
    ns.raw::<User>().patch(user, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_for(&ns.raw::<User>(), user, "refused as a duplicate", |u| {
        condition(u, "Ready")["reason"] == "DuplicateEmail"
    })
    .await?;
    Ok(())
}

/// The Secret `name` still holds only what its maker put there, and no owner.
async fn ensure_untouched(secrets: &kube::Api<Secret>, name: &str) -> anyhow::Result<()> {
    let secret = secrets.get_opt(name).await?.with_context(|| format!("roster deleted {name}"))?;
    let data = secret.data.unwrap_or_default();
    ensure!(
        data.len() == 1 && data.get("keep").map(|v| v.0.as_slice()) == Some(b"me".as_slice()),
        "roster overwrote {name}: keys {:?}",
        data.keys().collect::<Vec<_>>()
    );
    ensure!(secret.metadata.owner_references.unwrap_or_default().is_empty(), "roster took {name} over");
    Ok(())
}

fn mfa_reset(name: &str, user: &str) -> Value {
    json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": name},
        "spec": {"userRef": {"name": user}, "reason": "lost phone", "delivery": "Email"},
    })
}
