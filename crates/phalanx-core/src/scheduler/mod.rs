//! The scheduler's state machine: one owner of the profiles, the snapshot,
//! the queue, the gang, quota and budget records, the holds, and the binds
//! and evictions in flight. Drivers (the live loop, the simulator, `phalanx
//! explain`) feed it events and outcomes with the time they happened, and
//! carry out the actions it asks for. It never reads a clock and never
//! waits, so a simulated clock drives it exactly as the real one does.

mod action;
mod event;
mod recording;
mod reports;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use tracing::{debug, info, info_span, warn};

pub use action::{
    Action, Attempt, ConditionStatus, GroupCondition, GroupConditionKind, PreBind, Progress, Report, ShownReason,
};
pub use event::{
    BindOutcome, BindResult, Change, ClusterEvent, DeviceKind, DeviceObject, DeviceObjectKey, EvictOutcome,
    EvictResult, ObjectRef, TopologyReport, Watch,
};
pub use recording::{Recorded, Step};
// The setup and surface types of the decision modules, which are private.
pub use crate::gang_scheduler::WaitReason;
pub use crate::preemption::PreemptionSettings;
pub use crate::queue::{BackoffPolicy, GangKey, QueueLengths, UNSCHEDULABLE_FLUSH};
use reports::ReportLog;

use crate::disruption::DisruptionBudget;
use crate::dra::inventory::ClassResources;
use crate::explain::{ExplainError, GangExplanation, SchedulerState, Target, explain_gang};
use crate::framework::Profile;
use crate::gang::{GangId, GangKind, GangObject};
use crate::gang_scheduler::{GangDecision, GangScheduler, Settled};
use crate::gang_status::{StatusOutcome, StatusTracker, WallClock};
use crate::pod::{PodInfo, PodKey};
use crate::queue::SchedulingQueue;
use crate::quota::{Quota, QuotaKind, QuotaUsage};
use crate::resources::Resources;
use crate::snapshot::{ClusterSnapshot, PlacementState, Released, TopologySettings};
use crate::volume::VolumeKind;

/// How a scheduler is set up: its profiles and settings, and which optional
/// APIs the cluster serves (so which lists it waits for before deciding).
#[derive(Debug)]
pub struct SchedulerConfig {
    pub profiles: Vec<Profile>,
    pub topology: TopologySettings,
    pub backoff: BackoffPolicy,
    pub preemption: PreemptionSettings,
    pub gang_kinds: HashSet<GangKind>,
    /// `scheduling.x-k8s.io/v1alpha1` ElasticQuotas are served (and watched).
    pub elastic_quotas: bool,
    /// The wall-clock time of the driver's instants, for PodGroup status.
    pub wall_clock: WallClock,
    /// `resource.k8s.io/v1` is served: DeviceClasses, ResourceSlices and ResourceClaims are watched.
    pub dynamic_resources: bool,
    pub class_resources: ClassResources,
    /// PersistentVolumeClaims, PersistentVolumes and StorageClasses are
    /// watched (the simulator has none).
    pub volumes: bool,
}

/// A victim whose eviction is in flight.
#[derive(Debug, Clone)]
struct Eviction {
    preemptor: GangKey,
    /// Why, for the victim's `Preempted` Event.
    message: String,
}

#[derive(Debug)]
pub struct Scheduler {
    profiles: HashMap<String, Profile>,
    snapshot: ClusterSnapshot,
    queue: SchedulingQueue,
    gangs: GangScheduler,
    /// Pods whose bind is in flight, to requeue them if it fails.
    binding: HashMap<String, PodInfo>,
    /// Victims whose eviction is in flight, by UID.
    evicting: HashMap<String, Eviction>,
    /// Why each waiting gang waits, for the `gangs_waiting` metric.
    waiting: HashMap<GangKey, WaitReason>,
    reports: ReportLog,
    /// Nodes deleted (the binder was told); a node created again under the name takes binds.
    gone_nodes: HashSet<String>,
    /// Watches that have not listed yet, or not since they failed; decisions wait for them.
    unlisted: HashSet<Watch>,
    /// Decisions are made only while this replica leads, and only once the
    /// pods were listed afresh in its current term (`synced_term`).
    term: Option<u64>,
    synced_term: Option<u64>,
    /// Actions decided while applying events, handed out with the next decision.
    outbox: Vec<Action>,
    /// PodGroups' status: what to write, when.
    group_statuses: StatusTracker,
}

