//! Kubernetes Events (events.k8s.io/v1) for what roster did: a phase change, a reset, a
//! revoked invitation. Each is published once, never as a series. kube's `Recorder` keeps
//! every Event it published for six minutes to count repeats, and scans all of them on each
//! publish: at 10,000 users onboarding that is an O(N) scan per Event and megabytes held
//! for nothing, since roster does not repeat an Event.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// Publishes Events as `reporter`.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    /// Events reported by `reporter` (its instance: the pod, when known).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Creates one Event about `regarding`, in its namespace.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &object(&self.reporter, event, regarding, Timestamp::now()))
            .await
            .map(drop)
    }
}

/// The Event object: named after what it regards and the time, as kubectl shows them.
fn object(reporter: &Reporter, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
    let controller = &reporter.controller;
    let name = regarding.name.as_deref().unwrap_or(controller);
    K8sEvent {
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(controller.clone()),
        reporting_instance: Some(reporter.instance.clone().unwrap_or_else(|| controller.clone())),
        type_: Some(match event.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_what_it_regards_and_who_reported_it() {
        let reporter = Reporter { controller: "roster".into(), instance: None };
        let regarding = ObjectReference {
            kind: Some("User".into()),
            name: Some("jane".into()),
            namespace: Some("team".into()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Locked".into(),
            note: Some("too many failed sign-ins".into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let object = object(&reporter, &event, &regarding, now);
        assert_eq!(object.metadata.name.as_deref(), Some("jane.17979cfe362a0000"));
        assert_eq!(object.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(object.type_.as_deref(), Some("Warning"));
        assert_eq!(object.reporting_instance.as_deref(), Some("roster"));
        assert_eq!(object.regarding, Some(regarding));
        assert!(object.series.is_none());
    }
}
