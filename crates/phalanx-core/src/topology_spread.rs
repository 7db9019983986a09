//! Topology spread constraints, as a pod states them.

use super::label_selector::LabelSelector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WhenUnsatisfiable {
    /// A filter: nodes that would break `maxSkew` are rejected.
    DoNotSchedule,
    /// A score: nodes that break it least are preferred.
    ScheduleAnyway,
}

/// Whether a node the pod could not go to (by node affinity, or by an
/// untolerated taint) still counts as a domain when measuring skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InclusionPolicy {
    /// Count only nodes that pass the pod's node affinity (or tolerated taints).
    Honor,
    /// Count every node.
    Ignore,
}

/// One `topologySpreadConstraints` entry, with `matchLabelKeys` folded into the selector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpreadConstraint {
    /// At least 1 (checked when translated).
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// `None`: no `labelSelector`, which selects no pod.
    pub selector: Option<LabelSelector>,
    /// With fewer eligible domains than this, the global minimum is taken as 0.
    pub min_domains: i32,
    pub node_affinity_policy: InclusionPolicy,
    pub node_taints_policy: InclusionPolicy,
}
