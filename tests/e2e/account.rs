//! The account page (`/account` under the issuer) against the real control plane, Mailpit and
//! headless Chromium, and its JSON API: a person who enrolled TOTP and signed in to an
//! application changes their password and replaces their authenticator, with a wrong current
//! password or code refused; the other sessions end and a relying party's refresh token stops
//! working; another person's session cannot be named; and a session unused for the idle
//! timeout ends while each use moves it on.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use fantoccini::{Client, Locator};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use libtest_mimic::Trial;
use openidconnect::OAuth2TokenResponse;
use roster::api::OidcClient;
use serde_json::{Value, json};

use crate::browser::{ChromeDriver, screenshot};
use crate::harness::{ISSUER, Ns, Operator, condition, poll_until, shared, trial, wait_for};
use crate::lifecycle::{email, enrolled};
use crate::oidc::{SignIn, hidden_fields, note, refresh, registered, set_cookie};
use crate::portal::{PASSWORD, code, login, next_code, onboard, wrong_code};
use crate::recovery::{notice, step_now};

/// The password each person changes to (noted for the log check).
const NEW_PASSWORD: &str = "Meadow-Copper-Lantern-4420";
/// The session cookie over https (the issuer under test is https).
const SESSION_COOKIE: &str = "__Host-roster_session";

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "account::in_chromium_a_person_changes_password_and_authenticator_and_signs_out",
            |ns| async move {
                note(NEW_PASSWORD);
                let dir = shared().work_dir.join("account-browser");
                std::fs::create_dir_all(&dir)?;
                let driver = ChromeDriver::start(&dir).await?;
                let browser = driver.session(&dir).await?;
                let outcome = in_browser(&ns, &browser, &dir).await;
                let _ = browser.close().await;
                outcome
            },
        ),
        trial(
            "account::the_json_api_refuses_wrong_proofs_and_ends_sessions_and_refresh_tokens",
            |ns| async move {
                note(NEW_PASSWORD);
                over_the_api(&ns).await
            },
        ),
        trial(
            "account::an_unused_session_ends_at_its_idle_timeout_and_each_use_moves_it_on",
            |ns| async move { idle_timeout(&ns).await },
        ),
    ]
}

