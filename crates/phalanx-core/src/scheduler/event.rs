//! What the scheduler is told: changes the watches saw, and the outcomes of
//! the binds and evictions it asked for.

use std::collections::{BTreeMap, HashSet};

use crate::disruption::DisruptionBudget;
use crate::dra::claim::{ClaimKey, DeviceClaim, DeviceClass};
use crate::dra::device::DeviceSlice;
use crate::gang::{GangId, GangKind, GangObject};
use crate::gang_status::GroupStatusInput;
use crate::node::NodeSpec;
use crate::pod::{PodInfo, PodKey};
use crate::quota::{Quota, QuotaKind};
use crate::snapshot::Released;
use crate::spread_defaults::{WorkloadKey, WorkloadKind, WorkloadSelector};
use crate::topology::model::GpuTopology;
use crate::update::Update;
use crate::volume::{VolumeKind, VolumeObject, VolumeObjectKey};

/// One change in the cluster, as the watches (or a simulated cluster) saw it.
// Most events are pod events: boxing the pod would cost each an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ClusterEvent {
    NodeApplied(NodeSpec),
    NodeDeleted(String),
    NodesListed(HashSet<String>),
    PodApplied {
        pod: PodInfo,
        gated: bool,
    },
    PodDeleted {
        uid: String,
    },
    /// UIDs of every relevant pod after a (re-)list.
    PodsListed(HashSet<String>),
    /// A member of `gang` succeeded: it ran with the gang and counts toward
    /// minMember, even for a leader that never saw it run.
    MemberSucceeded {
        gang: GangId,
        uid: String,
    },
    /// UIDs of every relevant pod after a list made for leadership `term`:
    /// the new leader's first fresh view.
    PodsRelisted {
        uids: HashSet<String>,
        term: u64,
    },
    TopologyApplied(TopologyReport),
    TopologyDeleted(String),
    TopologiesListed(HashSet<String>),
    /// A gang object (PodGroup, PyTorchJob) added or changed.
    GangApplied {
        id: GangId,
        object: GangObject,
    },
    GangDeleted(GangId),
    GangsListed {
        kind: GangKind,
        ids: HashSet<GangId>,
    },
    /// An ElasticQuota or ResourceQuota added or changed.
    QuotaApplied(Quota),
    QuotaDeleted {
        kind: QuotaKind,
        namespace: String,
        name: String,
    },
    /// Namespace and name of every quota of one kind after a (re-)list.
    QuotasListed {
        kind: QuotaKind,
        keys: Vec<(String, String)>,
    },
    /// A PodDisruptionBudget added or changed; `budget: None`: it has no
    /// selector, so it protects no pod.
    BudgetApplied {
        namespace: String,
        name: String,
        budget: Option<DisruptionBudget>,
    },
    BudgetDeleted {
        namespace: String,
        name: String,
    },
    /// Namespace and name of every PodDisruptionBudget after a (re-)list.
    BudgetsListed(Vec<(String, String)>),
    /// A PersistentVolumeClaim, PersistentVolume or StorageClass added or changed.
    VolumeObjectApplied(VolumeObject),
    VolumeObjectDeleted(VolumeObjectKey),
    /// Every object of one volume kind after a (re-)list.
    VolumeObjectsListed {
        kind: VolumeKind,
        keys: HashSet<VolumeObjectKey>,
    },
    /// A DeviceClass, ResourceSlice or ResourceClaim added or changed.
    DeviceObjectApplied(DeviceObject),
    DeviceObjectDeleted(DeviceObjectKey),
    /// Every object of one DRA kind after a (re-)list.
    DeviceObjectsListed {
        kind: DeviceKind,
        keys: HashSet<DeviceObjectKey>,
    },
    /// A Namespace added or relabelled (affinity terms select namespaces by label).
    NamespaceApplied {
        name: String,
        labels: BTreeMap<String, String>,
    },
    NamespaceDeleted(String),
    /// Names of every Namespace after a (re-)list.
    NamespacesListed(HashSet<String>),
    /// A Service, ReplicaSet, StatefulSet or ReplicationController added or
    /// changed: its selector (pods' default spread constraints select by it).
    WorkloadSelectorApplied(WorkloadSelector),
    WorkloadSelectorDeleted(WorkloadKey),
    /// Every object of one workload kind after a (re-)list.
    WorkloadSelectorsListed {
        kind: WorkloadKind,
        keys: HashSet<WorkloadKey>,
    },
    /// An object phalanx cannot read; `error` names the field.
    Invalid {
        regarding: ObjectRef,
        error: String,
    },
    /// A PodGroup or a pod labelled with one, for the groups' status.
    GroupStatus(GroupStatusInput),
    /// The Lease says this replica leads in this term (0: no election), or
    /// does not lead (`None`).
    Leadership(Option<u64>),
    /// A watch decisions depend on failed. Changes made while it is away
    /// are unseen until it lists again, so nothing is decided till then
    /// (found by the soak: a quota lowered while phalanx's API server was
    /// away was still unseen when the pods' watch was back, and gangs were
    /// placed beyond it).
    WatchLost(Watch),
}

