//! One scheduling decision for one pod: filter every node, score the ones
//! left, pick the best. Pure: reads the snapshot, changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use super::framework::{JobDemand, Profile, ScoreContext};
use super::node::{NodeInfo, NodeSpec};
use super::pod::PodInfo;
use super::snapshot::ClusterSnapshot;
use super::topology::gpu_choice::GpuMask;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChoice {
    pub node: String,
    pub score: i64,
    /// How many nodes passed every filter.
    pub feasible: usize,
    /// The GPUs chosen on that node (positions in its topology).
    pub gpus: GpuMask,
    /// The same GPUs as device indices, for the `phalanx.dev/gpus` annotation.
    pub gpu_indices: Vec<u32>,
}

/// No node fits: how many nodes failed for each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub total_nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// Phrased as kube-scheduler phrases it, so tools that parse it keep working:
    /// "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) were unschedulable."
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total_nodes == 0 {
            return write!(f, "0/0 nodes are available: no nodes available to schedule pods.");
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        write!(f, "0/{} nodes are available: {}.", self.total_nodes, parts.join(", "))
    }
}

impl std::error::Error for FitError {}

/// Runs every filter of `profile` on one node; the first plugin that rejects decides.
pub fn filter_node(profile: &Profile, pod: &PodInfo, node: &NodeSpec, usage: &NodeInfo) -> Result<(), Vec<String>> {
    for plugin in &profile.filters {
        plugin.filter(pod, node, usage).map_err(|r| r.0)?;
    }
    Ok(())
}

/// Whether a decision may look at a node at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeGate {
    Open,
    /// Outside the topology domain being tried: not counted.
    OutOfScope,
    /// Held for a gang waiting ahead: counted, with this reason.
    Held,
}

/// The reason shown for nodes held for another gang.
pub const HELD_REASON: &str = "node(s) were held for a gang waiting ahead";

pub fn choose_node(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &ClusterSnapshot,
    job: Option<&JobDemand>,
) -> Result<NodeChoice, FitError> {
    choose_node_gated(profile, pod, snapshot, job, |_, _| NodeGate::Open)
}

/// `choose_node` over the nodes `gate` lets through.
pub fn choose_node_gated(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &ClusterSnapshot,
    job: Option<&JobDemand>,
    gate: impl Fn(&NodeSpec, &NodeInfo) -> NodeGate,
) -> Result<NodeChoice, FitError> {
    let mut feasible: Vec<(&NodeSpec, &NodeInfo)> = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut total_nodes = 0;
    for (spec, usage) in snapshot.nodes() {
        match gate(spec, usage) {
            NodeGate::Open => {}
            NodeGate::OutOfScope => continue,
            NodeGate::Held => {
                total_nodes += 1;
                *reasons.entry(HELD_REASON.to_string()).or_default() += 1;
                continue;
            }
        }
        total_nodes += 1;
        match filter_node(profile, pod, spec, usage) {
            Ok(()) => feasible.push((spec, usage)),
            Err(why) => {
                for r in why {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError { total_nodes, reasons });
    }
    let ctx = ScoreContext { pod, snapshot, job };
    let mut totals = vec![0i64; feasible.len()];
    let mut raw = vec![0i64; feasible.len()];
    for scorer in &profile.scores {
        scorer.plugin.score_all(&ctx, &feasible, &mut raw);
        scorer.plugin.normalize(&mut raw);
        for (total, s) in totals.iter_mut().zip(&raw) {
            *total += s * scorer.weight;
        }
    }
    // Highest score wins; ties go to the first node in name order, so
    // decisions are reproducible (the simulator relies on it).
    let (best, score) =
        totals.iter().enumerate().fold((0, i64::MIN), |(bi, bs), (i, &s)| if s > bs { (i, s) } else { (bi, bs) });
    let (spec, usage) = feasible[best];
    let wanted = pod.gpu_count();
    let (gpus, gpu_indices) = match &usage.gpu_model {
        Some(model) if wanted > 0 => {
            let gpus = model.choose(usage.free_gpus(), wanted).map_or(0, |c| c.gpus);
            (gpus, model.device_indices(gpus))
        }
        _ => (0, vec![]),
    };
    Ok(NodeChoice { node: spec.name.clone(), score, feasible: feasible.len(), gpus, gpu_indices })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node::{Taint, TaintEffect};
    use crate::core::resources::{GPU, PODS, Resources};
    use crate::core::testing::{gpu_node as node, gpu_pod, profile_with_defaults};

    #[test]
    fn packs_onto_the_partly_used_node() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        s.upsert_node(node("b", 8));
        let busy = crate::core::testing::test_pod("x", Resources::new().with(GPU, 4).with(PODS, 1));
        s.observe_bound(busy.placement("b"), None);
        let choice = choose_node(&profile_with_defaults(), &gpu_pod("p", 2), &s, None).unwrap();
        assert_eq!(choice.node, "b");
        assert_eq!(choice.feasible, 2);
    }

    #[test]
    fn fit_error_counts_reasons_like_kube_scheduler() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 2));
        s.upsert_node(node("b", 2));
        let mut cordoned = node("c", 8);
        cordoned.unschedulable = true;
        s.upsert_node(cordoned);
        let mut tainted = node("d", 8);
        tainted.taints.push(Taint { key: "dedicated".into(), value: "infra".into(), effect: TaintEffect::NoSchedule });
        s.upsert_node(tainted);
        let err = choose_node(&profile_with_defaults(), &gpu_pod("p", 4), &s, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, \
             1 node(s) were unschedulable, 2 Insufficient nvidia.com/gpu."
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let err = choose_node(&profile_with_defaults(), &gpu_pod("p", 1), &ClusterSnapshot::new(), None).unwrap_err();
        assert_eq!(err.total_nodes, 0);
        assert!(err.to_string().starts_with("0/0 nodes are available"));
    }
}
