//! PersistentVolumeClaims, PersistentVolumes, StorageClasses, CSINodes,
//! VolumeAttachments, CSIDrivers and CSIStorageCapacities into the core's
//! volume types, and pods' volumes into the claims they use.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume as K8sVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{
    CSIDriver as K8sCsiDriver, CSINode as K8sCsiNode, CSIStorageCapacity as K8sCapacity, StorageClass as K8sClass,
    VolumeAttachment as K8sAttachment,
};
use phalanx_core::pod::{NodeSelectorTerm, SelectorOperator, SelectorRequirement};
use phalanx_core::quantity::parse_units;
use phalanx_core::volume::in_tree;
use phalanx_core::volume::{
    AccessMode, AttachedSource, AttachedVolume, BindingMode, ClaimRef, CsiDriver, CsiNode, PersistentVolume,
    StorageCapacity, StorageCapacityKey, StorageClass, VolumeAttachment, VolumeClaim, VolumeClaimKey, VolumeMode,
    VolumePhase, VolumeWrite,
};
use serde_json::json;

use crate::pod_rules::label_selector;
use crate::translate::{TranslateError, error, term};

/// Where the scheduler asks a claim's provisioner for a volume.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// Set on a volume the scheduler (not a user) pre-bound to a claim.
pub const BOUND_BY_CONTROLLER_ANNOTATION: &str = "pv.kubernetes.io/bound-by-controller";

fn access_modes(
    modes: Option<&Vec<String>>,
    object: &str,
    field: &str,
) -> Result<BTreeSet<AccessMode>, TranslateError> {
    modes
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, mode)| match mode.as_str() {
            "ReadWriteOnce" => Ok(AccessMode::ReadWriteOnce),
            "ReadOnlyMany" => Ok(AccessMode::ReadOnlyMany),
            "ReadWriteMany" => Ok(AccessMode::ReadWriteMany),
            "ReadWriteOncePod" => Ok(AccessMode::ReadWriteOncePod),
            other => Err(error(object, format!("{field}[{i}]"), format!("unknown access mode {other:?}"))),
        })
        .collect()
}

fn volume_mode(mode: Option<&str>, object: &str, field: &str) -> Result<VolumeMode, TranslateError> {
    match mode {
        None | Some("Filesystem") => Ok(VolumeMode::Filesystem),
        Some("Block") => Ok(VolumeMode::Block),
        Some(other) => Err(error(object, field, format!("unknown volume mode {other:?}"))),
    }
}

fn bytes(text: &str, object: &str, field: &str) -> Result<i64, TranslateError> {
    parse_units(text).map_err(|e| error(object, field, e.to_string()))
}

pub fn volume_claim(claim: &PersistentVolumeClaim) -> Result<VolumeClaim, TranslateError> {
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let object = format!("persistentvolumeclaim {namespace}/{name}");
    let spec = claim.spec.as_ref().ok_or_else(|| error(&object, "spec", "missing"))?;
    let request = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage"));
    let request_bytes =
        request.map(|q| bytes(&q.0, &object, "spec.resources.requests.storage")).transpose()?.unwrap_or(0);
    let selector = spec.selector.as_ref().map(|s| label_selector(s, &object, "spec.selector")).transpose()?;
    let annotations = claim.metadata.annotations.as_ref();
    Ok(VolumeClaim {
        key: VolumeClaimKey { namespace, name },
        uid: claim.metadata.uid.clone().unwrap_or_default(),
        resource_version: claim.metadata.resource_version.clone(),
        storage_class: spec.storage_class_name.clone().unwrap_or_default(),
        volume_name: spec.volume_name.clone().filter(|v| !v.is_empty()),
        request_bytes,
        access_modes: access_modes(spec.access_modes.as_ref(), &object, "spec.accessModes")?,
        volume_mode: volume_mode(spec.volume_mode.as_deref(), &object, "spec.volumeMode")?,
        selector,
        selected_node: annotations.and_then(|a| a.get(SELECTED_NODE_ANNOTATION)).cloned().filter(|n| !n.is_empty()),
        deleting: claim.metadata.deletion_timestamp.is_some(),
    })
}

