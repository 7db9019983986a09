//! Gang scheduling end to end, against the local control plane with kwok
//! running the fake nodes: whole gangs or nothing, in one rack when one
//! holds them, waiting for every member, surviving a restart mid-bind,
//! timing out with an Event, and bad gang objects reported by field; the
//! gangs of PyTorchJobs, JobSets and LeaderWorkerSet groups without a PodGroup,
//! and members that finished before the scheduler started counting toward
//! their job's size.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use phalanx_kube::api::jobset::JobSet;
use phalanx_kube::api::leader_worker_set::LeaderWorkerSet;
use phalanx_kube::api::pod_group::PodGroup;
use phalanx_kube::api::pytorch_job::PyTorchJob;
use phalanx_kube::api::upstream_pod_group::PodGroupV1beta1;
use serde_json::json;
use support::{TestEnv, eventually};

const BIND: Duration = Duration::from_secs(30);
const BLOCK: &str = "network.topology.nvidia.com/block";

/// Two racks of `per_rack` 8-GPU H100 nodes.
fn two_racks(per_rack: usize) -> String {
    ["a", "b"]
        .iter()
        .map(|r| {
            format!("- {{name: {r}, count: {per_rack}, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, labels: {{{BLOCK}: rack-{r}}}}}\n")
        })
        .collect()
}

async fn create_pod_group(env: &TestEnv, name: &str, spec: serde_json::Value) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": env.name}, "spec": spec,
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &group).await.unwrap();
}

/// A member of a PodGroup, finishing `run_for` after it starts (kwok).
fn member(env: &TestEnv, name: &str, gpus: u32, group: &str, run_for: Option<&str>) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), group.to_string())].into());
    if let Some(d) = run_for {
        pod.metadata.annotations = Some([("e2e.phalanx.dev/run-for".to_string(), d.to_string())].into());
    }
    pod
}

/// Pods of the env by name: node (if bound) and phase.
async fn pod_states(env: &TestEnv) -> BTreeMap<String, (Option<String>, String)> {
    let list = env.pods().list(&ListParams::default()).await.expect("list pods");
    list.items
        .into_iter()
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), (node, phase))
        })
        .collect()
}

fn bound_with_prefix(states: &BTreeMap<String, (Option<String>, String)>, prefix: &str) -> usize {
    states.iter().filter(|(n, (node, _))| n.starts_with(prefix) && node.is_some()).count()
}

async fn event_reasons(env: &TestEnv, name: &str) -> Vec<(String, String)> {
    env.events_for(name).await.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
}

/// A PyTorchJob of one master and `workers` workers, as users create it.
async fn create_pytorch_job(env: &TestEnv, name: &str, workers: u32) -> PyTorchJob {
    let jobs: Api<PyTorchJob> = Api::namespaced(env.client.clone(), &env.name);
    let template = json!({"spec": {"containers": [{"name": "pytorch", "image": "pytorch/pytorch"}]}});
    let job: PyTorchJob = serde_json::from_value(json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": env.name},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
            "Worker": {"replicas": workers, "restartPolicy": "OnFailure", "template": template}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.expect("a real PyTorchJob object")
}

/// Member `i` of `job` (0 is the master), as the training-operator creates
/// it: owned by the job and labelled with its name, replica type and index.
fn pytorch_member(env: &TestEnv, job: &PyTorchJob, i: usize, gpus: u32) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let (kind, index) = if i == 0 { ("master", 0) } else { ("worker", i - 1) };
    let mut pod = env.pod(&format!("{job_name}-{kind}-{index}"), gpus);
    pod.metadata.labels = Some(
        [
            ("training.kubeflow.org/job-name", job_name.clone()),
            ("training.kubeflow.org/operator-name", "pytorchjob-controller".to_string()),
            ("training.kubeflow.org/replica-type", kind.to_string()),
            ("training.kubeflow.org/replica-index", index.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    pod.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job_name,
            "uid": job.metadata.uid, "controller": true, "blockOwnerDeletion": true
        }))
        .unwrap(),
    ]);
    pod
}

