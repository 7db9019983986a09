//! The checker: every second, from its own watches (and the replicas'
//! metrics), every invariant of the soak. Each grace time below says why a
//! correct scheduler may need it; a violation is written to the event log
//! at once, with what was seen.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use phalanx::cluster_invariants::{
    GPU, GpuViolation, finished, gpu_indices, gpu_violations, gpus_by_node, gpus_of, node_of,
};
use phalanx::fleet::is_ready;
use serde_json::json;

use crate::event_log::EventLog;
use crate::faults::{FOREIGN_NAMESPACE, FaultBook, Record, allocatable};
use crate::ledger::{JOB_LABEL, Job, Ledger};
use crate::replicas::{MAX_BACKOFF, Replicas, SCHEDULER_NAME, get, metric};
use crate::watches::{Stores, key};

/// A gang's members are bound one call each, concurrently and rate-limited;
/// a leader killed or frozen mid-gang leaves the rest to its successor
/// (lease 6 s + retry 1 s), and an API server or etcd down for up to 8 s
/// delays both. 45 s covers the longest such fault plus a takeover, twice;
/// it runs from the end of the last outage, since back-to-back outages keep
/// phalanx from placing anything for longer.
pub const GANG_GRACE: Duration = Duration::from_secs(45);
/// phalanx learns a quota change through its watch; binds it decided just
/// before may land just after, at the client's rate: after an outage it
/// decides hundreds of pods at once (seed 43: 77 binds of one namespace,
/// decided before a quota cut, landed 2 to 5.6 s after it).
pub const QUOTA_GRACE: Duration = Duration::from_secs(10);
/// A budget created while an eviction is in flight cannot stop it.
pub const PDB_GRACE: Duration = Duration::from_secs(2);
/// A pod bound by another client is unknown to phalanx until its watch says
/// so: a bind decided before that may land on the same GPUs. The kubelet
/// would refuse one of them; here the harness removes the foreign pod.
pub const FOREIGN_GRACE: Duration = Duration::from_secs(10);
/// A leader's bind can land after its successor placed other pods on the
/// same GPUs: a leader frozen past its lease wakes with binds already
/// stamped with a server timeout, and a bind in etcd's hands when etcd
/// restarts lands when it is back. The Binding API has no fencing token;
/// the kubelet's admission refuses the later pod. kwok has none, so for
/// pods bound this soon after an outage (leader, API server or etcd) the
/// harness refuses such a pod as the kubelet would (it fails), and the
/// report lists it.
pub const STALE_GRACE: Duration = Duration::from_secs(10);
/// Capacity counts as free for a waiting gang only when it has been free
/// this long: longer than the longest backoff, so the gang has been tried.
pub const STABLE: Duration = Duration::from_secs(MAX_BACKOFF.as_secs() + 5);
/// After a fault ends the scheduler must be settled again within this,
/// counted from the end of the last outage after it if that is later.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(90);
/// With no fault at all, settled at least this often.
pub const STUCK_BOUND: Duration = Duration::from_secs(120);
/// The binds of one decision round land within this.
pub const BIND_LAG: Duration = Duration::from_secs(5);
/// Metrics and the cluster are compared while both move: pods created or
/// bound this recently may be on one side only.
const CHURN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    GpuOverCommitted,
    GangBelowMinMember,
    PodLost,
    QuotaExceeded,
    EvictedAgainstBudget,
    PriorityInversion,
    NotRecovered,
    ReplicaExited,
}

impl Invariant {
    pub const ALL: [Invariant; 8] = [
        Self::GpuOverCommitted,
        Self::GangBelowMinMember,
        Self::PodLost,
        Self::QuotaExceeded,
        Self::EvictedAgainstBudget,
        Self::PriorityInversion,
        Self::NotRecovered,
        Self::ReplicaExited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GpuOverCommitted => "no GPU over-committed or held twice",
            Self::GangBelowMinMember => "no gang bound below minMember past 45 s",
            Self::PodLost => "no pod bound twice or lost",
            Self::QuotaExceeded => "quota max never exceeded",
            Self::EvictedAgainstBudget => "no eviction against a PDB",
            Self::PriorityInversion => "no lower priority placed while a higher fits",
            Self::NotRecovered => "settled within 90 s of each fault; metrics agree",
            Self::ReplicaExited => "no replica exits on its own",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub t: f64,
    pub invariant: Invariant,
    pub message: String,
}

/// One sample of the timeline.
#[derive(Debug, Clone)]
pub struct Sample {
    pub t: f64,
    pub pending_pods: usize,
    pub queued_pods: Option<f64>,
    pub allocated_gpus: i64,
    pub violations: usize,
    pub faults_active: usize,
}

pub struct Checker {
    pub client: Client,
    pub stores: Stores,
    pub ledger: Arc<Ledger>,
    pub faults: Arc<FaultBook>,
    pub replicas: Arc<Replicas>,
    pub log: Arc<EventLog>,
    pub violations: Vec<Violation>,
    pub samples: Vec<Sample>,
    pub total_gpus: i64,
    /// The leader's own counters at the end (drops, restarts, evictions).
    pub final_metrics: Vec<String>,
    /// Pods whose `/explain` answer the event log should carry.
    to_explain: Vec<String>,
    /// Lower jobs seen starting to bind while a higher one fit; judged later.
    suspects: Vec<Suspect>,
    reported: BTreeSet<String>,
    below_min_since: BTreeMap<String, Instant>,
    /// GPUs used on each schedulable node, one entry a check.
    history: VecDeque<(Instant, BTreeMap<String, i64>)>,
    placed: BTreeSet<String>,
    usage: BTreeMap<String, i64>,
    deletions_checked: BTreeSet<String>,
    last_settled: Instant,
    /// Gangs whose members' `/explain` answers were already logged.
    explained_gangs: BTreeSet<String>,
    /// Pods bound late after an outage and refused as the kubelet would.
    pub refused_stale_binds: Vec<String>,
}

/// A possible priority inversion, confirmed or dropped [`BIND_LAG`] later.
struct Suspect {
    at: Instant,
    low: String,
    high: String,
    message: String,
}

/// What the checker saw of one job this check.
struct JobState {
    bound: usize,
    present: usize,
    finished: usize,
    evicted: bool,
}

impl Checker {
    pub fn new(
        client: Client,
        stores: Stores,
        ledger: Arc<Ledger>,
        faults: Arc<FaultBook>,
        replicas: Arc<Replicas>,
        log: Arc<EventLog>,
    ) -> Self {
        Self {
            client,
            stores,
            ledger,
            faults,
            replicas,
            log,
            violations: Vec::new(),
            samples: Vec::new(),
            total_gpus: 0,
            final_metrics: Vec::new(),
            to_explain: Vec::new(),
            suspects: Vec::new(),
            reported: BTreeSet::new(),
            below_min_since: BTreeMap::new(),
            history: VecDeque::new(),
            placed: BTreeSet::new(),
            usage: BTreeMap::new(),
            deletions_checked: BTreeSet::new(),
            last_settled: Instant::now(),
            refused_stale_binds: Vec::new(),
            explained_gangs: BTreeSet::new(),
        }
    }

