//! MfaReset against the real control plane, Mailpit and the portal: a lost phone from the
//! reset to signing in with the new authenticator; each edge case; re-applying the same
//! object; a newer reset superseding an open one; deletion after ttlSecondsAfterFinished.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams};
use kube::core::DynamicObject;
use libtest_mimic::Trial;
use roster::api::{MfaReset, User};
use roster::credentials::TotpSecret;
use serde_json::{Value, json};

use crate::harness::{Ns, condition, poll_until, trial, wait_for};
use crate::invites::{message_text, messages_to, token_after};
use crate::lifecycle::{email, phase, set_state, user_manifest};
use crate::portal::{PASSWORD, code, get, login, next_code, onboard, post};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("resets::a_lost_phone_from_reset_to_signing_in_with_the_new_authenticator", |ns| async move {
            let old = onboard(&ns, "lostphone", json!({})).await?;
            let address = email("lostphone", &ns);
            let signed_in =
                login(json!({"email": address, "password": PASSWORD, "code": next_code(&old)?})).await?;
            ensure!(
                signed_in.0 == 200,
                "the old authenticator did not sign in before the reset: {signed_in:?}"
            );

            ns.apply(reset("lostphone-reset", "lostphone", "lost phone", "Email")).await?;
            let done = wait_for(&ns.raw::<MfaReset>(), "lostphone-reset", "Completed", completed).await?;
            ensure!(condition(&done, "Ready")["reason"] == "Reset", "{}", done.data["status"]);
            ensure!(done.data["status"]["completedAt"].is_string(), "{}", done.data["status"]);
            let user = wait_for(&ns.raw::<User>(), "lostphone", "told of the reset", |u| {
                condition(u, "MfaEnrolled")["reason"] == "ResetRequested"
            })
            .await?;
            ensure!(phase(&user) == "ACTIVE", "the user left ACTIVE: {}", user.data["status"]);
            ensure!(
                user.data["status"]["requiredActions"] == json!(["CONFIGURE_TOTP"]),
                "{}",
                user.data["status"]
            );
            for offset in [0, 30] {
                let code = TotpSecret::from_base32(&old)?.code_at(now() + offset)?;
                let refused = login(json!({"email": address, "password": PASSWORD, "code": code})).await?;
                ensure!(refused.0 == 401, "an old code signed in after the reset: {refused:?}");
            }
            ensure!(
                event_about(&ns, "lostphone", "MfaReset").await?.contains("lost phone"),
                "no Event on the User"
            );
            ensure!(
                event_about(&ns, "lostphone-reset", "MfaReset").await?.contains("lost phone"),
                "no Event on the reset"
            );

            let token = emailed_reset_token(&address).await?;
            let (status, body) = get(&format!("/api/v1/mfa-resets/{token}")).await?;
            ensure!(status == 200 && body["step"] == "password", "{status} {body}");
            let (status, _) = post(
                &format!("/api/v1/mfa-resets/{token}/accept"),
                json!({"password": "Not-My-Password-99"}),
            )
            .await?;
            ensure!(status == 401, "a wrong password was taken as proof: {status}");
            let (status, body) =
                post(&format!("/api/v1/mfa-resets/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            let new = body["totp"]["secret"].as_str().context("no new secret")?.to_owned();
            ensure!(new != old, "the same secret again");
            let (status, body) =
                post(&format!("/api/v1/mfa-resets/{token}/totp"), json!({"code": code(&new)?})).await?;
            ensure!(status == 200 && body["phase"] == "ACTIVE", "{status} {body}");

            let user = wait_for(&ns.raw::<User>(), "lostphone", "enrolled again", |u| {
                condition(u, "MfaEnrolled")["status"] == "True"
            })
            .await?;
            ensure!(
                user.data["status"]["requiredActions"].as_array().is_none_or(Vec::is_empty),
                "{}",
                user.data["status"]
            );
            let signed_in =
                login(json!({"email": address, "password": PASSWORD, "code": next_code(&new)?})).await?;
            ensure!(signed_in.0 == 200, "the new authenticator did not sign in: {signed_in:?}");
            let old_code = TotpSecret::from_base32(&old)?.code_at(now())?;
            let refused = login(json!({"email": address, "password": PASSWORD, "code": old_code})).await?;
            ensure!(refused.0 == 401, "the old authenticator still signs in: {refused:?}");
            wait_for(&ns.raw::<MfaReset>(), "lostphone-reset", "Reenrolled", |r| {
                condition(r, "Ready")["reason"] == "Reenrolled"
            })
            .await?;
            let (status, body) = get(&format!("/api/v1/mfa-resets/{token}")).await?;
            ensure!(status == 410 && body["error"] == "used", "{status} {body}");

            // The same object applied again does nothing; a new object resets again.
            ns.apply(reset("lostphone-reset", "lostphone", "lost phone", "Email")).await?;
            let reapplied = ns.raw::<MfaReset>().get("lostphone-reset").await?;
            ensure!(completed(&reapplied), "{}", reapplied.data["status"]);
            // Even with its status lost, the reset finds itself recorded in the Secret and does
            // not clear the new authenticator.
            let forget = json!({"status": {"phase": null, "completedAt": null, "expiresAt": null}});
            ns.raw::<MfaReset>()
                .patch_status("lostphone-reset", &Default::default(), &kube::api::Patch::Merge(&forget))
                .await?;
            wait_for(&ns.raw::<MfaReset>(), "lostphone-reset", "Completed again", completed).await?;
            let user = ns.raw::<User>().get("lostphone").await?;
            ensure!(
                condition(&user, "MfaEnrolled")["status"] == "True",
                "the same reset cleared twice: {}",
                user.data["status"]
            );
            ns.raw::<MfaReset>().delete("lostphone-reset", &DeleteParams::default()).await?;
            wait_gone(&ns, "lostphone-reset").await?;
            ns.apply(reset("lostphone-reset", "lostphone", "lost phone, again", "Email")).await?;
            wait_for(&ns.raw::<User>(), "lostphone", "reset by the new object", |u| {
                condition(u, "MfaEnrolled")["reason"] == "ResetRequested"
            })
            .await?;
            Ok(())
        }),
        trial("resets::edge_cases_each_have_a_clear_status", |ns| async move {
            // A reset applied before its User (as Git may deliver them) waits for it.
            ns.apply(reset("latecomer-reset", "latecomer", "lost phone", "Email")).await?;
            let address = email("latecomer", &ns);
            let manifest = json!({"email": address, "invite": {"policy": "Manual"}});
            ns.apply(user_manifest("latecomer", manifest, json!({}))).await?;
            let waited = wait_for(&ns.raw::<MfaReset>(), "latecomer-reset", "Completed", completed).await?;
            ensure!(condition(&waited, "Ready")["reason"] == "NothingToReset", "{}", waited.data["status"]);

            ns.apply(reset("ghost-reset", "ghost", "lost phone", "Email")).await?;
            let failed =
                wait_for(&ns.raw::<MfaReset>(), "ghost-reset", "Failed", |r| phase_of(r) == "Failed").await?;
            ensure!(condition(&failed, "Ready")["reason"] == "UserNotFound", "{}", failed.data["status"]);
            ensure!(condition(&failed, "Stalled")["status"] == "True", "{}", failed.data["status"]);

            onboard(&ns, "parked", json!({})).await?;
            set_state(&ns, "parked", "Inactive").await?;
            wait_for(&ns.raw::<User>(), "parked", "INACTIVE", |u| phase(u) == "INACTIVE").await?;
            ns.apply(reset("parked-reset", "parked", "lost phone", "Email")).await?;
            let failed =
                wait_for(&ns.raw::<MfaReset>(), "parked-reset", "Failed", |r| phase_of(r) == "Failed")
                    .await?;
            ensure!(condition(&failed, "Ready")["reason"] == "UserInactive", "{}", failed.data["status"]);
            let user = ns.raw::<User>().get("parked").await?;
            ensure!(condition(&user, "MfaEnrolled")["status"] == "True", "an inactive user was reset");

            let address = email("fresh", &ns);
            ns.apply(user_manifest(
                "fresh",
                json!({"email": address, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            ns.apply(reset("fresh-reset", "fresh", "never enrolled", "Email")).await?;
            let nothing = wait_for(&ns.raw::<MfaReset>(), "fresh-reset", "Completed", completed).await?;
            ensure!(condition(&nothing, "Ready")["reason"] == "NothingToReset", "{}", nothing.data["status"]);
            ensure!(messages_to(&address).await?.is_empty(), "an email for a reset that reset nothing");
            Ok(())
        }),
        trial(
            "resets::a_newer_reset_supersedes_an_open_one_and_link_delivery_still_tells_the_person",
            |ns| async move {
                onboard(&ns, "twice", json!({})).await?;
                let address = email("twice", &ns);
                ns.apply(reset("twice-first", "twice", "lost phone", "Link")).await?;
                wait_for(&ns.raw::<MfaReset>(), "twice-first", "Completed", completed).await?;
                let first = link_secret_token(&ns, "twice-first", "/mfa-reset/").await?;
                let notices = messages_to(&address).await?;
                ensure!(notices.len() == 1, "expected one notice for Link delivery, found {}", notices.len());
                let notice = message_text(&notices[0]).await?;
                ensure!(
                    notice.contains("reset") && !notice.contains("/mfa-reset/"),
                    "the notice carries the link: {notice}"
                );

                ns.apply(reset("twice-second", "twice", "lost phone again", "Link")).await?;
                wait_for(&ns.raw::<MfaReset>(), "twice-second", "Completed", completed).await?;
                let second = link_secret_token(&ns, "twice-second", "/mfa-reset/").await?;
                wait_for(&ns.raw::<MfaReset>(), "twice-first", "Superseded", |r| {
                    condition(r, "Ready")["reason"] == "Superseded"
                })
                .await?;
                let (status, body) = get(&format!("/api/v1/mfa-resets/{first}")).await?;
                ensure!(status == 410 && body["error"] == "replaced", "{status} {body}");
                let (status, body) = get(&format!("/api/v1/mfa-resets/{second}")).await?;
                ensure!(status == 200, "the newer link does not work: {status} {body}");
                Ok(())
            },
        ),
        trial("resets::a_second_factor_required_later_is_enrolled_through_a_reset", |ns| async move {
            // Onboarded without a second factor; then one is required. No invite may set
            // credentials for an onboarded person, so the reset's link is the way in.
            onboard(&ns, "adopter", json!({"mfa": {"required": false}})).await?;
            let address = email("adopter", &ns);
            let required = json!({"spec": {"mfa": {"required": true}}});
            ns.raw::<User>()
                .patch("adopter", &Default::default(), &kube::api::Patch::Merge(&required))
                .await?;
            wait_for(&ns.raw::<User>(), "adopter", "asked for a second factor", |u| {
                u.data["status"]["requiredActions"] == json!(["CONFIGURE_TOTP"])
            })
            .await?;
            ns.apply(reset("adopter-reset", "adopter", "add a second factor", "Email")).await?;
            let done = wait_for(&ns.raw::<MfaReset>(), "adopter-reset", "Completed", completed).await?;
            ensure!(condition(&done, "Ready")["reason"] == "Reset", "{}", done.data["status"]);
            let token = emailed_reset_token(&address).await?;
            let (status, body) =
                post(&format!("/api/v1/mfa-resets/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            let secret = body["totp"]["secret"].as_str().context("no secret")?.to_owned();
            let (status, body) =
                post(&format!("/api/v1/mfa-resets/{token}/totp"), json!({"code": code(&secret)?})).await?;
            ensure!(status == 200, "{status} {body}");
            wait_for(&ns.raw::<User>(), "adopter", "ACTIVE with a second factor", |u| {
                phase(u) == "ACTIVE" && condition(u, "MfaEnrolled")["status"] == "True"
            })
            .await?;
            let signed_in =
                login(json!({"email": address, "password": PASSWORD, "code": next_code(&secret)?})).await?;
            ensure!(signed_in.0 == 200, "{signed_in:?}");
            Ok(())
        }),
        trial("resets::a_finished_reset_deletes_itself_after_its_ttl", |ns| async move {
            let address = email("shortlived", &ns);
            ns.apply(user_manifest(
                "shortlived",
                json!({"email": address, "invite": {"policy": "Manual"}}),
                json!({}),
            ))
            .await?;
            let mut manifest = reset("shortlived-reset", "shortlived", "cleanup", "Email");
            manifest["spec"]["ttlSecondsAfterFinished"] = json!(2);
            ns.apply(manifest).await?;
            wait_for(&ns.raw::<MfaReset>(), "shortlived-reset", "Completed", completed).await?;
            wait_gone(&ns, "shortlived-reset").await
        }),
    ]
}

fn reset(name: &str, user: &str, reason: &str, delivery: &str) -> Value {
    json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": name},
        "spec": {"userRef": {"name": user}, "reason": reason, "delivery": delivery},
    })
}

fn phase_of(reset: &DynamicObject) -> &str {
    reset.data["status"]["phase"].as_str().unwrap_or_default()
}

fn completed(reset: &DynamicObject) -> bool {
    phase_of(reset) == "Completed"
}

fn now() -> u64 {
    u64::try_from(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap_or(0)
}

async fn wait_gone(ns: &Ns, name: &str) -> anyhow::Result<()> {
    let api = ns.raw::<MfaReset>();
    poll_until(&format!("{name} deleted"), || async { Ok(api.get_opt(name).await?.is_none()) }).await
}

/// The token of the re-enrolment link in the newest email to `address`.
async fn emailed_reset_token(address: &str) -> anyhow::Result<String> {
    for message in messages_to(address).await? {
        if let Some(token) = token_after(&message_text(&message).await?, "/mfa-reset/") {
            return Ok(token);
        }
    }
    anyhow::bail!("no re-enrolment link emailed to {address}")
}

/// The token in the admin-only link Secret of the reset `reset`, whose links start with `path`.
pub async fn link_secret_token(ns: &Ns, reset: &str, path: &str) -> anyhow::Result<String> {
    let secret = ns.api::<Secret>().get(&format!("{reset}-link")).await?;
    let url = String::from_utf8(secret.data.unwrap_or_default().get("url").context("no url")?.0.clone())?;
    token_after(&url, path).context("no token in the link")
}

/// The note of the newest Event with `reason` about the object `name`.
async fn event_about(ns: &Ns, name: &str, reason: &str) -> anyhow::Result<String> {
    let events = ns.api::<Event>().list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .next_back()
        .unwrap_or_default())
}
