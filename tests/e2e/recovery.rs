//! "Forgot your password?" against the real control plane, Mailpit and headless Chromium:
//! from the issuer's sign-in page to a new password and a sign-in, for a person who locked
//! themselves out; the answer (body, status, median time) for an unknown account is the
//! known one's; one link is open at a time and a few a day; a deactivated person gets
//! nothing; a changed password and a lock are told by email.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fantoccini::{Client, Locator};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use libtest_mimic::Trial;
use roster::api::{Initiator, PasswordReset, User};
use serde_json::{Value, json};

use crate::browser::{ChromeDriver, screenshot};
use crate::harness::{Ns, poll_until, shared, trial, wait_for};
use crate::invites::{message_text, messages_to, token_after};
use crate::lifecycle::{email, enrolled};
use crate::oidc::{SignIn, local, registered};
use crate::portal::{PASSWORD, login, next_code, onboard, post};

/// The password the recovery sets (checked by signing in; the log check knows PASSWORD only,
/// so this one is noted for it).
const NEW_PASSWORD: &str = "Harbour-Violet-Kettle-8812";

pub fn trials() -> Vec<Trial> {
    vec![
        trial("recovery::forgot_password_in_chromium_from_the_sign_in_page_to_a_sign_in", |ns| async move {
            crate::oidc::note(NEW_PASSWORD);
            let dir = shared().work_dir.join("recovery-browser");
            std::fs::create_dir_all(&dir)?;
            let driver = ChromeDriver::start(&dir).await?;
            let browser = driver.session(&dir).await?;
            let outcome = forgot_in_browser(&ns, &browser, &dir).await;
            let _ = browser.close().await;
            outcome
        }),
        trial(
            "recovery::the_answer_is_the_same_for_any_account_and_each_person_gets_one_link_at_a_time",
            |ns| async move {
                onboard(&ns, "quinn", json!({})).await?;
                let known = email("quinn", &ns);
                let unknown = email("nobody-by-that-name", &ns);

                // The same answer, status and (median) time whether or not the account exists.
                let (mut known_times, mut unknown_times) = (Vec::new(), Vec::new());
                let mut answers = std::collections::BTreeSet::new();
                for _ in 0..25 {
                    for (address, times) in [(&known, &mut known_times), (&unknown, &mut unknown_times)] {
                        let started = Instant::now();
                        let (status, body) = recover(address).await?;
                        times.push(started.elapsed());
                        answers.insert(format!("{status} {body}"));
                    }
                }
                ensure!(answers.len() == 1, "the answers differ: {answers:?}");
                ensure!(answers.iter().all(|a| a.starts_with("202 ")), "{answers:?}");
                let (known_median, unknown_median) = (median(&mut known_times), median(&mut unknown_times));
                println!(
                    "recovery answer, median of 25: known account {known_median:?}, unknown {unknown_median:?}"
                );
                let gap = known_median.abs_diff(unknown_median);
                ensure!(
                    gap < Duration::from_millis(10).max(unknown_median / 2),
                    "the answer for a known account takes {known_median:?}, for an unknown one {unknown_median:?}"
                );

                // Fifty requests for one person: one reset, one email.
                settled(&ns).await?;
                let mine = self_resets(&ns, "quinn").await?;
                ensure!(mine.len() == 1, "{} resets for 50 requests", mine.len());
                let reset = &mine[0];
                ensure!(reset.spec.reason.contains("forgot password"), "{}", reset.spec.reason);
                ensure!(reset.spec.ttl_seconds_after_finished.is_some(), "kept forever");
                ensure!(
                    reset
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "User" && o.name == "quinn"),
                    "not owned by its User"
                );
                poll_until("the recovery email", || async { Ok(!recovery_links(&known).await?.is_empty()) })
                    .await?;
                let links = recovery_links(&known).await?;
                ensure!(links.len() == 1, "{} recovery emails", links.len());
                ensure!(messages_to(&unknown).await?.is_empty(), "mail to an address no account has");

                // A password-only person: each used link makes room for the next, three a day.
                // (Without a second factor the mailbox alone recovers: only a proven one.)
                let rosa = enrolled(&ns, "rosa", json!({"mfa": {"required": false}}), None).await?;
                for round in 1..=3 {
                    recover(&rosa).await?;
                    poll_until("the recovery link emailed", || async {
                        Ok(recovery_links(&rosa).await?.len() == round)
                    })
                    .await?;
                    let token = recovery_links(&rosa).await?.pop().context("no link")?;
                    let path = format!("/api/v1/password-resets/{token}");
                    let (status, body) = post(&path, json!({"password": NEW_PASSWORD})).await?;
                    ensure!(status == 200, "round {round}: {status} {body}");
                }
                recover(&rosa).await?;
                settled(&ns).await?;
                ensure!(self_resets(&ns, "rosa").await?.len() == 3, "a fourth recovery in a day");
                ensure!(recovery_links(&rosa).await?.len() == 3, "a fourth recovery email in a day");

                // No second factor and an address never proven (a handed-over invitation): nothing.
                onboard(&ns, "una", json!({"mfa": {"required": false}})).await?;
                recover(&email("una", &ns)).await?;
                settled(&ns).await?;
                ensure!(self_resets(&ns, "una").await?.is_empty(), "the mailbox alone, unproven, recovered");

                // Deactivated: nothing at all.
                enrolled(&ns, "sid", json!({"mfa": {"required": false}}), None).await?;
                let patch = json!({"spec": {"state": "Inactive"}});
                ns.api::<User>().patch("sid", &PatchParams::default(), &Patch::Merge(&patch)).await?;
                wait_for(&ns.raw::<User>(), "sid", "INACTIVE", |u| u.data["status"]["phase"] == "INACTIVE")
                    .await?;
                recover(&email("sid", &ns)).await?;
                settled(&ns).await?;
                ensure!(self_resets(&ns, "sid").await?.is_empty(), "a deactivated person got a recovery");
                ensure!(
                    recovery_links(&email("sid", &ns)).await?.is_empty(),
                    "a deactivated person got mail"
                );

                let (status, body) = post("/api/v1/password-resets", json!({"identifier": "  "})).await?;
                ensure!(status == 400 && body["error"] == "identifierRequired", "{status} {body}");
                Ok(())
            },
        ),
    ]
}