    /// Checks every second until `stop` says so.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check().await,
                _ = stop.changed() => return self,
            }
        }
    }

    fn violate(&mut self, invariant: Invariant, dedup: String, message: String) {
        if !self.reported.insert(dedup) {
            return;
        }
        let t = self.log.elapsed();
        self.log.write("violation", json!({"invariant": invariant.as_str(), "message": message}));
        tracing::error!(invariant = invariant.as_str(), %message, "violation");
        self.violations.push(Violation { t, invariant, message });
    }

    pub async fn check(&mut self) {
        let now = Instant::now();
        let pods = self.stores.pods.state();
        let nodes = self.stores.nodes.state();
        let jobs: BTreeMap<String, Job> = self.ledger.lock().jobs.clone();
        let alloc: BTreeMap<String, i64> = nodes.iter().map(|n| (n.name_any(), allocatable(n))).collect();
        self.total_gpus = self.total_gpus.max(alloc.values().sum());
        let live = || pods.iter().map(|p| &**p).filter(|p| !finished(p));
        let used = gpus_by_node(live());

        self.check_gpus(&pods, &alloc, now);
        let states = job_states(&pods, &jobs, &self.stores);
        self.check_gangs(&jobs, &states, now);
        self.check_quota(&pods, now);
        self.check_budgets();
        let free = self.stable_free(&nodes, &used, now);
        self.check_inversion(&jobs, &states, &pods, free.as_ref(), now).await;
        let pending = pods
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) == Some(SCHEDULER_NAME)
                    && node_of(p).is_none()
                    && p.metadata.deletion_timestamp.is_none()
                    && !finished(p)
            })
            .count();
        let queued = self.check_settled(&jobs, &states, &pods, pending, free.as_ref(), now).await;
        // With no leader to ask (an outage), they wait for the next check.
        if !self.to_explain.is_empty()
            && let Some((_, port, _)) = self.replicas.leader().await
        {
            for pod in std::mem::take(&mut self.to_explain) {
                let text = get(port, &format!("/explain/{pod}")).await;
                self.log.write("explain", json!({"pod": pod, "explain": text}));
            }
        }
        for exited in self.replicas.exited() {
            self.violate(Invariant::ReplicaExited, exited.clone(), exited);
        }
        let faults_active = self.faults.lock().iter().filter(|f| f.ended.is_none()).count();
        self.samples.push(Sample {
            t: self.log.elapsed(),
            pending_pods: pending,
            queued_pods: queued,
            allocated_gpus: used.values().sum(),
            violations: self.violations.len(),
            faults_active,
        });
    }

    fn check_gpus(&mut self, pods: &[Arc<Pod>], alloc: &BTreeMap<String, i64>, now: Instant) {
        let foreign = self.ledger.lock().foreign_binds.clone();
        let outage = self.recent_outage(now);
        let mut refused_nodes = BTreeSet::new();
        for v in gpu_violations(pods.iter().map(|p| &**p), alloc) {
            let node = v.node().unwrap_or_default().to_string();
            let raced = foreign.get(&node).is_some_and(|at| now.duration_since(*at) < FOREIGN_GRACE)
                || bound_close_to_a_foreign_pod(pods, &node);
            if raced {
                // As the kubelet's admission would refuse one of the two:
                // the foreign pod fails (at once; a deletion waits on kwok).
                self.log.write("conflict", json!({"node": node, "seen": v.to_string()}));
                let foreign = pods.iter().filter(|p| p.namespace().as_deref() == Some(FOREIGN_NAMESPACE));
                for p in foreign.filter(|p| node_of(p) == Some(node.as_str()) && !finished(p)) {
                    self.fail_as_admission_would(p);
                }
                continue;
            }
            if let Some(since) = outage
                && (refused_nodes.contains(&node) || self.refuse_stale_binds(pods, &node, alloc, since, &v))
            {
                refused_nodes.insert(node);
                continue;
            }
            self.violate(Invariant::GpuOverCommitted, v.to_string(), v.to_string());
        }
    }

    /// When the earliest outage (phalanx, its API server or etcd away) that
    /// lasts or ended within [`STALE_GRACE`] began.
    fn recent_outage(&self, now: Instant) -> Option<Instant> {
        let faults = self.faults.lock();
        faults
            .iter()
            .filter(|f| f.kind.takes_phalanx_away() && f.skipped.is_none())
            .filter(|f| f.ended.is_none_or(|ended| now.duration_since(ended) < STALE_GRACE))
            .map(|f| f.started)
            .min()
    }

    /// Refuses, as the kubelet's admission would, the pods on `node` that
    /// no longer fit in the order they were bound. Only pods bound since
    /// the outage began can be late binds: if any other pod does not fit,
    /// this is no late bind, and nothing is refused.
    fn refuse_stale_binds(
        &mut self,
        pods: &[Arc<Pod>],
        node: &str,
        alloc: &BTreeMap<String, i64>,
        outage_began: Instant,
        seen: &GpuViolation,
    ) -> bool {
        let bound_at = self.stores.history.lock().bound.clone();
        let mut on_node: Vec<(&Pod, Instant)> = pods
            .iter()
            .filter(|p| node_of(p) == Some(node) && !finished(p))
            .map(|p| (&**p, bound_at.get(&key(p)).copied().unwrap_or(outage_began)))
            .collect();
        on_node.sort_by_key(|(p, at)| (*at, key(p)));
        let refused = refused_by_admission(&on_node, alloc.get(node).copied().unwrap_or(0));
        let stale = |p: &Pod| bound_at.get(&key(p)).is_some_and(|at| *at >= outage_began);
        if refused.is_empty() || !refused.iter().all(|p| stale(p)) {
            return false;
        }
        for pod in refused {
            let name = key(pod);
            self.log.write("refused", json!({"node": node, "pod": name, "seen": seen.to_string()}));
            tracing::warn!(pod = %name, %node, "a late bind over-commits the node; refused as the kubelet would");
            self.refused_stale_binds.push(name);
            self.fail_as_admission_would(pod);
        }
        true
    }

    /// Fails the pod as the kubelet does when its admission refuses one.
    fn fail_as_admission_would(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let status = json!({"status": {"phase": "Failed", "reason": format!("OutOf{GPU}"),
            "message": format!("Pod was rejected: Node didn't have enough resource: {GPU}")}});
        let name = pod.name_any();
        tokio::spawn(async move { api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await });
    }

    fn check_gangs(&mut self, jobs: &BTreeMap<String, Job>, states: &BTreeMap<String, JobState>, now: Instant) {
        let outages = outages(&self.faults.lock());
        let mut below = Vec::new();
        for (name, job) in jobs {
            let Some(state) = states.get(name) else { continue };
            let whole_or_none = state.bound == 0 || state.bound >= job.size as usize;
            // A gang being deleted, or preempted (its members evicted one
            // call each), is on its way to none.
            if whole_or_none || job.deleted.is_some() || state.evicted {
                continue;
            }
            below.push(name.clone());
            let since = *self.below_min_since.entry(name.clone()).or_insert(now);
            if past_grace(since, GANG_GRACE, outages, now) {
                let message = format!(
                    "gang {}/{name}: {} of {} members bound for {GANG_GRACE:?}",
                    job.namespace, state.bound, job.size
                );
                self.violate(Invariant::GangBelowMinMember, format!("gang {name}"), message);
                // What the leader says of its members, for whoever replays it.
                if !self.explained_gangs.contains(name) {
                    self.explained_gangs.insert(name.clone());
                    self.to_explain.extend(job.pods.iter().map(|p| format!("{}/{p}", job.namespace)));
                }
            }
        }
        self.below_min_since.retain(|name, _| below.contains(name));
    }

    fn check_quota(&mut self, pods: &[Arc<Pod>], now: Instant) {
        let quotas = self.stores.quotas.state();
        let (changed, changed_at) = {
            let book = self.ledger.lock();
            (book.quota_changed.clone(), book.quota_changed_at.clone())
        };
        for quota in quotas {
            let ns = quota.namespace().unwrap_or_default();
            let Some(max) = quota.spec.max.as_ref().and_then(|m| m.get(GPU)).and_then(|q| q.0.parse::<i64>().ok())
            else {
                continue;
            };
            let bound: Vec<&Pod> = pods
                .iter()
                .map(|p| &**p)
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && node_of(p).is_some() && !finished(p))
                .collect();
            let usage: i64 = bound.iter().map(|p| gpus_of(p)).sum();
            let before = self.usage.insert(ns.clone(), usage).unwrap_or(0);
            let recent_change = changed.get(&ns).is_some_and(|at| now.duration_since(*at) < QUOTA_GRACE);
            // A rise this watch shows late (under load) may come from binds
            // made before the change: it counts only if a pod was bound, by
            // the API server's clock, after the change's grace.
            let grace_end = changed_at.get(&ns).and_then(|at| at.checked_add(QUOTA_GRACE).ok());
            let bound_since = |p: &&Pod| grace_end.is_none_or(|end| bound_at(p).is_none_or(|at| at > end));
            if usage > max && usage > before && !recent_change && bound.iter().any(bound_since) {
                let message = format!("namespace {ns}: {usage} GPUs bound (was {before}), ElasticQuota max {max}");
                self.violate(Invariant::QuotaExceeded, message.clone(), message);
            }
        }
    }

    fn check_budgets(&mut self) {
        let seen: Vec<(String, Instant, Option<jiff::Timestamp>)> = {
            let history = self.stores.history.lock();
            history
                .deleted
                .iter()
                .filter(|(k, _)| !self.deletions_checked.contains(*k))
                .map(|(k, at)| (k.clone(), *at, history.eviction_times.get(k).copied()))
                .collect()
        };
        // Read after the deletions: a deletion the generator made is in
        // the ledger before it is in the history.
        let jobs = self.ledger.lock().jobs.clone();
        for (pod, at, evicted_at) in seen {
            self.deletions_checked.insert(pod.clone());
            let Some(job) = job_of(&pod).and_then(|j| jobs.get(j)) else { continue };
            let Some(protected) = job.protected_since else { continue };
            let by_generator = job.deleted.is_some_and(|d| d <= at);
            if !by_generator && at > protected + PDB_GRACE && !evicted_before_budget(evicted_at, job.budget_created) {
                let message = format!("pod {pod} deleted while a PodDisruptionBudget allowed no disruption");
                self.violate(Invariant::EvictedAgainstBudget, pod.clone(), message);
            }
        }
    }

    /// Free GPUs per schedulable node that were free at every check of the
    /// last [`STABLE`] seconds; `None` until there is that much history.
    fn stable_free(
        &mut self,
        nodes: &[Arc<Node>],
        used: &BTreeMap<String, i64>,
        now: Instant,
    ) -> Option<BTreeMap<String, i64>> {
        let schedulable: BTreeMap<String, i64> = nodes
            .iter()
            .filter(|n| schedulable(n))
            .map(|n| (n.name_any(), used.get(&n.name_any()).copied().unwrap_or(0)))
            .collect();
        let capacity: BTreeMap<String, i64> = nodes.iter().map(|n| (n.name_any(), allocatable(n))).collect();
        self.history.push_back((now, schedulable));
        while self.history.front().is_some_and(|(at, _)| now.duration_since(*at) > STABLE) {
            self.history.pop_front();
        }
        let (oldest, _) = self.history.front()?;
        if now.duration_since(*oldest) + Duration::from_secs(2) < STABLE {
            return None;
        }
        let mut free = BTreeMap::new();
        let (_, current) = self.history.back()?;
        for node in current.keys() {
            let most = self.history.iter().map(|(_, used)| used.get(node).copied()).collect::<Option<Vec<i64>>>();
            if let Some(most) = most.and_then(|u| u.into_iter().max()) {
                free.insert(node.clone(), capacity.get(node).copied().unwrap_or(0) - most);
            }
        }
        Some(free)
    }

    /// Waiting jobs that phalanx should place now, best first: complete,
    /// old enough to have been tried, not held back by quota.
    fn admissible(
        &self,
        jobs: &BTreeMap<String, Job>,
        states: &BTreeMap<String, JobState>,
        pods: &[Arc<Pod>],
        now: Instant,
    ) -> Vec<Job> {
        let quota_free = self.quota_free(pods);
        let mut waiting: Vec<Job> = jobs
            .values()
            .filter(|j| {
                let s = states.get(&j.name);
                j.deleted.is_none()
                    && now.duration_since(j.created) > STABLE
                    && s.is_some_and(|s| s.bound == 0 && s.finished == 0 && s.present == j.size as usize && !s.evicted)
                    && quota_free.get(&j.namespace).is_none_or(|free| *free >= j.gpus())
            })
            .cloned()
            .collect();
        waiting.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.created.cmp(&b.created)));
        waiting
    }

    fn quota_free(&self, pods: &[Arc<Pod>]) -> BTreeMap<String, i64> {
        let changed = self.ledger.lock().quota_changed.clone();
        self.stores
            .quotas
            .state()
            .iter()
            .filter_map(|q| {
                let ns = q.namespace()?;
                let max: i64 = q.spec.max.as_ref()?.get(GPU)?.0.parse().ok()?;
                // A quota changed lately: phalanx may not know yet; count it full.
                if changed.get(&ns).is_some_and(|at| at.elapsed() < STABLE) {
                    return Some((ns, 0));
                }
                let used: i64 = pods
                    .iter()
                    .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && node_of(p).is_some() && !finished(p))
                    .map(|p| gpus_of(p))
                    .sum();
                Some((ns, max - used))
            })
            .collect()
    }

    /// A job that started binding since the last check, while a job of
    /// higher priority waited that fits in capacity free for [`STABLE`].
    async fn check_inversion(
        &mut self,
        jobs: &BTreeMap<String, Job>,
        states: &BTreeMap<String, JobState>,
        pods: &[Arc<Pod>],
        free: Option<&BTreeMap<String, i64>>,
        now: Instant,
    ) {
        let newly: Vec<String> =
            states.iter().filter(|(n, s)| s.bound > 0 && !self.placed.contains(*n)).map(|(n, _)| n.clone()).collect();
        self.placed.extend(newly.iter().cloned());
        let Some(free) = free else { return };
        if self.scheduler_disturbed(now) {
            return;
        }
        self.confirm_inversions(states, now);
        let Some(head) = self.admissible(jobs, states, pods, now).into_iter().next() else { return };
        let mut held: Option<BTreeSet<String>> = None;
        for name in newly {
            let Some(low) = jobs.get(&name) else { continue };
            if low.priority < head.priority && fits(&head, free) {
                if held.is_none() {
                    held = Some(self.nodes_held_ahead_of(&head).await);
                }
                let held = held.as_ref().expect("just asked");
                let unheld: BTreeMap<String, i64> =
                    free.iter().filter(|(node, _)| !held.contains(*node)).map(|(n, f)| (n.clone(), *f)).collect();
                if !fits(&head, &unheld) {
                    // Room held for gangs that rank at or above the head
                    // (so that they are not starved) is not the head's.
                    self.log.write("inversion_excused", json!({"low": name, "high": head.name, "held": held}));
                    continue;
                }
                let quota_free = self.quota_free(pods).get(&head.namespace).copied();
                let message = format!(
                    "{}/{} ({:?}) placed while {}/{} ({:?}, {} x {} GPUs, its quota has {quota_free:?} GPUs free) waited \
                     and fit in capacity free for {STABLE:?}",
                    low.namespace,
                    low.name,
                    low.priority,
                    head.namespace,
                    head.name,
                    head.priority,
                    head.size,
                    head.gpus_per_pod
                );
                self.suspects.push(Suspect { at: now, low: name.clone(), high: head.name.clone(), message });
                if let Some(first) = head.pods.first() {
                    self.to_explain.push(format!("{}/{first}", head.namespace));
                }
            }
        }
    }

    /// The nodes the leader holds for gangs that rank at or above `job`, as
    /// its `/explain` of the job's first pod says; none when it cannot say.
    async fn nodes_held_ahead_of(&self, job: &Job) -> BTreeSet<String> {
        let (Some((_, port, _)), Some(pod)) = (self.replicas.leader().await, job.pods.first()) else {
            return BTreeSet::new();
        };
        let Some(text) = get(port, &format!("/explain/{}/{pod}?format=json", job.namespace)).await else {
            return BTreeSet::new();
        };
        held_by_others(&text)
    }

    /// Binds land in any order: a higher job decided in the same round as
    /// the lower one may be seen bound a moment later. A suspect is a
    /// violation only if the higher job is still unbound [`BIND_LAG`] on.
    fn confirm_inversions(&mut self, states: &BTreeMap<String, JobState>, now: Instant) {
        let (due, waiting): (Vec<Suspect>, Vec<Suspect>) =
            std::mem::take(&mut self.suspects).into_iter().partition(|s| now.duration_since(s.at) >= BIND_LAG);
        self.suspects = waiting;
        let deleted = self
            .ledger
            .lock()
            .jobs
            .iter()
            .filter(|(_, j)| j.deleted.is_some())
            .map(|(n, _)| n.clone())
            .collect::<BTreeSet<_>>();
        for suspect in due {
            let still_waiting = states.get(&suspect.high).is_some_and(|s| s.bound == 0 && !s.evicted);
            if still_waiting && !deleted.contains(&suspect.high) {
                self.violate(Invariant::PriorityInversion, suspect.low, suspect.message);
            }
        }
    }

    /// A fault that blinds or replaces the scheduler is active or ended
    /// within [`STABLE`]: its view lags, and its queue starts over.
    fn scheduler_disturbed(&self, now: Instant) -> bool {
        self.faults.lock().iter().any(|f| f.ended.is_none_or(|end| now.duration_since(end) < STABLE))
    }

    /// Settled: one replica leads, its queue holds what the cluster has
    /// pending and its quota usage is what is bound, and the head of the
    /// queue truly cannot fit. Records the recovery of every fault that
    /// ended before; returns the leader's queue length.
    async fn check_settled(
        &mut self,
        jobs: &BTreeMap<String, Job>,
        states: &BTreeMap<String, JobState>,
        pods: &[Arc<Pod>],
        pending: usize,
        free: Option<&BTreeMap<String, i64>>,
        now: Instant,
    ) -> Option<f64> {
        let leader = self.replicas.leader().await;
        let queued = leader.as_ref().and_then(|(_, _, text)| {
            Some(metric(text, "phalanx_queued_pods")? + metric(text, "phalanx_pending_pods{queue=\"binding\"}")?)
        });
        let churn = {
            let history = self.stores.history.lock();
            let recent = |at: &Instant| now.duration_since(*at) < CHURN;
            history.bound.values().filter(|at| recent(at)).count()
                + history.deleted.values().filter(|at| recent(at)).count()
        };
        let created = pods
            .iter()
            .filter(|p| {
                p.metadata.creation_timestamp.as_ref().is_some_and(|t| {
                    let age = jiff_age(&t.0);
                    age < CHURN
                })
            })
            .count();
        let tolerance = (churn + created) as f64;
        let queue_agrees = queued.is_some_and(|q| (q - pending as f64).abs() <= tolerance);
        let usage: Vec<(String, i64, Option<f64>)> = self
            .usage
            .iter()
            .map(|(ns, used)| {
                let series = format!("phalanx_quota_used{{namespace=\"{ns}\",resource=\"{GPU}\"}}");
                (ns.clone(), *used, leader.as_ref().and_then(|(_, _, text)| metric(text, &series)))
            })
            .collect();
        let usage_agrees = usage.iter().all(|(_, used, published)| {
            published.is_some_and(|m| (m - *used as f64).abs() <= 8.0 * tolerance.max(1.0))
        });
        let head_fits = free
            .is_some_and(|free| self.admissible(jobs, states, pods, now).first().is_some_and(|head| fits(head, free)));
        let settled = leader.is_some() && queue_agrees && usage_agrees && !head_fits;
        let t = self.log.elapsed();
        if settled {
            self.last_settled = now;
            let mut book = self.faults.lock();
            for f in book.iter_mut().filter(|f| f.recovery.is_none() && f.skipped.is_none()) {
                if let Some(end) = f.ended {
                    f.recovery = Some(now.duration_since(end));
                    self.log.write(
                        "recovered",
                        json!({"id": f.id, "fault": f.kind.as_str(), "after_s": now.duration_since(end).as_secs_f64()}),
                    );
                }
            }
        } else {
            let why = format!(
                "leader {:?}, queue {queued:?} vs {pending} pending (tolerance {tolerance}), GPUs used by namespace vs phalanx_quota_used {usage:?}, head fits {head_fits}",
                leader.as_ref().map(|l| &l.0)
            );
            let late = overdue(&self.faults.lock(), now);
            for (id, kind) in late {
                let message = format!("not settled {RECOVERY_BOUND:?} after fault #{id} ({kind}) ended: {why}");
                self.violate(Invariant::NotRecovered, format!("fault {id}"), message);
            }
            let (active, outages) = {
                let book = self.faults.lock();
                (book.iter().any(|f| f.ended.is_none()), outages(&book))
            };
            if !active && past_grace(self.last_settled, STUCK_BOUND, outages, now) {
                let message = format!("not settled for {STUCK_BOUND:?} with no fault: {why}");
                self.violate(
                    Invariant::NotRecovered,
                    format!("stuck {}", self.last_settled.elapsed().as_secs() / 600),
                    message,
                );
            }
            self.log.write("unsettled", json!({"t": t, "why": why}));
        }
        queued
    }

    /// At the end: every pod the generator created is bound, finished,
    /// deleted by the generator, evicted by preemption, or pending with a
    /// reason phalanx wrote (PodScheduled=False).
    pub async fn account_for_every_pod(&mut self) -> BTreeMap<&'static str, usize> {
        if let Some((_, _, text)) = self.replicas.leader().await {
            const COUNTERS: [&str; 5] = [
                "phalanx_reports_dropped",
                "phalanx_watch_restarts",
                "phalanx_evictions",
                "phalanx_bind_duration_seconds_count",
                "phalanx_preemption_attempts",
            ];
            self.final_metrics =
                text.lines().filter(|l| COUNTERS.iter().any(|c| l.starts_with(c))).map(str::to_string).collect();
        }
        let mut fates: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (k, fate) in pod_fates(&self.stores, &self.ledger) {
            *fates.entry(fate).or_default() += 1;
            if matches!(fate, "lost" | "pending without a reason") {
                // What the leader says of it, for whoever reads the report.
                let explained = match self.replicas.leader().await {
                    Some((_, port, _)) => get(port, &format!("/explain/{k}")).await,
                    None => None,
                };
                let why = explained.map_or_else(String::new, |text| format!("; phalanx explains: {}", text.trim()));
                self.violate(Invariant::PodLost, k.clone(), format!("pod {k}: {fate}{why}"));
            }
        }
        fates
    }
}

