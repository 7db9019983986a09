//! Persistent volumes end to end, against the local control plane (its
//! kube-controller-manager runs the PV controller that completes bindings):
//! a claim that waits for its first consumer is bound to the local volume
//! of the node the pod lands on; a provisioner is asked for a volume on the
//! chosen node and the pod binds once it made one; a gang's members take
//! one local volume each; an unbound claim of an Immediate class keeps the
//! pod waiting with kube-scheduler's words; a ReadWriteOncePod claim serves
//! one pod at a time; a node's CSINode limits the CSI volumes attached there;
//! a driver that publishes its capacity gets claims only where it has room.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestEnv, eventually};

const BIND: Duration = Duration::from_secs(60);
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// Cluster-scoped objects of one test (classes, volumes), deleted at the end.
struct Storage {
    env_name: String,
    classes: Api<StorageClass>,
    volumes: Api<PersistentVolume>,
    claims: Api<PersistentVolumeClaim>,
    /// The access mode of the volumes and claims it creates.
    access_mode: &'static str,
}

impl Storage {
    fn new(env: &TestEnv) -> Self {
        Self {
            env_name: env.name.clone(),
            classes: Api::all(env.client.clone()),
            volumes: Api::all(env.client.clone()),
            claims: Api::namespaced(env.client.clone(), &env.name),
            access_mode: "ReadWriteOnce",
        }
    }

    /// A class of this env; returns its name.
    async fn class(&self, suffix: &str, provisioner: &str, binding_mode: &str) -> String {
        let name = format!("{}-{suffix}", self.env_name);
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": binding_mode
        }))
        .unwrap();
        self.classes.create(&PostParams::default(), &class).await.expect("create storage class");
        name
    }

    /// A local volume on `node`, optionally pre-bound to a claim.
    async fn local_volume(
        &self,
        suffix: &str,
        class: &str,
        gib: u32,
        node: &str,
        claim_ref: Option<serde_json::Value>,
    ) {
        let mut spec = json!({
            "capacity": {"storage": format!("{gib}Gi")},
            "accessModes": [self.access_mode],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "local": {"path": "/mnt/disks/ssd0"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
        });
        if let Some(claim_ref) = claim_ref {
            spec["claimRef"] = claim_ref;
        }
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{suffix}", self.env_name)}, "spec": spec
        }))
        .unwrap();
        self.volumes.create(&PostParams::default(), &volume).await.expect("create volume");
    }

    async fn claim(&self, name: &str, class: &str, gib: u32) -> PersistentVolumeClaim {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": [self.access_mode], "storageClassName": class,
                     "resources": {"requests": {"storage": format!("{gib}Gi")}}}
        }))
        .unwrap();
        self.claims.create(&PostParams::default(), &claim).await.expect("create claim")
    }

    /// A CSI volume of `driver` and a claim of the same name, each naming
    /// the other (so the PV controller binds them at once); returns the
    /// volume's name.
    async fn csi_volume(&self, claim: &str, driver: &str) -> String {
        let name = format!("{}-{claim}", self.env_name);
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [self.access_mode],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "csi": {"driver": driver, "volumeHandle": name},
                     "claimRef": {"namespace": self.env_name, "name": claim}}
        }))
        .unwrap();
        self.volumes.create(&PostParams::default(), &volume).await.expect("create volume");
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": claim},
            "spec": {"accessModes": [self.access_mode], "storageClassName": "", "volumeName": name,
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        self.claims.create(&PostParams::default(), &claim).await.expect("create claim");
        name
    }

    /// The volume a claim is bound to, once the PV controller bound it.
    async fn bound_volume(&self, claim: &str) -> String {
        eventually(BIND, &format!("claim {claim} Bound"), || async {
            let claim = self.claims.get(claim).await.ok()?;
            let bound = claim.status?.phase.as_deref() == Some("Bound");
            claim.spec?.volume_name.filter(|_| bound)
        })
        .await
    }

    async fn delete(self) {
        let volumes = self.volumes.list(&Default::default()).await.expect("list volumes");
        for volume in volumes.items.iter().filter_map(|v| v.metadata.name.clone()) {
            if volume.starts_with(&self.env_name) {
                let _ = self.volumes.delete(&volume, &DeleteParams::default()).await;
            }
        }
        let classes = self.classes.list(&Default::default()).await.expect("list classes");
        for class in classes.items.iter().filter_map(|c| c.metadata.name.clone()) {
            if class.starts_with(&self.env_name) {
                let _ = self.classes.delete(&class, &DeleteParams::default()).await;
            }
        }
    }
}

