//! The reconcilers, one per kind, and what they share: the [`Context`] (client, watch
//! caches, event recorder, settings), the wiring of each kube-runtime `Controller` (shared
//! caches, bounded concurrency, graceful shutdown, metrics) and the per-object retry backoff.

mod cache;
pub mod events;
mod expectations;
mod invite;
mod mail_setup;
mod mfa_reset;
pub mod names;
pub mod notices;
mod oidc_client;
mod password_reset;
mod reset;
mod user;
mod verification;
pub mod watched;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use cache::Informer;
pub use cache::{Caches, controlled_by};
pub use mail_setup::{MailSetup, SetupError, Undelivered};

use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::{MfaReset, OidcClient, PasswordReset, User, UserInvite};
use crate::config::RunConfig;
use crate::credentials::Lockout;
use crate::directory::{Entry, Identities};
use crate::health::Readiness;
use crate::index::{Named, Shared, user_term};
use crate::leader::Leadership;
use crate::mail::Templates;
use crate::oidc::sweeper::Sweeper;
use crate::telemetry::Metrics;
use crate::{Error, Result};

/// The field manager of every write roster makes.
pub const FIELD_MANAGER: &str = "roster";
/// The label every object roster creates carries, and the only Secrets roster watches.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "roster";

/// Settings the reconcilers act on.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How failed sign-ins lock a user.
    pub lockout: Lockout,
    /// Email domains users may have; empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Public base URL of the portal.
    pub portal_url: String,
    /// The organisation's name, for emails.
    pub org_name: String,
    /// The OpenID Connect issuer's URL (`--issuer-url`); none: no OpenID Connect.
    pub issuer_url: Option<String>,
    /// Namespaces whose OidcClients may admit other namespaces' Users.
    pub oidc_trusted_namespaces: Vec<String>,
}

/// What every reconcile can reach.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The watch caches: every read of a reconcile comes from here.
    pub caches: Caches,
    /// Where reconciles are counted.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events.
    pub events: events::Events,
    /// What the reconcilers act on.
    pub settings: Settings,
    /// SMTP transport and email templates, as the cluster says now.
    pub mail: MailSetup,
    /// The sign-in sessions by user, when roster is an OpenID Connect issuer.
    pub sessions: Option<Arc<Sweeper>>,
    /// Whether this replica leads: only the leader reconciles.
    pub leadership: Leadership,
    /// What this process created that the caches may not show yet.
    expectations: expectations::Expectations,
    backoff: Backoff,
}

/// The watches of the six kinds roster reads; their caches and indexes serve the
/// reconcilers and the portal alike.
pub struct Watches {
    users: Informer<User>,
    invites: Informer<UserInvite>,
    resets: Informer<MfaReset>,
    password_resets: Informer<PasswordReset>,
    oidc_clients: Informer<OidcClient>,
    secrets: Informer<Secret>,
    directory: Shared<Entry>,
    tokens: Shared<Named>,
    invites_by_user: Shared<Named>,
    resets_by_user: Shared<Named>,
    password_resets_by_user: Shared<Named>,
    sessions: Option<Arc<Sweeper>>,
}

