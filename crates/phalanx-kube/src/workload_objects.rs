//! Services, ReplicaSets, StatefulSets and ReplicationControllers into the
//! selectors that make up a pod's default spread constraints, and a pod's
//! controller among them.

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use kube::ResourceExt;
use std::collections::BTreeMap;

use phalanx_core::label_selector::LabelSelector;
use phalanx_core::spread_defaults::{PodController, WorkloadKey, WorkloadKind, WorkloadSelector};

use crate::pod_rules::label_selector;
use crate::translate::TranslateError;

fn key(kind: WorkloadKind, object: &impl ResourceExt) -> WorkloadKey {
    WorkloadKey { kind, namespace: object.namespace().unwrap_or_default(), name: object.name_any() }
}

fn equal_to(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector::equal_to(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// A Service's `spec.selector` (none: it selects no pods by labels).
pub fn service(service: &Service) -> WorkloadSelector {
    let labels = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    WorkloadSelector { key: key(WorkloadKind::Service, service), selector: equal_to(&labels) }
}

pub fn replication_controller(controller: &ReplicationController) -> WorkloadSelector {
    let labels = controller.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    WorkloadSelector { key: key(WorkloadKind::ReplicationController, controller), selector: equal_to(&labels) }
}

pub fn replica_set(set: &ReplicaSet) -> Result<WorkloadSelector, TranslateError> {
    let key = key(WorkloadKind::ReplicaSet, set);
    let object = format!("replicaset {}/{}", key.namespace, key.name);
    Ok(WorkloadSelector { selector: label_selector(&set.spec.selector, &object, "spec.selector")?, key })
}

pub fn stateful_set(set: &StatefulSet) -> Result<WorkloadSelector, TranslateError> {
    let key = key(WorkloadKind::StatefulSet, set);
    let object = format!("statefulset {}/{}", key.namespace, key.name);
    Ok(WorkloadSelector { selector: label_selector(&set.spec.selector, &object, "spec.selector")?, key })
}

/// The pod's controlling owner, if it is a ReplicaSet, StatefulSet or
/// ReplicationController.
pub fn pod_controller(pod: &Pod) -> Option<PodController> {
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true))?;
    let kind = match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => WorkloadKind::ReplicaSet,
        ("apps/v1", "StatefulSet") => WorkloadKind::StatefulSet,
        ("v1", "ReplicationController") => WorkloadKind::ReplicationController,
        _ => return None,
    };
    Some(PodController { kind, name: owner.name.clone() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_s_controller_is_read_from_its_controlling_owner_of_a_workload_kind() {
        let pod = |owners: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "ownerReferences": owners}})).unwrap()
        };
        let owner = |api: &str, kind: &str, controller: bool| json!({"apiVersion": api, "kind": kind, "name": "web-1", "uid": "u", "controller": controller});
        let controller = pod_controller(&pod(json!([owner("apps/v1", "ReplicaSet", true)]))).unwrap();
        assert_eq!((controller.kind, controller.name.as_str()), (WorkloadKind::ReplicaSet, "web-1"));
        assert_eq!(pod_controller(&pod(json!([owner("apps/v1", "ReplicaSet", false)]))), None, "not controlling");
        assert_eq!(pod_controller(&pod(json!([owner("batch/v1", "Job", true)]))), None, "a Job sets no default");
    }

    #[test]
    fn a_replica_set_with_a_bad_selector_is_named_with_its_field() {
        let set: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]},
                     "template": {}}
        }))
        .unwrap();
        let err = replica_set(&set).unwrap_err().to_string();
        assert!(err.contains("replicaset ns/web") && err.contains("spec.selector.matchExpressions[0].values"), "{err}");
    }
}
