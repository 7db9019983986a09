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
use super::reporter::{Report, Reporter};
use crate::core::framework::{JobDemand, Profile};
use crate::core::pod::{PodInfo, PodPhase};
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

pub struct SchedulingLoop {
    profiles: HashMap<String, Profile>,
    snapshot: ClusterSnapshot,
    queue: SchedulingQueue,
    /// Pods whose bind is in flight, to requeue them if it fails.
    binding: HashMap<String, PodInfo>,
    /// Queued pods of each job and their GPU requests: the job's remaining demand.
    pending_jobs: HashMap<String, HashMap<String, usize>>,
    last_report: HashMap<String, (String, Instant)>,
    binder: Binder,
    reporter: Reporter,
    metrics: Metrics,
    nodes_listed: bool,
    pods_listed: bool,
    ready: Arc<AtomicBool>,
}

impl SchedulingLoop {
    pub fn new(
        profiles: Vec<Profile>,
        snapshot: ClusterSnapshot,
        queue: SchedulingQueue,
        binder: Binder,
        reporter: Reporter,
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
        loop {
            let mut changed = false;
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
            if changed {
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
                    Some(event) => { let c = self.apply_event(event); if c { self.queue.cluster_changed(Instant::now()); } }
                    None => return,
                },
                Some(outcome) = outcomes.recv() => {
                    if self.apply_outcome(outcome) { self.queue.cluster_changed(Instant::now()); }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                info!(binds_in_flight = self.binding.len(), "scheduling loop stopping");
                return;
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
