//! The shared test environment and per-test namespaces.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::wait::await_condition;
use kube::{Client, Resource};
use libtest_mimic::{Failed, Trial};
use roster::api::{MfaReset, PasswordReset, User, UserInvite};
use roster_testenv::{ControlPlane, Mailpit, Process, Roster, client_for};
use serde::de::DeserializeOwned;

/// How long a test waits for any one condition.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The only email domain (and its subdomains) the operators under test allow.
pub const ALLOWED_DOMAIN: &str = "example.com";
/// How often a condition that cannot be watched is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

static SHARED: OnceLock<Shared> = OnceLock::new();

/// What tests need of the environment.
pub struct Shared {
    pub kubeconfig: PathBuf,
    /// Base URL of the shared Mailpit's HTTP API (the operators' SMTP server).
    pub mailpit_api: String,
    pub operator_url: String,
    /// Base URL of the shared operator's portal (also what its links start with).
    pub portal_url: String,
    pub operator_log: PathBuf,
    pub work_dir: PathBuf,
}

/// The environment: control plane, CRDs, and the operator. Dropping it stops everything.
pub struct Env {
    _operator: Operator,
    _mailpit: Mailpit,
    _plane: ControlPlane,
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        let work_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
        let _ = std::fs::remove_dir_all(&work_dir);
        std::fs::create_dir_all(&work_dir)?;
        let crds = std::fs::read_to_string(repo_path("crds/roster.yaml"))?;
        let plane = ControlPlane::start(&work_dir.join("control-plane"), &crds).await?;
        let mailpit = Mailpit::start(&work_dir.join("mailpit"), "mailpit", false).await?;
        smtp_secret(&plane.client().await?, mailpit.smtp_port).await?;
        let operator = Operator::start(plane.kubeconfig(), &work_dir, "operator", &[]).await?;
        let shared = Shared {
            kubeconfig: plane.kubeconfig().to_owned(),
            mailpit_api: mailpit.api_url.clone(),
            operator_url: operator.url.clone(),
            portal_url: operator.portal_url.clone(),
            operator_log: operator.process.log().to_owned(),
            work_dir,
        };
        if SHARED.set(shared).is_err() {
            bail!("the test environment was started twice");
        }
        Ok(Self { _operator: operator, _mailpit: mailpit, _plane: plane })
    }
}

/// Namespace and name of the SMTP Secret the operators under test use.
pub const SMTP_SECRET: (&str, &str) = ("roster-system", "smtp");
/// The SMTP password the operators under test log in with; the log check looks for it.
pub const SMTP_PASSWORD: &str = "smtp-Pa55word-marker";

/// Creates the SMTP Secret pointing at Mailpit.
pub async fn smtp_secret(client: &Client, port: u16) -> anyhow::Result<()> {
    let (namespace, name) = SMTP_SECRET;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {
            "host": "127.0.0.1", "port": port.to_string(), "tls": "none",
            "from": "Example Corp <no-reply@example.com>",
            "username": "roster", "password": SMTP_PASSWORD,
        }
    }))?;
    Api::namespaced(client.clone(), namespace).create(&PostParams::default(), &secret).await?;
    Ok(())
}

pub fn shared() -> &'static Shared {
    SHARED.get().expect("the test environment is started before any test runs")
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The signing keys Secret operators under test share (in the SMTP Secret's namespace), as
/// the chart names it for a release called roster.
pub const SIGNING_KEYS: &str = "roster-signing-keys";

/// The `--issuer-url` operators under test run with.
pub const ISSUER: &str = "https://id.example.test";

/// A `roster run` process against the test control plane.
pub struct Operator {
    pub process: Process,
    /// Base URL of its metrics port.
    pub url: String,
    /// Base URL of its portal, which is also the `--portal-url` in its links.
    pub portal_url: String,
}

impl Operator {
    /// The sum of the Prometheus metric `name` over its labels, as `/metrics` says now.
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("{}/metrics", self.url)).await?.text().await?;
        let values = text
            .lines()
            .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok());
        Ok(values.sum())
    }

    /// Starts `roster run` with `extra` flags and waits until it answers `/readyz`.
    pub async fn start(
        kubeconfig: &Path,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            // The tests share one client address; the rate-limit test runs its own operator.
            "--portal-rate-limit=100000".to_owned(),
            "--recovery-rate-limit=100000".to_owned(),
            "--oidc-rate-limit=100000".to_owned(),
            // Fast hashing: the tests exercise the flow, not argon2's cost.
            "--argon2-memory-kib=1024".to_owned(),
            "--argon2-iterations=1".to_owned(),
            format!("--allowed-email-domains={ALLOWED_DOMAIN}"),
            format!("--smtp-secret={}/{}", SMTP_SECRET.0, SMTP_SECRET.1),
            "--org-name=Example Corp".to_owned(),
            format!("--issuer-url={ISSUER}"),
            format!("--signing-keys-secret={}/{SIGNING_KEYS}", SMTP_SECRET.0),
            "--log-level=info,roster=debug".to_owned(),
        ];
        // A flag given in `extra` replaces the default (clap refuses a flag given twice).
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        args.retain(|arg| !extra.iter().any(|e| flag(e) == flag(arg)));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let binary = Path::new(env!("CARGO_BIN_EXE_roster"));
        let env = [("NO_COLOR", "1")];
        let started =
            Roster::start(binary, kubeconfig, (log_dir, name), &args, &env, Duration::from_secs(60)).await?;
        Ok(Self { process: started.process, url: started.metrics_url, portal_url: started.portal_url })
    }
}

