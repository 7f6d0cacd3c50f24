//! The portal's JSON API against the shared operator: every route, valid and spent links,
//! the password policy, TOTP codes wrong and replayed, sign-in with lockout and
//! reactivation, two requests racing on one link, and the guards (headers, form tokens,
//! content types, body size, rate limit).

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use roster::credentials::TotpSecret;
use serde_json::{Value, json};

use crate::harness::{DEADLINE, Ns, Operator, POLL_INTERVAL, condition, shared, trial, wait_for};
use crate::invites::{invite, phase_of};
use crate::lifecycle::{email, phase, set_state, user_manifest};

/// The password the portal tests set; the log check looks for it.
pub const PASSWORD: &str = "Lantern-Orbit-Pickle-7731";

pub fn trials() -> Vec<Trial> {
    vec![
        trial("portal::onboarding_over_the_api_activates_the_user", |ns| async move {
            let token = linked_user(&ns, "onboard", json!({})).await?;
            let found = expect_link(&token, 200, "").await?;
            ensure!(
                found["step"] == "password" && found["user"]["email"] == email("onboard", &ns),
                "{found}"
            );

            let (status, body) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": "short"})).await?;
            ensure!(status == 422 && body["error"] == "passwordPolicy", "{status} {body}");
            ensure!(body["message"].as_str().unwrap_or_default().contains("at least 12"), "{body}");
            let (status, body) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": "password1234"})).await?;
            ensure!(
                status == 422 && body["message"].as_str().unwrap_or_default().contains("common"),
                "{body}"
            );
            let (status, body) =
                post(&format!("/api/v1/invites/{token}/totp"), json!({"code": "123456"})).await?;
            ensure!(
                status == 409 && body["error"] == "passwordNotSet",
                "TOTP before the password: {status} {body}"
            );

            let (status, body) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200, "{status} {body}");
            let secret = body["totp"]["secret"].as_str().context("no TOTP secret")?.to_owned();
            let uri = body["totp"]["otpauthUri"].as_str().unwrap_or_default();
            ensure!(uri.starts_with("otpauth://totp/") && uri.contains(&secret), "{uri}");
            ensure!(
                expect_link(&token, 200, "").await?["step"] == "totp",
                "a reload does not resume at TOTP"
            );
            let user = wait_for(&ns.raw::<User>(), "onboard", "PENDING with a password", |u| {
                condition(u, "PasswordSet")["status"] == "True"
            })
            .await?;
            ensure!(phase(&user) == "PENDING", "{}", user.data["status"]);

            let (status, body) =
                post(&format!("/api/v1/invites/{token}/totp"), json!({"code": wrong_code(&secret)?})).await?;
            ensure!(status == 422 && body["error"] == "invalidCode", "{status} {body}");
            let (status, body) =
                post(&format!("/api/v1/invites/{token}/totp"), json!({"code": code(&secret)?})).await?;
            ensure!(status == 200 && body["phase"] == "ACTIVE", "{status} {body}");

            let user = wait_for(&ns.raw::<User>(), "onboard", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
            ensure!(condition(&user, "MfaEnrolled")["status"] == "True", "{}", user.data["status"]);
            ensure!(
                condition(&user, "EmailVerified")["status"] == "False",
                "a link an admin handed over does not prove the mailbox: {}",
                user.data["status"]
            );
            let invite = wait_for(&ns.api::<UserInvite>(), "onboard-invite", "Accepted", |i| {
                phase_of(i) == "Accepted"
            })
            .await?;
            ensure!(invite.status.and_then(|s| s.accepted_at).is_some(), "no acceptedAt");
            expect_link(&token, 410, "used").await?;
            let (status, _) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 410, "a spent link accepted a password: {status}");
            Ok(())
        }),
        trial("portal::without_mfa_the_password_completes_onboarding", |ns| async move {
            let token = linked_user(&ns, "pwonly", json!({"mfa": {"required": false}})).await?;
            let (status, body) =
                post(&format!("/api/v1/invites/{token}/accept"), json!({"password": PASSWORD})).await?;
            ensure!(status == 200 && body["totp"].is_null() && body["phase"] == "ACTIVE", "{status} {body}");
            wait_for(&ns.raw::<User>(), "pwonly", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
            wait_for(&ns.api::<UserInvite>(), "pwonly-invite", "Accepted", |i| phase_of(i) == "Accepted")
                .await?;
            Ok(())
        }),
        trial("portal::unknown_expired_replaced_and_revoked_links", |ns| async move {
            expect_link("no-such-token-at-all", 404, "unknown").await?;
            let (status, _) =
                post("/api/v1/invites/no-such-token/accept", json!({"password": PASSWORD})).await?;
            ensure!(status == 404, "accept on an unknown link: {status}");

            let old = linked_user(&ns, "resent", json!({})).await?;
            let invites = ns.api::<UserInvite>();
            let bump = json!({"spec": {"resend": 1}});
            invites.patch("resent-invite", &Default::default(), &kube::api::Patch::Merge(&bump)).await?;
            wait_for(&invites, "resent-invite", "resent", |i| {
                phase_of(i) == "Sent" && i.status.as_ref().and_then(|s| s.observed_resend) == Some(1)
            })
            .await?;
            let new = link_token(&ns, "resent-invite").await?;
            ensure!(new != old, "the resend kept the token");
            expect_link(&old, 410, "replaced").await?;
            expect_link(&new, 200, "").await?;

            let token = linked_user(&ns, "dropped", json!({})).await?;
            set_state(&ns, "dropped", "Inactive").await?;
            wait_for(&invites, "dropped-invite", "Revoked", |i| phase_of(i) == "Revoked").await?;
            expect_link(&token, 410, "revoked").await?;
            Ok(())
        }),
        trial("portal::two_accepts_racing_on_one_link_have_one_winner", |ns| async move {
            let token = linked_user(&ns, "racer", json!({})).await?;
            let path = format!("/api/v1/invites/{token}/accept");
            let (a, b) = futures::join!(
                post(&path, json!({"password": PASSWORD})),
                post(&path, json!({"password": "Another-Phrase-Entirely-42"}))
            );
            let mut statuses = [a?.0, b?.0];
            statuses.sort_unstable();
            ensure!(statuses == [200, 409], "expected one 200 and one 409, got {statuses:?}");
            Ok(())
        }),
        trial("portal::sign_in_with_password_and_code", |ns| async move {
            let secret = onboard(&ns, "signer", json!({})).await?;
            let address = email("signer", &ns);
            // The enrolment used the current step: the next one is the first a sign-in may use.
            let code = next_code(&secret)?;

            // Deactivated: only right credentials learn so; a refusal spends no code.
            set_state(&ns, "signer", "Inactive").await?;
            wait_for(&ns.raw::<User>(), "signer", "INACTIVE", |u| phase(u) == "INACTIVE").await?;
            let (status, body) = login(json!({"email": address, "password": PASSWORD, "code": code})).await?;
            ensure!(status == 403 && body["error"] == "accountInactive", "{status} {body}");
            let inactive_wrong =
                login(json!({"email": address, "password": "Not-The-Password-123", "code": code})).await?;
            let unknown_now =
                login(json!({"email": "nobody@example.com", "password": "Not-The-Password-123"})).await?;
            ensure!(
                inactive_wrong.0 == 401 && inactive_wrong == unknown_now,
                "an inactive account answers a wrong password differently: {inactive_wrong:?} vs {unknown_now:?}"
            );
            set_state(&ns, "signer", "Active").await?;
            wait_for(&ns.raw::<User>(), "signer", "ACTIVE", |u| phase(u) == "ACTIVE").await?;

            let (status, body) =
                login(json!({"email": address.to_uppercase(), "password": PASSWORD, "code": code})).await?;
            ensure!(
                status == 200 && body["email"] == address && body["username"] == "signer",
                "{status} {body}"
            );
            ensure!(body.get("password").is_none() && !body.to_string().contains(&secret), "{body}");
            wait_for(&ns.raw::<User>(), "signer", "lastLoginAt recorded", |u| {
                u.data["status"]["lastLoginAt"].is_string()
            })
            .await?;

            let denied = login(json!({"email": address, "password": PASSWORD, "code": code})).await?;
            ensure!(denied.0 == 401, "a replayed code signed in: {denied:?}");
            let wrong_password =
                login(json!({"username": "signer", "password": "Not-The-Password-123", "code": code}))
                    .await?;
            let unknown =
                login(json!({"username": "nobody-at-all", "password": PASSWORD, "code": code})).await?;
            let no_code = login(json!({"email": address, "password": PASSWORD})).await?;
            for answer in [&wrong_password, &unknown, &no_code] {
                ensure!(*answer == denied, "not the one generic 401: {answer:?} vs {denied:?}");
            }
            Ok(())
        }),
        trial("portal::failed_sign_ins_lock_until_reactivated", |ns| async move {
            onboard(&ns, "lockable", json!({"mfa": {"required": false}})).await?;
            let username = json!({"username": "lockable", "password": PASSWORD});
            let first = login(username.clone()).await?;
            ensure!(first.0 == 200, "the right password did not sign in: {first:?}");
            for attempt in 1..=5 {
                let (status, _) =
                    login(json!({"username": "lockable", "password": format!("Wrong-Guess-{attempt}-xyz")}))
                        .await?;
                ensure!(status == 401, "failure {attempt}: {status}");
            }
            let user = wait_for(&ns.raw::<User>(), "lockable", "locked out", |u| {
                phase(u) == "INACTIVE" && condition(u, "Ready")["reason"] == "LockedOut"
            })
            .await?;
            ensure!(user.data["status"]["failedLoginAttempts"] == 5, "{}", user.data["status"]);
            let (status, _) = login(username.clone()).await?;
            ensure!(
                status == 401,
                "a locked password-only user signed in, or had the right password confirmed: {status}"
            );

            set_state(&ns, "lockable", "Inactive").await?;
            wait_for(&ns.raw::<User>(), "lockable", "deactivated", |u| {
                u.data["status"]["failedLoginAttempts"] == 0
            })
            .await?;
            set_state(&ns, "lockable", "Active").await?;
            wait_for(&ns.raw::<User>(), "lockable", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
            let (status, body) = login(username).await?;
            ensure!(status == 200, "reactivated, still refused: {status} {body}");
            let metrics = reqwest::get(format!("{}/metrics", shared().operator_url)).await?.text().await?;
            for family in [
                "roster_portal_lockouts_total ",
                "roster_portal_logins_total{outcome=\"success\"}",
                "roster_portal_logins_total{outcome=\"denied\"}",
                "roster_portal_onboardings_completed_total ",
            ] {
                ensure!(metrics.contains(family), "no {family} in the metrics:\n{metrics}");
            }
            Ok(())
        }),
        trial("portal::guards_headers_forms_types_and_sizes", |ns| async move {
            let token = linked_user(&ns, "guarded", json!({})).await?;
            let client = reqwest::Client::new();
            let page = client.get(format!("{}/invite/{token}", shared().portal_url)).send().await?;
            ensure!(page.status() == 200, "{}", page.status());
            let headers = page.headers().clone();
            let header =
                |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            ensure!(header("cache-control") == "no-store", "{headers:?}");
            ensure!(header("referrer-policy") == "no-referrer", "{headers:?}");
            ensure!(header("x-frame-options") == "DENY", "{headers:?}");
            let csp = header("content-security-policy");
            ensure!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
            let cookie = header("set-cookie");
            ensure!(cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"), "{cookie}");
            let html = page.text().await?;
            ensure!(html.contains("Example Corp") && html.contains("name=\"form_token\""), "{html}");

            let forged = client
                .post(format!("{}/invite/{token}", shared().portal_url))
                .form(&[("step", "password"), ("password", PASSWORD), ("password_confirm", PASSWORD)])
                .send()
                .await?;
            ensure!(forged.status() == 403, "a form without its token was taken: {}", forged.status());
            let as_form = client
                .post(format!("{}/api/v1/invites/{token}/accept", shared().portal_url))
                .form(&[("password", PASSWORD)])
                .send()
                .await?;
            ensure!(as_form.status() == 415, "the API took a form post: {}", as_form.status());
            let huge = client
                .post(format!("{}/api/v1/login", shared().portal_url))
                .json(&json!({"username": "x", "password": "p".repeat(64 * 1024)}))
                .send()
                .await?;
            ensure!(huge.status() == 413, "a 64 KiB body was read: {}", huge.status());
            expect_link(&token, 200, "").await?;
            let nothing = client.get(format!("{}/no/such/page", shared().portal_url)).send().await?;
            ensure!(nothing.status() == 404, "{}", nothing.status());
            Ok(())
        }),
        trial("portal::too_many_requests_from_one_address_get_429_per_budget", |ns| async move {
            // An operator of its own with a low limit, watching only this (empty) namespace.
            let dir = shared().work_dir.join(&ns.name);
            std::fs::create_dir_all(&dir)?;
            let operator = Operator::start(
                &shared().kubeconfig,
                &dir,
                "operator-rate-limited",
                &["--portal-rate-limit=5", "--oidc-rate-limit=3", &format!("--watch-namespaces={}", ns.name)],
            )
            .await?;
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            let mut last = None;
            // A wrong method (405, with a message) counts like any other request.
            for n in 0..7 {
                let response = if n % 2 == 1 {
                    client.delete(format!("{}/api/v1/login", operator.portal_url)).send().await?
                } else {
                    client.get(format!("{}/api/v1/invites/x", operator.portal_url)).send().await?
                };
                statuses.push(response.status().as_u16());
                last = Some(response);
            }
            ensure!(statuses == [404, 405, 404, 405, 404, 429, 429], "{statuses:?}");
            let refused = last.context("no answer")?;
            let header =
                |name: &str| refused.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
            ensure!(
                header("cache-control") == "no-store" && header("x-frame-options") == "DENY",
                "429 without the security headers: {:?}",
                refused.headers()
            );
            ensure!(header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1), "{:?}", refused.headers());

            // The issuer's sign-in page counts against the same budget; the endpoints
            // applications' servers call have one of their own.
            let page = client.get(format!("{}/authorize", operator.portal_url)).send().await?;
            ensure!(page.status() == 429, "the sign-in page answered {}", page.status());
            let mut statuses = Vec::new();
            for n in 0..4 {
                let url = format!("{}/.well-known/openid-configuration", operator.portal_url);
                let request = if n == 1 { client.post(url) } else { client.get(url) };
                statuses.push(request.send().await?.status().as_u16());
            }
            ensure!(statuses == [200, 405, 200, 429], "discovery: {statuses:?}");

            // "Forgot your password?" has a budget of its own, per address, within the
            // portal's: a fresh operator, so that the portal's is not spent.
            drop(operator);
            let operator = Operator::start(
                &shared().kubeconfig,
                &dir,
                "operator-recovery-limited",
                &["--recovery-rate-limit=2", &format!("--watch-namespaces={}", ns.name)],
            )
            .await?;
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let url = format!("{}/api/v1/password-resets", operator.portal_url);
                let answer =
                    client.post(url).json(&json!({"identifier": "nobody@example.com"})).send().await?;
                statuses.push(answer.status().as_u16());
            }
            ensure!(statuses == [202, 202, 429], "recovery requests: {statuses:?}");
            Ok(())
        }),
    ]
}

