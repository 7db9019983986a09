//! The one task that owns the snapshot and the queue. It applies watch
//! events and bind outcomes in arrival order, asks the core for decisions,
//! and hands the results to the binder and the reporter. Nothing else
//! mutates scheduling state, so no locks are needed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn};

use super::binder::{BindOutcome, BindResult, Binder};
use super::informers::ClusterEvent;
use super::metrics::Metrics;
use super::reporter::Report;
use super::reporter::Reporter;
use crate::core::framework::{JobDemand, Profile};
use crate::core::pod::{PodInfo, PodKey, PodPhase};
use crate::core::queue::SchedulingQueue;
use crate::core::schedule::choose_node;
use crate::core::snapshot::{ClusterSnapshot, PlacementState};

/// Decisions made between two looks at the event channels: enough to amortise
/// the look, few enough that events are not left waiting.
const DECISIONS_PER_ROUND: usize = 128;
/// Unschedulable pods are retried at least this often even if no event
/// suggests they might fit (a safety net, as kube-scheduler has).
const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);
/// An unchanged unschedulable message is reported again only after this long.
const REPORT_REPEAT: Duration = Duration::from_secs(30);

/// Where the loop sends its decisions: the binder in production, a
/// recorder in the loop's unit tests.
pub trait BindRequests {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>);
}

/// Where the loop sends what users should read.
pub trait Reports {
    fn send(&self, report: Report);
}

impl BindRequests for Binder {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>) {
        Binder::bind(self, uid, key, node, gpus);
    }
}

impl Reports for Reporter {
    fn send(&self, report: Report) {
        Reporter::send(self, report);
    }
}

pub struct SchedulingLoop<B = Binder, R = Reporter> {
    profiles: HashMap<String, Profile>,
    snapshot: ClusterSnapshot,
    queue: SchedulingQueue,
    /// Pods whose bind is in flight, to requeue them if it fails.
    binding: HashMap<String, PodInfo>,
    /// Queued pods of each job and their GPU requests: the job's remaining demand.
    pending_jobs: HashMap<String, HashMap<String, usize>>,
    last_report: HashMap<String, (String, Instant)>,
    binder: B,
    reporter: R,
    metrics: Metrics,
    nodes_listed: bool,
    pods_listed: bool,
    ready: Arc<AtomicBool>,
}

