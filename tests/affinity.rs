//! Inter-pod affinity, topology spread and host ports end to end, against
//! the local control plane with kwok running the fake nodes: anti-affine
//! replicas one per node and the rest Unschedulable with kube-scheduler's
//! words, a zone spread with maxSkew 1, a ReplicaSet spread by the default
//! constraints, a hostPort conflict, and a gang whose members are
//! anti-affine to each other placed one per node or not at all.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::ListParams;
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::{Value, json};
use support::{TestEnv, create_object, ensure_crds, eventually};

const BIND: Duration = Duration::from_secs(30);
const ZONE: &str = "topology.kubernetes.io/zone";

/// `env.pod` with these labels and extra `spec` fields.
fn pod_with(env: &TestEnv, name: &str, gpus: u32, labels: Value, spec: Value) -> Pod {
    let mut pod = serde_json::to_value(env.pod(name, gpus)).unwrap();
    pod["metadata"]["labels"] = labels;
    pod["spec"].as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::from_value(pod).unwrap()
}

/// Required anti-affinity, per node, to pods labelled `app: {app}`.
fn anti_affine_to(app: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}})
}

/// Node of each bound pod of the env, by pod name.
async fn bound(env: &TestEnv) -> BTreeMap<String, String> {
    let pods = env.pods().list(&ListParams::default()).await.expect("list pods").items;
    pods.into_iter().filter_map(|p| Some((p.name_any(), p.spec?.node_name?))).collect()
}

/// Waits until `count` pods are bound, then a moment more to see no others bind.
async fn settled_bound(env: &TestEnv, count: usize) -> BTreeMap<String, String> {
    eventually(BIND, &format!("{count} pods bound"), || async { (bound(env).await.len() >= count).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bound(env).await
}

#[tokio::test]
async fn three_anti_affine_replicas_on_two_nodes_bind_two_and_the_third_says_why() {
    let mut env = TestEnv::new("anti-affinity").await;
    env.add_pools("- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    for i in 0..3 {
        env.create(&pod_with(&env, &format!("web-{i}"), 1, json!({"app": "web"}), anti_affine_to("web"))).await;
    }
    let placed = settled_bound(&env, 2).await;
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert_ne!(placed.values().next(), placed.values().nth(1), "one per node: {placed:?}");
    let waiting = (0..3).map(|i| format!("web-{i}")).find(|n| !placed.contains_key(n)).unwrap();
    let condition = env.wait_unschedulable(&waiting, BIND).await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("2 node(s) didn't match pod anti-affinity rules"), "{message}");
    env.teardown().await;
}

#[tokio::test]
async fn six_pods_spread_with_max_skew_one_over_three_zones_land_two_per_zone() {
    let mut env = TestEnv::new("spread").await;
    let pools = format!(
        "- {{name: n, count: 6, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, domains: [{{labels: [{ZONE}], size: 2, prefix: zone}}]}}\n"
    );
    env.add_pools(&pools).await;
    env.start_scheduler().await;
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
    for i in 0..6 {
        env.create(&pod_with(&env, &format!("s-{i}"), 1, json!({"app": "spread"}), spread.clone())).await;
    }
    let placed = settled_bound(&env, 6).await;
    let nodes = env.nodes().list(&ListParams::default().labels(&format!("{}={}", support::ENV_LABEL, env.name))).await;
    let zone_of: BTreeMap<String, String> =
        nodes.expect("list nodes").items.iter().map(|n: &Node| (n.name_any(), n.labels()[ZONE].clone())).collect();
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for node in placed.values() {
        *per_zone.entry(zone_of[node].as_str()).or_default() += 1;
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_zone:?}");
    env.teardown().await;
}

#[tokio::test]
async fn a_replica_set_without_constraints_is_spread_by_the_defaults_while_lone_pods_pack() {
    let mut env = TestEnv::new("default-spread").await;
    env.add_pools("- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    // No Service or controller selects these: no default constraint, and
    // the default scoring (MostAllocated) packs them.
    for i in 0..2 {
        env.create(&pod_with(&env, &format!("solo-{i}"), 0, json!({"app": "solo"}), json!({}))).await;
    }
    let solo = settled_bound(&env, 2).await;
    assert_eq!(solo["solo-0"], solo["solo-1"], "packed: {solo:?}");
    let mut template = serde_json::to_value(pod_with(&env, "template", 0, json!({"app": "web"}), json!({}))).unwrap();
    let metadata = template["metadata"].as_object_mut().unwrap();
    metadata.remove("name");
    metadata.remove("namespace");
    let _: ReplicaSet = create_object(
        &env,
        json!({"metadata": {"name": "web"},
               "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    )
    .await;
    let placed = settled_bound(&env, 6).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in placed.iter().filter(|(pod, _)| pod.starts_with("web-")) {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2], "spread by hostname: {placed:?}");
    env.teardown().await;
}

#[tokio::test]
async fn two_pods_asking_one_host_port_on_one_node_bind_one() {
    let mut env = TestEnv::new("host-port").await;
    env.add_pools("- {name: n, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    let port =
        json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}]});
    for name in ["port-a", "port-b"] {
        env.create(&pod_with(&env, name, 0, json!({"app": "port"}), port.clone())).await;
    }
    let placed = settled_bound(&env, 1).await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    let waiting = if placed.contains_key("port-a") { "port-b" } else { "port-a" };
    let message = env.wait_unschedulable(waiting, BIND).await.message.unwrap_or_default();
    assert!(message.contains("1 node(s) didn't have free ports for the requested pod ports"), "{message}");
    env.teardown().await;
}

#[tokio::test]
async fn a_gang_of_mutually_anti_affine_members_is_placed_one_per_node_or_not_at_all() {
    let mut env = TestEnv::new("gang-anti").await;
    ensure_crds(&env.client).await;
    env.add_pools("- {name: n, count: 3, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    for (group, members) in [("fits", 3), ("too-wide", 4)] {
        let _: PodGroup = create_object(
            &env,
            json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": group, "namespace": env.name}, "spec": {"minMember": members}}),
        )
        .await;
        for i in 0..members {
            let labels = json!({"app": group, "scheduling.x-k8s.io/pod-group": group});
            env.create(&pod_with(&env, &format!("{group}-{i}"), 1, labels, anti_affine_to(group))).await;
        }
    }
    let placed = settled_bound(&env, 3).await;
    let fits: Vec<&String> = placed.iter().filter(|(n, _)| n.starts_with("fits-")).map(|(_, node)| node).collect();
    assert_eq!(fits.len(), 3, "{placed:?}");
    assert!(fits[0] != fits[1] && fits[1] != fits[2] && fits[0] != fits[2], "one per node: {placed:?}");
    assert!(!placed.keys().any(|n| n.starts_with("too-wide-")), "no member of the 4-gang binds: {placed:?}");
    let message = env.wait_unschedulable("too-wide-0", BIND).await.message.unwrap_or_default();
    assert!(message.contains("didn't match pod anti-affinity rules"), "{message}");
    env.teardown().await;
}