pub fn persistent_volume(volume: &K8sVolume) -> Result<PersistentVolume, TranslateError> {
    let name = volume.metadata.name.clone().unwrap_or_default();
    let object = format!("persistentvolume {name}");
    let spec = volume.spec.as_ref().ok_or_else(|| error(&object, "spec", "missing"))?;
    let capacity = spec.capacity.as_ref().and_then(|c| c.get("storage"));
    let capacity_bytes = capacity.map(|q| bytes(&q.0, &object, "spec.capacity.storage")).transpose()?.unwrap_or(0);
    let node_affinity = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .map(|required| {
            required
                .node_selector_terms
                .iter()
                .enumerate()
                .map(|(i, t)| term(t, &object, &format!("spec.nodeAffinity.required.nodeSelectorTerms[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let claim_ref = spec.claim_ref.as_ref().and_then(|r| {
        Some(ClaimRef {
            key: VolumeClaimKey { namespace: r.namespace.clone()?, name: r.name.clone()? },
            uid: r.uid.clone().filter(|u| !u.is_empty()),
        })
    });
    let phase = match volume.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Available") => VolumePhase::Available,
        Some("Bound") => VolumePhase::Bound,
        Some("Released") => VolumePhase::Released,
        Some("Failed") => VolumePhase::Failed,
        _ => VolumePhase::Pending,
    };
    Ok(PersistentVolume {
        name,
        resource_version: volume.metadata.resource_version.clone(),
        storage_class: spec.storage_class_name.clone().unwrap_or_default(),
        capacity_bytes,
        access_modes: access_modes(spec.access_modes.as_ref(), &object, "spec.accessModes")?,
        volume_mode: volume_mode(spec.volume_mode.as_deref(), &object, "spec.volumeMode")?,
        node_affinity,
        claim_ref,
        csi: attached_as(spec),
        phase,
        labels: volume.metadata.labels.clone().unwrap_or_default(),
        deleting: volume.metadata.deletion_timestamp.is_some(),
    })
}

/// The CSI volume a PersistentVolume counts as against attach limits: its
/// `spec.csi`, or where it is of an in-tree plugin that migrated to CSI, the
/// migrated driver's volume (the handle as the plugin names the volume).
fn attached_as(spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec) -> Option<AttachedVolume> {
    if let Some(csi) = &spec.csi {
        return Some(AttachedVolume { driver: csi.driver.clone(), handle: csi.volume_handle.clone() });
    }
    let (plugin, handle) = if let Some(ebs) = &spec.aws_elastic_block_store {
        // `aws://<zone>/vol-...` names the same volume as `vol-...`.
        ("kubernetes.io/aws-ebs", ebs.volume_id.rsplit('/').next().unwrap_or_default().to_string())
    } else if let Some(pd) = &spec.gce_persistent_disk {
        ("kubernetes.io/gce-pd", pd.pd_name.clone())
    } else if let Some(disk) = &spec.azure_disk {
        ("kubernetes.io/azure-disk", disk.disk_uri.clone())
    } else if let Some(cinder) = &spec.cinder {
        ("kubernetes.io/cinder", cinder.volume_id.clone())
    } else if let Some(portworx) = &spec.portworx_volume {
        ("kubernetes.io/portworx-volume", portworx.volume_id.clone())
    } else {
        return None;
    };
    let driver = in_tree::migrated_driver(plugin)?;
    Some(AttachedVolume { driver: driver.to_string(), handle })
}

pub fn storage_class(class: &K8sClass) -> Result<StorageClass, TranslateError> {
    let name = class.metadata.name.clone().unwrap_or_default();
    let object = format!("storageclass {name}");
    let binding_mode = match class.volume_binding_mode.as_deref() {
        None | Some("Immediate") => BindingMode::Immediate,
        Some("WaitForFirstConsumer") => BindingMode::WaitForFirstConsumer,
        Some(other) => return Err(error(&object, "volumeBindingMode", format!("unknown mode {other:?}"))),
    };
    // Each term: every listed label must have one of its values.
    let allowed_topologies = class
        .allowed_topologies
        .iter()
        .flatten()
        .map(|t| NodeSelectorTerm {
            match_labels: t
                .match_label_expressions
                .iter()
                .flatten()
                .map(|r| SelectorRequirement { key: r.key.clone(), operator: SelectorOperator::In(r.values.clone()) })
                .collect(),
            match_node_name: Vec::new(),
        })
        .collect();
    Ok(StorageClass { name, provisioner: class.provisioner.clone(), binding_mode, allowed_topologies })
}

/// A CSINode's attach limits: its drivers that report `allocatable.count`.
pub fn csi_node(node: &K8sCsiNode) -> Result<CsiNode, TranslateError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let object = format!("csinode {name}");
    let mut attach_limits = std::collections::BTreeMap::new();
    for (i, driver) in node.spec.drivers.iter().enumerate() {
        let Some(count) = driver.allocatable.as_ref().and_then(|a| a.count) else { continue };
        let field = format!("spec.drivers[{i}].allocatable.count");
        let count = u32::try_from(count).map_err(|_| error(&object, field, format!("negative count {count}")))?;
        attach_limits.insert(driver.name.clone(), count);
    }
    Ok(CsiNode { node: name, attach_limits })
}

/// A VolumeAttachment: the node, the driver, and the volume it names.
pub fn volume_attachment(attachment: &K8sAttachment) -> Result<VolumeAttachment, TranslateError> {
    let name = attachment.metadata.name.clone().unwrap_or_default();
    let object = format!("volumeattachment {name}");
    let spec = &attachment.spec;
    let inline = spec.source.inline_volume_spec.as_ref().and_then(|v| v.csi.as_ref());
    let source = match (&spec.source.persistent_volume_name, inline) {
        (Some(volume), _) => AttachedSource::Volume(volume.clone()),
        (None, Some(csi)) => AttachedSource::Inline(csi.volume_handle.clone()),
        (None, None) => {
            return Err(error(&object, "spec.source", "names neither persistentVolumeName nor inlineVolumeSpec.csi"));
        }
    };
    Ok(VolumeAttachment { name, node: spec.node_name.clone(), driver: spec.attacher.clone(), source })
}

/// A CSIDriver: whether provisioning for it must find published capacity.
pub fn csi_driver(driver: &K8sCsiDriver) -> CsiDriver {
    CsiDriver {
        name: driver.metadata.name.clone().unwrap_or_default(),
        capacity_tracked: driver.spec.storage_capacity == Some(true),
    }
}

/// A CSIStorageCapacity: the class, the nodes it speaks for, and its room.
pub fn storage_capacity(capacity: &K8sCapacity) -> Result<StorageCapacity, TranslateError> {
    let key = StorageCapacityKey {
        namespace: capacity.metadata.namespace.clone().unwrap_or_default(),
        name: capacity.metadata.name.clone().unwrap_or_default(),
    };
    let object = format!("csistoragecapacity {key}");
    let node_topology =
        capacity.node_topology.as_ref().map(|s| label_selector(s, &object, "nodeTopology")).transpose()?;
    let size = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>, field: &str| {
        q.map(|q| bytes(&q.0, &object, field)).transpose()
    };
    Ok(StorageCapacity {
        storage_class: capacity.storage_class_name.clone(),
        node_topology,
        capacity_bytes: size(capacity.capacity.as_ref(), "capacity")?,
        maximum_volume_bytes: size(capacity.maximum_volume_size.as_ref(), "maximumVolumeSize")?,
        key,
    })
}

/// The claims a pod's volumes use: `persistentVolumeClaim.claimName`, and
/// for a generic ephemeral volume the claim made for it (`<pod>-<volume>`).
pub fn pod_volume_claims(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(claim), _) => Some(claim.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            (None, None) => None,
        })
        .collect()
}