/// A CSINode for `node` whose `driver` may attach `count` volumes; the API to delete it with.
async fn attach_limit(env: &TestEnv, node: &str, driver: &str, count: u32) -> Api<CSINode> {
    let csi_nodes: Api<CSINode> = Api::all(env.client.clone());
    let limit: CSINode = serde_json::from_value(json!({
        "metadata": {"name": node},
        "spec": {"drivers": [{"name": driver, "nodeID": node, "allocatable": {"count": count}}]}
    }))
    .unwrap();
    csi_nodes.create(&PostParams::default(), &limit).await.expect("create CSINode");
    csi_nodes
}

/// `env.pod` mounting these claims.
fn pod_using(env: &TestEnv, name: &str, claims: &[&str]) -> Pod {
    let mut pod = serde_json::to_value(env.pod(name, 0)).unwrap();
    pod["spec"]["volumes"] = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    serde_json::from_value(pod).unwrap()
}

#[tokio::test]
async fn a_claim_waiting_for_its_first_consumer_binds_to_the_local_volume_where_the_pod_lands() {
    let mut env = TestEnv::new("volume-local").await;
    let nodes = env.add_pools("- {name: n, count: 3, gpus: 8}\n").await;
    let storage = Storage::new(&env);
    let class = storage.class("local", "kubernetes.io/no-provisioner", "WaitForFirstConsumer").await;
    // A volume too small on node 0, the right one on node 2.
    storage.local_volume("small", &class, 1, &nodes[0], None).await;
    storage.local_volume("fits", &class, 20, &nodes[2], None).await;
    storage.claim("data", &class, 10).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "trainer", &["data"])).await;
    let node = env.wait_bound("trainer", BIND).await;
    assert_eq!(node, nodes[2], "the only node with a volume large enough");
    assert_eq!(storage.bound_volume("data").await, format!("{}-fits", env.name));
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_members_of_a_gang_take_one_local_volume_each() {
    let mut env = TestEnv::new("volume-gang").await;
    let nodes = env.add_pools("- {name: n, count: 3, gpus: 8}\n").await;
    let storage = Storage::new(&env);
    let class = storage.class("local", "kubernetes.io/no-provisioner", "WaitForFirstConsumer").await;
    // Two volumes on node 1 and one on node 2: three members, three volumes.
    storage.local_volume("a", &class, 10, &nodes[1], None).await;
    storage.local_volume("b", &class, 10, &nodes[1], None).await;
    storage.local_volume("c", &class, 10, &nodes[2], None).await;
    env.start_scheduler().await;
    for i in 0..3 {
        storage.claim(&format!("data-{i}"), &class, 5).await;
        let mut pod = pod_using(&env, &format!("w{i}"), &[&format!("data-{i}")]);
        pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), "g".to_string())].into());
        env.create(&pod).await;
    }
    support::create_object::<phalanx_kube::api::pod_group::PodGroup>(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
               "metadata": {"name": "g"}, "spec": {"minMember": 3}}),
    )
    .await;
    let mut on = Vec::new();
    for i in 0..3 {
        on.push(env.wait_bound(&format!("w{i}"), BIND).await);
    }
    on.sort();
    assert_eq!(on, [nodes[1].clone(), nodes[1].clone(), nodes[2].clone()], "where the volumes are");
    let mut volumes = Vec::new();
    for i in 0..3 {
        volumes.push(storage.bound_volume(&format!("data-{i}")).await);
    }
    volumes.sort();
    volumes.dedup();
    assert_eq!(volumes.len(), 3, "one volume each: {volumes:?}");
    storage.delete().await;
    env.teardown().await;
}

