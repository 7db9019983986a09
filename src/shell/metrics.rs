//! Prometheus metrics, named after kube-scheduler's with a `phalanx_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// scheduled | unschedulable | error
    pub result: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// active | backoff | unschedulable | in_flight
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub schedule_attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: Family<AttemptLabels, Histogram>,
    pub pending_pods: Family<QueueLabels, Gauge>,
    pub bind_duration: Family<ResultLabels, Histogram>,
    pub reports_dropped: Counter,
    pub invalid_objects: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            schedule_attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16))),
            pending_pods: Family::default(),
            bind_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
            reports_dropped: Counter::default(),
            invalid_objects: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("phalanx");
        r.register("schedule_attempts", "Scheduling attempts by result and profile", m.schedule_attempts.clone());
        r.register(
            "scheduling_attempt_duration_seconds",
            "Time to decide on one pod (filter and score), by result",
            m.attempt_duration.clone(),
        );
        r.register("pending_pods", "Pods waiting for a decision, by queue", m.pending_pods.clone());
        r.register("bind_duration_seconds", "Time of one binding call, by result", m.bind_duration.clone());
        r.register(
            "reports_dropped",
            "Status updates and Events dropped because the writer queue was full",
            m.reports_dropped.clone(),
        );
        r.register(
            "invalid_objects",
            "Pods and nodes ignored because a field could not be read",
            m.invalid_objects.clone(),
        );
        m
    }

    pub fn attempt(&self, result: &str, profile: &str, seconds: f64) {
        let labels = AttemptLabels { result: result.into(), profile: profile.into() };
        self.schedule_attempts.get_or_create(&labels).inc();
        self.attempt_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn set_pending(&self, queue: &str, n: usize) {
        self.pending_pods.get_or_create(&QueueLabels { queue: queue.into() }).set(n as i64);
    }
}
