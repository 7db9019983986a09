//! End to end on a kind cluster with real kubelets: the phalanx Deployment
//! and agent DaemonSet as `kubectl apply -k kind/deploy` installs them, and
//! fake GPUs offered to each worker's kubelet by `phalanx device-plugin`.
//! Run by `kind/run-e2e` (`cargo test --features kind-e2e --test kind`),
//! which sets `PHALANX_KIND_KUBECONFIG` (and `PHALANX_E2E_KUBECONFIG`, for
//! the shared harness) to the kind cluster's kubeconfig.
//!
//! The tests share the deployed scheduler and the workers' 24 GPUs, and one
//! of them deletes the leader, so they take turns.

#[path = "support/deployed.rs"]
mod deployed;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::{TestEnv, eventually};

use deployed::{SCHEDULER_NAME, kubelet_gpus, leader, pod_http, scheduler_pods};

/// Built by `kind/node-image` and loaded by `kind/cluster up`; never pulled.
const WORKLOAD_IMAGE: &str = "phalanx-workload:1";
const FAKE_GPU_LABEL: &str = "phalanx.dev/fake-gpu";
/// The agent publishes every 60 s (deploy/agent.yaml): a kubelet's
/// assignment can take that long to show, plus a loaded machine's slack.
const AGENT_ROUND: Duration = Duration::from_secs(150);

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh namespace on the kind cluster, after checking that it is one:
/// fake-GPU workers whose real kubelets run containerd and offer the device
/// plugin's GPUs.
async fn kind_env(test: &str) -> TestEnv {
    let kind = std::env::var_os("PHALANX_KIND_KUBECONFIG")
        .expect("set PHALANX_KIND_KUBECONFIG to the kind cluster's kubeconfig (kind/run-e2e does)");
    assert_eq!(
        support::kubeconfig_path(),
        std::path::PathBuf::from(&kind),
        "PHALANX_E2E_KUBECONFIG must name the same cluster as PHALANX_KIND_KUBECONFIG"
    );
    let env = TestEnv::new(test).await;
    let nodes = Api::<Node>::all(env.client.clone());
    let workers = nodes.list(&ListParams::default().labels(&format!("{FAKE_GPU_LABEL}=true"))).await.unwrap().items;
    assert!(!workers.is_empty(), "no node labelled {FAKE_GPU_LABEL}=true: is this the kind cluster?");
    for node in &workers {
        let status = node.status.as_ref().expect("node status");
        let runtime = status.node_info.as_ref().map(|i| i.container_runtime_version.clone()).unwrap_or_default();
        assert!(runtime.starts_with("containerd://"), "{}: runtime {runtime:?}", node.name_any());
        let gpus = status.allocatable.as_ref().and_then(|a| a.get("nvidia.com/gpu")).map(|q| q.0.clone());
        assert_eq!(
            gpus.as_deref(),
            Some("8"),
            "{}: nvidia.com/gpu allocatable from the device plugin",
            node.name_any()
        );
    }
    env
}

/// A pod of the deployed scheduler whose real container prints the GPUs the
/// device plugin's Allocate gave it, then sleeps.
fn workload(env: &TestEnv, name: &str, gpus: u32, group: Option<&str>) -> Pod {
    let labels: BTreeMap<&str, &str> = group.map(|g| ("scheduling.x-k8s.io/pod-group", g)).into_iter().collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": env.name, "labels": labels},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [{
                "name": "train",
                "image": WORKLOAD_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo \"gpus=$NVIDIA_VISIBLE_DEVICES indices=$PHALANX_GPU_INDICES\"; exec sleep 3600"],
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}, "requests": {"cpu": "10m", "memory": "16Mi"}}
            }]
        }
    }))
    .unwrap()
}

async fn create_gang(env: &TestEnv, group: &str, members: usize, gpus: u32) -> Vec<String> {
    let object: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": group, "namespace": env.name}, "spec": {"minMember": members},
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &object).await.unwrap();
    let mut names = Vec::new();
    for i in 0..members {
        let name = format!("{group}-{i}");
        env.create(&workload(env, &name, gpus, Some(group))).await;
        names.push(name);
    }
    names
}

