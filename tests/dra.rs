//! DRA end to end on the local control plane: devices published as
//! ResourceSlices for kwok nodes (matching each node's GPUTopology by UUID),
//! claims made by the controller manager from a ResourceClaimTemplate, and
//! phalanx allocating them by topology (or by Fabric Manager partition)
//! before it binds a whole gang.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{Api, DeleteParams, PostParams};
use phalanx::agent::nvidia_smi;
use phalanx_kube::api::gpu_topology::{GPUTopology, GpuTopologySpec};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::dra::{DRIVER, class_parameters, ensure_gpu_class, publish_slice};
use support::priorities::Priorities;
use support::{TestEnv, create_object, fixture};

const BIND: Duration = Duration::from_secs(60);

/// GPU `i` of `node`: its UUID in both the slice and the GPUTopology.
fn uuid(node: &str, i: usize) -> String {
    format!("GPU-{node}-{i}")
}

/// Whether the node's Fabric Manager publishes partitions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fabric {
    Plain,
    /// Partitions of 8, 4 ({0,1,4,5} and {2,3,6,7}: across the NVLinked
    /// quads, so that the topology alone would choose otherwise), 2 ({i,
    /// i+4}) and 1 GPU, as `gpu.nvidia.com/partition<N>` attributes.
    Partitioned,
}

/// Publishes a DGX-1 (hybrid cube mesh: GPUs 0-3 and 4-7 are the two fully
/// NVLinked quads) as the node's GPUTopology and its GPUs as a ResourceSlice,
/// devices listed with the sockets interleaved so that taking the first four
/// would straddle both.
async fn publish_dgx1(env: &TestEnv, node: &str, fabric: Fabric) {
    let text = std::fs::read_to_string(fixture("dgx1-v100-hybrid-cube-mesh.txt")).unwrap();
    let mut topology = nvidia_smi::parse(&text).expect("fixture parses");
    for (i, gpu) in topology.gpus.iter_mut().enumerate() {
        gpu.uuid = Some(uuid(node, i));
    }
    let report = GPUTopology::new(node, GpuTopologySpec { source: "file".into(), topology });
    Api::<GPUTopology>::all(env.client.clone()).create(&PostParams::default(), &report).await.expect("GPUTopology");
    let devices: Vec<serde_json::Value> = [0, 4, 1, 5, 2, 6, 3, 7]
        .iter()
        .map(|&i| {
            let mut device = json!({"name": format!("gpu-{i}"), "attributes": {
                "type": {"string": "gpu"},
                "uuid": {"string": uuid(node, i)},
                "productName": {"string": "Tesla V100-SXM2-16GB"},
                "resource.kubernetes.io/pcieRoot": {"string": if i < 4 { "pci0000:00" } else { "pci0000:80" }},
                "resource.kubernetes.io/numaNode": {"int": i / 4},
            }, "capacity": {"memory": {"value": "16Gi"}}});
            if fabric == Fabric::Partitioned {
                let partitions = [(8, 0), (4, 1 + (i % 4) / 2), (2, 10 + i % 4), (1, 100 + i)];
                for (size, id) in partitions {
                    device["attributes"][format!("partition{size}")] = json!({"int": id});
                }
            }
            device
        })
        .collect();
    publish_slice(env, node, devices).await;
}

/// How a member names its claim: made from a template, or one claim by name.
enum ClaimSource<'a> {
    Template(&'a str),
    Claim(&'a str),
}

fn claiming_member(env: &TestEnv, name: &str, group: &str, source: ClaimSource<'_>) -> Pod {
    let mut pod = env.pod(name, 0);
    pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), group.to_string())].into());
    let spec = pod.spec.as_mut().unwrap();
    let entry = match source {
        ClaimSource::Template(template) => json!({"name": "gpu", "resourceClaimTemplateName": template}),
        ClaimSource::Claim(claim) => json!({"name": "gpu", "resourceClaimName": claim}),
    };
    spec.resource_claims = Some(vec![serde_json::from_value(entry).unwrap()]);
    let resources = spec.containers[0].resources.get_or_insert_default();
    resources.claims = Some(vec![serde_json::from_value(json!({"name": "gpu"})).unwrap()]);
    pod
}