async fn in_browser(ns: &Ns, browser: &Client, dir: &Path) -> anyhow::Result<()> {
    let totp = onboard(ns, "avery", json!({"givenName": "Avery", "groups": ["ops"]})).await?;
    let address = email("avery", ns);
    // Signed in to an application elsewhere, which holds a refresh token.
    let mut used = step_now();
    let (client, _) = registered(ns, "notes", json!({})).await?;
    let flow = SignIn::start(&client, &["offline_access"]).await?;
    let answer = flow.page().await?.submit(&address, PASSWORD, &unused_code(&totp, &mut used).await?).await?;
    let tokens = flow.redeem(&client, &answer).await?;
    let refresh_token = tokens.refresh_token().context("no refresh token")?.clone();

    // No session in this browser: the account page asks to sign in first.
    browser.goto(&format!("{}/account", shared().portal_url)).await?;
    browser.wait().for_element(Locator::Css("#identifier")).await?.send_keys(&address).await?;
    browser.find(Locator::Css("#password")).await?.send_keys(PASSWORD).await?;
    browser.find(Locator::Css("#code")).await?.send_keys(&unused_code(&totp, &mut used).await?).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let profile = browser.wait().for_element(Locator::Css("#profile")).await?.text().await?;
    ensure!(profile.contains(&address) && profile.contains("ops") && profile.contains("ACTIVE"), "{profile}");
    let sessions = browser.find_all(Locator::Css("li.session")).await?;
    ensure!(sessions.len() == 2, "{} sessions listed, not this one and the application's", sessions.len());
    let listed = browser.find(Locator::Css("#sessions")).await?.text().await?;
    ensure!(listed.contains(&format!("{}.notes", ns.name)), "the application's session: {listed}");
    screenshot(browser, dir, "1-account").await?;

    // A wrong current password is refused (and listed as a failed attempt).
    let password_form = |current: String, code: String| async move {
        browser.find(Locator::Css("#current-password")).await?.send_keys(&current).await?;
        browser.find(Locator::Css("#password-code")).await?.send_keys(&code).await?;
        browser.find(Locator::Css("#new-password")).await?.send_keys(NEW_PASSWORD).await?;
        browser.find(Locator::Css("#new-password-confirm")).await?.send_keys(NEW_PASSWORD).await?;
        browser.find(Locator::Css("#change-password")).await?.click().await?;
        anyhow::Ok(())
    };
    password_form("Not-My-Password-1234".into(), "000000".into()).await?;
    let error = browser.wait().for_element(Locator::Css("#error")).await?.text().await?;
    ensure!(error.contains("current password or code is not correct"), "{error}");
    ensure!(
        !browser.find_all(Locator::Css("#history li.failed")).await?.is_empty(),
        "no failed attempt listed"
    );

    // The right one, with a code of a later step: changed; the application's session ends.
    password_form(PASSWORD.into(), unused_code(&totp, &mut used).await?).await?;
    let said = browser.wait().for_element(Locator::Css("#notice")).await?.text().await?;
    ensure!(said.contains("Your password was changed"), "{said}");
    ensure!(browser.find_all(Locator::Css("li.session")).await?.len() == 1, "the other session stayed");
    ensure!(refresh(&client, &refresh_token).await.is_err(), "the application's refresh token still works");
    screenshot(browser, dir, "2-password-changed").await?;

    // A new authenticator app: a code from the current one, then the new one's.
    browser
        .find(Locator::Css("#current-code"))
        .await?
        .send_keys(&unused_code(&totp, &mut used).await?)
        .await?;
    browser.find(Locator::Css("#replace-authenticator")).await?.click().await?;
    let shown = browser.wait().for_element(Locator::Css("#totp-secret")).await?.text().await?;
    let new_totp: String = shown.split_whitespace().collect();
    note(&new_totp);
    screenshot(browser, dir, "3-new-authenticator").await?;
    browser.find(Locator::Css("#new-code")).await?.send_keys(&wrong_code(&new_totp)?).await?;
    browser.find(Locator::Css("#confirm-authenticator")).await?.click().await?;
    let error = browser.wait().for_element(Locator::Css("#error")).await?.text().await?;
    ensure!(error.contains("code is wrong"), "{error}");
    browser.find(Locator::Css("#new-code")).await?.send_keys(&code(&new_totp)?).await?;
    browser.find(Locator::Css("#confirm-authenticator")).await?.click().await?;
    let said = browser.wait().for_element(Locator::Css("#notice")).await?.text().await?;
    ensure!(said.contains("new authenticator app is set up"), "{said}");

    // The old app and password no longer sign in; the new ones do.
    let (status, _) =
        login(json!({"email": address, "password": NEW_PASSWORD, "code": next_code(&totp)?})).await?;
    ensure!(status == 401, "the old authenticator still signs in: {status}");
    let (status, _) =
        login(json!({"email": address, "password": PASSWORD, "code": next_code(&new_totp)?})).await?;
    ensure!(status == 401, "the old password still signs in: {status}");
    let (status, body) =
        login(json!({"email": address, "password": NEW_PASSWORD, "code": next_code(&new_totp)?})).await?;
    ensure!(status == 200, "the new password and app: {status} {body}");

    // Signed out everywhere: this browser too.
    browser.find(Locator::Css("#sign-out-everywhere")).await?.click().await?;
    // The sign-in form (the account page had a notice of its own).
    browser.wait().for_element(Locator::Css("#identifier")).await?;
    let said = browser.find(Locator::Css("#notice")).await?.text().await?;
    ensure!(said.contains("You are signed out"), "{said}");
    browser.goto(&format!("{}/account", shared().portal_url)).await?;
    browser.wait().for_element(Locator::Css("#identifier")).await?;
    screenshot(browser, dir, "4-signed-out").await?;

    for event in ["password-changed", "authenticator"] {
        poll_until("the change told by email", || async { Ok(notice(&address, event).await?.is_some()) })
            .await?;
    }
    Ok(())
}

