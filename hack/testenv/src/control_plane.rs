//! etcd + kube-apiserver + kube-controller-manager on free loopback ports, with an admin
//! kubeconfig, ready when `start` returns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde::Deserialize;

use crate::pki::Pki;
use crate::process::Process;
use crate::{Error, Result, io, tool_path};

/// How long each component gets to become ready.
const STARTUP_DEADLINE: Duration = Duration::from_secs(90);
/// How often readiness is polled while starting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running control plane. Dropping it stops every process.
pub struct ControlPlane {
    /// Stopped in reverse order: controller-manager, API server, etcd.
    processes: Vec<Process>,
    kubeconfig: PathBuf,
    server: String,
    audit_log: PathBuf,
    /// How the API server was started, to start it again the same way (same port, same
    /// certificates, same etcd) after [`stop_api_server`](Self::stop_api_server).
    apiserver: Launch,
    /// How many times the API server has been started; names each start's log.
    apiserver_starts: usize,
}

/// A program with its arguments and log directory.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
}

/// Where each process sits in [`ControlPlane::processes`].
const ETCD: usize = 0;
const APISERVER: usize = 1;

/// The audit policy of the test control plane: every request's metadata (who, verb,
/// resource, namespace, response code), once it is answered — the evidence the RBAC proof
/// derives roster's permissions from. Bodies are never logged (they hold Secrets).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

impl ControlPlane {
    /// Starts a fresh control plane whose data, certificates, kubeconfig and logs live under
    /// `dir` (created if missing), with the CRDs in the multi-document YAML `crds` installed
    /// before the controller-manager starts (its garbage collector then knows them from the
    /// start, instead of after its next discovery refresh). Returns once the API server
    /// answers `/readyz` and the controller-manager `/healthz`.
    ///
    /// The processes receive SIGKILL when the calling thread ends: call from a thread that
    /// outlives the control plane (e.g. a current-thread runtime on `main`).
    pub async fn start(dir: &Path, crds: &str) -> Result<Self> {
        Self::start_with(dir, crds, &[]).await
    }

    /// [`start`](Self::start), with `apiserver_flags` added to kube-apiserver's (e.g.
    /// `--authentication-config=…`).
    pub async fn start_with(dir: &Path, crds: &str, apiserver_flags: &[String]) -> Result<Self> {
        let etcd = tool_path("etcd")?;
        let apiserver = tool_path("kube-apiserver")?;
        let controller_manager = tool_path("kube-controller-manager")?;

        let pki_dir = dir.join("pki");
        let logs = dir.join("logs");
        for d in [&pki_dir, &logs] {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let pki = Pki::generate()?;
        let file = |name: &str, contents: &str| -> Result<String> {
            let path = pki_dir.join(name);
            std::fs::write(&path, contents).map_err(io(format!("writing {}", path.display())))?;
            Ok(path.display().to_string())
        };
        let ca = file("ca.crt", &pki.ca_cert)?;
        let serving_cert = file("apiserver.crt", &pki.serving_cert)?;
        let serving_key = file("apiserver.key", &pki.serving_key)?;
        let admin_cert = file("admin.crt", &pki.admin_cert)?;
        let admin_key = file("admin.key", &pki.admin_key)?;
        let sa_key = file("service-account.key", &pki.service_account_key)?;
        let sa_pub = file("service-account.pub", &pki.service_account_public_key)?;

        let [etcd_client, etcd_peer, apiserver_port, kcm_port] = free_ports()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, admin_kubeconfig(&server, &ca, &admin_cert, &admin_key))
            .map_err(io("writing the kubeconfig"))?;

        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY).map_err(io("writing the audit policy"))?;
        let audit_log = logs.join("audit.log");
        let apiserver = Launch { program: apiserver, args: Vec::new(), logs: logs.clone() };
        let mut plane =
            Self { processes: Vec::new(), kubeconfig, server, audit_log, apiserver, apiserver_starts: 1 };

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        plane.processes.push(Process::spawn(
            "etcd",
            &etcd,
            &args(&[
                "--name=default",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]),
            &[],
            &logs,
        )?);

        plane.apiserver.args = args(&[
            &format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={apiserver_port}"),
            &format!("--tls-cert-file={serving_cert}"),
            &format!("--tls-private-key-file={serving_key}"),
            &format!("--client-ca-file={ca}"),
            "--authorization-mode=RBAC",
            &format!("--service-account-issuer={}", plane.server),
            &format!("--service-account-key-file={sa_pub}"),
            &format!("--service-account-signing-key-file={sa_key}"),
            "--service-cluster-ip-range=10.96.0.0/16",
            // No kubelet, no pods: nothing may be advertised in the `kubernetes` Service.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            &format!("--audit-policy-file={}", audit_policy.display()),
            &format!("--audit-log-path={}", plane.audit_log.display()),
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ])
        .into_iter()
        .chain(apiserver_flags.iter().cloned())
        .collect();
        plane.processes.push(plane.spawn_api_server("kube-apiserver")?);
        plane.api_server_ready().await?;
        plane.install_crds(crds).await?;

