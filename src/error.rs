//! The crate's error type: every failure carries what roster was doing and on which object,
//! and a short kind label for metrics.

/// Something roster could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action} {kind} {object}: {source}")]
    Kube {
        /// What roster was doing, e.g. "patching status of".
        action: &'static str,
        /// The kind of the object concerned.
        kind: String,
        /// `namespace/name` of the object concerned.
        object: String,
        /// The client's error (boxed: it is large, and errors travel by value).
        #[source]
        source: Box<kube::Error>,
    },
    /// An object from the API server has no uid, so nothing can be owned by it.
    #[error("{kind} {object} has no uid")]
    MissingUid {
        /// The kind of the object concerned.
        kind: String,
        /// `namespace/name` of the object concerned.
        object: String,
    },
    /// A Secret roster would write exists and is not roster's (no controller ownerReference
    /// to the expected owner): it is left alone.
    #[error("Secret {secret} exists and does not belong to roster's object; rename or delete it")]
    SecretNotOwned {
        /// `namespace/name`.
        secret: String,
    },
    /// Someone else wrote the object between roster's read and its write (retried).
    #[error("{object} changed while roster was writing it; trying again")]
    Conflict {
        /// `namespace/name`.
        object: String,
    },
    /// An email could not be sent (retried with backoff).
    #[error("sending {what}: {reason}")]
    Mail {
        /// Which email.
        what: &'static str,
        /// Why not (the SMTP server's reply or the setup problem; never a link).
        reason: String,
    },
    /// A credential could not be made (e.g. the OS random number generator failed).
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    /// Facts could not be written into a credentials Secret.
    #[error(transparent)]
    Facts(Box<crate::facts::WriteError>),
    /// Sign-in sessions could not be ended.
    #[error("ending the sign-in sessions of {user}: {source}")]
    Sessions {
        /// `namespace/name` of the User.
        user: String,
        /// What failed.
        #[source]
        source: Box<crate::oidc::state::StateError>,
    },
    /// A CRD could not be rendered.
    #[error("rendering CRDs: {0}")]
    Render(#[from] serde_norway::Error),
    /// The process could not start a server or a watch.
    #[error("{0}")]
    Startup(String),
}

impl Error {
    /// A short, stable label for the `error` label of failure metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::MissingUid { .. } => "missing_uid",
            Error::SecretNotOwned { .. } => "secret_not_owned",
            Error::Conflict { .. } => "conflict",
            Error::Mail { .. } => "mail",
            Error::Credentials(_) => "credentials",
            Error::Facts(_) => "facts",
            Error::Sessions { .. } => "sessions",
            Error::Render(_) => "render",
            Error::Startup(_) => "startup",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
