//! Priority, quotas and gang-aware preemption end to end, against the local
//! control plane (kwok finishes the victims' graceful deletion).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::priorities::Priorities;
use support::{ENV_LABEL, TestEnv, eventually};

const SETTLE: Duration = Duration::from_secs(45);

/// Two racks of four 8-GPU nodes.
const TWO_RACKS: &str = "- {name: a, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, labels: {network.topology.nvidia.com/block: rack-a}}\n\
                         - {name: b, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, labels: {network.topology.nvidia.com/block: rack-b}}\n";

/// A gang: its PodGroup (minMember = pods) and pods of `gpus` GPUs with a priority class.
async fn gang(env: &TestEnv, namespace: &str, name: &str, pods: usize, gpus: u32, class: &str) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": namespace}, "spec": {"minMember": pods}
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), namespace).create(&PostParams::default(), &group).await.unwrap();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    for i in 0..pods {
        let mut pod = env.pod(&format!("{name}-{i}"), gpus);
        pod.metadata.namespace = Some(namespace.to_string());
        pod.metadata.labels = Some(
            [("scheduling.x-k8s.io/pod-group".to_string(), name.to_string()), ("gang".to_string(), name.to_string())]
                .into(),
        );
        pod.spec.as_mut().unwrap().priority_class_name = Some(format!("{}-{class}", env.name));
        api.create(&PostParams::default(), &pod).await.unwrap();
    }
}

/// Pods of `namespace` by gang label: (bound, total).
async fn gangs_in(env: &TestEnv, namespace: &str) -> BTreeMap<String, (usize, usize)> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for pod in api.list(&ListParams::default()).await.unwrap().items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let gang = pod.metadata.labels.as_ref().and_then(|l| l.get("gang").cloned()).unwrap_or_default();
        let entry = out.entry(gang).or_default();
        entry.1 += 1;
        if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            entry.0 += 1;
        }
    }
    out
}

async fn wait_gang_bound(env: &TestEnv, namespace: &str, name: &str, pods: usize) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    eventually(SETTLE, &format!("gang {name} bound"), || async {
        let names: Vec<String> = (0..pods).map(|i| format!("{name}-{i}")).collect();
        let nodes: Vec<String> = futures::future::join_all(names.iter().map(|n| api.get(n)))
            .await
            .into_iter()
            .filter_map(|p| p.ok()?.spec?.node_name)
            .collect();
        (nodes.len() == pods).then_some(nodes)
    })
    .await
}

/// Fills the two racks: rack a with gangs of priority 10 and 20, rack b
/// with one of priority 5 on three nodes and one of 50.
async fn full_fleet(env: &TestEnv) {
    for (name, pods, class) in [("a-low", 2, "p10"), ("a-mid", 2, "p20"), ("b-low", 3, "p5"), ("b-high", 1, "p50")] {
        gang(env, &env.name, name, pods, 8, class).await;
        wait_gang_bound(env, &env.name, name, pods).await;
    }
}

