//! End-to-end: the real `phalanx` binary against a real API server, with
//! kwok as the kubelet of fake GPU nodes. See tests/support for the harness.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Pod};
use kube::api::{ListParams, PostParams};
use phalanx::cluster_invariants::gpus_by_node;
use serde_json::json;
use support::{TestEnv, eventually, http_get};

const BIND: Duration = Duration::from_secs(30);

const TWO_H100: &str = "
- {name: h100, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, cpu: '224', memory: 2Ti}
";

#[tokio::test]
async fn a_pod_is_bound_to_a_node_that_fits_and_gets_a_scheduled_event() {
    let mut env = TestEnv::new("fits").await;
    env.add_pools("- {name: small, count: 2, gpus: 2}\n- {name: big, count: 1, gpus: 8}\n").await;
    env.start_scheduler().await;
    env.create(&env.pod("trainer", 4)).await;
    let node = env.wait_bound("trainer", BIND).await;
    assert_eq!(node, format!("{}-big-0", env.name), "only the 8-GPU node fits 4 GPUs");
    let events = eventually(BIND, "the Scheduled event", || async {
        let e = env.events_for("trainer").await;
        e.iter().any(|e| e.reason.as_deref() == Some("Scheduled")).then_some(e)
    })
    .await;
    let note = events.iter().find_map(|e| e.note.clone()).unwrap();
    assert!(note.contains(&node), "{note}");
    // The pod really runs on the node (kwok as its kubelet).
    let pods = env.pods();
    eventually(BIND, "pod Running", || async {
        (pods.get("trainer").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    env.teardown().await;
}

#[tokio::test]
async fn a_pod_for_another_scheduler_is_left_alone() {
    let mut env = TestEnv::new("other").await;
    env.add_pools(TWO_H100).await;
    env.start_scheduler().await;
    env.create(&env.pod_for("not-ours", 1, "default-scheduler")).await;
    env.create(&env.pod("ours", 1)).await;
    env.wait_bound("ours", BIND).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = env.pods().get("not-ours").await.unwrap();
    assert_eq!(pod.spec.unwrap().node_name, None);
    let touched = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(touched.is_empty(), "phalanx wrote status on a pod that is not its own: {touched:?}");
    assert!(env.events_for("not-ours").await.is_empty());
    env.teardown().await;
}

#[tokio::test]
async fn an_impossible_pod_gets_the_unschedulable_condition_and_an_event() {
    let mut env = TestEnv::new("impossible").await;
    env.add_pools(TWO_H100).await;
    env.start_scheduler().await;
    env.create(&env.pod("greedy", 16)).await;
    let pods = env.pods();
    let condition = env.wait_unschedulable("greedy", BIND).await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    let message = condition.message.unwrap();
    // Every node in the cluster is counted; ours fail on GPUs, the rest on the selector.
    assert!(message.starts_with("0/"), "{message}");
    assert!(message.contains("2 Insufficient nvidia.com/gpu"), "{message}");
    // The Event is written just after the condition, with the same words. Other
    // tests adding nodes meanwhile can change the count, so compare with the
    // condition as it is now.
    let failed = eventually(BIND, "a FailedScheduling Event with the condition's message", || async {
        let conditions = pods.get("greedy").await.ok()?.status?.conditions?;
        let now = conditions.into_iter().find(|c| c.type_ == "PodScheduled")?.message?;
        env.events_for("greedy")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling") && e.note.as_deref() == Some(now.as_str()))
    })
    .await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(pods.get("greedy").await.unwrap().spec.unwrap().node_name, None);
    env.teardown().await;
}

#[tokio::test]
async fn a_pod_that_fits_only_one_labelled_node_lands_there() {
    let mut env = TestEnv::new("labelled").await;
    env.add_pools(
        "- {name: plain, count: 3, gpus: 8}\n- {name: special, count: 1, gpus: 8, labels: {example.com/fabric: infiniband}}\n",
    )
    .await;
    env.start_scheduler().await;
    let mut by_selector = env.pod("by-selector", 2);
    by_selector
        .spec
        .as_mut()
        .unwrap()
        .node_selector
        .as_mut()
        .unwrap()
        .insert("example.com/fabric".into(), "infiniband".into());
    let mut by_affinity = env.pod("by-affinity", 2);
    by_affinity.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "example.com/fabric", "operator": "In", "values": ["infiniband"]}]}]
        }}}))
        .unwrap(),
    );
    env.create(&by_selector).await;
    env.create(&by_affinity).await;
    let special = format!("{}-special-0", env.name);
    assert_eq!(env.wait_bound("by-selector", BIND).await, special);
    assert_eq!(env.wait_bound("by-affinity", BIND).await, special);
    env.teardown().await;
}