#[tokio::test]
async fn a_pytorch_job_of_four_8_gpu_pods_binds_all_at_once_into_one_rack() {
    let mut env = TestEnv::new("pytorchjob").await;
    let nodes = env.add_pools(&two_racks(4)).await;
    // Rack a has 28 GPUs free (three whole nodes and half of one): not enough.
    env.bind_foreign("tenant", &nodes[0], &[0, 1, 2, 3]).await;
    env.start_scheduler().await;
    let job = create_pytorch_job(&env, "llm", 3).await;
    let names = ["llm-master-0", "llm-worker-0", "llm-worker-1", "llm-worker-2"];
    for i in 0..names.len() {
        env.create(&pytorch_member(&env, &job, i, 8)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if i < 3 {
            let states = pod_states(&env).await;
            assert_eq!(bound_with_prefix(&states, "llm-"), 0, "a member bound with only {} of 4 created", i + 1);
        }
    }
    let first = Instant::now();
    let rack_b = format!("{}-b-", env.name);
    for name in names {
        let node = env.wait_bound(name, BIND).await;
        assert!(node.starts_with(&rack_b), "{name} on {node}, outside rack b");
    }
    assert!(first.elapsed() < Duration::from_secs(10), "the members bound together");
    let on: BTreeSet<String> =
        futures::future::join_all(names.iter().map(|n| env.wait_bound(n, BIND))).await.into_iter().collect();
    assert_eq!(on.len(), 4, "one 8-GPU pod per node: {on:?}");
    env.teardown().await;
}

/// Found by the chaos soak: a leader bound part of a PyTorchJob and died;
/// those members ran and finished before the next leader started, which
/// never saw them (finished pods are not in its pod watch), so the job's
/// last members waited for a size they could never reach.
#[tokio::test]
async fn members_that_finished_before_the_scheduler_started_count_toward_the_job_s_size() {
    let mut env = TestEnv::new("finished-members").await;
    let nodes = env.add_pools(&two_racks(1)).await;
    let job = create_pytorch_job(&env, "short", 3).await;
    for (i, node) in nodes.iter().enumerate() {
        let mut pod = pytorch_member(&env, &job, i, 8);
        pod.metadata.annotations = Some([("e2e.phalanx.dev/run-for".to_string(), "1s".to_string())].into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let created = env.create(&pod).await;
        // Bound as the leader that died had bound them.
        let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": env.name, "uid": created.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        }))
        .unwrap();
        env.pods()
            .create_subresource::<_, kube::core::Status>("binding", &name, &PostParams::default(), &binding)
            .await
            .expect("bind");
    }
    eventually(Duration::from_secs(60), "the first two members to finish", || async {
        let states = pod_states(&env).await;
        (states.values().filter(|(_, phase)| phase == "Succeeded").count() == 2).then_some(())
    })
    .await;
    env.start_scheduler().await;
    for i in 2..4 {
        env.create(&pytorch_member(&env, &job, i, 8)).await;
    }
    for name in ["short-worker-1", "short-worker-2"] {
        env.wait_bound(name, BIND).await;
    }
    env.teardown().await;
}

/// A pod with these labels, as a workload controller creates it.
fn labelled(env: &TestEnv, name: &str, gpus: u32, labels: &[(&str, &str)]) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    pod
}

/// Creates the pods one by one, checking that none binds before the last exists.
async fn create_gang_members(env: &TestEnv, pods: Vec<Pod>, prefix: &str) {
    let count = pods.len();
    for (i, pod) in pods.into_iter().enumerate() {
        env.create(&pod).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if i + 1 < count {
            let bound = bound_with_prefix(&pod_states(env).await, prefix);
            assert_eq!(bound, 0, "{bound} of {prefix}* bound with only {} of {count} created", i + 1);
        }
    }
}

#[tokio::test]
async fn a_jobset_with_no_pod_group_binds_its_pods_whole_into_one_rack() {
    let mut env = TestEnv::new("jobset").await;
    let nodes = env.add_pools(&two_racks(4)).await;
    env.bind_foreign("tenant", &nodes[0], &[0, 1, 2, 3]).await;
    env.start_scheduler().await;
    // One driver and one job of three workers running at once: 4 pods.
    let set = json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "train", "namespace": env.name},
        "spec": {"replicatedJobs": [
            {"name": "driver", "replicas": 1, "template": {"spec": {"parallelism": 1, "template": {}}}},
            {"name": "workers", "replicas": 1, "template": {"spec": {"parallelism": 3, "completions": 3, "template": {}}}}
        ]}
    });
    let _: JobSet = support::create_object(&env, set).await;
    let names = ["train-driver-0-0", "train-workers-0-0", "train-workers-0-1", "train-workers-0-2"];
    let pods = names
        .iter()
        .map(|name| {
            let job = if name.contains("driver") { "driver" } else { "workers" };
            labelled(
                &env,
                name,
                8,
                &[
                    ("jobset.sigs.k8s.io/jobset-name", "train"),
                    ("jobset.sigs.k8s.io/replicatedjob-name", job),
                    ("jobset.sigs.k8s.io/job-index", "0"),
                ],
            )
        })
        .collect();
    create_gang_members(&env, pods, "train-").await;
    let rack_b = format!("{}-b-", env.name);
    let mut on = BTreeSet::new();
    for name in names {
        let node = env.wait_bound(name, BIND).await;
        assert!(node.starts_with(&rack_b), "{name} on {node}, outside rack b (rack a has 28 GPUs free)");
        on.insert(node);
    }
    assert_eq!(on.len(), 4, "one 8-GPU pod per node: {on:?}");
    env.teardown().await;
}

