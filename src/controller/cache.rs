//! Watch caches shared by the controllers (client-go's "shared informers"): one watch per
//! kind feeds one reflector store, and every change — deletions included — is handed to
//! each subscriber only after the store has applied it. A reconcile triggered by a change
//! therefore always reads a cache that already contains that change.

use std::fmt::Debug;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Whether a cache holds its initial list. kube's `Store::wait_until_ready` wakes only one
/// of several concurrent waiters (and the controller that owns the store is one), so roster
/// signals readiness itself.
pub type ReadySignal = watch::Receiver<bool>;

/// Changes a subscriber may fall behind by before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// A watch of `K`, its cache, and its subscribers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    reader: Store<K>,
    writer: Writer<K>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
    ready: watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A cache of what `api` lists under `config`. Objects are cached without
    /// managedFields, which roster never reads.
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (reader, writer) = reflector::store();
        Self { api, config, reader, writer, subscribers: Vec::new(), ready: watch::Sender::new(false) }
    }

    /// Turns true once the cache holds its initial list (and stays true across re-lists).
    pub fn ready_signal(&self) -> ReadySignal {
        self.ready.subscribe()
    }

    /// A reader of the cache.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// A stream of every object that changes (applied or deleted), once the cache has it.
    pub fn subscribe(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(sender);
        receiver
    }

    /// Runs the watch until the process stops. Watch errors are retried with backoff.
    pub async fn run(self) {
        let Self { api, config, writer, mut subscribers, ready, .. } = self;
        let events = watcher(api, config)
            .default_backoff()
            .modify(|obj: &mut K| obj.managed_fields_mut().clear())
            .reflect(writer);
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(
                    watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj),
                ) => Arc::new(obj),
                Ok(watcher::Event::InitDone) => {
                    ready.send_replace(true);
                    continue;
                }
                Ok(watcher::Event::Init) => continue,
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                    continue;
                }
            };
            for subscriber in &mut subscribers {
                // A subscriber only goes away when its controller stopped.
                let _ = subscriber.send(changed.clone()).await;
            }
        }
    }
}

/// The caches every reconcile reads instead of the API server.
#[derive(Clone)]
pub struct Caches {
    /// Readiness of each cache.
    pub ready: Vec<ReadySignal>,
    /// Users.
    pub users: Store<crate::api::User>,
    /// UserInvites.
    pub invites: Store<crate::api::UserInvite>,
    /// MfaResets.
    pub resets: Store<crate::api::MfaReset>,
    /// Secrets labelled `app.kubernetes.io/managed-by: roster`.
    pub secrets: Store<k8s_openapi::api::core::v1::Secret>,
}

impl Caches {
    /// Whether every cache holds its initial list, now.
    pub fn is_ready(&self) -> bool {
        self.ready.iter().all(|signal| *signal.borrow())
    }

    /// Waits until every cache has its initial list; instant afterwards. `false` if a
    /// cache's watch is gone (the process is stopping).
    pub async fn ready(&self) -> bool {
        for signal in &self.ready {
            if signal.clone().wait_for(|ready| *ready).await.is_err() {
                return false;
            }
        }
        true
    }
}

impl Caches {
    /// The UserInvites that refer to the User `name` in `namespace`.
    pub fn invites_of(&self, namespace: &str, name: &str) -> Vec<Arc<crate::api::UserInvite>> {
        self.invites.state_filter(|invite| {
            invite.namespace().as_deref() == Some(namespace) && invite.spec.user_ref.name == name
        })
    }
}

impl Caches {
    /// The MfaResets that refer to the User `name` in `namespace`.
    pub fn resets_of(&self, namespace: &str, name: &str) -> Vec<Arc<crate::api::MfaReset>> {
        self.resets.state_filter(|reset| {
            reset.namespace().as_deref() == Some(namespace) && reset.spec.user_ref.name == name
        })
    }
}

/// `namespace/name` of an object, for logs and messages.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