/// Where every pod the generator created is now, by pod key.
fn pod_fates(stores: &Stores, ledger: &Ledger) -> Vec<(String, &'static str)> {
    let jobs: Vec<Job> = ledger.lock().jobs.values().cloned().collect();
    let pods: BTreeMap<String, Arc<Pod>> = stores.pods.state().into_iter().map(|p| (key(&p), p)).collect();
    let evicted = stores.history.lock().evicted.clone();
    let mut fates = Vec::new();
    for job in jobs {
        for name in &job.pods {
            let k = format!("{}/{name}", job.namespace);
            let fate = match pods.get(&k) {
                Some(p) if finished(p) => "finished",
                Some(p) if node_of(p).is_some() => "bound",
                Some(p) if p.metadata.deletion_timestamp.is_some() => "deleting",
                Some(p) if unschedulable_reason(p) => "pending with a reason",
                Some(_) => "pending without a reason",
                None if evicted.contains_key(&k) => "evicted (preempted)",
                None if job.deleted.is_some() => "deleted by the generator",
                None => "lost",
            };
            fates.push((k, fate));
        }
    }
    fates
}

/// Pods pending with no reason written yet (the end waits for them).
pub fn pending_without_reason(stores: &Stores, ledger: &Ledger) -> usize {
    pod_fates(stores, ledger).iter().filter(|(_, fate)| *fate == "pending without a reason").count()
}

