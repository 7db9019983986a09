//! What the scheduler knows about one node: its properties from the Node
//! object and the resources its pods already hold.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::host_port::HostPort;
use super::resources::Resources;
use super::topology::domains::NodeDomains;
use super::topology::gpu_choice::{GpuMask, NodeGpuModel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// The parts of a Node object that scheduling decisions read.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub allocatable: Resources,
    #[serde(default)]
    pub gpu_sharing: GpuSharing,
}

/// What one `nvidia.com/gpu` of the node is, as GPU Feature Discovery's
/// labels say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum GpuSharing {
    /// A whole physical GPU, held by one pod.
    #[default]
    Whole,
    /// A replica of a physical GPU shared by time-slicing or MPS: the device
    /// plugin picks which GPU backs each replica, so which GPUs a pod gets
    /// cannot be chosen.
    Replica { physical_gpus: u32, strategy: SharingStrategy },
    /// A MIG slice (`mig.strategy=single`), not a whole GPU.
    MigSlice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SharingStrategy {
    TimeSlicing,
    Mps,
}

impl NodeSpec {
    /// Whole GPUs a pod can be given by index: none where GPUs are shared or sliced.
    pub fn whole_gpus(&self) -> usize {
        match self.gpu_sharing {
            GpuSharing::Whole => self.allocatable.get(super::resources::GPU).max(0) as usize,
            GpuSharing::Replica { .. } | GpuSharing::MigSlice => 0,
        }
    }

    /// Physical GPUs, as a topology report should list them (`None`: the
    /// labels do not say, for MIG slices).
    pub fn physical_gpus(&self) -> Option<usize> {
        match self.gpu_sharing {
            GpuSharing::Whole => Some(self.whole_gpus()),
            GpuSharing::Replica { physical_gpus, .. } => Some(physical_gpus as usize),
            GpuSharing::MigSlice => None,
        }
    }
}

/// A node in the snapshot. `spec` is `None` while pods still reference a node
/// whose object has gone (or not yet arrived): their resources stay counted so
/// that the node's usage is right when it (re)appears.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub spec: Option<NodeSpec>,
    /// Sum of the requests of the pods bound or assumed on this node.
    pub requested: Resources,
    /// UIDs of the pods bound or assumed here.
    pub pods: HashSet<String>,
    /// The host ports those pods hold (one entry per pod and port).
    pub host_ports: Vec<HostPort>,
    /// How the node's GPUs are wired (reported, or a template); `None` without GPUs.
    pub gpu_model: Option<Arc<NodeGpuModel>>,
    /// How many pods hold each GPU (by position in the topology); more than
    /// one would be an over-commit.
    pub gpu_holders: Vec<u16>,
    /// The node's domain at each configured topology level.
    pub domains: NodeDomains,
    /// Changes whenever anything above does, and is never the same for two
    /// states of any two nodes of a snapshot: a verdict on a node made at one
    /// version still holds while the version is unchanged.
    pub version: u64,
}

impl NodeInfo {
    /// Resources still free: allocatable minus requested.
    pub fn free(&self) -> Resources {
        let mut free = self.spec.as_ref().map(|s| s.allocatable.clone()).unwrap_or_default();
        free.subtract(&self.requested);
        free
    }

    /// How much of one resource is still free, without building the whole
    /// `free()` set (room is counted for every node in every decision).
    pub fn free_of(&self, name: &str) -> i64 {
        let allocatable = self.spec.as_ref().map_or(0, |s| s.allocatable.get(name));
        allocatable.saturating_sub(self.requested.get(name))
    }

    /// GPUs no pod holds, as a set of topology positions.
    pub fn free_gpus(&self) -> GpuMask {
        self.gpu_holders.iter().enumerate().filter(|(_, h)| **h == 0).fold(0, |mask, (p, _)| mask | (1 << p))
    }
}
