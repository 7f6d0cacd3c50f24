//! Writing facts into a credentials Secret — the person's (by the portal) and a reset's (by
//! its reconciler): read, decide, write with the resourceVersion read as precondition, and
//! on a conflict read again and decide again — so that two sign-ins at once never lose a
//! failed-login count and two people racing on one link cannot both win.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

/// How often a write is retried after conflicts before giving up.
const ATTEMPTS: usize = 8;
/// How long a write may take in all, conflicts and the client's own retries of 504s
/// included: a person is answered "try again" after this instead of waiting on a stalled
/// API server (with etcd gone, each attempt waits for the API server's request timeout).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Changes to a credentials Secret: a key set to a value, or removed (`None`).
pub type Changes = BTreeMap<&'static str, Option<String>>;

/// Why facts could not be written. Names the Secret, never a value.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed.
    #[error("writing Secret {secret}: {source}")]
    Kube {
        /// `namespace/name`.
        secret: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Every attempt met a newer version.
    #[error("Secret {0} kept changing; gave up after {ATTEMPTS} attempts")]
    Contended(String),
    /// The API server did not answer in time; the write may or may not have been made.
    #[error("writing Secret {0} took longer than {WRITE_DEADLINE:?}")]
    TimedOut(String),
}

/// A failed write that may succeed if tried again shortly. A person's request it fails
/// answers 503 "try again", not 500 — and never a success, which was not confirmed.
pub trait Transient: std::fmt::Display {
    /// Whether trying again may work.
    fn is_transient(&self) -> bool;
}

/// Whether the API server could not be reached, timed out, was overloaded or failed (etcd
/// gone or slow) — as opposed to refusing the request (403, 404, 409, 422).
pub fn unreachable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl Transient for WriteError {
    /// The API server was unreachable or failing, or the Secret kept changing.
    fn is_transient(&self) -> bool {
        match self {
            Self::Contended(_) | Self::TimedOut(_) => true,
            Self::Kube { source, .. } => unreachable(source),
        }
    }
}

/// A Secret whose `data` holds `pairs`: what the tests of decisions on a credentials
/// Secret start from.
#[cfg(test)]
pub fn secret_with(pairs: &[(&str, &str)]) -> Secret {
    let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
    Secret { data: Some(data), ..Default::default() }
}

/// A value of a Secret's `data`, as text.
pub fn text<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    let value = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&value.0).ok().map(str::trim).filter(|v| !v.is_empty())
}

/// Applies `decide` to the Secret (starting from `cached`, the watch cache's copy, and
/// re-reading it after a conflict) until its changes are written or it decides on none.
/// Returns what `decide` returned the last time, and the resourceVersion it wrote (`None`
/// when it wrote nothing).
pub async fn update<T>(
    client: &Client,
    cached: &Secret,
    decide: impl FnMut(&Secret) -> (T, Changes),
) -> Result<(T, Option<String>), WriteError> {
    tokio::time::timeout(WRITE_DEADLINE, attempts(client, cached, decide))
        .await
        .unwrap_or_else(|_| Err(WriteError::TimedOut(crate::index::object_key(cached))))
}

/// [`update`] without its deadline.
async fn attempts<T>(
    client: &Client,
    cached: &Secret,
    mut decide: impl FnMut(&Secret) -> (T, Changes),
) -> Result<(T, Option<String>), WriteError> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let id = crate::index::object_key(cached);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let kube_error = |source| WriteError::Kube { secret: id.clone(), source: Box::new(source) };
    let mut current = cached.clone();
    for _ in 0..ATTEMPTS {
        let (outcome, changes) = decide(&current);
        if changes.is_empty() {
            return Ok((outcome, None));
        }
        let data: serde_json::Map<String, serde_json::Value> = changes
            .into_iter()
            .map(|(key, value)| {
                let value = value.map_or(serde_json::Value::Null, |v| {
                    serde_json::to_value(ByteString(v.into_bytes())).unwrap_or_default()
                });
                (key.to_owned(), value)
            })
            .collect();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "data": data,
        });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(written) => return Ok((outcome, written.resource_version())),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                current = api.get(&name).await.map_err(kube_error)?;
            }
            Err(other) => return Err(kube_error(other)),
        }
    }
    Err(WriteError::Contended(id))
}

/// How long a step waits for the watch cache to show its own write.
const CACHE_CATCH_UP: Duration = Duration::from_secs(2);
/// How often the cache is looked at meanwhile.
const CACHE_LOOK: Duration = Duration::from_millis(5);

/// Waits (at most [`CACHE_CATCH_UP`]) until the watch cache holds `version` of `secret`:
/// the next request of the same person — typically the page a step redirects to — then
/// reads its own write.
pub async fn await_cached(secrets: &Store<Secret>, secret: &Secret, version: &str) {
    await_cache(secrets, secret, |cached| {
        cached.is_some_and(|cached| cached.resource_version().as_deref() == Some(version))
    })
    .await;
}

/// Waits (at most [`CACHE_CATCH_UP`]) until the watch cache no longer holds `secret` (by
/// uid) after it was deleted: the person's next request does not find it there.
pub async fn await_uncached(secrets: &Store<Secret>, secret: &Secret) {
    await_cache(secrets, secret, |cached| {
        cached.is_none_or(|cached| cached.metadata.uid != secret.metadata.uid)
    })
    .await;
}

/// Waits (at most [`CACHE_CATCH_UP`]) until `done` holds for the watch cache's copy of
/// `secret` (`None`: not cached).
pub async fn await_cache(secrets: &Store<Secret>, secret: &Secret, done: impl Fn(Option<&Secret>) -> bool) {
    let key = ObjectRef::from_obj(secret);
    let deadline = tokio::time::Instant::now() + CACHE_CATCH_UP;
    while tokio::time::Instant::now() < deadline {
        if done(secrets.get(&key).as_deref()) {
            return;
        }
        tokio::time::sleep(CACHE_LOOK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> WriteError {
        let status = kube::core::Status::failure("refused", "Refused").with_code(code);
        WriteError::Kube { secret: "ns/name".into(), source: Box::new(kube::Error::Api(Box::new(status))) }
    }

    #[test]
    fn an_unreachable_failing_or_busy_api_server_is_worth_retrying_a_refusal_is_not() {
        let unreachable = WriteError::Kube {
            secret: "ns/name".into(),
            source: Box::new(kube::Error::Service("connection refused".into())),
        };
        assert!(unreachable.is_transient(), "connection refused");
        for code in [500, 503, 504, 429] {
            assert!(api(code).is_transient(), "{code}");
        }
        assert!(WriteError::Contended("ns/name".into()).is_transient());
        for code in [400, 403, 404, 409, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
    }
}
