use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::label_selector::LabelSelector;
use crate::pod::{PodInfo, SelectorOperator, SelectorRequirement};
use crate::testing::{gpu_node, gpu_pod};

const GIB: i64 = 1 << 30;

fn on_host(node: &str) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_labels: vec![SelectorRequirement {
            key: "kubernetes.io/hostname".into(),
            operator: SelectorOperator::In(vec![node.into()]),
        }],
        match_node_name: vec![],
    }
}

fn node(name: &str) -> NodeSpec {
    let mut node = gpu_node(name, 8);
    node.labels.insert("kubernetes.io/hostname".into(), name.into());
    node
}

fn class(name: &str, provisioner: &str, binding_mode: BindingMode) -> VolumeObject {
    VolumeObject::Class(StorageClass {
        name: name.into(),
        provisioner: provisioner.into(),
        binding_mode,
        allowed_topologies: vec![],
    })
}

fn claim(name: &str, class: &str, gib: i64) -> VolumeClaim {
    VolumeClaim {
        key: VolumeClaimKey { namespace: "default".into(), name: name.into() },
        uid: format!("uid-{name}"),
        resource_version: Some("1".into()),
        storage_class: class.into(),
        volume_name: None,
        request_bytes: gib * GIB,
        access_modes: BTreeSet::from([AccessMode::ReadWriteOnce]),
        volume_mode: VolumeMode::Filesystem,
        selector: None,
        selected_node: None,
        deleting: false,
    }
}

fn local_volume(name: &str, class: &str, gib: i64, host: &str) -> PersistentVolume {
    PersistentVolume {
        name: name.into(),
        resource_version: Some("7".into()),
        storage_class: class.into(),
        capacity_bytes: gib * GIB,
        access_modes: BTreeSet::from([AccessMode::ReadWriteOnce]),
        volume_mode: VolumeMode::Filesystem,
        node_affinity: vec![on_host(host)],
        claim_ref: None,
        csi: None,
        phase: VolumePhase::Available,
        labels: BTreeMap::new(),
        deleting: false,
    }
}

fn using(name: &str, claims: &[&str]) -> PodInfo {
    let mut pod = gpu_pod(name, 1);
    pod.volume_claims = claims.iter().map(|c| c.to_string()).collect();
    pod
}

/// Local storage: a class that waits for its first consumer, two local
/// volumes on n1 (100 and 50 GiB) and one on n2.
fn local_storage() -> VolumeInventory {
    let mut v = VolumeInventory::default();
    v.apply(class("local", NO_PROVISIONER, BindingMode::WaitForFirstConsumer));
    v.apply(VolumeObject::Volume(local_volume("big-n1", "local", 100, "n1")));
    v.apply(VolumeObject::Volume(local_volume("small-n1", "local", 50, "n1")));
    v.apply(VolumeObject::Volume(local_volume("only-n2", "local", 100, "n2")));
    v
}

#[test]
fn an_unbound_claim_takes_the_smallest_local_volume_the_node_reaches() {
    let mut v = local_storage();
    v.apply(VolumeObject::Claim(claim("data", "local", 40)));
    let pod = using("p", &["data"]);
    v.check_claims(&pod).expect("waits for its first consumer");
    let writes = v.fit(&pod, &node("n1")).expect("fits on n1");
    assert_eq!(
        writes,
        [VolumeWrite::BindVolume {
            claim: VolumeClaimKey { namespace: "default".into(), name: "data".into() },
            claim_uid: "uid-data".into(),
            volume: "small-n1".into(),
            volume_version: Some("7".into()),
        }]
    );
    v.apply(VolumeObject::Claim(claim("huge", "local", 200)));
    assert_eq!(v.fit(&using("q", &["huge"]), &node("n1")), Err(VolumeMisfit::BindConflict));
    assert_eq!(v.fit(&using("r", &["data"]), &node("n3")), Err(VolumeMisfit::BindConflict), "no volume there");
}