impl Watches {
    /// Watches of every namespace (`namespaces` empty) or of those listed; nothing runs
    /// until [`run`].
    pub fn new(client: &Client, namespaces: &[String]) -> Self {
        let mut watches = Self {
            users: Informer::new(apis(client, namespaces), watcher::Config::default()),
            invites: Informer::new(apis(client, namespaces), watcher::Config::default()),
            resets: Informer::new(apis(client, namespaces), watcher::Config::default()),
            password_resets: Informer::new(apis(client, namespaces), watcher::Config::default()),
            oidc_clients: Informer::new(apis(client, namespaces), watcher::Config::default()),
            secrets: Informer::new(
                apis(client, namespaces),
                watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            ),
            directory: Shared::default(),
            tokens: Shared::default(),
            invites_by_user: Shared::default(),
            resets_by_user: Shared::default(),
            password_resets_by_user: Shared::default(),
            sessions: None,
        };
        watches.users.follow(watches.directory.follower(|user: &User| {
            let entry = Entry::of(user);
            let terms = entry.terms();
            Some((entry, terms))
        }));
        watches.secrets.follow(watches.tokens.follower(names::token_terms));
        watches.invites.follow(watches.invites_by_user.follower(|invite: &UserInvite| {
            Some((
                named(invite),
                vec![user_term(&invite.namespace().unwrap_or_default(), &invite.spec.user_ref.name)],
            ))
        }));
        watches.resets.follow(watches.resets_by_user.follower(|reset: &MfaReset| {
            Some((
                named(reset),
                vec![user_term(&reset.namespace().unwrap_or_default(), &reset.spec.user_ref.name)],
            ))
        }));
        watches.password_resets.follow(watches.password_resets_by_user.follower(|reset: &PasswordReset| {
            Some((
                named(reset),
                vec![user_term(&reset.namespace().unwrap_or_default(), &reset.spec.user_ref.name)],
            ))
        }));
        watches
    }

    /// Keeps the gauges of Users, invites and resets by namespace and phase in step with the
    /// caches.
    pub fn count_phases(&mut self, metrics: &crate::telemetry::Metrics) {
        use crate::census::{by_phase, follower, reset_of};
        self.users.follow(follower::<User, _>(metrics.users.clone(), by_phase));
        self.invites.follow(follower::<UserInvite, _>(metrics.invites.clone(), by_phase));
        self.resets.follow(follower::<MfaReset, _>(metrics.resets.clone(), reset_of("MfaReset")));
        self.password_resets
            .follow(follower::<PasswordReset, _>(metrics.resets.clone(), reset_of("PasswordReset")));
    }

    /// Keeps the sign-in sessions' index (the issuer's sweeper) in step with the Secret
    /// cache; the User reconciler then ends the sessions of a person who may no longer hold
    /// any.
    pub fn index_sessions(&mut self, sweeper: Arc<Sweeper>) {
        self.secrets.follow(sweeper.follower());
        self.sessions = Some(sweeper);
    }

    /// Readers of the caches and indexes the watches fill.
    pub fn caches(&self) -> Caches {
        Caches {
            ready: vec![
                self.users.ready_signal(),
                self.invites.ready_signal(),
                self.resets.ready_signal(),
                self.password_resets.ready_signal(),
                self.oidc_clients.ready_signal(),
                self.secrets.ready_signal(),
            ],
            users: self.users.store(),
            invites: self.invites.store(),
            resets: self.resets.store(),
            password_resets: self.password_resets.store(),
            oidc_clients: self.oidc_clients.store(),
            secrets: self.secrets.store(),
            directory: self.directory.clone(),
            tokens: self.tokens.clone(),
            invites_by_user: self.invites_by_user.clone(),
            resets_by_user: self.resets_by_user.clone(),
            password_resets_by_user: self.password_resets_by_user.clone(),
        }
    }
}

