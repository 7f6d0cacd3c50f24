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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
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

/// How long this replica may act as the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Term {
    /// It does not lead.
    Following,
    /// It leads until this instant (the start of its last successful renewal plus the
    /// renew deadline), unless a renewal extends it.
    Until(Instant),
    /// No election: the only replica.
    Always,
}

impl Term {
    fn leads_at(self, now: Instant) -> bool {
        match self {
            Term::Following => false,
            Term::Until(until) => now < until,
            Term::Always => true,
        }
    }
}

/// Whether this replica leads now, and when it starts or stops: what the reconcilers ask
/// before acting. Leading ends at the renew deadline by this process's own clock, whatever
/// the elector is doing (a hung request, a paused process).
#[derive(Clone)]
pub struct Leadership {
    term: watch::Receiver<Term>,
    /// Counts reconciles passed by or cut short while not leading: a term that starts after
    /// one begins by looking at every object. Without it, a term renewed a moment late would
    /// reconcile the whole directory again for nothing.
    missed: Arc<AtomicU64>,
}

impl Leadership {
    fn new(term: watch::Receiver<Term>) -> Self {
        Self { term, missed: Arc::default() }
    }

    /// A replica without election (one replica, or a test): it always leads.
    pub fn always() -> Self {
        let (sender, receiver) = watch::channel(Term::Always);
        // Kept for the life of the process, so the receiver never sees it closed.
        std::mem::forget(sender);
        Self::new(receiver)
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        self.term.borrow().leads_at(Instant::now())
    }

    /// Notes that an object was not reconciled because this replica did not lead.
    pub fn missed(&self) {
        self.missed.fetch_add(1, Ordering::SeqCst);
    }

