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

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] =
        [Self::Service, Self::ReplicaSet, Self::StatefulSet, Self::ReplicationController];
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

#[derive(Debug, Default, Clone)]
pub struct WorkloadSelectors {
    selectors: HashMap<WorkloadKey, LabelSelector>,
}

impl WorkloadSelectors {
    pub fn apply(&mut self, object: WorkloadSelector) {
        self.selectors.insert(object.key, object.selector);
    }

    pub fn delete(&mut self, key: &WorkloadKey) {
        self.selectors.remove(key);
    }

    pub fn keys(&self, kind: WorkloadKind) -> Vec<WorkloadKey> {
        self.selectors.keys().filter(|k| k.kind == kind).cloned().collect()
    }

    /// Every requirement of the Services in the pod's namespace that select
    /// it, and of its controller; `None` when that is none.
    pub fn default_selector(&self, pod: &PodInfo) -> Option<LabelSelector> {
        let namespace = &pod.key.namespace;
        let services = self.selectors.iter().filter(|(key, selector)| {
            key.kind == WorkloadKind::Service
                && key.namespace == *namespace
                && !selector.requirements.is_empty()
                && selector.matches(&pod.labels)
        });
        let controller = pod.controller.as_ref().and_then(|c| {
            let key = WorkloadKey { kind: c.kind, namespace: namespace.clone(), name: c.name.clone() };
            self.selectors.get(&key)
        });
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

    /// The constraints a pod without its own gets, selecting its workload.
    pub fn for_pod(&self, pod: &PodInfo, workloads: &WorkloadSelectors) -> Vec<SpreadConstraint> {
        let Some(selector) = workloads.default_selector(pod) else { return Vec::new() };
        self.constraints()
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