#[tokio::test]
async fn two_hundred_pods_at_once_all_bind_and_no_node_is_over_capacity() {
    let mut env = TestEnv::new("burst").await;
    // Exactly 200 GPUs: every pod binds only if none is double-counted or lost.
    env.add_pools("- {name: gpu, count: 25, gpus: 8, cpu: '64', memory: 512Gi}\n").await;
    env.start_scheduler().await;
    let started = Instant::now();
    let api = env.pods();
    futures::stream::iter(0..200)
        .map(|i| {
            let (api, pod) = (api.clone(), env.pod(&format!("w-{i}"), 1));
            async move { api.create(&PostParams::default(), &pod).await.expect("create") }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let pods: Vec<Pod> = eventually(Duration::from_secs(120), "200 pods bound", || async {
        let list = api.list(&ListParams::default()).await.ok()?.items;
        (list.len() == 200 && list.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()))
            .then_some(list)
    })
    .await;
    eprintln!("200 pods created and bound in {:?}", started.elapsed());
    let used = gpus_by_node(&pods);
    assert_eq!(used.len(), 25, "all 25 nodes are used: {used:?}");
    for (node, gpus) in &used {
        assert!(*gpus <= 8, "{node} holds {gpus} GPUs");
    }
    env.teardown().await;
}

#[tokio::test]
async fn a_waiting_pod_is_woken_by_a_new_node_not_by_a_timer() {
    let mut env = TestEnv::new("wake").await;
    env.add_pools("- {name: small, count: 1, gpus: 4}\n").await;
    env.start_scheduler().await;
    env.create(&env.pod("needs-eight", 8)).await;
    env.wait_unschedulable("needs-eight", BIND).await;
    let added = Instant::now();
    env.add_pools("- {name: big, count: 1, gpus: 8}\n").await;
    let node = env.wait_bound("needs-eight", Duration::from_secs(20)).await;
    // Unschedulable pods are otherwise retried once a minute.
    assert!(added.elapsed() < Duration::from_secs(20), "took {:?}", added.elapsed());
    assert_eq!(node, format!("{}-big-0", env.name));
    env.teardown().await;
}

#[tokio::test]
async fn pods_bound_by_someone_else_hold_their_resources() {
    let mut env = TestEnv::new("foreign").await;
    let nodes = env.add_pools("- {name: only, count: 1, gpus: 8}\n").await;
    env.start_scheduler().await;
    // Bound directly through the API (as another scheduler would), after phalanx started.
    let foreign = env.create(&env.pod_for("foreign", 6, "another-scheduler")).await;
    let binding: Binding = serde_json::from_value(json!({
        "metadata": {"name": "foreign", "namespace": env.name, "uid": foreign.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": nodes[0]}
    }))
    .unwrap();
    env.pods()
        .create_subresource::<_, kube::core::Status>("binding", "foreign", &PostParams::default(), &binding)
        .await
        .expect("bind foreign pod");
    env.create(&env.pod("fits-in-two", 2)).await;
    env.wait_bound("fits-in-two", BIND).await;
    env.create(&env.pod("one-too-many", 1)).await;
    let message = env.wait_unschedulable("one-too-many", BIND).await.message.unwrap_or_default();
    assert!(message.contains("1 Insufficient nvidia.com/gpu"), "{message}");
    env.teardown().await;
}

#[tokio::test]
async fn metrics_health_and_a_clean_shutdown_on_sigterm() {
    let mut env = TestEnv::new("lifecycle").await;
    env.add_pools("- {name: gpu, count: 1, gpus: 8}\n").await;
    env.start_scheduler().await;
    env.create(&env.pod("one", 1)).await;
    env.wait_bound("one", BIND).await;
    let port = env.http_port;
    assert_eq!(http_get(port, "/healthz").await.map(|r| r.0), Some(200));
    let scheduled =
        format!("phalanx_schedule_attempts_total{{result=\"scheduled\",profile=\"{}\"}} 1", env.scheduler_name);
    let wanted = [
        scheduled.as_str(),
        "phalanx_scheduling_attempt_duration_seconds_bucket",
        "phalanx_pending_pods",
        "phalanx_bind_duration_seconds_count",
    ];
    // The bind is seen through the API before phalanx has had its answer
    // and recorded the bind's duration: on a busy machine, a moment later.
    let body = eventually(Duration::from_secs(10), "the bind in /metrics", || async {
        let (code, body) = http_get(port, "/metrics").await?;
        (code == 200 && body.contains("phalanx_bind_duration_seconds_count")).then_some(body)
    })
    .await;
    for name in wanted {
        assert!(body.contains(name), "missing {name}:\n{body}");
    }
    let pid = env.scheduler().id().unwrap();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), env.scheduler().wait()).await.expect("exits").unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", env.log());
    assert!(env.log().contains("stopped"));
    env.teardown().await;
}

#[tokio::test]
async fn a_bad_config_stops_start_up_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("phalanx-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.yaml");
    std::fs::write(
        &config,
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {qps: 0}\nprofiles: [{schedulerName: x}]\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_phalanx"))
        .args(["run", "--kubeconfig"])
        .arg(support::kubeconfig_path())
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("clientConnection.qps"), "{stderr}");
}
