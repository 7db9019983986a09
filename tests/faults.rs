//! Faults survived, end to end: the API server stopped and started again
//! mid-run (with a quota lowered meanwhile), a watch broken and listed afresh, a node deleted while its gang is
//! being bound, and binds answered with conflicts. After each, the
//! invariants of `support::invariants` hold: no GPU over-committed, no gang
//! partly bound, every pending pod queued, nothing bound moved.
//!
//! The API server faults use an API server of their own on the cluster's
//! etcd (`support::apiserver`), so stopping it cuts off only the phalanx
//! under test, never the other tests sharing the cluster. Binds are slowed
//! down (client qps) so that a fault lands in the middle of a gang's binds.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::apiserver::ExtraApiServer;
use support::invariants::{self, Bound, wait_metric};
use support::{TestEnv, eventually};

const H100: &str = "gpuProduct: NVIDIA-H100-80GB-HBM3";

async fn create_pod_group(env: &TestEnv, name: &str, min_member: u32) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": env.name}, "spec": {"minMember": min_member},
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &group).await.unwrap();
}

fn member(env: &TestEnv, name: &str, gpus: u32, group: &str) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), group.to_string())].into());
    pod
}

/// A PodGroup of `size` members `{group}-{i}` asking `gpus` GPUs each.
async fn create_gang(env: &TestEnv, group: &str, size: u32, gpus: u32) -> Vec<String> {
    create_pod_group(env, group, size).await;
    let mut names = Vec::new();
    for i in 0..size {
        let name = format!("{group}-{i}");
        env.create(&member(env, &name, gpus, group)).await;
        names.push(name);
    }
    names
}

async fn pods_now(env: &TestEnv) -> Vec<Pod> {
    env.pods().list(&ListParams::default()).await.expect("list pods").items
}

async fn wait_all_bound(env: &TestEnv, names: &[String], limit: Duration) -> Bound {
    eventually(limit, &format!("{} pods bound", names.len()), || async {
        let bound = invariants::bound(&pods_now(env).await);
        names.iter().all(|n| bound.contains_key(n)).then_some(bound)
    })
    .await
}

async fn delete_now(env: &TestEnv, name: &str) {
    env.pods().delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
}

/// A test env whose scheduler talks to an API server of its own, binding at
/// `qps` calls a second.
async fn env_behind_own_api_server(test: &str, pools: &str, qps: u32) -> (TestEnv, ExtraApiServer, Vec<String>) {
    let mut env = TestEnv::new(test).await;
    let nodes = env.add_pools(pools).await;
    let api = ExtraApiServer::start(&env.name).await;
    env.scheduler_kubeconfig = api.kubeconfig.clone();
    env.start_scheduler_with(&env.config_with_client(qps, 1)).await;
    (env, api, nodes)
}