    /// Resolves once this replica leads (at once if it does).
    pub async fn leading(&mut self) {
        // Err: the elector has stopped (shutdown); this replica will not lead again.
        if self.term.wait_for(|term| term.leads_at(Instant::now())).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// Resolves once this replica no longer leads: at once when it does not, else at its
    /// renew deadline unless renewed meanwhile, or when the elector says so.
    pub async fn lost(&mut self) {
        loop {
            let term = *self.term.borrow_and_update();
            let until = match term {
                Term::Until(until) if Instant::now() < until => until,
                Term::Always => {
                    if self.term.changed().await.is_err() {
                        futures::future::pending::<()>().await;
                    }
                    continue;
                }
                Term::Following | Term::Until(_) => return,
            };
            tokio::select! {
                changed = self.term.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Runs `work` while this replica leads: `None` when the term ended first. The end of the
    /// term wins over work that is ready at the same moment; cut short, the work stops at its
    /// next await, as at a crash.
    pub async fn while_leading<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut lost = self.clone();
        tokio::select! {
            biased;
            () = lost.lost() => None,
            done = work => Some(done),
        }
    }

    /// One item each time this replica becomes the leader after a reconcile was missed (by
    /// any controller: each stream keeps its own count of what it has caught up on): the
    /// reconcilers then look at every object.
    pub fn gained(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut receiver = self.term.clone();
        receiver.borrow_and_update();
        let missed = self.missed.clone();
        // The elector notifies only the start of a term, so every change is a start, even
        // when a quick loss and regain were seen as one change.
        futures::stream::unfold((receiver, missed, 0), |(mut receiver, missed, mut caught_up)| async move {
            loop {
                receiver.changed().await.ok()?;
                let leads = receiver.borrow_and_update().leads_at(Instant::now());
                let misses = missed.load(Ordering::SeqCst);
                if leads && misses > caught_up {
                    caught_up = misses;
                    return Some(((), (receiver, missed, caught_up)));
                }
            }
        })
    }
}

/// The longest a shutting-down leader spends releasing its Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

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
    term: watch::Sender<Term>,
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
        let (term, receiver) = watch::channel(Term::Following);
        let api = Api::namespaced(client.clone(), &lease.namespace);
        (Self { api, lease, identity, timing, term }, Leadership::new(receiver))
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
        loop {
            let started = Instant::now();
            // A leader's round may last only until its term ends: a hung request must not
            // keep it from noticing.
            let limit = match *self.term.borrow() {
                Term::Until(until) if until > started => until,
                _ => started + self.timing.renew_deadline,
            };
            match tokio::time::timeout_at(limit, self.try_once(&mut observed)).await {
                Ok(Ok(true)) => self.lead_until(started + self.timing.renew_deadline),
                Ok(Ok(false)) => self.follow("another replica holds the Lease"),
                Ok(Err(error)) => tracing::warn!(%error, "leader election: trying again"),
                Err(_) => {
                    tracing::warn!(lease = %self.lease, "leader election: a round took too long; trying again")
                }
            }
            if !self.term.borrow().leads_at(Instant::now()) {
                self.follow("could not renew the Lease within the renew deadline");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.timing.retry) => {}
            }
        }
        self.follow("shutting down");
        // Released whenever this replica still holds it, even past its own deadline, within
        // a few seconds: the pod's grace period must not run out first.
        match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.lease, "released the Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "releasing the Lease failed; it expires by itself"),
            Err(_) => {
                tracing::warn!(lease = %self.lease, "releasing the Lease took too long; it expires by itself")
            }
        }
    }

    /// Leads until `until`; says so when a term starts (only then are watchers woken).
    fn lead_until(&self, until: Instant) {
        let started = self.term.send_if_modified(|term| {
            let was = term.leads_at(Instant::now());
            *term = Term::Until(until);
            !was
        });
        if started {
            tracing::info!(lease = %self.lease, identity = %self.identity, "became the leader");
        }
    }

    fn follow(&self, why: &str) {
        if self.term.send_if_modified(|term| std::mem::replace(term, Term::Following) != Term::Following) {
            tracing::warn!(lease = %self.lease, identity = %self.identity, "stopped leading: {why}");
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

    /// Gives the Lease up if this replica holds it: no holder, lasting 1 s, at the version
    /// read. `true` when it did.
    async fn release(&self) -> Result<bool, LeaseError> {
        let Some(mut lease) = self.call("reading", self.api.get_opt(&self.lease.name)).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.call("releasing", self.api.replace(&self.lease.name, &PostParams::default(), &lease))
            .await
            .map(|_| true)
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

impl Drop for Elector {
    /// An elector that stops, however, ends the term: nothing may act on a Lease no one renews.
    fn drop(&mut self) {
        self.term.send_replace(Term::Following);
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

    fn term(seconds: u64) -> Term {
        Term::Until(Instant::now() + Duration::from_secs(seconds))
    }

    #[tokio::test]
    async fn a_new_term_reconciles_everything_only_after_a_miss() {
        let (sender, receiver) = watch::channel(Term::Following);
        let leadership = Leadership::new(receiver);
        let mut gained = Box::pin(leadership.gained());
        let mut other_controller = Box::pin(leadership.gained());
        leadership.missed();
        sender.send_replace(term(60));
        assert_eq!(gained.next().await, Some(()));
        assert_eq!(other_controller.next().await, Some(()), "every controller catches up");
        // Lost and regained at once, nothing missed meanwhile: nothing to catch up on.
        sender.send_replace(Term::Following);
        sender.send_replace(term(60));
        assert!(gained.next().now_or_never().is_none());
        leadership.missed();
        sender.send_replace(Term::Following);
        sender.send_replace(term(60));
        assert_eq!(gained.next().await, Some(()));
        drop(sender);
        assert_eq!(gained.next().await, None);
        assert!(Leadership::always().gained().boxed().next().now_or_never().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_term_ends_at_its_deadline_whatever_the_elector_does() {
        let (sender, receiver) = watch::channel(term(10));
        let mut leadership = Leadership::new(receiver);
        assert!(leadership.is_leading());
        let started = Instant::now();
        leadership.lost().await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(!leadership.is_leading());
        // A renewal extends the term without waking anyone; lost() follows it.
        sender.send_modify(|t| *t = term(10));
        let started = Instant::now();
        sender.send_if_modified(|t| {
            *t = Term::Until(started + Duration::from_secs(25));
            false
        });
        leadership.lost().await;
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn work_is_cut_short_at_the_end_of_the_term() {
        let (_sender, receiver) = watch::channel(term(10));
        let leadership = Leadership::new(receiver);
        let slow = tokio::time::sleep(Duration::from_secs(20));
        assert_eq!(leadership.while_leading(slow).await, None);
        assert_eq!(leadership.while_leading(async { 7 }).await, None, "not leading: nothing runs");
        assert_eq!(Leadership::always().while_leading(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_stopped_elector_ends_the_term() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let lease = ObjectName { namespace: "ns".into(), name: "lease".into() };
        let (elector, mut leadership) =
            Elector::new(&client, lease, "me".into(), Timing::for_lease(Duration::from_secs(15)));
        elector.lead_until(Instant::now() + Duration::from_secs(10));
        assert!(leadership.is_leading());
        drop(elector);
        assert!(!leadership.is_leading());
        leadership.lost().await;
    }

    #[test]
    fn identities_differ_between_processes_of_one_pod() {
        assert_ne!(Elector::identity(), Elector::identity());
    }
}
