//! The claims, volumes and classes the watches show, the bindings assumed
//! for pods placed but not yet bound, and the fit of a pod's claims on a node.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use super::{
    BindingMode, CsiDriver, CsiNode, PersistentVolume, StorageCapacity, StorageCapacityKey, StorageClass,
    VolumeAttachment, VolumeClaim, VolumeClaimKey, VolumeKind, VolumeObject, VolumeObjectKey, VolumePhase,
};
use crate::node::NodeSpec;
use crate::pod::PodInfo;

/// What is written before a pod with unbound claims is bound, as
/// kube-scheduler's volume binder writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumeWrite {
    /// Pre-bind `volume` to the claim (its `spec.claimRef`, conditional on
    /// the volume's version); the PV controller then binds the claim.
    BindVolume { claim: VolumeClaimKey, claim_uid: String, volume: String, volume_version: Option<String> },
    /// Provision the claim's volume for `node` (its `selected-node`
    /// annotation, conditional on the claim's version).
    SelectNode { claim: VolumeClaimKey, claim_version: Option<String>, node: String },
}

impl VolumeWrite {
    pub fn claim(&self) -> &VolumeClaimKey {
        match self {
            Self::BindVolume { claim, .. } | Self::SelectNode { claim, .. } => claim,
        }
    }
}

/// Why a pod's claims do not fit, in kube-scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeMisfit {
    ClaimMissing(String),
    ClaimDeleting(String),
    ClassMissing(String),
    UnboundImmediate,
    VolumeMissing,
    NodeConflict,
    BindConflict,
    NotEnoughSpace,
}

impl fmt::Display for VolumeMisfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClaimMissing(name) => write!(f, "persistentvolumeclaim \"{name}\" not found"),
            Self::ClaimDeleting(name) => write!(f, "persistentvolumeclaim \"{name}\" is being deleted"),
            Self::ClassMissing(name) => write!(f, "storageclass.storage.k8s.io \"{name}\" not found"),
            Self::UnboundImmediate => f.write_str("pod has unbound immediate PersistentVolumeClaims"),
            Self::VolumeMissing => {
                f.write_str("node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)")
            }
            Self::NodeConflict => f.write_str("node(s) had volume node affinity conflict"),
            Self::BindConflict => f.write_str("node(s) didn't find available persistent volumes to bind"),
            Self::NotEnoughSpace => f.write_str("node(s) did not have enough free storage"),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct VolumeInventory {
    pub(super) claims: HashMap<VolumeClaimKey, VolumeClaim>,
    pub(super) volumes: HashMap<String, PersistentVolume>,
    pub(super) classes: HashMap<String, StorageClass>,
    /// CSINodes by node name, and VolumeAttachments by name.
    pub(super) csi_nodes: HashMap<String, CsiNode>,
    pub(super) attachments: HashMap<String, VolumeAttachment>,
    /// CSIDrivers by name, and CSIStorageCapacities.
    pub(super) csi_drivers: HashMap<String, CsiDriver>,
    pub(super) capacities: HashMap<StorageCapacityKey, StorageCapacity>,
    /// Writes chosen for pods placed in this or an earlier pass whose
    /// effect the watches do not show yet, by pod UID.
    pub(super) assumed: HashMap<String, Vec<VolumeWrite>>,
}

impl VolumeInventory {
    pub fn claim(&self, key: &VolumeClaimKey) -> Option<&VolumeClaim> {
        self.claims.get(key)
    }

    pub fn apply(&mut self, object: VolumeObject) {
        match object {
            VolumeObject::Claim(claim) => {
                self.claims.insert(claim.key.clone(), claim);
            }
            VolumeObject::Volume(volume) => {
                self.volumes.insert(volume.name.clone(), volume);
            }
            VolumeObject::Class(class) => {
                self.classes.insert(class.name.clone(), class);
            }
            VolumeObject::CsiNode(node) => {
                self.csi_nodes.insert(node.node.clone(), node);
            }
            VolumeObject::Attachment(attachment) => {
                self.attachments.insert(attachment.name.clone(), attachment);
            }
            VolumeObject::CsiDriver(driver) => {
                self.csi_drivers.insert(driver.name.clone(), driver);
            }
            VolumeObject::Capacity(capacity) => {
                self.capacities.insert(capacity.key.clone(), capacity);
            }
        }
        self.drop_settled();
    }

