//! kube-apiserver as a relying party nobody here wrote: a control plane of its own started
//! with the structured `AuthenticationConfiguration` of `examples/oidc/` — its JWT
//! authenticator trusting roster's issuer (over HTTPS on loopback, behind a TLS front as an
//! Ingress would put it, its CA inline), the audience an OidcClient's ID, the username from
//! `email`, the groups from `groups`, and a claim validation rule. A person signs in through the real authorization
//! code + PKCE flow (an HTTP client filling in the sign-in page); kubectl with the ID token
//! says who they are, and RBAC bound to their group decides what they may do.

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use libtest_mimic::Trial;
use roster::api::{OidcClient, User};
use roster_testenv::TlsFront;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Operator, condition, own_plane, poll_until, repo_path, shared, standalone, wait_for};
use crate::lifecycle::{enrolled, set_state};
use crate::oidc::{hidden_fields, note, set_cookie};
use crate::portal::PASSWORD;

const CALLBACK: &str = "http://127.0.0.1:8400/callback";

pub fn trials() -> Vec<Trial> {
    vec![standalone("kubernetes::kubectl_signs_in_with_a_roster_id_token", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("kubernetes");
    std::fs::create_dir_all(&dir)?;
    // The namespace Ns::create will name; the client ID (the audience) follows from it.
    let namespace = format!("kubernetes-{:x}", std::process::id());
    let client_id = format!("{namespace}.kubectl");

    // roster's portal port is known only once it runs, and the API server needs the issuer
    // at start: the front listens first and forwards to a port chosen now.
    let [portal_port] = roster_testenv::free_ports()?;
    let front = TlsFront::start(([127, 0, 0, 1], portal_port).into()).await?;
    let issuer = front.url.clone();
    // The example's AuthenticationConfiguration, pointed at this issuer, CA and audience.
    let example = std::fs::read_to_string(repo_path("examples/oidc/authentication-config.yaml"))?;
    let mut config: Value = serde_norway::from_str(&example)?;
    let jwt = &mut config["jwt"][0]["issuer"];
    jwt["url"] = json!(issuer);
    jwt["audiences"] = json!([client_id]);
    jwt["certificateAuthority"] = json!(front.ca_pem);
    let config = serde_json::to_string_pretty(&config)?;
    let config_path = dir.join("authentication.yaml");
    std::fs::write(&config_path, config)?;
    let flags = [format!("--authentication-config={}", config_path.display())];
    let (plane, ns) = own_plane(&dir, &flags, "kubernetes").await?;
    ensure!(ns.name == namespace, "namespace {} is not {namespace}", ns.name);
    let operator_flags = [
        format!("--watch-namespaces={namespace}"),
        format!("--issuer-url={issuer}"),
        format!("--portal-addr=127.0.0.1:{portal_port}"),
    ];
    let operator_flags: Vec<&str> = operator_flags.iter().map(String::as_str).collect();
    let operator = Operator::start(plane.kubeconfig(), &dir, "operator", &operator_flags).await?;
    let portal = operator.portal_url.clone();
    // A fresh install: ready means it has made its signing keys (no 503 from /token).
    let keys = reqwest::get(format!("{portal}/keys")).await?;
    ensure!(keys.status() == 200, "ready, but /keys answers {}", keys.status());

    // A person who onboarded and proved their address, in the group `viewers`.
    let address =
        enrolled(&ns, "kim", json!({"groups": ["viewers"], "mfa": {"required": false}}), None).await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "kubectl"},
        "spec": {"public": true, "redirectUris": ["http://127.0.0.1/callback"], "scopes": ["openid", "email", "groups"]},
    }))
    .await?;
    wait_for(&ns.raw::<OidcClient>(), "kubectl", "Ready", |c| condition(c, "Ready")["status"] == "True")
        .await?;

    // The flow a kubectl OIDC plugin runs, the sign-in page filled in like a browser would.
    let id_token = sign_in(&portal, &issuer, &client_id, &address).await?.context("no ID token")?;
    note(&id_token);
    let person = dir.join("person.kubeconfig");
    std::fs::write(
        &person,
        person_kubeconfig(plane.server(), &dir.join("control-plane/pki/ca.crt"), &id_token),
    )?;

    // kube-apiserver fetches roster's discovery document and keys in the background.
    poll_until("kubectl auth whoami accepts the ID token", || async {
        Ok(kubectl(&person, &["auth", "whoami"]).await.is_ok())
    })
    .await?;
    let whoami: Value = serde_json::from_str(&kubectl(&person, &["auth", "whoami", "-o", "json"]).await?)?;
    let info = &whoami["status"]["userInfo"];
    ensure!(info["username"] == address.as_str(), "username: {whoami}");
    let groups: Vec<&str> =
        info["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ensure!(groups.contains(&"roster:viewers"), "groups: {whoami}");

    // RBAC bound to the person's group decides.
    ensure!(
        kubectl(&person, &["auth", "can-i", "list", "pods", "-n", &namespace]).await.is_err(),
        "allowed before any binding"
    );
    // A Role of its own: the control plane runs no aggregation controller, so the built-in
    // `view` has no rules.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    });
    let roles: kube::Api<k8s_openapi::api::rbac::v1::Role> = ns.api();
    roles.create(&Default::default(), &serde_json::from_value(role)?).await?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "viewers", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "roster:viewers"}],
    });
    let bindings: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> = ns.api();
    bindings.create(&Default::default(), &serde_json::from_value(binding)?).await?;
    poll_until("the binding lets the person list pods", || async {
        Ok(kubectl(&person, &["auth", "can-i", "list", "pods", "-n", &namespace]).await.is_ok())
    })
    .await?;
    ensure!(
        kubectl(&person, &["auth", "can-i", "delete", "pods", "-n", &namespace]).await.is_err(),
        "reading pods allows deleting them"
    );

    // Deactivated: no new token.
    set_state(&ns, "kim", "Inactive").await?;
    wait_for(&ns.raw::<User>(), "kim", "INACTIVE", |u| u.data["status"]["phase"] == "INACTIVE").await?;
    ensure!(
        sign_in(&portal, &issuer, &client_id, &address).await?.is_none(),
        "a deactivated person got a token"
    );
    drop(operator);
    Ok(())
}

