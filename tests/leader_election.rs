//! Two replicas with leader election through a Lease, end to end: one leads
//! and binds, the other stands by with warm caches and binds nothing; the
//! standby takes over when the leader is killed in the middle of binding a
//! gang, or released at shutdown; a leader frozen past its lease notices
//! the loss when it wakes and binds nothing more.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::{Replica, TestEnv, eventually};

const LEASE: &str = "phalanx";
const BOUND: &str = "phalanx_bind_duration_seconds_count{result=\"bound\"}";
const NOT_SENT: &str = "phalanx_bind_duration_seconds_count{result=\"not_sent\"}";
/// Lease times short enough for a test: the standby may take over 4 s after
/// the last renewal it saw.
const TIMES: &str = "leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 1s";

/// The env's configuration at `qps`, electing a leader through a Lease in the env's namespace.
fn elected(env: &TestEnv, qps: u32) -> String {
    format!(
        "{}leaderElection: {{leaderElect: true, {TIMES}, resourceNamespace: {}, resourceName: {LEASE}}}\n",
        env.config_with_client(qps, 1),
        env.name
    )
}

async fn holder(env: &TestEnv) -> Option<String> {
    holder_in(env, &env.name).await
}

async fn holder_in(env: &TestEnv, namespace: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), namespace).get_opt(LEASE).await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_holder(env: &TestEnv, identity: &str, limit: Duration) {
    wait_holder_in(env, &env.name, identity, limit).await;
}

async fn wait_holder_in(env: &TestEnv, namespace: &str, identity: &str, limit: Duration) {
    eventually(limit, &format!("{identity} to hold the lease in {namespace}"), || async {
        (holder_in(env, namespace).await.as_deref() == Some(identity)).then_some(())
    })
    .await;
}

/// Starts `replica-1`, waits until it leads, then starts `replica-2` as its standby.
async fn leader_and_standby(env: &TestEnv, config: &str) -> (Replica, Replica) {
    let leader = env.start_replica(config, "replica-1").await;
    wait_holder(env, "replica-1", Duration::from_secs(20)).await;
    let standby = env.start_replica(config, "replica-2").await;
    (leader, standby)
}

async fn create_gang(env: &TestEnv, name: &str, members: usize, gpus: u32) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": env.name}, "spec": {"minMember": members},
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &group).await.unwrap();
    for i in 0..members {
        let mut pod = env.pod(&format!("{name}-{i:02}"), gpus);
        pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), name.to_string())].into());
        env.create(&pod).await;
    }
}

/// Nodes of the gang's bound members, by member name.
async fn bound_members(env: &TestEnv, gang: &str) -> BTreeMap<String, String> {
    let pods = env.pods().list(&ListParams::default()).await.expect("list pods");
    pods.items
        .into_iter()
        .filter_map(|p| {
            let name = p.metadata.name?;
            let node = p.spec?.node_name?;
            name.starts_with(&format!("{gang}-")).then_some((name, node))
        })
        .collect()
}

async fn wait_all_bound(env: &TestEnv, gang: &str, members: usize, limit: Duration) -> BTreeMap<String, String> {
    eventually(limit, &format!("all {members} members of {gang} bound"), || async {
        let bound = bound_members(env, gang).await;
        (bound.len() == members).then_some(bound)
    })
    .await
}

/// No GPU recorded twice on any node, across every pod of the env.
async fn assert_no_gpu_handed_out_twice(env: &TestEnv) {
    let mut per_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pod in env.pods().list(&ListParams::default()).await.expect("list pods").items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        per_node.entry(node).or_default().extend(env.recorded_gpus(&pod.metadata.name.unwrap()).await);
    }
    for (node, gpus) in &per_node {
        let unique: BTreeSet<&u32> = gpus.iter().collect();
        assert_eq!(unique.len(), gpus.len(), "GPUs over-committed on {node}: {gpus:?}");
        assert!(gpus.len() <= 8, "{node}: {gpus:?}");
    }
}

