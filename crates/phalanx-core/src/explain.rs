//! `phalanx explain NAMESPACE/NAME`: what a gang waits for, or where it runs.
//!
//! One pure function builds a [`GangExplanation`] from the scheduler's state
//! (snapshot, queue, gang scheduler with its quotas, holds and budgets) and
//! one renderer turns it into text, so the scheduler's `/explain` endpoint and
//! the CLI (which rebuilds the same state from the API server) say the same.
//! The verdict is the gang scheduler's own: `decide` runs as a what-if on a
//! copy of the gang scheduler, and any placement it assumes is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write};
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::framework::Profile;
use crate::gang::{GangId, GangKind, GangObject};
use crate::gang_placement::{GangUnschedulable, could_ever_take, placement_order};
use crate::gang_scheduler::{GangDecision, GangScheduler, GangVerdict, WaitReason, ranks_above};
use crate::pod::{PodInfo, PodKey};
use crate::queue::{GangKey, SchedulingQueue};
use crate::resources::{GPU, Resources};
use crate::snapshot::{ClusterSnapshot, PlacementState};

/// What a user asks about: `NAMESPACE/NAME` (a pod, else a PodGroup, else a
/// PyTorchJob of that name), or `NAMESPACE/KIND/NAME` when names collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A pod, else a gang object of that name.
    Any,
    Pod,
    Gang(GangKind),
}

/// The `KIND` words of `NAMESPACE/KIND/NAME`.
const KIND_WORDS: [(&str, TargetKind); 6] = [
    ("pod", TargetKind::Pod),
    ("podgroup", TargetKind::Gang(GangKind::PodGroup)),
    ("pytorchjob", TargetKind::Gang(GangKind::PyTorchJob)),
    ("jobset", TargetKind::Gang(GangKind::JobSet)),
    ("leaderworkerset", TargetKind::Gang(GangKind::LeaderWorkerSet)),
    ("upstream-podgroup", TargetKind::Gang(GangKind::UpstreamPodGroup)),
];

impl FromStr for Target {
    type Err = ExplainError;

    fn from_str(text: &str) -> Result<Self, ExplainError> {
        let bad = || ExplainError::BadTarget(text.to_string());
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (namespace, kind, name) = match parts[..] {
            [namespace, name] => (namespace, TargetKind::Any, name),
            [namespace, kind, name] => {
                let kind = KIND_WORDS.iter().find(|(word, _)| word.eq_ignore_ascii_case(kind)).ok_or_else(bad)?.1;
                (namespace, kind, name)
            }
            _ => return Err(bad()),
        };
        Ok(Self { namespace: namespace.to_string(), name: name.to_string(), kind })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match KIND_WORDS.iter().find(|(_, kind)| *kind == self.kind) {
            Some((word, _)) => write!(f, "{}/{word}/{}", self.namespace, self.name),
            None => write!(f, "{}/{}", self.namespace, self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "`{0}` is not NAMESPACE/NAME or NAMESPACE/KIND/NAME (KIND: pod, podgroup, pytorchjob, jobset, leaderworkerset, upstream-podgroup)"
    )]
    BadTarget(String),
    #[error(
        "phalanx knows no pending or placed pod, PodGroup or PyTorchJob {0} \
         (pods that name another scheduler are not tracked)"
    )]
    NotFound(String),
    #[error("the scheduler has not listed the cluster yet; try again in a moment")]
    NotReady,
    #[error("the scheduler is stopping")]
    Stopped,
}

/// The scheduler's state, as the explanation reads it.
pub struct SchedulerState<'a> {
    pub profiles: &'a HashMap<String, Profile>,
    /// Mutable for the what-if decision only; unchanged on return.
    pub snapshot: &'a mut ClusterSnapshot,
    pub queue: &'a SchedulingQueue,
    pub gangs: &'a GangScheduler,
    pub now: Instant,
}

/// Why a gang waits, or where it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GangExplanation {
    /// "PodGroup ml/llm" or "Pod ml/solo".
    pub gang: String,
    pub namespace: String,
    pub priority: Option<i32>,
    pub members: MemberCounts,
    pub outcome: Outcome,
    /// The scheduler's message, as its Events and pod conditions say it.
    pub message: String,
    pub quotas: Vec<QuotaLine>,
    /// The quota the gang would exceed, in words.
    pub quota_exceeded: Option<String>,
    pub capacity: Option<CapacityShortfall>,
    pub queue: Option<QueuePlace>,
    pub preemption: Option<PreemptionNote>,
    pub placement: Option<BoundPlacement>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberCounts {
    /// Pods that must all have a place before any binds.
    pub min_member: Option<usize>,
    pub pending: usize,
    pub placed: usize,
    /// Members that succeeded: they count toward minMember.
    pub succeeded: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every member has a node.
    Placed,
    /// Fits now: placed at its next attempt.
    FitsNow,
    /// Its next attempt evicts victims to make room.
    WouldPreempt,
    WaitingForMembers,
    OverQuota,
    NoRoom,
    /// Its victims are still terminating.
    WaitingForVictims,
}