/// The merge patch a `VolumeWrite` sends (to the volume for `BindVolume`,
/// to the claim for `SelectNode`), conditional on the version it was
/// chosen from, as kube-scheduler's volume binder writes them.
pub fn volume_write_patch(write: &VolumeWrite) -> serde_json::Value {
    match write {
        VolumeWrite::BindVolume { claim, claim_uid, volume_version, .. } => json!({
            "metadata": {
                "resourceVersion": volume_version,
                "annotations": {BOUND_BY_CONTROLLER_ANNOTATION: "yes"},
            },
            "spec": {"claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace, "name": claim.name, "uid": claim_uid,
            }},
        }),
        VolumeWrite::SelectNode { claim_version, node, .. } => json!({
            "metadata": {
                "resourceVersion": claim_version,
                "annotations": {SELECTED_NODE_ANNOTATION: node},
            },
        }),
    }
}

/// How far a claim the scheduler wrote to has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimProgress {
    Bound,
    Waiting,
    /// It will not be bound for this placement: why.
    GivenUp(String),
}

/// Where `claim` stands after `write`: bound once it names its volume and
/// says so; given up when its provisioner gave the node back (the
/// annotation removed, which is how it asks for another node) or it is
/// being deleted.
pub fn claim_progress(claim: &PersistentVolumeClaim, write: &VolumeWrite) -> ClaimProgress {
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let named = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
    let key = write.claim();
    if bound && named {
        return ClaimProgress::Bound;
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return ClaimProgress::GivenUp(format!("PersistentVolumeClaim {key} is being deleted"));
    }
    let selected = claim.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE_ANNOTATION));
    match write {
        VolumeWrite::SelectNode { node, .. } if selected != Some(node) => {
            ClaimProgress::GivenUp(format!("PersistentVolumeClaim {key}: its provisioner gave up on node {node}"))
        }
        _ => ClaimProgress::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_csi_node_gives_the_limits_its_drivers_report_and_a_negative_one_is_named() {
        let node: K8sCsiNode = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"drivers": [
                {"name": "ebs.csi.aws.com", "nodeID": "i-1", "allocatable": {"count": 25}},
                {"name": "nfs.csi.k8s.io", "nodeID": "n1"},
            ]}
        }))
        .unwrap();
        let node = csi_node(&node).unwrap();
        assert_eq!(node.node, "n1");
        assert_eq!(node.attach_limits.into_iter().collect::<Vec<_>>(), [("ebs.csi.aws.com".to_string(), 25)]);

        let bad: K8sCsiNode = serde_json::from_value(json!({
            "metadata": {"name": "n2"},
            "spec": {"drivers": [{"name": "d", "nodeID": "n2", "allocatable": {"count": -1}}]}
        }))
        .unwrap();
        let err = csi_node(&bad).unwrap_err().to_string();
        assert!(err.contains("csinode n2") && err.contains("spec.drivers[0].allocatable.count"), "{err}");
    }

    #[test]
    fn a_storage_capacity_gives_its_class_nodes_and_room_and_a_bad_size_is_named() {
        let capacity: K8sCapacity = serde_json::from_value(json!({
            "metadata": {"name": "cap-1", "namespace": "kube-system"},
            "storageClassName": "lvm",
            "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": "n1"}},
            "capacity": "100Gi",
            "maximumVolumeSize": "10Gi"
        }))
        .unwrap();
        let capacity = storage_capacity(&capacity).unwrap();
        assert_eq!(capacity.key.to_string(), "kube-system/cap-1");
        assert_eq!((capacity.capacity_bytes, capacity.maximum_volume_bytes), (Some(100 << 30), Some(10 << 30)));
        let n1 = [("kubernetes.io/hostname".to_string(), "n1".to_string())].into();
        assert!(capacity.has_room("lvm", 10 << 30, &n1));
        assert!(!capacity.has_room("lvm", 11 << 30, &n1), "over the largest volume");

        let bad: K8sCapacity = serde_json::from_value(json!({
            "metadata": {"name": "cap-2", "namespace": "kube-system"},
            "storageClassName": "lvm",
            "capacity": "-1Gi"
        }))
        .unwrap();
        let err = storage_capacity(&bad).unwrap_err().to_string();
        assert!(err.contains("csistoragecapacity kube-system/cap-2") && err.contains("capacity"), "{err}");
        let driver: K8sCsiDriver =
            serde_json::from_value(json!({"metadata": {"name": "lvm.csi"}, "spec": {"storageCapacity": true}}))
                .unwrap();
        assert!(csi_driver(&driver).capacity_tracked);
    }

    #[test]
    fn a_volume_attachment_names_its_volume_or_its_inline_handle() {
        let attachment = |source: serde_json::Value| -> K8sAttachment {
            serde_json::from_value(json!({
                "metadata": {"name": "va-1"},
                "spec": {"attacher": "ebs.csi.aws.com", "nodeName": "n1", "source": source}
            }))
            .unwrap()
        };
        let by_volume = volume_attachment(&attachment(json!({"persistentVolumeName": "pv-1"}))).unwrap();
        assert_eq!(by_volume.source, AttachedSource::Volume("pv-1".into()));
        assert_eq!((by_volume.node.as_str(), by_volume.driver.as_str()), ("n1", "ebs.csi.aws.com"));
        let inline = json!({"inlineVolumeSpec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-9"}}});
        assert_eq!(volume_attachment(&attachment(inline)).unwrap().source, AttachedSource::Inline("vol-9".into()));
        let err = volume_attachment(&attachment(json!({}))).unwrap_err().to_string();
        assert!(err.contains("volumeattachment va-1") && err.contains("spec.source"), "{err}");
    }

    #[test]
    fn a_csi_volume_keeps_its_driver_and_handle() {
        let volume: K8sVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv-1"},
            "spec": {"capacity": {"storage": "1Gi"}, "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}
        }))
        .unwrap();
        let csi = persistent_volume(&volume).unwrap().csi.unwrap();
        assert_eq!((csi.driver.as_str(), csi.handle.as_str()), ("ebs.csi.aws.com", "vol-1"));
    }

    #[test]
    fn an_in_tree_volume_counts_as_its_migrated_driver_s() {
        let in_tree = |source: serde_json::Value| -> Option<(String, String)> {
            let mut spec = json!({"capacity": {"storage": "1Gi"}});
            spec.as_object_mut().unwrap().extend(source.as_object().unwrap().clone());
            let volume: K8sVolume = serde_json::from_value(json!({"metadata": {"name": "pv"}, "spec": spec})).unwrap();
            persistent_volume(&volume).unwrap().csi.map(|c| (c.driver, c.handle))
        };
        let ebs = in_tree(json!({"awsElasticBlockStore": {"volumeID": "aws://us-east-1a/vol-0abc"}}));
        assert_eq!(ebs, Some(("ebs.csi.aws.com".into(), "vol-0abc".into())));
        let pd = in_tree(json!({"gcePersistentDisk": {"pdName": "data-1"}}));
        assert_eq!(pd, Some(("pd.csi.storage.gke.io".into(), "data-1".into())));
        // Not translated by kube-scheduler's NodeVolumeLimits: counts against no limit.
        assert_eq!(in_tree(json!({"vsphereVolume": {"volumePath": "[ds] v.vmdk"}})), None);
        assert_eq!(in_tree(json!({"hostPath": {"path": "/data"}})), None);
    }
}