#[tokio::test]
async fn of_two_replicas_one_leads_and_binds_the_other_binds_nothing_and_takes_over_on_release() {
    let env = TestEnv::new("lead").await;
    // Four nodes for the gang, one for a pod after it.
    env.add_pools("- {name: n, count: 5, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let config = elected(&env, 100);
    let (mut leader, standby) = leader_and_standby(&env, &config).await;
    assert_eq!(leader.metric("phalanx_leader").await, Some(1.0));
    assert_eq!(standby.metric("phalanx_leader").await, Some(0.0), "ready, but standing by");
    create_gang(&env, "g", 4, 8).await;
    wait_all_bound(&env, "g", 4, Duration::from_secs(30)).await;
    assert_eq!(leader.metric(BOUND).await, Some(4.0));
    assert_eq!(standby.metric(BOUND).await, None, "the standby bound nothing");
    assert!(standby.log().contains("another replica leads; standing by leader=replica-1"), "{}", standby.log());
    assert_no_gpu_handed_out_twice(&env).await;

    // A clean shutdown releases the lease: the standby takes over at its next look.
    leader.signal("TERM");
    let stopped = Instant::now();
    let _ = leader.process.wait().await;
    // Released: no holder (or already the standby), not left to expire.
    let after_exit = holder(&env).await;
    assert!(after_exit.as_deref().is_none_or(|h| h == "replica-2"), "still held by {after_exit:?}");
    assert!(leader.log().contains("leader lease released"), "{}", leader.log());
    wait_holder(&env, "replica-2", Duration::from_secs(10)).await;
    println!("takeover after a released lease: {:.1} s", stopped.elapsed().as_secs_f64());
    env.create(&env.pod("after", 8)).await;
    env.wait_bound("after", Duration::from_secs(30)).await;
    assert_eq!(standby.metric(BOUND).await, Some(1.0));
    assert_eq!(standby.metric("phalanx_leader").await, Some(1.0));
    env.teardown().await;
}

#[tokio::test]
async fn the_standby_finishes_a_gang_whose_leader_was_killed_in_the_middle_of_binding_it() {
    let env = TestEnv::new("lkill").await;
    let racks: String =
        ["a", "b"].iter().map(|r| format!("- {{name: {r}, count: 16, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, labels: {{network.topology.nvidia.com/block: rack-{r}}}}}\n")).collect();
    env.add_pools(&racks).await;
    // Slow client: 16 members x 2 calls (GPU annotation, binding) at 4/s.
    let (mut leader, standby) = leader_and_standby(&env, &elected(&env, 4)).await;
    create_gang(&env, "big", 16, 8).await;
    let before = eventually(Duration::from_secs(60), "a few members bound", || async {
        let n = bound_members(&env, "big").await.len();
        (n >= 3).then_some(n)
    })
    .await;
    leader.process.start_kill().expect("SIGKILL the leader");
    let killed = Instant::now();
    let _ = leader.process.wait().await;
    let at_kill = bound_members(&env, "big").await.len();
    assert!(at_kill < 16, "killed too late: {at_kill} of 16 bound (saw {before})");

    wait_holder(&env, "replica-2", Duration::from_secs(20)).await;
    let takeover = killed.elapsed();
    let nodes = wait_all_bound(&env, "big", 16, Duration::from_secs(60)).await;
    let finished = killed.elapsed();
    println!(
        "leader killed with {at_kill}/16 bound: lease taken over after {:.1} s, gang finished after {:.1} s",
        takeover.as_secs_f64(),
        finished.as_secs_f64()
    );
    // Lease 4 s, looked at every 1 s; the rest is slack for a loaded machine.
    assert!(takeover < Duration::from_secs(10), "took over only after {takeover:?}");
    let racks: BTreeSet<bool> = nodes.values().map(|n| n.contains("-a-")).collect();
    assert_eq!(racks.len(), 1, "the gang was split across racks: {nodes:?}");
    assert_no_gpu_handed_out_twice(&env).await;
    let by_standby = standby.metric(BOUND).await.unwrap_or(0.0);
    assert!(by_standby >= (16 - at_kill) as f64, "the standby bound {by_standby}, {at_kill} were bound before");
    let lease = Api::<Lease>::namespaced(env.client.clone(), &env.name).get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(1), "{lease:?}");
    env.teardown().await;
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_binds_nothing_once_it_wakes() {
    let env = TestEnv::new("lfreeze").await;
    // Eight nodes for the gang, one for a pod after it.
    env.add_pools("- {name: n, count: 9, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    // Slower still: 8 members x 2 calls at 2/s, so binds wait in line when it freezes.
    let (leader, _standby) = leader_and_standby(&env, &elected(&env, 2)).await;
    create_gang(&env, "g", 8, 8).await;
    eventually(Duration::from_secs(60), "a few members bound", || async {
        (bound_members(&env, "g").await.len() >= 2).then_some(())
    })
    .await;
    leader.signal("STOP");
    let frozen = Instant::now();
    // A call already on the wire when it froze may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_freeze = bound_members(&env, "g").await.len();
    assert!(at_freeze < 8, "frozen too late: {at_freeze} of 8 bound");

    wait_holder(&env, "replica-2", Duration::from_secs(20)).await;
    println!("leader frozen with {at_freeze}/8 bound: lease taken over after {:.1} s", frozen.elapsed().as_secs_f64());
    wait_all_bound(&env, "g", 8, Duration::from_secs(60)).await;
    leader.signal("CONT");
    // Awake again: it sees the loss and refuses the binds it had queued.
    eventually(Duration::from_secs(10), "the woken leader to stand by", || async {
        (leader.metric("phalanx_leader").await == Some(0.0)).then_some(())
    })
    .await;
    let refused = eventually(Duration::from_secs(10), "queued binds refused", || async {
        leader.metric(NOT_SENT).await.filter(|n| *n >= 1.0)
    })
    .await;
    let bound_by_old = leader.metric(BOUND).await.unwrap_or(0.0);
    assert!(bound_by_old <= at_freeze as f64, "bound {bound_by_old} though only {at_freeze} were bound at the freeze");
    // And it stays out of the way: new work goes to the new leader only.
    env.create(&env.pod("later", 8)).await;
    let _ = env.wait_bound("later", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(leader.metric(BOUND).await.unwrap_or(0.0), bound_by_old);
    assert_eq!(holder(&env).await.as_deref(), Some("replica-2"));
    assert!(leader.log().contains("this replica lost the lease"), "{}", leader.log());
    println!("the woken leader refused {refused} queued binds and bound nothing more");
    assert_no_gpu_handed_out_twice(&env).await;
    env.teardown().await;
}

/// The README's own command before `kubectl apply -k deploy/`: the Lease's
/// namespace does not exist. The replica says so at start and in `/readyz`
/// (naming the setting and the ways out) instead of standing by silently,
/// and leads as soon as the namespace appears.
#[tokio::test]
async fn a_missing_lease_namespace_is_reported_at_start_and_by_readyz_until_it_exists() {
    let env = TestEnv::new("leasens").await;
    env.add_pools("- {name: n, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let lease_namespace = format!("{}-lease", env.name);
    let config = format!(
        "{}leaderElection: {{leaderElect: true, {TIMES}, resourceNamespace: {lease_namespace}, resourceName: {LEASE}}}\n",
        env.config_with_client(100, 200)
    );
    let replica = env.spawn_replica(&config, "replica-1");
    let port = replica.http_port;
    let (_, why) = eventually(Duration::from_secs(30), "/readyz saying why it cannot lead", || async move {
        support::http_get(port, "/readyz").await.filter(|(code, body)| *code == 503 && body.contains("Lease"))
    })
    .await;
    println!("/readyz: {why}");
    for needed in ["leaderElection.resourceNamespace", &lease_namespace, "kubectl create namespace", "does not exist"] {
        assert!(why.contains(needed), "/readyz lacks {needed:?}: {why}");
    }
    let log = replica.log();
    let error = log.lines().find(|l| l.contains("ERROR") && l.contains("leaderElection.resourceNamespace"));
    assert!(error.is_some(), "no error naming the setting in the log:\n{log}");
    let said = log.lines().filter(|l| l.contains("leaderElection.resourceNamespace")).count();
    assert_eq!(said, 1, "said once, not at every retry:\n{log}");

    env.create(&env.pod("waits", 8)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = env.pods().get("waits").await.expect("pod");
    assert_eq!(pod.spec.and_then(|s| s.node_name), None, "bound although no replica can lead");

    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": lease_namespace}})).unwrap();
    let namespaces = Api::<Namespace>::all(env.client.clone());
    namespaces.create(&PostParams::default(), &namespace).await.expect("create the lease namespace");
    wait_holder_in(&env, &lease_namespace, "replica-1", Duration::from_secs(20)).await;
    let _ = env.wait_bound("waits", Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), "/readyz ok", || async move {
        support::http_get(port, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert!(replica.log().contains("the leader lease can be written again"), "{}", replica.log());
    let _ = namespaces.delete(&lease_namespace, &Default::default()).await;
    env.teardown().await;
}
