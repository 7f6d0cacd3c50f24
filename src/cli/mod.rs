//! The commands people run by hand beside `roster run`: `import` (manifests for Git),
//! `stat` (the directory at a glance) and the admin commands (`resend`, `reset-mfa`,
//! `reset-password`, `link`, `deactivate`, `activate`, `list`). Installed as
//! `kubectl-roster`, the binary is a kubectl plugin: `kubectl roster resend jane`. The admin
//! commands write only what a person could write with kubectl, with the caller's own
//! credentials, so RBAC decides as it would for kubectl.

pub mod admin;
pub mod import;
pub mod stat;

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The field manager of what the commands write, as `kubectl` is kubectl's.
pub const FIELD_MANAGER: &str = "kubectl-roster";

/// Why a command failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No cluster could be reached with the given configuration.
    #[error("connecting to the cluster: {0} (set --kubeconfig or KUBECONFIG, or --context)")]
    Connect(String),
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done as asked; the message says what would work.
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// An API error while doing `what`.
    pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Api { what, source }
    }
}

/// Which cluster and namespace, as kubectl's flags of the same names choose them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Cluster {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl Cluster {
    /// A client, and the namespace the command works in.
    pub async fn connect(&self) -> Result<(kube::Client, String), CliError> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let connect = |e: &dyn std::fmt::Display| CliError::Connect(e.to_string());
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| connect(&e))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| connect(&e))?
            }
            None if self.context.is_some() => {
                kube::Config::from_kubeconfig(&options).await.map_err(|e| connect(&e))?
            }
            None => kube::Config::infer().await.map_err(|e| connect(&e))?,
        };
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| connect(&e))?;
        Ok((client, namespace))
    }
}

/// Every object `api` lists with the field selector `fields`, page by page, that `keep`
/// keeps. An API server without selectable fields (before Kubernetes 1.31) refuses the
/// selector with 400: then everything is listed, and `keep` alone selects.
pub async fn list_all<K>(
    api: &kube::Api<K>,
    fields: Option<&str>,
    keep: impl Fn(&K) -> bool,
    what: &str,
) -> Result<Vec<K>, CliError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let listed = match pages(api, fields).await {
        Err(kube::Error::Api(status))
            if fields.is_some()
                && status.code == 400
                && status.message.contains("field label not supported") =>
        {
            pages(api, None).await
        }
        other => other,
    };
    Ok(listed.map_err(CliError::api(what))?.into_iter().filter(|object| keep(object)).collect())
}

async fn pages<K>(api: &kube::Api<K>, fields: Option<&str>) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = kube::api::ListParams::default().limit(500);
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let mut objects = Vec::new();
    loop {
        let page = api.list(&params).await?;
        objects.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(objects),
        }
    }
}

/// Lays out `rows` under `header` in columns two spaces apart, as kubectl prints tables.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["jane".to_owned(), "ACTIVE".to_owned()], vec!["bo".to_owned(), "".to_owned()]];
        assert_eq!(super::table(&["NAME", "PHASE"], &rows), "NAME  PHASE\njane  ACTIVE\nbo\n");
    }
}