/// A watch whose view every decision depends on: none is made before each
/// has listed, nor while one is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Watch {
    Nodes,
    Pods,
    Quotas(QuotaKind),
    Budgets,
    Gangs(GangKind),
    Devices(DeviceKind),
    Volumes(VolumeKind),
}

/// The `resource.k8s.io/v1` kinds the scheduler watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    Class,
    Slice,
    Claim,
}

impl DeviceKind {
    /// The watch's name, and the object's kind in Events.
    pub fn resource(self) -> &'static str {
        match self {
            DeviceKind::Class => "deviceclasses",
            DeviceKind::Slice => "resourceslices",
            DeviceKind::Claim => "resourceclaims",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            DeviceKind::Class => "DeviceClass",
            DeviceKind::Slice => "ResourceSlice",
            DeviceKind::Claim => "ResourceClaim",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum DeviceObject {
    Class(DeviceClass),
    Slice(DeviceSlice),
    Claim(DeviceClaim),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceObjectKey {
    Class(String),
    Slice(String),
    Claim(ClaimKey),
}

/// What the scheduler takes from a GPUTopology resource: the node it
/// describes, its topology, and the GPU indices each pod really holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopologyReport {
    pub node: String,
    pub topology: GpuTopology,
    pub pod_gpus: Vec<(PodKey, Vec<u32>)>,
}

/// An API object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

impl ObjectRef {
    /// The pod `key` with `uid`, as Events regard it.
    pub fn pod(key: &PodKey, uid: &str) -> Self {
        Self {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: Some(uid.to_string()),
        }
    }
}

/// Whether waiting gangs deserve another look after a change.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Room may have been freed or added, a limit raised, a budget loosened.
    MayFitMore,
    /// Nothing a waiting gang could use.
    NoNewRoom,
}

/// A node, topology, quota or gang object that changed may change what fits.
impl From<Update> for Change {
    fn from(update: Update) -> Self {
        match update {
            Update::Changed => Change::MayFitMore,
            Update::Unchanged => Change::NoNewRoom,
        }
    }
}

impl From<Released> for Change {
    fn from(released: Released) -> Self {
        match released {
            Released::Freed => Change::MayFitMore,
            Released::NothingHeld => Change::NoNewRoom,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BindResult {
    Bound,
    /// The pod is gone (404): nothing to do.
    PodGone,
    /// 409: already bound, or the UID no longer matches. The watch tells the truth.
    Conflict(String),
    /// The node was deleted before the call went out: the pod must go elsewhere.
    NodeGone,
    /// Anything else: the pod goes back to the queue.
    Failed(String),
    /// Not sent, for the reason given (this replica no longer leads): the
    /// pod goes back to the queue.
    NotSent(String),
}

/// How a bind the scheduler asked for ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindOutcome {
    pub uid: String,
    pub key: PodKey,
    pub node: String,
    pub result: BindResult,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EvictResult {
    /// Accepted: the pod is being deleted (its graceful deletion follows).
    Evicted,
    /// 404, or 409 on the UID precondition: the victim is gone already.
    PodGone,
    /// 429 from a PodDisruptionBudget: the pod stays. The API server's words.
    Blocked(String),
    /// Anything else, after retries.
    Failed(String),
    /// Not sent, for the reason given (this replica no longer leads).
    NotSent(String),
}

impl EvictResult {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            EvictResult::Evicted => "evicted",
            EvictResult::PodGone => "gone",
            EvictResult::Blocked(_) => "blocked",
            EvictResult::Failed(_) => "error",
            EvictResult::NotSent(_) => "not_sent",
        }
    }
}

/// How an eviction the scheduler asked for ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvictOutcome {
    pub uid: String,
    pub key: PodKey,
    /// Who the victim makes room for, as the request named it.
    pub preemptor: String,
    pub result: EvictResult,
}