impl Scheduler {
    /// A scheduler that leads in term 0 (no election) until told otherwise.
    pub fn new(config: SchedulerConfig) -> Self {
        let mut unlisted: HashSet<Watch> =
            [Watch::Nodes, Watch::Pods, Watch::Quotas(QuotaKind::Hard), Watch::Budgets].into();
        unlisted.extend(config.gang_kinds.iter().copied().map(Watch::Gangs));
        if config.elastic_quotas {
            unlisted.insert(Watch::Quotas(QuotaKind::Elastic));
        }
        let scheduler_names = config.profiles.iter().map(|p| p.scheduler_name.clone()).collect();
        if config.dynamic_resources {
            unlisted.extend([DeviceKind::Class, DeviceKind::Slice, DeviceKind::Claim].map(Watch::Devices));
        }
        if config.volumes {
            unlisted.extend(VolumeKind::ALL.map(Watch::Volumes));
        }
        let mut snapshot = ClusterSnapshot::with_settings(config.topology);
        snapshot.devices_mut().set_class_resources(config.class_resources);
        Self {
            group_statuses: StatusTracker::new(scheduler_names, config.wall_clock),
            profiles: config.profiles.into_iter().map(|p| (p.scheduler_name.clone(), p)).collect(),
            snapshot,
            queue: SchedulingQueue::new(config.backoff),
            gangs: GangScheduler::new(config.gang_kinds, config.preemption),
            binding: HashMap::new(),
            evicting: HashMap::new(),
            waiting: HashMap::new(),
            reports: ReportLog::default(),
            gone_nodes: HashSet::new(),
            unlisted,
            term: Some(0),
            synced_term: None,
            outbox: Vec::new(),
        }
    }

    /// Every watch has listed, and none has failed since: the state is
    /// complete and current enough to decide and to explain.
    pub fn is_synced(&self) -> bool {
        self.unlisted.is_empty()
    }

    fn may_decide(&self) -> bool {
        // Term 0 (no election, leading for ever) needs no list of its own.
        self.is_synced() && self.term.is_some_and(|term| term == 0 || self.synced_term == Some(term))
    }