/// `(namespace, name)` of an object, as the per-user indexes hold it.
fn named<K: Resource>(obj: &K) -> Named {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs the watches and the controllers until `shutdown` is cancelled, then lets in-flight
/// reconciles finish. Marks `readiness` once every watch cache has synced. The watches run
/// on every replica (the portal and the issuer read them); the controllers act only while
/// `leadership` says this replica leads.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    watches: Watches,
    config: &RunConfig,
    templates: Templates,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let caches = watches.caches();
    let Watches {
        mut users,
        mut invites,
        mut resets,
        mut password_resets,
        mut oidc_clients,
        mut secrets,
        sessions,
        ..
    } = watches;
    let (mail, mail_watches) = MailSetup::new(
        client.clone(),
        config.smtp_secret.clone(),
        config.templates_configmap.clone(),
        templates,
    );
    let reporter = Reporter { controller: "roster".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        client: client.clone(),
        caches: caches.clone(),
        metrics,
        events: events::Events::new(client.clone(), reporter),
        settings: Settings {
            lockout: config.lockout(),
            allowed_email_domains: config.allowed_email_domains.clone(),
            portal_url: config.portal_url.clone(),
            org_name: config.org_name.clone(),
            issuer_url: config.issuer_url.as_ref().map(ToString::to_string),
            oidc_trusted_namespaces: config.oidc_trusted_namespaces.clone(),
        },
        mail,
        sessions,
        leadership,
        expectations: Default::default(),
        backoff: Backoff::default(),
    });
    let settings = controller::Config::default().concurrency(config.concurrency);

    let peers_of = caches.clone();
    // Sign-in sessions and grants (OpenID Connect) say nothing the User's status shows:
    // their writes wake no User reconcile.
    let not_grants = secrets.subscribe().filter(|secret: &Arc<Secret>| {
        let oidc = matches!(
            secret.type_.as_deref(),
            Some(names::GRANT_TYPE | names::SESSION_TYPE | names::DEVICE_TYPE)
        );
        futures::future::ready(!oidc)
    });
    let user_controller = Controller::for_shared_stream(users.subscribe(), caches.users.clone())
        .owns_shared_stream(not_grants)
        .watches_shared_stream(invites.subscribe(), |invite: Arc<UserInvite>| {
            Some(
                ObjectRef::<User>::new(&invite.spec.user_ref.name)
                    .within(&invite.namespace().unwrap_or_default()),
            )
        })
        .watches_shared_stream(users.subscribe(), {
            let identities = Mutex::new(Identities::default());
            move |user: Arc<User>| directory_peers(&peers_of, &identities, &user)
        });
    // Invites and resets follow their user and what the portal records in its credentials
    // Secret (onboarding progress, re-enrolment, a newer reset).
    let invite_controller = Controller::for_shared_stream(invites.subscribe(), caches.invites.clone())
        .watches_shared_stream(users.subscribe(), of_user(&caches, Caches::invites_of))
        .watches_shared_stream(secrets.subscribe(), of_credentials(&caches, Caches::invites_of));
    let reset_controller = Controller::for_shared_stream(resets.subscribe(), caches.resets.clone())
        .watches_shared_stream(users.subscribe(), of_user(&caches, Caches::resets_of))
        .watches_shared_stream(secrets.subscribe(), of_credentials(&caches, Caches::resets_of));
    let password_reset_controller =
        Controller::for_shared_stream(password_resets.subscribe(), caches.password_resets.clone())
            .watches_shared_stream(users.subscribe(), of_user(&caches, Caches::password_resets_of))
            .watches_shared_stream(secrets.subscribe(), of_credentials(&caches, Caches::password_resets_of));
    // Device sign-ins are owned by their client but say nothing its status shows.
    let not_devices = secrets.subscribe().filter(|secret: &Arc<Secret>| {
        futures::future::ready(secret.type_.as_deref() != Some(names::DEVICE_TYPE))
    });
    let oidc_client_controller =
        Controller::for_shared_stream(oidc_clients.subscribe(), caches.oidc_clients.clone())
            .owns_shared_stream(not_devices);
    let ready = async {
        tokio::select! {
            true = caches.ready() => {
                readiness.set_ready();
                tracing::info!("watch caches synced; ready");
            }
            () = shutdown.cancelled() => {}
        }
    };
    let controllers = async {
        futures::join!(
            drive(user_controller, "user", user::reconcile, ctx.clone(), settings.clone(), shutdown.clone()),
            drive(
                invite_controller,
                "userinvite",
                invite::reconcile,
                ctx.clone(),
                settings.clone(),
                shutdown.clone()
            ),
            drive(
                reset_controller,
                "mfareset",
                reset::reconcile::<MfaReset>,
                ctx.clone(),
                settings.clone(),
                shutdown.clone()
            ),
            drive(
                password_reset_controller,
                "passwordreset",
                reset::reconcile::<PasswordReset>,
                ctx.clone(),
                settings.clone(),
                shutdown.clone()
            ),
            drive(
                oidc_client_controller,
                "oidcclient",
                oidc_client::reconcile,
                ctx.clone(),
                settings,
                shutdown.clone()
            ),
            ready,
        )
    };
    // The watches run until the controllers have stopped.
    tokio::select! {
        _ = controllers => {}
        _ = async {
            futures::join!(
                users.run(),
                invites.run(),
                resets.run(),
                password_resets.run(),
                oidc_clients.run(),
                secrets.run()
            )
        } => {}
        () = mail_watches => {}
    }
    tracing::info!("controllers stopped");
}