#[tokio::test]
async fn each_leader_worker_set_group_binds_whole_on_its_own() {
    let mut env = TestEnv::new("lws").await;
    env.add_pools("- {name: n, count: 3, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    let set = json!({
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": {"name": "vllm", "namespace": env.name},
        "spec": {"replicas": 2, "leaderWorkerTemplate": {"size": 3, "workerTemplate": {}}}
    });
    let _: LeaderWorkerSet = support::create_object(&env, set).await;
    // Pods as the LWS controller names and labels them: the leader `vllm-G`,
    // its workers `vllm-G-W`.
    let group = |g: &str| -> Vec<Pod> {
        ["", "-1", "-2"]
            .iter()
            .enumerate()
            .map(|(w, suffix)| {
                let worker = w.to_string();
                labelled(
                    &env,
                    &format!("vllm-{g}{suffix}"),
                    4,
                    &[
                        ("leaderworkerset.sigs.k8s.io/name", "vllm"),
                        ("leaderworkerset.sigs.k8s.io/group-index", g),
                        ("leaderworkerset.sigs.k8s.io/worker-index", &worker),
                        ("leaderworkerset.sigs.k8s.io/group-key", &format!("key{g}")),
                    ],
                )
            })
            .collect()
    };
    create_gang_members(&env, group("0"), "vllm-0").await;
    for name in ["vllm-0", "vllm-0-1", "vllm-0-2"] {
        env.wait_bound(name, BIND).await;
    }
    // Group 1 with two of its three pods waits, whole, while group 0 runs.
    let mut second = group("1");
    let last = second.pop().unwrap();
    for pod in &second {
        env.create(pod).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bound_with_prefix(&pod_states(&env).await, "vllm-1"), 0, "group 1 bound part of itself");
    env.create(&last).await;
    for name in ["vllm-1", "vllm-1-1", "vllm-1-2"] {
        env.wait_bound(name, BIND).await;
    }
    env.teardown().await;
}

