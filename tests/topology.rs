//! End-to-end topology: GPU choice inside a node (from templates and from
//! the agent's GPUTopology resource) and job placement across racks.

mod support;

use std::time::Duration;

use kube::api::Api;
use phalanx_kube::api::gpu_topology::GPUTopology;
use support::{TestEnv, eventually, fixture, phalanx};

const BIND: Duration = Duration::from_secs(30);

/// One round of `phalanx agent` for `node`, reading a saved `nvidia-smi topo -m`.
async fn publish_fixture(node: &str, file: &str) -> std::process::Output {
    phalanx(&["agent", "--node-name", node, "--topology-file", &fixture(file), "--once"]).await
}

#[tokio::test]
async fn four_gpus_on_a_two_socket_pcie_node_stay_on_one_socket() {
    let mut env = TestEnv::new("socket").await;
    let nodes = env.add_pools("- {name: rtx, count: 1, gpus: 8, gpuProduct: NVIDIA-GeForce-RTX-4090}\n").await;
    // GPU 0 is taken, so the lowest free four (1-4) would straddle the sockets.
    env.bind_foreign("holder", &nodes[0], &[0]).await;
    env.start_scheduler().await;
    env.create(&env.pod("four", 4)).await;
    env.wait_bound("four", BIND).await;
    assert_eq!(env.recorded_gpus("four").await, vec![4, 5, 6, 7]);
    let explained = phalanx(&["explain", &format!("node/{}", nodes[0])]).await;
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(text.lines().any(|l| l.starts_with("GPU6") && l.ends_with(&format!("{}/four", env.name))), "{text}");
    assert!(text.lines().any(|l| l.starts_with("GPU0") && l.ends_with(&format!("{}/holder", env.name))), "{text}");
    env.teardown().await;
}

#[tokio::test]
async fn the_agents_report_is_used_a_pair_takes_the_nvlink_pair_and_a_single_does_not_break_it() {
    let mut env = TestEnv::new("nvpair").await;
    // Labelled as a PCIe A100 box, whose template knows nothing of NVLink bridges.
    let nodes = env.add_pools("- {name: a100, count: 1, gpus: 8, gpuProduct: NVIDIA-A100-PCIE-40GB}\n").await;
    let node = &nodes[0];
    publish_fixture(node, "pcie-a100-nvlink-bridge-pairs.txt").await;
    let report = Api::<GPUTopology>::all(env.client.clone()).get(node).await.expect("the agent's GPUTopology");
    assert_eq!(report.spec.source, "file");
    assert_eq!(report.spec.topology.links[0][1].to_string(), "NV12");
    // Free: the NVLink pair 2-3 and loose GPUs 1, 4 and 6.
    for (name, gpu) in [("h0", 0), ("h5", 5), ("h7", 7)] {
        env.bind_foreign(name, node, &[gpu]).await;
    }
    env.start_scheduler().await;
    env.create(&env.pod("pair", 2)).await;
    env.wait_bound("pair", BIND).await;
    // The template would pick 4 and 6 (same socket, PIX); the report says 2-3 is NV12.
    assert_eq!(env.recorded_gpus("pair").await, vec![2, 3]);
    env.pods().delete("pair", &Default::default()).await.unwrap();
    let pods = env.pods();
    eventually(BIND, "pair gone", || async { pods.get_opt("pair").await.ok().flatten().is_none().then_some(()) }).await;
    env.create(&env.pod("single", 1)).await;
    env.wait_bound("single", BIND).await;
    let single = env.recorded_gpus("single").await;
    assert!(single == vec![1] || single == vec![4] || single == vec![6], "took {single:?}, breaking the pair");
    // Publishing the same topology again writes nothing.
    let again = publish_fixture(node, "pcie-a100-nvlink-bridge-pairs.txt").await;
    assert!(String::from_utf8_lossy(&again.stderr).contains("spec_written: false"));
    env.teardown().await;
}

#[tokio::test]
async fn a_time_sliced_node_takes_more_replicas_than_gpus_but_no_pod_of_two_and_its_report_is_valid() {
    let mut env = TestEnv::new("timeslice").await;
    // GPU Feature Discovery's labels for 8 H100s shared 4 ways: 32 nvidia.com/gpu.
    let nodes = env
        .add_pools(
            "- {name: ts, count: 1, gpus: 32, gpuProduct: NVIDIA-H100-80GB-HBM3-SHARED, labels: \
             {nvidia.com/gpu.count: '8', nvidia.com/gpu.replicas: '4', nvidia.com/gpu.sharing-strategy: time-slicing}}\n",
        )
        .await;
    let node = &nodes[0];
    // The agent reports the 8 physical GPUs: right for this node, not an InvalidObject.
    let published = publish_fixture(node, "hgx-h100-nvswitch.txt").await;
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    env.start_scheduler().await;
    for i in 0..10 {
        env.create(&env.pod(&format!("replica-{i}"), 1)).await;
    }
    for i in 0..10 {
        assert_eq!(&env.wait_bound(&format!("replica-{i}"), BIND).await, node);
    }
    env.create(&env.pod("pair", 2)).await;
    let condition = env.wait_unschedulable("pair", BIND).await;
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("1 node(s) shared their GPUs by time-slicing"), "{message}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), "default");
    let about_node = events.list(&Default::default()).await.unwrap().items.into_iter().filter(|e| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node.as_str())
            && e.reason.as_deref() == Some("InvalidObject")
    });
    assert_eq!(about_node.count(), 0, "the report of 8 physical GPUs was taken for invalid");
    env.teardown().await;
}