/// The test plays the external provisioner: it waits for the scheduler's
/// `selected-node` annotation and makes a volume on that node, pre-bound to
/// the claim, as a CSI provisioner does.
#[tokio::test]
async fn a_provisioner_is_asked_for_a_volume_on_the_chosen_node_and_the_pod_binds_once_it_exists() {
    let mut env = TestEnv::new("volume-provision").await;
    let nodes = env.add_pools("- {name: n, count: 2, gpus: 8}\n").await;
    let storage = Storage::new(&env);
    let class = storage.class("fast", "csi.example.com", "WaitForFirstConsumer").await;
    let claim = storage.claim("scratch", &class, 10).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "trainer", &["scratch"])).await;
    let selected = eventually(BIND, "the selected-node annotation", || async {
        let claim = storage.claims.get("scratch").await.ok()?;
        claim.metadata.annotations?.get(SELECTED_NODE).cloned()
    })
    .await;
    assert!(nodes.contains(&selected), "{selected} is one of {nodes:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = env.pods().get("trainer").await.unwrap();
    assert_eq!(pod.spec.and_then(|s| s.node_name), None, "not bound before its volume exists");
    let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": env.name,
                           "name": "scratch", "uid": claim.metadata.uid});
    storage.local_volume("provisioned", &class, 10, &selected, Some(claim_ref)).await;
    assert_eq!(env.wait_bound("trainer", BIND).await, selected);
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn in_tree_ebs_volumes_count_against_the_ebs_csi_driver_s_limit() {
    let mut env = TestEnv::new("volume-in-tree").await;
    let nodes = env.add_pools("- {name: n, count: 1, gpus: 8}\n").await;
    let node = nodes[0].clone();
    let storage = Storage::new(&env);
    let csi_nodes = attach_limit(&env, &node, "ebs.csi.aws.com", 1).await;
    // An EBS volume of the in-tree plugin, bound to claim "old".
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-old", env.name)},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain",
                 "awsElasticBlockStore": {"volumeID": "aws://us-east-1a/vol-0123456789abcdef0"},
                 "claimRef": {"namespace": env.name, "name": "old"}}
    }))
    .unwrap();
    storage.volumes.create(&PostParams::default(), &volume).await.expect("create volume");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "old"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": format!("{}-old", env.name),
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    storage.claims.create(&PostParams::default(), &claim).await.expect("create claim");
    storage.bound_volume("old").await;
    // A class that provisions through the in-tree plugin.
    let class = storage.class("gp2", "kubernetes.io/aws-ebs", "WaitForFirstConsumer").await;
    storage.claim("new", &class, 1).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "old-user", &["old"])).await;
    assert_eq!(env.wait_bound("old-user", BIND).await, node);
    env.create(&pod_using(&env, "new-user", &["new"])).await;
    let message = env.wait_unschedulable("new-user", BIND).await.message.unwrap_or_default();
    assert!(message.contains("1 node(s) exceed max volume count"), "{message}");
    let _ = csi_nodes.delete(&node, &DeleteParams::default()).await;
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_driver_that_publishes_capacity_gets_claims_only_where_a_capacity_has_room() {
    let mut env = TestEnv::new("volume-capacity").await;
    let nodes = env.add_pools("- {name: n, count: 2, gpus: 8}\n").await;
    let storage = Storage::new(&env);
    let driver = format!("{}.csi.example.com", env.name);
    let drivers: Api<CSIDriver> = Api::all(env.client.clone());
    let csi_driver: CSIDriver =
        serde_json::from_value(json!({"metadata": {"name": driver}, "spec": {"storageCapacity": true}})).unwrap();
    drivers.create(&PostParams::default(), &csi_driver).await.expect("create CSIDriver");
    let class = storage.class("lvm", &driver, "WaitForFirstConsumer").await;
    // Node 0 has 1 GiB left, node 1 has 100 GiB but takes volumes of 20 GiB at most.
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(env.client.clone(), &env.name);
    for (i, (node, room, largest)) in
        [(&nodes[0], "1Gi", None), (&nodes[1], "100Gi", Some("20Gi"))].into_iter().enumerate()
    {
        let mut capacity = json!({
            "metadata": {"name": format!("capacity-{i}")},
            "storageClassName": class,
            "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}},
            "capacity": room,
        });
        if let Some(largest) = largest {
            capacity["maximumVolumeSize"] = json!(largest);
        }
        let capacity: CSIStorageCapacity = serde_json::from_value(capacity).unwrap();
        capacities.create(&PostParams::default(), &capacity).await.expect("create CSIStorageCapacity");
    }
    storage.claim("fits", &class, 10).await;
    storage.claim("too-big", &class, 50).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "small", &["fits"])).await;
    env.create(&pod_using(&env, "large", &["too-big"])).await;
    let selected = eventually(BIND, "the selected-node annotation", || async {
        storage.claims.get("fits").await.ok()?.metadata.annotations?.get(SELECTED_NODE).cloned()
    })
    .await;
    assert_eq!(selected, nodes[1], "only node 1 has room for 10 GiB");
    let message = env.wait_unschedulable("large", BIND).await.message.unwrap_or_default();
    assert!(message.contains("2 node(s) did not have enough free storage"), "{message}");
    // Once node 0 publishes room enough, the large claim goes there.
    let patch = json!({"capacity": "500Gi"});
    capacities.patch("capacity-0", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch capacity");
    let selected = eventually(BIND, "the large claim's node", || async {
        storage.claims.get("too-big").await.ok()?.metadata.annotations?.get(SELECTED_NODE).cloned()
    })
    .await;
    assert_eq!(selected, nodes[0]);
    drivers.delete(&driver, &DeleteParams::default()).await.expect("delete CSIDriver");
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_unbound_claim_of_an_immediate_class_keeps_the_pod_waiting_with_kube_scheduler_s_words() {
    let mut env = TestEnv::new("volume-immediate").await;
    env.add_pools("- {name: n, count: 1, gpus: 8}\n").await;
    let storage = Storage::new(&env);
    let class = storage.class("slow", "csi.example.com", "Immediate").await;
    storage.claim("pending", &class, 10).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "waiting", &["pending"])).await;
    env.create(&pod_using(&env, "missing", &["nowhere"])).await;
    let condition = env.wait_unschedulable("waiting", BIND).await;
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("pod has unbound immediate PersistentVolumeClaims"), "{message}");
    let condition = env.wait_unschedulable("missing", BIND).await;
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("persistentvolumeclaim \"nowhere\" not found"), "{message}");
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_read_write_once_pod_claim_serves_one_pod_and_the_next_waits_with_kube_scheduler_s_words() {
    let mut env = TestEnv::new("volume-rwop").await;
    let nodes = env.add_pools("- {name: n, count: 2, gpus: 8}\n").await;
    let mut storage = Storage::new(&env);
    storage.access_mode = "ReadWriteOncePod";
    let class = storage.class("local", "kubernetes.io/no-provisioner", "WaitForFirstConsumer").await;
    storage.local_volume("solo", &class, 10, &nodes[1], None).await;
    storage.claim("solo", &class, 10).await;
    env.start_scheduler().await;
    env.create(&pod_using(&env, "first", &["solo"])).await;
    assert_eq!(env.wait_bound("first", BIND).await, nodes[1], "where the volume is");
    storage.bound_volume("solo").await;
    env.create(&pod_using(&env, "second", &["solo"])).await;
    let message = env.wait_unschedulable("second", BIND).await.message.unwrap_or_default();
    // Both of this test's nodes (other tests' nodes, which run alongside, fail its node selector).
    let conflict = "2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
    assert!(message.contains(conflict), "{message}");
    env.pods().delete("first", &DeleteParams::default()).await.unwrap();
    assert_eq!(env.wait_bound("second", BIND).await, nodes[1], "once the first is gone");
    storage.delete().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_node_s_csi_attach_limit_counts_pods_volumes_and_volume_attachments() {
    const DRIVER: &str = "csi.phalanx.test";
    let mut env = TestEnv::new("volume-limits").await;
    let nodes = env.add_pools("- {name: n, count: 1, gpus: 8}\n").await;
    let node = nodes[0].clone();
    let storage = Storage::new(&env);
    let csi_nodes = attach_limit(&env, &node, DRIVER, 2).await;
    for claim in ["a", "b"] {
        storage.csi_volume(claim, DRIVER).await;
        storage.bound_volume(claim).await;
    }
    // A volume attached outside any pod phalanx sees: it takes one of the two.
    let other = storage.csi_volume("other", DRIVER).await;
    let attachments: Api<VolumeAttachment> = Api::all(env.client.clone());
    let attachment_name = format!("{}-other", env.name);
    let attachment: VolumeAttachment = serde_json::from_value(json!({
        "metadata": {"name": attachment_name},
        "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": other}}
    }))
    .unwrap();
    attachments.create(&PostParams::default(), &attachment).await.expect("create VolumeAttachment");
    env.start_scheduler().await;

    env.create(&pod_using(&env, "first", &["a"])).await;
    assert_eq!(env.wait_bound("first", BIND).await, node);
    env.create(&pod_using(&env, "sharer", &["a"])).await;
    assert_eq!(env.wait_bound("sharer", BIND).await, node, "a volume attached already costs nothing");
    env.create(&pod_using(&env, "second", &["b"])).await;
    let message = env.wait_unschedulable("second", BIND).await.message.unwrap_or_default();
    assert!(message.contains("1 node(s) exceed max volume count"), "{message}");
    attachments.delete(&attachment_name, &DeleteParams::default()).await.expect("delete VolumeAttachment");
    assert_eq!(env.wait_bound("second", BIND).await, node, "once the attachment is gone");

    let _ = csi_nodes.delete(&node, &DeleteParams::default()).await;
    storage.delete().await;
    env.teardown().await;
}
