//! Leader election on a `coordination.k8s.io` Lease, the way client-go's `leaderelection`
//! does it: of several replicas, one — the holder of the Lease — reconciles; every replica
//! serves the portal and the issuer from its own caches.
//!
//! Own code rather than a crate: the maintained ones (kube-lease-manager,
//! kube-leader-election) are built on older kube releases than roster's, and neither stops
//! leading when a renewal has not succeeded within a deadline shorter than the lease — what
//! keeps two leaders from overlapping.
//!
//! The rules, each in [`decide`] or [`Elector::run`]:
//! - every write replaces the Lease at the resourceVersion read, so of two candidates one wins;
//! - another holder's Lease is taken over only when it has not changed for its whole
//!   `leaseDurationSeconds`, measured on this process's monotonic clock (clocks of different
//!   machines are never compared), or at once when it was released;
//! - a leader that cannot renew within the renew deadline (2/3 of the lease) stops leading,
//!   before anyone may take over, and campaigns again;
//! - on shutdown, once the reconcilers have stopped, the leader releases the Lease (no holder,
//!   1 s), so another replica takes over within one retry period instead of a whole lease.

use std::time::{Duration, Instant};

use futures::Stream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ObjectName;

/// How long a Lease lasts, how soon a leader gives up renewing and how often each replica
/// tries (client-go's 15 s, 10 s and 2 s for a 15 s lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a holder's Lease stands without a renewal.
    pub lease: Duration,
    /// How long a leader keeps leading without a successful renewal (less than `lease`, so
    /// it has stopped before another replica may take over).
    pub renew_deadline: Duration,
    /// How often a replica tries to acquire or renew.
    pub retry: Duration,
}

impl Timing {
    /// The renew deadline (2/3) and retry period (2/15) of a `lease`.
    pub fn for_lease(lease: Duration) -> Self {
        Self { lease, renew_deadline: lease * 2 / 3, retry: (lease * 2 / 15).max(Duration::from_millis(200)) }
    }
}

/// Whether this replica leads now, and when it starts to: what the reconcilers ask before
/// acting.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A replica without election (one replica, or a test): it always leads.
    pub fn always() -> Self {
        let (sender, receiver) = watch::channel(true);
        // Kept for the life of the process, so the receiver never sees it closed.
        std::mem::forget(sender);
        Self(receiver)
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once this replica leads (at once if it does).
    pub async fn leading(&mut self) {
        // Err: the elector has stopped (shutdown); this replica will not lead again.
        if self.0.wait_for(|leading| *leading).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// Resolves once this replica no longer leads (never while it does and runs).
    pub async fn lost(&mut self) {
        if self.0.wait_for(|leading| !*leading).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// One item each time this replica becomes the leader after not being it: the
    /// reconcilers then look at every object, since what changed meanwhile was not acted on.
    pub fn gained(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut receiver = self.0.clone();
        receiver.borrow_and_update();
        // The elector notifies only flips, so a change that ends leading is a rise, even
        // when a quick loss and regain were seen as one change.
        futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                receiver.changed().await.ok()?;
                if *receiver.borrow_and_update() {
                    return Some(((), receiver));
                }
            }
        })
    }
}

/// What a candidate does with the Lease as it reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by this replica.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// Released, or not renewed for its whole duration: take it over.
    TakeOver,
    /// Another replica holds it.
    Wait,
}

/// What `me` does with `spec`, the Lease as read, which has not changed for `unchanged` on
/// this process's clock.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged: Duration) -> Step {
    let Some(spec) = spec else { return Step::Create };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) => {
            let lasts = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
            if unchanged >= Duration::from_secs(lasts) { Step::TakeOver } else { Step::Wait }
        }
    }
}

/// The campaign for one Lease: run it with [`Elector::run`]; [`Leadership`] tells the rest.
pub struct Elector {
    api: Api<Lease>,
    lease: ObjectName,
    identity: String,
    timing: Timing,
    leading: watch::Sender<bool>,
}