#[tokio::test]
async fn of_two_gangs_needing_three_quarters_of_the_fleet_one_binds_whole_and_the_other_waits_whole() {
    let mut env = TestEnv::new("two-gangs").await;
    env.add_pools("- {name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    for g in ["first", "second"] {
        create_pod_group(&env, g, json!({"minMember": 3})).await;
    }
    for g in ["first", "second"] {
        for i in 0..3 {
            env.create(&member(&env, &format!("{g}-{i}"), 8, g, Some("6s"))).await;
        }
    }
    // Whichever wins, the other has nothing bound until it fits whole.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut winner: Option<&str> = None;
    let mut seen_second_whole = false;
    while Instant::now() < deadline && !seen_second_whole {
        let states = pod_states(&env).await;
        let (a, b) = (bound_with_prefix(&states, "first-"), bound_with_prefix(&states, "second-"));
        let running = |prefix: &str| {
            states
                .iter()
                .filter(|(n, (node, phase))| n.starts_with(prefix) && node.is_some() && phase != "Succeeded")
                .count()
        };
        if winner.is_none() && (a == 3 || b == 3) {
            winner = Some(if a == 3 { "first-" } else { "second-" });
        }
        if let Some(w) = winner {
            let loser = if w == "first-" { "second-" } else { "first-" };
            let lost = bound_with_prefix(&states, loser);
            // The loser fits (3 of the 4 nodes) once the winner holds at most one.
            if running(w) > 1 {
                assert_eq!(lost, 0, "{loser} has {lost} bound while {w} still runs on {} nodes", running(w));
            }
            seen_second_whole = lost == 3;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(winner.is_some(), "neither gang bound");
    assert!(seen_second_whole, "the second gang never bound whole");
    env.teardown().await;
}

#[tokio::test]
async fn a_gang_whose_members_trickle_in_binds_only_when_the_last_one_exists() {
    let mut env = TestEnv::new("trickle").await;
    env.add_pools("- {name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    create_pod_group(&env, "slow", json!({"minMember": 4})).await;
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(3300)).await;
            let states = pod_states(&env).await;
            assert_eq!(bound_with_prefix(&states, "slow-"), 0, "bound with {i} of 4 members created");
        }
        env.create(&member(&env, &format!("slow-{i}"), 4, "slow", None)).await;
        if i == 1 {
            let condition = env.wait_unschedulable("slow-0", BIND).await;
            let message = condition.message.unwrap_or_default();
            assert!(message.contains("of 4 members created"), "{message}");
        }
    }
    for i in 0..4 {
        env.wait_bound(&format!("slow-{i}"), BIND).await;
    }
    let reasons = event_reasons(&env, "slow").await;
    assert!(reasons.iter().any(|(r, m)| r == "Waiting" && m.contains("members created")), "{reasons:?}");
    env.teardown().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_binding_a_16_pod_gang_ends_with_one_consistent_placement() {
    let mut env = TestEnv::new("restart").await;
    env.add_pools(&two_racks(8)).await;
    // Slow client: 16 members x 2 calls (GPU annotation, binding) at 4/s.
    let slow = env.config_with_client(4, 1);
    env.start_scheduler_with(&slow).await;
    create_pod_group(&env, "big", json!({"minMember": 16})).await;
    for i in 0..16 {
        env.create(&member(&env, &format!("big-{i:02}"), 4, "big", None)).await;
    }
    let bound_before = eventually(Duration::from_secs(60), "a few members bound", || async {
        let n = bound_with_prefix(&pod_states(&env).await, "big-");
        (n >= 3).then_some(n)
    })
    .await;
    env.scheduler().start_kill().expect("kill phalanx");
    let _ = env.scheduler().wait().await;
    let after_kill = bound_with_prefix(&pod_states(&env).await, "big-");
    assert!(after_kill < 16, "killed too late: {after_kill} of 16 bound (saw {bound_before})");
    env.start_scheduler().await;
    let nodes: Vec<String> = futures::future::join_all((0..16).map(|i| {
        let env = &env;
        async move { env.wait_bound(&format!("big-{i:02}"), Duration::from_secs(60)).await }
    }))
    .await;
    let racks: BTreeSet<&str> = nodes.iter().map(|n| if n.contains("-a-") { "a" } else { "b" }).collect();
    assert_eq!(racks.len(), 1, "the gang was split across racks after the restart: {nodes:?}");
    // No GPU handed out twice on any node.
    let mut per_node: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        per_node.entry(node).or_default().extend(env.recorded_gpus(&format!("big-{i:02}")).await);
    }
    for (node, gpus) in &per_node {
        let unique: BTreeSet<&u32> = gpus.iter().collect();
        assert_eq!(unique.len(), gpus.len(), "GPUs over-committed on {node}: {gpus:?}");
        assert!(gpus.len() <= 8);
    }
    env.teardown().await;
}

