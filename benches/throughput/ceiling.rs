//! The bind ceiling: a client that does nothing but bind. It watches the
//! benchmark's pending pods, puts each on the next node with room (first
//! fit, no scoring), and POSTs `pods/{name}/binding` with the pod's UID,
//! through the same token bucket phalanx uses, with every bind in flight at
//! once as phalanx's binder does.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::core::Status;
use kube::runtime::watcher;
use phalanx::shell::rate_limit::RateLimiter;

pub const SCHEDULER_NAME: &str = "bench-ceiling";

/// Binds every pending pod of `pods` named for the ceiling, until cancelled.
pub async fn run(pods: Api<Pod>, nodes: Vec<String>, gpus_per_node: u32, qps: f64, burst: u32) {
    let limiter = Arc::new(RateLimiter::new(qps, burst));
    let mut free: Vec<u32> = vec![gpus_per_node; nodes.len()];
    let mut next_node = 0;
    let mut seen = HashSet::new();
    let config = watcher::Config::default().fields(&format!("spec.schedulerName={SCHEDULER_NAME},spec.nodeName="));
    let mut events = watcher(pods.clone(), config).boxed();
    while let Some(event) = events.next().await {
        let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event else { continue };
        let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone()) else { continue };
        if !seen.insert(uid.clone()) {
            continue;
        }
        let gpus = gpus_of(&pod);
        let Some(offset) = (0..nodes.len()).find(|i| free[(next_node + i) % nodes.len()] >= gpus) else {
            eprintln!("ceiling: no node has {gpus} GPUs free for {name}");
            continue;
        };
        let node = (next_node + offset) % nodes.len();
        free[node] -= gpus;
        next_node = node;
        let binding = Binding {
            metadata: ObjectMeta { name: Some(name.clone()), uid: Some(uid), ..Default::default() },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(nodes[node].clone()),
                ..Default::default()
            },
        };
        let (pods, limiter) = (pods.clone(), limiter.clone());
        tokio::spawn(async move {
            limiter.acquire().await;
            if let Err(e) =
                pods.create_subresource::<_, Status>("binding", &name, &PostParams::default(), &binding).await
            {
                eprintln!("ceiling: binding {name}: {e}");
            }
        });
    }
}

fn gpus_of(pod: &Pod) -> u32 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("nvidia.com/gpu")?.0.parse::<u32>().ok())
        .sum()
}