/// One API per namespace in `namespaces`, or one for all namespaces when it is empty.
fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<(Option<String>, Api<K>)>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    if namespaces.is_empty() {
        return vec![(None, Api::all(client.clone()))];
    }
    namespaces.iter().map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns))).collect()
}

/// How a User maps to objects `find` names (by namespace and user name), for a watch.
fn of_user<K>(
    caches: &Caches,
    find: fn(&Caches, &str, &str) -> Vec<Arc<K>>,
) -> impl Fn(Arc<User>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let caches = caches.clone();
    move |user| {
        let found = find(&caches, &user.namespace().unwrap_or_default(), &user.name_any());
        found.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
    }
}

/// How a credentials Secret (labelled with its user) maps to objects `find` names.
fn of_credentials<K>(
    caches: &Caches,
    find: fn(&Caches, &str, &str) -> Vec<Arc<K>>,
) -> impl Fn(Arc<Secret>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let caches = caches.clone();
    move |secret| match secret.labels().get(names::USER_LABEL) {
        Some(user) => {
            let found = find(&caches, &secret.namespace().unwrap_or_default(), user);
            found.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
        }
        None => Vec::new(),
    }
}

/// Users whose directory standing may change with `user`'s: those sharing its email or
/// username, now or before this change (they may be blocked by it, or waiting for it to go).
fn directory_peers(caches: &Caches, identities: &Mutex<Identities>, user: &User) -> Vec<ObjectRef<User>> {
    let me = Entry::of(user);
    let touched = {
        let mut identities = identities.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let touched = identities.record(me.clone());
        // A deleted User (gone from the cache, which applies a change before it is handed
        // on) is forgotten, so that memory follows the Users that exist.
        if caches.users.get(&ObjectRef::from_obj(user)).is_none() {
            identities.forget(&me.key);
        }
        touched
    };
    let mut peers: Vec<ObjectRef<User>> = touched
        .iter()
        .flat_map(|entry| entry.terms())
        .flat_map(|term| caches.directory.get(&term))
        .filter(|entry| entry.key != me.key)
        .filter_map(|entry| {
            let (namespace, name) = entry.key.split_once('/')?;
            Some(ObjectRef::new(name).within(namespace))
        })
        .collect();
    peers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    peers.dedup();
    peers
}

