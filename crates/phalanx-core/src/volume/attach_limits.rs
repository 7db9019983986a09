//! What counts against a node's attach limits, as kube-scheduler's
//! NodeVolumeLimits counts it: a node's CSINode says how many volumes of
//! each CSI driver it can have attached; its VolumeAttachments and the
//! claims of the pods on it say which volumes are attached or soon will be.

use std::collections::BTreeMap;

use super::{VolumeClaimKey, VolumeInventory};

/// One CSI volume as attach limits count it: a driver's volume handle.
/// Pods that share a volume count it once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AttachedVolume {
    pub driver: String,
    pub handle: String,
}

/// A node's CSINode: the drivers that report a limit, with the limit
/// (`spec.drivers[].allocatable.count`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsiNode {
    pub node: String,
    pub attach_limits: BTreeMap<String, u32>,
}

/// Where a VolumeAttachment's volume is described.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachedSource {
    /// `spec.source.persistentVolumeName`.
    Volume(String),
    /// `spec.source.inlineVolumeSpec.csi.volumeHandle`.
    Inline(String),
}

/// A VolumeAttachment: a volume attached (or being attached) to a node,
/// whether or not a pod the scheduler knows uses it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeAttachment {
    pub name: String,
    pub node: String,
    /// `spec.attacher`: the CSI driver.
    pub driver: String,
    pub source: AttachedSource,
}

/// Stands in for the handle of a volume not provisioned yet: unique per
/// claim, and unlike any real handle.
const UNPROVISIONED: &str = "phalanx.dev/unprovisioned";

impl VolumeInventory {
    /// The node's limits per driver, if its CSINode reports any.
    pub fn attach_limits(&self, node: &str) -> Option<&BTreeMap<String, u32>> {
        self.csi_nodes.get(node).map(|n| &n.attach_limits).filter(|limits| !limits.is_empty())
    }

    /// Whether some node limits volumes of `driver`.
    pub fn limits_driver(&self, driver: &str) -> bool {
        self.csi_nodes.values().any(|n| n.attach_limits.contains_key(driver))
    }

    /// The CSI volume a claim attaches: its bound volume's, else (unbound,
    /// or its volume not seen yet) one its class's provisioner will make
    /// (an in-tree plugin's as its migrated driver's).
    /// `None`: the claim is unknown, or its volume is not CSI, or it has no
    /// class (then it must be bound before its pod is placed).
    pub fn attached_volume(&self, key: &VolumeClaimKey) -> Option<AttachedVolume> {
        let claim = self.claims.get(key)?;
        if let Some(volume) = claim.volume_name.as_ref().and_then(|name| self.volumes.get(name)) {
            return volume.csi.clone();
        }
        let class = self.classes.get(&claim.storage_class)?;
        let driver = super::in_tree::counted_driver(&class.provisioner).to_string();
        Some(AttachedVolume { driver, handle: format!("{UNPROVISIONED}/{key}") })
    }

    /// The volumes VolumeAttachments attach to `node`.
    pub fn attachments_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = AttachedVolume> + 'a {
        self.attachments.values().filter(move |a| a.node == node).filter_map(|a| match &a.source {
            AttachedSource::Volume(name) => self.volumes.get(name).and_then(|v| v.csi.clone()),
            AttachedSource::Inline(handle) => Some(AttachedVolume { driver: a.driver.clone(), handle: handle.clone() }),
        })
    }
}
