//! One decision for one gang popped from the queue: is it ready to be tried
//! (its object known and valid, enough members created), where does it go
//! (`gang_placement`), and, when it does not fit, which nodes are held for it
//! so that it is not starved by smaller gangs behind it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::disruption::DisruptionBudget;
use super::framework::Profile;
use super::gang::{GangId, GangKind, GangObject, GangSpec};
use super::gang_placement::{
    GangPlacement, GangRequest, GangUnschedulable, MemberPlacement, RequiredDomain, Scope, nodes_to_hold, place_gang,
    placement_order,
};
use super::pod::PodInfo;
use super::preemption::{PreemptionPlan, PreemptionRules, PreemptionSettings, plan_preemption};
use super::queue::{GangKey, SchedulingQueue};
use super::quota::{QuotaBook, QuotaExceeded};
use super::resources::PODS;
use super::resources::{GPU, Resources};
use super::snapshot::ClusterSnapshot;
use super::snapshot::PlacementState;
use super::update::Update;

/// What to do with the gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GangDecision {
    /// Bind these members; they are reserved in the snapshot already.
    Bind(GangPlacement),
    /// Evict these victims; the gang's placement after their eviction is
    /// proven, and its nodes are held for it (its members are nominated).
    Preempt { plan: PreemptionPlan, message: String },
    /// Cannot be tried until its members or its object change.
    Wait(String),
    /// No placement now; try again when the cluster changes. `timed_out`:
    /// its scheduleTimeoutSeconds passed without a placement.
    Unschedulable { message: String, timed_out: Option<Duration>, reason: WaitReason },
    /// No member names a profile of this scheduler any more.
    Drop,
}

/// Why a gang waits (for messages and the `gangs_waiting` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// Too few members, or its object is missing or invalid.
    Members,
    /// No room in the cluster (preemption found nothing, or may not run).
    Capacity,
    /// Its namespace's quota does not allow it.
    Quota,
    /// Its victims are still terminating.
    Preempting,
}

impl WaitReason {
    /// In declaration order, so `reason as usize` indexes it.
    pub const ALL: [WaitReason; 4] =
        [WaitReason::Members, WaitReason::Capacity, WaitReason::Quota, WaitReason::Preempting];

    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Members => "members",
            WaitReason::Capacity => "capacity",
            WaitReason::Quota => "quota",
            WaitReason::Preempting => "preempting",
        }
    }
}

/// Why no preemption happened.
struct PreemptionSkipped {
    why: String,
    reason: WaitReason,
    /// Victim selection ran (and found no set).
    searched: bool,
}

/// The decision plus what users should be told about the gang's object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangVerdict {
    pub decision: GangDecision,
    /// Problems with the gang's members (conflicting priorities or schedulers).
    pub warnings: Vec<String>,
    /// Victim selection ran and found no set.
    pub preemption_tried: bool,
    /// The facts behind an unschedulable decision, for `phalanx explain`.
    pub detail: WaitDetail,
}

/// What explaining a verdict needs beyond its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WaitDetail {
    /// The quota the gang would exceed.
    pub quota: Option<QuotaExceeded>,
    /// Why the gang found no placement.
    pub placement: Option<GangUnschedulable>,
    /// Why no preemption happened: not attempted, or nothing found.
    pub no_preemption: Option<String>,
}

impl GangVerdict {
    fn plain(decision: GangDecision, warnings: Vec<String>) -> Self {
        Self { decision, warnings, preemption_tried: false, detail: WaitDetail::default() }
    }
}

/// A decision with the queue already moved as it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub verdict: GangVerdict,
    /// For a `Bind`: each placed member with its pod, taken out of the queue.
    pub placed: Vec<(MemberPlacement, PodInfo)>,
}

/// Nodes held for the gang at the head of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    owner: GangKey,
    rank: (i32, i64),
    nodes: HashSet<String>,
}

#[derive(Debug, Default, Clone)]
pub struct GangScheduler {
    /// Gang objects (PodGroups, PyTorchJobs) as last seen.
    objects: HashMap<GangId, GangObject>,
    /// Kinds of gang object the API server serves (and phalanx watches).
    served: HashSet<GangKind>,
    /// Members of our gangs that name another scheduler: gang -> pod names.
    foreign: HashMap<GangId, BTreeSet<String>>,
    /// Nodes held for the first gangs in line that found no room, highest rank first.
    holds: Vec<Hold>,
    quotas: QuotaBook,
    preemption: PreemptionSettings,
    /// Gangs that evicted victims, with the victims not yet gone: they do not
    /// preempt again meanwhile.
    preempting: HashMap<GangKey, HashSet<String>>,
    /// PodDisruptionBudgets by (namespace, name).
    budgets: BTreeMap<(String, String), DisruptionBudget>,
    /// UIDs of members that succeeded, by gang. They did their part, so they
    /// count toward minMember: a gang whose first members ran and finished
    /// before the rest were placed would otherwise wait for good.
    succeeded: HashMap<GangId, HashSet<String>>,
}