/// `count` DGX-1 nodes publishing their GPUs, and the scheduler running.
async fn dgx1_env(test: &str, count: usize) -> (TestEnv, Vec<String>) {
    dgx1_env_with(test, count, Fabric::Plain).await
}

async fn dgx1_env_with(test: &str, count: usize, fabric: Fabric) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::new(test).await;
    support::ensure_crds(&env.client).await;
    let pool = format!("- {{name: v100, count: {count}, gpus: 8, gpuProduct: Tesla-V100-SXM2-16GB}}\n");
    let nodes = env.add_pools(&pool).await;
    ensure_gpu_class(&env).await;
    for node in &nodes {
        publish_dgx1(&env, node, fabric).await;
    }
    env.start_scheduler().await;
    (env, nodes)
}

/// Removes the cluster-scoped objects published for the env's nodes, then the env.
async fn teardown(env: TestEnv, nodes: &[String]) {
    for node in nodes {
        let slices = Api::<ResourceSlice>::all(env.client.clone());
        let _ = slices.delete(&format!("{node}-{DRIVER}"), &DeleteParams::default()).await;
        let _ = Api::<GPUTopology>::all(env.client.clone()).delete(node, &DeleteParams::default()).await;
    }
    env.teardown().await;
}

/// A ResourceClaimTemplate for four GPUs, named `four-gpus`.
async fn four_gpu_template(env: &TestEnv) {
    let _: ResourceClaimTemplate = create_object(
        env,
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": "four-gpus", "namespace": env.name},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpus", "exactly": {"deviceClassName": DRIVER, "count": 4}}]}}}}),
    )
    .await;
}

async fn pod_group(env: &TestEnv, name: &str, min_member: usize) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": env.name}, "spec": {"minMember": min_member},
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &group).await.unwrap();
}

/// Waits for pods `{prefix}-0..count` to bind: pod name to node.
async fn wait_all_bound(env: &TestEnv, prefix: &str, count: usize, limit: Duration) -> BTreeMap<String, String> {
    let mut placed = BTreeMap::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        placed.insert(name.clone(), env.wait_bound(&name, limit).await);
    }
    placed
}

/// The claim a pod's first `resourceClaims` entry names (made from a template, or by name).
async fn claim_of(env: &TestEnv, pod: &str) -> ResourceClaim {
    let pod = env.pods().get(pod).await.unwrap();
    let spec_entry = pod.spec.as_ref().and_then(|s| s.resource_claims.as_ref()).map(|c| c[0].clone());
    let name = match spec_entry.and_then(|e| e.resource_claim_name) {
        Some(name) => name,
        None => {
            let statuses = pod.status.and_then(|s| s.resource_claim_statuses).unwrap_or_default();
            statuses[0].resource_claim_name.clone().expect("claim made from the template")
        }
    };
    Api::<ResourceClaim>::namespaced(env.client.clone(), &env.name).get(&name).await.unwrap()
}

/// The GPU indices a claim is allocated on `node`, checking that it is
/// reserved for exactly `pods`.
fn allocated_gpus(claim: &ResourceClaim, node: &str, pods: &[&str]) -> BTreeSet<usize> {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let status = claim.status.clone().unwrap_or_else(|| panic!("claim {name}: no status written"));
    let mut reserved: Vec<String> = status.reserved_for.unwrap_or_default().into_iter().map(|r| r.name).collect();
    reserved.sort();
    assert_eq!(reserved, pods.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "claim {name}: reservedFor");
    let allocation = status.allocation.unwrap_or_else(|| panic!("claim {name}: not allocated before the bind"));
    // The class's config goes to the driver with the devices, as kube-scheduler writes it.
    let config = serde_json::to_value(&allocation.devices.as_ref().unwrap().config).unwrap();
    assert_eq!(
        config,
        json!([{"source": "FromClass", "requests": ["gpus"], "opaque": {"driver": DRIVER, "parameters": class_parameters()}}]),
        "claim {name}"
    );
    let selector = serde_json::to_value(&allocation.node_selector).unwrap();
    assert_eq!(selector["nodeSelectorTerms"][0]["matchFields"][0]["values"][0], json!(node), "claim {name}");
    let results = allocation.devices.unwrap().results.unwrap();
    assert!(results.iter().all(|r| r.driver == DRIVER && r.pool == node && r.request == "gpus"), "{results:?}");
    results.iter().map(|r| r.device.trim_start_matches("gpu-").parse().unwrap()).collect()
}