#[tokio::test]
async fn the_api_server_stopped_mid_run_loses_and_double_binds_nothing() {
    let pools = format!("- {{name: a, count: 4, gpus: 8, {H100}}}\n");
    let (env, api, _) = env_behind_own_api_server("apiserver-restart", &pools, 4).await;
    // 6 gangs of two 2-GPU pods: 24 calls at 4 a second, so the API server
    // goes away in the middle of the binds.
    let mut names = Vec::new();
    for g in 0..6 {
        names.extend(create_gang(&env, &format!("g{g}"), 2, 2).await);
    }
    eventually(Duration::from_secs(30), "a first pod bound", || async {
        (!invariants::bound(&pods_now(&env).await).is_empty()).then_some(())
    })
    .await;
    api.stop().await;
    let before = invariants::bound(&pods_now(&env).await);
    assert!(before.len() < names.len(), "the outage must come before the last bind: {before:?}");
    // Work arriving while phalanx cannot see it.
    for g in 6..8 {
        names.extend(create_gang(&env, &format!("g{g}"), 2, 2).await);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    api.restart().await;
    let bound = wait_all_bound(&env, &names, Duration::from_secs(90)).await;
    assert_eq!(bound.len(), 16);
    invariants::check(&env, &before).await;
    let text = invariants::metrics(env.http_port).await.unwrap();
    let broken = text.lines().filter(|l| l.starts_with("phalanx_watch_restarts_total")).count();
    assert!(broken > 0, "the watches saw the outage:\n{text}");
    env.teardown().await;
}

/// Found by the chaos soak: a quota lowered while phalanx's API server was
/// away was still unseen when the pods' watch came back, and pods created
/// meanwhile were bound beyond it. Every watch that failed must list again
/// before anything is decided.
#[tokio::test]
async fn a_quota_lowered_while_the_api_server_is_away_binds_nothing_beyond_it() {
    let pools = format!("- {{name: a, count: 2, gpus: 8, {H100}}}\n");
    let (env, api, _) = env_behind_own_api_server("quota-outage", &pools, 50).await;
    let _: ElasticQuota = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "gpus", "namespace": env.name}, "spec": {"max": {"nvidia.com/gpu": 16}}}),
    )
    .await;
    env.create(&env.pod("first", 2)).await;
    env.wait_bound("first", Duration::from_secs(30)).await;
    let used = format!("phalanx_quota_used{{namespace=\"{}\",resource=\"nvidia.com/gpu\"}}", env.name);
    wait_metric(&env, &used, 2.0, Duration::from_secs(30)).await;

    api.stop().await;
    let lowered = json!({"spec": {"max": {"nvidia.com/gpu": 2}}});
    Api::<ElasticQuota>::namespaced(env.client.clone(), &env.name)
        .patch("gpus", &PatchParams::default(), &Patch::Merge(&lowered))
        .await
        .unwrap();
    let mut late = create_gang(&env, "late", 2, 2).await;
    env.create(&env.pod("lone", 2)).await;
    late.push("lone".to_string());
    api.restart().await;

    for name in &late {
        let waiting = env.wait_unschedulable(name, Duration::from_secs(60)).await;
        assert!(waiting.message.as_deref().unwrap_or("").contains("ElasticQuota"), "{name}: {waiting:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bound = invariants::bound(&pods_now(&env).await);
    assert_eq!(bound.keys().collect::<Vec<_>>(), ["first"], "nothing beyond the lowered max of 2 GPUs");
    env.teardown().await;
}

#[tokio::test]
async fn a_broken_watch_relists_keeping_pending_pods_and_holds() {
    let pools = format!("- {{name: a, count: 3, gpus: 8, {H100}}}\n");
    let (env, api, nodes) = env_behind_own_api_server("watch-expiry", &pools, 50).await;
    env.create(&env.pod("filler", 8)).await;
    let filled = env.wait_bound("filler", Duration::from_secs(30)).await;
    // The gang needs all three nodes: it waits, holding the two free ones.
    let big = create_gang(&env, "big", 3, 8).await;
    env.wait_unschedulable("big-0", Duration::from_secs(30)).await;
    env.create(&env.pod("small", 1)).await;
    env.create(&env.pod("doomed", 1)).await;
    let held = env.wait_unschedulable("small", Duration::from_secs(30)).await;
    env.wait_unschedulable("doomed", Duration::from_secs(30)).await;
    let before = invariants::check(&env, &Bound::new()).await;

    // While phalanx's API server is away, a pending pod goes and one comes;
    // every watch of phalanx fails, and lists afresh once it is back.
    let broken = "phalanx_watch_restarts_total{resource=\"Pod\",reason=\"error\"}";
    let text = invariants::metrics(env.http_port).await.unwrap();
    let broken_before = invariants::metric(&text, broken).unwrap_or(0.0);
    api.stop().await;
    delete_now(&env, "doomed").await;
    env.create(&env.pod("newcomer", 1)).await;
    api.restart().await;
    wait_metric(&env, broken, broken_before + 1.0, Duration::from_secs(60)).await;
    // Re-listed: the deleted pod forgotten, the new one queued, the bound one
    // left alone, the big gang still pending and queued.
    invariants::check(&env, &before).await;
    // The holds survived: the free nodes stay kept for the big gang.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = pods_now(&env).await;
    let bound = invariants::bound(&pods);
    for name in ["small", "newcomer"] {
        assert!(!bound.contains_key(name), "{name} took a node held for the big gang (was: {held:?})");
    }
    // Room for the gang: it binds whole, on the three nodes.
    delete_now(&env, "filler").await;
    let bound = wait_all_bound(&env, &big, Duration::from_secs(60)).await;
    let mut used: Vec<&String> = big.iter().map(|n| &bound[n].1).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "one member per node: {bound:?} on {nodes:?} (filler was on {filled})");
    let before = invariants::check(&env, &bound).await;
    // And the pod that arrived during the outage was queued all along.
    for name in &big {
        delete_now(&env, name).await;
    }
    let names = ["small".to_string(), "newcomer".to_string()];
    let bound = wait_all_bound(&env, &names, Duration::from_secs(60)).await;
    invariants::check(&env, &before).await;
    assert_eq!(bound.len(), 2);
    env.teardown().await;
}