#[test]
fn volumes_assumed_for_one_pod_are_not_given_to_another_until_forgotten() {
    let mut v = local_storage();
    for name in ["a", "b", "c"] {
        v.apply(VolumeObject::Claim(claim(name, "local", 40)));
    }
    let first = v.fit(&using("p1", &["a"]), &node("n1")).unwrap();
    v.assume("uid-p1", &first);
    let second = v.fit(&using("p2", &["b"]), &node("n1")).unwrap();
    assert!(matches!(&second[0], VolumeWrite::BindVolume { volume, .. } if volume == "big-n1"));
    v.assume("uid-p2", &second);
    assert_eq!(v.fit(&using("p3", &["c"]), &node("n1")), Err(VolumeMisfit::BindConflict), "both n1 volumes taken");
    v.forget("uid-p2");
    assert!(v.fit(&using("p3", &["c"]), &node("n1")).is_ok(), "a failed bind gives its volume back");
    // One pod with two claims gets two different volumes.
    v.forget("uid-p1");
    let both = v.fit(&using("p4", &["a", "b"]), &node("n1")).unwrap();
    let volumes: BTreeSet<_> = both
        .iter()
        .map(|w| match w {
            VolumeWrite::BindVolume { volume, .. } => volume.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(volumes.len(), 2);
}

#[test]
fn an_assumption_is_dropped_once_the_watch_shows_the_volume_taken() {
    let mut v = local_storage();
    v.apply(VolumeObject::Claim(claim("a", "local", 40)));
    let writes = v.fit(&using("p1", &["a"]), &node("n1")).unwrap();
    v.assume("uid-p1", &writes);
    let mut taken = local_volume("small-n1", "local", 50, "n1");
    taken.claim_ref = Some(ClaimRef { key: claim("a", "local", 40).key, uid: Some("uid-a".into()) });
    v.apply(VolumeObject::Volume(taken));
    assert!(v.assumed.is_empty(), "{:?}", v.assumed);
}

#[test]
fn a_bound_claim_limits_the_pod_to_nodes_that_reach_its_volume() {
    let mut v = local_storage();
    let mut bound = claim("data", "local", 40);
    bound.volume_name = Some("only-n2".into());
    v.apply(VolumeObject::Claim(bound));
    let pod = using("p", &["data"]);
    assert_eq!(v.fit(&pod, &node("n1")), Err(VolumeMisfit::NodeConflict));
    assert_eq!(v.fit(&pod, &node("n2")), Ok(vec![]), "nothing to write for a bound claim");
    v.delete(&VolumeObjectKey::Volume("only-n2".into()));
    assert_eq!(v.fit(&pod, &node("n2")), Err(VolumeMisfit::VolumeMissing));
    assert_eq!(
        VolumeMisfit::NodeConflict.to_string(),
        "node(s) had volume node affinity conflict",
        "kube-scheduler's words"
    );
}

#[test]
fn claims_that_cannot_be_bound_by_scheduling_fail_everywhere() {
    let mut v = local_storage();
    v.apply(class("fast", "ebs.csi.aws.com", BindingMode::Immediate));
    v.apply(VolumeObject::Claim(claim("immediate", "fast", 10)));
    let mut going = claim("going", "local", 10);
    going.deleting = true;
    v.apply(VolumeObject::Claim(going));
    v.apply(VolumeObject::Claim(claim("classless", "missing", 10)));
    let check = |claims: &[&str]| v.check_claims(&using("p", claims));
    assert_eq!(check(&["nope"]), Err(VolumeMisfit::ClaimMissing("nope".into())));
    assert_eq!(check(&["immediate"]).unwrap_err().to_string(), "pod has unbound immediate PersistentVolumeClaims");
    assert_eq!(check(&["going"]), Err(VolumeMisfit::ClaimDeleting("going".into())));
    assert_eq!(check(&["classless"]), Err(VolumeMisfit::ClassMissing("missing".into())));
}

#[test]
fn a_provisioning_class_selects_the_node_within_its_allowed_topologies() {
    let mut v = VolumeInventory::default();
    let mut zonal = StorageClass {
        name: "zonal".into(),
        provisioner: "pd.csi.storage.gke.io".into(),
        binding_mode: BindingMode::WaitForFirstConsumer,
        allowed_topologies: vec![],
    };
    zonal.allowed_topologies = vec![NodeSelectorTerm {
        match_labels: vec![SelectorRequirement {
            key: "topology.kubernetes.io/zone".into(),
            operator: SelectorOperator::In(vec!["a".into()]),
        }],
        match_node_name: vec![],
    }];
    v.apply(VolumeObject::Class(zonal));
    v.apply(VolumeObject::Claim(claim("scratch", "zonal", 10)));
    let mut in_a = node("n1");
    in_a.labels.insert("topology.kubernetes.io/zone".into(), "a".into());
    let pod = using("p", &["scratch"]);
    let writes = v.fit(&pod, &in_a).expect("provisioned in zone a");
    assert!(matches!(&writes[..], [VolumeWrite::SelectNode { node, .. }] if node == "n1"));
    assert_eq!(v.fit(&pod, &node("n2")), Err(VolumeMisfit::BindConflict), "outside the allowed zones");
    // Another member sharing the claim must go where it is provisioned.
    v.assume("uid-p", &writes);
    assert_eq!(v.fit(&using("q", &["scratch"]), &node("n9")), Err(VolumeMisfit::BindConflict));
    let mut other_in_a = node("n3");
    other_in_a.labels.insert("topology.kubernetes.io/zone".into(), "a".into());
    assert_eq!(v.fit(&using("q", &["scratch"]), &other_in_a), Err(VolumeMisfit::BindConflict));
    assert_eq!(v.fit(&using("q", &["scratch"]), &in_a), Ok(vec![]));
}

#[test]
fn a_driver_that_publishes_capacity_provisions_only_where_a_capacity_has_room() {
    const DRIVER: &str = "lvm.csi.example.com";
    let mut v = VolumeInventory::default();
    v.apply(class("lvm", DRIVER, BindingMode::WaitForFirstConsumer));
    v.apply(VolumeObject::Claim(claim("scratch", "lvm", 10)));
    let pod = using("p", &["scratch"]);
    // Without a CSIDriver that asks for it, capacity is not checked.
    assert!(v.fit(&pod, &node("n1")).is_ok());
    v.apply(VolumeObject::CsiDriver(CsiDriver { name: DRIVER.into(), capacity_tracked: true }));
    assert_eq!(v.fit(&pod, &node("n1")), Err(VolumeMisfit::NotEnoughSpace), "no capacity published yet");
    assert_eq!(VolumeMisfit::NotEnoughSpace.to_string(), "node(s) did not have enough free storage");
    let on = |host: &str| LabelSelector::equal_to([("kubernetes.io/hostname", host)]);
    let capacity = |name: &str, class: &str, host: &str, gib: i64, max_gib: Option<i64>| {
        VolumeObject::Capacity(StorageCapacity {
            key: StorageCapacityKey { namespace: "kube-system".into(), name: name.into() },
            storage_class: class.into(),
            node_topology: Some(on(host)),
            capacity_bytes: Some(gib * GIB),
            maximum_volume_bytes: max_gib.map(|g| g * GIB),
        })
    };
    v.apply(capacity("n1-lvm", "lvm", "n1", 100, None));
    v.apply(capacity("n2-lvm", "lvm", "n2", 100, Some(5)));
    v.apply(capacity("n3-other", "other", "n3", 100, None));
    v.apply(capacity("n4-small", "lvm", "n4", 9, None));
    assert!(matches!(&v.fit(&pod, &node("n1")).unwrap()[..], [VolumeWrite::SelectNode { node, .. }] if node == "n1"));
    assert_eq!(v.fit(&pod, &node("n2")), Err(VolumeMisfit::NotEnoughSpace), "its largest volume is 5 GiB");
    assert_eq!(v.fit(&pod, &node("n3")), Err(VolumeMisfit::NotEnoughSpace), "room for another class only");
    assert_eq!(v.fit(&pod, &node("n4")), Err(VolumeMisfit::NotEnoughSpace), "9 GiB left");
    // A capacity without a node topology speaks for no node.
    let mut nowhere = StorageCapacity {
        key: StorageCapacityKey { namespace: "kube-system".into(), name: "nowhere".into() },
        storage_class: "lvm".into(),
        node_topology: None,
        capacity_bytes: Some(100 * GIB),
        maximum_volume_bytes: None,
    };
    v.apply(VolumeObject::Capacity(nowhere.clone()));
    assert_eq!(v.fit(&pod, &node("n5")), Err(VolumeMisfit::NotEnoughSpace));
    nowhere.node_topology = Some(LabelSelector::default());
    v.apply(VolumeObject::Capacity(nowhere));
    assert!(v.fit(&pod, &node("n5")).is_ok(), "an empty node topology speaks for every node");
    v.delete(&VolumeObjectKey::Capacity(StorageCapacityKey {
        namespace: "kube-system".into(),
        name: "nowhere".into(),
    }));
    assert_eq!(v.fit(&pod, &node("n5")), Err(VolumeMisfit::NotEnoughSpace));
    v.delete(&VolumeObjectKey::CsiDriver(DRIVER.into()));
    assert!(v.fit(&pod, &node("n5")).is_ok(), "the driver no longer asks for capacity checks");
}