fn jiff_age(t: &jiff::Timestamp) -> Duration {
    jiff::Timestamp::now().duration_since(*t).unsigned_abs()
}

fn job_of(pod_key: &str) -> Option<&str> {
    let name = pod_key.split_once('/')?.1;
    Some(name.rsplit_once('-')?.0)
}

fn job_states(pods: &[Arc<Pod>], jobs: &BTreeMap<String, Job>, stores: &Stores) -> BTreeMap<String, JobState> {
    let evicted = stores.history.lock().evicted.clone();
    let mut states: BTreeMap<String, JobState> = BTreeMap::new();
    for pod in pods {
        let Some(job) = pod.labels().get(JOB_LABEL).filter(|j| jobs.contains_key(*j)) else { continue };
        let state = states.entry(job.clone()).or_insert(JobState { bound: 0, present: 0, finished: 0, evicted: false });
        state.present += 1;
        state.bound += usize::from(node_of(pod).is_some());
        state.finished += usize::from(finished(pod));
        state.evicted |= evicted.contains_key(&key(pod));
    }
    for (name, job) in jobs {
        let any_evicted = job.pods.iter().any(|p| evicted.contains_key(&format!("{}/{p}", job.namespace)));
        if let Some(s) = states.get_mut(name) {
            s.evicted |= any_evicted;
        }
    }
    states
}