impl Outcome {
    fn words(self) -> &'static str {
        match self {
            Outcome::Placed => "placed",
            Outcome::FitsNow => "fits now; placed at its next attempt",
            Outcome::WouldPreempt => "no room; its next attempt preempts lower-priority pods",
            Outcome::WaitingForMembers => "waiting for its members",
            Outcome::OverQuota => "waiting for quota",
            Outcome::NoRoom => "waiting for room",
            Outcome::WaitingForVictims => "waiting for preempted pods to terminate",
        }
    }
}

/// One limited resource of one quota of the gang's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaLine {
    /// "ElasticQuota ml/quota" or "ResourceQuota ml/gpus".
    pub quota: String,
    pub resource: String,
    pub used: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// A ResourceQuota's hard limit.
    pub hard: Option<i64>,
    /// What the gang's pending pods request together.
    pub need: i64,
}

/// Why the gang found no placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapacityShortfall {
    /// Pods that must be placed together, and their GPUs.
    pub pods_needed: usize,
    pub gpus_needed: usize,
    /// How many of them found room across the cluster before one did not.
    pub pods_with_room: usize,
    pub best_domain: Option<BestDomain>,
    /// For the first pod without room: nodes considered, and how many
    /// failed for each reason (kube-scheduler's wording).
    pub nodes: usize,
    pub node_reasons: BTreeMap<String, usize>,
    /// "0/8 nodes are available: ..."
    pub summary: String,
}

