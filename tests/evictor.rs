//! Quotas, disruption budgets and evictions end to end, against the local
//! control plane with kwok running the fake nodes: the scheduler's watches
//! see ElasticQuotas, ResourceQuotas and PodDisruptionBudgets (and report a
//! bad ElasticQuota by field), and a gang at its namespace's max waits until
//! the max is raised; the evictor evicts through the Eviction API
//! and is refused (429) for a pod a budget with maxUnavailable 0 protects;
//! the reporter writes a victim's `Preempted` Event and a preemptor's
//! nominated node.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use phalanx::shell::evictor::{EvictOutcome, EvictResult, Evictor};
use phalanx::shell::metrics::Metrics;
use phalanx::shell::rate_limit::RateLimiter;
use phalanx::shell::reporter::{Report, Reporter};
use phalanx_core::pod::PodKey;
use phalanx_kube::api::elastic_quota::ElasticQuota;
use prometheus_client::registry::Registry;
use serde_json::json;
use support::{TestEnv, ensure_crds, eventually, http_get, plain};
use tokio::sync::mpsc;

const SETTLE: Duration = Duration::from_secs(30);
const ONE_NODE: &str = "- {name: a, count: 1, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n";

/// A pod on `node` already (no scheduler involved), which kwok runs.
fn pod_on(env: &TestEnv, name: &str, node: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": env.name, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "train", "image": "pytorch/pytorch",
                "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}}}],
        },
    })
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks for one eviction and waits for its outcome.
async fn evict(
    evictor: &Evictor,
    outcomes: &mut mpsc::UnboundedReceiver<EvictOutcome>,
    env: &TestEnv,
    name: &str,
    uid: &str,
) -> EvictResult {
    let key = PodKey { namespace: env.name.clone(), name: name.into() };
    evictor.evict(uid.into(), key, format!("PodGroup {}/big", env.name));
    let outcome = tokio::time::timeout(SETTLE, outcomes.recv()).await.expect("an eviction outcome").unwrap();
    assert_eq!(outcome.key.name, name);
    outcome.result
}

#[tokio::test]
async fn the_evictor_evicts_and_a_budget_with_max_unavailable_0_refuses() {
    let env = TestEnv::new("evictor").await;
    let nodes = env.add_pools(ONE_NODE).await;
    let free: Pod = support::create_object(&env, pod_on(&env, "free", &nodes[0], json!({"app": "free"}))).await;
    let other: Pod = support::create_object(&env, pod_on(&env, "other", &nodes[0], json!({"app": "free"}))).await;
    // The disruption controller counts a budget's pods through their
    // controller: the guarded pod has one.
    let mut template = pod_on(&env, "", &nodes[0], json!({"app": "guarded"}));
    template["metadata"] = json!({"labels": {"app": "guarded"}});
    let _: ReplicaSet = support::create_object(
        &env,
        json!({"metadata": {"name": "guarded", "namespace": env.name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "guarded"}}, "template": template}}),
    )
    .await;
    let _: PodDisruptionBudget = support::create_object(
        &env,
        json!({"metadata": {"name": "guarded", "namespace": env.name},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}}}),
    )
    .await;
    let pods = env.pods();
    let guarded = eventually(SETTLE, "the guarded pod Ready", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=guarded")).await.ok()?;
            list.items.into_iter().find(ready)
        }
    })
    .await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), &env.name);
    eventually(SETTLE, "the budget counted by the disruption controller", || {
        let budgets = budgets.clone();
        async move {
            let pdb = budgets.get("guarded").await.ok()?;
            let status = pdb.status?;
            (status.observed_generation == pdb.metadata.generation && status.current_healthy == Some(1)).then_some(())
        }
    })
    .await;

    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let metrics = Metrics::register(&mut Registry::default());
    let limiter = Arc::new(RateLimiter::new(50.0, 100));
    let evictor = Evictor::new(support::config().await, limiter, tx, metrics.clone()).expect("evictor client");
    let guarded_name = guarded.metadata.name.clone().unwrap();
    let refused = evict(&evictor, &mut outcomes, &env, &guarded_name, guarded.metadata.uid.as_deref().unwrap()).await;
    let EvictResult::Blocked(why) = refused else { panic!("expected a refusal, got {refused:?}") };
    assert!(why.contains("disruption budget"), "{why}");
    assert!(pods.get(&guarded_name).await.unwrap().metadata.deletion_timestamp.is_none(), "the guarded pod stays");

    let free_uid = free.metadata.uid.clone().unwrap();
    assert_eq!(evict(&evictor, &mut outcomes, &env, "free", &free_uid).await, EvictResult::Evicted);
    // kwok finishes the graceful deletion.
    eventually(SETTLE, "the evicted pod gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("free").await.ok().and_then(|p| p.is_none().then_some(())) }
    })
    .await;
    assert_eq!(evict(&evictor, &mut outcomes, &env, "free", &free_uid).await, EvictResult::PodGone);
    // A UID that is not the pod's (the victim was replaced under its name).
    assert_eq!(evict(&evictor, &mut outcomes, &env, "other", "not-its-uid").await, EvictResult::PodGone);
    assert!(pods.get("other").await.unwrap().metadata.deletion_timestamp.is_none(), "the other pod stays");
    assert_eq!(other.metadata.name.as_deref(), Some("other"));
    let count = |result: &str| {
        let labels = phalanx::shell::metrics::ResultLabels { result: result.into() };
        metrics.evictions.get(&labels).map_or(0, |c| c.get())
    };
    assert_eq!((count("evicted"), count("blocked"), count("gone")), (1, 1, 2));
    env.teardown().await;
}

