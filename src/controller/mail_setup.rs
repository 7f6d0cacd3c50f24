//! What sending an email needs, as the cluster says now: the SMTP settings from the Secret
//! `--smtp-secret` names, and the templates — built in, overridden by the ConfigMap
//! `--templates-configmap` names. Both are read when an email is about to be sent and rebuilt
//! only when the object's resourceVersion changed, so an admin's fix reaches the next
//! delivery attempt without a restart.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

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
    client: Client,
    smtp_secret: Option<ObjectName>,
    templates_configmap: Option<ObjectName>,
    built_in: Arc<Templates>,
    mailer: Mutex<Option<(String, Mailer)>>,
    templates: Mutex<Option<(String, Arc<Templates>)>>,
}

impl MailSetup {
    /// Reads the named Secret and ConfigMap on demand; `built_in` serves when no ConfigMap
    /// is named.
    pub fn new(
        client: Client,
        smtp_secret: Option<ObjectName>,
        templates_configmap: Option<ObjectName>,
        built_in: Templates,
    ) -> Self {
        Self {
            client,
            smtp_secret,
            templates_configmap,
            built_in: Arc::new(built_in),
            mailer: Mutex::new(None),
            templates: Mutex::new(None),
        }
    }

    /// A mailer for the SMTP Secret as it is now.
    pub async fn mailer(&self) -> Result<Mailer, SetupError> {
        let reference =
            self.smtp_secret.as_ref().ok_or_else(|| SetupError::Smtp("--smtp-secret is not set".into()))?;
        let secret: Secret = get(&self.client, reference).await.map_err(SetupError::Smtp)?;
        let version = secret.resource_version().unwrap_or_default();
        let mut cached = self.mailer.lock().await;
        if let Some((seen, mailer)) = cached.as_ref()
            && *seen == version
        {
            return Ok(mailer.clone());
        }
        let settings = SmtpSettings::from_secret_data(&secret.data.unwrap_or_default())
            .map_err(|e| SetupError::Smtp(format!("Secret {reference}: {e}")))?;
        let mailer = Mailer::new(&settings).map_err(|e| SetupError::Smtp(e.to_string()))?;
        *cached = Some((version, mailer.clone()));
        Ok(mailer)
    }

    /// The templates as the ConfigMap says now (its keys are template names, e.g.
    /// `invitation.fr.subject.txt`), or the built-in ones when none is named.
    pub async fn templates(&self) -> Result<Arc<Templates>, SetupError> {
        let Some(reference) = self.templates_configmap.as_ref() else {
            return Ok(self.built_in.clone());
        };
        let map: ConfigMap = get(&self.client, reference).await.map_err(SetupError::Templates)?;
        let version = map.resource_version().unwrap_or_default();
        let mut cached = self.templates.lock().await;
        if let Some((seen, templates)) = cached.as_ref()
            && *seen == version
        {
            return Ok(templates.clone());
        }
        let templates = Arc::new(
            Templates::new(&map.data.unwrap_or_default())
                .map_err(|e| SetupError::Templates(format!("ConfigMap {reference}: {e}")))?,
        );
        *cached = Some((version, templates.clone()));
        Ok(templates)
    }
}

/// GETs one object; the error names it and says what went wrong.
async fn get<K>(client: &Client, reference: &ObjectName) -> Result<K, String>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    Api::<K>::namespaced(client.clone(), &reference.namespace).get(&reference.name).await.map_err(|e| match e
    {
        kube::Error::Api(status) if status.code == 404 => format!("{kind} {reference} does not exist"),
        kube::Error::Api(status) => format!("reading {kind} {reference}: {}", status.message),
        other => format!("reading {kind} {reference}: {other}"),
    })
}