async fn forgot_in_browser(ns: &Ns, browser: &Client, dir: &Path) -> anyhow::Result<()> {
    let totp = onboard(ns, "remy", json!({"givenName": "Remy"})).await?;
    let address = email("remy", ns);
    let (client, _) = registered(ns, "wiki", json!({})).await?;

    // Locked out by wrong guesses (a lock that ends by itself: recovery may end it).
    for attempt in 1..=5 {
        let (status, _) =
            login(json!({"email": address, "password": format!("Wrong-{attempt}-guess-xyz")})).await?;
        ensure!(status == 401, "{status}");
    }
    wait_for(&ns.raw::<User>(), "remy", "locked out", |u| {
        crate::harness::condition(u, "Ready")["reason"] == "LockedOut"
    })
    .await?;
    poll_until("the lock told by email", || async { Ok(notice(&address, "locked").await?.is_some()) })
        .await?;

    let flow = SignIn::start(&client, &[]).await?;
    browser.goto(&local(&flow.url)).await?;
    browser.wait().for_element(Locator::Css("#forgot")).await?.click().await?;
    browser.wait().for_element(Locator::Css("#identifier")).await?.send_keys(&address).await?;
    screenshot(browser, dir, "1-forgot").await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let sent = browser.wait().for_element(Locator::Css("#sent")).await?.text().await?;
    ensure!(sent.contains("Check your email"), "{sent}");
    screenshot(browser, dir, "2-check-your-email").await?;

    poll_until("the recovery link emailed", || async { Ok(!recovery_links(&address).await?.is_empty()) })
        .await?;
    let token = recovery_links(&address).await?.pop().context("no link")?;
    browser.goto(&format!("{}/password-reset/{token}", shared().portal_url)).await?;
    let page = browser.wait().for_element(Locator::Css("main")).await?.text().await?;
    ensure!(page.contains("You asked to reset"), "{page}");
    browser.find(Locator::Css("#password")).await?.send_keys(NEW_PASSWORD).await?;
    browser.find(Locator::Css("#password-confirm")).await?.send_keys(NEW_PASSWORD).await?;
    browser.find(Locator::Css("#code")).await?.send_keys(&next_code(&totp)?).await?;
    let used_step = step_now() + 1;
    screenshot(browser, dir, "3-new-password").await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    browser.wait().for_element(Locator::Css("#done")).await?;
    screenshot(browser, dir, "4-done").await?;

    let (status, _) =
        login(json!({"email": address, "password": PASSWORD, "code": next_code(&totp)?})).await?;
    ensure!(status == 401, "the old password still works: {status}");
    poll_until("the change told by email", || async {
        Ok(notice(&address, "password-changed").await?.is_some())
    })
    .await?;
    let told = notice(&address, "password-changed").await?.unwrap_or_default();
    ensure!(told.contains("If this was not you"), "{told}");

    // Signed in with the new password, the lock gone: a code from a step after the one the
    // reset spent.
    poll_until("the TOTP step after the spent one", || async { Ok(step_now() >= used_step) }).await?;
    let again = SignIn::start(&client, &[]).await?;
    browser.goto(&local(&again.url)).await?;
    browser.wait().for_element(Locator::Css("#identifier")).await?.send_keys(&address).await?;
    browser.find(Locator::Css("#password")).await?.send_keys(NEW_PASSWORD).await?;
    browser.find(Locator::Css("#code")).await?.send_keys(&next_code(&totp)?).await?;
    screenshot(browser, dir, "5-sign-in").await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    poll_until("redirected to the application with a code", || async {
        Ok(browser.current_url().await?.as_str().contains("code="))
    })
    .await?;
    Ok(())
}

