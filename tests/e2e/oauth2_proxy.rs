//! Single sign-on in a real browser, through relying parties nobody here wrote: two
//! oauth2-proxy instances (as they would stand in front of Grafana and Argo CD) send headless
//! Chromium to roster's issuer. The person signs in once — password and authenticator code —
//! and reaches the first app, which sees their email and groups in the headers the proxy
//! passes; the second lets them in without a form; signing out through
//! the first app's sign-out link ends the session everywhere roster decides (the next app
//! that asks gets the sign-in form again). Each step's screenshot lands in
//! `target/tmp/e2e/oauth2-proxy/`.
//!
//! The operator runs on a control plane of its own: its issuer is on loopback over plain
//! http (as the demo's), and the shared operator, with another issuer URL, would rewrite
//! the OidcClients' status.

use std::path::Path;

use anyhow::{Context as _, ensure};
use fantoccini::{Client, Locator};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use libtest_mimic::Trial;
use roster::api::OidcClient;
use roster_testenv::{Process, free_ports, tool_path};
use serde_json::json;

use crate::browser::{ChromeDriver, screenshot};
use crate::harness::{
    Ns, Operator, condition, own_plane, poll_until, repo_path, shared, standalone, wait_for,
};
use crate::lifecycle::enrolled;
use crate::oidc::{credentials_of, note};
use crate::portal::{PASSWORD, code};

/// A TOTP secret of the person's (base32).
const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

