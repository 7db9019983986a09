//! Bad input, end to end: malformed or hostile objects created next to a
//! healthy gang. Each is reported (an Event, or the pod's PodScheduled
//! condition) naming the object and the field, and changes nothing else: the
//! healthy gang binds whole, no GPU is over-committed, the scheduler lives.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use phalanx::cluster_invariants::gpus_by_node;
use phalanx_core::topology::model::Link;
use phalanx_core::topology::templates;
use phalanx_kube::api::elastic_quota::ElasticQuota;
use phalanx_kube::api::gpu_topology::{GPUTopology, GpuTopologySpec, GpuTopologyStatus, PodDevices};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::{TestEnv, ensure_crds, eventually, http_get};

const SETTLE: Duration = Duration::from_secs(30);
const GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

fn member(env: &TestEnv, name: &str, gpus: u32, group: &str) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.metadata.labels = Some([(GROUP_LABEL.to_string(), group.to_string())].into());
    pod
}

/// A pod of the env asking `amount` of `resource` (request and limit).
fn asking(env: &TestEnv, name: &str, resource: &str, amount: &str) -> Pod {
    let mut pod = env.pod(name, 0);
    let resources = json!({"requests": {resource: amount}, "limits": {resource: amount}});
    pod.spec.as_mut().unwrap().containers[0].resources = Some(serde_json::from_value(resources).unwrap());
    pod
}

/// The note of the first InvalidObject Event about the `kind` named `name`,
/// in `namespace` (cluster-scoped objects get theirs in "default").
async fn invalid_note(env: &TestEnv, namespace: &str, kind: &str, name: &str) -> String {
    let api: Api<Event> = Api::namespaced(env.client.clone(), namespace);
    eventually(SETTLE, &format!("an InvalidObject Event about {kind} {name}"), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                let regarding = e.regarding.as_ref()?;
                let about = regarding.name.as_deref() == Some(name) && regarding.kind.as_deref() == Some(kind);
                (about && e.reason.as_deref() == Some("InvalidObject")).then(|| e.note.unwrap_or_default())
            })
        }
    })
    .await
}

fn topology(name: &str, gpus: usize) -> GPUTopology {
    GPUTopology::new(name, GpuTopologySpec { source: "file".into(), topology: templates::nvswitch(gpus, 18, "H100") })
}