#[tokio::test]
async fn the_reporter_writes_a_preempted_event_and_the_nominated_node() {
    let env = TestEnv::new("nominate").await;
    // A pod no scheduler serves: it stays pending.
    let waiting = env.create(&env.pod_for("preemptor", 1, "nobody")).await;
    let uid = waiting.metadata.uid.clone().unwrap();
    let key = PodKey { namespace: env.name.clone(), name: "preemptor".into() };
    let metrics = Metrics::register(&mut Registry::default());
    let reporter =
        Reporter::start(env.client.clone(), Arc::new(RateLimiter::new(50.0, 100)), "e2e".into(), metrics, None);
    let nominated = |pods: Api<Pod>| async move {
        pods.get("preemptor").await.ok()?.status?.nominated_node_name.filter(|n| !n.is_empty())
    };
    reporter.send(Report::Nominated { key: key.clone(), uid: uid.clone(), node: "gpu-7".into() });
    let node = eventually(SETTLE, "the nominated node", || nominated(env.pods())).await;
    assert_eq!(node, "gpu-7");
    reporter.send(Report::Nominated { key: key.clone(), uid: uid.clone(), node: String::new() });
    eventually(SETTLE, "the nomination cleared", || async { nominated(env.pods()).await.is_none().then_some(()) })
        .await;
    // A nomination for a pod recreated under the same name does not land.
    reporter.send(Report::Nominated { key: key.clone(), uid: "not-its-uid".into(), node: "gpu-9".into() });
    reporter.send(Report::Preempted {
        key: key.clone(),
        uid: uid.clone(),
        preemptor: format!("PodGroup {}/big", env.name),
        message: "priority 1000 over 0".into(),
    });
    let event = eventually(SETTLE, "the Preempted Event", || async {
        env.events_for("preemptor").await.into_iter().find(|e| e.reason.as_deref() == Some("Preempted"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.note.as_deref(),
        Some(format!("Preempted by PodGroup {}/big: priority 1000 over 0", env.name).as_str())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nominated(env.pods()).await, None, "the mismatched UID was refused");
    env.teardown().await;
}

fn metric_value(body: &str, name: &str, namespace: &str, resource: &str) -> Option<i64> {
    let prefix = format!("{name}{{namespace=\"{namespace}\",resource=\"{resource}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// A log line with this message and these `key=value` fields.
fn logged(log: &str, message: &str, fields: &[String]) -> bool {
    plain(log).lines().any(|l| l.contains(message) && fields.iter().all(|f| l.contains(f.as_str())))
}

#[tokio::test]
async fn the_scheduler_sees_elastic_quotas_resource_quotas_and_budgets() {
    ensure_crds(&support::client().await).await;
    let mut env = TestEnv::new("quota-watch").await;
    env.add_pools("- {name: a, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    let ns = env.name.clone();
    let _: ElasticQuota = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "gpus", "namespace": ns},
            "spec": {"min": {"nvidia.com/gpu": 4}, "max": {"nvidia.com/gpu": "8", "cpu": 4}}}),
    )
    .await;
    let _: ElasticQuota = support::create_object(
        &env,
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "broken", "namespace": ns}, "spec": {"max": {"nvidia.com/gpu": "-1"}}}),
    )
    .await;
    let _: ResourceQuota = support::create_object(
        &env,
        json!({"metadata": {"name": "gpus", "namespace": ns},
            "spec": {"hard": {"requests.nvidia.com/gpu": "16", "pods": "20", "count/jobs.batch": "5"}}}),
    )
    .await;
    let _: PodDisruptionBudget = support::create_object(
        &env,
        json!({"metadata": {"name": "train", "namespace": ns},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "train"}}}}),
    )
    .await;
    env.start_scheduler().await;

    // Usage counts against the ElasticQuota: 2 GPUs and 1 CPU, within the min.
    env.create(&env.pod("p", 2)).await;
    env.wait_bound("p", SETTLE).await;
    let port = env.http_port;
    let (used, cpu, borrowed) = eventually(SETTLE, "quota metrics", || {
        let ns = ns.clone();
        async move {
            let (_, body) = http_get(port, "/metrics").await?;
            let used = metric_value(&body, "phalanx_quota_used", &ns, "nvidia.com/gpu").filter(|u| *u == 2)?;
            let cpu = metric_value(&body, "phalanx_quota_used", &ns, "cpu")?;
            Some((used, cpu, metric_value(&body, "phalanx_quota_borrowed", &ns, "nvidia.com/gpu")?))
        }
    })
    .await;
    assert_eq!((used, cpu, borrowed), (2, 1000, 0), "cpu in millicores");

    // At its max, the namespace's next gang waits, whatever room the cluster
    // has; raising the max (and the min, as nothing is there to borrow) lets it in.
    env.create(&env.pod("big", 8)).await;
    let waiting = env.wait_unschedulable("big", SETTLE).await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains(&format!("{ns}: 2 of 8 GPUs used, gang needs 8 (ElasticQuota {ns}/gpus max)")),
        "{message}"
    );
    let quotas: Api<ElasticQuota> = Api::namespaced(env.client.clone(), &ns);
    let raise = json!({"spec": {"min": {"nvidia.com/gpu": 16}, "max": {"nvidia.com/gpu": "16"}}});
    quotas.patch("gpus", &PatchParams::default(), &Patch::Merge(&raise)).await.unwrap();
    env.wait_bound("big", SETTLE).await;

    let log = env.log();
    let at = |name: &str| vec![format!("namespace={ns}"), format!("name={name}")];
    assert!(logged(&log, "quota applied", &[vec!["kind=Elastic".to_string()], at("gpus")].concat()), "{log}");
    assert!(logged(&log, "quota applied", &[vec!["kind=Hard".to_string()], at("gpus")].concat()), "{log}");
    assert!(logged(&log, "disruption budget applied", &at("train")), "{log}");
    assert!(!logged(&log, "quota applied", &at("broken")), "a bad quota is not applied");
    let invalid = eventually(SETTLE, "the InvalidObject Event", || async {
        env.events_for("broken").await.into_iter().find(|e| e.reason.as_deref() == Some("InvalidObject"))
    })
    .await;
    let note = invalid.note.unwrap_or_default();
    assert!(note.contains("spec.max[nvidia.com/gpu]") && note.contains("negative"), "{note}");

    // Deletions reach the loop too.
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), &ns);
    quotas.delete("gpus", &DeleteParams::default()).await.unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), &ns);
    budgets.delete("train", &DeleteParams::default()).await.unwrap();
    eventually(SETTLE, "the deletions logged", || async {
        let log = env.log();
        (logged(&log, "quota deleted", &[vec!["kind=Hard".to_string()], at("gpus")].concat())
            && logged(&log, "disruption budget deleted", &at("train")))
        .then_some(())
    })
    .await;
    assert_eq!(env.scheduler().try_wait().unwrap(), None, "the scheduler is still running");
    env.teardown().await;
}