pub fn trials() -> Vec<Trial> {
    vec![standalone("oauth2_proxy::one_sign_in_opens_two_proxied_apps_until_sign_out", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("oauth2-proxy");
    std::fs::create_dir_all(&dir)?;
    let (_plane, ns) = own_plane(&dir, &[], "oauth2-proxy").await?;
    let [portal_port, grafana_port, argocd_port] = free_ports()?;
    let issuer = format!("http://127.0.0.1:{portal_port}");
    let flags = [
        format!("--watch-namespaces={}", ns.name),
        format!("--issuer-url={issuer}"),
        format!("--portal-addr=127.0.0.1:{portal_port}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _operator = Operator::start(_plane.kubeconfig(), &dir, "operator", &flags).await?;

    let address =
        enrolled(&ns, "ola", json!({"groups": ["developers"], "givenName": "Ola"}), Some(TOTP)).await?;
    let upstream = upstream().await?;
    let grafana = Proxy::start(&ns, &dir, "grafana", grafana_port, &issuer, &upstream).await?;
    let argocd = Proxy::start(&ns, &dir, "argocd", argocd_port, &issuer, &upstream).await?;

    let driver = ChromeDriver::start(&dir).await?;
    let browser = driver.session(&dir).await?;
    let outcome = browse(&ns, &browser, &dir, &address, &grafana, &argocd).await;
    let _ = browser.close().await;
    outcome
}

async fn browse(
    ns: &Ns,
    browser: &Client,
    dir: &Path,
    address: &str,
    grafana: &Proxy,
    argocd: &Proxy,
) -> anyhow::Result<()> {
    // The first app sends the browser to roster's sign-in page.
    browser.goto(&grafana.url).await?;
    let client = browser.wait().for_element(Locator::Css("#client")).await?.text().await?;
    ensure!(client.contains("grafana"), "the sign-in page does not name the app: {client}");
    screenshot(browser, dir, "1-sign-in").await?;
    browser.find(Locator::Css("#identifier")).await?.send_keys(address).await?;
    browser.find(Locator::Css("#password")).await?.send_keys(PASSWORD).await?;
    browser.find(Locator::Css("#code")).await?.send_keys(&code(TOTP)?).await?;
    browser.find(Locator::Css("#submit")).await?.click().await?;
    let seen = grafana.wait_until_in(browser).await?;
    ensure!(
        seen.contains(&format!("email: {address}")) && seen.contains("groups: developers"),
        "the app behind the proxy sees: {seen}"
    );
    screenshot(browser, dir, "2-grafana").await?;
    let who = grafana.userinfo(browser).await?;
    ensure!(who["email"] == address && who["groups"] == json!(["developers"]), "grafana's proxy sees {who}");
    ensure!(sessions(ns).await? == 1, "not one session after signing in");

    // The second app: no form, the session answers.
    browser.goto(&argocd.url).await?;
    argocd.wait_until_in(browser).await?;
    screenshot(browser, dir, "3-argocd-without-a-form").await?;
    ensure!(argocd.userinfo(browser).await?["email"] == address, "argocd's proxy does not see the person");
    ensure!(sessions(ns).await? == 1, "the second app started another session");

    // Signing out through the first app: its own cookie, then roster's session (after a
    // confirmation: the link carries no ID token), then back to the app — which asks again.
    let logout = format!(
        "{}/logout?client_id={}&post_logout_redirect_uri={}",
        grafana.issuer,
        grafana.client_id,
        urlencoding(&format!("{}/", grafana.url)),
    );
    browser.goto(&format!("{}/oauth2/sign_out?rd={}", grafana.url, urlencoding(&logout))).await?;
    let confirm = browser.wait().for_element(Locator::Css("#sign-out")).await?;
    screenshot(browser, dir, "4-sign-out").await?;
    confirm.click().await?;
    let again = browser.wait().for_element(Locator::Css("#client")).await?.text().await?;
    ensure!(again.contains("grafana"), "after signing out, grafana did not ask again: {again}");
    screenshot(browser, dir, "5-grafana-asks-again").await?;
    ensure!(sessions(ns).await? == 0, "the session outlived the sign-out");

    // The second app keeps its own cookie until it expires (no front-channel logout), but
    // once that is gone, roster asks again too.
    browser.goto(&format!("{}/oauth2/sign_out", argocd.url)).await?;
    browser.goto(&argocd.url).await?;
    let again = browser.wait().for_element(Locator::Css("#client")).await?.text().await?;
    ensure!(again.contains("argocd"), "after signing out, argocd was let in without a form: {again}");
    screenshot(browser, dir, "6-argocd-asks-again").await?;
    Ok(())
}

/// The app behind the proxies: a page that shows who the proxy says is there (the headers
/// oauth2-proxy passes upstream). Its URL.
async fn upstream() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let page = |headers: axum::http::HeaderMap| async move {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        format!(
            "the app behind the proxy\nemail: {}\ngroups: {}\n",
            header("x-forwarded-email"),
            header("x-forwarded-groups")
        )
    };
    let app = axum::Router::new().fallback(page);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The person's SSO sessions (Secrets of their type in the namespace).
async fn sessions(ns: &Ns) -> anyhow::Result<usize> {
    let all = ns.api::<Secret>().list(&ListParams::default().fields("type=roster.dev/oidc-session")).await?;
    Ok(all.items.len())
}

fn urlencoding(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// An oauth2-proxy for one registered OidcClient, in front of a static page.
struct Proxy {
    _process: Process,
    url: String,
    issuer: String,
    client_id: String,
}

impl Proxy {
    /// Registers OidcClient `name` (confidential, its secret generated by roster) and starts
    /// oauth2-proxy for it on `port` with `examples/oidc/oauth2-proxy.cfg`.
    async fn start(
        ns: &Ns,
        dir: &Path,
        name: &str,
        port: u16,
        issuer: &str,
        upstream: &str,
    ) -> anyhow::Result<Self> {
        let url = format!("http://127.0.0.1:{port}");
        ns.apply(json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": name},
            "spec": {
                "redirectUris": [format!("{url}/oauth2/callback")],
                "postLogoutRedirectUris": [format!("{url}/")],
            },
        }))
        .await?;
        wait_for(&ns.raw::<OidcClient>(), name, "Ready", |c| condition(c, "Ready")["status"] == "True")
            .await?;
        let (client_id, client_secret) = credentials_of(ns, name).await?;
        note(&client_secret);
        let cookie_secret: String = hex::encode(roster::credentials::random_bytes::<16>()?);
        let portal = issuer.trim_start_matches("http://");
        // Secrets in the environment, not on the command line (which any process may read).
        let secrets = [
            ("OAUTH2_PROXY_CLIENT_SECRET", client_secret.as_str()),
            ("OAUTH2_PROXY_COOKIE_SECRET", cookie_secret.as_str()),
        ];
        // The example's configuration; only what differs here (addresses, secrets, plain
        // http on loopback, a cookie of its own per app on one host) on the command line.
        let args = [
            format!("--config={}", repo_path("examples/oidc/oauth2-proxy.cfg").display()),
            format!("--oidc-issuer-url={issuer}"),
            format!("--client-id={client_id}"),
            format!("--redirect-url={url}/oauth2/callback"),
            format!("--http-address=127.0.0.1:{port}"),
            format!("--upstream={upstream}"),
            format!("--cookie-name=_{name}"),
            "--cookie-secure=false".to_owned(),
            format!("--whitelist-domain={portal}"),
        ];
        let process = Process::spawn(
            &format!("oauth2-proxy-{name}"),
            &tool_path("oauth2-proxy")?,
            &args,
            &secrets,
            dir,
        )?;
        poll_until(&format!("oauth2-proxy for {name} answers /ping"), || async {
            Ok(reqwest::get(format!("{url}/ping")).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(Self { _process: process, url, issuer: issuer.to_owned(), client_id })
    }

    /// Waits until the browser is at this app's page, past every redirect; the page.
    async fn wait_until_in(&self, browser: &Client) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + crate::harness::DEADLINE;
        loop {
            let at = browser.current_url().await?;
            // Mid-navigation the document may have no body yet: not there yet, poll again.
            let body = match browser.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let arrived = at.as_str().starts_with(&self.url) && !at.path().starts_with("/oauth2/");
            if arrived && !body.is_empty() {
                ensure!(body.contains("the app behind the proxy"), "the proxy answered {at}: {body}");
                return Ok(body);
            }
            ensure!(tokio::time::Instant::now() < deadline, "the browser is at {at}: {body}");
            tokio::time::sleep(crate::harness::POLL_INTERVAL).await; // poll again before the deadline
        }
    }

    /// What the proxy knows of the signed-in person (its `/oauth2/userinfo`, in the browser).
    async fn userinfo(&self, browser: &Client) -> anyhow::Result<serde_json::Value> {
        browser.goto(&format!("{}/oauth2/userinfo", self.url)).await?;
        let text = browser.find(Locator::Css("body")).await?.text().await?;
        serde_json::from_str(&text).with_context(|| format!("the proxy's userinfo: {text}"))
    }
}