/// Waits until the pod's `PodScheduled=False` message contains `text`; returns it.
async fn wait_condition(env: &TestEnv, namespace: &str, pod: &str, text: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    let mut last = String::new();
    let found = tokio::time::timeout(SETTLE, async {
        loop {
            let conditions = pods.get(pod).await.ok().and_then(|p| p.status?.conditions).unwrap_or_default();
            let message = conditions.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False");
            last = message.and_then(|c| c.message).unwrap_or_default();
            if last.contains(text) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{pod}: no condition containing {text:?}; last: {last:?}"))
}

fn reasons(events: &[k8s_openapi::api::events::v1::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}: {}", e.reason.clone().unwrap_or_default(), e.note.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_high_priority_gang_evicts_the_lowest_priority_gangs_of_one_rack_and_binds() {
    let mut env = TestEnv::new("preempt").await;
    env.add_pools(TWO_RACKS).await;
    let classes = Priorities::create(
        &env,
        &[("p5", 5, false), ("p10", 10, false), ("p20", 20, false), ("p50", 50, false), ("p100", 100, false)],
    )
    .await;
    env.start_scheduler().await;
    full_fleet(&env).await;
    // Every nominatedNodeName the API server shows for a pod (the binding clears it).
    let nominations: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let seen = nominations.clone();
    let stream = watcher(env.pods(), watcher::Config::default()).default_backoff().applied_objects();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(pod)) = stream.try_next().await {
            if let Some(node) = pod.status.and_then(|s| s.nominated_node_name) {
                seen.lock().unwrap().insert(pod.metadata.name.unwrap_or_default(), node);
            }
        }
    });
    gang(&env, &env.name, "urgent", 4, 8, "p100").await;
    let nodes = wait_gang_bound(&env, &env.name, "urgent", 4).await;
    let racks: BTreeSet<bool> = nodes.iter().map(|n| n.contains("-a-")).collect();
    assert_eq!(racks, BTreeSet::from([true]), "the gang went to rack a: {nodes:?}");
    let left = gangs_in(&env, &env.name).await;
    assert!(!left.contains_key("a-low") && !left.contains_key("a-mid"), "rack a's gangs were evicted: {left:?}");
    assert_eq!(left.get("b-low"), Some(&(3, 3)), "rack b untouched: {left:?}");
    assert_eq!(left.get("b-high"), Some(&(1, 1)));
    // The freed nodes were nominated for the gang before it bound there.
    let nominated = nominations.lock().unwrap().clone();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(nominated.get(&format!("urgent-{i}")), Some(node), "nominations seen: {nominated:?}");
    }
    watch.abort();
    let victim_events = reasons(&env.events_for("a-low-0").await);
    assert!(victim_events.iter().any(|e| e.starts_with("Preempted") && e.contains("urgent")), "{victim_events:?}");
    classes.remove().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_never_gang_on_a_full_fleet_waits_and_evicts_nothing() {
    let mut env = TestEnv::new("never").await;
    env.add_pools(TWO_RACKS).await;
    let classes = Priorities::create(
        &env,
        &[("p5", 5, false), ("p10", 10, false), ("p20", 20, false), ("p50", 50, false), ("never", 1000, true)],
    )
    .await;
    env.start_scheduler().await;
    full_fleet(&env).await;
    gang(&env, &env.name, "polite", 1, 8, "never").await;
    wait_condition(&env, &env.name, "polite-0", "preemptionPolicy is Never").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = gangs_in(&env, &env.name).await;
    for (gang, pods) in [("a-low", 2), ("a-mid", 2), ("b-low", 3), ("b-high", 1)] {
        assert_eq!(left.get(gang), Some(&(pods, pods)), "{gang} was touched: {left:?}");
    }
    classes.remove().await;
    env.teardown().await;
}

#[tokio::test]
async fn two_gangs_of_equal_priority_do_not_preempt_each_other() {
    let mut env = TestEnv::new("equal").await;
    env.add_pools("- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let classes = Priorities::create(&env, &[("p50", 50, false)]).await;
    env.start_scheduler().await;
    gang(&env, &env.name, "first", 2, 8, "p50").await;
    wait_gang_bound(&env, &env.name, "first", 2).await;
    gang(&env, &env.name, "second", 2, 8, "p50").await;
    wait_condition(&env, &env.name, "second-0", "preemption: no set of lower-priority pods").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = gangs_in(&env, &env.name).await;
    assert_eq!(left.get("first"), Some(&(2, 2)), "{left:?}");
    assert_eq!(left.get("second"), Some(&(0, 2)), "{left:?}");
    classes.remove().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_disruption_budget_with_max_unavailable_zero_protects_its_gang() {
    let mut env = TestEnv::new("pdb").await;
    env.add_pools("- {name: n, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let classes = Priorities::create(&env, &[("p10", 10, false), ("p100", 100, false)]).await;
    env.start_scheduler().await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "keep", "namespace": env.name},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"gang": "protected"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(env.client.clone(), &env.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    gang(&env, &env.name, "protected", 2, 8, "p10").await;
    wait_gang_bound(&env, &env.name, "protected", 2).await;
    gang(&env, &env.name, "urgent", 1, 8, "p100").await;
    wait_condition(&env, &env.name, "urgent-0", "preemption: no set").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gangs_in(&env, &env.name).await.get("protected"), Some(&(2, 2)));
    classes.remove().await;
    env.teardown().await;
}

/// A second namespace of the env (labelled so the harness finds it).
async fn namespace(env: &TestEnv, suffix: &str) -> String {
    let name = format!("{}-{suffix}", env.name);
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {ENV_LABEL: env.name}}})).unwrap();
    Api::<Namespace>::all(env.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(env.client.clone(), &name);
    eventually(SETTLE, "the default ServiceAccount", || async { sa.get_opt("default").await.ok().flatten() }).await;
    name
}