async fn over_the_api(ns: &Ns) -> anyhow::Result<()> {
    let totp = onboard(ns, "blake", json!({})).await?;
    let address = email("blake", ns);
    let (status, body) = account(None, "GET", "", Value::Null).await?;
    ensure!(status == 401 && body["error"] == "signInRequired", "{status} {body}");
    let mut used = step_now();
    let blake = session_cookie(&address, PASSWORD, &unused_code(&totp, &mut used).await?).await?;

    let (client, client_id) = registered(ns, "ledger", json!({})).await?;
    let flow = SignIn::start(&client, &["offline_access"]).await?;
    let answer = flow.page().await?.submit(&address, PASSWORD, &unused_code(&totp, &mut used).await?).await?;
    let refresh_token =
        flow.redeem(&client, &answer).await?.refresh_token().context("no refresh token")?.clone();
    // And through this browser's session, without a form.
    let own = SignIn::start(&client, &["offline_access"]).await?;
    let reused = own.visit(Some(&blake), "").await?;
    let own_refresh =
        own.redeem(&client, &reused).await?.refresh_token().context("no refresh token")?.clone();

    let (status, body) = account(Some(&blake), "GET", "", Value::Null).await?;
    ensure!(status == 200, "{status} {body}");
    ensure!(body["profile"]["email"] == address.as_str() && body["phase"] == "ACTIVE", "{body}");
    ensure!(body["authenticator"] == true, "{body}");
    let sessions = body["sessions"].as_array().context("no sessions")?;
    ensure!(sessions.len() == 2, "{body}");
    ensure!(
        sessions.iter().any(|s| s["current"] == false && s["clients"][0] == client_id.as_str()),
        "the application's session: {body}"
    );
    ensure!(body["recentSignIns"][0]["succeeded"] == true, "{body}");

    // Another site's script is refused, whatever the cookie.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/account/password", shared().portal_url))
        .header("cookie", &blake)
        .header("origin", "https://elsewhere.example.test")
        .json(&json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}))
        .send()
        .await?;
    ensure!(response.status() == 403, "a cross-origin change: {}", response.status());

    // Wrong proofs, and a password the policy refuses.
    let change = |current: &str, code: String, new: &str| json!({"currentPassword": current, "code": code, "newPassword": new});
    let (status, body) = account(
        Some(&blake),
        "POST",
        "/password",
        change("Not-My-Password-1234", next_code(&totp)?, NEW_PASSWORD),
    )
    .await?;
    ensure!(status == 403 && body["error"] == "wrongProof", "{status} {body}");
    let (status, body) =
        account(Some(&blake), "POST", "/password", change(PASSWORD, wrong_code(&totp)?, NEW_PASSWORD))
            .await?;
    ensure!(
        status == 403 && body["error"] == "wrongProof",
        "the same answer for a wrong code: {status} {body}"
    );
    let (status, body) =
        account(Some(&blake), "POST", "/password", change(PASSWORD, next_code(&totp)?, "short")).await?;
    ensure!(status == 422 && body["error"] == "passwordPolicy", "{status} {body}");
    let (_, body) = account(Some(&blake), "GET", "", Value::Null).await?;
    let failed =
        body["recentSignIns"].as_array().into_iter().flatten().filter(|a| a["succeeded"] == false).count();
    ensure!(failed == 2, "{failed} failed attempts listed: {body}");

    // Changed: this session stays, the application's ends with its refresh token.
    let proof = change(PASSWORD, unused_code(&totp, &mut used).await?, NEW_PASSWORD);
    let (status, body) = account(Some(&blake), "POST", "/password", proof).await?;
    ensure!(status == 204, "{status} {body}");
    ensure!(refresh(&client, &refresh_token).await.is_err(), "the application's refresh token still works");
    // The grant made in this session before the change ends alone; the session stays, and the
    // application signs in again through it without a form.
    ensure!(refresh(&client, &own_refresh).await.is_err(), "a grant from before the change still refreshes");
    let (status, body) = account(Some(&blake), "GET", "", Value::Null).await?;
    ensure!(status == 200 && body["sessions"].as_array().map(Vec::len) == Some(1), "{status} {body}");
    let again = SignIn::start(&client, &[]).await?;
    let answer = again.visit(Some(&blake), "").await?;
    again.redeem(&client, &answer).await.context("signing in again through the kept session")?;

    // A new authenticator: wrong code refused, the right one confirms it.
    let proof = json!({"code": unused_code(&totp, &mut used).await?});
    let (status, offer) = account(Some(&blake), "POST", "/authenticator", proof).await?;
    ensure!(status == 200, "{status} {offer}");
    let new_totp = offer["secret"].as_str().context("no secret")?.to_owned();
    note(&new_totp);
    ensure!(offer["otpauthUri"].as_str().is_some_and(|u| u.starts_with("otpauth://totp/")), "{offer}");
    let (status, body) =
        account(Some(&blake), "POST", "/authenticator/confirm", json!({"code": wrong_code(&new_totp)?}))
            .await?;
    ensure!(status == 403 && body["error"] == "wrongCode", "{status} {body}");
    let (status, body) =
        account(Some(&blake), "POST", "/authenticator/confirm", json!({"code": code(&new_totp)?})).await?;
    ensure!(status == 204, "{status} {body}");
    let (status, _) =
        login(json!({"email": address, "password": NEW_PASSWORD, "code": next_code(&totp)?})).await?;
    ensure!(status == 401, "the old authenticator still signs in: {status}");

    // Another person's session cannot be named: it is not found and keeps working.
    let casey_address = enrolled(ns, "casey", json!({"mfa": {"required": false}}), None).await?;
    let casey = session_cookie(&casey_address, PASSWORD, "").await?;
    let (_, body) = account(Some(&casey), "GET", "", Value::Null).await?;
    let casey_session = body["sessions"][0]["id"].as_str().context("casey has no session")?.to_owned();
    let (status, body) =
        account(Some(&blake), "DELETE", &format!("/sessions/{casey_session}"), Value::Null).await?;
    ensure!(status == 404 && body["error"] == "sessionNotFound", "{status} {body}");
    let (status, _) = account(Some(&casey), "GET", "", Value::Null).await?;
    ensure!(status == 200, "casey's session was ended by blake: {status}");
    // A cookie that joins one person's session locator to the other's secret opens neither
    // account, and spoils neither session.
    for spliced in spliced_pair(&casey, &blake)? {
        let (status, body) = account(Some(&spliced), "GET", "", Value::Null).await?;
        ensure!(status == 401 && body["error"] == "signInRequired", "a spliced cookie: {status} {body}");
    }
    for cookie in [&casey, &blake] {
        ensure!(
            account(Some(cookie), "GET", "", Value::Null).await?.0 == 200,
            "a session spoilt by a splice"
        );
    }

    // Signed out everywhere: the cookie no longer opens the account.
    let (status, body) = account(Some(&blake), "DELETE", "/sessions", Value::Null).await?;
    ensure!(status == 204, "{status} {body}");
    let (status, _) = account(Some(&blake), "GET", "", Value::Null).await?;
    ensure!(status == 401, "signed out everywhere, yet {status}");
    Ok(())
}

