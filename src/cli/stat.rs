//! `roster stat`: Users, invites and resets by namespace and phase, counted from the cluster
//! the way the `roster_users`, `roster_invites` and `roster_resets` gauges count them
//! ([`crate::census`]), for people without Prometheus.

use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;

use super::{CliError, Cluster, table};
use crate::api::{MfaReset, PasswordReset, User, UserInvite};
use crate::census::{Counted, Tally};

/// Count Users, invites and resets by namespace and phase.
#[derive(Clone, Debug, clap::Args)]
pub struct StatArgs {
    /// Every namespace, not only the current one.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// Runs `roster stat`: prints one table per kind.
pub async fn run(args: StatArgs) -> Result<(), CliError> {
    let (client, namespace) = args.cluster.connect().await?;
    let scope = (!args.all_namespaces).then_some(namespace.as_str());
    let mut out = String::new();
    out.push_str(&section::<User>(&client, scope, "USERS").await?);
    out.push('\n');
    out.push_str(&section::<UserInvite>(&client, scope, "INVITES").await?);
    out.push('\n');
    out.push_str(&section::<MfaReset>(&client, scope, "MFA RESETS").await?);
    out.push('\n');
    out.push_str(&section::<PasswordReset>(&client, scope, "PASSWORD RESETS").await?);
    print!("{out}");
    Ok(())
}

/// The table of one kind: a row per namespace, a column per phase, and the total.
async fn section<K>(client: &kube::Client, namespace: Option<&str>, title: &str) -> Result<String, CliError>
where
    K: Counted
        + Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let objects = super::list_all(&api, None, |_| true, &format!("listing {}", K::plural(&()))).await?;
    Ok(format!("{title}\n{}", render(&Tally::of(&objects), K::PHASES)))
}

/// A tally as a table, phases in `phases` order.
fn render(tally: &Tally, phases: &[&str]) -> String {
    let header: Vec<&str> =
        std::iter::once("NAMESPACE").chain(phases.iter().copied()).chain(["TOTAL"]).collect();
    let rows: Vec<Vec<String>> = tally
        .rows()
        .map(|(namespace, counts)| {
            let mut row = vec![namespace.to_owned()];
            row.extend(phases.iter().map(|phase| counts.get(phase).copied().unwrap_or(0).to_string()));
            row.push(counts.values().sum::<u64>().to_string());
            row
        })
        .collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::UserPhase;

    #[test]
    fn a_row_per_namespace_and_a_column_per_phase() {
        let user = |namespace: &str, phase| {
            let mut user = User::new(
                "u",
                serde_json::from_value(serde_json::json!({"email": "a@example.com"})).unwrap(),
            );
            user.metadata.namespace = Some(namespace.into());
            user.status = Some(crate::api::UserStatus { phase: Some(phase), ..Default::default() });
            user
        };
        let users = [
            user("team-a", UserPhase::Active),
            user("team-a", UserPhase::Pending),
            user("b", UserPhase::Active),
        ];
        assert_eq!(
            render(&Tally::of(&users), User::PHASES),
            "NAMESPACE  NEW  PENDING  ACTIVE  INACTIVE  TOTAL\n\
             b          0    0        1       0         1\n\
             team-a     0    1        1       0         2\n"
        );
    }
}
