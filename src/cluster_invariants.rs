//! What must hold of the cluster's GPU nodes and gangs whatever happened to
//! the scheduler, judged from API objects alone. The end-to-end suite
//! checks these after each fault; the chaos soak (`crates/phalanx-soak`)
//! checks them all the time. Pure: the callers list or watch the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use phalanx_kube::translate::{GPUS_ANNOTATION, POD_GROUP_LABEL};
use thiserror::Error;

pub const GPU: &str = "nvidia.com/gpu";

/// A GPU held by more than one pod, or more GPUs held than a node has.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GpuViolation {
    #[error("node {node}: {used} GPUs requested by its pods, {allocatable} allocatable")]
    OverCommitted { node: String, used: i64, allocatable: i64 },
    #[error("pod {pod}: bad GPU index {text:?} in {GPUS_ANNOTATION}")]
    BadIndex { pod: String, text: String },
    #[error("pod {pod} on {node} holds GPU {index} of {allocatable}")]
    IndexOutOfRange { pod: String, node: String, index: u32, allocatable: i64 },
    #[error("GPU {index} of node {node} is recorded on both {first} and {second}")]
    IndexHeldTwice { node: String, index: u32, first: String, second: String },
}

impl GpuViolation {
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::OverCommitted { node, .. }
            | Self::IndexOutOfRange { node, .. }
            | Self::IndexHeldTwice { node, .. } => Some(node),
            Self::BadIndex { .. } => None,
        }
    }
}

/// The GPU limits of a pod's containers.
pub fn gpus_of(pod: &Pod) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(GPU)?.0.parse::<i64>().ok())
        .sum()
}

/// The GPU indices recorded on a pod (`phalanx.dev/gpus`); what does not
/// parse is left out (`gpu_violations` reports it).
pub fn gpu_indices(pod: &Pod) -> Vec<u32> {
    pod.annotations()
        .get(GPUS_ANNOTATION)
        .map(|text| text.split(',').filter_map(|i| i.trim().parse().ok()).collect())
        .unwrap_or_default()
}

pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Succeeded or Failed: it holds nothing any more.
pub fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Sum of the GPU limits of the pods bound to each node.
pub fn gpus_by_node<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeMap<String, i64> {
    let mut used = BTreeMap::new();
    for pod in pods {
        if let Some(node) = node_of(pod) {
            *used.entry(node.to_string()).or_default() += gpus_of(pod);
        }
    }
    used
}

/// Per node: the GPU limits of its unfinished pods within its allocatable
/// GPUs, and the recorded GPU indices of those pods disjoint and in range.
/// `allocatable`: GPUs by node name; a node missing from it (deleted under
/// its pods) has nothing to check against and is skipped.
pub fn gpu_violations<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    allocatable: &BTreeMap<String, i64>,
) -> Vec<GpuViolation> {
    let live: Vec<&Pod> = pods.into_iter().filter(|p| !finished(p)).collect();
    let mut violations = Vec::new();
    for (node, used) in gpus_by_node(live.iter().copied()) {
        let Some(&cap) = allocatable.get(&node) else { continue };
        if used > cap {
            violations.push(GpuViolation::OverCommitted { node, used, allocatable: cap });
        }
    }
    let mut taken: BTreeMap<&str, BTreeMap<u32, String>> = BTreeMap::new();
    for pod in live {
        let (Some(node), Some(text)) = (node_of(pod), pod.annotations().get(GPUS_ANNOTATION)) else { continue };
        let Some(&cap) = allocatable.get(node) else { continue };
        for index in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Ok(index) = index.parse::<u32>() else {
                violations.push(GpuViolation::BadIndex { pod: pod.name_any(), text: text.clone() });
                break;
            };
            if i64::from(index) >= cap {
                violations.push(GpuViolation::IndexOutOfRange {
                    pod: pod.name_any(),
                    node: node.to_string(),
                    index,
                    allocatable: cap,
                });
            }
            if let Some(first) = taken.entry(node).or_default().insert(index, pod.name_any()) {
                violations.push(GpuViolation::IndexHeldTwice {
                    node: node.to_string(),
                    index,
                    first,
                    second: pod.name_any(),
                });
            }
        }
    }
    violations
}

/// The members of each PodGroup (by namespace and name) that are bound,
/// finished or not: a gang that ran to completion was whole.
pub fn bound_members<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeMap<(String, String), Vec<String>> {
    let mut members: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for pod in pods {
        let Some(group) = pod.labels().get(POD_GROUP_LABEL) else { continue };
        if node_of(pod).is_some() {
            let key = (pod.namespace().unwrap_or_default(), group.clone());
            members.entry(key).or_default().push(pod.name_any());
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, gpus: u32, indices: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "annotations": {GPUS_ANNOTATION: indices},
                "labels": {POD_GROUP_LABEL: "g"}},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"limits": {GPU: gpus.to_string()}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn over_commit_and_shared_indices_are_found_on_known_nodes_only() {
        let pods = [pod("a", "n0", 4, "0,1,2,3"), pod("b", "n0", 6, "3,4,5,6,7,8"), pod("c", "gone", 9, "0")];
        let allocatable = BTreeMap::from([("n0".to_string(), 8)]);
        let found = gpu_violations(&pods, &allocatable);
        assert_eq!(
            found,
            vec![
                GpuViolation::OverCommitted { node: "n0".into(), used: 10, allocatable: 8 },
                GpuViolation::IndexHeldTwice { node: "n0".into(), index: 3, first: "a".into(), second: "b".into() },
                GpuViolation::IndexOutOfRange { pod: "b".into(), node: "n0".into(), index: 8, allocatable: 8 },
            ]
        );
    }

    #[test]
    fn finished_pods_hold_no_gpus_but_still_count_as_bound_members() {
        let mut done = pod("a", "n0", 8, "0,1,2,3,4,5,6,7");
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let pods = [done, pod("b", "n0", 8, "0,1,2,3,4,5,6,7")];
        let allocatable = BTreeMap::from([("n0".to_string(), 8)]);
        assert!(gpu_violations(&pods, &allocatable).is_empty());
        assert_eq!(bound_members(&pods)[&("ns".to_string(), "g".to_string())].len(), 2);
    }
}