    pub fn delete(&mut self, key: &VolumeObjectKey) {
        match key {
            VolumeObjectKey::Claim(key) => self.claims.remove(key).map(|_| ()),
            VolumeObjectKey::Volume(name) => self.volumes.remove(name).map(|_| ()),
            VolumeObjectKey::Class(name) => self.classes.remove(name).map(|_| ()),
            VolumeObjectKey::CsiNode(name) => self.csi_nodes.remove(name).map(|_| ()),
            VolumeObjectKey::Attachment(name) => self.attachments.remove(name).map(|_| ()),
            VolumeObjectKey::CsiDriver(name) => self.csi_drivers.remove(name).map(|_| ()),
            VolumeObjectKey::Capacity(key) => self.capacities.remove(key).map(|_| ()),
        };
    }

    /// The keys of every object of `kind` known now.
    pub fn keys(&self, kind: VolumeKind) -> Vec<VolumeObjectKey> {
        match kind {
            VolumeKind::Claim => self.claims.keys().cloned().map(VolumeObjectKey::Claim).collect(),
            VolumeKind::Volume => self.volumes.keys().cloned().map(VolumeObjectKey::Volume).collect(),
            VolumeKind::Class => self.classes.keys().cloned().map(VolumeObjectKey::Class).collect(),
            VolumeKind::CsiNode => self.csi_nodes.keys().cloned().map(VolumeObjectKey::CsiNode).collect(),
            VolumeKind::Attachment => self.attachments.keys().cloned().map(VolumeObjectKey::Attachment).collect(),
            VolumeKind::CsiDriver => self.csi_drivers.keys().cloned().map(VolumeObjectKey::CsiDriver).collect(),
            VolumeKind::Capacity => self.capacities.keys().cloned().map(VolumeObjectKey::Capacity).collect(),
        }
    }

    /// Holds the writes chosen for a pod being placed.
    pub fn assume(&mut self, uid: &str, writes: &[VolumeWrite]) {
        if !writes.is_empty() {
            self.assumed.insert(uid.to_string(), writes.to_vec());
        }
    }

    /// Drops what was assumed for a pod (its bind failed, or it is gone).
    pub fn forget(&mut self, uid: &str) {
        self.assumed.remove(uid);
    }

    /// Assumptions the watches now show done: the volume names the claim,
    /// or the claim its node or volume.
    fn drop_settled(&mut self) {
        let (claims, volumes) = (&self.claims, &self.volumes);
        let done = |write: &VolumeWrite| match write {
            VolumeWrite::BindVolume { claim, volume, .. } => {
                volumes.get(volume).and_then(|v| v.claim_ref.as_ref()).is_some_and(|r| r.key == *claim)
            }
            VolumeWrite::SelectNode { claim, node, .. } => claims
                .get(claim)
                .is_some_and(|c| c.volume_name.is_some() || c.selected_node.as_deref() == Some(node.as_str())),
        };
        self.assumed.retain(|_, writes| {
            writes.retain(|w| !done(w));
            !writes.is_empty()
        });
    }

    fn assumed_writes(&self) -> impl Iterator<Item = &VolumeWrite> {
        self.assumed.values().flatten()
    }

    /// What must hold before any node is looked at: every claim exists, is
    /// not being deleted, and if unbound waits for its first consumer.
    pub fn check_claims(&self, pod: &PodInfo) -> Result<(), VolumeMisfit> {
        for name in &pod.volume_claims {
            let key = VolumeClaimKey { namespace: pod.key.namespace.clone(), name: name.clone() };
            let claim = self.claims.get(&key).ok_or_else(|| VolumeMisfit::ClaimMissing(name.clone()))?;
            if claim.deleting {
                return Err(VolumeMisfit::ClaimDeleting(name.clone()));
            }
            if claim.volume_name.is_some() {
                continue;
            }
            if claim.storage_class.is_empty() {
                return Err(VolumeMisfit::UnboundImmediate);
            }
            let class = self
                .classes
                .get(&claim.storage_class)
                .ok_or_else(|| VolumeMisfit::ClassMissing(claim.storage_class.clone()))?;
            if class.binding_mode == BindingMode::Immediate {
                return Err(VolumeMisfit::UnboundImmediate);
            }
        }
        Ok(())
    }

