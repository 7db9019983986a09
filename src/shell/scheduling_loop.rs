//! The one task that owns the snapshot and the queue. It applies watch
//! events, bind outcomes and eviction outcomes in arrival order, asks the
//! core for a decision on each gang, and hands the results to the binder,
//! the evictor and the reporter.
//! Nothing else mutates scheduling state, so no locks are needed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn};

use super::binder::{BindOutcome, BindResult, Binder};
use super::evictor::{EvictOutcome, EvictResult, Evictor};
use super::explain::ExplainRequest;
use super::informers::ClusterEvent;
use super::leader_election::Leadership;
use super::metrics::{Metrics, QuotaUsage};
use super::quota_objects::Quota;
use super::reporter::{Report, Reporter};
use crate::api::gpu_topology::GPUTopology;
use crate::core::disruption::DisruptionBudget;
use crate::core::framework::Profile;
use crate::core::gang::{GangId, GangObject};
use crate::core::gang_scheduler::{GangDecision, GangScheduler, Settled, WaitReason};
use crate::core::pod::{PodInfo, PodKey, PodPhase};
use crate::core::queue::{GangKey, SchedulingQueue, UNSCHEDULABLE_FLUSH};
use crate::core::quota::QuotaKind;
use crate::core::resources::{GPU, Resources};
use crate::core::snapshot::{ClusterSnapshot, PlacementState};
use crate::explain::{ExplainError, GangExplanation, SchedulerState, Target, explain_gang};

/// Decisions made between two looks at the event channels: enough to amortise
/// the look, few enough that events are not left waiting.
const DECISIONS_PER_ROUND: usize = 128;
/// An unchanged unschedulable message is reported again only after this long.
const REPORT_REPEAT: Duration = Duration::from_secs(30);
/// How often quota usage is published as metrics.
const QUOTA_METRICS_EVERY: Duration = Duration::from_secs(1);

/// Where the loop sends its decisions: the binder in production, a
/// recorder in the loop's unit tests.
pub trait BindRequests {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>);
    /// A node was deleted (`gone`) or is there again: binds not yet sent
    /// to it must not be sent.
    fn set_node_gone(&self, _node: &str, _gone: bool) {}
}

/// Where the loop sends preemption victims: the evictor in production, a
/// recorder in the loop's unit tests. `preemptor` names who the victim makes
/// room for, as users should read it ("PodGroup team-a/llm").
pub trait Evictions {
    fn evict(&self, uid: String, key: PodKey, preemptor: String);
}

/// Where the loop sends what users should read.
pub trait Reports {
    fn send(&self, report: Report);
}

impl Evictions for Evictor {
    fn evict(&self, uid: String, key: PodKey, preemptor: String) {
        Evictor::evict(self, uid, key, preemptor);
    }
}

impl BindRequests for Binder {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>) {
        Binder::bind(self, uid, key, node, gpus);
    }

    fn set_node_gone(&self, node: &str, gone: bool) {
        Binder::set_node_gone(self, node, gone);
    }
}

impl Reports for Reporter {
    fn send(&self, report: Report) {
        Reporter::send(self, report);
    }
}

/// A victim whose eviction is in flight.
#[derive(Debug, Clone)]
struct Eviction {
    preemptor: GangKey,
    /// Why, for the victim's `Preempted` Event.
    message: String,
}

pub struct SchedulingLoop<B = Binder, R = Reporter, E = Evictor> {
    profiles: HashMap<String, Profile>,
    snapshot: ClusterSnapshot,
    queue: SchedulingQueue,
    gangs: GangScheduler,
    /// Pods whose bind is in flight, to requeue them if it fails.
    binding: HashMap<String, PodInfo>,
    /// The last message reported about each pod, by UID.
    last_report: HashMap<String, (String, Instant)>,
    /// The last Event about each gang's object, by reason.
    last_gang_report: HashMap<GangKey, HashMap<&'static str, (String, Instant)>>,
    /// Victims whose eviction is in flight, by UID.
    evicting: HashMap<String, Eviction>,
    /// Why each waiting gang waits, for the `gangs_waiting` metric.
    waiting: HashMap<GangKey, WaitReason>,
    binder: B,
    reporter: R,
    evictor: E,
    metrics: Metrics,
    next_quota_metrics: Instant,
    /// Watches whose first list has not arrived; scheduling waits for them.
    unlisted: HashSet<&'static str>,
    ready: Arc<AtomicBool>,
    /// Decisions are made only while this replica leads, and only once the
    /// pods were listed afresh in its current term (`synced_term`).
    leadership: Leadership,
    synced_term: Option<u64>,
    /// Questions from the `/explain` endpoint.
    explain_requests: Option<mpsc::Receiver<ExplainRequest>>,
}

/// The watches every decision depends on, besides one per served gang kind
/// and ElasticQuotas where served.
const NODES: &str = "nodes";
const PODS: &str = "pods";
const RESOURCE_QUOTAS: &str = "resourcequotas";
const ELASTIC_QUOTAS: &str = "elasticquotas";
const BUDGETS: &str = "poddisruptionbudgets";

fn quota_watch(kind: QuotaKind) -> &'static str {
    match kind {
        QuotaKind::Elastic => ELASTIC_QUOTAS,
        QuotaKind::Hard => RESOURCE_QUOTAS,
    }
}