async fn recover(address: &str) -> anyhow::Result<(u16, Value)> {
    post("/api/v1/password-resets", json!({"identifier": address})).await
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

pub fn step_now() -> i64 {
    Timestamp::now().as_second() / 30
}

/// Waits until the recovery worker has taken every request made so far: it works them in
/// order, so once a request made now for a fresh person shows its reset, the earlier ones
/// are decided.
async fn settled(ns: &Ns) -> anyhow::Result<()> {
    let name = format!("sentinel-{}", Timestamp::now().as_millisecond() % 1_000_000);
    let address = enrolled(ns, &name, json!({"mfa": {"required": false}}), None).await?;
    recover(&address).await?;
    poll_until("the sentinel's recovery", || async { Ok(!self_resets(ns, &name).await?.is_empty()) }).await
}

/// The self-service PasswordResets of `user`.
async fn self_resets(ns: &Ns, user: &str) -> anyhow::Result<Vec<PasswordReset>> {
    let all = ns.api::<PasswordReset>().list(&ListParams::default()).await?.items;
    let mine: Vec<PasswordReset> = all.into_iter().filter(|r| r.spec.user_ref.name == user).collect();
    if mine.iter().any(|r| r.spec.initiator != Initiator::Person) {
        bail!("a reset for {user} not marked initiator Self");
    }
    Ok(mine)
}

/// The tokens of the recovery links emailed to `address`, oldest first.
async fn recovery_links(address: &str) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::new();
    let mut messages = messages_to(address).await?;
    messages.reverse(); // Mailpit lists the newest first
    for message in messages {
        if let Some(token) = token_after(&message_text(&message).await?, "/password-reset/") {
            tokens.push(token);
        }
    }
    Ok(tokens)
}

/// The text of the security notice about `event` emailed to `address`, if any.
pub async fn notice(address: &str, event: &str) -> anyhow::Result<Option<String>> {
    let subject = match event {
        "locked" => "your account was locked",
        "password-changed" => "your password was changed",
        _ => "your authenticator app was replaced",
    };
    for message in messages_to(address).await? {
        if message["Subject"].as_str().is_some_and(|s| s.contains(subject)) {
            return Ok(Some(message_text(&message).await?));
        }
    }
    Ok(None)
}