/// Runs one controller: reconciles are timed and counted; failures are counted by kind,
/// logged, and retried with per-object exponential backoff. A replica that does not lead
/// passes every object by (its events keep the controller's queue moving, so the shared
/// watches never wait on it) and looks at them all once it becomes the leader.
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
        .reconcile_all_on(ctx.leadership.gained())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            move |obj: Arc<K>, ctx: Arc<Context>| {
                let reconcile = reconcile.clone();
                async move {
                    if !ctx.leadership.is_leading() {
                        ctx.leadership.missed();
                        // A term that started meanwhile may have caught up before this miss
                        // was counted: then this object is looked at again now.
                        if ctx.leadership.is_leading() {
                            return Ok(Action::requeue(Duration::ZERO));
                        }
                        return Ok(Action::await_change());
                    }
                    let key = object_key(obj.as_ref());
                    let started = Instant::now();
                    // A reconcile still running when the term ends is cut short, as at a crash
                    // (every reconcile is written to survive one): the next leader may already
                    // act on the same object.
                    let Some(result) = ctx.leadership.while_leading(reconcile(obj, ctx.clone())).await else {
                        ctx.leadership.missed();
                        return Ok(Action::await_change());
                    };
                    ctx.metrics.reconciled(name, started.elapsed());
                    crate::memory::note_work();
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
    let ready = Desired {
        type_: types::READY,
        status: status::UNKNOWN,
        reason: reasons::RECONCILING,
        message: "roster is working on this generation".into(),
    };
    let [reconciling, stalled] = conditions::kstatus(true, None);
    conditions::merge(current, &[ready, reconciling, stalled], generation, &now())
}

/// Now, in whole seconds: what status can hold (see [`crate::api::status_time`]).
fn now() -> Time {
    crate::api::status_time(Timestamp::now())
}

/// The longest a reconcile is put off, in seconds (a year).
const REQUEUE_LIMIT: u64 = 365 * 24 * 3600;

/// Requeue a second after `at` (a deadline such as an invite's expiry), or at once if it
/// has passed: the reconcile that finds the deadline reached does the work.
fn requeue_at(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => {
            // The runtime's timer wheel holds at most about two years; a deadline further out
            // (an account that ends in 2030) is looked at again after a year.
            let seconds = u64::try_from(at.as_second() - now.as_second()).unwrap_or(0).min(REQUEUE_LIMIT);
            Action::requeue(Duration::from_secs(seconds.saturating_add(1)))
        }
        None => Action::await_change(),
    }
}

/// Metadata of an object roster creates for `owner`: a controller ownerReference, and
/// roster's own labels (`label` names the owner) — never the owner's, which GitOps tools
/// would take as their own and prune.
fn owned_meta<O>(owner: &O, name: &str, label: (&str, String)) -> Result<ObjectMeta>
where
    O: Resource<DynamicType = ()>,
{
    let reference = owner
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingUid { kind: O::kind(&()).into_owned(), object: cache::key(owner) })?;
    Ok(ObjectMeta {
        name: Some(name.to_owned()),
        namespace: owner.namespace(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (label.0.to_owned(), label.1),
        ])),
        owner_references: Some(vec![reference]),
        ..Default::default()
    })
}

/// Publishes an Event about `obj`; failures are logged, never fatal (an Event is a
/// notification, not a fact).
async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event =
        Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(error) = ctx.events.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(object = %cache::key(obj), reason, %error, "publishing an event failed");
    }
}

/// Creates `obj` unless an object of that name exists: deterministic names make creation
/// idempotent across retries and restarts. `cached` says whether the watch cache holds it
/// already; one this process created moments ago, which the cache does not show yet, is not
/// asked for again.
async fn create_unless_known<K>(ctx: &Context, obj: &K, cached: bool) -> Result<Creation>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let owner = obj.owner_references().first().map(|r| r.uid.as_str()).unwrap_or_default();
    let key = format!("{}/{owner}", object_key(obj));
    if cached {
        ctx.expectations.seen(&key);
        return Ok(Creation::Present);
    }
    if ctx.expectations.awaited(&key) {
        return Ok(Creation::Awaited);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let created = match api
        .create(
            &kube::api::PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
            obj,
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 409 => false,
        Err(source) => {
            return Err(Error::Kube {
                action: "creating",
                kind: K::kind(&()).into_owned(),
                object: cache::key(obj),
                source: Box::new(source),
            });
        }
    };
    // Either way the object exists: the cache will show it.
    ctx.expectations.created(key);
    Ok(if created { Creation::Created } else { Creation::Present })
}