/// A user with a Manual policy and a `Link` invite `<name>-invite`; returns the link's token.
pub async fn linked_user(ns: &Ns, name: &str, spec: Value) -> anyhow::Result<String> {
    let mut full = json!({"email": email(name, ns), "invite": {"policy": "Manual"}});
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(extra.clone());
    }
    ns.apply(user_manifest(name, full, json!({}))).await?;
    let invite_name = format!("{name}-invite");
    ns.apply(invite(&invite_name, json!({"userRef": {"name": name}, "delivery": "Link"}))).await?;
    wait_for(&ns.api::<UserInvite>(), &invite_name, "Sent", |i| phase_of(i) == "Sent").await?;
    link_token(ns, &invite_name).await
}

/// Onboards `name` through the API; returns the TOTP secret (empty without MFA).
pub async fn onboard(ns: &Ns, name: &str, spec: Value) -> anyhow::Result<String> {
    onboard_at(&shared().portal_url, ns, name, spec).await
}

/// [`onboard`] through the portal at `portal` (an operator of the test's own).
pub async fn onboard_at(portal: &str, ns: &Ns, name: &str, spec: Value) -> anyhow::Result<String> {
    let token = linked_user(ns, name, spec).await?;
    let (status, body) =
        post_at(portal, &format!("/api/v1/invites/{token}/accept"), json!({"password": PASSWORD})).await?;
    ensure!(status == 200, "accept: {status} {body}");
    let secret = body["totp"]["secret"].as_str().unwrap_or_default().to_owned();
    if !secret.is_empty() {
        let (status, body) =
            post_at(portal, &format!("/api/v1/invites/{token}/totp"), json!({"code": code(&secret)?}))
                .await?;
        ensure!(status == 200, "totp: {status} {body}");
    }
    wait_for(&ns.raw::<User>(), name, "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    Ok(secret)
}

/// The token in the link Secret of a `Link` invite.
pub async fn link_token(ns: &Ns, invite: &str) -> anyhow::Result<String> {
    let secret = ns.api::<Secret>().get(&format!("{invite}-link")).await?;
    let url = String::from_utf8(secret.data.unwrap_or_default().get("url").context("no url")?.0.clone())?;
    crate::invites::token_in(&url).context("no token in the link")
}

/// Asks the portal about `token` until it answers `status` and, unless empty, the error
/// `code` (its cache follows the API server by a moment); fails at the deadline with the
/// last answer.
pub async fn expect_link(token: &str, status: u16, code: &str) -> anyhow::Result<Value> {
    let path = format!("/api/v1/invites/{token}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let body = loop {
        let (got, body) = get(&path).await?;
        if got == status && (code.is_empty() || body["error"] == code) {
            break body;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "link: expected {status} {code} within {DEADLINE:?}, last answer {got} {body}"
        );
        tokio::time::sleep(POLL_INTERVAL).await; // poll again before the deadline
    };
    if status >= 400 {
        ensure!(!body["message"].as_str().unwrap_or_default().is_empty(), "no message: {body}");
    }
    Ok(body)
}

/// The current TOTP code for a base32 secret.
pub fn code(secret: &str) -> anyhow::Result<String> {
    Ok(TotpSecret::from_base32(secret)?.code_at(now())?)
}

/// The code of the next time step (accepted: one step of clock skew is allowed), unused
/// even when the current step's code was just used.
pub fn next_code(secret: &str) -> anyhow::Result<String> {
    Ok(TotpSecret::from_base32(secret)?.code_at(now() + 30)?)
}

/// A code that is wrong now (not valid in any accepted step).
pub fn wrong_code(secret: &str) -> anyhow::Result<String> {
    let parsed = TotpSecret::from_base32(secret)?;
    let valid: Vec<String> =
        [now() - 30, now(), now() + 30].iter().map(|t| parsed.code_at(*t)).collect::<Result<_, _>>()?;
    Ok((0..).map(|n| format!("{n:06}")).find(|c| !valid.contains(c)).unwrap_or_default())
}

fn now() -> u64 {
    u64::try_from(Timestamp::now().as_second()).unwrap_or(0)
}

pub async fn get(path: &str) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::get(format!("{}{path}", shared().portal_url)).await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
}

pub async fn post(path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    post_at(&shared().portal_url, path, body).await
}

/// POSTs `body` as JSON to `path` on the portal at `portal`.
pub async fn post_at(portal: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new().post(format!("{portal}{path}")).json(&body).send().await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
}

pub async fn login(body: Value) -> anyhow::Result<(u16, Value)> {
    post("/api/v1/login", body).await
}