fn schedulable(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    let cordoned = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let tainted =
        spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.effect != "PreferNoSchedule"));
    !cordoned && !tainted && is_ready(node)
}

fn unschedulable_reason(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.is_some()))
}

/// The pods a kubelet would refuse, given in the order they were bound:
/// each that does not fit beside those admitted before it (more GPUs than
/// the node has, or a GPU index already held).
fn refused_by_admission<'a>(pods: &[(&'a Pod, Instant)], allocatable: i64) -> Vec<&'a Pod> {
    let mut used = 0;
    let mut held = BTreeSet::new();
    let mut refused = Vec::new();
    for (pod, _) in pods {
        let indices = gpu_indices(pod);
        if used + gpus_of(pod) > allocatable || indices.iter().any(|i| held.contains(i)) {
            refused.push(*pod);
        } else {
            used += gpus_of(pod);
            held.extend(indices);
        }
    }
    refused
}

/// Whether all of `job`'s pods fit in `free` GPUs (first fit, largest node
/// first): a proof that it fits, not a search for every way.
/// When the API server bound the pod (its `PodScheduled=True` condition).
fn bound_at(pod: &Pod) -> Option<jiff::Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled" && c.status == "True")?;
    scheduled.last_transition_time.as_ref().map(|t| t.0)
}

