//! Resource fit: a node must have every requested resource free (CPU, memory,
//! pods, and extended resources such as `nvidia.com/gpu`). Scoring packs
//! (`MostAllocated`, the default: a half-used GPU node is filled before an
//! empty one is broken into) or spreads (`LeastAllocated`).

use serde::Deserialize;

use crate::framework::{FilterPlugin, Rejection, ScoreContext, ScorePlugin};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;
use crate::resources::{CPU, GPU, MEMORY, PODS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ScoringStrategy {
    MostAllocated,
    LeastAllocated,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceWeight {
    pub name: String,
    pub weight: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeResourcesFitArgs {
    #[serde(rename = "type")]
    pub strategy: ScoringStrategy,
    pub resources: Vec<ResourceWeight>,
}

impl Default for NodeResourcesFitArgs {
    fn default() -> Self {
        Self {
            strategy: ScoringStrategy::MostAllocated,
            resources: vec![
                ResourceWeight { name: GPU.into(), weight: 5 },
                ResourceWeight { name: CPU.into(), weight: 1 },
                ResourceWeight { name: MEMORY.into(), weight: 1 },
            ],
        }
    }
}

pub struct NodeResourcesFit {
    args: NodeResourcesFitArgs,
}

impl NodeResourcesFit {
    pub const NAME: &'static str = "NodeResourcesFit";

    pub fn new(args: NodeResourcesFitArgs) -> Self {
        Self { args }
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn reads_usage(&self) -> bool {
        true
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, usage: &NodeInfo) -> Result<(), Rejection> {
        let reasons: Vec<String> = pod
            .requests
            .shortfalls(&node.allocatable, &usage.requested)
            .map(|name| match name {
                PODS => "Too many pods".to_string(),
                // Formatted only for extended resources: a fleet that is
                // full rejects every node in every decision.
                CPU => "Insufficient cpu".to_string(),
                MEMORY => "Insufficient memory".to_string(),
                GPU => "Insufficient nvidia.com/gpu".to_string(),
                other => format!("Insufficient {other}"),
            })
            .collect();
        if reasons.is_empty() { Ok(()) } else { Err(Rejection(reasons)) }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn node_local(&self) -> bool {
        true
    }

    /// Weighted mean, over the configured resources the node has, of the
    /// share (0..=100) that would be allocated (or left free) after placing the pod.
    fn score(&self, ctx: &ScoreContext<'_>, node: &NodeSpec, usage: &NodeInfo) -> i64 {
        let pod = ctx.pod;
        let (mut total, mut weights) = (0i64, 0i64);
        for ResourceWeight { name, weight } in &self.args.resources {
            let capacity = node.allocatable.get(name);
            if capacity <= 0 {
                continue;
            }
            // In i128: a node may report petabytes of memory, and 100 times that overflows i64.
            let capacity = i128::from(capacity);
            let used = (i128::from(usage.requested.get(name)) + i128::from(pod.requests.get(name))).min(capacity);
            let share = match self.args.strategy {
                ScoringStrategy::MostAllocated => used * 100 / capacity,
                ScoringStrategy::LeastAllocated => (capacity - used) * 100 / capacity,
            } as i64;
            total += share * weight;
            weights += weight;
        }
        if weights == 0 { 0 } else { total / weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::ClusterSnapshot;
    use crate::testing::{gpu_node, gpu_pod};

    #[test]
    fn filter_names_every_missing_resource() {
        let plugin = NodeResourcesFit::new(Default::default());
        let usage = NodeInfo {
            spec: Some(gpu_node("n", 8)),
            requested: Resources::new().with(GPU, 7).with(PODS, 109),
            ..Default::default()
        };
        assert!(plugin.filter(&gpu_pod("p", 1), &gpu_node("n", 8), &usage).is_ok());
        let full = NodeInfo { requested: Resources::new().with(GPU, 7).with(PODS, 110), ..usage };
        let err = plugin.filter(&gpu_pod("p", 2), &gpu_node("n", 8), &full).unwrap_err();
        assert_eq!(err.0, vec!["Insufficient nvidia.com/gpu", "Too many pods"]);
    }

    #[test]
    fn petabytes_of_memory_score_without_overflow() {
        let plugin = NodeResourcesFit::new(Default::default());
        let mut node = gpu_node("n", 8);
        node.allocatable.add(&Resources::new().with(MEMORY, 128 << 50));
        let usage = NodeInfo { requested: Resources::new().with(MEMORY, i64::MAX), ..Default::default() };
        let pod = gpu_pod("p", 2);
        let snapshot = ClusterSnapshot::new();
        let ctx = ScoreContext { pod: &pod, snapshot: &snapshot, job: None };
        assert!((0..=100).contains(&plugin.score(&ctx, &node, &usage)));
        assert!((0..=100).contains(&plugin.score(&ctx, &node, &NodeInfo::default())));
    }

    #[test]
    fn most_allocated_prefers_the_fuller_node() {
        let plugin = NodeResourcesFit::new(Default::default());
        let half_used = NodeInfo { requested: Resources::new().with(GPU, 4), ..Default::default() };
        let empty = NodeInfo::default();
        let pod = gpu_pod("p", 2);
        let snapshot = ClusterSnapshot::new();
        let ctx = ScoreContext { pod: &pod, snapshot: &snapshot, job: None };
        assert!(plugin.score(&ctx, &gpu_node("n", 8), &half_used) > plugin.score(&ctx, &gpu_node("n", 8), &empty));
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let plugin = NodeResourcesFit::new(NodeResourcesFitArgs {
            strategy: ScoringStrategy::LeastAllocated,
            ..Default::default()
        });
        let half_used = NodeInfo { requested: Resources::new().with(GPU, 4), ..Default::default() };
        let pod = gpu_pod("p", 2);
        let snapshot = ClusterSnapshot::new();
        let ctx = ScoreContext { pod: &pod, snapshot: &snapshot, job: None };
        assert!(
            plugin.score(&ctx, &gpu_node("n", 8), &half_used)
                < plugin.score(&ctx, &gpu_node("n", 8), &NodeInfo::default())
        );
    }
}
