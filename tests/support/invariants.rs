//! What must hold after any fault, checked from the API server's view of one
//! env: no GPU over-committed on any node (requests against capacity, and
//! the `phalanx.dev/gpus` indices of a node's pods disjoint), no gang partly
//! bound, every pending pod in phalanx's queue, and whatever was bound still
//! bound where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use phalanx::cluster_invariants::{GPU, bound_members, finished, gpu_violations, node_of};
use phalanx_kube::api::pod_group::PodGroup;

use super::{ENV_LABEL, TestEnv, eventually, http_get};

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

/// Per node of the env: the GPU limits of its pods within its allocatable
/// GPUs, and the recorded GPU indices of its pods disjoint and in range.
async fn no_gpu_over_committed(env: &TestEnv, pods: &[Pod]) {
    let selector = format!("{ENV_LABEL}={}", env.name);
    let nodes = env.nodes().list(&ListParams::default().labels(&selector)).await.expect("list nodes").items;
    let allocatable: BTreeMap<String, i64> = nodes
        .iter()
        .map(|n| {
            let gpus = n.status.as_ref().and_then(|s| s.allocatable.as_ref()?.get(GPU)?.0.parse().ok());
            (n.name_any(), gpus.unwrap_or(0))
        })
        .collect();
    // A node deleted under its pods has no capacity to check against; the
    // test that deletes it says what it expects of them.
    let violations = gpu_violations(pods, &allocatable);
    assert!(violations.is_empty(), "{}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
}

/// Every PodGroup of the env has either none or at least minMember of its
/// live pods bound.
async fn no_gang_partly_bound(env: &TestEnv, pods: &[Pod]) {
    let groups = Api::<PodGroup>::namespaced(env.client.clone(), &env.name)
        .list(&ListParams::default())
        .await
        .expect("list PodGroups")
        .items;
    let members = bound_members(pods);
    for group in groups {
        let name = group.name_any();
        let min = group.spec.min_member.unwrap_or(1);
        let bound = members.get(&(env.name.clone(), name.clone())).cloned().unwrap_or_default();
        let n = bound.len() as i64;
        assert!(n == 0 || n >= i64::from(min), "gang {name} partly bound: {n} of {min} ({bound:?})");
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
