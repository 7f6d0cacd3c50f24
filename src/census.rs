//! How many Users, invites and resets are in each phase, per namespace. The gauges
//! `/metrics` exports (kept from watch events, O(1) per event) and the table `roster stat`
//! prints (from a list of the cluster) count the same way, here.

use std::collections::{BTreeMap, HashMap};

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::api::{MfaReset, PasswordReset, ResetPhase, User, UserInvite, UserPhase};

/// A kind whose objects are counted by phase.
pub trait Counted: Resource<DynamicType = ()> {
    /// The phases, in lifecycle order: the columns of `roster stat`.
    const PHASES: &'static [&'static str];
    /// The phase this object is in; one not yet reconciled is in the first.
    fn phase(&self) -> &'static str;
}

impl Counted for User {
    const PHASES: &'static [&'static str] = &["NEW", "PENDING", "ACTIVE", "INACTIVE"];
    fn phase(&self) -> &'static str {
        match self.status.as_ref().and_then(|s| s.phase) {
            None | Some(UserPhase::New) => "NEW",
            Some(UserPhase::Pending) => "PENDING",
            Some(UserPhase::Active) => "ACTIVE",
            Some(UserPhase::Inactive) => "INACTIVE",
        }
    }
}

impl Counted for UserInvite {
    const PHASES: &'static [&'static str] =
        &["Pending", "Sent", "Accepted", "Expired", "Revoked", "Superseded", "Failed"];
    fn phase(&self) -> &'static str {
        use crate::api::InvitePhase::*;
        match self.status.as_ref().and_then(|s| s.phase) {
            None | Some(Pending) => "Pending",
            Some(Sent) => "Sent",
            Some(Accepted) => "Accepted",
            Some(Expired) => "Expired",
            Some(Revoked) => "Revoked",
            Some(Superseded) => "Superseded",
            Some(Failed) => "Failed",
        }
    }
}

/// The phase of a reset's status.
fn reset_phase(phase: Option<ResetPhase>) -> &'static str {
    match phase {
        None | Some(ResetPhase::Pending) => "Pending",
        Some(ResetPhase::Completed) => "Completed",
        Some(ResetPhase::Failed) => "Failed",
    }
}

const RESET_PHASES: &[&str] = &["Pending", "Completed", "Failed"];

impl Counted for MfaReset {
    const PHASES: &'static [&'static str] = RESET_PHASES;
    fn phase(&self) -> &'static str {
        reset_phase(self.status.as_ref().and_then(|s| s.phase))
    }
}

impl Counted for PasswordReset {
    const PHASES: &'static [&'static str] = RESET_PHASES;
    fn phase(&self) -> &'static str {
        reset_phase(self.status.as_ref().and_then(|s| s.phase))
    }
}

/// Counts of one kind by namespace and phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

impl Tally {
    /// The counts of `objects`.
    pub fn of<'a, K: Counted + 'a>(objects: impl IntoIterator<Item = &'a K>) -> Self {
        let mut tally = Self::default();
        for object in objects {
            let namespace = object.namespace().unwrap_or_default();
            *tally.counts.entry(namespace).or_default().entry(object.phase()).or_default() += 1;
        }
        tally
    }

    /// Namespace by namespace, how many are in each phase.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &BTreeMap<&'static str, u64>)> {
        self.counts.iter().map(|(namespace, phases)| (namespace.as_str(), phases))
    }
}

/// The labels of a gauge of objects by phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The objects' namespace.
    pub namespace: String,
    /// Their phase.
    pub phase: &'static str,
}

/// The labels of a gauge of resets by kind and phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    /// MfaReset or PasswordReset.
    pub kind: &'static str,
    /// The resets' namespace.
    pub namespace: String,
    /// Their phase.
    pub phase: &'static str,
}