/// Gangs at the head of the line that hold nodes: enough that the second
/// and third in line are not overtaken by small gangs, few enough that
/// backfill still has room.
const MAX_HOLDS: usize = 4;

/// Higher priority first, then older.
pub fn ranks_above(a: (i32, i64), b: (i32, i64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl GangScheduler {
    pub fn new(served: HashSet<GangKind>, preemption: PreemptionSettings) -> Self {
        Self { served, preemption, ..Self::default() }
    }

    /// A gang object was added or changed (`None`: deleted).
    pub fn set_object(&mut self, id: GangId, object: Option<GangObject>) -> Update {
        let changed = self.objects.get(&id) != object.as_ref();
        match object {
            Some(o) => self.objects.insert(id, o),
            None => {
                self.succeeded.retain(|gang, _| gang.object() != id);
                self.objects.remove(&id)
            }
        };
        changed.into()
    }

    /// After a (re-)list of one kind: objects not listed are gone.
    pub fn objects_listed(&mut self, kind: GangKind, listed: &HashSet<GangId>) -> Vec<GangId> {
        let gone: Vec<GangId> =
            self.objects.keys().filter(|id| id.kind == kind && !listed.contains(*id)).cloned().collect();
        for id in &gone {
            self.objects.remove(id);
        }
        self.succeeded.retain(|gang, _| !gone.contains(&gang.object()));
        gone
    }

    /// The object that sizes the gang `id` (a group's is its set's).
    pub fn object(&self, id: &GangId) -> Option<&GangObject> {
        match id.group {
            None => self.objects.get(id),
            Some(_) => self.objects.get(&id.object()),
        }
    }

    /// A pending member of one of our gangs that names another scheduler.
    pub fn set_foreign_member(&mut self, gang: &GangId, pod: &str, foreign: bool) {
        let names = self.foreign.entry(gang.clone()).or_default();
        if foreign {
            names.insert(pod.to_string());
        } else {
            names.remove(pod);
        }
        if names.is_empty() {
            self.foreign.remove(gang);
        }
    }

    /// A member of `gang` succeeded. Whether it is news.
    pub fn member_succeeded(&mut self, gang: &GangId, uid: &str) -> Update {
        self.succeeded.entry(gang.clone()).or_default().insert(uid.to_string()).into()
    }

    /// How many members of `gang` succeeded.
    pub fn succeeded_members(&self, gang: &GangId) -> usize {
        self.succeeded.get(gang).map_or(0, HashSet::len)
    }

    pub fn served_kinds(&self) -> impl Iterator<Item = GangKind> + '_ {
        self.served.iter().copied()
    }

    pub fn quotas(&self) -> &QuotaBook {
        &self.quotas
    }

    /// Quotas change through here (the shell applies watch events).
    pub fn quotas_mut(&mut self) -> &mut QuotaBook {
        &mut self.quotas
    }

    /// A PodDisruptionBudget added or changed (`None`: deleted).
    pub fn set_budget(&mut self, namespace: &str, name: &str, budget: Option<DisruptionBudget>) {
        let key = (namespace.to_string(), name.to_string());
        match budget {
            Some(b) => self.budgets.insert(key, b),
            None => self.budgets.remove(&key),
        };
    }

    /// After a (re-)list: budgets not listed are gone.
    pub fn budgets_listed(&mut self, listed: &[(String, String)]) {
        self.budgets.retain(|key, _| listed.contains(key));
    }

    pub fn budgets(&self) -> impl Iterator<Item = &DisruptionBudget> {
        self.budgets.values()
    }

    /// An eviction of this gang's plan was refused (a disruption budget, an
    /// error): the gang may plan again at its next attempt.
    pub fn abandon_preemption(&mut self, key: &GangKey) {
        self.preempting.remove(key);
    }

    /// The gangs holding nodes, highest rank first, with their nodes.
    pub fn holds(&self) -> impl Iterator<Item = (&GangKey, &HashSet<String>)> {
        self.holds.iter().map(|h| (&h.owner, &h.nodes))
    }

    fn hold_of(&self, key: &GangKey) -> Option<&Hold> {
        self.holds.iter().find(|h| h.owner == *key)
    }

    /// Nodes held for gangs that rank at or above one of `rank` (not `key` itself).
    fn held_against(&self, key: &GangKey, rank: (i32, i64)) -> HashSet<String> {
        self.holds
            .iter()
            .filter(|h| h.owner != *key && !ranks_above(rank, h.rank))
            .flat_map(|h| h.nodes.iter().cloned())
            .collect()
    }

    fn release_hold(&mut self, key: &GangKey) {
        self.holds.retain(|h| h.owner != *key);
    }

    /// Holds nodes for `key`, among the first `MAX_HOLDS` gangs in line.
    fn set_hold(&mut self, key: &GangKey, rank: (i32, i64), nodes: HashSet<String>) {
        self.release_hold(key);
        if nodes.is_empty() {
            return;
        }
        let at = self.holds.iter().position(|h| ranks_above(rank, h.rank)).unwrap_or(self.holds.len());
        self.holds.insert(at, Hold { owner: key.clone(), rank, nodes });
        self.holds.truncate(MAX_HOLDS);
    }

    /// Decides for the gang `key` just popped from `queue`, then moves its
    /// queue entry as the decision implies: placed members leave the queue,
    /// members beyond minMember without room wait for a cluster change, a
    /// gang short of members waits for them, a timed-out one starts a new run
    /// of attempts after backoff. The scheduler's loop and the simulator both
    /// drive the core through here, so they move the queue the same way.
    pub fn decide_and_settle(
        &mut self,
        key: &GangKey,
        profiles: &HashMap<String, Profile>,
        snapshot: &mut ClusterSnapshot,
        queue: &mut SchedulingQueue,
        now: Instant,
    ) -> Settled {
        // Before the decision: a placement releases the gang's hold.
        let was_head = self.hold_of(key).is_some();
        let verdict = self.decide(key, profiles, snapshot, queue, now);
        let mut placed = Vec::new();
        match &verdict.decision {
            GangDecision::Bind(placement) => {
                for member in &placement.members {
                    if let Some(pod) = queue.remove(&member.uid) {
                        placed.push((member.clone(), pod));
                    }
                }
                if queue.member_count(key) > 0 {
                    // Members beyond minMember that found no room yet.
                    queue.mark_unschedulable(key, now);
                }
                if was_head {
                    // The next gang in line is tried now, before smaller ones
                    // coming out of backoff take what it needs.
                    self.retry_head(queue);
                }
            }
            GangDecision::Wait(_) => queue.wait(key),
            GangDecision::Preempt { .. } => queue.mark_unschedulable(key, now),
            GangDecision::Unschedulable { timed_out: Some(_), .. } => {
                queue.restart_clock(key);
                queue.retry_later(key, now);
            }
            GangDecision::Unschedulable { timed_out: None, .. } => queue.mark_unschedulable(key, now),
            GangDecision::Drop => {
                for uid in queue.members(key).map(|p| p.uid.clone()).collect::<Vec<_>>() {
                    queue.remove(&uid);
                }
            }
        }
        Settled { verdict, placed }
    }

    /// The gangs at the head of the line skip their backoff when capacity
    /// may have freed: those holding nodes, else the highest-ranked waiting one.
    pub fn retry_head(&self, queue: &mut SchedulingQueue) {
        let mut heads: Vec<GangKey> = self.holds().map(|(owner, _)| owner.clone()).collect();
        if heads.is_empty() {
            heads.extend(queue.head_waiting().cloned());
        }
        for head in heads {
            queue.retry_now(&head);
        }
    }

    /// Decides for the gang `key` just popped from `queue`.
    pub fn decide(
        &mut self,
        key: &GangKey,
        profiles: &HashMap<String, Profile>,
        snapshot: &mut ClusterSnapshot,
        queue: &SchedulingQueue,
        now: Instant,
    ) -> GangVerdict {
        self.holds.retain(|h| queue.rank(&h.owner).is_some());
        let members: Vec<&PodInfo> = queue.members(key).collect();
        let Some(profile) = members.iter().find_map(|m| profiles.get(&m.scheduler_name)) else {
            return GangVerdict::plain(GangDecision::Drop, vec![]);
        };
        let warnings = self.member_warnings(key, &members, &profile.scheduler_name);
        let spec = match self.spec_of(key) {
            Ok(spec) => spec,
            Err(why) => return GangVerdict::plain(GangDecision::Wait(why), warnings),
        };
        // Members that succeeded ran with the gang: they count as placed,
        // unless minMember of them did (the gang ran whole; pods that come
        // now are a new run, and need minMember of their own).
        let placed = key.gang().map_or(0, |g| self.placed_members(g, spec.min_member, snapshot));
        if let Some(why) = self.too_few(key, &spec, placed, members.len(), snapshot) {
            return GangVerdict::plain(GangDecision::Wait(why), warnings);
        }
        let rank = queue.rank(key).unwrap_or_default();
        let held = self.held_against(key, rank);
        let timed_out = spec
            .schedule_timeout
            .filter(|limit| queue.trying_since(key).is_some_and(|since| now.duration_since(since) >= *limit));
        let unschedulable = |message: String, reason: WaitReason| {
            let message = match timed_out {
                Some(limit) => {
                    format!("gang found no placement within scheduleTimeoutSeconds ({}s): {message}", limit.as_secs())
                }
                None => message,
            };
            GangDecision::Unschedulable { message, timed_out, reason }
        };
        let namespace = members[0].key.namespace.clone();
        let required = spec.min_member.saturating_sub(placed);
        let within = spec.required_domain.as_ref().map(|label| RequiredDomain {
            level: snapshot.level_of_label(label),
            label: label.clone(),
        });
        let mut request = GangRequest { gang: key.gang(), members, required, within };
        // Quotas hold for the whole gang before any member binds: all its
        // pending members if the quota allows, else the required ones only.
        let ordered = placement_order(&request.members);
        let need_all = total_requests(&ordered, snapshot);
        let need_required = total_requests(&ordered[..required.min(ordered.len())], snapshot);
        // What partly placed gangs still need counts as used: their quota was
        // granted for the whole gang (a leader may have died mid-bind), and a
        // gang that cannot complete holds its bound members' GPUs for nothing.
        let mut used = snapshot.namespace_usage(&namespace).cloned().unwrap_or_default();
        used.add(&self.owed_to_partly_placed(key, &namespace, snapshot, queue));
        let usage_of = |ns: &str| if ns == namespace { Some(&used) } else { snapshot.namespace_usage(ns) };
        if self.quotas.check(&namespace, &need_all, usage_of).is_err() {
            match self.quotas.check(&namespace, &need_required, usage_of) {
                Ok(()) => request.members = ordered[..required.min(ordered.len())].to_vec(),
                Err(exceeded) => {
                    let decision = unschedulable(exceeded.to_string(), WaitReason::Quota);
                    let detail = WaitDetail { quota: Some(exceeded), ..WaitDetail::default() };
                    return GangVerdict { detail, ..GangVerdict::plain(decision, warnings) };
                }
            }
        }
        match place_gang(profile, &request, snapshot, &held) {
            Ok(placement) if !placement.members.is_empty() => {
                self.release_hold(key);
                self.preempting.remove(key);
                GangVerdict::plain(GangDecision::Bind(placement), warnings)
            }
            Ok(_) => {
                let message = "all required members are placed; no room for more members".to_string();
                GangVerdict::plain(unschedulable(message, WaitReason::Capacity), warnings)
            }
            Err(failure) => {
                let mut message = failure.to_string();
                let mut reason = WaitReason::Capacity;
                let mut searched = false;
                let mut no_preemption = None;
                // A gang behind one that holds nodes does not preempt: its plan
                // could count on the held nodes, and the hold is not its to take.
                let behind_a_hold = self.holds.iter().any(|h| h.owner != *key && !ranks_above(rank, h.rank));
                if required > 0 && behind_a_hold {
                    let why = "not attempted while a gang ahead waits for room".to_string();
                    message = format!("{message} preemption: {why}");
                    no_preemption = Some(why);
                } else if required > 0 {
                    match self.try_preemption(key, profile, &request, rank.0, &need_required, snapshot) {
                        Ok(plan) => {
                            let nodes: HashSet<String> = plan.placement.iter().map(|m| m.node.clone()).collect();
                            self.holds.retain(|h| h.owner != *key);
                            self.holds.insert(0, Hold { owner: key.clone(), rank, nodes });
                            self.preempting.insert(key.clone(), plan.victims.iter().map(|v| v.uid.clone()).collect());
                            let message = describe_preemption(&plan, snapshot);
                            let decision = GangDecision::Preempt { plan, message };
                            return GangVerdict::plain(decision, warnings);
                        }
                        Err(skipped) => {
                            message = format!("{message} preemption: {}", skipped.why);
                            reason = skipped.reason;
                            searched = skipped.searched;
                            no_preemption = Some(skipped.why);
                        }
                    }
                }
                let in_line = self.holds.len() < MAX_HOLDS
                    || self.hold_of(key).is_some()
                    || self.holds.last().is_some_and(|last| ranks_above(rank, last.rank));
                if required > 0 && reason == WaitReason::Capacity && in_line {
                    let before = self.hold_of(key).map(|h| h.nodes.clone()).unwrap_or_default();
                    let nodes = nodes_to_hold(profile, &request, snapshot, &before, &held);
                    self.set_hold(key, rank, nodes);
                }
                let detail = WaitDetail { quota: None, placement: Some(failure), no_preemption };
                GangVerdict { decision: unschedulable(message, reason), warnings, preemption_tried: searched, detail }
            }
        }
    }

    /// Members of the gang running or done with it: placed (bound or being
    /// bound) and, while fewer than minMember did, succeeded.
    fn placed_members(&self, gang: &GangId, min_member: usize, snapshot: &ClusterSnapshot) -> usize {
        let succeeded = Some(self.succeeded_members(gang)).filter(|n| *n < min_member).unwrap_or(0);
        snapshot.job_nodes(gang).map_or(0, |nodes| nodes.values().sum::<usize>()) + succeeded
    }

    /// What the other gangs of `namespace` that are placed in part still
    /// need to reach minMember, where a quota limits the namespace.
    fn owed_to_partly_placed(
        &self,
        key: &GangKey,
        namespace: &str,
        snapshot: &ClusterSnapshot,
        queue: &SchedulingQueue,
    ) -> Resources {
        let mut owed = Resources::new();
        if !self.quotas.limits_namespace(namespace) {
            return owed;
        }
        for other in queue.keys().filter(|k| *k != key) {
            let Some(gang) = other.gang().filter(|g| g.namespace == namespace) else { continue };
            let Some(GangObject::Valid(spec)) = self.object(gang) else { continue };
            let placed = self.placed_members(gang, spec.min_member, snapshot);
            if placed == 0 || placed >= spec.min_member {
                continue;
            }
            let members: Vec<&PodInfo> = queue.members(other).collect();
            let ordered = placement_order(&members);
            owed.add(&total_requests(&ordered[..(spec.min_member - placed).min(ordered.len())], snapshot));
        }
        owed
    }

    /// A victim set whose eviction lets the gang fit, or why there is none
    /// (and whether that is because earlier victims are still terminating).
    fn try_preemption(
        &mut self,
        key: &GangKey,
        profile: &Profile,
        request: &GangRequest<'_>,
        priority: i32,
        need: &Resources,
        snapshot: &mut ClusterSnapshot,
    ) -> Result<PreemptionPlan, PreemptionSkipped> {
        let skipped = |why: String, reason: WaitReason, searched: bool| PreemptionSkipped { why, reason, searched };
        if let Some(victims) = self.preempting.get_mut(key) {
            // A victim's DRA devices are free only once the controller manager
            // releases its claims: evicting more meanwhile would over-preempt.
            victims.retain(|uid| {
                snapshot.placement(uid).is_some_and(|p| p.state == PlacementState::Bound)
                    || snapshot.devices().holds_devices_for(uid)
            });
            if !victims.is_empty() {
                let claims = victims.iter().any(|uid| snapshot.devices().holds_devices_for(uid));
                let and_claims = if claims { " and their ResourceClaims to be released" } else { "" };
                let why = format!("waiting for {} preempted pods to terminate{and_claims}", victims.len());
                return Err(skipped(why, WaitReason::Preempting, false));
            }
            self.preempting.remove(key);
        }
        if !self.preemption.enabled {
            return Err(skipped("disabled".into(), WaitReason::Capacity, false));
        }
        if request.members.iter().any(|m| m.preempt_never) {
            return Err(skipped("not attempted, preemptionPolicy is Never".into(), WaitReason::Capacity, false));
        }
        let namespace = request.members.first().map(|m| m.key.namespace.as_str()).unwrap_or_default();
        let empty = Resources::new();
        let used = snapshot.namespace_usage(namespace).unwrap_or(&empty);
        // Below its min even with this gang placed: it may take back what others borrow.
        let reclaims = self.quotas.elastic(namespace).is_some()
            && self.quotas.below_min(namespace, GPU, used) >= need.get(GPU)
            && need.get(GPU) > 0;
        let reclaimable: HashMap<String, i64> = if reclaims {
            self.quotas
                .elastic_quotas()
                .filter(|q| q.namespace != namespace)
                .map(|q| {
                    let used = snapshot.namespace_usage(&q.namespace).unwrap_or(&empty);
                    (q.namespace.clone(), self.quotas.borrowed(&q.namespace, GPU, used))
                })
                .collect()
        } else {
            HashMap::new()
        };
        let min_member = |id: &GangId| match self.object(id) {
            Some(GangObject::Valid(spec)) => Some(spec.min_member),
            _ => None,
        };
        let rules = PreemptionRules {
            priority,
            namespace,
            reclaimable,
            min_member: &min_member,
            budgets: self.budgets.values().collect(),
            allow_budget_violation: self.preemption.allow_pod_disruption_budget_violation,
        };
        plan_preemption(profile, request, snapshot, &rules).ok_or_else(|| {
            skipped("no set of lower-priority pods whose eviction makes room".into(), WaitReason::Capacity, true)
        })
    }

    /// The gang's size and timeout, or why it cannot be tried.
    fn spec_of(&self, key: &GangKey) -> Result<GangSpec, String> {
        let Some(id) = key.gang() else { return Ok(GangSpec::of_size(1)) };
        if !self.served.contains(&id.kind) {
            // Upstream PodGroups are read in either version.
            let api = match id.kind {
                GangKind::UpstreamPodGroup => "scheduling.k8s.io/v1beta1 or v1alpha2",
                kind => kind.api_version(),
            };
            let kind = id.kind.object_kind();
            return Err(format!(
                "waiting for {id}: the API server does not serve {api} {kind}s, so the gang's size is unknown"
            ));
        }
        match self.object(id) {
            Some(GangObject::Valid(spec)) => Ok(spec.clone()),
            Some(GangObject::Invalid(invalid)) => {
                Err(format!("waiting for a valid {}: {invalid}", id.kind.object_kind()))
            }
            None => Err(format!("waiting for {}, which the pods name but which does not exist", id.object())),
        }
    }

    /// Why the gang has too few members to be tried, if it has.
    fn too_few(
        &self,
        key: &GangKey,
        spec: &GangSpec,
        placed: usize,
        pending: usize,
        snapshot: &ClusterSnapshot,
    ) -> Option<String> {
        let id = key.gang()?;
        let created = placed + pending;
        let mut problems = Vec::new();
        if let Some(max) = spec.max_member.filter(|max| spec.min_member > *max) {
            problems.push(format!("minMember {} is more than the {max} pods its job creates", spec.min_member));
        }
        if created >= spec.min_member && problems.is_empty() {
            return None;
        }
        // Only for a gang that waits anyway: the sum is over every node.
        let node_room: usize = snapshot.nodes().map(|(spec, _)| spec.allocatable.get(PODS).max(0) as usize).sum();
        if spec.min_member > node_room && snapshot.node_count() > 0 {
            problems
                .push(format!("minMember {} is more pods than all nodes together hold ({node_room})", spec.min_member));
        }
        let mut message = format!("waiting for members of {id}: {created} of {} members created", spec.min_member);
        for p in problems {
            message.push_str("; ");
            message.push_str(&p);
        }
        Some(message)
    }

    /// Members that disagree on priority or scheduler.
    fn member_warnings(&self, key: &GangKey, members: &[&PodInfo], profile: &str) -> Vec<String> {
        let Some(id) = key.gang() else { return vec![] };
        let mut warnings = Vec::new();
        let priorities: BTreeSet<i32> = members.iter().map(|m| m.priority).collect();
        if priorities.len() > 1 {
            let top = priorities.last().copied().unwrap_or_default();
            warnings.push(format!(
                "members of {id} disagree on spec.priority ({}); the gang is ranked at {top}, its highest",
                priorities.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        let schedulers: BTreeSet<&str> = members.iter().map(|m| m.scheduler_name.as_str()).collect();
        if schedulers.len() > 1 {
            warnings.push(format!(
                "members of {id} name different schedulers in spec.schedulerName ({}); the gang is placed by {profile}",
                schedulers.iter().copied().collect::<Vec<_>>().join(", "),
            ));
        }
        if let Some(foreign) = self.foreign.get(id) {
            warnings.push(format!(
                "members of {id} name another scheduler in spec.schedulerName ({}); phalanx does not count them",
                foreign.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        warnings
    }
}

/// What the pods of a gang request together.
/// What the members count as in quotas: their requests and their claims' devices.
fn total_requests(members: &[&PodInfo], snapshot: &ClusterSnapshot) -> Resources {
    let mut total = snapshot.devices().pending_charges(members);
    for m in members {
        total.add(&m.requests);
    }
    total
}

/// "preempting 4 pods of 2 gangs (priority up to 10, 32 GPUs) in block rack-1"
fn describe_preemption(plan: &PreemptionPlan, snapshot: &ClusterSnapshot) -> String {
    let gangs: HashSet<String> =
        plan.victims.iter().map(|v| v.gang.as_ref().map_or_else(|| v.key.to_string(), |g| g.to_string())).collect();
    let place = match plan.scope {
        Scope::Domain { level, id } => {
            format!(" in {} {}", snapshot.settings().levels.levels[level].name, snapshot.domain_index().describe(id))
        }
        Scope::Cluster => String::new(),
    };
    format!(
        "preempting {} pods of {} gangs (priority up to {}, {} GPUs){place} to make room",
        plan.victims.len(),
        gangs.len(),
        plan.cost.top_priority,
        plan.cost.gpus
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::GangObject;
    use crate::plugins::default_profile;
    use crate::queue::BackoffPolicy;
    use crate::testing::{gpu_node, gpu_pod};

    fn setup(nodes: usize) -> (GangScheduler, HashMap<String, Profile>, ClusterSnapshot, SchedulingQueue) {
        let mut snapshot = ClusterSnapshot::new();
        for n in 0..nodes {
            snapshot.upsert_node(gpu_node(&format!("n{n}"), 8));
        }
        let profiles = HashMap::from([("phalanx".to_string(), default_profile("phalanx"))]);
        let queue = SchedulingQueue::new(BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO });
        (GangScheduler::new(HashSet::from([GangKind::PodGroup]), Default::default()), profiles, snapshot, queue)
    }

    fn add_gang(g: &mut GangScheduler, q: &mut SchedulingQueue, name: &str, pods: usize, created: i64) -> GangKey {
        let id = GangId::new(GangKind::PodGroup, "default", name);
        g.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(pods))));
        for i in 0..pods {
            let mut p = gpu_pod(&format!("{name}-{i}"), 8);
            p.job = Some(id.clone());
            p.created = created;
            q.upsert(p, Instant::now());
        }
        GangKey::Gang(id)
    }

    #[test]
    fn a_big_gang_is_not_starved_by_small_ones_behind_it() {
        let (mut g, profiles, mut s, mut q) = setup(4);
        // Three nodes busy; a 4-node gang waits, then small gangs arrive.
        for n in 0..3 {
            s.observe_bound(gpu_pod(&format!("busy{n}"), 8).placement(&format!("n{n}")), None);
        }
        let big = add_gang(&mut g, &mut q, "big", 4, 0);
        let now = Instant::now();
        assert_eq!(q.pop(now), Some(big.clone()));
        let verdict = g.decide(&big, &profiles, &mut s, &q, now);
        assert!(matches!(verdict.decision, GangDecision::Unschedulable { .. }));
        q.mark_unschedulable(&big, now);
        assert_eq!(g.holds().next().unwrap().1.len(), 4);
        // A small gang would fit on the free node, but that node is held.
        let small = add_gang(&mut g, &mut q, "small", 1, 1);
        assert_eq!(q.pop(now), Some(small.clone()));
        let verdict = g.decide(&small, &profiles, &mut s, &q, now);
        let GangDecision::Unschedulable { message, .. } = verdict.decision else { panic!("{verdict:?}") };
        assert!(message.contains("held for a gang waiting ahead"), "{message}");
        // The busy pods finish: the big gang gets all four nodes.
        for n in 0..3 {
            s.release(&format!("uid-busy{n}"));
        }
        q.cluster_changed(now);
        assert_eq!(q.pop(now), Some(big.clone()), "the big gang is still first");
        let GangDecision::Bind(placement) = g.decide(&big, &profiles, &mut s, &q, now).decision else { panic!() };
        assert_eq!(placement.members.len(), 4);
        assert!(g.holds().next().is_none(), "the hold ends with the placement");
    }

    #[test]
    fn a_preemptor_does_not_preempt_again_while_its_victims_terminate() {
        let (mut g, profiles, mut s, mut q) = setup(1);
        let mut low = gpu_pod("low", 8);
        low.priority = 1;
        s.observe_bound(low.placement("n0"), None);
        let key = add_gang(&mut g, &mut q, "high", 1, 0);
        let mut member = q.members(&key).next().unwrap().clone();
        member.priority = 100;
        q.upsert(member, Instant::now());
        let now = Instant::now();
        q.pop(now);
        let GangDecision::Preempt { plan, .. } = g.decide(&key, &profiles, &mut s, &q, now).decision else { panic!() };
        assert_eq!(plan.victims.len(), 1);
        assert_eq!(plan.placement[0].node, "n0", "the freed node is nominated");
        assert_eq!(g.holds().next().map(|(owner, _)| owner), Some(&key), "and held for the preemptor");
        q.mark_unschedulable(&key, now);
        q.cluster_changed(now);
        q.pop(now + Duration::from_secs(1));
        // The victim is still terminating (still placed): no second preemption.
        let verdict = g.decide(&key, &profiles, &mut s, &q, now);
        let GangDecision::Unschedulable { message, reason, .. } = verdict.decision else { panic!() };
        assert_eq!(reason, WaitReason::Preempting);
        assert!(message.contains("waiting for 1 preempted pods to terminate"), "{message}");
        // Once it is gone, the gang binds where it was nominated.
        s.release("uid-low");
        q.mark_unschedulable(&key, now);
        q.cluster_changed(now);
        q.pop(now + Duration::from_secs(2));
        let GangDecision::Bind(placement) = g.decide(&key, &profiles, &mut s, &q, now).decision else { panic!() };
        assert_eq!(placement.members[0].node, "n0");
    }

    #[test]
    fn the_second_gang_in_line_holds_other_nodes_so_small_gangs_do_not_overtake_it() {
        let (mut g, profiles, mut s, mut q) = setup(4);
        for n in 0..4 {
            s.observe_bound(gpu_pod(&format!("busy{n}"), 8).placement(&format!("n{n}")), None);
        }
        let now = Instant::now();
        let first = add_gang(&mut g, &mut q, "first", 2, 0);
        let second = add_gang(&mut g, &mut q, "second", 2, 1);
        for key in [&first, &second] {
            assert_eq!(q.pop(now).as_ref(), Some(key));
            assert!(matches!(g.decide(key, &profiles, &mut s, &q, now).decision, GangDecision::Unschedulable { .. }));
            q.mark_unschedulable(key, now);
        }
        let holds: Vec<(GangKey, HashSet<String>)> = g.holds().map(|(k, n)| (k.clone(), n.clone())).collect();
        assert_eq!(holds.len(), 2);
        assert_eq!((&holds[0].0, &holds[1].0), (&first, &second), "in rank order");
        assert!(holds[0].1.is_disjoint(&holds[1].1), "{holds:?}");
        // A node held for the second gang frees up: a small gang may not take it.
        let freed = holds[1].1.iter().next().unwrap().clone();
        let busy = format!("uid-busy{}", &freed[1..]);
        s.release(&busy);
        let small = add_gang(&mut g, &mut q, "small", 1, 2);
        q.pop(now);
        let GangDecision::Unschedulable { message, .. } = g.decide(&small, &profiles, &mut s, &q, now).decision else {
            panic!()
        };
        assert!(message.contains("held for a gang waiting ahead"), "{message}");
    }

    #[test]
    fn a_timeout_is_reported_once_the_gang_has_tried_for_long_enough() {
        let (mut g, profiles, mut s, mut q) = setup(1);
        let id = GangId::new(GangKind::PodGroup, "default", "t");
        let spec = GangSpec { schedule_timeout: Some(Duration::from_secs(5)), ..GangSpec::of_size(2) };
        g.set_object(id.clone(), Some(GangObject::Valid(spec)));
        for i in 0..2 {
            let mut p = gpu_pod(&format!("t-{i}"), 8);
            p.job = Some(id.clone());
            q.upsert(p, Instant::now());
        }
        let key = GangKey::Gang(id);
        let t0 = Instant::now();
        q.pop(t0);
        let GangDecision::Unschedulable { timed_out, .. } = g.decide(&key, &profiles, &mut s, &q, t0).decision else {
            panic!()
        };
        assert_eq!(timed_out, None);
        q.mark_unschedulable(&key, t0);
        q.cluster_changed(t0);
        q.pop(t0 + Duration::from_secs(6));
        let later = t0 + Duration::from_secs(6);
        let GangDecision::Unschedulable { timed_out, message, .. } =
            g.decide(&key, &profiles, &mut s, &q, later).decision
        else {
            panic!()
        };
        assert_eq!(timed_out, Some(Duration::from_secs(5)));
        assert!(message.starts_with("gang found no placement within scheduleTimeoutSeconds (5s)"), "{message}");
    }

    #[test]
    fn members_that_disagree_are_warned_about() {
        let (mut g, profiles, mut s, mut q) = setup(2);
        let key = add_gang(&mut g, &mut q, "mixed", 2, 0);
        let mut high = q.members(&key).next().unwrap().clone();
        high.priority = 1000;
        q.upsert(high, Instant::now());
        g.set_foreign_member(key.gang().unwrap(), "stray", true);
        q.pop(Instant::now());
        let verdict = g.decide(&key, &profiles, &mut s, &q, Instant::now());
        assert!(matches!(verdict.decision, GangDecision::Bind(_)));
        assert_eq!(verdict.warnings.len(), 2, "{:?}", verdict.warnings);
        assert!(verdict.warnings[0].contains("spec.priority (0, 1000)"));
        assert!(verdict.warnings[1].contains("stray"));
    }

    #[test]
    fn a_gang_kind_the_api_server_does_not_serve_waits_with_a_reason() {
        let (mut g, profiles, mut s, mut q) = setup(1);
        let mut p = gpu_pod("w0", 1);
        p.job = Some(GangId::new(GangKind::UpstreamPodGroup, "default", "up"));
        q.upsert(p, Instant::now());
        let key = q.pop(Instant::now()).unwrap();
        let GangDecision::Wait(message) = g.decide(&key, &profiles, &mut s, &q, Instant::now()).decision else {
            panic!()
        };
        assert!(message.contains("does not serve scheduling.k8s.io/v1beta1 or v1alpha2 PodGroups"), "{message}");
    }

    #[test]
    fn an_impossible_min_member_says_so() {
        let (mut g, profiles, mut s, mut q) = setup(1);
        let id = GangId::new(GangKind::PodGroup, "default", "huge");
        g.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(1_000_000))));
        let mut p = gpu_pod("huge-0", 1);
        p.job = Some(id.clone());
        q.upsert(p, Instant::now());
        let key = GangKey::Gang(id);
        q.pop(Instant::now());
        let GangDecision::Wait(message) = g.decide(&key, &profiles, &mut s, &q, Instant::now()).decision else {
            panic!()
        };
        assert!(message.contains("1 of 1000000 members created"), "{message}");
        assert!(message.contains("more pods than all nodes together hold (110)"), "{message}");
    }
}