/// Whether a foreign pod on `node` and another pod there were bound within
/// [`FOREIGN_GRACE`] of each other by the API server's clock: a race the
/// kubelet settles, however late this watch shows it.
fn bound_close_to_a_foreign_pod(pods: &[Arc<Pod>], node: &str) -> bool {
    let on_node = || pods.iter().filter(|p| node_of(p) == Some(node) && !finished(p));
    let foreign = |p: &Pod| p.namespace().as_deref() == Some(FOREIGN_NAMESPACE);
    let times = |foreign_side: bool| -> Vec<jiff::Timestamp> {
        on_node().filter(|p| foreign(p) == foreign_side).filter_map(|p| bound_at(p)).collect()
    };
    let (theirs, ours) = (times(true), times(false));
    let grace = jiff::SignedDuration::try_from(FOREIGN_GRACE).unwrap_or_default();
    theirs.iter().any(|f| ours.iter().any(|o| o.duration_since(*f).abs() < grace))
}

/// Whether the API server evicted the pod before the budget existed (its
/// times have whole seconds: the same second counts as before). Seen under
/// load: an eviction accepted a second before a budget was created, its
/// deletion seen six seconds later.
fn evicted_before_budget(evicted_at: Option<jiff::Timestamp>, budget_created: Option<jiff::Timestamp>) -> bool {
    evicted_at.zip(budget_created).is_some_and(|(evicted, created)| evicted <= created)
}