async fn idle_timeout(ns: &Ns) -> anyhow::Result<()> {
    // An operator of its own for this namespace, with a short idle timeout.
    let dir = shared().work_dir.join(&ns.name);
    std::fs::create_dir_all(&dir)?;
    let watch = format!("--watch-namespaces={}", ns.name);
    let operator =
        Operator::start(&shared().kubeconfig, &dir, "operator-idle", &[&watch, "--session-idle-timeout=10s"])
            .await?;
    let address = enrolled(ns, "dana", json!({"mfa": {"required": false}}), None).await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "cli"},
        "spec": {"public": true, "redirectUris": ["http://127.0.0.1/callback"]},
    }))
    .await?;
    wait_for(&ns.raw::<OidcClient>(), "cli", "Ready", |c| condition(c, "Ready")["status"] == "True").await?;
    let client_id = format!("{}.cli", ns.name);
    let portal = operator.portal_url.clone();
    let tokens =
        crate::kubernetes::tokens_for(&portal, ISSUER, &client_id, &address, "openid offline_access")
            .await?
            .context("the sign-in was refused")?;
    let mut refresh_token = tokens["refresh_token"].as_str().context("no refresh token")?.to_owned();
    let first = idle_until(ns).await?.context("no session")?;

    // Used every second, the session outlives its first idle deadline.
    let mut pace = tokio::time::interval(Duration::from_secs(1));
    while Timestamp::now() < first + Duration::from_secs(3) {
        pace.tick().await;
        refresh_token =
            refreshed(&portal, &client_id, &refresh_token).await?.context("refused while in use")?;
    }
    let moved = idle_until(ns).await?.context("the session in use ended")?;
    ensure!(moved > first, "the idle deadline did not move: {first} then {moved}");

    // Unused, it ends at its idle deadline, and the refresh token with it.
    poll_until("the idle session removed", || async { Ok(idle_until(ns).await?.is_none()) }).await?;
    ensure!(Timestamp::now() >= moved, "removed before its idle deadline {moved}");
    ensure!(
        refreshed(&portal, &client_id, &refresh_token).await?.is_none(),
        "refreshed after the idle timeout"
    );
    Ok(())
}