async fn wait_running(env: &TestEnv, names: &[String], limit: Duration) {
    let pods = env.pods();
    eventually(limit, &format!("{names:?} Running"), || {
        let pods = pods.clone();
        async move {
            for name in names {
                let phase = pods.get(name).await.ok()?.status?.phase?;
                if phase != "Running" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// The `gpus=... indices=...` line the container printed: its UUIDs and indices.
async fn container_gpus(env: &TestEnv, pod: &str) -> (Vec<String>, Vec<u32>) {
    let pods = env.pods();
    let line = eventually(Duration::from_secs(30), &format!("{pod}'s log"), || {
        let pods = pods.clone();
        async move { pods.logs(pod, &LogParams::default()).await.ok().filter(|l| l.starts_with("gpus=")) }
    })
    .await;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
    };
    let uuids = field("gpus=").map(str::to_string).collect();
    let indices = field("indices=").map(|s| s.parse().expect("an index")).collect();
    (uuids, indices)
}

/// phalanx's current view of a gang's GPUs, from the leader's `/explain`:
/// pod name to sorted GPU indices.
async fn phalanx_view(client: &Client, namespace: &str, group: &str) -> Option<BTreeMap<String, Vec<u32>>> {
    let leader = leader(client).await?;
    let text = pod_http(client, &leader, &format!("/explain/{namespace}/{group}?format=json")).await.ok()?;
    let explanation: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut view = BTreeMap::new();
    for node in explanation["placement"]["nodes"].as_array()? {
        for entry in node["pods"].as_array()? {
            // "ns/name (GPUs 0,1,2,3)"
            let entry = entry.as_str()?;
            let (pod, rest) = entry.split_once(" (GPUs ")?;
            let mut gpus: Vec<u32> =
                rest.trim_end_matches(')').split(',').map(|s| s.parse().ok()).collect::<Option<_>>()?;
            gpus.sort_unstable();
            view.insert(pod.rsplit('/').next()?.to_string(), gpus);
        }
    }
    Some(view)
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort();
    items
}

#[tokio::test]
async fn a_gang_runs_on_real_kubelets_and_phalanx_converges_to_the_gpus_they_gave() {
    let _turn = TURN.lock().await;
    let env = kind_env("kind-gang").await;
    let names = create_gang(&env, "llm", 3, 4).await;
    wait_running(&env, &names, Duration::from_secs(180)).await;

    let pods = env.pods();
    let mut kubelet_view = BTreeMap::new();
    println!("pod      node                 phalanx recorded  kubelet gave  container saw");
    for name in &names {
        let node = pods.get(name).await.unwrap().spec.unwrap().node_name.unwrap();
        let recorded = env.recorded_gpus(name).await;
        let key = (env.name.clone(), name.clone());
        let (indices, ids) = eventually(AGENT_ROUND, &format!("the agent's report of {name} on {node}"), || {
            let (client, node, key) = (env.client.clone(), node.clone(), key.clone());
            async move { kubelet_gpus(&client, &node).await.remove(&key) }
        })
        .await;
        let (uuids, container_indices) = container_gpus(&env, name).await;
        let same = if sorted(&recorded) == sorted(&indices) { "same" } else { "DIFFERENT" };
        let (recorded_text, indices_text) = (format!("{recorded:?}"), format!("{indices:?}"));
        println!("{name:<8} {node:<20} {recorded_text:<17} {indices_text:<13} {container_indices:?} ({same})");
        assert_eq!(recorded.len(), 4, "{name}: phalanx.dev/gpus");
        assert_eq!(indices.len(), 4, "{name}: the kubelet's devices");
        // What the container saw is what the kubelet says it gave.
        assert_eq!(sorted(&uuids), sorted(&ids), "{name}: NVIDIA_VISIBLE_DEVICES against pod-resources");
        assert_eq!(sorted(&container_indices), sorted(&indices), "{name}: PHALANX_GPU_INDICES");
        kubelet_view.insert(name.clone(), sorted(&indices));
    }
    // No GPU given twice on a node.
    let mut held = std::collections::HashSet::new();
    for name in &names {
        let node = pods.get(name).await.unwrap().spec.unwrap().node_name.unwrap();
        for gpu in &kubelet_view[name] {
            assert!(held.insert((node.clone(), *gpu)), "GPU {gpu} of {node} given twice");
        }
    }

    // The leader's view follows the kubelet's where they differed.
    let converged = eventually(Duration::from_secs(60), "phalanx's view to match the kubelet's", || {
        let (client, namespace, wanted) = (env.client.clone(), env.name.clone(), kubelet_view.clone());
        async move { phalanx_view(&client, &namespace, "llm").await.filter(|view| *view == wanted) }
    })
    .await;
    println!("phalanx's view now (leader's /explain): {converged:?}");
    env.teardown().await;
}

#[tokio::test]
async fn a_pod_no_node_can_hold_is_reported_unschedulable_by_the_deployed_scheduler() {
    let _turn = TURN.lock().await;
    let env = kind_env("kind-nofit").await;
    env.create(&workload(&env, "too-big", 16, None)).await;
    let condition = env.wait_unschedulable("too-big", Duration::from_secs(60)).await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    println!("PodScheduled=False: {}", condition.message.unwrap_or_default());
    let event = eventually(Duration::from_secs(60), "a FailedScheduling Event", || async {
        let events = env.events_for("too-big").await;
        events.into_iter().find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert_eq!(event.reporting_controller.as_deref(), Some("phalanx.dev/scheduler"));
    let replicas = scheduler_pods(&env.client).await;
    let instance = event.reporting_instance.clone().unwrap_or_default();
    assert!(replicas.contains(&instance), "Event from {instance:?}, not one of the replicas {replicas:?}");
    println!("Event from {instance}: {}", event.note.unwrap_or_default());
    env.teardown().await;
}

#[tokio::test]
async fn when_the_leader_pod_is_deleted_the_other_replica_takes_the_lease_and_binds_the_next_gang() {
    let _turn = TURN.lock().await;
    let env = kind_env("kind-failover").await;
    let client = env.client.clone();
    let replicas = eventually(Duration::from_secs(120), "two scheduler replicas Ready", || async {
        Some(scheduler_pods(&client).await).filter(|r| r.len() == 2)
    })
    .await;
    let old = eventually(Duration::from_secs(60), "a leader", || async { leader(&client).await }).await;
    assert!(replicas.contains(&old), "leader {old} is not one of {replicas:?}");
    let standby = replicas.iter().find(|r| **r != old).unwrap().clone();

    let scheduler_pods_api: Api<Pod> = Api::namespaced(client.clone(), deployed::NAMESPACE);
    scheduler_pods_api.delete(&old, &DeleteParams::default()).await.expect("delete the leader pod");
    let new = eventually(Duration::from_secs(60), "another replica holding the Lease", || async {
        leader(&client).await.filter(|h| *h != old)
    })
    .await;
    // The next gang arrives once the Lease has moved: until its SIGTERM the
    // deleted leader still leads, and may rightly bind what comes before.
    let names = create_gang(&env, "next", 2, 2).await;
    // The standby, or the Deployment's replacement for the deleted pod if
    // it won the race for the released Lease (seen, even before it was Ready).
    let who = if new == standby { "the standby" } else { "the replacement replica" };
    let live = Api::<Pod>::namespaced(client.clone(), deployed::NAMESPACE).get(&new).await;
    assert!(
        live.is_ok_and(|p| p.metadata.deletion_timestamp.is_none() && p.name_any().starts_with("phalanx-scheduler-")),
        "the Lease went to {new}, not a live scheduler replica"
    );
    for name in &names {
        env.wait_bound(name, Duration::from_secs(90)).await;
    }
    let binder = eventually(Duration::from_secs(60), "the next gang's Scheduled Events", || async {
        let events = env.events_for(&names[0]).await;
        events.into_iter().find(|e| e.reason.as_deref() == Some("Scheduled")).and_then(|e| e.reporting_instance)
    })
    .await;
    assert_eq!(binder, new, "the next gang was bound by {binder}");
    println!("leader {old} deleted; {new} ({who}) took the Lease and bound {names:?}");
    wait_running(&env, &names, Duration::from_secs(120)).await;
    // Leave two replicas for whatever runs next.
    eventually(Duration::from_secs(120), "the Deployment's replacement replica", || async {
        (scheduler_pods(&client).await.len() == 2).then_some(())
    })
    .await;
    env.teardown().await;
}

#[tokio::test]
async fn metrics_and_explain_answer_through_the_api_server() {
    let _turn = TURN.lock().await;
    let env = kind_env("kind-http").await;
    let client = env.client.clone();
    let leader = eventually(Duration::from_secs(60), "a leader", || async { leader(&client).await }).await;
    env.create(&workload(&env, "probe", 1, None)).await;
    let node = env.wait_bound("probe", Duration::from_secs(60)).await;

    let metrics = pod_http(&client, &leader, "/metrics").await.expect("/metrics through pods/proxy");
    let sample =
        |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().last()?.parse::<f64>().ok());
    assert_eq!(sample("phalanx_leader "), Some(1.0), "{metrics}");
    let attempts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("phalanx_schedule_attempts_total{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(attempts >= 1.0, "no scheduling attempts counted:\n{metrics}");

    let explain = pod_http(&client, &leader, &format!("/explain/{}/probe", env.name)).await.expect("/explain");
    assert!(explain.contains(&node), "the explanation does not name {node}:\n{explain}");
    println!("/explain/{}/probe from {leader}:\n{explain}", env.name);
    env.teardown().await;
}