/// What [`create_unless_known`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creation {
    /// Created now.
    Created,
    /// It exists.
    Present,
    /// Created moments ago, not in the cache yet: reconcile again after
    /// [`expectations::RECHECK`] unless its watch event comes first.
    Awaited,
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
    patch_status(ctx, obj, status, None, "patching status of").await.map(drop)
}

/// Server-side applies `status` like [`apply_status`], but only if `obj` is still at the
/// resourceVersion it was read at: `false` when another writer (a second replica, or this
/// one before the cache caught up) changed it first.
async fn apply_status_unless_changed<K, S>(ctx: &Context, obj: &K, status: &S) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    patch_status(ctx, obj, status, obj.resource_version(), "recording an attempt on").await
}

/// The status patch of both: `false` when `version` is given and the object has moved on.
async fn patch_status<K, S>(
    ctx: &Context,
    obj: &K,
    status: &S,
    version: Option<String>,
    action: &'static str,
) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let preconditioned = version.is_some();
    if let Some(version) = version {
        patch["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    match api
        .patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if preconditioned && status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action,
            kind: K::kind(&()).into_owned(),
            object: cache::key(obj),
            source: Box::new(source),
        }),
    }
}

/// Writes a Secret of `type_` that `owner` owns outright, labelled with `label` = the
/// owner's name: created when absent, else updated only if `owner` controls it (its
/// controller ownerReference names the owner's uid). A Secret of that name that anyone else
/// made is neither overwritten nor taken over: [`Error::SecretNotOwned`].
async fn apply_owned_secret<O>(
    ctx: &Context,
    owner: &O,
    name: &str,
    kind: (&str, &str),
    data: BTreeMap<String, String>,
) -> Result<()>
where
    O: Resource<DynamicType = ()>,
{
    let existing = read_secret(ctx, owner, name).await?;
    if write_owned_secret(ctx, owner, name, kind, data, existing.as_ref()).await? {
        Ok(())
    } else {
        Err(Error::Conflict { object: format!("{}/{name}", owner.namespace().unwrap_or_default()) })
    }
}

/// The Secret `name` in `owner`'s namespace as the API server has it now.
async fn read_secret<O: Resource>(ctx: &Context, owner: &O, name: &str) -> Result<Option<Secret>> {
    let namespace = owner.namespace().unwrap_or_default();
    Api::<Secret>::namespaced(ctx.client.clone(), &namespace).get_opt(name).await.map_err(|source| {
        Error::Kube {
            action: "reading",
            kind: "Secret".into(),
            object: format!("{namespace}/{name}"),
            source: Box::new(source),
        }
    })
}