#[tokio::test]
async fn a_node_deleted_mid_bind_gets_its_members_placed_elsewhere() {
    let pools = format!("- {{name: a, count: 4, gpus: 8, {H100}}}\n");
    let mut env = TestEnv::new("node-gone").await;
    let nodes = env.add_pools(&pools).await;
    // One bind call a second: 8 calls for the gang of four 8-GPU pods.
    env.start_scheduler_with(&env.config_with_client(1, 1)).await;
    let gang = create_gang(&env, "g", 4, 8).await;
    // Every node holds a member; delete one whose member is not bound yet.
    // Looked for often: the next bind is a second away.
    let bound = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let bound = invariants::bound(&pods_now(&env).await);
            if !bound.is_empty() {
                return bound;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a first member bound within 30s");
    let gone = nodes.iter().find(|n| !bound.values().any(|(_, node)| node == *n)).unwrap().clone();
    env.nodes().delete(&gone, &DeleteParams::default()).await.unwrap();
    // Room again, on a new node.
    let added = env.add_pools(&format!("- {{name: b, count: 1, gpus: 8, {H100}}}\n")).await;
    let bound = wait_all_bound(&env, &gang, Duration::from_secs(60)).await;
    for (name, (_, node)) in &bound {
        assert_ne!(node, &gone, "{name} was bound to the deleted node");
    }
    assert!(bound.values().any(|(_, node)| *node == added[0]), "the new node took the member: {bound:?}");
    invariants::check(&env, &bound).await;
    assert!(
        support::plain(&env.log()).contains("the node was deleted before the bind was sent"),
        "the member's bind was held back"
    );
    env.teardown().await;
}

#[tokio::test]
async fn bind_conflicts_leave_each_pod_counted_where_it_went() {
    let pools = format!("- {{name: a, count: 2, gpus: 8, {H100}}}\n");
    let mut env = TestEnv::new("bind-conflict").await;
    let nodes = env.add_pools(&pools).await;
    // One bind every 2 s: the whole gang is placed before its first bind, and
    // each later bind leaves time to step in.
    let config = env.config_with_client(1, 1).replace("qps: 1,", "qps: 0.5,");
    env.start_scheduler_with(&config).await;
    let gang = create_gang(&env, "g", 3, 4).await;
    let (first, first_node) = eventually(Duration::from_secs(30), "a first member bound", || async {
        invariants::bound(&pods_now(&env).await)
            .into_iter()
            .find(|(name, _)| gang.contains(name))
            .map(|(n, (_, node))| (n, node))
    })
    .await;
    let mut rest = gang.iter().filter(|n| **n != first);
    let (taken, recreated) = (rest.next().unwrap().clone(), rest.next().unwrap().clone());
    // Another client binds one member first, to the other node: phalanx's
    // bind of it gets 409 (already assigned).
    let elsewhere = nodes.iter().find(|n| **n != first_node).unwrap().clone();
    let uid = env.pods().get(&taken).await.unwrap().metadata.uid.unwrap();
    let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
        "metadata": {"name": taken, "namespace": env.name, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": elsewhere}
    }))
    .unwrap();
    env.pods()
        .create_subresource::<_, kube::core::Status>("binding", &taken, &PostParams::default(), &binding)
        .await
        .expect("bind a member first");
    // Another is deleted and created again: phalanx's bind, with the old UID, gets 409.
    delete_now(&env, &recreated).await;
    env.create(&member(&env, &recreated, 4, "g")).await;

    let bound = wait_all_bound(&env, &gang, Duration::from_secs(60)).await;
    assert_eq!(bound[&taken].1, elsewhere, "{taken} stays where the other client put it");
    // The GPUs travel with phalanx's binding, which was refused: none are
    // recorded on the member the other client bound.
    let annotations = env.pods().get(&taken).await.unwrap().metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("phalanx.dev/gpus"), "{taken}: {annotations:?}");
    wait_metric(&env, "phalanx_bind_duration_seconds_count{result=\"conflict\"}", 2.0, Duration::from_secs(10)).await;
    let before = invariants::check(&env, &bound).await;
    // 12 of 16 GPUs are taken: a 4-GPU pod fits, and then nothing more. A
    // pod counted twice would keep it out; one not counted would let both in.
    env.create(&env.pod("fits", 4)).await;
    env.wait_bound("fits", Duration::from_secs(30)).await;
    env.create(&env.pod("no-room", 1)).await;
    // Reports share this test's 0.5 QPS: the gang's own reports (a condition
    // and an Event each, 2 s per write) can still be queued ahead.
    env.wait_unschedulable("no-room", Duration::from_secs(90)).await;
    invariants::check(&env, &before).await;
    env.teardown().await;
}