#[tokio::test]
async fn a_gang_with_claims_from_a_template_binds_on_nvlinked_quads() {
    let (env, nodes) = dgx1_env("dra", 2).await;
    four_gpu_template(&env).await;
    pod_group(&env, "train", 4).await;
    for i in 0..4 {
        env.create(&claiming_member(&env, &format!("train-{i}"), "train", ClaimSource::Template("four-gpus"))).await;
    }
    let placed = wait_all_bound(&env, "train", 4, BIND).await;
    let mut quads: BTreeMap<String, Vec<BTreeSet<usize>>> = BTreeMap::new();
    for (name, node) in &placed {
        let gpus = allocated_gpus(&claim_of(&env, name).await, node, &[name.as_str()]);
        quads.entry(node.clone()).or_default().push(gpus);
    }
    let first: BTreeSet<usize> = (0..4).collect();
    let second: BTreeSet<usize> = (4..8).collect();
    for (node, sets) in &quads {
        // Both quads of each node, one per pod: every claim is one NVLinked quad.
        let mut sets = sets.clone();
        sets.sort();
        assert_eq!(sets, vec![first.clone(), second.clone()], "node {node}: {sets:?}");
    }
    teardown(env, &nodes).await;
}

/// A claim for `count` GPUs on one PCIe root, and a pod using it.
async fn one_root_claim(env: &TestEnv, name: &str, count: u32) {
    claim_and_pod(env, name, count, json!([{"matchAttribute": "resource.kubernetes.io/pcieRoot"}])).await;
}

/// A claim for `count` GPUs under `constraints`, and a pod using it.
async fn claim_and_pod(env: &TestEnv, name: &str, count: u32, constraints: serde_json::Value) {
    let _: ResourceClaim = create_object(
        env,
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": env.name},
            "spec": {"devices": {
                "requests": [{"name": "gpus", "exactly": {"deviceClassName": DRIVER, "count": count}}],
                "constraints": constraints}}}),
    )
    .await;
    let mut pod = env.pod(name, 0);
    let spec = pod.spec.as_mut().unwrap();
    spec.resource_claims =
        Some(vec![serde_json::from_value(json!({"name": "gpu", "resourceClaimName": name})).unwrap()]);
    env.create(&pod).await;
}

#[tokio::test]
async fn match_attribute_keeps_a_claim_on_one_pcie_root_and_a_shortfall_says_so() {
    let (env, nodes) = dgx1_env("dra-root", 1).await;
    one_root_claim(&env, "five", 5).await;
    let condition = env.wait_unschedulable("five", BIND).await;
    let message = condition.message.unwrap_or_default();
    assert!(
        message.contains("claim five needs 5 devices of class gpu.nvidia.com on one pcieRoot, 4 free"),
        "{message}"
    );
    // Holding nodes for a waiting gang does not yet know that no node could
    // ever hold this claim: it is deleted so that the next pod is not held up.
    env.pods().delete("five", &DeleteParams::default()).await.unwrap();
    one_root_claim(&env, "three", 3).await;
    env.wait_bound("three", BIND).await;
    let claim = Api::<ResourceClaim>::namespaced(env.client.clone(), &env.name).get("three").await.unwrap();
    let results = claim.status.and_then(|s| s.allocation).and_then(|a| a.devices).and_then(|d| d.results);
    let gpus: BTreeSet<usize> =
        results.unwrap_or_default().iter().map(|r| r.device.trim_start_matches("gpu-").parse().unwrap()).collect();
    // One root per quad in the slice (0-3, 4-7).
    assert_eq!(gpus.len(), 3);
    assert!(gpus.iter().all(|g| *g < 4) || gpus.iter().all(|g| *g >= 4), "{gpus:?}");
    teardown(env, &nodes).await;
}

