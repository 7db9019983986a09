//! What must hold after any fault, checked from the API server's view of one
//! env: no GPU over-committed on any node (requests against capacity, and
//! the `phalanx.dev/gpus` indices of a node's pods disjoint), no gang partly
//! bound, every pending pod in phalanx's queue, and whatever was bound still
//! bound where it was.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use phalanx_kube::api::pod_group::PodGroup;

use super::{ENV_LABEL, TestEnv, eventually, gpus_by_node, http_get};

const GPU: &str = "nvidia.com/gpu";
const GPUS_ANNOTATION: &str = "phalanx.dev/gpus";
const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// Where each bound pod of an env is: name -> (UID, node).
pub type Bound = BTreeMap<String, (String, String)>;

/// Checks every invariant for `env` (panicking with what broke) and returns
/// where its pods are bound now, to pass as `before` to the next check.
/// `before`: an earlier answer; a pod still there under the same UID must
/// be on the same node. The queue check needs the env's scheduler running.
pub async fn check(env: &TestEnv, before: &Bound) -> Bound {
    let pods = env.pods().list(&ListParams::default()).await.expect("list pods").items;
    let pods: Vec<Pod> = pods.into_iter().filter(|p| !finished(p)).collect();
    no_gpu_over_committed(env, &pods).await;
    no_gang_partly_bound(env, &pods).await;
    let bound = bound(&pods);
    for (name, (uid, node)) in before {
        if let Some((now_uid, now_node)) = bound.get(name) {
            assert!(uid != now_uid || node == now_node, "pod {name} moved from {node} to {now_node}");
        } else {
            let still_there = pods.iter().any(|p| p.name_any() == *name && p.uid().as_deref() == Some(uid));
            assert!(!still_there, "pod {name} was bound to {node} and is no longer bound");
        }
    }
    every_pending_pod_queued(env).await;
    bound
}

pub fn bound(pods: &[Pod]) -> Bound {
    pods.iter().filter_map(|p| Some((p.name_any(), (p.uid()?, p.spec.as_ref()?.node_name.clone()?)))).collect()
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Per node of the env: the GPU limits of its pods within its allocatable
/// GPUs, and the recorded GPU indices of its pods disjoint and in range.
async fn no_gpu_over_committed(env: &TestEnv, pods: &[Pod]) {
    let selector = format!("{ENV_LABEL}={}", env.name);
    let nodes = env.nodes().list(&ListParams::default().labels(&selector)).await.expect("list nodes").items;
    let capacity: BTreeMap<String, i64> = nodes
        .iter()
        .map(|n| {
            let gpus = n.status.as_ref().and_then(|s| s.allocatable.as_ref()?.get(GPU)?.0.parse().ok());
            (n.name_any(), gpus.unwrap_or(0))
        })
        .collect();
    for (node, used) in gpus_by_node(pods) {
        // A node deleted under its pods has no capacity to check against;
        // the test that deletes it says what it expects of them.
        let Some(cap) = capacity.get(&node) else { continue };
        assert!(used <= *cap, "node {node}: {used} GPUs requested by its pods, {cap} allocatable");
    }
    let mut taken: BTreeMap<&str, BTreeMap<u32, String>> = BTreeMap::new();
    for pod in pods {
        let (Some(node), Some(text)) = (node_of(pod), pod.annotations().get(GPUS_ANNOTATION)) else { continue };
        let cap = capacity.get(node).copied().unwrap_or(i64::MAX);
        for index in text.split(',').filter(|s| !s.is_empty()) {
            let index: u32 =
                index.parse().unwrap_or_else(|_| panic!("pod {}: bad GPU index {index:?}", pod.name_any()));
            assert!(i64::from(index) < cap, "pod {} on {node} holds GPU {index} of {cap}", pod.name_any());
            if let Some(other) = taken.entry(node).or_default().insert(index, pod.name_any()) {
                panic!("GPU {index} of node {node} is recorded on both {other} and {}", pod.name_any());
            }
        }
    }
}

/// Every PodGroup of the env has either none or at least minMember of its
/// live pods bound.
async fn no_gang_partly_bound(env: &TestEnv, pods: &[Pod]) {
    let groups = Api::<PodGroup>::namespaced(env.client.clone(), &env.name)
        .list(&ListParams::default())
        .await
        .expect("list PodGroups")
        .items;
    for group in groups {
        let name = group.name_any();
        let min = group.spec.min_member.unwrap_or(1);
        let members: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.labels().get(POD_GROUP_LABEL) == Some(&name) && node_of(p).is_some())
            .map(|p| p.name_any())
            .collect();
        let n = members.len() as i64;
        assert!(n == 0 || n >= i64::from(min), "gang {name} partly bound: {n} of {min} ({members:?})");
    }
}

/// The pods waiting for the env's scheduler (unbound, not being deleted,
/// not gated) are exactly as many as its queue holds plus its binds in
/// flight. Both sides move, so they are compared until they agree.
async fn every_pending_pod_queued(env: &TestEnv) {
    let (api, port, scheduler) = (env.pods(), env.http_port, env.scheduler_name.clone());
    let last = std::sync::Mutex::new(String::new());
    let agreed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let pending = pending_pods(&api, &scheduler).await;
            let queued = queued(port).await;
            if queued == Some(pending.len() as f64) {
                return;
            }
            *last.lock().unwrap() = format!("{} pending ({pending:?}), phalanx queues {queued:?}", pending.len());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(agreed.is_ok(), "pending pods and phalanx's queue disagree: {}", last.lock().unwrap());
}

async fn pending_pods(api: &Api<Pod>, scheduler: &str) -> Vec<String> {
    let pods = api.list(&ListParams::default()).await.expect("list pods").items;
    pods.iter()
        .filter(|p| {
            let spec = p.spec.as_ref();
            spec.and_then(|s| s.scheduler_name.as_deref()) == Some(scheduler)
                && node_of(p).is_none()
                && p.metadata.deletion_timestamp.is_none()
                && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(|g| g.is_empty())
                && !finished(p)
        })
        .map(|p| p.name_any())
        .collect()
}

/// Pods in phalanx's queue plus its binds in flight, from `/metrics`.
async fn queued(port: u16) -> Option<f64> {
    let text = metrics(port).await?;
    Some(metric(&text, "phalanx_queued_pods")? + metric(&text, "phalanx_pending_pods{queue=\"binding\"}")?)
}

/// The scheduler's `/metrics` text.
pub async fn metrics(port: u16) -> Option<String> {
    http_get(port, "/metrics").await.filter(|(code, _)| *code == 200).map(|(_, body)| body)
}

/// The value of one series (`name{labels}` exactly as exposed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the series reaches at least `min` and returns its value.
pub async fn wait_metric(env: &TestEnv, series: &str, min: f64, limit: Duration) -> f64 {
    let port = env.http_port;
    eventually(limit, &format!("{series} >= {min}"), || async move {
        metric(&metrics(port).await?, series).filter(|v| *v >= min)
    })
    .await
}
