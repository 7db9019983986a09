//! The spread constraints kube-scheduler's PodTopologySpread gives a pod
//! that states none: the cluster's defaults (kube-scheduler's own, or a
//! list from the profile), selecting the pods of the same workload: those
//! the pod's Services, and its ReplicaSet, StatefulSet or
//! ReplicationController, select. A pod of no such workload gets none.

use std::collections::HashMap;

use crate::label_selector::LabelSelector;
use crate::pod::{PodInfo, SelectorRequirement};
use crate::topology_spread::{InclusionPolicy, SpreadConstraint, WhenUnsatisfiable};

/// The objects whose selectors make up a pod's default selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WorkloadKind {
    Service,
    ReplicaSet,
    StatefulSet,
    ReplicationController,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// A workload object's selector (a Service's or ReplicationController's
/// label map as equality requirements).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSelector {
    pub key: WorkloadKey,
    pub selector: LabelSelector,
}

/// The pod's controller, when it is one of the workload kinds that own pods.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodController {
    pub kind: WorkloadKind,
    pub name: String,
}

/// Selectors by namespace: a pod's default selector reads its own
/// namespace's only, for every member of every gang.
#[derive(Debug, Default, Clone)]
pub struct WorkloadSelectors {
    by_namespace: HashMap<String, HashMap<(WorkloadKind, String), LabelSelector>>,
}

impl WorkloadSelectors {
    pub fn apply(&mut self, object: WorkloadSelector) {
        let WorkloadKey { kind, namespace, name } = object.key;
        self.by_namespace.entry(namespace).or_default().insert((kind, name), object.selector);
    }

    pub fn delete(&mut self, key: &WorkloadKey) {
        if let Some(selectors) = self.by_namespace.get_mut(&key.namespace) {
            selectors.remove(&(key.kind, key.name.clone()));
            if selectors.is_empty() {
                self.by_namespace.remove(&key.namespace);
            }
        }
    }

    pub fn keys(&self, kind: WorkloadKind) -> Vec<WorkloadKey> {
        let keys = self.by_namespace.iter().flat_map(|(namespace, selectors)| {
            selectors.keys().filter(move |(k, _)| *k == kind).map(move |(_, name)| WorkloadKey {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
            })
        });
        keys.collect()
    }

    /// Every requirement of the Services in the pod's namespace that select
    /// it, and of its controller; `None` when that is none.
    pub fn default_selector(&self, pod: &PodInfo) -> Option<LabelSelector> {
        let selectors = self.by_namespace.get(&pod.key.namespace)?;
        let services = selectors.iter().filter(|((kind, _), selector)| {
            *kind == WorkloadKind::Service && !selector.requirements.is_empty() && selector.matches(&pod.labels)
        });
        let controller = pod.controller.as_ref().and_then(|c| selectors.get(&(c.kind, c.name.clone())));
        let mut requirements: Vec<SelectorRequirement> = Vec::new();
        // Services and the controller select the same pods, so they mostly repeat each other.
        for requirement in services.map(|(_, s)| s).chain(controller).flat_map(|s| &s.requirements) {
            if !requirements.contains(requirement) {
                requirements.push(requirement.clone());
            }
        }
        (!requirements.is_empty()).then_some(LabelSelector { requirements })
    }
}

/// One default constraint: a spread constraint without its selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
}

/// Where a pod without constraints gets them (kube-scheduler's
/// `defaultingType`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpreadDefaulting {
    /// kube-scheduler's built-in defaults: at most 3 more per node and 5
    /// more per zone, both preferences.
    #[default]
    System,
    /// The profile's `defaultConstraints` (none if empty).
    List(Vec<DefaultConstraint>),
}

impl SpreadDefaulting {
    fn constraints(&self) -> Vec<DefaultConstraint> {
        match self {
            Self::System => vec![
                DefaultConstraint {
                    max_skew: 3,
                    topology_key: "kubernetes.io/hostname".into(),
                    when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
                },
                DefaultConstraint {
                    max_skew: 5,
                    topology_key: "topology.kubernetes.io/zone".into(),
                    when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
                },
            ],
            Self::List(constraints) => constraints.clone(),
        }
    }

    /// The constraints of one kind a pod without its own gets, selecting
    /// its workload (looked up only when there are such constraints).
    pub fn for_pod(
        &self,
        pod: &PodInfo,
        workloads: &WorkloadSelectors,
        when: WhenUnsatisfiable,
    ) -> Vec<SpreadConstraint> {
        let mut defaults = self.constraints();
        defaults.retain(|c| c.when_unsatisfiable == when);
        if defaults.is_empty() {
            return Vec::new();
        }
        let Some(selector) = workloads.default_selector(pod) else { return Vec::new() };
        defaults
            .into_iter()
            .map(|c| SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key,
                when_unsatisfiable: c.when_unsatisfiable,
                selector: Some(selector.clone()),
                min_domains: 1,
                node_affinity_policy: InclusionPolicy::Honor,
                node_taints_policy: InclusionPolicy::Ignore,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gpu_pod, labelled};

    fn key(kind: WorkloadKind, namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey { kind, namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn a_pod_s_default_selector_reads_its_own_namespace_and_a_deleted_selector_is_gone() {
        let mut workloads = WorkloadSelectors::default();
        let app_web = LabelSelector::equal_to([("app", "web")]);
        for namespace in ["default", "other"] {
            let key = key(WorkloadKind::Service, namespace, "web");
            workloads.apply(WorkloadSelector { key, selector: app_web.clone() });
        }
        let tier = LabelSelector::equal_to([("tier", "front")]);
        workloads.apply(WorkloadSelector { key: key(WorkloadKind::ReplicaSet, "default", "web-1"), selector: tier });
        let mut keys = workloads.keys(WorkloadKind::Service);
        keys.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        assert_eq!(keys, [key(WorkloadKind::Service, "default", "web"), key(WorkloadKind::Service, "other", "web")]);

        let pod = PodInfo {
            controller: Some(PodController { kind: WorkloadKind::ReplicaSet, name: "web-1".into() }),
            ..labelled(gpu_pod("p", 0), &[("app", "web"), ("tier", "front")])
        };
        let both = LabelSelector::equal_to([("app", "web"), ("tier", "front")]);
        assert_eq!(workloads.default_selector(&pod), Some(both), "the Service's and the ReplicaSet's");
        workloads.delete(&key(WorkloadKind::Service, "default", "web"));
        assert_eq!(workloads.default_selector(&pod), Some(LabelSelector::equal_to([("tier", "front")])));
        workloads.delete(&key(WorkloadKind::ReplicaSet, "default", "web-1"));
        assert_eq!(workloads.default_selector(&pod), None, "the other namespace's Service does not count");
    }
}
