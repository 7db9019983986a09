//! Persistent volumes as kube-scheduler's VolumeBinding sees them: claims
//! (PVCs), volumes (PVs) and storage classes, and for a pod on a node which
//! volume each of its unbound claims binds to, or that the node is where the
//! claim's volume is to be provisioned.

mod attach_limits;
pub mod in_tree;
mod inventory;
mod storage_capacity;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use attach_limits::{AttachedSource, AttachedVolume, CsiNode, VolumeAttachment};
pub use inventory::{VolumeInventory, VolumeMisfit, VolumeWrite};
pub use storage_capacity::{CsiDriver, StorageCapacity, StorageCapacityKey};

use crate::label_selector::LabelSelector;
use crate::node::NodeSpec;
use crate::plugins::term_matches;
use crate::pod::NodeSelectorTerm;

/// The provisioner of storage classes whose volumes are all made by hand
/// (local volumes): nothing provisions for them.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// A PersistentVolumeClaim's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct VolumeClaimKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for VolumeClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

/// When a claim of the class is bound: at once, or once a pod using it is
/// scheduled (the scheduler then picks the volume, or the node to provision on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BindingMode {
    Immediate,
    WaitForFirstConsumer,
}

/// What scheduling reads of a PersistentVolumeClaim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeClaim {
    pub key: VolumeClaimKey,
    pub uid: String,
    pub resource_version: Option<String>,
    /// `spec.storageClassName`; empty asks for volumes of no class.
    pub storage_class: String,
    /// `spec.volumeName`: the volume it is bound (or pre-bound) to.
    pub volume_name: Option<String>,
    /// `spec.resources.requests.storage`, in bytes.
    pub request_bytes: i64,
    pub access_modes: BTreeSet<AccessMode>,
    pub volume_mode: VolumeMode,
    /// `spec.selector`: which volumes it may bind to (`None`: any).
    pub selector: Option<LabelSelector>,
    /// The `volume.kubernetes.io/selected-node` annotation: where its
    /// volume is being provisioned.
    pub selected_node: Option<String>,
    pub deleting: bool,
}

/// Who a volume is bound (or pre-bound) to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimRef {
    pub key: VolumeClaimKey,
    /// Set once bound; a pre-binding by hand may leave it out.
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumePhase {
    Pending,
    Available,
    Bound,
    Released,
    Failed,
}

/// What scheduling reads of a PersistentVolume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersistentVolume {
    pub name: String,
    pub resource_version: Option<String>,
    pub storage_class: String,
    pub capacity_bytes: i64,
    pub access_modes: BTreeSet<AccessMode>,
    pub volume_mode: VolumeMode,
    /// `spec.nodeAffinity.required`: nodes that can reach it (any term);
    /// empty: every node.
    pub node_affinity: Vec<NodeSelectorTerm>,
    pub claim_ref: Option<ClaimRef>,
    /// `spec.csi`: the driver that attaches it and its handle there; `None`
    /// for volumes of other kinds, which count against no attach limit.
    pub csi: Option<AttachedVolume>,
    pub phase: VolumePhase,
    pub labels: BTreeMap<String, String>,
    pub deleting: bool,
}

impl PersistentVolume {
    /// Whether `node` can reach the volume.
    pub fn reachable_from(&self, node: &NodeSpec) -> bool {
        self.node_affinity.is_empty() || self.node_affinity.iter().any(|t| term_matches(t, node))
    }
}

/// What scheduling reads of a StorageClass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageClass {
    pub name: String,
    pub provisioner: String,
    pub binding_mode: BindingMode,
    /// `allowedTopologies`: where it may provision (any term); empty: anywhere.
    pub allowed_topologies: Vec<NodeSelectorTerm>,
}

impl StorageClass {
    /// Whether it can provision a volume that `node` reaches.
    pub fn provisions_for(&self, node: &NodeSpec) -> bool {
        self.provisioner != NO_PROVISIONER
            && (self.allowed_topologies.is_empty() || self.allowed_topologies.iter().any(|t| term_matches(t, node)))
    }
}

/// One of the storage kinds, as the watches deliver them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumeObject {
    Claim(VolumeClaim),
    Volume(PersistentVolume),
    Class(StorageClass),
    CsiNode(CsiNode),
    Attachment(VolumeAttachment),
    CsiDriver(CsiDriver),
    Capacity(StorageCapacity),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VolumeKind {
    Claim,
    Volume,
    Class,
    CsiNode,
    Attachment,
    CsiDriver,
    Capacity,
}

impl VolumeKind {
    /// Every kind, each with a watch of its own.
    pub const ALL: [VolumeKind; 7] =
        [Self::Claim, Self::Volume, Self::Class, Self::CsiNode, Self::Attachment, Self::CsiDriver, Self::Capacity];
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VolumeObjectKey {
    Claim(VolumeClaimKey),
    Volume(String),
    Class(String),
    CsiNode(String),
    Attachment(String),
    CsiDriver(String),
    Capacity(StorageCapacityKey),
}
