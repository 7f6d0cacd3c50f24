//! The Helm chart against control planes of its own: lint; render and server-side dry-run
//! under the "restricted" Pod Security Standard; install and upgrade (the CRDs follow the
//! chart); the plain manifest up to date and accepted; and the RBAC proof — `roster run`
//! with only the chart's ServiceAccount token takes a user from invitation to ACTIVE and
//! through an MfaReset, and the account can do exactly what the code needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use libtest_mimic::Trial;
use roster::api::{MfaReset, OidcClient, PasswordReset, User, UserInvite};
use roster_testenv::{ControlPlane, Mailpit, tool_path};
use serde_json::json;

use crate::harness::{
    Ns, Operator, Ran, condition, repo_path, run_program, shared, smtp_secret, standalone, wait_for,
};
use crate::invites::{message_text_at, messages_at, phase_of, token_in};
use crate::lifecycle::{email, phase, set_state, user_manifest};

/// The release namespace of the chart's installs.
const NAMESPACE: &str = "roster-system";

pub fn trials() -> Vec<Trial> {
    vec![
        standalone("chart::lints_renders_installs_and_upgrades", renders_installs_and_upgrades),
        standalone("chart::the_charts_rbac_is_exactly_what_the_audit_log_shows_used", rbac_proof),
    ]
}

/// Runs `program` with `args` (and `KUBECONFIG`); its output, or an error with its stderr.
fn command(program: &Path, args: &[&str], kubeconfig: &Path, stdin: Option<&str>) -> anyhow::Result<Ran> {
    let helm = |dir: &str| shared().work_dir.join(dir).into_os_string();
    let env = [
        ("KUBECONFIG", kubeconfig.as_os_str().to_owned()),
        ("HELM_CACHE_HOME", helm("helm/cache")),
        ("HELM_CONFIG_HOME", helm("helm/config")),
        ("HELM_DATA_HOME", helm("helm/data")),
    ];
    let ran = run_program(program, args, &env, stdin)?;
    if !ran.ok() {
        bail!("{} {}: {}\n{}", program.display(), args.join(" "), ran.status, ran.stderr);
    }
    Ok(ran)
}

fn kubectl() -> PathBuf {
    PathBuf::from("kubectl")
}

fn helm() -> anyhow::Result<PathBuf> {
    Ok(tool_path("helm")?)
}

fn chart() -> String {
    repo_path("charts/roster").display().to_string()
}

