//! What the scheduler knows about one pod: its requests and placement rules.

use std::collections::BTreeMap;

use super::dra::claim::PodClaim;
use super::gang::GangId;
use super::host_port::HostPort;
use super::node::TaintEffect;
use super::pod_affinity::PodAffinity;
use super::resources::{GPU, Resources};
use super::spread_defaults::PodController;
use super::topology_spread::SpreadConstraint;

/// What a new placement says about itself.
#[derive(Debug, Clone)]
pub struct PodPlacement<'a> {
    pub uid: &'a str,
    pub key: &'a PodKey,
    pub node: &'a str,
    pub requests: &'a Resources,
    pub job: Option<&'a GangId>,
    pub priority: i32,
    pub created: i64,
    pub labels: &'a BTreeMap<String, String>,
    pub host_ports: &'a [HostPort],
    pub affinity: &'a PodAffinity,
    pub volume_claims: &'a [String],
}

/// Namespace and name: how users and logs refer to a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    /// Succeeded or failed: the pod holds nothing any more.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SelectorOperator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One requirement on a node label (`matchExpressions`) or on the node's name
/// (`matchFields` with `metadata.name`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
}

impl SelectorRequirement {
    /// Whether a label (or name) with this value satisfies the requirement.
    pub fn holds(&self, value: Option<&str>) -> bool {
        match (&self.operator, value) {
            (SelectorOperator::In(values), Some(v)) => values.iter().any(|x| x == v),
            (SelectorOperator::In(_), None) => false,
            (SelectorOperator::NotIn(values), Some(v)) => !values.iter().any(|x| x == v),
            (SelectorOperator::NotIn(_), None) => true,
            (SelectorOperator::Exists, v) => v.is_some(),
            (SelectorOperator::DoesNotExist, v) => v.is_none(),
            (SelectorOperator::Gt(bound), Some(v)) => v.parse::<i64>().is_ok_and(|n| n > *bound),
            (SelectorOperator::Lt(bound), Some(v)) => v.parse::<i64>().is_ok_and(|n| n < *bound),
            (SelectorOperator::Gt(_) | SelectorOperator::Lt(_), None) => false,
        }
    }
}

/// A node selector term: all its requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeSelectorTerm {
    pub match_labels: Vec<SelectorRequirement>,
    pub match_node_name: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreferredTerm {
    pub weight: i32,
    pub term: NodeSelectorTerm,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TolerationOperator {
    Equal(String),
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Toleration {
    /// `None` with `Exists` tolerates every taint.
    pub key: Option<String>,
    pub operator: TolerationOperator,
    /// `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

/// The parts of a Pod object that scheduling decisions read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodInfo {
    pub uid: String,
    pub key: PodKey,
    /// The version this information was read at (for conditional writes).
    pub resource_version: Option<String>,
    pub scheduler_name: String,
    /// `spec.nodeName`: set once the pod is bound (or was created bound).
    pub node_name: Option<String>,
    pub phase: PodPhase,
    /// Being deleted: a pending one is not scheduled, a bound one still holds
    /// its resources until it is gone.
    pub terminating: bool,
    /// Effective requests, as kube-scheduler computes them, plus one `pods`.
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: at least one term must match. Empty means none.
    pub required_terms: Vec<NodeSelectorTerm>,
    pub preferred_terms: Vec<PreferredTerm>,
    pub tolerations: Vec<Toleration>,
    pub priority: i32,
    /// `preemptionPolicy: Never`: the pod waits but never evicts others.
    pub preempt_never: bool,
    /// The pod's labels (disruption budgets select by them).
    pub labels: BTreeMap<String, String>,
    /// Creation time in seconds since the epoch; orders pods of equal priority.
    pub created: i64,
    /// The gang (pod group, training job) the pod belongs to; `None`: a gang of one.
    pub job: Option<GangId>,
    /// GPU indices recorded on the pod (`phalanx.dev/gpus`), once chosen.
    pub gpu_indices: Option<Vec<u32>>,
    /// `spec.resourceClaims`, resolved to claim names where known.
    #[serde(default)]
    pub claims: Vec<PodClaim>,
    /// `hostPort`s of its containers.
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
    #[serde(default)]
    pub affinity: PodAffinity,
    #[serde(default)]
    pub spread: Vec<SpreadConstraint>,
    /// Its ReplicaSet, StatefulSet or ReplicationController: with its
    /// Services, where its default spread constraints select.
    #[serde(default)]
    pub controller: Option<PodController>,
    /// The message of its `PodScheduled=False` condition: the reason users
    /// see now (a new leader need not write it again).
    #[serde(default)]
    pub shown_reason: Option<String>,
    /// PersistentVolumeClaims its volumes use (in its namespace), generic
    /// ephemeral volumes' included.
    #[serde(default)]
    pub volume_claims: Vec<String>,
}

impl PodInfo {
    /// Number of `nvidia.com/gpu` requested.
    pub fn gpu_count(&self) -> usize {
        self.requests.get(GPU).max(0) as usize
    }

    /// How the snapshot records this pod on `node`.
    pub fn placement<'a>(&'a self, node: &'a str) -> PodPlacement<'a> {
        PodPlacement {
            uid: &self.uid,
            key: &self.key,
            node,
            requests: &self.requests,
            job: self.job.as_ref(),
            priority: self.priority,
            created: self.created,
            labels: &self.labels,
            host_ports: &self.host_ports,
            affinity: &self.affinity,
            volume_claims: &self.volume_claims,
        }
    }

    /// Whether filters and node-local scores see the two pods alike: the
    /// same requests and placement rules (a gang's members usually are).
    pub fn same_constraints(&self, other: &PodInfo) -> bool {
        self.requests == other.requests
            && self.node_selector == other.node_selector
            && self.required_terms == other.required_terms
            && self.preferred_terms == other.preferred_terms
            && self.tolerations == other.tolerations
            && self.host_ports == other.host_ports
    }

    /// Whether the scheduling-relevant parts differ (and a new attempt might succeed).
    pub fn scheduling_spec_differs(&self, other: &PodInfo) -> bool {
        self.requests != other.requests
            || self.node_selector != other.node_selector
            || self.required_terms != other.required_terms
            || self.tolerations != other.tolerations
            || self.host_ports != other.host_ports
            || self.affinity != other.affinity
            || self.spread != other.spread
            || self.priority != other.priority
            || self.claims != other.claims
    }
}