/// Writes the Secret `name` for `owner` over `existing` (as last seen, read or cached):
/// created when there was none, else updated only if `owner` controls it
/// ([`Error::SecretNotOwned`] otherwise) and only at the version seen. `false` when `owner`'s
/// Secret was created or changed meanwhile (e.g. the cache was behind): nothing was written.
/// Returns once this process's cache shows the write (at most a moment), so a link emailed
/// next works the moment it arrives.
/// A Secret of that name that `owner` does not control is found by a read only when the
/// create conflicts, so the usual path costs one request.
async fn write_owned_secret<O>(
    ctx: &Context,
    owner: &O,
    name: &str,
    (type_, label): (&str, &str),
    data: BTreeMap<String, String>,
    existing: Option<&Secret>,
) -> Result<bool>
where
    O: Resource<DynamicType = ()>,
{
    let namespace = owner.namespace().unwrap_or_default();
    let object = format!("{namespace}/{name}");
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let mut secret = Secret {
        metadata: owned_meta(owner, name, (label, owner.name_any()))?,
        type_: Some(type_.to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    };
    let written = match existing {
        // Created, never applied over: one made meanwhile by anyone else is a conflict.
        None => {
            let params =
                kube::api::PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            api.create(&params, &secret).await.map(drop)
        }
        Some(existing) if !cache::controlled_by(existing, owner) => {
            return Err(Error::SecretNotOwned { secret: object });
        }
        Some(existing) => {
            secret.metadata.resource_version = existing.resource_version();
            api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
                .await
                .map(drop)
        }
    };
    match written {
        Ok(_) => {
            // What comes next (an email with the link, the person's first click) may be
            // answered from this process's cache: it shows the write (or a later one) first.
            let replaced = existing.and_then(|e| e.resource_version());
            crate::facts::await_cache(&ctx.caches.secrets, &secret, |cached| {
                cached.is_some_and(|cached| replaced.is_none() || cached.resource_version() != replaced)
            })
            .await;
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 && existing.is_none() => {
            match read_secret(ctx, owner, name).await? {
                Some(found) if !cache::controlled_by(&found, owner) && !of_predecessor(&found, owner) => {
                    Err(Error::SecretNotOwned { secret: object })
                }
                _ => Ok(false),
            }
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: if existing.is_some() { "writing" } else { "creating" },
            kind: "Secret".into(),
            object,
            source: Box::new(source),
        }),
    }
}

/// Whether `secret` is controlled by an earlier object of `owner`'s kind and name (deleted and
/// created again): garbage collection removes it, so it is waited for, not reported.
fn of_predecessor<O: Resource<DynamicType = ()>>(secret: &Secret, owner: &O) -> bool {
    let (api_version, kind, name) = (O::api_version(&()), O::kind(&()), owner.name_any());
    secret.owner_references().iter().any(|r| {
        r.controller == Some(true) && r.api_version == api_version && r.kind == kind && r.name == name
    })
}

/// Writes the Secrets of a link `owner` issues: `<owner>-token` (`token_type`, with
/// `token_data`) and, for a handed-over link, `<owner>-link` (`link_type`, the URL) — each
/// only as [`apply_owned_secret`] allows.
async fn apply_link_secrets<O>(
    ctx: &Context,
    owner: &O,
    (token_type, link_type, label): (&str, &str, &str),
    token_data: BTreeMap<String, String>,
    handed_over: Option<&str>,
) -> Result<()>
where
    O: Resource<DynamicType = ()>,
{
    let name = owner.name_any();
    apply_owned_secret(ctx, owner, &names::token_secret_name(&name), (token_type, label), token_data).await?;
    if let Some(url) = handed_over {
        apply_link_secret(ctx, owner, (link_type, label), url).await?;
    }
    Ok(())
}

/// Writes `<owner>-link` (`link_type`), the handed-over link's URL for admins, as
/// [`apply_owned_secret`] allows.
async fn apply_link_secret<O>(
    ctx: &Context,
    owner: &O,
    (link_type, label): (&str, &str),
    url: &str,
) -> Result<()>
where
    O: Resource<DynamicType = ()>,
{
    let data = BTreeMap::from([(names::LINK_URL.to_owned(), url.to_owned())]);
    apply_owned_secret(ctx, owner, &names::link_secret_name(&owner.name_any()), (link_type, label), data)
        .await
}

/// Deletes the Secret `name` if `owner` controls it (an absent one is fine). A Secret of
/// that name that anyone else made is left alone: roster deletes only what it owns, and the
/// uid precondition makes sure the Secret deleted is the one checked.
async fn delete_owned_secret<O>(ctx: &Context, owner: &O, name: &str) -> Result<()>
where
    O: Resource<DynamicType = ()>,
{
    let namespace = owner.namespace().unwrap_or_default();
    let kube_error = |action, source| Error::Kube {
        action,
        kind: "Secret".into(),
        object: format!("{namespace}/{name}"),
        source: Box::new(source),
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let Some(existing) = api.get_opt(name).await.map_err(|e| kube_error("reading", e))? else {
        return Ok(());
    };
    if !cache::controlled_by(&existing, owner) {
        tracing::info!(secret = name, "left alone a Secret roster does not own");
        return Ok(());
    }
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: existing.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(kube_error("deleting", source)),
    }
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
