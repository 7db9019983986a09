//! One scheduling decision for one pod: filter every node, score the ones
//! left, pick the best. Pure: reads the snapshot, changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use super::dra::inventory::ClaimWrite;
use super::framework::{JobDemand, Profile, ScoreContext};
use super::node::{NodeInfo, NodeSpec};
use super::pod::PodInfo;
use super::snapshot::ClusterSnapshot;
use super::topology::gpu_choice::GpuMask;
use super::volume::VolumeWrite;

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
    /// The pod's ResourceClaims on that node, to write before the bind.
    pub claims: Vec<ClaimWrite>,
    /// What binds its unbound PersistentVolumeClaims there, written before the bind.
    pub volumes: Vec<VolumeWrite>,
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

/// Runs every node-local filter of `profile` on one node; the first plugin
/// that rejects decides. (Cluster filters need a prepared decision: `choose_node_among`.)
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

/// One pod alone, every node open (the benchmarks and tests time and check it).
#[cfg(any(test, feature = "internals"))]
pub fn choose_node(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &ClusterSnapshot,
    job: Option<&JobDemand>,
) -> Result<NodeChoice, FitError> {
    choose_node_gated(profile, pod, snapshot, job, |_, _| NodeGate::Open)
}

/// `choose_node` over the nodes `gate` lets through.
#[cfg(any(test, feature = "internals"))]
pub fn choose_node_gated(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &ClusterSnapshot,
    job: Option<&JobDemand>,
    gate: impl Fn(&NodeSpec, &NodeInfo) -> NodeGate,
) -> Result<NodeChoice, FitError> {
    choose_node_among(profile, pod, snapshot, snapshot.nodes(), job, gate, &mut NodeVerdicts::default())
}

/// What the gate, the filters and the node-local scores said about one node,
/// and at which of its versions.
#[derive(Debug, Clone)]
struct NodeVerdict {
    version: u64,
    verdict: Verdict,
}

#[derive(Debug, Clone)]
enum Verdict {
    OutOfScope,
    Held,
    Rejected(Vec<String>),
    /// Feasible, with its node-local raw scores at this offset in `NodeVerdicts::scores`.
    Feasible(usize),
}

/// Verdicts kept between decisions for pods with the same constraints (a
/// gang's members), one profile and one gate: a node is looked at again only
/// once it has changed (usually the one that took the last member). Without
/// this, a gang of 512 walked every filter and score of every node 512 times.
#[derive(Debug, Default)]
pub struct NodeVerdicts {
    /// By position among the nodes offered, valid while the node's version matches.
    nodes: Vec<Option<NodeVerdict>>,
    scores: Vec<i64>,
}