#[tokio::test]
async fn a_gang_that_can_never_fit_times_out_with_an_event() {
    let mut env = TestEnv::new("timeout").await;
    env.add_pools("- {name: n, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    create_pod_group(&env, "toobig", json!({"minMember": 2, "scheduleTimeoutSeconds": 2})).await;
    for i in 0..2 {
        env.create(&member(&env, &format!("toobig-{i}"), 8, "toobig", None)).await;
    }
    let reasons = eventually(Duration::from_secs(40), "a GangTimeout Event on the PodGroup", || async {
        let reasons = event_reasons(&env, "toobig").await;
        reasons.iter().any(|(r, _)| r == "GangTimeout").then_some(reasons)
    })
    .await;
    let (_, message) = reasons.iter().find(|(r, _)| r == "GangTimeout").unwrap();
    assert!(message.contains("scheduleTimeoutSeconds (2s)") && message.contains("gang needs 2 pods"), "{message}");
    let states = pod_states(&env).await;
    assert_eq!(bound_with_prefix(&states, "toobig-"), 0);
    env.teardown().await;
}

#[tokio::test]
async fn bad_gang_objects_are_reported_by_field_and_the_queue_keeps_moving() {
    let mut env = TestEnv::new("badgang").await;
    env.add_pools("- {name: n, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    create_pod_group(&env, "zero", json!({"minMember": 0})).await;
    env.create(&member(&env, "zero-0", 1, "zero", None)).await;
    env.create(&member(&env, "orphan-0", 1, "no-such-group", None)).await;
    let jobs: Api<PyTorchJob> = Api::namespaced(env.client.clone(), &env.name);
    let job: PyTorchJob = serde_json::from_value(json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "noworkers", "namespace": env.name},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {}}, "Worker": {"replicas": 0, "template": {}}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let mut master = env.pod("noworkers-master-0", 1);
    master.metadata.labels = Some([("training.kubeflow.org/job-name".to_string(), "noworkers".to_string())].into());
    env.create(&master).await;
    env.create(&env.pod("lone", 1)).await;
    env.wait_bound("lone", BIND).await;

    let zero = eventually(BIND, "an InvalidObject Event on the PodGroup", || async {
        event_reasons(&env, "zero").await.into_iter().find(|(r, _)| r == "InvalidObject")
    })
    .await;
    assert!(zero.1.contains("PodGroup") && zero.1.contains("spec.minMember is 0"), "{zero:?}");
    let orphan = env.wait_unschedulable("orphan-0", BIND).await.message.unwrap_or_default();
    assert!(orphan.contains("no-such-group") && orphan.contains("does not exist"), "{orphan}");
    let job_event = eventually(BIND, "an InvalidObject Event on the PyTorchJob", || async {
        event_reasons(&env, "noworkers").await.into_iter().find(|(r, _)| r == "InvalidObject")
    })
    .await;
    assert!(job_event.1.contains("spec.pytorchReplicaSpecs.Worker.replicas is 0"), "{job_event:?}");
    let states = pod_states(&env).await;
    assert_eq!(states["zero-0"].0, None);
    assert_eq!(states["noworkers-master-0"].0, None);
    assert!(env.log().contains("invalid gang object"), "logged, not crashed");
    assert_eq!(env.scheduler().try_wait().unwrap(), None, "the scheduler is still running");
    env.teardown().await;
}

/// Creates a `scheduling.k8s.io/v1beta1` PodGroup (Kubernetes 1.37) with
/// `spec` and returns a pod template naming it.
async fn create_upstream_group(env: &TestEnv, name: &str, spec: serde_json::Value) {
    let group: PodGroupV1beta1 =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": env.name}, "spec": spec})).unwrap();
    Api::<PodGroupV1beta1>::namespaced(env.client.clone(), &env.name)
        .create(&PostParams::default(), &group)
        .await
        .expect("scheduling.k8s.io/v1beta1 PodGroups are served by the test control plane");
}

fn upstream_member(env: &TestEnv, name: &str, group: &str, gpus: u32) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.spec.as_mut().unwrap().scheduling_group = Some(serde_json::from_value(json!({"podGroupName": group})).unwrap());
    pod
}

/// The PodGroup's condition of `type_`: (status, reason, message).
async fn group_condition(env: &TestEnv, group: &str, type_: &str) -> Option<(String, String, String)> {
    let group = Api::<PodGroupV1beta1>::namespaced(env.client.clone(), &env.name).get(group).await.ok()?;
    let conditions = group.status?.conditions?;
    let c = conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test]