        let kubeconfig = plane.kubeconfig.display().to_string();
        plane.processes.push(Process::spawn(
            "kube-controller-manager",
            &controller_manager,
            &args(&[
                &format!("--kubeconfig={kubeconfig}"),
                &format!("--authentication-kubeconfig={kubeconfig}"),
                &format!("--authorization-kubeconfig={kubeconfig}"),
                "--controllers=garbage-collector-controller,namespace-controller",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={kcm_port}"),
                "--profiling=false",
            ]),
            &[],
            &logs,
        )?);
        let kcm = insecure_client(&format!("https://127.0.0.1:{kcm_port}"))?;
        plane.wait_until(2, "GET /healthz", || probe(kcm.clone(), "/healthz")).await?;

        Ok(plane)
    }

    /// Kills the API server (SIGKILL) — a crashed or restarting control-plane node. etcd
    /// keeps every object; clients get connection errors until
    /// [`start_api_server`](Self::start_api_server).
    pub fn stop_api_server(&mut self) {
        self.processes[APISERVER].kill();
    }

    /// Starts the API server again, as it was started (same port, certificates and etcd),
    /// logging to `kube-apiserver-<n>.log`; returns once it answers `/readyz`.
    pub async fn start_api_server(&mut self) -> Result<()> {
        self.apiserver_starts += 1;
        self.processes[APISERVER] =
            self.spawn_api_server(&format!("kube-apiserver-{}", self.apiserver_starts))?;
        self.api_server_ready().await
    }

    /// Starts kube-apiserver as [`Launch`] says, logging to `<name>.log`.
    fn spawn_api_server(&self, name: &str) -> Result<Process> {
        let launch = &self.apiserver;
        Process::spawn(name, &launch.program, &launch.args, &[], &launch.logs)
    }

    /// Waits until the API server answers `/readyz`.
    async fn api_server_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        self.wait_until(APISERVER, "GET /readyz", || probe(client.clone(), "/readyz")).await
    }

    /// Freezes etcd (SIGSTOP): the API server still answers from its watch cache, but every
    /// write waits on etcd until [`thaw_etcd`](Self::thaw_etcd) or its own timeout.
    /// Whether the signal was delivered.
    pub fn freeze_etcd(&self) -> bool {
        self.processes[ETCD].signal("-STOP")
    }

    /// Lets a frozen etcd run again (SIGCONT). Whether the signal was delivered.
    pub fn thaw_etcd(&self) -> bool {
        self.processes[ETCD].signal("-CONT")
    }

    /// The admin kubeconfig (identity `roster-testenv-admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's audit log: one JSON event per answered request (metadata only).
    pub fn audit_log(&self) -> &Path {
        &self.audit_log
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// Server-side applies every CRD in the multi-document YAML `crds` (none when empty) and
    /// waits until each is Established.
    async fn install_crds(&self, crds: &str) -> Result<()> {
        if crds.trim().is_empty() {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let params = PatchParams::apply("roster-testenv").force();
        for document in serde_norway::Deserializer::from_str(crds) {
            let crd = CustomResourceDefinition::deserialize(document)
                .map_err(|e| Error::Setup(format!("parsing CRDs: {e}")))?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .map_err(|source| Error::Kube { context: format!("applying CRD {name}"), source })?;
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(STARTUP_DEADLINE, established)
                .await
                .map_err(|_| Error::Setup(format!("CRD {name} not Established within {STARTUP_DEADLINE:?}")))?
                .map_err(|e| Error::Setup(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(())
    }

    /// Polls `ready` until it answers `Ok`, failing early when process `index` exits and at
    /// the deadline with the end of its log.
    async fn wait_until<F, Fut>(&mut self, index: usize, what: &str, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<(), String>>,
    {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            for p in &mut self.processes {
                p.check_running()?;
            }
            match ready().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(self.processes[index].not_ready(format!("{what} not ok within {STARTUP_DEADLINE:?}: {last}")))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop();
        }
    }
}

/// A client for the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Setup(format!("kubeconfig {}: {e}", path.display())))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Setup(format!("kubeconfig {}: {e}", path.display())))?;
    Client::try_from(config).map_err(|source| Error::Kube { context: "building a client".into(), source })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Ports the kernel hands out for binding on loopback; released just before use.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port")))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(io("reading a bound port"))?.port();
    }
    Ok(ports)
}

fn admin_kubeconfig(server: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: roster-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: roster-testenv
  context:
    cluster: roster-testenv
    user: admin
    namespace: default
current-context: roster-testenv
"
    )
}

/// A client for a component's self-signed health endpoint.
fn insecure_client(url: &str) -> Result<Client> {
    let mut config = Config::new(url.parse().map_err(|e| Error::Setup(format!("{url}: {e}")))?);
    config.accept_invalid_certs = true;
    Client::try_from(config)
        .map_err(|source| Error::Kube { context: format!("building a client for {url}"), source })
}

async fn probe(client: Client, path: &str) -> std::result::Result<(), String> {
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(e) => Err(e.to_string()),
    }
}