/// A code of a step after `used`, the last one spent (then this one), once there is one.
async fn unused_code(secret: &str, used: &mut i64) -> anyhow::Result<String> {
    let after = *used;
    poll_until("a TOTP step after the spent one", || async move { Ok(step_now() >= after) }).await?;
    let next = Timestamp::now().as_second() + 30;
    *used = next / 30;
    Ok(roster::credentials::TotpSecret::from_base32(secret)?.code_at(u64::try_from(next)?)?)
}

/// The idle deadline of the namespace's one sign-in session, if there is one.
async fn idle_until(ns: &Ns) -> anyhow::Result<Option<Timestamp>> {
    let secrets = ns.api::<Secret>().list(&ListParams::default()).await?;
    let mut sessions = secrets.items.iter().filter(|s| s.type_.as_deref() == Some("roster.dev/oidc-session"));
    let Some(session) = sessions.next() else { return Ok(None) };
    let value = session.data.as_ref().and_then(|d| d.get("idleUntil")).context("no idleUntil")?;
    Ok(Some(String::from_utf8(value.0.clone())?.parse()?))
}

/// A refresh at `portal`: the new refresh token, or `None` when refused.
async fn refreshed(portal: &str, client_id: &str, token: &str) -> anyhow::Result<Option<String>> {
    let response = reqwest::Client::new()
        .post(format!("{portal}/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client_id)])
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status == 400 && body["error"] == "invalid_grant" {
        return Ok(None);
    }
    ensure!(status == 200, "refresh: {status} {body}");
    for name in ["access_token", "id_token", "refresh_token"] {
        if let Some(value) = body[name].as_str() {
            note(value);
        }
    }
    Ok(body["refresh_token"].as_str().map(str::to_owned))
}

/// Signs in on the account page's form (no JavaScript); the session cookie (`name=value`).
async fn session_cookie(identifier: &str, password: &str, code: &str) -> anyhow::Result<String> {
    let browser = crate::oidc::browser();
    let page = browser.get(format!("{}/account", shared().portal_url)).send().await?;
    let form_cookie = set_cookie(page.headers(), "roster_form").context("no form cookie")?;
    let mut form = hidden_fields(&page.text().await?);
    form.extend(
        [("identifier", identifier), ("password", password), ("code", code)]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let answer = browser
        .post(format!("{}/account/signin", shared().portal_url))
        .header("cookie", form_cookie)
        .form(&form)
        .send()
        .await?;
    let Some(cookie) = set_cookie(answer.headers(), SESSION_COOKIE) else {
        bail!("no session: {} {}", answer.status(), answer.text().await.unwrap_or_default())
    };
    ensure!(answer.status() == 303, "signed in: {}", answer.status());
    note(cookie.split_once('=').map_or("", |(_, token)| token));
    Ok(cookie)
}

/// Two tokens (or `name=token` cookies) of the form `locator.secret`, each with the other's
/// secret: what someone holding one person's token would try against another's.
pub fn spliced_pair(one: &str, other: &str) -> anyhow::Result<[String; 2]> {
    let (one_locator, one_secret) = one.rsplit_once('.').context("no locator in the first token")?;
    let (other_locator, other_secret) = other.rsplit_once('.').context("no locator in the second token")?;
    Ok([format!("{one_locator}.{other_secret}"), format!("{other_locator}.{one_secret}")])
}

/// `method` on `/api/v1/account{path}` with the session `cookie` and a JSON `body`.
async fn account(
    cookie: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/api/v1/account{path}", shared().portal_url);
    let mut request = reqwest::Client::new().request(method.parse()?, url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
}