async fn renders_installs_and_upgrades() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("chart");
    let plane = ControlPlane::start(&dir.join("control-plane"), "").await?;
    let config = plane.kubeconfig();
    let helm = helm()?;

    command(&helm, &["lint", "--strict", &chart()], config, None)?;
    // The scoped render also carries the Grafana dashboard's ConfigMap, so the server checks it.
    let scoped = [
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "smtp.secretName=smtp",
        "--set",
        "grafanaDashboard.enabled=true",
    ];
    command(&helm, &[&["lint", "--strict", &chart()][..], &scoped].concat(), config, None)?;
    let refused = command(&helm, &["lint", &chart(), "--set", "lockoutThreshold=0"], config, None);
    ensure!(refused.is_err(), "values.schema.json let lockoutThreshold=0 through");

    // The Deployment passes the "restricted" Pod Security Standard: the API server warns of
    // any violation when a namespace asks it to.
    for namespace in [NAMESPACE, "team-a", "team-b"] {
        command(&kubectl(), &["create", "namespace", namespace], config, None)?;
    }
    command(
        &kubectl(),
        &[
            "label",
            "namespace",
            NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        config,
        None,
    )?;
    for values in [&[][..], &scoped[..]] {
        let rendered = command(
            &helm,
            &[&["template", "roster", &chart(), "-n", NAMESPACE][..], values].concat(),
            config,
            None,
        )?;
        let applied =
            command(&kubectl(), &["apply", "--dry-run=server", "-f", "-"], config, Some(&rendered.stdout))?;
        ensure!(
            !applied.stderr.contains("PodSecurity"),
            "the Deployment breaks the restricted standard:\n{}",
            applied.stderr
        );
        let dashboard = applied.stdout.contains("configmap/roster-dashboard created (server dry run)");
        ensure!(
            dashboard == (values == &scoped[..]),
            "the dashboard ConfigMap is rendered only when enabled:\n{}",
            applied.stdout
        );
    }

    // Install a release whose users CRD lacks the Email column, then upgrade to this chart:
    // the CRD follows.
    let old = dir.join("old-chart");
    copy_dir(&repo_path("charts/roster"), &old)?;
    let crds = old.join("templates/crds.yaml");
    let text = std::fs::read_to_string(&crds)?;
    let column = "    - description: Login email\n      jsonPath: .spec.email\n      name: Email\n      type: string\n";
    let stale = text.replacen(column, "", 1);
    ensure!(stale != text, "could not find the Email column to remove in {}", crds.display());
    std::fs::write(&crds, stale)?;
    let install = [
        "install",
        "people",
        old.to_str().unwrap_or_default(),
        "-n",
        NAMESPACE,
        "--set",
        "smtp.secretName=smtp",
    ];
    command(&helm, &install, config, None)?;
    let api: Api<CustomResourceDefinition> = Api::all(plane.client().await?);
    ensure!(!email_column(&api.get("users.roster.dev").await?), "the old chart's CRD has the Email column");
    command(&helm, &["upgrade", "people", &chart(), "-n", NAMESPACE, "--reuse-values"], config, None)?;
    let users = api.get("users.roster.dev").await?;
    ensure!(email_column(&users), "helm upgrade did not update the CRD");
    let keep = users.metadata.annotations.unwrap_or_default().get("helm.sh/resource-policy").cloned();
    ensure!(keep.as_deref() == Some("keep"), "the CRD is not kept on uninstall: {keep:?}");

    // The plain manifest is the chart rendered, and the API server takes it.
    let rendered = command(
        Path::new(&repo_path("hack/render-manifest.sh")),
        &[helm.to_str().unwrap_or_default()],
        config,
        None,
    )?;
    let committed = std::fs::read_to_string(repo_path("deploy/roster.yaml"))?;
    ensure!(rendered.stdout == committed, "deploy/roster.yaml is stale: run hack/generate.sh");
    command(
        &kubectl(),
        &["apply", "--dry-run=server", "-f", &repo_path("deploy/roster.yaml").display().to_string()],
        config,
        None,
    )?;
    Ok(())
}

fn email_column(crd: &CustomResourceDefinition) -> bool {
    crd.spec.versions.iter().any(|v| v.additional_printer_columns.iter().flatten().any(|c| c.name == "Email"))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?
        } else {
            std::fs::copy(entry.path(), target).map(drop)?
        }
    }
    Ok(())
}