/// Signs `identifier` in at the issuer `portal` serves, through the authorization code flow
/// with PKCE and a sign-in page filled in like a browser would; the ID token, or
/// `None` when the sign-in page refuses.
pub async fn sign_in(
    portal: &str,
    issuer: &str,
    client_id: &str,
    identifier: &str,
) -> anyhow::Result<Option<String>> {
    let Some(tokens) = tokens_for(portal, issuer, client_id, identifier, "openid email groups").await? else {
        return Ok(None);
    };
    Ok(Some(
        tokens["id_token"].as_str().with_context(|| format!("no id_token: {}", tokens["error"]))?.to_owned(),
    ))
}

/// The token endpoint's answer for a public client's code, signed in with PASSWORD alone on
/// `portal`'s sign-in page for `scope`, and the session cookie; `None` when refused.
pub async fn tokens_for(
    portal: &str,
    issuer: &str,
    client_id: &str,
    identifier: &str,
    scope: &str,
) -> anyhow::Result<Option<Value>> {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(roster::credentials::random_bytes::<32>()?);
    note(&verifier);
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let query = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", scope),
        ("state", "kube-state"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let page = browser.get(format!("{portal}/authorize")).query(&query).send().await?;
    ensure!(page.status() == 200, "GET /authorize: {}", page.status());
    let cookie = set_cookie(page.headers(), "roster_form").context("no form cookie")?;
    let mut form = hidden_fields(&page.text().await?);
    form.extend(
        [("identifier", identifier), ("password", PASSWORD), ("code", "")]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let answer =
        browser.post(format!("{portal}/authorize")).header("cookie", cookie).form(&form).send().await?;
    let Some(location) = answer.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned)
    else {
        // Refused: the generic answer (401) or a page that says why (403); never a code.
        ensure!(matches!(answer.status().as_u16(), 401 | 403), "the sign-in answered {}", answer.status());
        return Ok(None);
    };
    let url = url::Url::parse(&location)?;
    let get = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    ensure!(get("iss").as_deref() == Some(issuer), "iss in {location}");
    ensure!(get("state").as_deref() == Some("kube-state"), "state in {location}");
    let code = get("code").context("no code")?;
    note(&code);
    let tokens: Value = browser
        .post(format!("{portal}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("client_id", client_id),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    for token in ["access_token", "refresh_token", "id_token"] {
        if let Some(value) = tokens[token].as_str() {
            note(value);
        }
    }
    Ok(Some(tokens))
}

/// A kubeconfig with only the person's ID token (no client certificate, which would win).
fn person_kubeconfig(server: &str, ca: &std::path::Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}
users:
- name: person
  user: {{token: \"{token}\"}}
contexts:
- name: person
  context: {{cluster: test, user: person}}
current-context: person
",
        ca.display()
    )
}

/// Runs kubectl with `kubeconfig`; its stdout, or an error with its stderr. (Async: the TLS
/// front runs on this thread's runtime, and the API server fetches roster's keys through it
/// while kubectl waits.)
async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let output =
        tokio::process::Command::new("kubectl").args(args).env("KUBECONFIG", kubeconfig).output().await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}