    /// Applies one watch event at `now`.
    pub fn apply(&mut self, event: ClusterEvent, now: Instant) -> Change {
        match event {
            ClusterEvent::NodeApplied(spec) => {
                if self.gone_nodes.remove(&spec.name) {
                    self.outbox.push(Action::NodeGone { node: spec.name.clone(), gone: false });
                }
                self.snapshot.upsert_node(spec).into()
            }
            ClusterEvent::NodeDeleted(name) => {
                self.remove_node(name);
                Change::NoNewRoom
            }
            ClusterEvent::NodesListed(names) => {
                self.unlisted.remove(&Watch::Nodes);
                let gone: Vec<String> =
                    self.snapshot.node_names().filter(|n| !names.contains(*n)).map(str::to_string).collect();
                for name in gone {
                    self.remove_node(name);
                }
                Change::MayFitMore
            }
            ClusterEvent::PodApplied { pod, gated } => self.apply_pod(pod, gated, now),
            ClusterEvent::PodDeleted { uid } => self.forget_pod(&uid).into(),
            ClusterEvent::MemberSucceeded { gang, uid } => {
                self.member_succeeded(&gang, &uid, now);
                Change::NoNewRoom
            }
            ClusterEvent::TopologyApplied(report) => {
                let changed = self.snapshot.set_reported_topology(&report.node, Some(report.topology));
                if changed.is_changed()
                    && let Some((reported, offered)) = self.snapshot.unused_report(&report.node)
                {
                    self.report_unused_topology(&report.node, reported, offered);
                }
                let corrected = self.snapshot.correct_gpus(&report.node, &report.pod_gpus);
                if changed.is_changed() || corrected > 0 { Change::MayFitMore } else { Change::NoNewRoom }
            }
            ClusterEvent::TopologyDeleted(node) => self.snapshot.set_reported_topology(&node, None).into(),
            ClusterEvent::TopologiesListed(nodes) => {
                for node in self.snapshot.reported_nodes().filter(|n| !nodes.contains(n)).collect::<Vec<_>>() {
                    self.snapshot.set_reported_topology(&node, None);
                }
                Change::MayFitMore
            }
            ClusterEvent::GangApplied { id, object } => {
                let key = GangKey::Gang(id.clone());
                if let GangObject::Invalid(invalid) = &object {
                    warn!(error = %invalid, "invalid gang object");
                    self.report_gang_object(&key, Some(&object), "InvalidObject", invalid.to_string(), now);
                }
                if self.gangs.set_object(id, Some(object)).is_changed() {
                    self.queue.wake(&key, now);
                }
                Change::NoNewRoom
            }
            ClusterEvent::GangDeleted(id) => {
                self.gangs.set_object(id.clone(), None);
                self.queue.wake(&GangKey::Gang(id), now);
                Change::NoNewRoom
            }
            ClusterEvent::GangsListed { kind, ids } => {
                self.unlisted.remove(&Watch::Gangs(kind));
                for id in self.gangs.objects_listed(kind, &ids) {
                    self.queue.wake(&GangKey::Gang(id), now);
                }
                Change::NoNewRoom
            }
            ClusterEvent::PodsListed(uids) => {
                self.unlisted.remove(&Watch::Pods);
                self.resync_pods(&uids);
                Change::MayFitMore
            }
            // A quota changed may let a gang in (a limit raised, a quota
            // gone); gangs that wait for room are tried again.
            ClusterEvent::QuotaApplied(quota) => {
                let (namespace, name) = quota.key();
                debug!(kind = ?quota.kind(), %namespace, %name, "quota applied");
                let quotas = self.gangs.quotas_mut();
                let update = match quota {
                    Quota::Elastic(q) => quotas.set_elastic(q),
                    Quota::Hard(q) => quotas.set_hard(q),
                };
                update.into()
            }
            ClusterEvent::QuotaDeleted { kind, namespace, name } => {
                debug!(?kind, %namespace, %name, "quota deleted");
                self.gangs.quotas_mut().remove(kind, &namespace, &name).into()
            }
            ClusterEvent::QuotasListed { kind, keys } => {
                self.unlisted.remove(&Watch::Quotas(kind));
                self.gangs.quotas_mut().listed(kind, &keys);
                Change::MayFitMore
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
                self.unlisted.remove(&Watch::Budgets);
                self.gangs.budgets_listed(&keys);
                Change::MayFitMore
            }
            ClusterEvent::NamespaceApplied { name, labels } => self.snapshot.set_namespace(&name, Some(labels)).into(),
            ClusterEvent::NamespaceDeleted(name) => self.snapshot.set_namespace(&name, None).into(),
            // Default spread constraints only score: nothing waiting fits because of them.
            ClusterEvent::WorkloadSelectorApplied(object) => {
                self.snapshot.workloads_mut().apply(object);
                Change::NoNewRoom
            }
            ClusterEvent::WorkloadSelectorDeleted(key) => {
                self.snapshot.workloads_mut().delete(&key);
                Change::NoNewRoom
            }
            ClusterEvent::WorkloadSelectorsListed { kind, keys } => {
                for key in self.snapshot.workloads().keys(kind).into_iter().filter(|k| !keys.contains(k)) {
                    self.snapshot.workloads_mut().delete(&key);
                }
                Change::NoNewRoom
            }
            ClusterEvent::NamespacesListed(names) => self.snapshot.namespaces_listed(&names).into(),
            ClusterEvent::PodsRelisted { uids, term } => {
                self.unlisted.remove(&Watch::Pods);
                self.resync_pods(&uids);
                if self.term == Some(term) {
                    info!(term, "pods listed afresh; this replica decides from now on");
                    self.synced_term = Some(term);
                }
                Change::MayFitMore
            }
            ClusterEvent::VolumeObjectApplied(object) => {
                self.snapshot.volumes_mut().apply(object);
                Change::MayFitMore
            }
            ClusterEvent::VolumeObjectDeleted(key) => {
                self.snapshot.volumes_mut().delete(&key);
                Change::MayFitMore
            }
            ClusterEvent::VolumeObjectsListed { kind, keys } => {
                self.unlisted.remove(&Watch::Volumes(kind));
                for key in self.snapshot.volumes().keys(kind).into_iter().filter(|k| !keys.contains(k)) {
                    self.snapshot.volumes_mut().delete(&key);
                }
                Change::MayFitMore
            }
            ClusterEvent::DeviceObjectApplied(object) => self.apply_device_object(object),
            ClusterEvent::DeviceObjectDeleted(key) => {
                self.delete_device_object(&key);
                Change::MayFitMore
            }
            ClusterEvent::DeviceObjectsListed { kind, keys } => {
                self.unlisted.remove(&Watch::Devices(kind));
                let devices = self.snapshot.devices();
                let known: Vec<DeviceObjectKey> = match kind {
                    DeviceKind::Class => devices.class_names().into_iter().map(DeviceObjectKey::Class).collect(),
                    DeviceKind::Slice => devices.slice_names().into_iter().map(DeviceObjectKey::Slice).collect(),
                    DeviceKind::Claim => devices.claim_keys().into_iter().map(DeviceObjectKey::Claim).collect(),
                };
                for key in known.into_iter().filter(|k| !keys.contains(k)) {
                    self.delete_device_object(&key);
                }
                Change::MayFitMore
            }
            ClusterEvent::Invalid { regarding, error } => {
                warn!(%error, "ignoring an object phalanx cannot read");
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
                self.report(Report::Event { regarding, warning: true, reason: "InvalidObject", message: error });
                Change::NoNewRoom
            }
            ClusterEvent::GroupStatus(input) => {
                self.group_statuses.apply(input, now);
                Change::NoNewRoom
            }
            ClusterEvent::Leadership(term) => {
                if term.is_some() && term != self.term {
                    // The previous leader may have left statuses behind.
                    self.group_statuses.mark_all(now);
                }
                self.term = term;
                Change::NoNewRoom
            }
            ClusterEvent::WatchLost(watch) => {
                if self.unlisted.insert(watch) {
                    warn!(?watch, "a watch failed; nothing is decided until it lists again");
                }
                Change::NoNewRoom
            }
        }
    }

