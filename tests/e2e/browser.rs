//! Onboarding in a real browser: headless Chromium (Debian's) driven over WebDriver by
//! fantoccini. The invitation is taken from Mailpit, its link opened, a weak password tried
//! and refused next to the field, a good one set, the TOTP secret read off the page, the
//! current code typed in — and the User turns ACTIVE in the API server. Then the phone is
//! lost: an MfaReset's emailed link, a wrong and a right password, a new authenticator.
//! Each step's screenshot lands in `target/tmp/e2e/browser/`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use libtest_mimic::Trial;
use roster::api::User;
use roster_testenv::{Process, free_ports};
use serde_json::json;

use crate::harness::{Ns, condition, shared, trial, wait_for};
use crate::invites::{message_text, messages_to, token_after, token_in};
use crate::lifecycle::{email, phase, user_manifest};
use crate::portal::{PASSWORD, code};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub fn trials() -> Vec<Trial> {
    vec![trial("browser::onboarding_in_chromium_from_the_emailed_link", |ns| async move {
        let dir = shared().work_dir.join("browser");
        std::fs::create_dir_all(&dir)?;
        let driver = ChromeDriver::start(&dir).await?;
        let browser = driver.session(&dir).await?;
        let outcome = onboard(&ns, &browser, &dir).await;
        let _ = browser.close().await;
        outcome
    })]
}

async fn onboard(ns: &Ns, browser: &Client, dir: &Path) -> anyhow::Result<()> {
    let address = email("browsing", ns);
    ns.apply(user_manifest("browsing", json!({"email": address, "givenName": "Bea"}), json!({}))).await?;
    let invites = ns.api::<roster::api::UserInvite>();
    wait_for(&invites, "browsing-invite", "Sent", |i| crate::invites::phase_of(i) == "Sent").await?;
    let messages = messages_to(&address).await?;
    ensure!(messages.len() == 1, "expected one invitation, found {}", messages.len());
    let text = message_text(&messages[0]).await?;
    let token = token_in(&text).context("no link in the email")?;
    let link = format!("{}/invite/{token}", shared().portal_url);
    ensure!(text.contains(&link), "the email's link is not the portal's: {text}");

    browser.goto(&link).await?;
    let heading = browser.find(Locator::Css("h1")).await?.text().await?;
    ensure!(heading.contains("Bea"), "the page does not greet the person: {heading}");
    let page = browser.source().await?;
    ensure!(
        page.contains("Example Corp") && page.contains(&address),
        "the page names neither org nor account"
    );
    ensure!(page.contains("UTC"), "the page does not show the expiry");
    screenshot(browser, dir, "1-invitation").await?;

    set_password(browser, "short").await?;
    let error = browser.wait().for_element(Locator::Css("#password-error")).await?.text().await?;
    ensure!(error.contains("at least 12 characters"), "the policy error does not say which rule: {error}");
    screenshot(browser, dir, "2-weak-password-refused").await?;

    set_password(browser, PASSWORD).await?;
    let secret_shown = browser.wait().for_element(Locator::Css("#totp-secret")).await?.text().await?;
    let secret: String = secret_shown.split_whitespace().collect();
    ensure!(secret.len() >= 32, "no TOTP secret on the page: {secret_shown:?}");
    let qr = browser.find(Locator::Css("img.qr")).await?.attr("src").await?.unwrap_or_default();
    ensure!(qr.starts_with("data:image/svg+xml;base64,"), "no QR code image");
    let uri = browser.find(Locator::Css("#otpauth-link")).await?.attr("href").await?.unwrap_or_default();
    ensure!(uri.starts_with("otpauth://totp/") && uri.contains(&secret), "{uri}");
    screenshot(browser, dir, "3-authenticator").await?;

    browser.refresh().await?;
    let after_reload = browser.wait().for_element(Locator::Css("#totp-secret")).await?.text().await?;
    ensure!(after_reload == secret_shown, "a reload changed the TOTP step");

    browser.find(Locator::Css("#code")).await?.send_keys(&code(&secret)?).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let done = browser.wait().for_element(Locator::Css("#done")).await?.text().await?;
    ensure!(done.contains("all set"), "{done}");
    screenshot(browser, dir, "4-all-set").await?;

    let user = wait_for(&ns.raw::<User>(), "browsing", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    ensure!(
        condition(&user, "EmailVerified")["status"] == "True",
        "the emailed link proves the mailbox: {}",
        user.data["status"]
    );
    browser.goto(&link).await?;
    let gone = browser.wait().for_element(Locator::Css("#problem")).await?.text().await?;
    ensure!(gone.contains("already used"), "{gone}");
    screenshot(browser, dir, "5-link-spent").await?;
    reenrol(ns, browser, dir, &address).await
}

/// The person lost their phone: an MfaReset, the emailed link, the password, a new
/// authenticator.
async fn reenrol(ns: &Ns, browser: &Client, dir: &Path, address: &str) -> anyhow::Result<()> {
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "browsing-reset"},
        "spec": {"userRef": {"name": "browsing"}, "reason": "lost phone", "delivery": "Email"},
    }))
    .await?;
    wait_for(&ns.raw::<roster::api::MfaReset>(), "browsing-reset", "Completed", |r| {
        r.data["status"]["phase"] == "Completed"
    })
    .await?;
    let mut token = None;
    for message in messages_to(address).await? {
        token = token.or(token_after(&message_text(&message).await?, "/mfa-reset/"));
    }
    let link =
        format!("{}/mfa-reset/{}", shared().portal_url, token.context("no re-enrolment link emailed")?);
    browser.goto(&link).await?;
    let field = browser.wait().for_element(Locator::Css("#password")).await?;
    screenshot(browser, dir, "6-reset-confirm-password").await?;
    field.send_keys("Not-My-Password-42").await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let error = browser.wait().for_element(Locator::Css("#password-error")).await?.text().await?;
    ensure!(error.contains("not correct"), "{error}");
    browser.find(Locator::Css("#password")).await?.send_keys(PASSWORD).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let shown = browser.wait().for_element(Locator::Css("#totp-secret")).await?.text().await?;
    let secret: String = shown.split_whitespace().collect();
    screenshot(browser, dir, "7-reset-new-authenticator").await?;
    browser.find(Locator::Css("#code")).await?.send_keys(&code(&secret)?).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    browser.wait().for_element(Locator::Css("#done")).await?;
    screenshot(browser, dir, "8-reset-done").await?;
    wait_for(&ns.raw::<User>(), "browsing", "enrolled again", |u| {
        condition(u, "MfaEnrolled")["status"] == "True"
    })
    .await?;
    Ok(())
}