async fn rbac_proof() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("rbac");
    let crds = std::fs::read_to_string(repo_path("crds/roster.yaml"))?;
    let plane = ControlPlane::start(&dir.join("control-plane"), &crds).await?;
    let mailpit = Mailpit::start(&dir.join("mailpit"), "mailpit", false).await?;
    let admin = plane.client().await?;
    smtp_secret(&admin, mailpit.smtp_port).await?;
    let config = plane.kubeconfig();
    let helm = helm()?;
    let install = [
        "install",
        "roster",
        &chart(),
        "-n",
        NAMESPACE,
        "--set",
        "crds.enabled=false",
        "--set",
        "smtp.secretName=smtp",
        "--set",
        "issuerUrl=https://id.example.test",
    ];
    command(&helm, &install, config, None)?;

    // The whole flow — every path that needs a permission — with nothing but the
    // ServiceAccount's token.
    let account = format!("system:serviceaccount:{NAMESPACE}:roster");
    let token = command(&kubectl(), &["create", "token", "roster", "-n", NAMESPACE], config, None)?.stdout;
    let token_config = dir.join("serviceaccount.kubeconfig");
    std::fs::write(&token_config, token_kubeconfig(config, token.trim())?)?;
    // The Lease the chart names (the release is called roster: fullname roster).
    let lease = format!("--leader-election-lease={NAMESPACE}/roster");
    let operator = Operator::start(&token_config, &dir, "operator-serviceaccount", &[&lease]).await?;
    let ns = Ns::create(admin.clone(), "rbac-proof").await?;
    flow(&ns, &mailpit, &operator).await.context("the flow under the chart's ServiceAccount")?;
    let log = std::fs::read_to_string(operator.process.log())?;
    let forbidden: Vec<&str> =
        log.lines().filter(|l| l.contains("forbidden") || l.contains("Forbidden")).collect();
    ensure!(forbidden.is_empty(), "the operator was refused:\n{}", forbidden.join("\n"));

    // What the ServiceAccount may do beyond what any account may (a bare one shows that),
    // against what the API server's audit log shows it did: both ways equal.
    command(&kubectl(), &["create", "serviceaccount", "bare", "-n", NAMESPACE], config, None)?;
    let baseline =
        can_i(config, &format!("system:serviceaccount:{NAMESPACE}:bare"), "default", &BTreeMap::new())?;
    let can_i = |account: &str, namespace: &str| can_i(config, account, namespace, &baseline);
    let granted = can_i(&account, &ns.name)?;
    let used = used_by(plane.audit_log(), &account, &ns.name)?;
    ensure!(
        granted == used,
        "the chart's RBAC differs from what roster used (audit log):\n granted {granted:?}\n used    {used:?}"
    );
    // In the release namespace, the leader-election Lease: what it may do is what it did
    // (acquired, read, renewed). The flow lasts longer than a retry period.
    const LEASES: &str = "leases.coordination.k8s.io";
    let lease_granted = can_i(&account, NAMESPACE)?.remove(LEASES);
    let lease_used = used_by(plane.audit_log(), &account, NAMESPACE)?.remove(LEASES);
    ensure!(
        lease_granted.is_some() && lease_granted == lease_used,
        "the chart's Lease permissions differ from what roster used: granted {lease_granted:?}, used {lease_used:?}"
    );

    // With watchNamespaces, the same only in those namespaces.
    let scoped = command(
        &helm,
        &[
            "template",
            "scoped",
            &chart(),
            "-n",
            NAMESPACE,
            "--set",
            "watchNamespaces={team-a}",
            "--set",
            "crds.enabled=false",
        ],
        config,
        None,
    )?;
    command(&kubectl(), &["create", "namespace", "team-a"], config, None)?;
    command(&kubectl(), &["apply", "-f", "-"], config, Some(&scoped.stdout))?;
    let scoped_account = format!("system:serviceaccount:{NAMESPACE}:scoped-roster");
    ensure!(can_i(&scoped_account, "team-a")? == used, "a watched namespace lacks permissions");
    let elsewhere = can_i(&scoped_account, "default")?;
    ensure!(elsewhere.is_empty(), "permissions outside the watched namespaces: {elsewhere:?}");
    Ok(())
}

/// What `account` did with the API in `namespace` (and cluster-wide, for its watches), from
/// the API server's audit log, as `kubectl auth can-i --list` spells it: resource → verbs.
/// Refused requests count too: they are what the code needed and was not granted.
fn used_by(audit_log: &Path, account: &str, namespace: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(audit_log)?.lines() {
        let event: serde_json::Value = serde_json::from_str(line)?;
        let object = &event["objectRef"];
        if event["user"]["username"] != account || object.is_null() {
            continue;
        }
        if object["namespace"].as_str().is_some_and(|ns| ns != namespace) {
            continue;
        }
        let str = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        let mut resource = str(&object["resource"]);
        if let Some(group) = object["apiGroup"].as_str().filter(|g| !g.is_empty()) {
            resource = format!("{resource}.{group}");
        }
        if let Some(subresource) = object["subresource"].as_str() {
            resource = format!("{resource}/{subresource}");
        }
        used.entry(resource).or_default().insert(str(&event["verb"]));
    }
    Ok(used.into_iter().map(|(r, v)| (r, v.into_iter().collect::<Vec<_>>().join(" "))).collect())
}