/// A failed read or write of the Lease; the campaign goes on.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("{action} the Lease {lease}: {source}")]
    Api { action: &'static str, lease: String, source: Box<kube::Error> },
    #[error("{action} the Lease {lease} took longer than {limit:?}")]
    Timeout { action: &'static str, lease: String, limit: Duration },
}

impl Elector {
    /// A candidate for `lease` named `identity` (unique per process).
    pub fn new(client: &Client, lease: ObjectName, identity: String, timing: Timing) -> (Self, Leadership) {
        let (leading, receiver) = watch::channel(false);
        let api = Api::namespaced(client.clone(), &lease.namespace);
        (Self { api, lease, identity, timing, leading }, Leadership(receiver))
    }

    /// A unique name for this process: the pod's name (or the host's), and a random part
    /// that tells a restarted process from its predecessor.
    pub fn identity() -> String {
        let base = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "roster".to_owned());
        let suffix = crate::credentials::random_bytes::<4>().map(hex::encode).unwrap_or_default();
        format!("{base}_{suffix}")
    }

    /// Campaigns until `stop`, then — leading — releases the Lease. Cancel `stop` only once
    /// the reconcilers have finished what they were doing.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(lease = %self.lease, identity = %self.identity, "campaigning for leadership");
        // The Lease as last read, and since when (this process's clock) it has not changed.
        let mut observed: Option<(String, Instant)> = None;
        let mut renewed: Option<Instant> = None;
        loop {
            match self.try_once(&mut observed).await {
                Ok(true) => {
                    renewed = Some(Instant::now());
                    self.set_leading(true, "acquired or renewed the Lease");
                }
                Ok(false) => {
                    renewed = None;
                    self.set_leading(false, "another replica holds the Lease");
                }
                Err(error) => {
                    tracing::warn!(%error, "leader election: trying again");
                    if renewed.is_some_and(|at| at.elapsed() >= self.timing.renew_deadline) {
                        renewed = None;
                        self.set_leading(false, "could not renew the Lease within the renew deadline");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.timing.retry) => {}
            }
        }
        if *self.leading.borrow() {
            self.leading.send_replace(false);
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.lease, "released the Lease"),
                Err(error) => tracing::warn!(%error, "releasing the Lease failed; it expires by itself"),
            }
        }
    }

    fn set_leading(&self, leading: bool, why: &str) {
        if self.leading.send_if_modified(|now| std::mem::replace(now, leading) != leading) {
            if leading {
                tracing::info!(lease = %self.lease, identity = %self.identity, "became the leader: {why}");
            } else {
                tracing::warn!(lease = %self.lease, identity = %self.identity, "stopped leading: {why}");
            }
        }
    }

    /// One round: read the Lease, then create, renew or take it over when [`decide`] says so.
    /// `true` when this replica holds it afterwards.
    async fn try_once(&self, observed: &mut Option<(String, Instant)>) -> Result<bool, LeaseError> {
        let current = self.call("reading", self.api.get_opt(&self.lease.name)).await?;
        let version = current.as_ref().and_then(ResourceExt::resource_version).unwrap_or_default();
        let since = match observed.take() {
            Some((seen, at)) if seen == version => at,
            _ => Instant::now(),
        };
        *observed = Some((version, since));
        let now = MicroTime(Timestamp::now());
        let lease_seconds = i32::try_from(self.timing.lease.as_secs()).unwrap_or(i32::MAX).max(1);
        let step = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, since.elapsed());
        let written = match (step, current) {
            (Step::Wait, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease.name.clone()),
                        namespace: Some(self.lease.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(lease_seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.call("creating", self.api.create(&PostParams::default(), &lease)).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                spec.lease_duration_seconds = Some(lease_seconds);
                spec.renew_time = Some(now);
                self.call("updating", self.api.replace(&self.lease.name, &PostParams::default(), &lease))
                    .await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(lease) => {
                *observed = Some((lease.resource_version().unwrap_or_default(), Instant::now()));
                Ok(true)
            }
            // Another replica wrote first (created, renewed or took over): it holds the Lease.
            Err(LeaseError::Api { source, .. }) if matches!(source.as_ref(), kube::Error::Api(status) if status.code == 409) => {
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }

    /// Gives the Lease up: no holder, lasting 1 s, at the version this replica holds.
    async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.call("reading", self.api.get_opt(&self.lease.name)).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.call("releasing", self.api.replace(&self.lease.name, &PostParams::default(), &lease))
            .await
            .map(drop)
    }

    /// One request, bounded by the retry period (a hung request must not hold a leader past
    /// its renew deadline).
    async fn call<T>(
        &self,
        action: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let limit = self.timing.retry.max(Duration::from_secs(1));
        let lease = self.lease.to_string();
        match tokio::time::timeout(limit, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(LeaseError::Api { action, lease, source: Box::new(source) }),
            Err(_) => Err(LeaseError::Timeout { action, lease, limit }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    fn held_by(holder: Option<&str>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created_and_ones_own_renewed() {
        assert_eq!(decide(None, "me", Duration::ZERO), Step::Create);
        assert_eq!(decide(Some(&held_by(Some("me"), 15)), "me", Duration::from_secs(60)), Step::Renew);
    }

    #[test]
    fn anothers_lease_is_taken_over_only_after_its_duration_unchanged() {
        let theirs = held_by(Some("other"), 15);
        assert_eq!(decide(Some(&theirs), "me", Duration::from_secs(14)), Step::Wait);
        assert_eq!(decide(Some(&theirs), "me", Duration::from_secs(15)), Step::TakeOver);
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once() {
        assert_eq!(decide(Some(&held_by(None, 1)), "me", Duration::ZERO), Step::TakeOver);
        assert_eq!(decide(Some(&held_by(Some(""), 15)), "me", Duration::ZERO), Step::TakeOver);
    }

    #[test]
    fn a_leader_stops_before_anyone_may_take_over() {
        let timing = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(timing.retry, Duration::from_secs(2));
        assert!(timing.renew_deadline + timing.retry <= timing.lease);
    }

    #[tokio::test]
    async fn gained_fires_on_each_rise_not_on_staying_or_falling() {
        let (sender, receiver) = watch::channel(false);
        let leadership = Leadership(receiver);
        let mut gained = Box::pin(leadership.gained());
        sender.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        sender.send_replace(false);
        sender.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        drop(sender);
        assert_eq!(gained.next().await, None);
        assert!(Leadership::always().gained().boxed().next().now_or_never().is_none());
    }

    #[test]
    fn identities_differ_between_processes_of_one_pod() {
        assert_ne!(Elector::identity(), Elector::identity());
    }
}