async fn elastic_quota(env: &TestEnv, namespace: &str, min: u32, max: u32) {
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        namespace,
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "ElasticQuota"),
            "elasticquotas",
        ),
    );
    let quota: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
        "metadata": {"name": "quota", "namespace": namespace},
        "spec": {"min": {"nvidia.com/gpu": min}, "max": {"nvidia.com/gpu": max}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &quota).await.unwrap();
}

#[tokio::test]
async fn a_namespace_at_its_quota_max_waits_while_another_namespace_binds() {
    let mut env = TestEnv::new("quota").await;
    env.add_pools("- {name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let classes = Priorities::create(&env, &[("p10", 10, false)]).await;
    let (team_a, team_b) = (namespace(&env, "a").await, namespace(&env, "b").await);
    elastic_quota(&env, &team_a, 8, 16).await;
    elastic_quota(&env, &team_b, 16, 32).await;
    env.start_scheduler().await;
    gang(&env, &team_a, "first", 2, 8, "p10").await;
    wait_gang_bound(&env, &team_a, "first", 2).await;
    // team-a is at its max of 16: its next gang waits, team-b's behind it binds.
    gang(&env, &team_a, "second", 1, 8, "p10").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    gang(&env, &team_b, "other", 2, 8, "p10").await;
    wait_gang_bound(&env, &team_b, "other", 2).await;
    let message = wait_condition(&env, &team_a, "second-0", "16 of 16 GPUs used, gang needs 8").await;
    assert!(message.contains("ElasticQuota"), "{message}");
    classes.remove().await;
    for ns in [team_a, team_b] {
        let _ = Api::<Namespace>::all(env.client.clone()).delete(&ns, &DeleteParams::default()).await;
    }
    env.teardown().await;
}

#[tokio::test]
async fn a_namespace_under_its_min_reclaims_gpus_a_borrowing_namespace_took() {
    let mut env = TestEnv::new("reclaim").await;
    env.add_pools("- {name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let classes = Priorities::create(&env, &[("p10", 10, false), ("p1000", 1000, false)]).await;
    let (team_a, team_b) = (namespace(&env, "a").await, namespace(&env, "b").await);
    elastic_quota(&env, &team_a, 16, 32).await;
    elastic_quota(&env, &team_b, 16, 32).await;
    env.start_scheduler().await;
    // team-b borrows team-a's unused min: 32 GPUs, and at a higher priority.
    gang(&env, &team_b, "borrower", 2, 8, "p1000").await;
    gang(&env, &team_b, "borrower2", 2, 8, "p1000").await;
    wait_gang_bound(&env, &team_b, "borrower", 2).await;
    wait_gang_bound(&env, &team_b, "borrower2", 2).await;
    // team-a asks for its min back.
    gang(&env, &team_a, "owner", 2, 8, "p10").await;
    wait_gang_bound(&env, &team_a, "owner", 2).await;
    let left = gangs_in(&env, &team_b).await;
    let whole: Vec<&(usize, usize)> = left.values().collect();
    assert_eq!(left.len(), 1, "one borrowing gang gave its GPUs back: {left:?}");
    assert!(whole.iter().all(|(bound, total)| bound == total), "no gang left partly evicted: {left:?}");
    classes.remove().await;
    for ns in [team_a, team_b] {
        let _ = Api::<Namespace>::all(env.client.clone()).delete(&ns, &DeleteParams::default()).await;
    }
    env.teardown().await;
}

#[tokio::test]
async fn a_resource_quota_hard_limit_holds_for_the_whole_gang() {
    let mut env = TestEnv::new("rquota").await;
    env.add_pools("- {name: n, count: 4, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let classes = Priorities::create(&env, &[("p10", 10, false)]).await;
    // The pods exist before the quota is lowered (admission only checks at creation).
    gang(&env, &env.name, "team", 2, 8, "p10").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "gpus", "namespace": env.name},
        "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}
    }))
    .unwrap();
    Api::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &quota).await.unwrap();
    env.start_scheduler().await;
    let message = wait_condition(&env, &env.name, "team-0", "0 of 8 GPUs used, gang needs 16").await;
    assert!(message.contains(&format!("ResourceQuota {}/gpus", env.name)), "{message}");
    assert_eq!(gangs_in(&env, &env.name).await.get("team"), Some(&(0, 2)), "no member bound");
    classes.remove().await;
    env.teardown().await;
}