    /// Any DRA object may let a waiting pod in: a claim made from its
    /// template, devices published, a claim's devices freed.
    fn apply_device_object(&mut self, object: DeviceObject) -> Change {
        let (kind, namespace, name, compiled) = match object {
            DeviceObject::Class(class) => {
                (DeviceKind::Class, None, class.name.clone(), self.snapshot.devices_mut().apply_class(class))
            }
            DeviceObject::Slice(slice) => {
                self.snapshot.devices_mut().apply_slice(slice);
                return Change::MayFitMore;
            }
            DeviceObject::Claim(claim) => {
                let key = claim.key.clone();
                (DeviceKind::Claim, Some(key.namespace), key.name, self.snapshot.apply_claim(claim))
            }
        };
        if let Err(error) = compiled {
            warn!(%error, kind = kind.kind(), %name, "a selector does not compile");
            let regarding = ObjectRef {
                api_version: Some("resource.k8s.io/v1".into()),
                kind: Some(kind.kind().into()),
                namespace,
                name: Some(name),
                uid: None,
            };
            self.report(Report::Event {
                regarding,
                warning: true,
                reason: "InvalidObject",
                message: error.to_string(),
            });
        }
        Change::MayFitMore
    }

    fn delete_device_object(&mut self, key: &DeviceObjectKey) {
        match key {
            DeviceObjectKey::Class(name) => self.snapshot.devices_mut().delete_class(name),
            DeviceObjectKey::Slice(name) => self.snapshot.devices_mut().delete_slice(name),
            DeviceObjectKey::Claim(key) => self.snapshot.delete_claim(key),
        }
    }

    fn remove_node(&mut self, name: String) {
        self.snapshot.remove_node(&name);
        self.gone_nodes.insert(name.clone());
        self.outbox.push(Action::NodeGone { node: name, gone: true });
    }