/// `queue.held_by_others[*].nodes` of an `/explain` answer in JSON.
fn held_by_others(explain_json: &str) -> BTreeSet<String> {
    let Ok(explained) = serde_json::from_str::<serde_json::Value>(explain_json) else { return BTreeSet::new() };
    let holds = explained.pointer("/queue/held_by_others").and_then(|h| h.as_array()).cloned().unwrap_or_default();
    holds
        .iter()
        .filter_map(|hold| hold.get("nodes")?.as_array().cloned())
        .flatten()
        .filter_map(|node| node.as_str().map(str::to_string))
        .collect()
}

fn fits(job: &Job, free: &BTreeMap<String, i64>) -> bool {
    let mut room: Vec<i64> = free.values().copied().filter(|f| *f >= i64::from(job.gpus_per_pod)).collect();
    room.sort_unstable_by(|a, b| b.cmp(a));
    let need = i64::from(job.gpus_per_pod);
    let mut left = job.size;
    for r in &mut room {
        while left > 0 && *r >= need {
            *r -= need;
            left -= 1;
        }
    }
    left == 0
}

/// Faults still unrecovered past the bound. The bound runs from a fault's
/// end, or from the end of the last outage (phalanx, its API server or etcd
/// away) after it: back-to-back restarts of one API server once kept
/// phalanx away for 90 s after a fault that had ended long before, and
/// nothing can settle while that lasts. Recovery itself is still measured
/// from each fault's end.
fn overdue(book: &[Record], now: Instant) -> Vec<(usize, &'static str)> {
    let outages = outages(book);
    book.iter()
        .filter(|f| f.recovery.is_none() && f.skipped.is_none())
        .filter(|f| f.ended.is_some_and(|end| past_grace(end, RECOVERY_BOUND, outages, now)))
        .map(|f| (f.id, f.kind.as_str()))
        .collect()
}

/// Outages of phalanx, its API server or etcd: nothing can be placed or
/// settle while one lasts, so grace times run from the end of the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outages {
    Lasting,
    Over { last: Option<Instant> },
}

fn outages(book: &[Record]) -> Outages {
    let outages = || book.iter().filter(|f| f.skipped.is_none() && f.kind.takes_phalanx_away());
    if outages().any(|f| f.ended.is_none()) {
        return Outages::Lasting;
    }
    Outages::Over { last: outages().filter_map(|f| f.ended).max() }
}