/// A control plane and a Mailpit of one test's own (under `dir`), with the SMTP Secret the
/// operators under test read pointing at it; `chaos` enables Mailpit's chaos API, `keep` is
/// how many messages it holds, `apiserver_flags` are added to kube-apiserver's.
pub async fn plane_and_mailpit(
    dir: &Path,
    chaos: bool,
    keep: usize,
    apiserver_flags: &[String],
) -> anyhow::Result<(ControlPlane, Mailpit, Client)> {
    let crds = std::fs::read_to_string(repo_path("crds/roster.yaml"))?;
    let plane = ControlPlane::start_with(&dir.join("control-plane"), &crds, apiserver_flags).await?;
    let mailpit = Mailpit::start_keeping(&dir.join("mailpit"), "mailpit", chaos, keep).await?;
    let client = plane.client().await?;
    smtp_secret(&client, mailpit.smtp_port).await?;
    Ok((plane, mailpit, client))
}

/// A control plane of one test's own — for API server flags, or for an operator whose
/// configuration (another issuer URL) would fight the shared operator over the same objects
/// — with the namespace the signing keys live in and the test's namespace.
pub async fn own_plane(
    dir: &Path,
    apiserver_flags: &[String],
    test: &str,
) -> anyhow::Result<(ControlPlane, Ns)> {
    let crds = std::fs::read_to_string(repo_path("crds/roster.yaml"))?;
    let plane = ControlPlane::start_with(&dir.join("control-plane"), &crds, apiserver_flags).await?;
    let admin = plane.client().await?;
    let system: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": SMTP_SECRET.0}}))?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &system)
        .await
        .with_context(|| format!("creating namespace {}", SMTP_SECRET.0))?;
    let ns = Ns::create(admin, test).await?;
    Ok((plane, ns))
}

/// A test that brings what it needs itself (a control plane or operator of its own, or
/// none): no namespace on the shared one, just a runtime.
pub fn standalone<F, Fut>(name: &'static str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(test()).map_err(|e| format!("{e:#}").into())
    })
}

/// A test in its own namespace.
pub fn trial<F, Fut>(name: &'static str, test: F) -> Trial
where
    F: FnOnce(Ns) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(run_in_namespace(name, test))
    })
}

async fn run_in_namespace<F, Fut>(name: &str, test: F) -> Result<(), Failed>
where
    F: FnOnce(Ns) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = client_for(&shared().kubeconfig).await.map_err(|e| e.to_string())?;
    let ns = Ns::create(client, name).await.map_err(|e| format!("{e:#}"))?;
    let outcome = AssertUnwindSafe(test(ns.clone())).catch_unwind().await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".into()),
        ),
    };
    let result = match failure {
        None => Ok(()),
        Some(message) => Err(format!("{message}\n{}", ns.dump().await).into()),
    };
    ns.delete().await;
    result
}

/// A namespace of one test, with its client.
#[derive(Clone)]
pub struct Ns {
    pub client: Client,
    pub name: String,
}