/// `choose_node_gated` over `nodes` (name order, a subset of the snapshot's),
/// reusing and updating `verdicts`. Callers keep one `NodeVerdicts` per
/// profile, gate, set of nodes and pod constraints.
pub fn choose_node_among<'s>(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &'s ClusterSnapshot,
    nodes: impl Iterator<Item = (&'s NodeSpec, &'s NodeInfo)>,
    job: Option<&JobDemand>,
    gate: impl Fn(&NodeSpec, &NodeInfo) -> NodeGate,
    verdicts: &mut NodeVerdicts,
) -> Result<NodeChoice, FitError> {
    let ctx = ScoreContext { pod, snapshot, job };
    // Judged afresh in every decision: their verdicts read other nodes too.
    let cluster_checks: Vec<_> = profile.cluster_filters.iter().filter_map(|f| f.prepare(pod, snapshot)).collect();
    let mut cluster_rejections: Vec<Vec<String>> = Vec::new();
    let local: Vec<usize> =
        profile.scores.iter().enumerate().filter(|(_, s)| s.plugin.node_local()).map(|(i, _)| i).collect();
    let mut feasible: Vec<(&NodeSpec, &NodeInfo)> = Vec::new();
    let mut offsets: Vec<(usize, usize)> = Vec::new();
    let mut seen = 0;
    for (position, (spec, usage)) in nodes.enumerate() {
        seen = position + 1;
        if verdicts.nodes.len() <= position {
            verdicts.nodes.resize(position + 1, None);
        }
        let known = verdicts.nodes[position].as_ref().filter(|v| v.version == usage.version);
        let verdict = match known {
            Some(v) => &v.verdict,
            None => {
                let verdict = match gate(spec, usage) {
                    NodeGate::OutOfScope => Verdict::OutOfScope,
                    NodeGate::Held => Verdict::Held,
                    NodeGate::Open => match filter_node(profile, pod, spec, usage)
                        .and_then(|()| claims_fit(pod, snapshot, spec, usage))
                    {
                        Err(why) => Verdict::Rejected(why),
                        Ok(()) => {
                            let offset = verdicts.scores.len();
                            verdicts
                                .scores
                                .extend(local.iter().map(|&i| profile.scores[i].plugin.score(&ctx, spec, usage)));
                            Verdict::Feasible(offset)
                        }
                    },
                };
                &verdicts.nodes[position].insert(NodeVerdict { version: usage.version, verdict }).verdict
            }
        };
        if let Verdict::Feasible(offset) = verdict {
            if let Err(rejection) = cluster_checks.iter().try_for_each(|check| check.filter(spec)) {
                cluster_rejections.push(rejection.0);
                continue;
            }
            feasible.push((spec, usage));
            offsets.push((position, *offset));
        }
    }
    if feasible.is_empty() {
        return Err(fit_error(&verdicts.nodes[..seen], &cluster_rejections));
    }
    let mut totals = vec![0i64; feasible.len()];
    let mut raw = vec![0i64; feasible.len()];
    for (i, scorer) in profile.scores.iter().enumerate() {
        match local.iter().position(|&l| l == i) {
            Some(slot) => {
                for (r, (_, offset)) in raw.iter_mut().zip(&offsets) {
                    *r = verdicts.scores[offset + slot];
                }
            }
            None => scorer.plugin.score_all(&ctx, &feasible, &mut raw),
        }
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
    // Verdicts whose scores are no longer referenced pile up; start afresh
    // once they outweigh the live ones.
    if verdicts.scores.len() > 4 * seen * local.len().max(1) {
        *verdicts = NodeVerdicts::default();
    }
    // The verdict said the claims fit; this works out the pod's own writes.
    let claims = match snapshot.devices().fit(pod, &spec.name, usage) {
        Ok(claims) => claims,
        Err(misfit) => return Err(FitError { total_nodes: 1, reasons: [(misfit.to_string(), 1)].into() }),
    };
    // Likewise for volumes (no writes if VolumeBinding is not in the profile
    // and they do not fit: the pod is bound as it is).
    let volumes = if pod.volume_claims.is_empty() {
        Vec::new()
    } else {
        snapshot.volumes().fit(pod, spec).unwrap_or_default()
    };
    Ok(NodeChoice { node: spec.name.clone(), score, feasible: feasible.len(), gpus, gpu_indices, claims, volumes })
}

/// Whether the pod's ResourceClaims can be allocated on the node (part of
/// the node's verdict: a node's version moves whenever devices are taken
/// or freed on it by a placement).
fn claims_fit(pod: &PodInfo, snapshot: &ClusterSnapshot, spec: &NodeSpec, usage: &NodeInfo) -> Result<(), Vec<String>> {
    if pod.claims.is_empty() {
        return Ok(());
    }
    snapshot.devices().fit(pod, &spec.name, usage).map(|_| ()).map_err(|misfit| vec![misfit.to_string()])
}

/// How many nodes failed for each reason (held ones included); out-of-scope
/// ones are not counted. `cluster_rejections`: why nodes the node-local
/// filters let through failed a cluster filter (they are counted already).
fn fit_error(verdicts: &[Option<NodeVerdict>], cluster_rejections: &[Vec<String>]) -> FitError {
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total_nodes = 0;
    for v in verdicts.iter().flatten() {
        match &v.verdict {
            Verdict::OutOfScope => continue,
            Verdict::Feasible(_) => {}
            Verdict::Held => *reasons.entry(HELD_REASON).or_default() += 1,
            Verdict::Rejected(why) => {
                for r in why {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        total_nodes += 1;
    }
    for why in cluster_rejections {
        for r in why {
            *reasons.entry(r).or_default() += 1;
        }
    }
    FitError { total_nodes, reasons: reasons.into_iter().map(|(r, n)| (r.to_string(), n)).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Taint, TaintEffect};
    use crate::resources::{GPU, PODS, Resources};
    use crate::testing::{gpu_node as node, gpu_pod, profile_with_defaults};

    #[test]
    fn packs_onto_the_partly_used_node() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        s.upsert_node(node("b", 8));
        let busy = crate::testing::test_pod("x", Resources::new().with(GPU, 4).with(PODS, 1));
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