impl<B: BindRequests, R: Reports, E: Evictions> SchedulingLoop<B, R, E> {
    /// `gangs`: knows which gang objects the API server serves (and the informers watch);
    /// `elastic_quotas`: whether it serves ElasticQuotas (and the informers watch them).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        profiles: Vec<Profile>,
        snapshot: ClusterSnapshot,
        queue: SchedulingQueue,
        gangs: GangScheduler,
        elastic_quotas: bool,
        binder: B,
        reporter: R,
        evictor: E,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let mut unlisted: HashSet<&'static str> = [NODES, PODS, RESOURCE_QUOTAS, BUDGETS].into();
        unlisted.extend(gangs.served_kinds().map(|k| k.api_version()));
        if elastic_quotas {
            unlisted.insert(ELASTIC_QUOTAS);
        }
        Self {
            profiles: profiles.into_iter().map(|p| (p.scheduler_name.clone(), p)).collect(),
            snapshot,
            queue,
            gangs,
            binding: HashMap::new(),
            last_report: HashMap::new(),
            last_gang_report: HashMap::new(),
            evicting: HashMap::new(),
            waiting: HashMap::new(),
            binder,
            reporter,
            evictor,
            metrics,
            next_quota_metrics: Instant::now(),
            unlisted,
            ready,
            leadership: Leadership::always(),
            synced_term: None,
            explain_requests: None,
        }
    }

    /// Decides only while `leadership` holds, each term after its fresh list of pods.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Answers `/explain` questions arriving on `requests` between rounds.
    pub fn with_explain_requests(mut self, requests: mpsc::Receiver<ExplainRequest>) -> Self {
        self.explain_requests = Some(requests);
        self
    }

    /// Why a gang waits, or where it runs, from the state as it is now.
    pub fn explain(&mut self, target: &Target) -> Result<GangExplanation, ExplainError> {
        if !self.unlisted.is_empty() {
            return Err(ExplainError::NotReady);
        }
        let state = SchedulerState {
            profiles: &self.profiles,
            snapshot: &mut self.snapshot,
            queue: &self.queue,
            gangs: &self.gangs,
            now: Instant::now(),
        };
        explain_gang(target, state)
    }

    /// Applies watch events until every watch has listed once, without
    /// scheduling: the state a one-off look (`phalanx explain`) needs.
    /// False if the watches ended first.
    pub async fn sync(&mut self, events: &mut mpsc::Receiver<ClusterEvent>) -> bool {
        while !self.unlisted.is_empty() {
            let Some(event) = events.recv().await else { return false };
            self.apply_event(event);
        }
        true
    }

    fn answer(&mut self, request: ExplainRequest) {
        let _ = request.reply.send(self.explain(&request.target));
    }

    /// Runs until `shutdown` turns true or the watches end.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ClusterEvent>,
        mut outcomes: mpsc::UnboundedReceiver<BindOutcome>,
        mut evictions: mpsc::UnboundedReceiver<EvictOutcome>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut leadership = self.leadership.clone();
        let mut next_flush = Instant::now() + UNSCHEDULABLE_FLUSH;
        // Whether anything applied since the last round may let waiting pods fit.
        let mut changed = false;
        let mut explain_requests = self.explain_requests.take();
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
            while let Ok(outcome) = evictions.try_recv() {
                self.apply_eviction(outcome);
            }
            while let Some(request) = explain_requests.as_mut().and_then(|r| r.try_recv().ok()) {
                self.answer(request);
            }
            let now = Instant::now();
            if now >= next_flush {
                changed = true;
                next_flush = now + UNSCHEDULABLE_FLUSH;
            }
            if std::mem::take(&mut changed) {
                self.queue.cluster_changed(now);
                self.gangs.retry_head(&mut self.queue);
            }
            let busy = self.is_ready() && self.may_decide() && self.schedule_round();
            self.publish_queue_lengths();
            self.publish_quota_usage(now);
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
                Some(outcome) = evictions.recv() => self.apply_eviction(outcome),
                Some(request) = next_request(&mut explain_requests) => self.answer(request),
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = shutdown.changed() => {}
                _ = leadership.changed() => {}
            }
        }
    }

    fn is_ready(&mut self) -> bool {
        let ready = self.unlisted.is_empty();
        if ready && !self.ready.swap(true, Ordering::Relaxed) {
            info!(nodes = self.snapshot.node_count(), "caches synced; scheduling starts");
        }
        ready
    }

    fn may_decide(&self) -> bool {
        // Term 0 (no election, leading for ever) needs no list of its own.
        self.leadership.term().is_some_and(|term| term == 0 || self.synced_term == Some(term))
    }

    /// Decides for up to a round of gangs. Returns whether gangs are left.
    fn schedule_round(&mut self) -> bool {
        for _ in 0..DECISIONS_PER_ROUND {
            if !self.may_decide() {
                // The lease was lost mid-round.
                return false;
            }
            let Some(key) = self.queue.pop(Instant::now()) else {
                return false;
            };
            self.schedule_gang(key);
        }
        true
    }

    fn schedule_gang(&mut self, key: GangKey) {
        let span =
            info_span!("schedule", gang = %gang_name(&key, &self.queue), members = self.queue.member_count(&key));
        let _entered = span.enter();
        let started = Instant::now();
        let now = Instant::now();
        let profile = self.queue.members(&key).next().map(|p| p.scheduler_name.clone()).unwrap_or_default();
        let Settled { verdict, placed } =
            self.gangs.decide_and_settle(&key, &self.profiles, &mut self.snapshot, &mut self.queue, now);
        for warning in &verdict.warnings {
            self.report_gang(&key, "GangMembersDisagree", warning.clone());
        }
        match verdict.decision {
            GangDecision::Bind(placement) => {
                self.waiting.remove(&key);
                debug!(members = placement.members.len(), scope = ?placement.scope, "placed");
                self.metrics.attempt("scheduled", &profile, started.elapsed().as_secs_f64());
                for (member, pod) in placed {
                    self.last_report.remove(&member.uid);
                    self.binder.bind(member.uid.clone(), member.key, member.node, member.gpu_indices);
                    self.binding.insert(member.uid, pod);
                }
                self.last_gang_report.remove(&key);
            }
            GangDecision::Wait(message) => {
                debug!(%message, "waiting");
                self.waiting.insert(key.clone(), WaitReason::Members);
                self.report_members(&key, &message);
                self.report_gang(&key, "Waiting", message);
            }
            GangDecision::Preempt { plan, message } => {
                info!(%message, victims = plan.victims.len(), "preempting");
                self.metrics.preemption("planned", plan.victims.len());
                let why = format!("{message} for {}", gang_name(&key, &self.queue));
                for victim in &plan.victims {
                    self.evict(&victim.key, &victim.uid, &key, why.clone());
                }
                // The freed nodes are held for the gang; its members show where they will go.
                for member in plan.placement {
                    self.reporter.send(Report::Nominated { key: member.key, uid: member.uid, node: member.node });
                }
                self.waiting.insert(key.clone(), WaitReason::Preempting);
                self.report_gang(&key, "Preempting", message.clone());
                self.report_members(&key, &message);
            }
            GangDecision::Unschedulable { message, timed_out, reason } => {
                self.waiting.insert(key.clone(), reason);
                if verdict.preemption_tried {
                    self.metrics.preemption("none", 0);
                }
                debug!(%message, attempts = self.queue.attempts(&key), "unschedulable");
                self.metrics.attempt("unschedulable", &profile, started.elapsed().as_secs_f64());
                let reason = if timed_out.is_some() { "GangTimeout" } else { "FailedScheduling" };
                self.report_gang(&key, reason, message.clone());
                self.report_members(&key, &message);
            }
            GangDecision::Drop => {}
        }
    }

    /// The condition and a FailedScheduling Event on every pending member.
    fn report_members(&mut self, key: &GangKey, message: &str) {
        let members: Vec<(PodKey, String, Option<String>)> =
            self.queue.members(key).map(|p| (p.key.clone(), p.uid.clone(), p.resource_version.clone())).collect();
        for (pod, uid, resource_version) in members {
            if repeated(&mut self.last_report, uid.clone(), message) {
                continue;
            }
            self.reporter.send(Report::Unschedulable { key: pod, uid, resource_version, message: message.to_string() });
        }
    }

    /// A Warning Event on the gang's object (its PodGroup or job).
    fn report_gang(&mut self, key: &GangKey, reason: &'static str, message: String) {
        let object = key.gang().and_then(|id| self.gangs.object(id)).cloned();
        self.report_gang_object(key, object.as_ref(), reason, message);
    }

    fn report_gang_object(
        &mut self,
        key: &GangKey,
        object: Option<&GangObject>,
        reason: &'static str,
        message: String,
    ) {
        let Some(id) = key.gang() else { return };
        // Deduplicated per reason, so a warning and a waiting message about
        // the same gang do not keep replacing each other.
        if repeated(self.last_gang_report.entry(key.clone()).or_default(), reason, &message) {
            return;
        }
        let regarding = gang_reference(id, object);
        self.reporter.send(Report::Event { regarding, warning: true, reason, message });
    }

    fn report_unused_topology(&mut self, node: &str, reported: usize, offered: usize) {
        let message = format!(
            "gputopology {node}: spec.gpus: lists {reported} GPUs but node {node} offers {offered} {GPU}; \
             the built-in template is used instead"
        );
        warn!(%message, "topology report not used");
        self.metrics.invalid_objects.inc();
        let regarding = ObjectReference {
            api_version: Some(GPUTopology::api_version(&()).into_owned()),
            kind: Some(GPUTopology::kind(&()).into_owned()),
            name: Some(node.to_string()),
            ..Default::default()
        };
        self.reporter.send(Report::Event { regarding, warning: true, reason: "InvalidObject", message });
    }

    /// Applies one watch event. Returns whether capacity may have been freed
    /// or added (so that waiting pods deserve another look).
    fn apply_event(&mut self, event: ClusterEvent) -> bool {
        match event {
            ClusterEvent::NodeApplied(spec) => {
                self.binder.set_node_gone(&spec.name, false);
                self.snapshot.upsert_node(spec)
            }
            ClusterEvent::NodeDeleted(name) => {
                self.binder.set_node_gone(&name, true);
                self.snapshot.remove_node(&name);
                false
            }
            ClusterEvent::NodesListed(names) => {
                self.unlisted.remove(NODES);
                let gone: Vec<String> =
                    self.snapshot.node_names().filter(|n| !names.contains(*n)).map(str::to_string).collect();
                for name in gone {
                    self.binder.set_node_gone(&name, true);
                    self.snapshot.remove_node(&name);
                }
                true
            }
            ClusterEvent::PodApplied { pod, gated } => self.apply_pod(pod, gated),
            ClusterEvent::PodDeleted { uid } => self.forget_pod(&uid),
            ClusterEvent::TopologyApplied(report) => {
                let changed = self.snapshot.set_reported_topology(&report.node, Some(report.topology));
                if let Some((reported, offered)) = self.snapshot.unused_report(&report.node).filter(|_| changed) {
                    self.report_unused_topology(&report.node, reported, offered);
                }
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
            ClusterEvent::GangApplied { id, object } => {
                if let GangObject::Invalid(invalid) = &object {
                    let key = GangKey::Gang(id.clone());
                    warn!(error = %invalid, "invalid gang object");
                    self.metrics.invalid_objects.inc();
                    self.report_gang_object(&key, Some(&object), "InvalidObject", invalid.to_string());
                }
                if self.gangs.set_object(id.clone(), Some(object)) {
                    self.queue.wake(&GangKey::Gang(id), Instant::now());
                }
                false
            }
            ClusterEvent::GangDeleted(id) => {
                self.gangs.set_object(id.clone(), None);
                self.queue.wake(&GangKey::Gang(id), Instant::now());
                false
            }
            ClusterEvent::GangsListed { kind, ids } => {
                self.unlisted.remove(kind.api_version());
                for id in self.gangs.objects_listed(kind, &ids) {
                    self.queue.wake(&GangKey::Gang(id), Instant::now());
                }
                false
            }
            ClusterEvent::PodsListed(uids) => {
                self.unlisted.remove(PODS);
                self.resync_pods(&uids);
                true
            }
            // A quota changed may let a gang in (a limit raised, a quota
            // gone); gangs that wait for room are tried again.
            ClusterEvent::QuotaApplied(quota) => {
                let (namespace, name) = quota.key();
                debug!(kind = ?quota.kind(), %namespace, %name, "quota applied");
                let quotas = self.gangs.quotas_mut();
                match quota {
                    Quota::Elastic(q) => quotas.set_elastic(q),
                    Quota::Hard(q) => quotas.set_hard(q),
                }
            }
            ClusterEvent::QuotaDeleted { kind, namespace, name } => {
                debug!(?kind, %namespace, %name, "quota deleted");
                self.gangs.quotas_mut().remove(kind, &namespace, &name)
            }
            ClusterEvent::QuotasListed { kind, keys } => {
                self.unlisted.remove(quota_watch(kind));
                self.gangs.quotas_mut().listed(kind, &keys);
                true
            }
            ClusterEvent::BudgetApplied { namespace, name, budget } => {
                debug!(%namespace, %name, allowed = ?budget.as_ref().map(|b| b.disruptions_allowed), "disruption budget applied");
                self.set_budget(&namespace, &name, budget)
            }
            ClusterEvent::BudgetDeleted { namespace, name } => {
                debug!(%namespace, %name, "disruption budget deleted");
                self.set_budget(&namespace, &name, None)
            }
            ClusterEvent::BudgetsListed(keys) => {
                self.unlisted.remove(BUDGETS);
                self.gangs.budgets_listed(&keys);
                true
            }
            ClusterEvent::PodsRelisted { uids, term } => {
                self.unlisted.remove(PODS);
                self.resync_pods(&uids);
                if self.leadership.term() == Some(term) {
                    info!(term, "pods listed afresh; this replica decides from now on");
                    self.synced_term = Some(term);
                }
                true
            }
            ClusterEvent::Invalid { regarding, error } => {
                warn!(%error, "ignoring an object phalanx cannot read");
                self.metrics.invalid_objects.inc();
                if let Some(uid) = regarding.uid.as_deref()
                    && regarding.kind.as_deref() == Some("Pod")
                {
                    self.queue.remove(uid);
                }
                if regarding.kind.as_deref() == Some("Node")
                    && let Some(name) = regarding.name.as_deref()
                {
                    self.snapshot.remove_node(name);
                }
                self.reporter.send(Report::Event {
                    regarding,
                    warning: true,
                    reason: "InvalidObject",
                    message: error.to_string(),
                });
                false
            }
        }
    }

    /// Applies a budget. Returns whether it may let a preemption through that
    /// was refused before: it allows more disruptions, selects other pods,
    /// or is gone. A new budget only protects.
    fn set_budget(&mut self, namespace: &str, name: &str, budget: Option<DisruptionBudget>) -> bool {
        let old = self.gangs.budgets().find(|b| b.namespace == namespace && b.name == name).cloned();
        let loosened = match (&old, &budget) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(old), Some(new)) => new.disruptions_allowed > old.disruptions_allowed || new.selector != old.selector,
        };
        self.gangs.set_budget(namespace, name, budget);
        loosened
    }

    fn apply_pod(&mut self, pod: PodInfo, gated: bool) -> bool {
        if pod.phase == PodPhase::Finished {
            return self.forget_pod(&pod.uid);
        }
        if let Some(node) = &pod.node_name {
            // Bound, by us or anyone: its resources are taken on that node.
            self.snapshot.observe_bound(pod.placement(node), pod.gpu_indices.as_deref());
            self.queue.remove(&pod.uid);
            self.last_report.remove(&pod.uid);
            return false;
        }
        let ours = self.profiles.contains_key(&pod.scheduler_name);
        if let Some(gang) = &pod.job {
            self.gangs.set_foreign_member(gang, &pod.key.name, !ours && !pod.terminating);
        }
        if pod.terminating || gated || !ours {
            self.queue.remove(&pod.uid);
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
        self.queue.upsert(pod, Instant::now());
        false
    }

    fn forget_pod(&mut self, uid: &str) -> bool {
        self.queue.remove(uid);
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
            self.queue.remove(&uid);
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
            failed @ (BindResult::NodeGone
            | BindResult::Conflict(_)
            | BindResult::Failed(_)
            | BindResult::NotSent(_)) => {
                let why = match failed {
                    BindResult::Conflict(why) | BindResult::Failed(why) | BindResult::NotSent(why) => why,
                    _ => "the node was deleted before the bind was sent".to_string(),
                };
                let released = self.snapshot.forget(&outcome.uid);
                if !confirmed {
                    info!(pod = %outcome.key, node = %outcome.node, %why, "bind did not succeed; retrying after backoff");
                    let now = Instant::now();
                    let key = GangKey::of(&pod);
                    self.queue.upsert(pod, now);
                    self.queue.retry_later(&key, now);
                }
                released
            }
        }
    }

    /// Asks for `victim`'s eviction on behalf of the gang `preemptor`;
    /// `message` says why, in the victim's `Preempted` Event. A victim whose
    /// eviction is already in flight is not asked for twice.
    fn evict(&mut self, victim: &PodKey, uid: &str, preemptor: &GangKey, message: String) {
        if self.evicting.contains_key(uid) {
            return;
        }
        let name = gang_name(preemptor, &self.queue);
        info!(pod = %victim, preemptor = %name, %message, "evicting");
        self.evicting.insert(uid.to_string(), Eviction { preemptor: preemptor.clone(), message });
        self.evictor.evict(uid.to_string(), victim.clone(), name);
    }

    /// Applies an eviction outcome. An evicted victim gets its Event and
    /// frees its resources once the watch sees it gone; a refused or failed
    /// eviction abandons the preemptor's plan and sends it back to try again
    /// after backoff (with budgets and pods as the watches then show them).
    fn apply_eviction(&mut self, outcome: EvictOutcome) {
        let eviction = self.evicting.remove(&outcome.uid);
        match outcome.result {
            EvictResult::Evicted => {
                let message = eviction.map(|e| e.message).unwrap_or_default();
                let EvictOutcome { key, uid, preemptor, .. } = outcome;
                self.reporter.send(Report::Preempted { key, uid, preemptor, message });
            }
            EvictResult::PodGone => debug!(pod = %outcome.key, "victim gone before its eviction"),
            EvictResult::Blocked(why) | EvictResult::Failed(why) | EvictResult::NotSent(why) => {
                info!(pod = %outcome.key, preemptor = %outcome.preemptor, %why, "victim not evicted");
                if let Some(e) = eviction {
                    self.gangs.abandon_preemption(&e.preemptor);
                    self.queue.retry_later(&e.preemptor, Instant::now());
                }
            }
        }
    }

    /// Every ElasticQuota namespace's use and borrowing of the resources its
    /// quota names, at most once per `QUOTA_METRICS_EVERY`.
    fn publish_quota_usage(&mut self, now: Instant) {
        if now < self.next_quota_metrics {
            return;
        }
        self.next_quota_metrics = now + QUOTA_METRICS_EVERY;
        let quotas = self.gangs.quotas();
        let none = Resources::new();
        let mut rows = Vec::new();
        for quota in quotas.elastic_quotas() {
            let used = self.snapshot.namespace_usage(&quota.namespace).unwrap_or(&none);
            let resources: BTreeSet<&String> = quota.min.0.keys().chain(quota.max.0.keys()).collect();
            for resource in resources {
                rows.push(QuotaUsage {
                    namespace: quota.namespace.clone(),
                    resource: resource.clone(),
                    used: used.get(resource),
                    borrowed: quotas.borrowed(&quota.namespace, resource, used),
                });
            }
        }
        self.metrics.set_quota_usage(&rows);
    }

    fn publish_queue_lengths(&mut self) {
        let queue = &self.queue;
        self.waiting.retain(|key, _| queue.member_count(key) > 0);
        self.last_gang_report.retain(|key, _| queue.member_count(key) > 0);
        let mut counts = [0; WaitReason::ALL.len()];
        for reason in self.waiting.values() {
            counts[*reason as usize] += 1;
        }
        for (reason, count) in WaitReason::ALL.iter().zip(counts) {
            self.metrics.set_gangs_waiting(reason.as_str(), count);
        }
        let l = self.queue.lengths();
        self.metrics.set_pending("active", l.active);
        self.metrics.set_pending("backoff", l.backoff);
        self.metrics.set_pending("unschedulable", l.unschedulable);
        self.metrics.set_pending("waiting", l.waiting);
        self.metrics.set_pending("binding", self.binding.len());
        self.metrics.queued_pods.set(self.queue.pod_count() as i64);
    }
}

