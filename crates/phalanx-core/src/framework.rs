//! The plugin framework: extension points as traits, and a profile that
//! strings enabled plugins together (as kube-scheduler's framework does).

use super::node::{NodeInfo, NodeSpec};
use super::pod::PodInfo;
use super::snapshot::ClusterSnapshot;

/// Why a node cannot take a pod, in the words `kubectl describe` shows
/// ("Insufficient nvidia.com/gpu", "node(s) were unschedulable").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub Vec<String>);

impl Rejection {
    pub fn because(reason: impl Into<String>) -> Self {
        Self(vec![reason.into()])
    }
}

/// Decides whether one node can take the pod at all. The verdict may read
/// only the node and the pod's placement constraints (`PodInfo::same_constraints`):
/// a gang's members reuse it while the node is unchanged.
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeSpec, usage: &NodeInfo) -> Result<(), Rejection>;
    /// Whether the verdict depends on what other pods hold (free resources,
    /// free GPUs) rather than on the node alone. Such filters are skipped when
    /// judging whether a node could ever take the pod.
    fn reads_usage(&self) -> bool {
        false
    }
}

/// A filter whose verdict on a node depends on pods on other nodes
/// (inter-pod affinity, topology spread). It looks at the snapshot once per
/// decision, as kube-scheduler's PreFilter does, and judges each node with
/// what it found. Gang members placed earlier in the same pass are in the
/// snapshot already (assumed), so they count like any other pod.
pub trait ClusterFilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// `None`: nothing to check for this pod in this snapshot.
    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>>;
    /// Whether the verdict depends on pods (which preemption may evict)
    /// rather than on other objects alone (volumes). Only the latter say
    /// that a node could never take the pod.
    fn reads_pods(&self) -> bool {
        true
    }
}

/// A cluster filter's judgement for one pod, ready to be asked about each node.
pub trait PreparedFilter {
    fn filter(&self, node: &NodeSpec) -> Result<(), Rejection>;
}

/// The members of a pod's job still waiting for a node (the pod included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDemand {
    pub pending_pods: usize,
    /// The largest GPU request among them.
    pub gpus_per_pod: usize,
}

/// What a score plugin may read besides the node: the pod, the whole
/// snapshot, and its job's demand.
pub struct ScoreContext<'a> {
    pub pod: &'a PodInfo,
    pub snapshot: &'a ClusterSnapshot,
    pub job: Option<&'a JobDemand>,
}

/// Ranks the nodes that passed every filter. Raw scores may use any scale;
/// `normalize` maps them onto 0..=100 across the candidate nodes. Plugins
/// that compare nodes with each other override `score_all`.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, _ctx: &ScoreContext<'_>, _node: &NodeSpec, _usage: &NodeInfo) -> i64 {
        0
    }
    fn score_all(&self, ctx: &ScoreContext<'_>, nodes: &[(&NodeSpec, &NodeInfo)], out: &mut [i64]) {
        for (slot, (spec, usage)) in out.iter_mut().zip(nodes) {
            *slot = self.score(ctx, spec, usage);
        }
    }
    fn normalize(&self, _scores: &mut [i64]) {}
    /// Whether the raw score reads only the node and the pod's placement
    /// constraints (no other node, no job, nothing else in the snapshot), so
    /// that it may be kept between a gang's members while the node is unchanged.
    fn node_local(&self) -> bool {
        false
    }
}

pub struct WeightedScore {
    pub plugin: Box<dyn ScorePlugin>,
    pub weight: i64,
}

/// One `profiles[]` entry: the scheduler name pods opt in with, and its plugins.
pub struct Profile {
    pub scheduler_name: String,
    pub filters: Vec<Box<dyn FilterPlugin>>,
    /// Run after `filters`, on the nodes they let through (kube-scheduler's
    /// default order puts these two last as well).
    pub cluster_filters: Vec<Box<dyn ClusterFilterPlugin>>,
    pub scores: Vec<WeightedScore>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field("filters", &self.filters.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("cluster_filters", &self.cluster_filters.iter().map(|p| p.name()).collect::<Vec<_>>())
            .field("scores", &self.scores.iter().map(|s| (s.plugin.name(), s.weight)).collect::<Vec<_>>())
            .finish()
    }
}

/// Scales raw scores so the highest becomes 100 (`reverse`: the lowest does).
pub fn normalize_to_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = match (max, reverse) {
            (0, false) => 0,
            (0, true) => 100,
            (m, false) => *s * 100 / m,
            (m, true) => 100 - *s * 100 / m,
        };
    }
}
