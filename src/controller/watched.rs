//! One named object kept current by a watch of that one object — roster's own settings
//! (the SMTP Secret, the templates ConfigMap) and the issuer's signing keys — so a use costs
//! no read from the API server. Until the watch has listed the object (again, after a watch
//! error), a GET reads it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::config::ObjectName;

/// One named object kept current by a watch on its name (`metadata.name` field selector,
/// which RBAC authorizes against `resourceNames`).
pub struct Watched<K: Resource<DynamicType = ()> + 'static> {
    reference: ObjectName,
    client: Client,
    store: Store<K>,
    listed: Arc<AtomicBool>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// The watch of `reference` (none when it is `None`) and the future that runs it.
    pub fn start(client: &Client, reference: Option<ObjectName>) -> (Option<Self>, BoxFuture<'static, ()>) {
        let Some(reference) = reference else { return (None, futures::future::pending().boxed()) };
        let (store, writer) = reflector::store();
        let listed = Arc::new(AtomicBool::new(false));
        let api = Api::<K>::namespaced(client.clone(), &reference.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", reference.name));
        let done = listed.clone();
        let kind = K::kind(&()).into_owned();
        let watch =
            reflector::reflector(writer, watcher(api, config).default_backoff().modify(super::cache::trim))
                .for_each(move |event| {
                    match event {
                        Ok(watcher::Event::InitDone) => done.store(true, Ordering::Release),
                        Ok(_) => {}
                        // Until the watch has listed again, its copy may be stale: read instead.
                        Err(error) => {
                            done.store(false, Ordering::Release);
                            // The error names the object, never a value from it.
                            tracing::warn!(%kind, %error, "watching a settings object failed; retrying");
                        }
                    }
                    futures::future::ready(())
                })
                .boxed();
        (Some(Self { reference, client: client.clone(), store, listed }), watch)
    }

    /// The object it watches.
    pub fn reference(&self) -> &ObjectName {
        &self.reference
    }

    /// The object as the watch last saw it, or — before the watch has listed it — as a GET
    /// returns it. The error names the object and says what went wrong.
    pub async fn get(&self) -> Result<Arc<K>, String> {
        let kind = K::kind(&());
        let reference = &self.reference;
        self.lookup().await?.ok_or_else(|| format!("{kind} {reference} does not exist"))
    }

    /// Like [`Self::get`], with `None` when the object does not exist.
    pub async fn lookup(&self) -> Result<Option<Arc<K>>, String> {
        let reference = &self.reference;
        if self.listed.load(Ordering::Acquire) {
            let key = ObjectRef::new(&reference.name).within(&reference.namespace);
            return Ok(self.store.get(&key));
        }
        self.read().await
    }

    /// The object as a GET returns it now (after a conflict, the watch may lag).
    pub async fn read(&self) -> Result<Option<Arc<K>>, String> {
        let kind = K::kind(&());
        let reference = &self.reference;
        let api = Api::<K>::namespaced(self.client.clone(), &reference.namespace);
        match api.get_opt(&reference.name).await {
            Ok(found) => Ok(found.map(Arc::new)),
            Err(kube::Error::Api(status)) => Err(format!("reading {kind} {reference}: {}", status.message)),
            Err(other) => Err(format!("reading {kind} {reference}: {other}")),
        }
    }
}

/// What was built from `source` at its resourceVersion (SMTP transport, templates, the
/// issuer's keyring): kept in `slot` and built again by `build` only when the version
/// changed.
pub async fn rebuilt<T: Clone, E>(
    slot: &Mutex<Option<(String, T)>>,
    source: &impl Resource,
    build: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let version = source.resource_version().unwrap_or_default();
    let mut cached = slot.lock().await;
    if let Some((seen, built)) = cached.as_ref()
        && *seen == version
    {
        return Ok(built.clone());
    }
    let built = build()?;
    *cached = Some((version, built.clone()));
    Ok(built)
}
