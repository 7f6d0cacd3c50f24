//! roster's test environment: a real Kubernetes control plane (etcd, kube-apiserver with RBAC,
//! kube-controller-manager with only its garbage-collector and namespace controllers) started
//! on free loopback ports — what controller-runtime calls envtest — for the tests and the
//! local demo, Mailpit as a real SMTP server, and roster itself on free ports. The binaries come from
//! `hack/install-test-tools.sh`.
//!
//! Every process is started with a parent-death signal, and stopped when the
//! [`ControlPlane`] is dropped, so a failing or panicking test leaves nothing running.
#![forbid(unsafe_code)]

mod control_plane;
mod mailpit;
mod pki;
mod process;
mod roster;
mod tls_front;
mod tools;

pub use control_plane::{ControlPlane, client_for, free_ports};
pub use mailpit::Mailpit;
pub use process::Process;
pub use roster::Roster;
pub use tls_front::TlsFront;
pub use tools::tool_path;

/// What can go wrong while starting or using the test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A test tool is not installed.
    #[error("{name} not found at {path}: run hack/install-test-tools.sh to build the test tools")]
    MissingTool {
        /// The program's name.
        name: String,
        /// Where it was looked for.
        path: std::path::PathBuf,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A process did not become ready in time, or exited.
    #[error("{name} did not become ready: {reason}\n--- last lines of its log ({log}) ---\n{tail}")]
    NotReady {
        /// The process.
        name: String,
        /// Why it is considered failed.
        reason: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// Generating certificates failed.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A Kubernetes call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Anything else that keeps the environment from being set up: a kubeconfig, a CRD.
    #[error("{0}")]
    Setup(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