    /// Applies a budget. Returns whether it may let a preemption through that
    /// was refused before: it allows more disruptions, selects other pods,
    /// or is gone. A new budget only protects.
    fn set_budget(&mut self, namespace: &str, name: &str, budget: Option<DisruptionBudget>) -> Change {
        let old = self.gangs.budgets().find(|b| b.namespace == namespace && b.name == name).cloned();
        let loosened = match (&old, &budget) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(old), Some(new)) => new.disruptions_allowed > old.disruptions_allowed || new.selector != old.selector,
        };
        self.gangs.set_budget(namespace, name, budget);
        if loosened { Change::MayFitMore } else { Change::NoNewRoom }
    }

    fn apply_pod(&mut self, pod: PodInfo, gated: bool, now: Instant) -> Change {
        if pod.phase.is_finished() {
            // Whether it counts toward its gang comes as `MemberSucceeded`.
            return self.forget_pod(&pod.uid).into();
        }
        if let Some(node) = &pod.node_name {
            // Bound, by us or anyone: its resources are taken on that node.
            self.snapshot.observe_bound(pod.placement(node), pod.gpu_indices.as_deref());
            self.queue.remove(&pod.uid);
            self.reports.forget_pod(&pod.uid);
            return Change::NoNewRoom;
        }
        let ours = self.profiles.contains_key(&pod.scheduler_name);
        if let Some(gang) = &pod.job {
            self.gangs.set_foreign_member(gang, &pod.key.name, !ours && !pod.terminating);
        }
        if pod.terminating || gated || !ours {
            self.queue.remove(&pod.uid);
            return Change::NoNewRoom;
        }
        if self.binding.contains_key(&pod.uid) {
            // Our bind is in flight; its outcome decides what happens next.
            self.binding.insert(pod.uid.clone(), pod);
            return Change::NoNewRoom;
        }
        if self.snapshot.placement(&pod.uid).is_some() {
            // Already placed: this is an older, unbound view of the pod (such
            // as the GPU annotation written just before the bind) arriving
            // after the bind's outcome. Scheduling it again would bind twice.
            return Change::NoNewRoom;
        }
        self.queue.upsert(pod, now);
        Change::NoNewRoom
    }

    /// A gang short of members may have enough once succeeded ones count.
    fn member_succeeded(&mut self, gang: &GangId, uid: &str, now: Instant) {
        if self.gangs.member_succeeded(gang, uid).is_changed() {
            self.queue.wake(&GangKey::Gang(gang.clone()), now);
        }
    }

    fn forget_pod(&mut self, uid: &str) -> Released {
        self.queue.remove(uid);
        self.reports.forget_pod(uid);
        self.binding.remove(uid);
        self.snapshot.remove_pod(uid)
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

    /// Applies a bind's outcome.
    pub fn apply_bind_outcome(&mut self, outcome: BindOutcome, now: Instant) -> Change {
        let Some(pod) = self.binding.remove(&outcome.uid) else {
            // Deleted while binding; already released.
            return Change::NoNewRoom;
        };
        let confirmed = self.snapshot.placement(&outcome.uid).is_some_and(|p| p.state == PlacementState::Bound);
        match outcome.result {
            BindResult::Bound => {
                self.report(Report::Scheduled { key: outcome.key, uid: outcome.uid, node: outcome.node });
                Change::NoNewRoom
            }
            BindResult::PodGone => self.snapshot.forget(&outcome.uid).into(),
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
                    let key = GangKey::of(&pod);
                    self.queue.upsert(pod, now);
                    self.queue.retry_later(&key, now);
                }
                released.into()
            }
        }
    }

    /// Applies an eviction's outcome. An evicted victim gets its Event and
    /// frees its resources once the watch sees it gone; a refused or failed
    /// eviction abandons the preemptor's plan and sends it back to try again
    /// after backoff (with budgets and pods as the watches then show them).
    pub fn apply_eviction_outcome(&mut self, outcome: EvictOutcome, now: Instant) {
        let eviction = self.evicting.remove(&outcome.uid);
        match outcome.result {
            EvictResult::Evicted => {
                let message = eviction.map(|e| e.message).unwrap_or_default();
                let EvictOutcome { key, uid, preemptor, .. } = outcome;
                self.report(Report::Preempted { key, uid, preemptor, message });
            }
            EvictResult::PodGone => debug!(pod = %outcome.key, "victim gone before its eviction"),
            EvictResult::Blocked(why) | EvictResult::Failed(why) | EvictResult::NotSent(why) => {
                info!(pod = %outcome.key, preemptor = %outcome.preemptor, %why, "victim not evicted");
                if let Some(e) = eviction {
                    self.gangs.abandon_preemption(&e.preemptor);
                    self.queue.retry_later(&e.preemptor, now);
                }
            }
        }
    }

    /// The cluster changed so that waiting gangs may fit: they leave the
    /// unschedulable list, and the gangs holding nodes skip their backoff.
    /// Drivers call it after changes (`Change::MayFitMore`) and periodically.
    pub fn retry_waiting(&mut self, now: Instant) {
        self.queue.cluster_changed(now);
        self.gangs.retry_head(&mut self.queue);
    }

    /// What to do next: the actions applying events produced, and at most
    /// one gang's decision (marked by `Action::Attempted`; call again for
    /// the next). Nothing is decided before every watch has listed, nor
    /// while another replica leads.
    pub fn next_actions(&mut self, now: Instant) -> Vec<Action> {
        if self.may_decide()
            && let Some(key) = self.queue.pop(now)
        {
            self.decide(key, now);
        }
        // A standby writes no status: what falls due waits for its term.
        if self.term.is_some() {
            let writes = self.group_statuses.take_due(now);
            self.outbox.extend(writes.into_iter().map(Action::WriteGroupStatus));
        }
        std::mem::take(&mut self.outbox)
    }

    /// How a PodGroup status write ended.
    pub fn apply_status_outcome(&mut self, outcome: StatusOutcome, now: Instant) {
        self.group_statuses.finish(outcome, now);
    }

    /// When a gang in backoff is ready to be tried again, or a PodGroup's
    /// status is due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let status_due = self.group_statuses.next_due().filter(|_| self.term.is_some());
        [self.queue.next_wakeup(), status_due].into_iter().flatten().min()
    }

    fn decide(&mut self, key: GangKey, now: Instant) {
        let gang = gang_name(&key, &self.queue);
        let span = info_span!("schedule", %gang, members = self.queue.member_count(&key));
        let _entered = span.enter();
        let profile = self.queue.members(&key).next().map(|p| p.scheduler_name.clone()).unwrap_or_default();
        let Settled { verdict, placed } =
            self.gangs.decide_and_settle(&key, &self.profiles, &mut self.snapshot, &mut self.queue, now);
        for warning in &verdict.warnings {
            self.report_gang(&key, "GangMembersDisagree", warning.clone(), now);
        }
        let result = match verdict.decision {
            GangDecision::Bind(placement) => {
                self.waiting.remove(&key);
                debug!(members = placement.members.len(), scope = ?placement.scope, "placed");
                let placed_note = format!("{} members placed", placement.members.len());
                for (member, pod) in placed {
                    self.reports.forget_pod(&member.uid);
                    self.outbox.push(Action::Bind {
                        uid: member.uid.clone(),
                        key: member.key,
                        node: member.node,
                        gpus: member.gpu_indices,
                        writes: PreBind { claims: member.claims, volumes: member.volumes },
                    });
                    self.binding.insert(member.uid, pod);
                }
                self.reports.forget_gang(&key);
                self.report_initially_scheduled(&key, ConditionStatus::True, &placed_note, now);
                Attempt::Scheduled
            }
            GangDecision::Wait(message) => {
                debug!(%message, "waiting");
                self.waiting.insert(key.clone(), WaitReason::Members);
                self.report_members(&key, &message, now);
                self.report_gang(&key, "Waiting", message, now);
                Attempt::Waiting
            }
            GangDecision::Preempt { plan, message } => {
                info!(%message, victims = plan.victims.len(), "preempting");
                let victims = plan.victims.len();
                let why = format!("{message} for {gang}");
                for victim in &plan.victims {
                    self.evict(&victim.key, &victim.uid, &key, why.clone());
                }
                let disrupted: BTreeSet<&GangId> = plan.victims.iter().filter_map(|v| v.gang.as_ref()).collect();
                for id in disrupted {
                    let condition = GroupCondition {
                        kind: GroupConditionKind::DisruptionTarget,
                        status: ConditionStatus::True,
                        reason: "PreemptionByScheduler",
                        message: format!("preempted to make room for {gang}"),
                    };
                    self.report_group_condition(id, condition, now);
                }
                // The freed nodes are held for the gang; its members show where they will go.
                for member in plan.placement {
                    self.report(Report::Nominated { key: member.key, uid: member.uid, node: member.node });
                }
                self.waiting.insert(key.clone(), WaitReason::Preempting);
                self.report_gang(&key, "Preempting", message.clone(), now);
                self.report_members(&key, &message, now);
                Attempt::Preempting { victims }
            }
            GangDecision::Unschedulable { message, timed_out, reason } => {
                self.waiting.insert(key.clone(), reason);
                debug!(%message, attempts = self.queue.attempts(&key), "unschedulable");
                let reason = if timed_out.is_some() { "GangTimeout" } else { "FailedScheduling" };
                self.report_gang(&key, reason, message.clone(), now);
                self.report_members(&key, &message, now);
                Attempt::Unschedulable { preemption_tried: verdict.preemption_tried }
            }
            GangDecision::Drop => Attempt::Dropped,
        };
        self.outbox.push(Action::Attempted { gang, profile, result });
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
        self.outbox.push(Action::Evict { uid: uid.to_string(), key: victim.clone(), preemptor: name });
    }

    /// Why a gang waits, or where it runs, from the state as it is at `now`.
    pub fn explain(&mut self, target: &Target, now: Instant) -> Result<GangExplanation, ExplainError> {
        if !self.is_synced() {
            return Err(ExplainError::NotReady);
        }
        let state = SchedulerState {
            profiles: &self.profiles,
            snapshot: &mut self.snapshot,
            queue: &self.queue,
            gangs: &self.gangs,
            now,
        };
        explain_gang(target, state)
    }

    /// Every ElasticQuota namespace's use and borrowing of the resources its quota names.
    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
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
        rows
    }

    /// How many gangs wait, by reason (in `WaitReason::ALL` order), after
    /// dropping what is known about gangs that left the queue.
    pub fn waiting_gangs(&mut self) -> [(WaitReason, usize); WaitReason::ALL.len()] {
        let queue = &self.queue;
        self.waiting.retain(|key, _| queue.member_count(key) > 0);
        self.reports.retain_gangs(|key| queue.member_count(key) > 0);
        let mut counts = WaitReason::ALL.map(|reason| (reason, 0));
        for reason in self.waiting.values() {
            counts[*reason as usize].1 += 1;
        }
        counts
    }

    pub fn queue_lengths(&self) -> QueueLengths {
        self.queue.lengths()
    }

    pub fn binds_in_flight(&self) -> usize {
        self.binding.len()
    }

    /// Read access for drivers that measure (the simulator) and for tests.
    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    /// Every pod waiting in the queue.
    pub fn queued_pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.queue.keys().flat_map(|key| self.queue.members(key))
    }

    /// The pods of one gang waiting in the queue.
    pub fn queued_members(&self, key: &GangKey) -> impl Iterator<Item = &PodInfo> {
        self.queue.members(key)
    }

    pub fn queued_pod_count(&self) -> usize {
        self.queue.pod_count()
    }

    /// Runs `f` on the snapshot as it would be without these pods' placements
    /// (a what-if: the placements are put back exactly).
    pub fn without_pods<T>(&mut self, uids: &[&str], f: impl FnOnce(&ClusterSnapshot) -> T) -> T {
        let taken: Vec<_> = uids.iter().filter_map(|uid| Some((*uid, self.snapshot.take(uid)?))).collect();
        let result = f(&self.snapshot);
        for (uid, placement) in taken {
            self.snapshot.restore(uid, placement);
        }
        result
    }
}

/// How users read a gang's name: "PodGroup ml/llm", "Pod ml/solo".
fn gang_name(key: &GangKey, queue: &SchedulingQueue) -> String {
    match key {
        GangKey::Gang(id) => id.to_string(),
        GangKey::Pod(_) => queue.members(key).next().map(|p| format!("Pod {}", p.key)).unwrap_or_default(),
    }
}