/// Whether `grace` has passed since `since`, or since the end of the last
/// outage if that is later; never while an outage lasts.
fn past_grace(since: Instant, grace: Duration, outages: Outages, now: Instant) -> bool {
    match outages {
        Outages::Lasting => false,
        Outages::Over { last } => now.duration_since(last.map_or(since, |o| o.max(since))) > grace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;
    use crate::ledger::{JobKind, Priority};

    fn fault(id: usize, kind: FaultKind, started: Instant, ended: Option<Instant>) -> Record {
        Record { id, kind, target: String::new(), started, ended, recovery: None, skipped: None }
    }

    #[test]
    fn recovery_is_owed_from_the_last_outage_after_a_fault() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let cordon = fault(1, FaultKind::NodeCordoned, t0, Some(s(10)));
        assert_eq!(overdue(std::slice::from_ref(&cordon), s(101)), vec![(1, "node cordoned")]);
        // The API server restarted after it, until 60 s: owed from then.
        let restart = fault(2, FaultKind::ApiServerRestarted, s(20), Some(s(60)));
        let book = [cordon.clone(), restart];
        assert!(overdue(&book, s(101)).is_empty());
        assert_eq!(overdue(&book, s(151)).len(), 2);
        // While an outage lasts, nothing is overdue.
        let etcd = fault(3, FaultKind::EtcdRestarted, s(140), None);
        assert!(overdue(&[cordon.clone(), etcd], s(500)).is_empty());
        // A skipped fault is no outage.
        let mut skipped = fault(4, FaultKind::LeaderKilled, s(15), None);
        skipped.skipped = Some("no replica leads".into());
        assert_eq!(overdue(&[cordon, skipped], s(101)).len(), 1);
    }

    #[test]
    fn a_grace_runs_from_the_last_outage_and_not_while_one_lasts() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let cordon = fault(1, FaultKind::NodeCordoned, t0, Some(s(10)));
        assert!(past_grace(t0, GANG_GRACE, outages(std::slice::from_ref(&cordon)), s(46)));
        let restart = fault(2, FaultKind::ApiServerRestarted, s(5), None);
        let book = [cordon.clone(), restart.clone()];
        assert!(!past_grace(t0, GANG_GRACE, outages(&book), s(200)), "nothing is placed while phalanx is away");
        let over = Record { ended: Some(s(100)), ..restart };
        let book = [cordon, over];
        assert!(!past_grace(t0, GANG_GRACE, outages(&book), s(140)));
        assert!(past_grace(t0, GANG_GRACE, outages(&book), s(146)));
    }

    fn gpu_pod(name: &str, gpus: i64, indices: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "soak-a", "annotations": {"phalanx.dev/gpus": indices}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"limits": {GPU: gpus.to_string()}}}]},
        }))
        .unwrap()
    }

    #[test]
    fn admission_refuses_in_bind_order_what_no_longer_fits() {
        let t0 = Instant::now();
        let first = gpu_pod("first", 4, "0,1,2,3");
        let late = gpu_pod("late", 4, "2,3,4,5");
        let after = gpu_pod("after", 4, "4,5,6,7");
        let pods = [(&first, t0), (&late, t0), (&after, t0)];
        let refused: Vec<String> = refused_by_admission(&pods, 8).iter().map(|p| p.name_any()).collect();
        assert_eq!(refused, ["late"], "an index already held");
        let big = gpu_pod("big", 8, "");
        let pods = [(&first, t0), (&big, t0)];
        let refused: Vec<String> = refused_by_admission(&pods, 8).iter().map(|p| p.name_any()).collect();
        assert_eq!(refused, ["big"], "more GPUs than are left");
        assert!(refused_by_admission(&[(&first, t0), (&after, t0)], 8).is_empty());
    }

    fn job(size: u32, gpus_per_pod: u32) -> Job {
        Job {
            namespace: "ns".into(),
            name: "j".into(),
            kind: JobKind::PodGroup,
            size,
            gpus_per_pod,
            priority: Priority::High,
            created: Instant::now(),
            deleted: None,
            protected_since: None,
            budget_created: None,
            pods: Vec::new(),
        }
    }

    #[test]
    fn a_gang_fits_only_whole_pods_into_free_gpus() {
        let free = BTreeMap::from([("a".to_string(), 8), ("b".to_string(), 6), ("c".to_string(), 3)]);
        assert!(fits(&job(3, 4), &free));
        assert!(!fits(&job(4, 4), &free), "b holds one 4-GPU pod, c none");
        assert!(fits(&job(1, 8), &free));
        assert!(!fits(&job(2, 8), &free));
    }

    fn bound_pod(namespace: &str, name: &str, node: &str, bound_at: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": namespace, "name": name},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": bound_at}]}
            }))
            .unwrap(),
        )
    }

    /// Seen under load: the checker's watch showed a bind 8 s after a
    /// foreign one, and checked 13 s after the foreign bind: a race, by the
    /// API server's clock.
    #[test]
    fn a_foreign_race_is_judged_by_the_api_server_s_bind_times() {
        let foreign = bound_pod(FOREIGN_NAMESPACE, "foreign-1", "n1", "2026-12-07T16:29:05Z");
        let close = bound_pod("soak-a", "j1-0", "n1", "2026-12-07T16:29:13Z");
        let late = bound_pod("soak-a", "j2-0", "n1", "2026-12-07T16:29:40Z");
        assert!(bound_close_to_a_foreign_pod(&[foreign.clone(), close], "n1"));
        assert!(!bound_close_to_a_foreign_pod(&[foreign.clone(), late.clone()], "n1"));
        assert!(!bound_close_to_a_foreign_pod(&[foreign, late], "n2"), "not on that node");
    }

    #[test]
    fn an_eviction_before_the_budget_was_created_is_no_violation() {
        let at = |s: i64| Some(jiff::Timestamp::from_second(1_700_000_000 + s).unwrap());
        assert!(evicted_before_budget(at(0), at(1)));
        assert!(evicted_before_budget(at(1), at(1)), "the same second cannot be told apart");
        assert!(!evicted_before_budget(at(2), at(1)));
        assert!(!evicted_before_budget(None, at(1)), "not evicted through the API: deleted");
        assert!(!evicted_before_budget(at(0), None));
    }

    #[test]
    fn nodes_held_for_others_are_read_from_an_explain_answer() {
        let answer = r#"{"gang": "PodGroup a/mid", "queue": {"position": 3, "held_by_others": [
            {"gang": "PodGroup a/old", "nodes": ["n1", "n2"]}, {"gang": "PodGroup b/older", "nodes": ["n7"]}]}}"#;
        let held = held_by_others(answer);
        assert_eq!(held, BTreeSet::from(["n1".to_string(), "n2".to_string(), "n7".to_string()]));
        assert!(held_by_others(r#"{"gang": "Pod a/solo", "queue": null}"#).is_empty());
        assert!(held_by_others("not json").is_empty());
    }

    #[test]
    fn a_pod_key_names_its_job() {
        assert_eq!(job_of("soak-a/j00012-podgroup-3"), Some("j00012-podgroup"));
        assert_eq!(job_of("soak-a/j00013-pod-0"), Some("j00013-pod"));
    }
}
