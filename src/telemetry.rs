//! Logs and metrics: the tracing subscriber `roster run` installs, and the Prometheus
//! registry every controller reports into.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::census::{PhaseLabels, ResetLabels};
use crate::config::LogFormat;

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over `filter`.
pub fn init_logging(format: LogFormat, filter: &str) -> crate::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .map_err(|e| crate::Error::Startup(format!("invalid log filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| crate::Error::Startup(format!("installing the logger: {e}")))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    outcome: &'static str,
}

/// Reconcile counters and durations, per controller; failures by error kind; deliveries by
/// outcome; the portal's sign-ins by outcome, lockouts and completed onboardings; the
/// directory's objects by phase.
pub struct Metrics {
    registry: Registry,
    logins: Family<LoginLabels, Counter>,
    lockouts: Counter,
    onboardings: Counter,
    deliveries: Family<DeliveryLabels, Counter>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
    /// Users by namespace and phase.
    pub users: Family<PhaseLabels, Gauge>,
    /// UserInvites by namespace and phase.
    pub invites: Family<PhaseLabels, Gauge>,
    /// MfaResets and PasswordResets by kind, namespace and phase.
    pub resets: Family<ResetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("roster");
        let r = &mut registry;
        Self {
            reconciles: registered(r, "reconciles", "Reconciles run, per controller", Family::default()),
            failures: registered(
                r,
                "reconcile_failures",
                "Reconciles that failed, per controller and error kind",
                Family::default(),
            ),
            duration: registered(
                r,
                "reconcile_duration_seconds",
                "Time one reconcile took, per controller",
                Family::new_with_constructor(|| {
                    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                }),
            ),
            deliveries: registered(
                r,
                "invite_deliveries",
                "Invitation deliveries by outcome",
                Family::default(),
            ),
            logins: registered(
                r,
                "portal_logins",
                "Sign-ins through the portal by outcome: success, denied, inactive",
                Family::default(),
            ),
            lockouts: registered(
                r,
                "portal_lockouts",
                "Users locked out by failed sign-ins",
                Counter::default(),
            ),
            onboardings: registered(
                r,
                "portal_onboardings_completed",
                "Onboardings completed in the portal",
                Counter::default(),
            ),
            leader: registered(
                r,
                "leader",
                "1 while this replica leads (reconciles), else 0",
                Gauge::default(),
            ),
            users: registered(
                r,
                "users",
                "Users by namespace and phase (every replica counts all: take the max)",
                Family::default(),
            ),
            invites: registered(r, "invites", "UserInvites by namespace and phase", Family::default()),
            resets: registered(
                r,
                "resets",
                "MfaResets and PasswordResets by kind, namespace and phase",
                Family::default(),
            ),
            registry,
        }
    }
}

/// Registers `metric` under `name` and gives it back for [`Metrics`] to keep: the registry
/// holds a clone, and both share the values.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Counts one finished reconcile of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &'static str, elapsed: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Counts one failed reconcile of `controller`, by the error's kind.
    pub fn failed(&self, controller: &'static str, error: &crate::Error) {
        self.failures.get_or_create(&FailureLabels { controller, error: error.metric_label() }).inc();
    }

    /// Counts one invitation delivery attempt by `outcome`.
    pub fn email(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { outcome }).inc();
    }

    /// Counts one sign-in by `outcome`.
    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
    }

    /// Counts one lockout.
    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// Whether this replica leads now.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts one completed onboarding.
    pub fn onboarding_completed(&self) {
        self.onboardings.inc();
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_labelled_by_controller_and_error_kind() {
        let metrics = Metrics::default();
        metrics.failed("user", &crate::Error::Startup("x".into()));
        metrics.reconciled("user", Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(r#"roster_reconcile_failures_total{controller="user",error="startup"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"roster_reconciles_total{controller="user"} 1"#), "{text}");
        assert!(text.contains(r#"roster_reconcile_duration_seconds_count{controller="user"} 1"#), "{text}");
    }
}

#[cfg(test)]
mod dashboard {
    /// The chart's Grafana dashboard.
    const DASHBOARD: &str = include_str!("../charts/roster/dashboards/roster.json");

    #[test]
    fn every_metric_the_dashboard_queries_is_one_roster_exports() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
        // A family is exported once it has a series: give each one.
        let metrics = super::Metrics::default();
        metrics.reconciled("user", std::time::Duration::from_millis(3));
        metrics.failed("user", &crate::Error::MissingUid { kind: "User".into(), object: "a/b".into() });
        metrics.email("sent");
        metrics.login("success");
        let labels = crate::census::by_phase("team".into(), "ACTIVE");
        metrics.users.get_or_create(&labels).inc();
        metrics.invites.get_or_create(&labels).inc();
        metrics.resets.get_or_create(&crate::census::reset_of("MfaReset")("team".into(), "Pending")).inc();
        let exported = metrics.encode();
        let mut queries: Vec<String> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                queries.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            if let Some(query) = variable["definition"].as_str() {
                queries.push(query.to_owned());
            }
        }
        let mut named = 0;
        for query in &queries {
            for (at, _) in query.match_indices("roster_") {
                let name: String =
                    query[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // A counter's samples end in _total, a histogram's in _bucket, _sum, _count.
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(&format!("# TYPE {family} ")),
                    "{query} names {name}, which roster does not export"
                );
                if name.ends_with("_total") {
                    assert!(
                        exported.contains(&format!("# TYPE {family} counter")),
                        "{name} is not a counter"
                    );
                }
                named += 1;
            }
        }
        assert!(named >= 10, "the dashboard queries {named} metrics");
        for gauge in ["roster_users", "roster_invites", "roster_resets", "roster_portal_logins"] {
            assert!(queries.iter().any(|q| q.contains(gauge)), "no panel shows {gauge}");
        }
    }
}