#[tokio::test]
async fn hostile_objects_are_reported_by_field_and_a_healthy_gang_still_binds() {
    let client = support::client().await;
    ensure_crds(&client).await;
    let mut env = TestEnv::new("badinput").await;
    // Two ordinary nodes, one claiming 128 PiB of memory (its score once
    // overflowed), one that will claim 999Ei (the API server stores i64::MAX).
    let nodes = env
        .add_pools(
            "- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n\
             - {name: fat, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, memory: 128Pi}\n\
             - {name: absurd, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n",
        )
        .await;
    let (n0, n1, fat, absurd) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let ns = env.name.clone();

    // A namespace quota that lets the healthy gang in, and an absurd one.
    let _: ElasticQuota = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "gpus", "namespace": ns}, "spec": {"max": {"nvidia.com/gpu": 64}}}),
    )
    .await;
    let _: ElasticQuota = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "absurd", "namespace": ns}, "spec": {"max": {"nvidia.com/gpu": "1e30"}}}),
    )
    .await;
    // Priority classes at both ends of what the API server allows.
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (suffix, value) in [("top", 1_000_000_000), ("bottom", i32::MIN)] {
        let class: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": format!("{ns}-{suffix}")}, "value": value})).unwrap();
        classes.create(&PostParams::default(), &class).await.unwrap();
    }
    env.start_scheduler().await;

    // Topology resources that lie (published once the scheduler knows the
    // nodes, as an agent does): duplicate GPU indices, twice the GPUs the
    // node has, a link matrix of the wrong size, a pod on GPU 99.
    let topologies: Api<GPUTopology> = Api::all(client.clone());
    let mut duplicate = topology(n0, 8);
    duplicate.spec.topology.gpus[5].index = 2;
    let mut wrong_size = topology(fat, 8);
    wrong_size.spec.topology.links[3].push(Link::Sys);
    let mut ghost_gpu = topology(absurd, 8);
    ghost_gpu.status = Some(GpuTopologyStatus {
        pod_devices: vec![PodDevices { namespace: ns.clone(), name: "nobody".into(), device_ids: vec!["99".into()] }],
    });
    for t in [duplicate, topology(n1, 16), wrong_size, ghost_gpu.clone()] {
        topologies.create(&PostParams::default(), &t).await.expect("the CRD schema lets it in");
    }
    let status = Patch::Merge(json!({"status": ghost_gpu.status}));
    topologies.patch_status(absurd, &PatchParams::default(), &status).await.unwrap();
    // The fleet file refuses such memory; the API server clamps it to i64::MAX.
    let memory = Patch::Merge(json!({"status": {"capacity": {"memory": "999Ei"}, "allocatable": {"memory": "999Ei"}}}));
    env.nodes().patch_status(absurd, &PatchParams::default(), &memory).await.unwrap();

    // Hostile gangs and pods.
    let _: PodGroup = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "huge", "namespace": ns}, "spec": {"minMember": i32::MAX}}),
    )
    .await;
    env.create(&member(&env, "huge-0", 1, "huge")).await;
    env.create(&member(&env, "weird-0", 1, "Not_A.DNS-name")).await;
    env.create(&asking(&env, "memory-hog", "memory", "999Ei")).await;
    env.create(&asking(&env, "cpu-hog", "cpu", "1e30")).await;
    env.create(&asking(&env, "gpu-hog", "nvidia.com/gpu", "1e18")).await;
    for (name, amount, refusal) in
        [("half-gpu", "0.5", "must be an integer"), ("minus-gpu", "-1", "greater than or equal to 0")]
    {
        let err = env.pods().create(&PostParams::default(), &asking(&env, name, "nvidia.com/gpu", amount)).await;
        let message = err.expect_err("the API server refuses it").to_string();
        assert!(message.contains(refusal) && message.contains("nvidia.com/gpu"), "{message}");
    }
    // The healthy gang: four 4-GPU members.
    let _: PodGroup = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "healthy", "namespace": ns}, "spec": {"minMember": 4}}),
    )
    .await;
    let healthy: Vec<String> = (0..4).map(|i| format!("healthy-{i}")).collect();
    for name in &healthy {
        env.create(&member(&env, name, 4, "healthy")).await;
    }
    for (name, class) in [("top", "top"), ("bottom", "bottom")] {
        let mut pod = env.pod(name, 1);
        pod.spec.as_mut().unwrap().priority_class_name = Some(format!("{ns}-{class}"));
        env.create(&pod).await;
    }

    // The healthy gang binds whole, on the nodes that can be read; so do the
    // pods at both priority extremes.
    for name in healthy.iter().chain([&"top".to_string(), &"bottom".to_string()]) {
        env.wait_bound(name, SETTLE).await;
    }
    // Once bound, an absurd GPU count is refused by the quota, not overflowed.
    env.create(&asking(&env, "max-gpu", "nvidia.com/gpu", &i64::MAX.to_string())).await;

    // Each hostile object is reported, naming the object and the field.
    let huge = env.wait_unschedulable("huge-0", SETTLE).await.message.unwrap_or_default();
    assert!(huge.contains("1 of 2147483647 members created") && huge.contains("more pods than all nodes"), "{huge}");
    let weird = env.wait_unschedulable("weird-0", SETTLE).await.message.unwrap_or_default();
    assert!(weird.contains("Not_A.DNS-name") && weird.contains("does not exist"), "{weird}");
    let hog = invalid_note(&env, &ns, "Pod", "cpu-hog").await;
    assert!(hog.contains(&format!("pod {ns}/cpu-hog")), "{hog}");
    assert!(hog.contains("spec.containers[0].resources.requests[cpu]") && hog.contains("too large"), "{hog}");
    // 999Ei, clamped like the node's, fits only there (and its score no longer overflows).
    assert_eq!(&env.wait_bound("memory-hog", SETTLE).await, absurd);
    let gpu_hog = env.wait_unschedulable("gpu-hog", SETTLE).await.message.unwrap_or_default();
    assert!(gpu_hog.contains(&format!("ElasticQuota {ns}/gpus max")), "{gpu_hog}");
    let max_gpu = env.wait_unschedulable("max-gpu", SETTLE).await.message.unwrap_or_default();
    assert!(max_gpu.contains(&format!("ElasticQuota {ns}/gpus max")), "{max_gpu}");
    let quota = invalid_note(&env, &ns, "ElasticQuota", "absurd").await;
    assert!(quota.contains(&format!("elasticquota {ns}/absurd: spec.max[nvidia.com/gpu]")), "{quota}");
    let dup = invalid_note(&env, "default", "GPUTopology", n0).await;
    assert!(dup.contains(&format!("gputopology {n0}: spec: gpus[5].index 2 appears twice")), "{dup}");
    let sixteen = invalid_note(&env, "default", "GPUTopology", n1).await;
    assert!(
        sixteen.contains(&format!("gputopology {n1}: spec.gpus: lists 16 GPUs but node {n1} offers 8")),
        "{sixteen}"
    );
    let matrix = invalid_note(&env, "default", "GPUTopology", fat).await;
    let ghost = invalid_note(&env, "default", "GPUTopology", absurd).await;
    assert!(ghost.contains("status.podDevices[0].deviceIds: \"99\" is not a GPU of this node"), "{ghost}");
    assert!(matrix.contains(&format!("gputopology {fat}: spec: links[3] has 9 entries for 8 GPUs")), "{matrix}");

    // Nothing else changed: no hostile pod bound, no node over-committed, the
    // healthy gang's GPU indices lie within the node's 8, the scheduler lives.
    let pods = env.pods().list(&ListParams::default()).await.unwrap().items;
    let bound: BTreeMap<String, String> =
        pods.iter().filter_map(|p| Some((p.metadata.name.clone()?, p.spec.as_ref()?.node_name.clone()?))).collect();
    for hostile in ["huge-0", "weird-0", "cpu-hog", "gpu-hog", "max-gpu"] {
        assert!(!bound.contains_key(hostile), "{hostile} bound to {:?}", bound.get(hostile));
    }
    assert_eq!(bound.len(), 7, "{bound:?}");
    for (node, gpus) in gpus_by_node(&pods) {
        assert!(gpus <= 8, "{gpus} GPUs on {node}");
    }
    for name in &healthy {
        let indices = env.recorded_gpus(name).await;
        assert!(indices.len() == 4 && indices.iter().all(|i| *i < 8), "{name}: {indices:?}");
    }
    assert_eq!(http_get(env.http_port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(env.scheduler().try_wait().unwrap(), None, "the scheduler is still running");
    assert!(!env.log().contains("panicked"), "{}", env.log());

    for node in &nodes {
        let _ = topologies.delete(node, &DeleteParams::default()).await;
    }
    for suffix in ["top", "bottom"] {
        let _ = classes.delete(&format!("{ns}-{suffix}"), &DeleteParams::default()).await;
    }
    env.teardown().await;
}