impl Ns {
    /// Creates a namespace named after `test` (and this run) through `client`.
    pub async fn create(client: Client, test: &str) -> anyhow::Result<Self> {
        let slug: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let slug = slug.trim_matches('-');
        let name = format!("{}-{:x}", &slug[..slug.len().min(48)].trim_end_matches('-'), std::process::id());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self { client, name })
    }

    /// Deletes the namespace (and so everything in it).
    pub async fn delete(&self) {
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()).await;
    }

    /// A typed API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// An untyped API for roster's kind `kind` in this namespace.
    pub fn kind_api(&self, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(roster::api::GROUP, "v1alpha1", kind);
        Api::namespaced_with(self.client.clone(), &self.name, &ApiResource::from_gvk(&gvk))
    }

    /// An untyped API for `K` in this namespace, to send what `K` cannot express.
    pub fn raw<K: Resource<DynamicType = ()>>(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.name, &ApiResource::erase::<K>(&()))
    }

    /// Server-side applies `manifest` (any kind roster serves) with strict field validation.
    pub async fn apply(&self, manifest: serde_json::Value) -> anyhow::Result<DynamicObject> {
        let object: DynamicObject = serde_json::from_value(manifest)?;
        let types = object.types.clone().context("manifest without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.name, &ApiResource::from_gvk(&gvk));
        let name = object.metadata.name.clone().context("manifest without a name")?;
        let params = PatchParams {
            field_validation: Some(kube::api::ValidationDirective::Strict),
            ..PatchParams::apply("e2e")
        };
        Ok(api.patch(&name, &params, &Patch::Apply(&object)).await?)
    }

    /// roster's objects in this namespace and the end of the operator's log.
    async fn dump(&self) -> String {
        let mut out = format!("--- roster objects in namespace {} ---\n", self.name);
        out += &dump_kind::<User>(self).await;
        out += &dump_kind::<UserInvite>(self).await;
        out += &dump_kind::<MfaReset>(self).await;
        out += &dump_kind::<PasswordReset>(self).await;
        let log = std::fs::read_to_string(&shared().operator_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        out += &format!("--- last lines of {} ---\n", shared().operator_log.display());
        out += &lines[lines.len().saturating_sub(40)..].join("\n");
        out
    }
}

async fn dump_kind<K>(ns: &Ns) -> String
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    match ns.api::<K>().list(&ListParams::default()).await {
        Ok(list) => {
            list.items.iter().map(|o| serde_norway::to_string(o).unwrap_or_default() + "---\n").collect()
        }
        Err(e) => format!("listing {}: {e}\n", K::kind(&())),
    }
}

/// Waits until object `name` satisfies `condition`; on timeout, the error shows the object.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(&K) -> bool + Send + 'static,
) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    let waited = tokio::time::timeout(
        DEADLINE,
        await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&condition)),
    )
    .await;
    match waited {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => bail!("{name} disappeared while waiting until {what}"),
        Ok(Err(e)) => bail!("watching {name} until {what}: {e}"),
        Err(_) => {
            let seen = api.get_opt(name).await?.map(|o| serde_norway::to_string(&o).unwrap_or_default());
            bail!(
                "{name}: not {what} within {DEADLINE:?}; last seen:\n{}",
                seen.unwrap_or_else(|| "(absent)".into())
            )
        }
    }
}

/// Whether the operator has reconciled this generation of `object`: `observedGeneration`
/// matches and a `Ready` condition is set.
pub fn is_reconciled(object: &DynamicObject) -> bool {
    let status = &object.data["status"];
    let generation = object.metadata.generation;
    let has_ready = status["conditions"]
        .as_array()
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready"));
    generation.is_some() && status["observedGeneration"].as_i64() == generation && has_ready
}

/// The condition `type_` of `object`, as JSON (`Null` when absent).
pub fn condition(object: &DynamicObject, type_: &str) -> serde_json::Value {
    object.data["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

/// Polls `check` until it holds, failing at the deadline with `what`.
pub async fn poll_until<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    poll_within(what, DEADLINE, check).await
}

/// [`poll_until`] with a deadline of `within` (a batch of hundreds takes longer).
pub async fn poll_within<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not {what} within {within:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a command printed, and how it ended.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `program` with `args` and the environment variables `env`, fed `stdin` from a thread
/// (so a large input cannot block against the output it makes), to its end.
pub fn run_program(
    program: &Path,
    args: &[&str],
    env: &[(&str, std::ffi::OsString)],
    stdin: Option<&str>,
) -> anyhow::Result<Ran> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut input = child.stdin.take().context("no stdin")?;
    let writer = stdin.map(|text| {
        let text = text.to_owned();
        std::thread::spawn(move || input.write_all(text.as_bytes()))
    });
    let output = child.wait_with_output()?;
    if let Some(writer) = writer {
        writer.join().map_err(|_| anyhow::anyhow!("writing stdin panicked"))??;
    }
    Ok(Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
