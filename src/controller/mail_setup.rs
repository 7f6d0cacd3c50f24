//! What sending an email needs, as the cluster says now: the SMTP settings from the Secret
//! `--smtp-secret` names, and the templates — built in, overridden by the ConfigMap
//! `--templates-configmap` names. Both are kept current by a watch of that one object (so an
//! email costs no read from the API server) and rebuilt only when the object's
//! resourceVersion changed, so an admin's fix reaches the next delivery attempt without a
//! restart. Until a watch has listed its object (again, after a watch error), a GET reads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use tokio::sync::Mutex;

use super::watched::{Watched, rebuilt};

use crate::api::conditions::reasons;
use crate::config::ObjectName;
use crate::mail::{Mailer, SmtpSettings, Templates};

/// Why nothing could be sent: the settings, not the message or the server. An admin must
/// act; the message names the object and what is wrong with it, never a value from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// No SMTP Secret is configured, it cannot be read, or it is unusable.
    #[error("no usable SMTP settings: {0}")]
    Smtp(String),
    /// The template ConfigMap cannot be read, or a template in it does not parse or render.
    #[error("the email templates are unusable: {0}")]
    Templates(String),
}

impl SetupError {
    /// The condition reason this failure is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Smtp(_) => reasons::SMTP_NOT_CONFIGURED,
            Self::Templates(_) => reasons::TEMPLATE_INVALID,
        }
    }
}

/// Why an email was not sent: roster's settings, or the SMTP exchange.
#[derive(Debug)]
pub enum Undelivered {
    /// The settings: an admin must act.
    Setup(SetupError),
    /// The SMTP exchange.
    Send(crate::mail::SendError),
}

/// The SMTP transport and templates, each rebuilt when its source object changes.
pub struct MailSetup {
    smtp_secret: Option<Watched<Secret>>,
    templates_configmap: Option<Watched<ConfigMap>>,
    built_in: Arc<Templates>,
    mailer: Mutex<Option<(String, Mailer)>>,
    templates: Mutex<Option<(String, Arc<Templates>)>>,
}

impl MailSetup {
    /// Watches the named Secret and ConfigMap (the returned future runs the watches until
    /// dropped); `built_in` serves when no ConfigMap is named.
    pub fn new(
        client: Client,
        smtp_secret: Option<ObjectName>,
        templates_configmap: Option<ObjectName>,
        built_in: Templates,
    ) -> (Self, BoxFuture<'static, ()>) {
        let (smtp_secret, smtp_watch) = Watched::start(&client, smtp_secret);
        let (templates_configmap, templates_watch) = Watched::start(&client, templates_configmap);
        let setup = Self {
            smtp_secret,
            templates_configmap,
            built_in: Arc::new(built_in),
            mailer: Mutex::new(None),
            templates: Mutex::new(None),
        };
        (setup, futures::future::join(smtp_watch, templates_watch).map(drop).boxed())
    }

    /// A mailer for the SMTP Secret as it is now.
    pub async fn mailer(&self) -> Result<Mailer, SetupError> {
        let watched =
            self.smtp_secret.as_ref().ok_or_else(|| SetupError::Smtp("--smtp-secret is not set".into()))?;
        let reference = watched.reference();
        let secret = watched.get().await.map_err(SetupError::Smtp)?;
        rebuilt(&self.mailer, secret.as_ref(), || {
            let settings = SmtpSettings::from_secret_data(secret.data.as_ref().unwrap_or(&BTreeMap::new()))
                .map_err(|e| SetupError::Smtp(format!("Secret {reference}: {e}")))?;
            Mailer::new(&settings).map_err(|e| SetupError::Smtp(e.to_string()))
        })
        .await
    }

    /// The templates as the ConfigMap says now (its keys are template names, e.g.
    /// `invitation.fr.subject.txt`), or the built-in ones when none is named.
    pub async fn templates(&self) -> Result<Arc<Templates>, SetupError> {
        let Some(watched) = self.templates_configmap.as_ref() else {
            return Ok(self.built_in.clone());
        };
        let reference = watched.reference();
        let map = watched.get().await.map_err(SetupError::Templates)?;
        rebuilt(&self.templates, map.as_ref(), || {
            Templates::new(map.data.as_ref().unwrap_or(&BTreeMap::new()))
                .map(Arc::new)
                .map_err(|e| SetupError::Templates(format!("ConfigMap {reference}: {e}")))
        })
        .await
    }
}