/// A gauge family of one kind's objects by namespace and phase, kept from watch events.
/// Every replica keeps it (each watches everything), so dashboards take the `max` over
/// replicas, not the sum. For the controller's informers (`Informer::follow`), which
/// see a re-list as applies and deletes (`Init`/`InitDone` carry nothing): on a raw watcher
/// the objects gone during a re-list would stay counted.
pub fn follower<K, L>(
    gauges: Family<L, Gauge>,
    labels: impl Fn(String, &'static str) -> L + Send + 'static,
) -> impl FnMut(&watcher::Event<K>) + Send + 'static
where
    K: Counted + 'static,
    L: Clone + std::hash::Hash + Eq + Send + Sync + std::fmt::Debug + EncodeLabelSet + 'static,
{
    // Where each object was counted, so that a change moves one count.
    let mut counted: HashMap<String, L> = HashMap::new();
    move |event| {
        let (object, present) = match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => (object, true),
            watcher::Event::Delete(object) => (object, false),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let namespace = object.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", object.name_any());
        let now = present.then(|| labels(namespace, object.phase()));
        let before = match &now {
            Some(labels) => counted.insert(key, labels.clone()),
            None => counted.remove(&key),
        };
        if before == now {
            return;
        }
        if let Some(labels) = before {
            // A namespace's series goes when its last object leaves the phase.
            let previous = gauges.get_or_create(&labels).dec();
            if previous <= 1 {
                gauges.remove(&labels);
            }
        }
        if let Some(labels) = now {
            gauges.get_or_create(&labels).inc();
        }
    }
}

/// The labels of a Users or invites gauge.
pub fn by_phase(namespace: String, phase: &'static str) -> PhaseLabels {
    PhaseLabels { namespace, phase }
}

/// The labels of a resets gauge for `kind`.
pub fn reset_of(kind: &'static str) -> impl Fn(String, &'static str) -> ResetLabels + Send + 'static {
    move |namespace, phase| ResetLabels { kind, namespace, phase }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(namespace: &str, name: &str, phase: Option<UserPhase>) -> User {
        let mut user =
            User::new(name, serde_json::from_value(serde_json::json!({"email": "a@example.com"})).unwrap());
        user.metadata.namespace = Some(namespace.into());
        user.status = phase.map(|phase| crate::api::UserStatus { phase: Some(phase), ..Default::default() });
        user
    }

    fn value(gauges: &Family<PhaseLabels, Gauge>, namespace: &str, phase: &'static str) -> Option<i64> {
        let labels = PhaseLabels { namespace: namespace.into(), phase };
        // `get` would not create it: a missing series is None.
        gauges.get(&labels).map(|g| g.get())
    }

    #[test]
    fn a_change_of_phase_moves_one_count_and_a_delete_removes_it() {
        let gauges = Family::<PhaseLabels, Gauge>::default();
        let mut follow = follower::<User, _>(gauges.clone(), by_phase);
        follow(&watcher::Event::InitApply(user("a", "jane", None)));
        follow(&watcher::Event::Apply(user("a", "bob", Some(UserPhase::Pending))));
        follow(&watcher::Event::Apply(user("b", "carol", Some(UserPhase::Active))));
        assert_eq!(value(&gauges, "a", "NEW"), Some(1));
        follow(&watcher::Event::Apply(user("a", "jane", Some(UserPhase::Pending))));
        follow(&watcher::Event::Apply(user("a", "jane", Some(UserPhase::Pending))));
        assert_eq!(value(&gauges, "a", "NEW"), None, "the emptied series is gone");
        assert_eq!(value(&gauges, "a", "PENDING"), Some(2), "a repeated event counts once");
        follow(&watcher::Event::Delete(user("a", "bob", Some(UserPhase::Pending))));
        follow(&watcher::Event::Delete(user("a", "nobody", None)));
        assert_eq!(value(&gauges, "a", "PENDING"), Some(1));
        assert_eq!(value(&gauges, "b", "ACTIVE"), Some(1));
    }

    #[test]
    fn gauges_are_exported_with_their_labels() {
        let metrics = crate::telemetry::Metrics::default();
        let mut follow = follower::<User, _>(metrics.users.clone(), by_phase);
        follow(&watcher::Event::Apply(user("team-a", "jane", Some(UserPhase::Active))));
        let text = metrics.encode();
        assert!(text.contains("roster_users{namespace=\"team-a\",phase=\"ACTIVE\"} 1"), "{text}");
    }

    #[test]
    fn a_tally_counts_what_a_list_holds() {
        let users = [
            user("a", "jane", Some(UserPhase::Active)),
            user("a", "bob", Some(UserPhase::Active)),
            user("b", "carol", None),
        ];
        let tally = Tally::of(&users);
        let rows: Vec<_> = tally.rows().map(|(ns, phases)| (ns.to_owned(), phases.clone())).collect();
        assert_eq!(
            rows,
            [
                ("a".to_owned(), BTreeMap::from([("ACTIVE", 2)])),
                ("b".to_owned(), BTreeMap::from([("NEW", 1)]))
            ]
        );
    }
}