/// At the narrowest topology level where a domain could hold the gang, the
/// one with the most free room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BestDomain {
    pub level: String,
    pub name: String,
    pub free_gpus: usize,
    pub nodes: u32,
    /// Nodes there that hold other pods.
    pub busy_nodes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuePlace {
    /// 1 for the first in line (by priority, then age).
    pub position: usize,
    pub pending_gangs: usize,
    /// The first gangs ahead of it, highest first.
    pub ahead: Vec<String>,
    /// Nodes held for gangs that rank at or above it: it may not use them.
    pub held_by_others: Vec<Hold>,
    /// Nodes held for it, so that smaller gangs do not take freed room.
    pub held_for_it: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub gang: String,
    /// The nodes held, by name.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreemptionNote {
    /// Victim selection ran (and found no set).
    pub tried: bool,
    /// What happens or why nothing does.
    pub outcome: String,
    /// Running pods it may not evict, counted by why.
    pub protected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundPlacement {
    pub nodes: Vec<NodePods>,
    /// The narrowest topology domain holding every member ("block rack-a").
    pub span: String,
    /// Members whose bind is still in flight.
    pub binding: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePods {
    pub node: String,
    /// "ml/llm-0 (GPUs 0,1,2,3)", or with DRA "ml/llm-0 (claim llm-0-gpu: gpu-0,gpu-1)"
    pub pods: Vec<String>,
}

/// How many gangs ahead are named.
const AHEAD_NAMED: usize = 5;

/// Explains the gang `target` names, from the scheduler's state.
pub fn explain_gang(target: &Target, state: SchedulerState<'_>) -> Result<GangExplanation, ExplainError> {
    let SchedulerState { profiles, snapshot, queue, gangs, now } = state;
    let key = resolve(target, queue, snapshot, gangs).ok_or_else(|| ExplainError::NotFound(target.to_string()))?;
    let pending: Vec<&PodInfo> = queue.members(&key).collect();
    let placed = placed_members(&key, snapshot);
    let min_member = match &key {
        GangKey::Gang(id) => match gangs.object(id) {
            Some(GangObject::Valid(spec)) => Some(spec.min_member),
            _ => None,
        },
        GangKey::Pod(_) => Some(1),
    };
    let priority = queue.rank(&key).map(|r| r.0).or_else(|| {
        snapshot.placements().filter(|(uid, p)| owned_by(&key, uid, p.job.as_ref())).map(|(_, p)| p.priority).max()
    });
    let mut explanation = GangExplanation {
        gang: gang_name(&key, target, queue),
        namespace: target.namespace.clone(),
        priority,
        members: MemberCounts {
            min_member,
            pending: pending.len(),
            placed: placed.len(),
            succeeded: key.gang().map_or(0, |g| gangs.succeeded_members(g)),
        },
        outcome: Outcome::Placed,
        message: String::new(),
        quotas: quota_lines(&target.namespace, &pending, snapshot, gangs),
        quota_exceeded: None,
        capacity: None,
        queue: None,
        preemption: None,
        placement: None,
        warnings: vec![],
    };
    if !placed.is_empty() {
        explanation.placement = Some(bound_placement(&placed, snapshot));
    }
    if pending.is_empty() {
        explanation.message = match placed.len() {
            0 => "no member of the gang exists yet".to_string(),
            n => format!("all {n} members are placed"),
        };
        if placed.is_empty() {
            explanation.outcome = Outcome::WaitingForMembers;
        }
        return Ok(explanation);
    }
    let verdict = what_if(&key, profiles, snapshot, queue, gangs, now);
    explanation.queue = Some(queue_place(&key, queue, gangs));
    explanation.warnings = verdict.warnings.clone();
    let gang_priority = priority.unwrap_or_default();
    let (outcome, message, reason_why) = match &verdict.decision {
        GangDecision::Bind(_) => (Outcome::FitsNow, "a placement exists for the gang now".to_string(), None),
        GangDecision::Preempt { message, .. } => (Outcome::WouldPreempt, message.clone(), Some(message.clone())),
        GangDecision::Wait(message) => (Outcome::WaitingForMembers, message.clone(), None),
        GangDecision::Drop => (Outcome::WaitingForMembers, "no member names a profile of this scheduler".into(), None),
        GangDecision::Unschedulable { message, reason, .. } => {
            let outcome = match reason {
                WaitReason::Quota => Outcome::OverQuota,
                WaitReason::Preempting => Outcome::WaitingForVictims,
                _ => Outcome::NoRoom,
            };
            (outcome, message.clone(), verdict.detail.no_preemption.clone())
        }
    };
    explanation.outcome = outcome;
    explanation.message = message;
    explanation.quota_exceeded = verdict.detail.quota.as_ref().map(ToString::to_string);
    explanation.capacity = verdict.detail.placement.as_ref().map(shortfall);
    if let Some(outcome) = reason_why {
        let protected = if outcome.starts_with("no set") {
            let profile = pending.iter().find_map(|m| profiles.get(&m.scheduler_name));
            protected_pods(&key, gang_priority, &pending, profile, snapshot, gangs)
        } else {
            vec![]
        };
        explanation.preemption = Some(PreemptionNote { tried: verdict.preemption_tried, outcome, protected });
    }
    Ok(explanation)
}

/// The gang's verdict if it were tried now, on a copy of the gang scheduler;
/// a placement it assumes is forgotten again.
fn what_if(
    key: &GangKey,
    profiles: &HashMap<String, Profile>,
    snapshot: &mut ClusterSnapshot,
    queue: &SchedulingQueue,
    gangs: &GangScheduler,
    now: Instant,
) -> GangVerdict {
    let verdict = gangs.clone().decide(key, profiles, snapshot, queue, now);
    if let GangDecision::Bind(placement) = &verdict.decision {
        for member in &placement.members {
            snapshot.forget(&member.uid);
        }
    }
    verdict
}

/// The queue entry (or placed gang) the target names.
fn resolve(
    target: &Target,
    queue: &SchedulingQueue,
    snapshot: &ClusterSnapshot,
    gangs: &GangScheduler,
) -> Option<GangKey> {
    if matches!(target.kind, TargetKind::Any | TargetKind::Pod) {
        let pod = PodKey { namespace: target.namespace.clone(), name: target.name.clone() };
        let queued = queue.keys().find(|key| queue.members(key).any(|m| m.key == pod));
        if let Some(key) = queued {
            return Some(key.clone());
        }
        let placed = snapshot.placements().find(|(_, p)| p.key == pod);
        if let Some((uid, p)) = placed {
            return Some(p.job.clone().map_or_else(|| GangKey::Pod(uid.to_string()), GangKey::Gang));
        }
    }
    let kinds = match target.kind {
        TargetKind::Any => vec![
            GangKind::PodGroup,
            GangKind::UpstreamPodGroup,
            GangKind::PyTorchJob,
            GangKind::JobSet,
            GangKind::LeaderWorkerSet,
        ],
        TargetKind::Gang(kind) => vec![kind],
        TargetKind::Pod => vec![],
    };
    kinds.into_iter().map(|kind| GangId::new(kind, &target.namespace, &target.name)).find_map(|id| {
        let key = GangKey::Gang(id.clone());
        let known = gangs.object(&id).is_some() || queue.member_count(&key) > 0 || snapshot.job_nodes(&id).is_some();
        known.then_some(key)
    })
}

fn owned_by(key: &GangKey, uid: &str, job: Option<&GangId>) -> bool {
    match key {
        GangKey::Gang(id) => job == Some(id),
        GangKey::Pod(own) => own == uid,
    }
}

/// A member of the gang with a node.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PlacedMember {
    pod: PodKey,
    node: String,
    gpus: Option<Vec<u32>>,
    /// DRA claims held for it, with their devices.
    claims: Vec<(String, Vec<String>)>,
    /// Seen bound, not only assumed.
    bound: bool,
}

fn placed_members(key: &GangKey, snapshot: &ClusterSnapshot) -> Vec<PlacedMember> {
    let mut placed: Vec<PlacedMember> = snapshot
        .placements()
        .filter(|(uid, p)| owned_by(key, uid, p.job.as_ref()))
        .map(|(uid, p)| PlacedMember {
            pod: p.key.clone(),
            node: p.node.clone(),
            gpus: p.gpu_indices.clone(),
            claims: snapshot.devices().devices_held_for(uid),
            bound: p.state == PlacementState::Bound,
        })
        .collect();
    placed.sort();
    placed
}

fn gang_name(key: &GangKey, target: &Target, queue: &SchedulingQueue) -> String {
    match key {
        GangKey::Gang(id) => id.to_string(),
        GangKey::Pod(_) => match queue.members(key).next() {
            Some(pod) => format!("Pod {}", pod.key),
            None => format!("Pod {}/{}", target.namespace, target.name),
        },
    }
}

/// Name of any queued gang, for "who is ahead".
fn queued_name(key: &GangKey, queue: &SchedulingQueue) -> String {
    match key {
        GangKey::Gang(id) => id.to_string(),
        GangKey::Pod(uid) => {
            queue.members(key).next().map_or_else(|| format!("pod {uid}"), |p| format!("Pod {}", p.key))
        }
    }
}

/// Every quota of the namespace with its numbers for the gang's resources.
fn quota_lines(
    namespace: &str,
    pending: &[&PodInfo],
    snapshot: &ClusterSnapshot,
    gangs: &GangScheduler,
) -> Vec<QuotaLine> {
    let mut need = Resources::new();
    for pod in pending {
        need.add(&pod.requests);
    }
    let empty = Resources::new();
    let used = snapshot.namespace_usage(namespace).unwrap_or(&empty);
    let line = |quota: String, resource: &str| QuotaLine {
        quota,
        resource: resource.to_string(),
        used: used.get(resource),
        min: None,
        max: None,
        hard: None,
        need: need.get(resource),
    };
    let mut lines = Vec::new();
    if let Some(elastic) = gangs.quotas().elastic(namespace) {
        let mut resources: Vec<&String> = elastic.min.0.keys().chain(elastic.max.0.keys()).collect();
        resources.sort();
        resources.dedup();
        for resource in resources {
            lines.push(QuotaLine {
                min: elastic.min.get(resource),
                max: elastic.max.get(resource),
                ..line(format!("ElasticQuota {namespace}/{}", elastic.name), resource)
            });
        }
    }
    for hard in gangs.quotas().hard_quotas(namespace) {
        for (resource, limit) in &hard.hard.0 {
            lines.push(QuotaLine {
                hard: Some(*limit),
                ..line(format!("ResourceQuota {namespace}/{}", hard.name), resource)
            });
        }
    }
    lines
}

fn shortfall(failure: &GangUnschedulable) -> CapacityShortfall {
    CapacityShortfall {
        pods_needed: failure.required,
        gpus_needed: failure.required * failure.gpus_per_pod,
        pods_with_room: failure.placeable,
        best_domain: failure.closest.as_ref().map(|c| BestDomain {
            level: c.level.clone(),
            name: c.domain.clone(),
            free_gpus: c.free_gpus,
            nodes: c.nodes,
            busy_nodes: c.busy_nodes,
        }),
        nodes: failure.fit.total_nodes,
        node_reasons: failure.fit.reasons.clone(),
        summary: failure.fit.to_string(),
    }
}

fn queue_place(key: &GangKey, queue: &SchedulingQueue, gangs: &GangScheduler) -> QueuePlace {
    let rank = queue.rank(key).unwrap_or_default();
    let mut ahead: Vec<((i32, i64), &GangKey)> = queue
        .keys()
        .filter(|other| *other != key)
        .filter_map(|other| queue.rank(other).map(|r| (r, other)))
        .filter(|(r, _)| ranks_above(*r, rank))
        .collect();
    ahead.sort_by(|(a, ka), (b, kb)| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(ka.cmp(kb)));
    let mut held_by_others = Vec::new();
    let mut held_for_it = Vec::new();
    for (owner, nodes) in gangs.holds() {
        if owner == key {
            held_for_it = nodes.iter().cloned().collect();
            held_for_it.sort();
        } else if queue.rank(owner).is_some_and(|r| !ranks_above(rank, r)) {
            let mut nodes: Vec<String> = nodes.iter().cloned().collect();
            nodes.sort();
            held_by_others.push(Hold { gang: queued_name(owner, queue), nodes });
        }
    }
    QueuePlace {
        position: ahead.len() + 1,
        pending_gangs: queue.keys().count(),
        ahead: ahead
            .iter()
            .take(AHEAD_NAMED)
            .map(|((priority, _), k)| format!("{} (priority {priority})", queued_name(k, queue)))
            .collect(),
        held_by_others,
        held_for_it,
    }
}

/// Running pods the gang may not evict, by why: equal or higher priority,
/// or a PodDisruptionBudget with no disruption left. Only pods on nodes the
/// gang could use, holding what it asks for (GPUs, for a GPU gang), count.
fn protected_pods(
    key: &GangKey,
    priority: i32,
    pending: &[&PodInfo],
    profile: Option<&Profile>,
    snapshot: &ClusterSnapshot,
    gangs: &GangScheduler,
) -> Vec<String> {
    let wants_gpus = pending.iter().any(|p| p.gpu_count() > 0);
    let largest = placement_order(pending).first().copied();
    let usable = |node: &str| match (profile, largest, snapshot.node(node)) {
        (Some(profile), Some(pod), Some(info)) => {
            info.spec.as_ref().is_some_and(|spec| could_ever_take(profile, pod, spec, info, snapshot))
        }
        _ => false,
    };
    let (mut equal, mut higher) = ((0, 0), (0, 0));
    let mut budgeted: BTreeMap<String, usize> = BTreeMap::new();
    for (uid, p) in snapshot.placements() {
        let gpus = p.requests.get(GPU);
        if owned_by(key, uid, p.job.as_ref()) || (wants_gpus && gpus <= 0) || !usable(&p.node) {
            continue;
        }
        if p.priority == priority {
            equal = (equal.0 + 1, equal.1 + gpus);
        } else if p.priority > priority {
            higher = (higher.0 + 1, higher.1 + gpus);
        } else if let Some(budget) =
            gangs.budgets().find(|b| b.disruptions_allowed == 0 && b.covers(&p.key.namespace, &p.labels))
        {
            *budgeted.entry(format!("{}/{}", budget.namespace, budget.name)).or_default() += 1;
        }
    }
    let mut protected = Vec::new();
    if equal.0 > 0 {
        protected.push(format!(
            "{} running pods ({} GPUs) on nodes it could use have its priority ({priority}); only lower priorities are preempted",
            equal.0, equal.1
        ));
    }
    if higher.0 > 0 {
        protected.push(format!(
            "{} running pods ({} GPUs) on nodes it could use have a higher priority than {priority}",
            higher.0, higher.1
        ));
    }
    for (budget, pods) in budgeted {
        protected.push(format!(
            "{pods} lower-priority pods are covered by PodDisruptionBudget {budget}, which allows no disruption now"
        ));
    }
    protected
}

/// Where the placed members run and the narrowest domain that holds them all.
fn bound_placement(placed: &[PlacedMember], snapshot: &ClusterSnapshot) -> BoundPlacement {
    let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for member in placed {
        let mut given: Vec<String> = member
            .gpus
            .iter()
            .map(|g| format!("GPUs {}", g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")))
            .collect();
        given.extend(member.claims.iter().map(|(claim, devices)| format!("claim {claim}: {}", devices.join(","))));
        let given = if given.is_empty() { String::new() } else { format!(" ({})", given.join("; ")) };
        by_node.entry(member.node.as_str()).or_default().push(format!("{}{given}", member.pod));
    }
    let names: Vec<&str> = by_node.keys().copied().collect();
    BoundPlacement {
        span: span(&names, snapshot),
        nodes: by_node.into_iter().map(|(node, pods)| NodePods { node: node.to_string(), pods }).collect(),
        binding: placed.iter().filter(|m| !m.bound).count(),
    }
}

/// "one node", "accelerator nvl-0", "block rack-a", or "several datacenter domains".
fn span(nodes: &[&str], snapshot: &ClusterSnapshot) -> String {
    if nodes.len() == 1 {
        return format!("one node ({})", nodes[0]);
    }
    let infos: Vec<_> = nodes.iter().filter_map(|n| snapshot.node(n)).collect();
    let levels = &snapshot.settings().levels.levels;
    for (level, settings) in levels.iter().enumerate() {
        let first = infos.first().and_then(|i| i.domains.get(level).copied().flatten());
        if let Some(id) = first
            && infos.iter().all(|i| i.domains.get(level) == Some(&Some(id)))
        {
            return format!("{} {}", settings.name, snapshot.domain_index().describe(id));
        }
    }
    format!("{} nodes with no common topology domain", nodes.len())
}

/// The explanation as a researcher reads it.
pub fn render_gang(e: &GangExplanation) -> String {
    let mut out = String::new();
    let priority = e.priority.map(|p| format!(", priority {p}")).unwrap_or_default();
    let _ = writeln!(out, "{}: {}{priority}", e.gang, e.outcome.words());
    let m = &e.members;
    let min = m.min_member.map(|n| format!("minMember {n}; ")).unwrap_or_default();
    let succeeded = if m.succeeded > 0 { format!(", {} succeeded", m.succeeded) } else { String::new() };
    let _ = writeln!(out, "Members: {min}{} pending, {} placed{succeeded}", m.pending, m.placed);
    if !e.message.is_empty() {
        let _ = writeln!(out, "Scheduler says: {}", e.message);
    }
    if let Some(c) = &e.capacity {
        out.push_str("Room:\n");
        let gpus = if c.gpus_needed > 0 { format!(" ({} GPUs)", c.gpus_needed) } else { String::new() };
        let _ = writeln!(
            out,
            "  needs {} pods placed together{gpus}; {} of them found room",
            c.pods_needed, c.pods_with_room
        );
        if let Some(d) = &c.best_domain {
            let lacks = if c.gpus_needed > 0 {
                format!("{} of the {} GPUs needed free", d.free_gpus, c.gpus_needed)
            } else {
                format!("{} nodes", d.nodes)
            };
            let _ = writeln!(
                out,
                "  best {} {} has {lacks}; {} of its {} nodes hold other pods",
                d.level, d.name, d.busy_nodes, d.nodes
            );
        }
        let _ = writeln!(out, "  nodes: {}", c.summary);
    }
    if !e.quotas.is_empty() || e.quota_exceeded.is_some() {
        let _ = writeln!(out, "Quota (namespace {}):", e.namespace);
        for q in &e.quotas {
            let mut limits = Vec::new();
            for (word, value) in [("min", q.min), ("max", q.max), ("hard", q.hard)] {
                if let Some(v) = value {
                    limits.push(format!("{word} {v}"));
                }
            }
            let _ = writeln!(
                out,
                "  {} {}: used {}, {}; this gang's pending pods need {}",
                q.quota,
                q.resource,
                q.used,
                limits.join(", "),
                q.need
            );
        }
        if let Some(exceeded) = &e.quota_exceeded {
            let _ = writeln!(out, "  exceeded: {exceeded}");
        }
    }
    if let Some(q) = &e.queue {
        let _ = writeln!(out, "Queue: position {} of {} pending gangs", q.position, q.pending_gangs);
        if !q.ahead.is_empty() {
            let more = (q.position - 1).saturating_sub(q.ahead.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            let _ = writeln!(out, "  ahead: {}{more}", q.ahead.join(", "));
        }
        for h in &q.held_by_others {
            let _ = writeln!(out, "  {} nodes are held for {}, which ranks at or above it", h.nodes.len(), h.gang);
        }
        if !q.held_for_it.is_empty() {
            let _ = writeln!(out, "  held for it: {} nodes ({})", q.held_for_it.len(), q.held_for_it.join(", "));
        }
    }
    if let Some(p) = &e.preemption {
        let tried = if p.tried { " (victims searched)" } else { "" };
        let _ = writeln!(out, "Preemption{tried}: {}", p.outcome);
        for why in &p.protected {
            let _ = writeln!(out, "  {why}");
        }
    }
    if let Some(b) = &e.placement {
        let binding = if b.binding > 0 { format!(" ({} binds in flight)", b.binding) } else { String::new() };
        let _ = writeln!(out, "Placed within {}{binding}:", b.span);
        for n in &b.nodes {
            let _ = writeln!(out, "  {}: {}", n.node, n.pods.join(", "));
        }
    }
    for w in &e.warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::disruption::{DisruptionBudget, LabelSelector};
    use crate::gang::GangSpec;
    use crate::queue::BackoffPolicy;
    use crate::quota::{ElasticQuota, Limits};
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};

    struct World {
        profiles: HashMap<String, Profile>,
        snapshot: ClusterSnapshot,
        queue: SchedulingQueue,
        gangs: GangScheduler,
    }

    const BLOCK: &str = "network.topology.nvidia.com/block";

    /// 8-GPU nodes, each in the block named.
    fn world(nodes: &[(&str, &str)]) -> World {
        let mut snapshot = ClusterSnapshot::new();
        for (name, block) in nodes {
            let mut node = gpu_node(name, 8);
            node.labels.insert(BLOCK.into(), block.to_string());
            snapshot.upsert_node(node);
        }
        World {
            profiles: HashMap::from([("phalanx".to_string(), profile_with_defaults())]),
            snapshot,
            queue: SchedulingQueue::new(BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO }),
            gangs: GangScheduler::new(HashSet::from([GangKind::PodGroup]), Default::default()),
        }
    }

    impl World {
        /// A PodGroup of `min_member` with `created` pending pods of `gpus` GPUs each.
        fn gang(&mut self, name: &str, min_member: usize, created: usize, gpus: i64, priority: i32) -> GangKey {
            let id = GangId::new(GangKind::PodGroup, "default", name);
            self.gangs.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(min_member))));
            for i in 0..created {
                let mut pod = gpu_pod(&format!("{name}-{i}"), gpus);
                pod.job = Some(id.clone());
                pod.priority = priority;
                self.queue.upsert(pod, Instant::now());
            }
            GangKey::Gang(id)
        }

        /// A running pod of another job.
        fn running(&mut self, name: &str, node: &str, gpus: i64, priority: i32) {
            let mut pod = gpu_pod(name, gpus);
            pod.priority = priority;
            pod.labels.insert("app".into(), name.into());
            self.snapshot.observe_bound(pod.placement(node), None);
        }

        fn try_explain(&mut self, target: &str) -> Result<GangExplanation, ExplainError> {
            let state = SchedulerState {
                profiles: &self.profiles,
                snapshot: &mut self.snapshot,
                queue: &self.queue,
                gangs: &self.gangs,
                now: Instant::now(),
            };
            explain_gang(&target.parse()?, state)
        }

        fn explain(&mut self, target: &str) -> GangExplanation {
            self.try_explain(target).unwrap()
        }
    }

    #[test]
    fn targets_name_a_pod_or_gang_and_a_kind_when_names_collide() {
        let t: Target = "ml/llm".parse().unwrap();
        assert_eq!((t.namespace.as_str(), t.name.as_str(), t.kind), ("ml", "llm", TargetKind::Any));
        let t: Target = "ml/PyTorchJob/llm".parse().unwrap();
        assert_eq!(t.kind, TargetKind::Gang(GangKind::PyTorchJob));
        assert_eq!(t.to_string(), "ml/pytorchjob/llm");
        for bad in ["ml", "ml/", "a/b/c/d", "ml/deployment/x"] {
            assert!(matches!(bad.parse::<Target>(), Err(ExplainError::BadTarget(_))), "{bad}");
        }
    }

    #[test]
    fn a_gang_over_its_quota_shows_used_limits_and_need() {
        let mut w = world(&[("n0", "rack-a"), ("n1", "rack-a"), ("n2", "rack-a")]);
        let gpus = |n: i64| Limits([(GPU.to_string(), n)].into());
        w.gangs.quotas_mut().set_elastic(ElasticQuota {
            namespace: "default".into(),
            name: "team".into(),
            min: gpus(8),
            max: gpus(16),
        });
        w.running("earlier", "n0", 8, 0);
        w.gang("big", 2, 2, 8, 0);
        let e = w.explain("default/big");
        assert_eq!(e.outcome, Outcome::OverQuota);
        let line = &e.quotas[0];
        assert_eq!((line.used, line.min, line.max, line.need), (8, Some(8), Some(16), 16), "{line:?}");
        let text = render_gang(&e);
        assert!(
            text.contains(
                "ElasticQuota default/team nvidia.com/gpu: used 8, min 8, max 16; this gang's pending pods need 16"
            ),
            "{text}"
        );
        assert!(text.contains("exceeded: default: 8 of 16 GPUs used, gang needs 16"), "{text}");
        assert!(e.capacity.is_none() && e.preemption.is_none(), "{text}");
    }

    #[test]
    fn a_gang_without_room_names_the_best_domain_node_reasons_and_why_nothing_is_preempted() {
        let mut w = world(&[
            ("a0", "rack-a"),
            ("a1", "rack-a"),
            ("b0", "rack-b"),
            ("b1", "rack-b"),
            ("b2", "rack-b"),
            ("b3", "rack-b"),
        ]);
        w.running("x", "a0", 8, 0);
        w.running("y", "a1", 8, 0);
        w.running("z", "b0", 4, 0);
        w.gang("llm", 4, 4, 8, 0);
        let e = w.explain("default/llm-2");
        assert_eq!(e.gang, "PodGroup default/llm", "a member names its gang");
        assert_eq!(e.outcome, Outcome::NoRoom);
        let c = e.capacity.clone().expect("a shortfall");
        assert_eq!((c.pods_needed, c.gpus_needed, c.pods_with_room), (4, 32, 3));
        let best = c.best_domain.clone().expect("a best domain");
        assert_eq!((best.level.as_str(), best.free_gpus, best.nodes, best.busy_nodes), ("block", 24, 4, 1));
        assert_eq!(c.nodes, 6);
        assert_eq!(c.node_reasons.values().sum::<usize>(), 6, "{c:?}");
        let text = render_gang(&e);
        assert!(
            text.contains("best block rack-b has 24 of the 32 GPUs needed free; 1 of its 4 nodes hold other pods"),
            "{text}"
        );
        assert!(text.contains("nodes: 0/6 nodes are available:"), "{text}");
        let p = e.preemption.expect("preemption explained");
        assert!(p.tried && p.outcome.starts_with("no set"), "{p:?}");
        assert_eq!(
            p.protected,
            [
                "3 running pods (20 GPUs) on nodes it could use have its priority (0); only lower priorities are preempted"
            ]
        );
        assert_eq!(w.snapshot.placements().count(), 3, "the what-if leaves the snapshot as it was");
    }

    #[test]
    fn a_gang_short_of_members_says_how_many_exist() {
        let mut w = world(&[("n0", "rack-a")]);
        w.gang("half", 4, 2, 1, 0);
        let e = w.explain("default/podgroup/half");
        assert_eq!(e.outcome, Outcome::WaitingForMembers);
        assert_eq!((e.members.min_member, e.members.pending, e.members.placed), (Some(4), 2, 0));
        assert!(e.message.contains("2 of 4 members created"), "{}", e.message);
    }

    #[test]
    fn a_gang_behind_a_holder_is_told_who_is_ahead_and_which_nodes_are_held() {
        let mut w = world(&[("n0", "r"), ("n1", "r"), ("n2", "r"), ("n3", "r")]);
        for n in 0..3 {
            w.running(&format!("busy{n}"), &format!("n{n}"), 8, 0);
        }
        let big = w.gang("big", 4, 4, 8, 5);
        let now = Instant::now();
        assert_eq!(w.queue.pop(now), Some(big.clone()));
        w.gangs.decide(&big, &w.profiles, &mut w.snapshot, &w.queue, now);
        w.queue.mark_unschedulable(&big, now);
        w.gang("small", 1, 1, 8, 0);
        let e = w.explain("default/small");
        let q = e.queue.clone().expect("a queue place");
        assert_eq!((q.position, q.pending_gangs), (2, 2));
        assert_eq!(q.ahead, ["PodGroup default/big (priority 5)"]);
        let held = ["n0", "n1", "n2", "n3"].map(String::from).to_vec();
        assert_eq!(q.held_by_others, [Hold { gang: "PodGroup default/big".into(), nodes: held }]);
        assert!(e.message.contains("held for a gang waiting ahead"), "{}", e.message);
        let p = e.preemption.expect("preemption explained");
        assert_eq!(p.outcome, "not attempted while a gang ahead waits for room");
        let text = render_gang(&w.explain("default/big"));
        assert!(text.contains("held for it: 4 nodes (n0, n1, n2, n3)"), "{text}");
    }

    #[test]
    fn lower_priority_pods_under_an_exhausted_budget_are_named() {
        let mut w = world(&[("n0", "r")]);
        w.running("keep", "n0", 8, 1);
        w.gangs.set_budget(
            "default",
            "keep",
            Some(DisruptionBudget {
                namespace: "default".into(),
                name: "keep".into(),
                selector: LabelSelector {
                    match_labels: [("app".to_string(), "keep".to_string())].into(),
                    ..Default::default()
                },
                disruptions_allowed: 0,
            }),
        );
        w.gang("urgent", 1, 1, 8, 100);
        let e = w.explain("default/urgent");
        let p = e.preemption.expect("preemption explained");
        assert_eq!(
            p.protected,
            ["1 lower-priority pods are covered by PodDisruptionBudget default/keep, which allows no disruption now"]
        );
    }

    #[test]
    fn a_placed_gang_shows_its_nodes_gpus_and_the_domain_it_spans() {
        let mut w = world(&[("a0", "rack-a"), ("a1", "rack-a"), ("b0", "rack-b")]);
        let id = GangId::new(GangKind::PodGroup, "default", "done");
        w.gangs.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(2))));
        for (i, node) in ["a0", "a1"].iter().enumerate() {
            let mut pod = gpu_pod(&format!("done-{i}"), 4);
            pod.job = Some(id.clone());
            w.snapshot.observe_bound(pod.placement(node), Some(&[0, 1, 2, 3]));
        }
        let e = w.explain("default/done");
        assert_eq!(e.outcome, Outcome::Placed);
        let b = e.placement.clone().expect("a placement");
        assert_eq!(b.span, "block rack-a");
        assert_eq!(b.nodes[0].pods, ["default/done-0 (GPUs 0,1,2,3)"]);
        assert!(e.queue.is_none());
        assert!(matches!(w.try_explain("default/none"), Err(ExplainError::NotFound(_))));
    }

    #[test]
    fn a_placed_member_shows_the_devices_of_its_claims() {
        let mut w = world(&[("a0", "rack-a")]);
        let mut claim = crate::dra::testing::gpu_claim("solo-gpu", crate::dra::testing::GPU_DRIVER, 2);
        let device = |name: &str| crate::dra::device::DeviceId {
            driver: crate::dra::testing::GPU_DRIVER.into(),
            pool: "node".into(),
            device: name.into(),
        };
        claim.allocation = Some(crate::dra::claim::ClaimAllocation {
            node: "a0".into(),
            results: ["gpu-4", "gpu-5"]
                .iter()
                .map(|d| crate::dra::claim::DeviceResult { request: "gpus".into(), device: device(d) })
                .collect(),
            config: vec![],
        });
        let pod = gpu_pod("solo", 0);
        claim.reserved_for = vec![pod.uid.clone()];
        w.snapshot.apply_claim(claim).unwrap();
        w.snapshot.observe_bound(pod.placement("a0"), None);
        let e = w.explain("default/solo");
        assert_eq!(e.placement.expect("a placement").nodes[0].pods, ["default/solo (claim solo-gpu: gpu-4,gpu-5)"]);
    }
}
