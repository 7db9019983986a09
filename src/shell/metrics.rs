//! Prometheus metrics, named after kube-scheduler's with a `phalanx_` prefix.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub use phalanx_core::quota::QuotaUsage;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub namespace: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The kind watched (Pod, Node, ...).
    pub resource: String,
    /// expired (410 Gone: the watcher re-lists) | error
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub schedule_attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: Family<AttemptLabels, Histogram>,
    pub pending_pods: Family<QueueLabels, Gauge>,
    pub bind_duration: Family<ResultLabels, Histogram>,
    pub reports_dropped: Counter,
    pub invalid_objects: Counter,
    pub evictions: Family<ResultLabels, Counter>,
    pub preemption_attempts: Family<ResultLabels, Counter>,
    pub preemption_victims: Histogram,
    pub quota_used: Family<QuotaLabels, Gauge>,
    pub quota_borrowed: Family<QuotaLabels, Gauge>,
    pub gangs_waiting: Family<ReasonLabels, Gauge>,
    /// Pods in the queue (every state), besides those whose bind is in flight.
    pub queued_pods: Gauge,
    pub watch_restarts: Family<WatchLabels, Counter>,
    /// 1 while this replica leads (always, without leader election).
    pub leader: Gauge,
    /// The label sets of the quota gauges last published (to drop the ones that went).
    quota_published: Arc<Mutex<HashSet<QuotaLabels>>>,
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
            evictions: Family::default(),
            preemption_attempts: Family::default(),
            // 1, 2, 4, ... 1024 pods.
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            quota_used: Family::default(),
            quota_borrowed: Family::default(),
            gangs_waiting: Family::default(),
            queued_pods: Gauge::default(),
            watch_restarts: Family::default(),
            leader: Gauge::default(),
            quota_published: Arc::default(),
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
        r.register("evictions", "Eviction API calls for preemption victims, by result", m.evictions.clone());
        r.register(
            "preemption_attempts",
            "Preemption attempts for gangs that found no place, by result",
            m.preemption_attempts.clone(),
        );
        r.register("preemption_victims", "Pods evicted by one preemption", m.preemption_victims.clone());
        r.register(
            "quota_used",
            "What a namespace's placed pods request, by resource (cpu in millicores), for namespaces with an ElasticQuota",
            m.quota_used.clone(),
        );
        r.register(
            "quota_borrowed",
            "How much a namespace uses beyond its ElasticQuota min, by resource (cpu in millicores)",
            m.quota_borrowed.clone(),
        );
        r.register("gangs_waiting", "Gangs waiting, by reason", m.gangs_waiting.clone());
        r.register("queued_pods", "Pending pods in the scheduling queue, in every state", m.queued_pods.clone());
        r.register(
            "watch_restarts",
            "Watches that failed and started again, by kind and reason (expired: 410 Gone, so re-listed)",
            m.watch_restarts.clone(),
        );
        r.register("leader", "1 while this replica holds the leader lease and decides, else 0", m.leader.clone());
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

    pub fn eviction(&self, result: &str) {
        self.evictions.get_or_create(&ResultLabels { result: result.into() }).inc();
    }

    /// One preemption attempt; `victims`: how many pods it evicts (observed when non-zero).
    pub fn preemption(&self, result: &str, victims: usize) {
        self.preemption_attempts.get_or_create(&ResultLabels { result: result.into() }).inc();
        if victims > 0 {
            self.preemption_victims.observe(victims as f64);
        }
    }

    pub fn set_gangs_waiting(&self, reason: &str, n: usize) {
        self.gangs_waiting.get_or_create(&ReasonLabels { reason: reason.into() }).set(n as i64);
    }

    /// Publishes every namespace's quota usage; label sets not in `rows` (a
    /// quota deleted) are dropped.
    pub fn set_quota_usage(&self, rows: &[QuotaUsage]) {
        let mut published = self.quota_published.lock().unwrap_or_else(|e| e.into_inner());
        let now: HashSet<QuotaLabels> = rows
            .iter()
            .map(|row| {
                let labels = QuotaLabels { namespace: row.namespace.clone(), resource: row.resource.clone() };
                self.quota_used.get_or_create(&labels).set(row.used);
                self.quota_borrowed.get_or_create(&labels).set(row.borrowed);
                labels
            })
            .collect();
        for gone in published.difference(&now) {
            self.quota_used.remove(gone);
            self.quota_borrowed.remove(gone);
        }
        *published = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn preemption_quota_and_waiting_metrics_are_exposed() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.preemption("evicted", 3);
        m.preemption("no_victims", 0);
        m.set_gangs_waiting("quota", 2);
        let usage =
            |ns: &str, used| QuotaUsage { namespace: ns.into(), resource: "nvidia.com/gpu".into(), used, borrowed: 8 };
        m.set_quota_usage(&[usage("team-a", 24), usage("team-b", 8)]);
        let text = exposition(&registry);
        for line in [
            "phalanx_preemption_attempts_total{result=\"evicted\"} 1",
            "phalanx_preemption_attempts_total{result=\"no_victims\"} 1",
            "phalanx_preemption_victims_count 1",
            "phalanx_preemption_victims_sum 3.0",
            "phalanx_gangs_waiting{reason=\"quota\"} 2",
            "phalanx_quota_used{namespace=\"team-a\",resource=\"nvidia.com/gpu\"} 24",
            "phalanx_quota_borrowed{namespace=\"team-b\",resource=\"nvidia.com/gpu\"} 8",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        m.set_quota_usage(&[usage("team-a", 16)]);
        let text = exposition(&registry);
        assert!(text.contains("phalanx_quota_used{namespace=\"team-a\",resource=\"nvidia.com/gpu\"} 16"));
        assert!(!text.contains("team-b"), "a namespace whose quota went is no longer published");
    }
}