/// The resources and verbs `account` may use in `namespace`, as `kubectl auth can-i --list`
/// reports them, without non-resource URLs and without what `baseline` lists.
fn can_i(
    config: &Path,
    account: &str,
    namespace: &str,
    baseline: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let listed =
        command(&kubectl(), &["auth", "can-i", "--list", "--as", account, "-n", namespace], config, None)?;
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in listed.stdout.lines().skip(1) {
        let Some(resource) =
            line.split_whitespace().next().filter(|_| !line.starts_with(char::is_whitespace))
        else {
            continue;
        };
        let Some(start) = line.rfind('[') else { continue };
        let verbs = line[start..].trim().trim_matches(['[', ']']).split_whitespace().map(str::to_owned);
        granted.entry(resource.to_owned()).or_default().extend(verbs);
    }
    let listed = granted.into_iter().map(|(r, v)| (r, v.into_iter().collect::<Vec<_>>().join(" ")));
    Ok(listed.filter(|(r, v)| baseline.get(r) != Some(v)).collect())
}

/// The admin kubeconfig with the user replaced by a bearer token.
fn token_kubeconfig(admin: &Path, token: &str) -> anyhow::Result<String> {
    let mut config: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(admin)?)?;
    config["users"] = json!([{"name": "serviceaccount", "user": {"token": token}}]);
    config["contexts"][0]["context"]["user"] = json!("serviceaccount");
    Ok(serde_norway::to_string(&config)?)
}

