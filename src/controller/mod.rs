//! The reconcilers, one per kind, and what they share: the [`Context`], the wiring of a
//! kube-runtime `Controller` (a reflector cache without managedFields, bounded concurrency,
//! graceful shutdown, metrics) and the per-object retry backoff.

mod invite;
mod mfa_reset;
mod user;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::{MfaReset, User, UserInvite};
use crate::config::RunConfig;
use crate::health::Readiness;
use crate::telemetry::Metrics;
use crate::{Error, Result};

/// The field manager of every write roster makes.
pub const FIELD_MANAGER: &str = "roster";

/// What every reconcile can reach.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Where reconciles are counted.
    pub metrics: Arc<Metrics>,
    backoff: Backoff,
}

/// Runs the three controllers until `shutdown` is cancelled, then lets in-flight reconciles
/// finish. Marks `readiness` once every watch cache has synced.
pub async fn run(
    client: Client,
    config: &RunConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Context { client: client.clone(), metrics, backoff: Backoff::default() });
    let settings = controller::Config::default().concurrency(config.concurrency);
    let ns = config.watch_namespace.as_deref();

    let (users, user_cache) = cache::<User>(api(&client, ns));
    let (invites, invite_cache) = cache::<UserInvite>(api(&client, ns));
    let (resets, reset_cache) = cache::<MfaReset>(api(&client, ns));

    let stop_waiting = shutdown.clone();
    let ready = async move {
        let synced = async {
            futures::join!(
                user_cache.wait_until_ready(),
                invite_cache.wait_until_ready(),
                reset_cache.wait_until_ready()
            )
        };
        tokio::select! {
            (Ok(()), Ok(()), Ok(())) = synced => {
                readiness.set_ready();
                tracing::info!("watch caches synced; ready");
            }
            () = stop_waiting.cancelled() => {}
        }
    };
    futures::join!(
        drive(users, "user", user::reconcile, ctx.clone(), settings.clone(), shutdown.clone()),
        drive(invites, "userinvite", invite::reconcile, ctx.clone(), settings.clone(), shutdown.clone()),
        drive(resets, "mfareset", mfa_reset::reconcile, ctx.clone(), settings, shutdown.clone()),
        ready,
    );
    tracing::info!("controllers stopped");
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A controller fed by a reflector cache of `K` that drops managedFields, and a reader of
/// that cache.
fn cache<K>(api: Api<K>) -> (Controller<K>, Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|obj: &mut K| obj.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (Controller::for_stream(stream, reader.clone()), reader)
}

/// Runs one controller: reconciles are timed and counted; failures are counted by kind,
/// logged, and retried with per-object exponential backoff.
async fn drive<K, F, Fut>(
    controller: Controller<K>,
    name: &'static str,
    reconcile: F,
    ctx: Arc<Context>,
    settings: controller::Config,
    shutdown: CancellationToken,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    controller
        .with_config(settings)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            move |obj: Arc<K>, ctx: Arc<Context>| {
                let reconcile = reconcile.clone();
                async move {
                    let key = object_key(obj.as_ref());
                    let started = Instant::now();
                    let result = reconcile(obj, ctx.clone()).await;
                    ctx.metrics.reconciled(name, started.elapsed());
                    if result.is_ok() {
                        ctx.backoff.reset(&key);
                    }
                    result
                }
            },
            move |obj: Arc<K>, error: &Error, ctx: Arc<Context>| {
                ctx.metrics.failed(name, error);
                let object = object_key(obj.as_ref());
                let delay = ctx.backoff.next(&object);
                tracing::warn!(controller = name, %object, %error, retry_in = ?delay, "reconcile failed");
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Per-object consecutive failure counts, for exponential retry delays.
#[derive(Default)]
struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    fn next(&self, key: &str) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        retry_delay(*count)
    }

    fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }
}

/// Delay before retry number `failures` (1-based): 1 s doubling up to 5 minutes.
fn retry_delay(failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX)
}

/// The conditions of an object roster has seen but not yet finished: `Ready=Unknown`,
/// reason `Reconciling`, for `generation`.
fn acknowledged(current: &[Condition], generation: Option<i64>) -> Vec<Condition> {
    let desired = [
        Desired {
            type_: types::READY,
            status: status::UNKNOWN,
            reason: reasons::RECONCILING,
            message: "roster is working on this generation".into(),
        },
        Desired {
            type_: types::RECONCILING,
            status: status::TRUE,
            reason: reasons::RECONCILING,
            message: "roster is working on this generation".into(),
        },
    ];
    conditions::merge(current, &desired, generation, &now())
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Server-side applies `status` to `obj`'s status subresource as the sole owner of status.
async fn apply_status<K, S>(ctx: &Context, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(drop)
        .map_err(|source| Error::Kube {
            action: "patching status of",
            kind: K::kind(&()).into_owned(),
            object: format!("{namespace}/{name}"),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_one_second_and_caps_at_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn backoff_grows_per_object_and_resets_on_success() {
        let backoff = Backoff::default();
        assert_eq!(backoff.next("a"), Duration::from_secs(1));
        assert_eq!(backoff.next("a"), Duration::from_secs(2));
        assert_eq!(backoff.next("b"), Duration::from_secs(1));
        backoff.reset("a");
        assert_eq!(backoff.next("a"), Duration::from_secs(1));
    }

    #[test]
    fn acknowledged_is_ready_unknown_and_reconciling() {
        let conditions = acknowledged(&[], Some(4));
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("Unknown", "Reconciling"));
        assert_eq!(ready.observed_generation, Some(4));
        assert!(conditions.iter().any(|c| c.type_ == "Reconciling" && c.status == "True"));
    }
}
