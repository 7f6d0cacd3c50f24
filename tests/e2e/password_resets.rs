//! PasswordReset against the real control plane, Mailpit and the portal: a person who forgot
//! their password (and locked themselves out) sets a new one through the emailed link,
//! proving a current code; the old password stops working, the lock ends, the link is spent.
//! A handed-over link for a password-only user; a newer reset supersedes an open one; a user
//! who never set a password has nothing to reset.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use libtest_mimic::Trial;
use roster::api::{PasswordReset, User};
use roster::credentials::{Argon2Settings, PasswordHasher};
use serde_json::{Value, json};

use crate::harness::{Ns, condition, trial, wait_for};
use crate::invites::{message_text, messages_to, token_after};
use crate::lifecycle::{email, phase, user_manifest};
use crate::portal::{PASSWORD, get, login, next_code, onboard, post};
use crate::resets::link_secret_token;

/// The password the reset sets; the log check looks for PASSWORD only, so this one is
/// checked here against the stored hash instead.
const NEW_PASSWORD: &str = "Quartz-Meadow-Lantern-5150";

pub fn trials() -> Vec<Trial> {
    vec![
        trial("password_resets::a_forgotten_password_from_reset_to_a_new_one_with_a_code", |ns| async move {
            let totp = onboard(&ns, "forgetful", json!({})).await?;
            let address = email("forgetful", &ns);
            ns.apply(reset("forgetful-reset", "forgetful", "Email")).await?;
            let issued =
                wait_for(&ns.raw::<PasswordReset>(), "forgetful-reset", "Completed", completed).await?;
            ensure!(condition(&issued, "Ready")["reason"] == "LinkIssued", "{}", issued.data["status"]);
            ensure!(issued.data["status"]["expiresAt"].is_string(), "{}", issued.data["status"]);
            let token = emailed_token(&address).await?;

            // Locked out by wrong guesses: the reset is how the person gets back in.
            for attempt in 1..=5 {
                let (status, _) =
                    login(json!({"email": address, "password": format!("Wrong-{attempt}-guess-xyz")}))
                        .await?;
                ensure!(status == 401, "{status}");
            }
            wait_for(&ns.raw::<User>(), "forgetful", "locked out", |u| {
                condition(u, "Ready")["reason"] == "LockedOut"
            })
            .await?;

            let path = format!("/api/v1/password-resets/{token}");
            let (status, body) = get(&path).await?;
            ensure!(status == 200 && body["codeRequired"] == true, "{status} {body}");
            let (status, body) = post(&path, json!({"password": NEW_PASSWORD})).await?;
            ensure!(status == 422 && body["error"] == "invalidCode", "no code: {status} {body}");
            let (status, body) = post(&path, json!({"password": NEW_PASSWORD, "code": "000000"})).await?;
            ensure!(status == 422 && body["error"] == "invalidCode", "a wrong code: {status} {body}");
            let (status, body) = post(&path, json!({"password": "short", "code": next_code(&totp)?})).await?;
            ensure!(status == 422 && body["error"] == "passwordPolicy", "{status} {body}");
            let (status, body) =
                post(&path, json!({"password": NEW_PASSWORD, "code": next_code(&totp)?})).await?;
            ensure!(status == 200 && body["phase"] == "ACTIVE", "{status} {body}");

            let user =
                wait_for(&ns.raw::<User>(), "forgetful", "ACTIVE again", |u| phase(u) == "ACTIVE").await?;
            ensure!(user.data["status"]["failedLoginAttempts"] == 0, "{}", user.data["status"]);
            ensure_password(&ns, "forgetful", NEW_PASSWORD, PASSWORD).await?;
            let done = wait_for(&ns.raw::<PasswordReset>(), "forgetful-reset", "PasswordChanged", |r| {
                condition(r, "Ready")["reason"] == "PasswordChanged"
            })
            .await?;
            ensure!(done.data["status"]["phase"] == "Completed", "{}", done.data["status"]);
            let (status, body) = get(&path).await?;
            ensure!(status == 410 && body["error"] == "used", "a spent link: {status} {body}");
            Ok(())
        }),
        trial("password_resets::a_handed_over_link_a_newer_reset_and_nothing_to_reset", |ns| async move {
            onboard(&ns, "plain", json!({"mfa": {"required": false}})).await?;
            let address = email("plain", &ns);
            ns.apply(reset("plain-first", "plain", "Link")).await?;
            wait_for(&ns.raw::<PasswordReset>(), "plain-first", "Completed", completed).await?;
            let first = link_secret_token(&ns, "plain-first", "/password-reset/").await?;
            let notices = messages_to(&address).await?;
            let notice = message_text(notices.first().context("no notice email")?).await?;
            ensure!(!notice.contains("/password-reset/"), "the notice carries the link: {notice}");

            ns.apply(reset("plain-second", "plain", "Link")).await?;
            wait_for(&ns.raw::<PasswordReset>(), "plain-second", "Completed", completed).await?;
            wait_for(&ns.raw::<PasswordReset>(), "plain-first", "Superseded", |r| {
                condition(r, "Ready")["reason"] == "Superseded"
            })
            .await?;
            let (status, body) = get(&format!("/api/v1/password-resets/{first}")).await?;
            ensure!(status == 410 && body["error"] == "replaced", "{status} {body}");
            ensure!(
                ns.api::<Secret>().get_opt("plain-first-link").await?.is_none(),
                "the superseded link is still in its Secret"
            );
            let second = link_secret_token(&ns, "plain-second", "/password-reset/").await?;
            let (status, body) =
                post(&format!("/api/v1/password-resets/{second}"), json!({"password": NEW_PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            let (status, _) = login(json!({"email": address, "password": PASSWORD})).await?;
            ensure!(status == 401, "the old password still signs in: {status}");
            let (status, body) = login(json!({"email": address, "password": NEW_PASSWORD})).await?;
            ensure!(status == 200, "the new password does not sign in: {status} {body}");

            ns.apply(user_manifest(
                "newcomer",
                json!({"email": email("newcomer", &ns), "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(reset("newcomer-reset", "newcomer", "Email")).await?;
            let nothing =
                wait_for(&ns.raw::<PasswordReset>(), "newcomer-reset", "Completed", completed).await?;
            ensure!(condition(&nothing, "Ready")["reason"] == "NothingToReset", "{}", nothing.data["status"]);
            Ok(())
        }),
        trial(
            "password_resets::an_emailed_link_never_opens_an_account_alone_a_vouched_one_recovers_a_lost_phone",
            |ns| async move {
                // An emailed password-reset link, then an MfaReset clearing the authenticator:
                // together they must not open the account with the mailbox alone.
                onboard(&ns, "both", json!({})).await?;
                let address = email("both", &ns);
                ns.apply(reset("both-password", "both", "Email")).await?;
                wait_for(&ns.raw::<PasswordReset>(), "both-password", "Completed", completed).await?;
                let token = emailed_link(&address, "/password-reset/").await?;
                ns.apply(json!({
                    "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "both-phone"},
                    "spec": {"userRef": {"name": "both"}, "reason": "lost phone", "delivery": "Email"},
                }))
                .await?;
                wait_for(&ns.raw::<User>(), "both", "second factor cleared", |u| {
                    condition(u, "MfaEnrolled")["reason"] == "ResetRequested"
                })
                .await?;
                let path = format!("/api/v1/password-resets/{token}");
                crate::harness::poll_until("the emailed link refuses without a second factor", || async {
                    Ok(get(&path).await?.1["error"] == "secondFactorMissing")
                })
                .await?;
                let (status, body) = post(&path, json!({"password": NEW_PASSWORD})).await?;
                ensure!(status == 409 && body["error"] == "secondFactorMissing", "{status} {body}");
                ns.apply(reset("both-again", "both", "Email")).await?;
                let refused = wait_for(&ns.raw::<PasswordReset>(), "both-again", "Failed", |r| {
                    r.data["status"]["phase"] == "Failed"
                })
                .await?;
                let reason = condition(&refused, "Ready")["reason"].clone();
                ensure!(reason == "SecondFactorMissing", "{}", refused.data["status"]);
                ensure_password(&ns, "both", PASSWORD, NEW_PASSWORD).await?;

                // Lost phone and forgotten password: an admin who confirmed who the person is
                // hands over a password-reset link (delivery: Link), then the re-enrolment
                // link takes the new password.
                ns.apply(reset("both-vouched", "both", "Link")).await?;
                wait_for(&ns.raw::<PasswordReset>(), "both-vouched", "Completed", completed).await?;
                let vouched = link_secret_token(&ns, "both-vouched", "/password-reset/").await?;
                let path = format!("/api/v1/password-resets/{vouched}");
                let (status, body) = get(&path).await?;
                ensure!(status == 200 && body["codeRequired"] == false, "{status} {body}");
                let (status, body) = post(&path, json!({"password": NEW_PASSWORD})).await?;
                ensure!(status == 200, "{status} {body}");
                let phone = emailed_link(&address, "/mfa-reset/").await?;
                let accept = format!("/api/v1/mfa-resets/{phone}/accept");
                let (status, body) = post(&accept, json!({"password": NEW_PASSWORD})).await?;
                ensure!(status == 200, "the new password does not open the re-enrolment: {status} {body}");
                Ok(())
            },
        ),
    ]
}

fn reset(name: &str, user: &str, delivery: &str) -> Value {
    json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "PasswordReset", "metadata": {"name": name},
        "spec": {"userRef": {"name": user}, "reason": "forgot password", "delivery": delivery},
    })
}

fn completed(reset: &DynamicObject) -> bool {
    reset.data["status"]["phase"] == "Completed"
}

/// The stored hash is `now`'s and no longer `before`'s.
async fn ensure_password(ns: &Ns, user: &str, now: &str, before: &str) -> anyhow::Result<()> {
    let secret = ns.api::<Secret>().get(&format!("{user}-credentials")).await?;
    let data = secret.data.unwrap_or_default();
    let hash = String::from_utf8(data.get("passwordHash").context("no passwordHash")?.0.clone())?;
    let hasher = PasswordHasher::new(Argon2Settings::default(), 1)?;
    ensure!(hasher.verify(now, &hash).await?, "the new password is not the stored one");
    ensure!(!hasher.verify(before, &hash).await?, "the old password still matches");
    Ok(())
}

/// The token of the password-reset link in an email to `address`.
async fn emailed_token(address: &str) -> anyhow::Result<String> {
    emailed_link(address, "/password-reset/").await
}

/// The token of the first link under `path` in an email to `address`.
async fn emailed_link(address: &str, path: &str) -> anyhow::Result<String> {
    for message in messages_to(address).await? {
        if let Some(token) = token_after(&message_text(&message).await?, path) {
            return Ok(token);
        }
    }
    anyhow::bail!("no {path} link emailed to {address}")
}
