//! What the scheduler asks its driver to carry out.

use super::event::ObjectRef;
use crate::dra::inventory::ClaimWrite;
use crate::gang::GangId;
use crate::gang_status::StatusWrite;
use crate::pod::PodKey;
use crate::volume::VolumeWrite;

/// What is written before a pod is bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreBind {
    /// ResourceClaims' allocations and reservations (each conditional on
    /// the claim's version).
    pub claims: Vec<ClaimWrite>,
    /// PersistentVolumes pre-bound and claims given a node; the bind then
    /// waits until every claim written to is bound.
    pub volumes: Vec<VolumeWrite>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bind the pod (guarded by its UID) to `node`, recording its GPUs;
    /// first carry out `writes`: a refused write fails the bind.
    Bind { uid: String, key: PodKey, node: String, gpus: Vec<u32>, writes: PreBind },
    /// Evict a preemption victim; `preemptor` names who it makes room for
    /// ("PodGroup team-a/llm").
    Evict { uid: String, key: PodKey, preemptor: String },
    /// Binds not yet sent to this node must not be sent (`gone`), or may be again.
    NodeGone { node: String, gone: bool },
    /// Something users read: a condition, an Event, a nomination.
    Report(Report),
    /// Write a PodGroup's status (guarded by the resourceVersion it was
    /// computed from); its outcome comes back through `apply_status_outcome`.
    WriteGroupStatus(StatusWrite),
    /// One gang was decided (for metrics and logs): there may be more.
    Attempted { gang: String, profile: String, result: Attempt },
}

/// What one decision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Scheduled,
    /// No room; `preemption_tried`: victim selection ran and found no set.
    Unschedulable {
        preemption_tried: bool,
    },
    /// Members or its object missing.
    Waiting,
    Preempting {
        victims: usize,
    },
    /// No member names one of our profiles any more.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// No node fits: the pod's `PodScheduled=False` condition says why (its
    /// FailedScheduling Event comes as an `Event` of its own).
    Unschedulable { key: PodKey, uid: String, resource_version: Option<String>, message: String, shown: ShownReason },
    /// Bound: a Normal Event, as kube-scheduler writes.
    Scheduled { key: PodKey, uid: String, node: String },
    /// An Event about any object (an unreadable object, a gang's PodGroup).
    Event { regarding: ObjectRef, warning: bool, reason: &'static str, message: String },
    /// A victim was evicted: a Warning Event `Preempted` on it naming the
    /// preemptor (a gang or pod), then `message` if not empty.
    Preempted { key: PodKey, uid: String, preemptor: String, message: String },
    /// Capacity is held for the preemptor on `node`: its `status.nominatedNodeName`
    /// (as kube-scheduler records it). An empty `node` clears it.
    Nominated { key: PodKey, uid: String, node: String },
    /// A condition in an upstream PodGroup's status, as upstream's scheduler
    /// writes it (merged by type with the conditions already there).
    GroupCondition { gang: GangId, condition: GroupCondition },
}

/// One condition of an upstream PodGroup's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCondition {
    pub kind: GroupConditionKind,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupConditionKind {
    /// Whether the gang was placed once; final once True.
    InitiallyScheduled,
    /// The gang is about to be disrupted (its members preempted).
    DisruptionTarget,
}

impl GroupConditionKind {
    /// The condition's `type`.
    pub fn name(self) -> &'static str {
        match self {
            GroupConditionKind::InitiallyScheduled => "PodGroupInitiallyScheduled",
            GroupConditionKind::DisruptionTarget => "DisruptionTarget",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
}

impl ConditionStatus {
    pub fn name(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
        }
    }
}

/// What the pod shows before its new condition is written. When writes fall
/// behind, pods that show no reason at all go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownReason {
    Nothing,
    Outdated,
}

/// What one call of `Scheduler::next_actions` came to: a gang decided (call
/// again for the next), or none ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Decided,
    NothingReady,
}

impl Progress {
    pub fn of(actions: &[Action]) -> Self {
        if actions.iter().any(|a| matches!(a, Action::Attempted { .. })) {
            Progress::Decided
        } else {
            Progress::NothingReady
        }
    }
}
