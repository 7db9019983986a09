//! Storage capacity as kube-scheduler's VolumeBinding checks it before it
//! asks a CSI driver to provision: where the driver's CSIDriver object sets
//! `storageCapacity`, a node is a place to provision a claim's volume only
//! if one of the driver's CSIStorageCapacity objects for the claim's class
//! reaches the node and has room for the claim.

use std::collections::BTreeMap;
use std::fmt;

use crate::label_selector::{LabelSelector, selects};

/// A CSIDriver, as far as provisioning reads it: whether its capacity is
/// published (`spec.storageCapacity`) and must be checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsiDriver {
    pub name: String,
    pub capacity_tracked: bool,
}

/// A CSIStorageCapacity's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StorageCapacityKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for StorageCapacityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Room for volumes of one class on the nodes of one topology segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageCapacity {
    pub key: StorageCapacityKey,
    pub storage_class: String,
    /// `nodeTopology`: the nodes it speaks for (absent: none).
    pub node_topology: Option<LabelSelector>,
    /// `capacity`, in bytes.
    pub capacity_bytes: Option<i64>,
    /// `maximumVolumeSize`, in bytes: where set, the limit for one volume.
    pub maximum_volume_bytes: Option<i64>,
}

impl StorageCapacity {
    /// Whether a volume of `bytes` of `class` fits here, for a node with
    /// these labels.
    pub fn has_room(&self, class: &str, bytes: i64, node_labels: &BTreeMap<String, String>) -> bool {
        let limit = self.maximum_volume_bytes.or(self.capacity_bytes);
        self.storage_class == class
            && limit.is_some_and(|l| l >= bytes)
            && selects(self.node_topology.as_ref(), node_labels)
    }
}
