//! API traffic as the API server counts it (`apiserver_request_total` on its `/metrics`):
//! snapshots, their difference over a phase, and the writes on the kinds onboarding touches.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::Client;
use serde::Serialize;

/// The kinds roster reads and writes (plural resource names).
const KINDS: [&str; 6] = ["users", "userinvites", "mfaresets", "passwordresets", "secrets", "events"];
/// Verbs that change something (`APPLY` is a server-side apply).
const WRITES: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// One counter of `apiserver_request_total`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub code: String,
}

/// Request counts by verb, resource, subresource and response code.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<Key, f64>);

/// Reads the API server's request counters now.
pub async fn snapshot(client: &Client) -> anyhow::Result<Snapshot> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await.context("reading the API server's metrics")?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Snapshot {
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| -> String {
            let needle = format!("{name}=\"");
            line.find(&needle)
                .and_then(|start| line[start + needle.len()..].split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let key = Key {
            verb: label("verb"),
            resource: label("resource"),
            subresource: label("subresource"),
            code: label("code"),
        };
        *counts.entry(key).or_insert(0.0) += value;
    }
    Snapshot(counts)
}

impl Snapshot {
    /// What was counted between `earlier` and this snapshot (counters that did not move
    /// are left out).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let moved = self.0.iter().filter_map(|(key, now)| {
            let delta = now - earlier.0.get(key).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (key.clone(), delta))
        });
        Snapshot(moved.collect())
    }

    /// Requests on roster's kinds, Secrets and Events, by key.
    pub fn ours(&self) -> impl Iterator<Item = (&Key, f64)> {
        self.0.iter().filter(|(key, _)| KINDS.contains(&key.resource.as_str())).map(|(k, v)| (k, *v))
    }

    /// Write requests on those kinds.
    pub fn writes(&self) -> f64 {
        self.ours()
            .filter(|(key, _)| WRITES.contains(&key.verb.as_str()))
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b)
    }

    /// Write requests answered 409 Conflict.
    pub fn conflicts(&self) -> f64 {
        self.ours()
            .filter(|(key, _)| WRITES.contains(&key.verb.as_str()) && key.code == "409")
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b)
    }

    /// Every counter on those kinds, for the report.
    pub fn rows(&self) -> Vec<(Key, f64)> {
        self.ours().map(|(k, v)| (k.clone(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_writes_and_conflicts_on_our_kinds_only() {
        let before = parse(
            r#"apiserver_request_total{code="201",component="apiserver",group="roster.dev",resource="users",subresource="",verb="POST",version="v1alpha1"} 2"#,
        );
        let after = parse(concat!(
            r#"apiserver_request_total{code="201",component="apiserver",group="roster.dev",resource="users",subresource="",verb="POST",version="v1alpha1"} 5"#,
            "\n",
            r#"apiserver_request_total{code="409",component="apiserver",group="",resource="secrets",subresource="",verb="POST",version="v1"} 1"#,
            "\n",
            r#"apiserver_request_total{code="200",component="apiserver",group="",resource="secrets",subresource="",verb="GET",version="v1"} 7"#,
            "\n",
            r#"apiserver_request_total{code="200",component="apiserver",group="coordination.k8s.io",resource="leases",subresource="",verb="PUT",version="v1"} 9"#,
        ));
        let delta = after.since(&before);
        assert_eq!(delta.writes(), 4.0);
        assert_eq!(delta.conflicts(), 1.0);
        assert_eq!(delta.rows().len(), 3);
    }
}