async fn an_upstream_pod_group_is_a_gang_where_the_api_server_serves_it() {
    let mut env = TestEnv::new("upstream").await;
    env.add_pools("- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    env.start_scheduler().await;
    create_upstream_group(&env, "up", json!({"schedulingPolicy": {"gang": {"minCount": 2}}})).await;
    env.create(&upstream_member(&env, "up-0", "up", 8)).await;
    let waiting = env.wait_unschedulable("up-0", BIND).await.message.unwrap_or_default();
    assert!(waiting.contains("PodGroup") && waiting.contains("1 of 2 members created"), "{waiting}");
    let (status, reason, message) = eventually(BIND, "PodGroupInitiallyScheduled=False", || async {
        group_condition(&env, "up", "PodGroupInitiallyScheduled").await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unschedulable"));
    assert!(message.contains("1 of 2 members created"), "{message}");
    env.create(&upstream_member(&env, "up-1", "up", 8)).await;
    let nodes: BTreeSet<String> = [env.wait_bound("up-0", BIND).await, env.wait_bound("up-1", BIND).await].into();
    assert_eq!(nodes.len(), 2);
    let (_, reason, message) = eventually(BIND, "PodGroupInitiallyScheduled=True", || async {
        group_condition(&env, "up", "PodGroupInitiallyScheduled").await.filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!((reason.as_str(), message.as_str()), ("Scheduled", "2 members placed"));
    env.teardown().await;
}

/// Kubernetes 1.37's `schedulingConstraints.topology`: all members within
/// one value of the node label. Two racks of two nodes, one node of each
/// busy: two free nodes, but no rack with two, so the gang waits (where
/// without the constraint it would span the racks), and binds whole into
/// the rack that frees up.
#[tokio::test]
async fn an_upstream_pod_group_with_a_topology_constraint_stays_within_one_domain() {
    const RACK: &str = "example.com/rack";
    let mut env = TestEnv::new("upstream-topology").await;
    let nodes = env
        .add_pools(&format!(
            "- {{name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, \
             domains: [{{labels: [{RACK}], size: 2, prefix: rack}}]}}\n"
        ))
        .await;
    env.start_scheduler().await;
    let rack_of = |node: &str| nodes.iter().position(|n| n == node).map(|i| i / 2);
    for (filler, node) in [("busy-a", &nodes[0]), ("busy-b", &nodes[2])] {
        let mut pod = env.pod(filler, 8);
        pod.spec.as_mut().unwrap().node_selector = Some([("kubernetes.io/hostname".to_string(), node.clone())].into());
        env.create(&pod).await;
        assert_eq!(&env.wait_bound(filler, BIND).await, node);
    }
    let spec = json!({"schedulingPolicy": {"gang": {"minCount": 2}},
        "schedulingConstraints": {"topology": [{"key": RACK}]}});
    create_upstream_group(&env, "racked", spec).await;
    for name in ["racked-0", "racked-1"] {
        env.create(&upstream_member(&env, name, "racked", 8)).await;
    }
    let within = format!("gang needs 2 pods placed together (16 GPUs) within one {RACK}");
    eventually(BIND, "the reason naming the required domain", || async {
        let message = env.wait_unschedulable("racked-0", BIND).await.message.unwrap_or_default();
        message.contains(&within).then_some(())
    })
    .await;
    let (_, reason, _) = eventually(BIND, "PodGroupInitiallyScheduled=False", || async {
        group_condition(&env, "racked", "PodGroupInitiallyScheduled").await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "Unschedulable");

    env.pods().delete("busy-b", &Default::default()).await.unwrap();
    let placed = [env.wait_bound("racked-0", BIND).await, env.wait_bound("racked-1", BIND).await];
    assert_eq!(placed.iter().map(|n| rack_of(n)).collect::<BTreeSet<_>>(), BTreeSet::from([Some(1)]), "{placed:?}");
    eventually(BIND, "PodGroupInitiallyScheduled=True", || async {
        group_condition(&env, "racked", "PodGroupInitiallyScheduled").await.filter(|c| c.0 == "True")
    })
    .await;
    env.teardown().await;
}