async fn set_password(browser: &Client, password: &str) -> anyhow::Result<()> {
    let field = browser.wait().for_element(Locator::Css("#password")).await?;
    field.clear().await?;
    field.send_keys(password).await?;
    let confirm = browser.find(Locator::Css("#password-confirm")).await?;
    confirm.clear().await?;
    confirm.send_keys(password).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    Ok(())
}

pub async fn screenshot(browser: &Client, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, browser.screenshot().await?)?;
    Ok(path)
}

/// A chromedriver process on a free loopback port.
pub struct ChromeDriver {
    _process: Process,
    url: String,
}

impl ChromeDriver {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        ensure!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMIUM} or {CHROMEDRIVER} missing: run hack/install-test-tools.sh"
        );
        let [port] = free_ports()?;
        let args = vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()];
        let process = Process::spawn("chromedriver", Path::new(CHROMEDRIVER), &args, &[], dir)?;
        let url = format!("http://127.0.0.1:{port}");
        crate::harness::poll_until("chromedriver answers /status", || async {
            Ok(reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(Self { _process: process, url })
    }

    /// A headless Chromium with a phone-sized window and a fresh profile.
    pub async fn session(&self, dir: &Path) -> anyhow::Result<Client> {
        let profile = dir.join("profile");
        let _ = std::fs::remove_dir_all(&profile);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=412,915",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector).capabilities(capabilities).connect(&self.url).await?;
        Ok(client)
    }
}
