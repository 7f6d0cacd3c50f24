//! `roster import FILE -o DIR|-`: reads the file, checks every row (see [`crate::import`]),
//! and writes the manifests only if every row passed — or, with `--skip-invalid`, the rows
//! that did. Refusals go to stderr, one line per problem.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kube::api::Api;
use kube::{CustomResourceExt, ResourceExt};

use super::{CliError, Cluster};
use crate::api::admission::Admission;
use crate::api::{InvitePolicy, User};
use crate::import::{self, Defaults, Directory, manifests};

/// What the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A CSV file with a header row.
    Csv,
    /// A Keycloak realm export (JSON with a `users` array).
    Keycloak,
}

/// What `roster import` is given (its help is on the `import` command).
#[derive(Clone, Debug, clap::Args)]
pub struct ImportArgs {
    /// The file to read.
    pub file: PathBuf,
    /// Where to write: a directory (one file per User and a kustomization.yaml), or '-'
    /// for one multi-document YAML stream on stdout.
    #[arg(short = 'o', long, value_name = "DIR|-")]
    pub output: String,
    /// The file's format (default: keycloak for .json, else csv).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// spec.invite.policy of every User: Manual imports people without inviting them yet.
    #[arg(long, value_enum, default_value = "auto", ignore_case = true)]
    pub invite_policy: Policy,
    /// Also check against the cluster's Users: an email or username another User holds is
    /// refused, and so is a name an existing User has with another email or username. Rows
    /// without a namespace are taken to land in the current one.
    #[arg(long)]
    pub against_cluster: bool,
    /// Email domains the operator allows (its --allowed-email-domains), comma-separated; a
    /// domain allows its subdomains. Unset: any.
    #[arg(long, value_delimiter = ',')]
    pub allowed_email_domains: Vec<String>,
    /// Write the valid rows and report the others, instead of writing nothing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Replace files that already exist in the output directory.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// `spec.invite.policy`, as a flag spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// roster invites each person as soon as the User is applied.
    Auto,
    /// An admin creates the invites later.
    Manual,
}

/// Runs `roster import`.
pub async fn run(args: ImportArgs) -> Result<(), CliError> {
    let source = args.file.display().to_string();
    let bytes = std::fs::read(&args.file)
        .map_err(|source_error| CliError::File { path: source.clone(), source: source_error })?;
    let defaults = Defaults {
        namespace: args.cluster.namespace.clone(),
        invite_policy: match args.invite_policy {
            Policy::Auto => InvitePolicy::Auto,
            Policy::Manual => InvitePolicy::Manual,
        },
    };
    let format = args.format.unwrap_or(match args.file.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Keycloak,
        _ => Format::Csv,
    });
    let admission = Admission::of(&User::crd()).map_err(|e| CliError::Refused(e.to_string()))?;
    let candidates = match format {
        Format::Csv => import::csv::read(&bytes, &defaults, &admission)
            .map_err(|e| CliError::Refused(format!("{source}: {e}")))?,
        Format::Keycloak => {
            let (candidates, service_accounts) = import::keycloak::read(&bytes, &defaults)
                .map_err(|e| CliError::Refused(format!("{source}: {e}")))?;
            if service_accounts > 0 {
                eprintln!(
                    "{source}: left out {service_accounts} service-account users (clients, not people)"
                );
            }
            candidates
        }
    };
    let directory = if args.against_cluster {
        directory(&args.cluster, &args.allowed_email_domains).await?
    } else {
        let namespace = args.cluster.namespace.as_deref().unwrap_or("default");
        Directory::new(namespace, &args.allowed_email_domains)
    };
    let read = candidates.len();
    let verdict = import::check(candidates, &admission, &directory);
    for refusal in &verdict.refused {
        eprintln!("{refusal}");
    }
    let refused = verdict.refused.len();
    if refused > 0 && !args.skip_invalid {
        return Err(CliError::Refused(format!(
            "{refused} of {read} rows refused: nothing written (fix them, or --skip-invalid to write the {} others)",
            verdict.accepted.len()
        )));
    }
    if verdict.accepted.is_empty() {
        return Err(CliError::Refused(format!("{source}: no valid rows: nothing written")));
    }
    let written = write(&verdict.accepted, &args.output, &source, args.overwrite)?;
    let skipped = if refused > 0 { format!("; skipped {refused} invalid rows") } else { String::new() };
    eprintln!("wrote {} Users {written}{skipped}", verdict.accepted.len());
    Ok(())
}

/// The directory the cluster's Users make, in every namespace (the directory rules span
/// namespaces); rows without a namespace land in the current one.
async fn directory(cluster: &Cluster, allowed_domains: &[String]) -> Result<Directory, CliError> {
    let (client, namespace) = cluster.connect().await?;
    let users = super::list_all(
        &Api::<User>::all(client),
        None,
        |_| true,
        "listing Users in every namespace (--against-cluster needs list on users.roster.dev cluster-wide)",
    )
    .await?;
    Ok(Directory::new(&namespace, allowed_domains).with(&users))
}

/// Writes the manifests to `output`; says where.
fn write(users: &[User], output: &str, source: &str, overwrite: bool) -> Result<String, CliError> {
    let yaml_error = |e: serde_norway::Error| CliError::Refused(format!("writing YAML: {e}"));
    if output == "-" {
        let stream = manifests::stream(users, source).map_err(yaml_error)?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(stream.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|source| CliError::File { path: "stdout".into(), source })?;
        return Ok("to stdout".into());
    }
    let dir = Path::new(output);
    if users.iter().any(|user| format!("{}.yaml", user.name_any()) == manifests::KUSTOMIZATION) {
        return Err(CliError::Refused(format!(
            "a User named kustomization would overwrite {}: give that row another metadata.name, or write a stream with -o -",
            manifests::KUSTOMIZATION
        )));
    }
    let files = manifests::files(users, source).map_err(yaml_error)?;
    let file_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| CliError::File { path, source }
    };
    if !overwrite {
        let taken: Vec<&str> =
            files.iter().map(|(name, _)| name.as_str()).filter(|name| dir.join(name).exists()).collect();
        if let Some(first) = taken.first() {
            return Err(CliError::Refused(format!(
                "{} already holds {first} (and {} more of the files to write): nothing written; choose an empty directory, or --overwrite",
                dir.display(),
                taken.len() - 1
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    for (name, content) in &files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(file_error(&path))?;
    }
    Ok(format!("to {} (one file each, and {})", dir.display(), manifests::KUSTOMIZATION))
}