impl<B: BindRequests, R: Reports> SchedulingLoop<B, R> {
    pub fn new(
        profiles: Vec<Profile>,
        snapshot: ClusterSnapshot,
        queue: SchedulingQueue,
        binder: B,
        reporter: R,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            profiles: profiles.into_iter().map(|p| (p.scheduler_name.clone(), p)).collect(),
            snapshot,
            queue,
            binding: HashMap::new(),
            pending_jobs: HashMap::new(),
            last_report: HashMap::new(),
            binder,
            reporter,
            metrics,
            nodes_listed: false,
            pods_listed: false,
            ready,
        }
    }

    /// Runs until `shutdown` turns true or the watches end.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ClusterEvent>,
        mut outcomes: mpsc::UnboundedReceiver<BindOutcome>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut next_flush = Instant::now() + UNSCHEDULABLE_FLUSH;
        // Whether anything applied since the last round may let waiting pods fit.
        let mut changed = false;
        loop {
            if *shutdown.borrow() {
                info!(binds_in_flight = self.binding.len(), "scheduling loop stopping");
                return;
            }
            while let Ok(event) = events.try_recv() {
                changed |= self.apply_event(event);
            }
            while let Ok(outcome) = outcomes.try_recv() {
                changed |= self.apply_outcome(outcome);
            }
            let now = Instant::now();
            if now >= next_flush {
                changed = true;
                next_flush = now + UNSCHEDULABLE_FLUSH;
            }
            if std::mem::take(&mut changed) {
                self.queue.cluster_changed(now);
            }
            let busy = self.is_ready() && self.schedule_round();
            self.publish_queue_lengths();
            if busy {
                tokio::task::yield_now().await;
                continue;
            }
            let wake_at = self.queue.next_wakeup().map_or(next_flush, |t| t.min(next_flush));
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => changed |= self.apply_event(event),
                    None => return,
                },
                Some(outcome) = outcomes.recv() => changed |= self.apply_outcome(outcome),
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn is_ready(&mut self) -> bool {
        let ready = self.nodes_listed && self.pods_listed;
        if ready && !self.ready.swap(true, Ordering::Relaxed) {
            info!(nodes = self.snapshot.node_count(), "caches synced; scheduling starts");
        }
        ready
    }

    /// Decides for up to a round of pods. Returns whether pods are left.
    fn schedule_round(&mut self) -> bool {
        for _ in 0..DECISIONS_PER_ROUND {
            let Some(pod) = self.queue.pop(Instant::now()) else {
                return false;
            };
            self.schedule_one(pod);
        }
        true
    }

    fn schedule_one(&mut self, pod: PodInfo) {
        let span = info_span!("schedule", pod = %pod.key, profile = %pod.scheduler_name);
        let _entered = span.enter();
        let Some(profile) = self.profiles.get(&pod.scheduler_name) else {
            self.dequeue(&pod.uid);
            return;
        };
        let started = Instant::now();
        let demand = pod.job.as_ref().and_then(|j| self.pending_jobs.get(j)).map(|members| JobDemand {
            pending_pods: members.len(),
            gpus_per_pod: members.values().copied().max().unwrap_or(0),
        });
        match choose_node(profile, &pod, &self.snapshot, demand.as_ref()) {
            Ok(choice) => {
                debug!(node = %choice.node, score = choice.score, feasible = choice.feasible, "placed");
                self.metrics.attempt("scheduled", &pod.scheduler_name, started.elapsed().as_secs_f64());
                self.snapshot.assume(pod.placement(&choice.node), choice.gpus);
                self.dequeue(&pod.uid);
                self.last_report.remove(&pod.uid);
                self.binder.bind(pod.uid.clone(), pod.key.clone(), choice.node, choice.gpu_indices);
                self.binding.insert(pod.uid.clone(), pod);
            }
            Err(fit) => {
                let message = fit.to_string();
                debug!(%message, attempts = self.queue.attempts(&pod.uid), "unschedulable");
                self.metrics.attempt("unschedulable", &pod.scheduler_name, started.elapsed().as_secs_f64());
                self.queue.mark_unschedulable(&pod.uid, Instant::now());
                self.report_unschedulable(&pod, message);
            }
        }
    }

    fn report_unschedulable(&mut self, pod: &PodInfo, message: String) {
        let now = Instant::now();
        if let Some((last, at)) = self.last_report.get(&pod.uid)
            && *last == message
            && now.duration_since(*at) < REPORT_REPEAT
        {
            return;
        }
        self.last_report.insert(pod.uid.clone(), (message.clone(), now));
        self.reporter.send(Report::Unschedulable {
            key: pod.key.clone(),
            uid: pod.uid.clone(),
            resource_version: pod.resource_version.clone(),
            message,
        });
    }

    /// Applies one watch event. Returns whether capacity may have been freed
    /// or added (so that waiting pods deserve another look).
    fn apply_event(&mut self, event: ClusterEvent) -> bool {
        match event {
            ClusterEvent::NodeApplied(spec) => self.snapshot.upsert_node(spec),
            ClusterEvent::NodeDeleted(name) => {
                self.snapshot.remove_node(&name);
                false
            }
            ClusterEvent::NodesListed(names) => {
                self.nodes_listed = true;
                let gone: Vec<String> =
                    self.snapshot.node_names().filter(|n| !names.contains(*n)).map(str::to_string).collect();
                for name in gone {
                    self.snapshot.remove_node(&name);
                }
                true
            }
            ClusterEvent::PodApplied { pod, gated } => self.apply_pod(pod, gated),
            ClusterEvent::PodDeleted { uid } => self.forget_pod(&uid),
            ClusterEvent::TopologyApplied(report) => {
                let changed = self.snapshot.set_reported_topology(&report.node, Some(report.topology));
                let corrected = self.snapshot.correct_gpus(&report.node, &report.pod_gpus);
                changed || corrected > 0
            }
            ClusterEvent::TopologyDeleted(node) => self.snapshot.set_reported_topology(&node, None),
            ClusterEvent::TopologiesListed(nodes) => {
                for node in self.snapshot.reported_nodes().filter(|n| !nodes.contains(n)).collect::<Vec<_>>() {
                    self.snapshot.set_reported_topology(&node, None);
                }
                true
            }
            ClusterEvent::PodsListed(uids) => {
                self.pods_listed = true;
                self.resync_pods(&uids);
                true
            }
            ClusterEvent::Invalid { regarding, error } => {
                warn!(%error, "ignoring an object phalanx cannot read");
                self.metrics.invalid_objects.inc();
                if let Some(uid) = regarding.uid.as_deref()
                    && regarding.kind.as_deref() == Some("Pod")
                {
                    self.dequeue(uid);
                }
                if regarding.kind.as_deref() == Some("Node")
                    && let Some(name) = regarding.name.as_deref()
                {
                    self.snapshot.remove_node(name);
                }
                self.reporter.send(Report::InvalidObject { regarding, message: error.to_string() });
                false
            }
        }
    }

    fn apply_pod(&mut self, pod: PodInfo, gated: bool) -> bool {
        if pod.phase == PodPhase::Finished {
            return self.forget_pod(&pod.uid);
        }
        if let Some(node) = &pod.node_name {
            // Bound, by us or anyone: its resources are taken on that node.
            self.snapshot.observe_bound(pod.placement(node), pod.gpu_indices.as_deref());
            self.dequeue(&pod.uid);
            self.last_report.remove(&pod.uid);
            return false;
        }
        if pod.terminating || gated || !self.profiles.contains_key(&pod.scheduler_name) {
            self.dequeue(&pod.uid);
            return false;
        }
        if self.binding.contains_key(&pod.uid) {
            // Our bind is in flight; its outcome decides what happens next.
            self.binding.insert(pod.uid.clone(), pod);
            return false;
        }
        if self.snapshot.placement(&pod.uid).is_some() {
            // Already placed: this is an older, unbound view of the pod (such
            // as the GPU annotation written just before the bind) arriving
            // after the bind's outcome. Scheduling it again would bind twice.
            return false;
        }
        self.enqueue(pod, Instant::now());
        false
    }

    fn enqueue(&mut self, pod: PodInfo, now: Instant) {
        if let Some(job) = &pod.job {
            self.pending_jobs.entry(job.clone()).or_default().insert(pod.uid.clone(), pod.gpu_count());
        }
        self.queue.upsert(pod, now);
    }

    /// Takes a pod out of the queue and out of its job's pending demand.
    fn dequeue(&mut self, uid: &str) {
        if let Some(pod) = self.queue.remove(uid)
            && let Some(job) = &pod.job
            && let Some(members) = self.pending_jobs.get_mut(job)
        {
            members.remove(uid);
            if members.is_empty() {
                self.pending_jobs.remove(job);
            }
        }
    }

    fn forget_pod(&mut self, uid: &str) -> bool {
        self.dequeue(uid);
        self.last_report.remove(uid);
        self.binding.remove(uid);
        self.snapshot.release(uid)
    }

    /// After a (re-)list: whatever was not listed is gone. Pods whose bind is
    /// still in flight stay; the bind's outcome settles them.
    fn resync_pods(&mut self, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .snapshot
            .placed_pod_uids()
            .filter(|uid| !listed.contains(*uid) && !self.binding.contains_key(*uid))
            .map(str::to_string)
            .collect();
        for uid in gone {
            self.forget_pod(&uid);
        }
        for uid in self.queue.uids().filter(|uid| !listed.contains(uid)).collect::<Vec<_>>() {
            self.dequeue(&uid);
        }
    }

    /// Applies a bind outcome. Returns whether capacity was released.
    fn apply_outcome(&mut self, outcome: BindOutcome) -> bool {
        let Some(pod) = self.binding.remove(&outcome.uid) else {
            // Deleted while binding; already released.
            return false;
        };
        let confirmed = self.snapshot.placement(&outcome.uid).is_some_and(|p| p.state == PlacementState::Bound);
        match outcome.result {
            BindResult::Bound => {
                self.reporter.send(Report::Scheduled { key: outcome.key, uid: outcome.uid, node: outcome.node });
                false
            }
            BindResult::PodGone => self.snapshot.forget(&outcome.uid),
            BindResult::Conflict(why) | BindResult::Failed(why) => {
                let released = self.snapshot.forget(&outcome.uid);
                if !confirmed {
                    info!(pod = %outcome.key, node = %outcome.node, %why, "bind did not succeed; retrying after backoff");
                    let now = Instant::now();
                    let uid = pod.uid.clone();
                    self.enqueue(pod, now);
                    self.queue.retry_later(&uid, now);
                }
                released
            }
        }
    }

    fn publish_queue_lengths(&self) {
        let l = self.queue.lengths();
        self.metrics.set_pending("active", l.active);
        self.metrics.set_pending("backoff", l.backoff);
        self.metrics.set_pending("unschedulable", l.unschedulable);
        self.metrics.set_pending("binding", self.binding.len());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::core::plugins::default_profile;
    use crate::core::queue::BackoffPolicy;
    use crate::core::testing::{gpu_node, gpu_pod};

    /// A bind request: pod name, node, GPU indices.
    type BindRequest = (String, String, Vec<u32>);

    /// Records what the loop asks of the binder and the reporter.
    #[derive(Clone, Default)]
    struct Recorder {
        binds: Arc<Mutex<Vec<BindRequest>>>,
        reports: Arc<Mutex<Vec<Report>>>,
    }

    impl BindRequests for Recorder {
        fn bind(&self, _uid: String, key: PodKey, node: String, gpus: Vec<u32>) {
            self.binds.lock().unwrap().push((key.name, node, gpus));
        }
    }

    impl Reports for Recorder {
        fn send(&self, report: Report) {
            self.reports.lock().unwrap().push(report);
        }
    }

    impl Recorder {
        fn bind_count(&self) -> usize {
            self.binds.lock().unwrap().len()
        }

        fn unschedulable_reports(&self) -> Vec<String> {
            let reports = self.reports.lock().unwrap();
            reports
                .iter()
                .filter_map(|r| match r {
                    Report::Unschedulable { message, .. } => Some(message.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    /// A synced loop with one 8-GPU node and no backoff (so retries are immediate).
    fn synced_loop() -> (SchedulingLoop<Recorder, Recorder>, Recorder) {
        let recorder = Recorder::default();
        let policy = BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO };
        let mut l = SchedulingLoop::new(
            vec![default_profile("phalanx")],
            ClusterSnapshot::new(),
            SchedulingQueue::new(policy),
            recorder.clone(),
            recorder.clone(),
            Metrics::register(&mut Registry::default()),
            Arc::new(AtomicBool::new(false)),
        );
        assert!(!l.is_ready(), "nothing is decided before the caches are synced");
        l.apply_event(ClusterEvent::NodeApplied(gpu_node("n1", 8)));
        l.apply_event(ClusterEvent::NodesListed(HashSet::from(["n1".to_string()])));
        l.apply_event(ClusterEvent::PodsListed(HashSet::new()));
        assert!(l.is_ready());
        (l, recorder)
    }

    fn outcome(pod: &PodInfo, node: &str, result: BindResult) -> BindOutcome {
        BindOutcome { uid: pod.uid.clone(), key: pod.key.clone(), node: node.into(), result }
    }

    #[test]
    fn a_stale_unbound_view_after_the_bind_does_not_bind_again() {
        let (mut l, rec) = synced_loop();
        let pod = gpu_pod("p", 2);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.schedule_round();
        assert_eq!(rec.binds.lock().unwrap()[0], ("p".to_string(), "n1".to_string(), vec![0, 1]));
        l.apply_outcome(outcome(&pod, "n1", BindResult::Bound));
        // The annotation write, seen after the bind's outcome.
        let mut stale = pod.clone();
        stale.gpu_indices = Some(vec![0, 1]);
        l.apply_event(ClusterEvent::PodApplied { pod: stale, gated: false });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 1);
        let mut bound = pod.clone();
        bound.node_name = Some("n1".into());
        bound.gpu_indices = Some(vec![0, 1]);
        l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
        assert_eq!(l.snapshot.placement(&pod.uid).unwrap().state, PlacementState::Bound);
        assert_eq!(l.snapshot.node("n1").unwrap().free_gpus(), 0b1111_1100);
    }

    #[test]
    fn a_conflict_retries_unless_the_watch_shows_the_pod_bound() {
        let (mut l, rec) = synced_loop();
        let pod = gpu_pod("p", 1);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.schedule_round();
        l.apply_outcome(outcome(&pod, "n1", BindResult::Conflict("UID mismatch".into())));
        assert!(l.snapshot.placement(&pod.uid).is_none(), "the assumption is forgotten");
        assert!(l.queue.contains(&pod.uid), "and the pod retried");
        l.schedule_round();
        assert_eq!(rec.bind_count(), 2);
        // This time the watch is first: bound (by the second bind).
        let mut bound = pod.clone();
        bound.node_name = Some("n1".into());
        l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
        l.apply_outcome(outcome(&pod, "n1", BindResult::Failed("timeout".into())));
        assert!(!l.queue.contains(&pod.uid), "a bound pod is not retried");
        assert_eq!(l.snapshot.placement(&pod.uid).unwrap().state, PlacementState::Bound);
    }

    #[test]
    fn a_pod_deleted_while_binding_releases_its_gpus() {
        let (mut l, _) = synced_loop();
        let pod = gpu_pod("p", 8);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.schedule_round();
        assert_eq!(l.snapshot.node("n1").unwrap().free_gpus(), 0);
        l.apply_outcome(outcome(&pod, "n1", BindResult::PodGone));
        assert_eq!(l.snapshot.node("n1").unwrap().free_gpus(), 0xff);
        assert!(!l.queue.contains(&pod.uid));
    }

    #[test]
    fn a_relist_drops_what_is_gone_but_keeps_binds_in_flight() {
        let (mut l, _) = synced_loop();
        let (gone, flying) = (gpu_pod("gone", 1), gpu_pod("flying", 1));
        let mut bound = gone.clone();
        bound.node_name = Some("n1".into());
        l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
        l.apply_event(ClusterEvent::PodApplied { pod: flying.clone(), gated: false });
        l.schedule_round();
        l.apply_event(ClusterEvent::PodsListed(HashSet::new()));
        assert!(l.snapshot.placement(&gone.uid).is_none());
        assert!(l.snapshot.placement(&flying.uid).is_some(), "its bind's outcome settles it");
    }

    #[test]
    fn an_unchanged_reason_is_reported_once_and_a_new_one_again() {
        let (mut l, rec) = synced_loop();
        let pod = gpu_pod("big", 12);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.schedule_round();
        l.queue.cluster_changed(Instant::now());
        l.schedule_round();
        assert_eq!(rec.unschedulable_reports(), vec!["0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]);
        let mut cordoned = gpu_node("n2", 8);
        cordoned.unschedulable = true;
        l.apply_event(ClusterEvent::NodeApplied(cordoned));
        l.queue.cluster_changed(Instant::now());
        l.schedule_round();
        assert_eq!(rec.unschedulable_reports().len(), 2);
        assert!(rec.unschedulable_reports()[1].contains("1 node(s) were unschedulable"));
    }
}