/// Every path that needs a permission: User → emailed invitation → accepted in the portal →
/// ACTIVE → MfaReset → Completed and deleted → PasswordReset → Completed and deleted; an
/// OidcClient's secret generated and removed; a user deactivated before onboarding and
/// reactivated; a handed-over link withdrawn.
async fn flow(ns: &Ns, mailpit: &Mailpit, operator: &Operator) -> anyhow::Result<()> {
    let address = email("proof", ns);
    ns.apply(user_manifest("proof", json!({"email": address}), json!({}))).await?;
    wait_for(&ns.api::<UserInvite>(), "proof-invite", "Sent", |i| phase_of(i) == "Sent").await?;
    let messages = messages_at(&mailpit.api_url, &address).await?;
    let first = messages.first().context("no invitation in Mailpit")?;
    let text = message_text_at(&mailpit.api_url, first).await?;
    let token = token_in(&text).context("no link in the invitation")?;
    let client = reqwest::Client::new();
    let accept = client
        .post(format!("{}/api/v1/invites/{token}/accept", operator.portal_url))
        .json(&json!({"password": crate::portal::PASSWORD}))
        .send()
        .await?;
    ensure!(accept.status() == 200, "accept: {}", accept.status());
    let secret =
        accept.json::<serde_json::Value>().await?["totp"]["secret"].as_str().unwrap_or_default().to_owned();
    let confirm = client
        .post(format!("{}/api/v1/invites/{token}/totp", operator.portal_url))
        .json(&json!({"code": crate::portal::code(&secret)?}))
        .send()
        .await?;
    ensure!(confirm.status() == 200, "totp: {}", confirm.status());
    wait_for(&ns.raw::<User>(), "proof", "ACTIVE", |u| phase(u) == "ACTIVE").await?;
    // "Forgot your password?": roster creates the PasswordReset itself.
    let asked = client
        .post(format!("{}/api/v1/password-resets", operator.portal_url))
        .json(&json!({"identifier": address}))
        .send()
        .await?;
    ensure!(asked.status() == 202, "recovery: {}", asked.status());
    crate::harness::poll_until("the person's own reset delivered", || async {
        let resets = ns.api::<PasswordReset>().list(&Default::default()).await?.items;
        Ok(resets.iter().any(|r| {
            r.spec.initiator == roster::api::Initiator::Person
                && r.status.as_ref().and_then(|s| s.phase) == Some(roster::api::ResetPhase::Completed)
        }))
    })
    .await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "proof-reset"},
        "spec": {"userRef": {"name": "proof"}, "reason": "rbac proof", "delivery": "Email", "ttlSecondsAfterFinished": 1},
    }))
    .await?;
    let reset = wait_for(&ns.raw::<MfaReset>(), "proof-reset", "Completed", |r| {
        r.data["status"]["phase"] == "Completed"
    })
    .await?;
    ensure!(condition(&reset, "Ready")["reason"] == "Reset", "{}", reset.data["status"]);
    crate::harness::poll_until("the finished reset deleted", || async {
        Ok(ns.raw::<MfaReset>().get_opt("proof-reset").await?.is_none())
    })
    .await?;
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "PasswordReset", "metadata": {"name": "proof-password"},
        "spec": {"userRef": {"name": "proof"}, "reason": "rbac proof", "ttlSecondsAfterFinished": 1},
    }))
    .await?;
    crate::harness::poll_until("the finished password reset deleted", || async {
        Ok(ns.raw::<PasswordReset>().get_opt("proof-password").await?.is_none())
    })
    .await?;

    // An application's client: its secret generated, then deleted when it turns public.
    let app = |public: bool| {
        json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "proof-app"},
            "spec": {"redirectUris": ["https://app.example.com/cb"], "public": public},
        })
    };
    ns.apply(app(false)).await?;
    wait_for(&ns.raw::<OidcClient>(), "proof-app", "its Secret", |c| {
        c.data["status"]["secretRef"]["name"] == "proof-app-oidc"
    })
    .await?;
    ns.apply(app(true)).await?;
    crate::harness::poll_until("the unused client Secret deleted", || async {
        Ok(ns.api::<k8s_openapi::api::core::v1::Secret>().get_opt("proof-app-oidc").await?.is_none())
    })
    .await?;

    // Deactivated before onboarding, then reactivated: the revoked automatic invite is sent
    // again; deactivated once more, the same Event again.
    ns.apply(user_manifest("dormant", json!({"email": email("dormant", ns)}), json!({}))).await?;
    let invites = ns.api::<UserInvite>();
    wait_for(&invites, "dormant-invite", "Sent", |i| phase_of(i) == "Sent").await?;
    for (state, invite_phase) in [("Inactive", "Revoked"), ("Active", "Sent"), ("Inactive", "Revoked")] {
        set_state(ns, "dormant", state).await?;
        wait_for(&invites, "dormant-invite", invite_phase, move |i| phase_of(i) == invite_phase).await?;
    }
    let resent = invites.get("dormant-invite").await?;
    ensure!(resent.spec.resend == 1, "the automatic invite was not resent: {:?}", resent.spec);

    // A handed-over link, withdrawn: its Secret is deleted.
    ns.apply(user_manifest(
        "handed",
        json!({"email": email("handed", ns), "invite": {"policy": "Manual"}}),
        json!({}),
    ))
    .await?;
    ns.apply(crate::invites::invite(
        "handed-invite",
        json!({"userRef": {"name": "handed"}, "delivery": "Link"}),
    ))
    .await?;
    wait_for(&invites, "handed-invite", "Sent", |i| phase_of(i) == "Sent").await?;
    set_state(ns, "handed", "Inactive").await?;
    wait_for(&invites, "handed-invite", "Revoked", |i| phase_of(i) == "Revoked").await?;
    crate::harness::poll_until("the link Secret deleted", || async {
        Ok(ns.api::<k8s_openapi::api::core::v1::Secret>().get_opt("handed-invite-link").await?.is_none())
    })
    .await
}
