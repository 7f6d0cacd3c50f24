//! Where the signing keys live: one Secret in roster's own namespace
//! (`--signing-keys-secret`), shared by every replica, watched by name. Whichever replica
//! finds a key missing or due makes the new list and writes it under a resourceVersion
//! precondition (a create for the first); a replica that loses the race reads the winner's.
//! The Secret's type — immutable once created — marks it as roster's: a Secret of another
//! type under that name is never overwritten.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::keys::{self, KEYS, Keyring, Schedule, StoredKey};
use crate::config::ObjectName;
use crate::controller::names::SIGNING_KEYS_TYPE;
use crate::controller::watched::{Watched, rebuilt};

/// Why there are no keys to sign with now. Names the Secret, never a value from it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeysUnavailable(String);

/// The keys Secret, watched, and the keyring loaded from its current version.
pub struct KeyStore {
    watched: Watched<Secret>,
    client: Client,
    schedule: Schedule,
    loaded: Mutex<Option<(String, Arc<Keyring>)>>,
}

/// How soon a failed write or read is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// How often [`KeyStore::loaded`] looks at the watch cache.
const LOADED_POLL: Duration = Duration::from_millis(200);
/// The longest the keeper sleeps between looks (a clock jump or a missed event is caught).
const LOOK_AGAIN: Duration = Duration::from_secs(3600);

impl KeyStore {
    /// Watches the Secret `reference` (the returned future runs the watch until dropped).
    pub fn new(client: &Client, reference: ObjectName, schedule: Schedule) -> (Self, BoxFuture<'static, ()>) {
        let (watched, watch) = Watched::start(client, Some(reference));
        let watched = watched.expect("a reference was given");
        (Self { watched, client: client.clone(), schedule, loaded: Mutex::new(None) }, watch)
    }

    /// The keys as the Secret holds them now, loaded once per version.
    pub async fn keyring(&self) -> Result<Arc<Keyring>, KeysUnavailable> {
        let reference = self.watched.reference();
        let secret = self.watched.lookup().await.map_err(KeysUnavailable)?.ok_or_else(|| {
            KeysUnavailable(format!("the signing keys Secret {reference} does not exist yet"))
        })?;
        rebuilt(&self.loaded, secret.as_ref(), || {
            let stored = stored_keys(&secret, reference)?;
            Keyring::load(&stored)
                .map(Arc::new)
                .map_err(|e| KeysUnavailable(format!("Secret {reference}: {e}")))
        })
        .await
    }

    /// Resolves once there are keys to sign with (the watch has seen the Secret, made by
    /// this replica or another), looking at the cache a few times a second until then.
    pub async fn loaded(&self) {
        while self.keyring().await.is_err() {
            tokio::time::sleep(LOADED_POLL).await;
        }
    }

    /// Keeps the keys current until `shutdown`: makes them at first, rotates them when due,
    /// drops retired ones when no token they signed can still be valid.
    pub async fn keep(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = match self.rotate(Timestamp::now()).await {
                Ok(Some(next)) => {
                    let until = next.duration_since(Timestamp::now());
                    Duration::try_from(until).unwrap_or_default().clamp(Duration::from_secs(1), LOOK_AGAIN)
                }
                Ok(None) => LOOK_AGAIN,
                Err(problem) => {
                    tracing::error!(error = %problem, "keeping the signing keys failed; retrying");
                    RETRY
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look: writes the rotated list when something is due; answers when to look next.
    async fn rotate(&self, now: Timestamp) -> Result<Option<Timestamp>, KeysUnavailable> {
        let reference = self.watched.reference().clone();
        let mut current = self.watched.lookup().await.map_err(KeysUnavailable)?;
        for _ in 0..3 {
            let stored = match current.as_deref() {
                Some(secret) => stored_keys(secret, &reference)?,
                None => Vec::new(),
            };
            let rotated = keys::rotated(&stored, now, self.schedule, |alg| keys::generate(alg, now))
                .map_err(|e| KeysUnavailable(e.to_string()))?;
            let Some(rotated) = rotated else { return Ok(keys::next_change(&stored, self.schedule)) };
            match self.write(current.as_deref(), &rotated).await {
                Ok(()) => {
                    tracing::info!(secret = %reference, kids = ?rotated.iter().map(|k| &k.kid).collect::<Vec<_>>(), "signing keys written");
                    return Ok(keys::next_change(&rotated, self.schedule));
                }
                // Another replica wrote first: decide again on what it wrote.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    current = self.watched.read().await.map_err(KeysUnavailable)?;
                }
                Err(e) => {
                    return Err(KeysUnavailable(format!("writing the signing keys Secret {reference}: {e}")));
                }
            }
        }
        Err(KeysUnavailable(format!("the signing keys Secret {reference} kept changing")))
    }

    /// Creates the Secret, or replaces the version `current` read.
    async fn write(&self, current: Option<&Secret>, keys: &[StoredKey]) -> Result<(), kube::Error> {
        let reference = self.watched.reference();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &reference.namespace);
        let json = serde_json::to_vec(keys).map_err(kube::Error::SerdeError)?;
        let data = [(KEYS.to_owned(), ByteString(json))].into();
        match current {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(reference.name.clone()),
                        namespace: Some(reference.namespace.clone()),
                        labels: Some(
                            [("app.kubernetes.io/managed-by".to_owned(), "roster".to_owned())].into(),
                        ),
                        ..Default::default()
                    },
                    type_: Some(SIGNING_KEYS_TYPE.to_owned()),
                    data: Some(data),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await.map(drop)
            }
            Some(current) => {
                let mut next = current.clone();
                next.data = Some(data);
                next.string_data = None;
                api.replace(&reference.name, &PostParams::default(), &next).await.map(drop)
            }
        }
    }
}

/// The key list in `secret`, if it is roster's (its type says so).
fn stored_keys(secret: &Secret, reference: &ObjectName) -> Result<Vec<StoredKey>, KeysUnavailable> {
    if secret.type_.as_deref() != Some(SIGNING_KEYS_TYPE) {
        return Err(KeysUnavailable(format!(
            "Secret {reference} is not roster's signing keys (its type is not {SIGNING_KEYS_TYPE}); \
             delete it or point --signing-keys-secret elsewhere"
        )));
    }
    let json = secret.data.as_ref().and_then(|data| data.get(KEYS)).map(|v| v.0.as_slice()).unwrap_or(b"[]");
    keys::parse(json).map_err(|e| KeysUnavailable(format!("Secret {reference}: {e}")))
}