#[tokio::test]
async fn where_fabric_manager_publishes_partitions_each_claim_gets_exactly_one() {
    let (env, nodes) = dgx1_env_with("dra-fabric", 1, Fabric::Partitioned).await;
    // No partition has three GPUs: the claim waits, and says why.
    claim_and_pod(&env, "three", 3, json!([])).await;
    let message = env.wait_unschedulable("three", BIND).await.message.unwrap_or_default();
    let why = "claim three needs 3 devices of class gpu.nvidia.com forming one Fabric Manager partition";
    assert!(message.contains(why), "{message}");
    env.pods().delete("three", &DeleteParams::default()).await.unwrap();
    four_gpu_template(&env).await;
    pod_group(&env, "train", 2).await;
    for i in 0..2 {
        env.create(&claiming_member(&env, &format!("train-{i}"), "train", ClaimSource::Template("four-gpus"))).await;
    }
    let placed = wait_all_bound(&env, "train", 2, BIND).await;
    let mut sets = Vec::new();
    for (name, node) in &placed {
        sets.push(allocated_gpus(&claim_of(&env, name).await, node, &[name.as_str()]));
    }
    sets.sort();
    // The two size-4 partitions, not the NVLinked quads.
    assert_eq!(sets, vec![BTreeSet::from([0, 1, 4, 5]), BTreeSet::from([2, 3, 6, 7])]);
    teardown(env, &nodes).await;
}

#[tokio::test]
async fn a_shared_claim_is_allocated_once_and_reserved_for_every_pod_using_it() {
    let (env, nodes) = dgx1_env("dra-shared", 2).await;
    let _: ResourceClaim = create_object(
        &env,
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "shared", "namespace": env.name},
            "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {"deviceClassName": DRIVER, "count": 2}}]}}}),
    )
    .await;
    // Both members of one gang share the claim: they are placed in one pass.
    pod_group(&env, "pair", 2).await;
    for i in 0..2 {
        env.create(&claiming_member(&env, &format!("pair-{i}"), "pair", ClaimSource::Claim("shared"))).await;
    }
    let placed = wait_all_bound(&env, "pair", 2, BIND).await;
    let on: BTreeSet<&String> = placed.values().collect();
    assert_eq!(on.len(), 1, "a claim's devices are on one node: {placed:?}");
    let node = placed["pair-0"].clone();
    let gpus = allocated_gpus(&claim_of(&env, "pair-0").await, &node, &["pair-0", "pair-1"]);
    assert_eq!(gpus.len(), 2);
    // NVLinked in the hybrid cube mesh: both in one quad.
    assert!(gpus.iter().all(|g| *g < 4) || gpus.iter().all(|g| *g >= 4), "{gpus:?}");
    teardown(env, &nodes).await;
}

#[tokio::test]
async fn preempting_a_gang_that_holds_claims_frees_its_devices_for_the_preemptor() {
    let (env, nodes) = dgx1_env("dra-preempt", 1).await;
    let classes = Priorities::create(&env, &[("low", 10, false), ("high", 1000, false)]).await;
    four_gpu_template(&env).await;
    let gang = |name: &'static str, class: &'static str| {
        let env = &env;
        async move {
            pod_group(env, name, 2).await;
            for i in 0..2 {
                let mut pod = claiming_member(env, &format!("{name}-{i}"), name, ClaimSource::Template("four-gpus"));
                pod.spec.as_mut().unwrap().priority_class_name = Some(format!("{}-{class}", env.name));
                env.create(&pod).await;
            }
        }
    };
    // The low-priority gang takes all eight GPUs of the node through its claims.
    gang("low", "low").await;
    let node = nodes[0].clone();
    let mut held = BTreeSet::new();
    for name in wait_all_bound(&env, "low", 2, BIND).await.keys() {
        held.extend(allocated_gpus(&claim_of(&env, name).await, &node, &[name.as_str()]));
    }
    assert_eq!(held.len(), 8);

    // The high-priority gang evicts it and gets the devices its claims held.
    gang("high", "high").await;
    let placed = wait_all_bound(&env, "high", 2, BIND * 2).await;
    let mut quads = Vec::new();
    for name in placed.keys() {
        quads.push(allocated_gpus(&claim_of(&env, name).await, &node, &[name.as_str()]));
    }
    quads.sort();
    assert_eq!(quads, vec![(0..4).collect::<BTreeSet<usize>>(), (4..8).collect()]);
    for i in 0..2 {
        let low = env.pods().get_opt(&format!("low-{i}")).await.unwrap();
        assert!(
            low.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "low-{i} was evicted: {:?}",
            low.map(|p| p.spec.and_then(|s| s.node_name))
        );
    }
    classes.remove().await;
    teardown(env, &nodes).await;
}