/// The next `/explain` question; never, without a channel.
async fn next_request(requests: &mut Option<mpsc::Receiver<ExplainRequest>>) -> Option<ExplainRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

fn gang_name(key: &GangKey, queue: &SchedulingQueue) -> String {
    match key {
        GangKey::Gang(id) => id.to_string(),
        GangKey::Pod(_) => queue.members(key).next().map(|p| format!("Pod {}", p.key)).unwrap_or_default(),
    }
}

/// Whether `message` was just reported about `about` (and records it if not).
fn repeated<K: std::hash::Hash + Eq>(log: &mut HashMap<K, (String, Instant)>, about: K, message: &str) -> bool {
    let now = Instant::now();
    if let Some((last, at)) = log.get(&about)
        && last == message
        && now.duration_since(*at) < REPORT_REPEAT
    {
        return true;
    }
    log.insert(about, (message.to_string(), now));
    false
}

fn gang_reference(id: &GangId, object: Option<&GangObject>) -> ObjectReference {
    let uid = object.and_then(GangObject::uid).map(str::to_string);
    ObjectReference {
        api_version: Some(id.kind.api_version().into()),
        kind: Some(id.kind.object_kind().into()),
        namespace: Some(id.namespace.clone()),
        name: Some(id.name.clone()),
        uid,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::core::gang::{GangKind, GangSpec, InvalidGang};
    use crate::core::plugins::default_profile;
    use crate::core::queue::BackoffPolicy;
    use crate::core::quota::{ElasticQuota, HardQuota, Limits};
    use crate::core::resources::GPU;
    use crate::core::testing::{gpu_node, gpu_pod};
    use crate::shell::leader_election::Term;
    use crate::shell::metrics::QuotaLabels;
    use crate::shell::translate::TranslateError;

    /// A bind request: pod name, node, GPU indices.
    type BindRequest = (String, String, Vec<u32>);

    /// Records what the loop asks of the binder, the evictor and the reporter.
    #[derive(Clone, Default)]
    struct Recorder {
        binds: Arc<Mutex<Vec<BindRequest>>>,
        /// Victim name and preemptor.
        evictions: Arc<Mutex<Vec<(String, String)>>>,
        reports: Arc<Mutex<Vec<Report>>>,
        /// Nodes the binder was told are gone.
        gone_nodes: Arc<Mutex<HashSet<String>>>,
    }

    impl Evictions for Recorder {
        fn evict(&self, _uid: String, key: PodKey, preemptor: String) {
            self.evictions.lock().unwrap().push((key.name, preemptor));
        }
    }

    impl BindRequests for Recorder {
        fn bind(&self, _uid: String, key: PodKey, node: String, gpus: Vec<u32>) {
            self.binds.lock().unwrap().push((key.name, node, gpus));
        }

        fn set_node_gone(&self, node: &str, gone: bool) {
            let mut nodes = self.gone_nodes.lock().unwrap();
            if gone {
                nodes.insert(node.to_string())
            } else {
                nodes.remove(node)
            };
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

    type TestLoop = SchedulingLoop<Recorder, Recorder, Recorder>;

    /// A synced loop with one 8-GPU node and no backoff (so retries are immediate).
    fn synced_loop() -> (TestLoop, Recorder) {
        let recorder = Recorder::default();
        let policy = BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO };
        let mut l = SchedulingLoop::new(
            vec![default_profile("phalanx")],
            ClusterSnapshot::new(),
            SchedulingQueue::new(policy),
            GangScheduler::new(HashSet::from([GangKind::PodGroup]), Default::default()),
            true,
            recorder.clone(),
            recorder.clone(),
            recorder.clone(),
            Metrics::register(&mut Registry::default()),
            Arc::new(AtomicBool::new(false)),
        );
        assert!(!l.is_ready(), "nothing is decided before the caches are synced");
        l.apply_event(ClusterEvent::NodeApplied(gpu_node("n1", 8)));
        l.apply_event(ClusterEvent::NodesListed(HashSet::from(["n1".to_string()])));
        l.apply_event(ClusterEvent::PodsListed(HashSet::new()));
        assert!(!l.is_ready(), "PodGroups are not listed yet");
        l.apply_event(ClusterEvent::GangsListed { kind: GangKind::PodGroup, ids: HashSet::new() });
        for kind in [QuotaKind::Elastic, QuotaKind::Hard] {
            assert!(!l.is_ready(), "quotas are not all listed yet");
            l.apply_event(ClusterEvent::QuotasListed { kind, keys: vec![] });
        }
        assert!(!l.is_ready(), "disruption budgets are not listed yet");
        l.apply_event(ClusterEvent::BudgetsListed(vec![]));
        assert!(l.is_ready());
        (l, recorder)
    }

    fn member(name: &str, gpus: i64, group: &str) -> PodInfo {
        let mut pod = gpu_pod(name, gpus);
        pod.job = Some(GangId::new(GangKind::PodGroup, "default", group));
        pod
    }

    fn group(l: &mut TestLoop, name: &str, object: GangObject) {
        l.apply_event(ClusterEvent::GangApplied { id: GangId::new(GangKind::PodGroup, "default", name), object });
    }

    fn events(rec: &Recorder) -> Vec<(&'static str, String)> {
        let reports = rec.reports.lock().unwrap();
        reports
            .iter()
            .filter_map(|r| match r {
                Report::Event { reason, message, .. } => Some((*reason, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_gang_binds_only_once_min_member_pods_exist_and_then_all_at_once() {
        let (mut l, rec) = synced_loop();
        group(&mut l, "g", GangObject::Valid(GangSpec::of_size(3)));
        for i in 0..2 {
            l.apply_event(ClusterEvent::PodApplied { pod: member(&format!("w{i}"), 2, "g"), gated: false });
        }
        l.schedule_round();
        assert_eq!(rec.bind_count(), 0);
        assert_eq!(rec.unschedulable_reports()[0], "waiting for members of PodGroup default/g: 2 of 3 members created");
        assert!(events(&rec).iter().any(|(reason, m)| *reason == "Waiting" && m.contains("2 of 3")));
        l.apply_event(ClusterEvent::PodApplied { pod: member("w2", 2, "g"), gated: false });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 3, "the third member completes the gang");
        assert_eq!(l.snapshot.node("n1").unwrap().free_gpus().count_ones(), 2);
    }

    #[test]
    fn a_gang_that_does_not_fit_binds_nothing() {
        let (mut l, rec) = synced_loop();
        group(&mut l, "g", GangObject::Valid(GangSpec::of_size(2)));
        l.apply_event(ClusterEvent::PodApplied { pod: member("a", 4, "g"), gated: false });
        l.apply_event(ClusterEvent::PodApplied { pod: member("b", 6, "g"), gated: false });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 0);
        assert_eq!(l.snapshot.node("n1").unwrap().free_gpus(), 0xff, "nothing stays reserved");
        let message = &rec.unschedulable_reports()[0];
        assert!(message.starts_with("gang needs 2 pods placed together (12 GPUs), only 1 have room"), "{message}");
    }

    #[test]
    fn an_invalid_pod_group_is_reported_and_its_pods_wait() {
        let (mut l, rec) = synced_loop();
        let invalid = InvalidGang {
            gang: GangId::new(GangKind::PodGroup, "default", "bad"),
            uid: Some("pg".into()),
            field: "spec.minMember".into(),
            problem: "is 0; a gang needs at least one member".into(),
        };
        group(&mut l, "bad", GangObject::Invalid(invalid));
        l.apply_event(ClusterEvent::PodApplied { pod: member("w0", 1, "bad"), gated: false });
        l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("solo", 1), gated: false });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 1, "the rest of the queue keeps moving");
        assert!(events(&rec).iter().any(|(reason, m)| *reason == "InvalidObject" && m.contains("spec.minMember is 0")));
        assert!(rec.unschedulable_reports()[0].contains("waiting for a valid PodGroup"));
        // A missing PodGroup: its pods wait too.
        l.apply_event(ClusterEvent::PodApplied { pod: member("x", 1, "missing"), gated: false });
        l.schedule_round();
        assert!(
            rec.unschedulable_reports()
                .iter()
                .any(|m| m.contains("default/missing, which the pods name but which does not exist"))
        );
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
    fn a_bind_held_back_from_a_deleted_node_sends_the_pod_elsewhere() {
        let (mut l, rec) = synced_loop();
        let pod = gpu_pod("p", 8);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.schedule_round();
        l.apply_event(ClusterEvent::NodeDeleted("n1".into()));
        assert!(rec.gone_nodes.lock().unwrap().contains("n1"), "the binder knows before its next call");
        l.apply_event(ClusterEvent::NodeApplied(gpu_node("n2", 8)));
        l.apply_outcome(outcome(&pod, "n1", BindResult::NodeGone));
        assert!(l.snapshot.node("n1").is_none(), "nothing is left on the deleted node");
        l.schedule_round();
        assert_eq!(rec.binds.lock().unwrap().last().unwrap().1, "n2");
        l.apply_event(ClusterEvent::NodeApplied(gpu_node("n1", 8)));
        assert!(rec.gone_nodes.lock().unwrap().is_empty(), "a node created again under the name takes binds");
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
        let reports = rec.unschedulable_reports();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].starts_with("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: "));
        let mut cordoned = gpu_node("n2", 8);
        cordoned.unschedulable = true;
        l.apply_event(ClusterEvent::NodeApplied(cordoned));
        l.queue.cluster_changed(Instant::now());
        l.schedule_round();
        assert_eq!(rec.unschedulable_reports().len(), 2);
        assert!(rec.unschedulable_reports()[1].contains("1 node(s) were unschedulable"));
    }

    fn elastic(namespace: &str, max_gpus: i64) -> Quota {
        Quota::Elastic(ElasticQuota {
            namespace: namespace.into(),
            name: "quota".into(),
            min: Limits([(GPU.to_string(), 4)].into()),
            max: Limits([(GPU.to_string(), max_gpus)].into()),
        })
    }

    #[test]
    fn quotas_apply_and_a_change_counts_as_a_cluster_change() {
        let (mut l, rec) = synced_loop();
        assert!(l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8))), "a new quota");
        assert!(!l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8))), "the same again");
        assert!(l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 16))), "a limit raised");
        assert_eq!(l.gangs.quotas().elastic("default").unwrap().max.get(GPU), Some(16));
        let hard = HardQuota { namespace: "default".into(), name: "rq".into(), hard: Limits::default() };
        assert!(l.apply_event(ClusterEvent::QuotaApplied(Quota::Hard(hard))));
        // An unreadable quota is reported; the version read before stays.
        let regarding = ObjectReference {
            kind: Some("ElasticQuota".into()),
            namespace: Some("default".into()),
            name: Some("quota".into()),
            ..Default::default()
        };
        let error = TranslateError {
            object: "elasticquota default/quota".into(),
            field: "spec.max[nvidia.com/gpu]".into(),
            message: "\"-1\" is negative".into(),
        };
        l.apply_event(ClusterEvent::Invalid { regarding, error });
        assert!(
            events(&rec).iter().any(|(reason, m)| *reason == "InvalidObject" && m.contains("spec.max[nvidia.com/gpu]"))
        );
        assert_eq!(l.gangs.quotas().elastic("default").unwrap().max.get(GPU), Some(16));
        let deleted =
            ClusterEvent::QuotaDeleted { kind: QuotaKind::Elastic, namespace: "default".into(), name: "quota".into() };
        assert!(l.apply_event(deleted));
        assert!(l.gangs.quotas().elastic("default").is_none());
        l.apply_event(ClusterEvent::QuotaApplied(elastic("other", 8)));
        l.apply_event(ClusterEvent::QuotasListed { kind: QuotaKind::Elastic, keys: vec![] });
        assert!(l.gangs.quotas().elastic("other").is_none(), "not listed, gone");
    }

    #[test]
    fn quota_usage_is_published_for_elastic_quota_namespaces() {
        let (mut l, _) = synced_loop();
        l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8)));
        let mut bound = gpu_pod("p", 6);
        bound.node_name = Some("n1".into());
        l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
        l.publish_quota_usage(Instant::now() + QUOTA_METRICS_EVERY);
        let labels = QuotaLabels { namespace: "default".into(), resource: GPU.into() };
        assert_eq!(l.metrics.quota_used.get(&labels).map(|g| g.get()), Some(6));
        assert_eq!(l.metrics.quota_borrowed.get(&labels).map(|g| g.get()), Some(2), "6 used over a min of 4");
    }

    fn budget(allowed: u32) -> Option<DisruptionBudget> {
        Some(DisruptionBudget {
            namespace: "default".into(),
            name: "pdb".into(),
            selector: Default::default(),
            disruptions_allowed: allowed,
        })
    }

    #[test]
    fn budgets_apply_and_only_a_loosened_one_counts_as_a_change() {
        let (mut l, _) = synced_loop();
        let applied = |allowed| ClusterEvent::BudgetApplied {
            namespace: "default".into(),
            name: "pdb".into(),
            budget: budget(allowed),
        };
        assert!(!l.apply_event(applied(0)), "a new budget only protects");
        assert_eq!(l.gangs.budgets().count(), 1);
        assert!(l.apply_event(applied(1)), "one more disruption allowed");
        assert!(!l.apply_event(applied(0)));
        assert!(l.apply_event(ClusterEvent::BudgetDeleted { namespace: "default".into(), name: "pdb".into() }));
        assert_eq!(l.gangs.budgets().count(), 0);
        l.apply_event(applied(0));
        l.apply_event(ClusterEvent::BudgetsListed(vec![]));
        assert_eq!(l.gangs.budgets().count(), 0, "not listed, gone");
    }

    fn evicted(victim: &PodInfo, preemptor: &str, result: EvictResult) -> EvictOutcome {
        EvictOutcome { uid: victim.uid.clone(), key: victim.key.clone(), preemptor: preemptor.into(), result }
    }

    #[test]
    fn an_eviction_is_asked_once_and_an_evicted_victim_gets_an_event_naming_the_preemptor() {
        let (mut l, rec) = synced_loop();
        let victim = gpu_pod("victim", 8);
        let preemptor = GangKey::Gang(GangId::new(GangKind::PodGroup, "default", "big"));
        l.evict(&victim.key, &victim.uid, &preemptor, "priority 100 over 0".into());
        l.evict(&victim.key, &victim.uid, &preemptor, "priority 100 over 0".into());
        assert_eq!(*rec.evictions.lock().unwrap(), vec![("victim".to_string(), "PodGroup default/big".to_string())]);
        assert!(l.evicting.values().any(|e| e.preemptor == preemptor));
        l.apply_eviction(evicted(&victim, "PodGroup default/big", EvictResult::Evicted));
        assert!(!l.evicting.values().any(|e| e.preemptor == preemptor));
        let reports = rec.reports.lock().unwrap();
        let Some(Report::Preempted { key, preemptor, message, .. }) = reports.last() else { panic!("{reports:?}") };
        assert_eq!((key.name.as_str(), preemptor.as_str()), ("victim", "PodGroup default/big"));
        assert_eq!(message, "priority 100 over 0");
    }

    #[test]
    fn a_refused_eviction_sends_the_preemptor_back_to_try_again() {
        let (mut l, rec) = synced_loop();
        let big = gpu_pod("big", 12);
        l.apply_event(ClusterEvent::PodApplied { pod: big.clone(), gated: false });
        l.schedule_round();
        assert_eq!(l.queue.lengths().unschedulable, 1);
        let victim = gpu_pod("victim", 8);
        l.evict(&victim.key, &victim.uid, &GangKey::of(&big), String::new());
        l.apply_eviction(evicted(&victim, "Pod default/big", EvictResult::Blocked("budget".into())));
        assert_eq!(l.queue.lengths().unschedulable, 0, "in backoff, to be tried again");
        assert!(!rec.reports.lock().unwrap().iter().any(|r| matches!(r, Report::Preempted { .. })));
    }

    #[test]
    fn a_standby_decides_nothing_and_a_new_leader_only_after_its_term_s_fresh_list_of_pods() {
        let (l, rec) = synced_loop();
        let (terms, leadership) = Leadership::standby();
        let mut l = l.with_leadership(leadership);
        let pod = gpu_pod("p", 4);
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        assert!(!l.schedule_round() && rec.bind_count() == 0, "a standby binds nothing");
        assert!(l.queue.contains(&pod.uid), "but keeps its queue");
        terms.send_replace(Some(Term { number: 1, until: None }));
        l.schedule_round();
        assert_eq!(rec.bind_count(), 0, "not before the term's own list of pods");
        // The list shows a pod the previous leader bound, with its GPUs.
        let mut bound = gpu_pod("old", 4);
        bound.node_name = Some("n1".into());
        bound.gpu_indices = Some(vec![0, 1, 2, 3]);
        l.apply_event(ClusterEvent::PodApplied { pod: bound.clone(), gated: false });
        // A list made for an earlier term does not count.
        let uids = HashSet::from([pod.uid.clone(), bound.uid.clone()]);
        l.apply_event(ClusterEvent::PodsRelisted { uids: uids.clone(), term: 0 });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 0);
        l.apply_event(ClusterEvent::PodsRelisted { uids, term: 1 });
        l.schedule_round();
        assert_eq!(rec.binds.lock().unwrap()[0], ("p".to_string(), "n1".to_string(), vec![4, 5, 6, 7]));
        // A term whose deadline passed stops decisions, whatever was published.
        terms.send_replace(Some(Term { number: 1, until: Some(std::time::Instant::now()) }));
        l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("q", 1), gated: false });
        l.schedule_round();
        assert_eq!(rec.bind_count(), 1);
    }
}