    /// Whether the pod's claims can be used on `node` (after `check_claims`
    /// passed), and the writes that bind the unbound ones there: each to
    /// the smallest available volume the node reaches, else to a volume its
    /// class provisions for the node.
    pub fn fit(&self, pod: &PodInfo, node: &NodeSpec) -> Result<Vec<VolumeWrite>, VolumeMisfit> {
        let mut writes = Vec::new();
        let mut chosen: BTreeSet<&str> = BTreeSet::new();
        for name in &pod.volume_claims {
            let key = VolumeClaimKey { namespace: pod.key.namespace.clone(), name: name.clone() };
            let Some(claim) = self.claims.get(&key) else { return Err(VolumeMisfit::ClaimMissing(name.clone())) };
            if let Some(volume) = &claim.volume_name {
                let volume = self.volumes.get(volume).ok_or(VolumeMisfit::VolumeMissing)?;
                if !volume.reachable_from(node) {
                    return Err(VolumeMisfit::NodeConflict);
                }
                continue;
            }
            // Another pod of this pass (or one not yet bound) chose already.
            if let Some(write) = self.assumed_writes().find(|w| *w.claim() == key) {
                match write {
                    VolumeWrite::BindVolume { volume, .. } => {
                        let reachable = self.volumes.get(volume).is_some_and(|v| v.reachable_from(node));
                        if !reachable {
                            return Err(VolumeMisfit::NodeConflict);
                        }
                    }
                    VolumeWrite::SelectNode { node: selected, .. } if *selected != node.name => {
                        return Err(VolumeMisfit::BindConflict);
                    }
                    VolumeWrite::SelectNode { .. } => {}
                }
                continue;
            }
            if let Some(selected) = &claim.selected_node {
                // Being provisioned for that node.
                if *selected != node.name {
                    return Err(VolumeMisfit::BindConflict);
                }
                continue;
            }
            if let Some(volume) = self.best_volume(claim, node, &chosen) {
                chosen.insert(&volume.name);
                writes.push(VolumeWrite::BindVolume {
                    claim: key,
                    claim_uid: claim.uid.clone(),
                    volume: volume.name.clone(),
                    volume_version: volume.resource_version.clone(),
                });
                continue;
            }
            let Some(class) = self.classes.get(&claim.storage_class).filter(|c| c.provisions_for(node)) else {
                return Err(VolumeMisfit::BindConflict);
            };
            if !self.has_room(class, claim, node) {
                return Err(VolumeMisfit::NotEnoughSpace);
            }
            writes.push(VolumeWrite::SelectNode {
                claim: key,
                claim_version: claim.resource_version.clone(),
                node: node.name.clone(),
            });
        }
        Ok(writes)
    }

    /// Whether the class's driver can provision the claim's volume for
    /// `node`: it publishes no capacity, or a capacity of the class that
    /// reaches the node has room for it. Like kube-scheduler, each claim is
    /// checked on its own, against capacity as published.
    fn has_room(&self, class: &StorageClass, claim: &VolumeClaim, node: &NodeSpec) -> bool {
        let tracked = self.csi_drivers.get(&class.provisioner).is_some_and(|d| d.capacity_tracked);
        !tracked || self.capacities.values().any(|c| c.has_room(&class.name, claim.request_bytes, &node.labels))
    }

    /// A volume pre-bound to the claim, else the smallest available one
    /// that satisfies it and that `node` reaches, not chosen for another
    /// claim (`chosen` in this pod, or assumed for another pod).
    fn best_volume<'a>(
        &'a self,
        claim: &VolumeClaim,
        node: &NodeSpec,
        chosen: &BTreeSet<&str>,
    ) -> Option<&'a PersistentVolume> {
        let assumed: BTreeSet<&str> = self
            .assumed_writes()
            .filter_map(|w| match w {
                VolumeWrite::BindVolume { volume, .. } => Some(volume.as_str()),
                VolumeWrite::SelectNode { .. } => None,
            })
            .collect();
        let satisfies = |v: &PersistentVolume| {
            !v.deleting
                && v.storage_class == claim.storage_class
                && v.volume_mode == claim.volume_mode
                && claim.access_modes.is_subset(&v.access_modes)
                && v.capacity_bytes >= claim.request_bytes
                && claim.selector.as_ref().is_none_or(|s| s.matches(&v.labels))
                && v.reachable_from(node)
                && !chosen.contains(v.name.as_str())
                && !assumed.contains(v.name.as_str())
        };
        let pre_bound = |v: &PersistentVolume| {
            v.claim_ref.as_ref().is_some_and(|r| r.key == claim.key && r.uid.as_ref().is_none_or(|u| *u == claim.uid))
        };
        let candidates = self.volumes.values().filter(|v| satisfies(v));
        let mut free = Vec::new();
        for volume in candidates {
            if pre_bound(volume) {
                return Some(volume);
            }
            if volume.claim_ref.is_none() && volume.phase == VolumePhase::Available {
                free.push(volume);
            }
        }
        free.into_iter().min_by(|a, b| a.capacity_bytes.cmp(&b.capacity_bytes).then(a.name.cmp(&b.name)))
    }
}
