//! Placement quality as DESIGN.md defines it: a placement's score is the
//! all-reduce bus bandwidth it can sustain (for each pod, the bottleneck link
//! of the best ring through its GPUs; across nodes, also the slowest network
//! level the gang spans), and its quality is that score over the best score
//! achievable on the same free GPUs.

use std::collections::HashMap;

use phalanx_core::snapshot::ClusterSnapshot;
use phalanx_core::topology::domains::DomainId;

/// The score (GB/s) of the pods `uids` where the snapshot has them placed.
/// Infinite for one pod of at most one GPU (nothing to all-reduce over).
pub fn placement_score<'a>(snapshot: &ClusterSnapshot, uids: impl IntoIterator<Item = &'a str>) -> f64 {
    let levels = &snapshot.settings().levels;
    let mut score = f64::INFINITY;
    let mut first: Option<(&str, &[Option<DomainId>])> = None;
    for uid in uids {
        let Some(p) = snapshot.placement(uid) else { continue };
        let Some(info) = snapshot.node(&p.node) else { continue };
        if let Some(model) = &info.gpu_model {
            score = score.min(model.ring_bandwidth(p.gpus));
        }
        match first {
            None => first = Some((&p.node, &info.domains)),
            // In a tree of domains, the widest level a set spans is the
            // widest any member shares with the first.
            Some((node, domains)) if node != p.node => score = score.min(levels.bandwidth(domains, &info.domains)),
            Some(_) => {}
        }
    }
    score
}

/// The best score `pods` pods of `gpus` GPUs each could get on the GPUs the
/// snapshot has free (schedulable nodes only; GPUs are the only resource
/// counted). Each node's room is counted greedily, its best free set first,
/// which is exact on NVSwitch nodes and close on PCIe ones.
pub fn best_score(snapshot: &ClusterSnapshot, pods: usize, gpus: usize) -> f64 {
    let levels = &snapshot.settings().levels;
    // Per node: the ring bandwidth of each disjoint set of `gpus` it could give, best first.
    let mut rooms: Vec<(&[Option<DomainId>], Vec<f64>)> = Vec::new();
    let mut thresholds: Vec<f64> = levels.levels.iter().map(|l| l.bandwidth_gbps).collect();
    thresholds.push(levels.cluster_bandwidth_gbps);
    for (spec, info) in snapshot.nodes() {
        let Some(model) = info.gpu_model.as_ref().filter(|_| spec.ready && !spec.unschedulable && gpus > 0) else {
            continue;
        };
        let mut free = info.free_gpus();
        let mut sets = Vec::new();
        while let Some(choice) = model.choose(free, gpus) {
            sets.push(choice.ring_bandwidth);
            free &= !choice.gpus;
        }
        thresholds.extend(&sets);
        rooms.push((&info.domains, sets));
    }
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    for t in thresholds {
        let slots = |sets: &[f64]| sets.iter().filter(|bw| **bw >= t).count();
        if rooms.iter().any(|(_, sets)| slots(sets) >= pods) {
            return t;
        }
        for (level, _) in levels.levels.iter().enumerate().filter(|(_, l)| l.bandwidth_gbps >= t) {
            let mut by_domain: HashMap<DomainId, usize> = HashMap::new();
            for (domains, sets) in &rooms {
                if let Some(Some(id)) = domains.get(level) {
                    *by_domain.entry(*id).or_default() += slots(sets);
                }
            }
            if by_domain.values().any(|n| *n >= pods) {
                return t;
            }
        }
        if levels.cluster_bandwidth_gbps >= t && rooms.iter().map(|(_, sets)| slots(sets)).sum::<usize>() >= pods {
            return t;
        }
    }
    0.0
}

/// Score over best, in [0, 1]; 1 when both are unbounded (a single GPU).
pub fn quality(score: f64, best: f64) -> f64 {
    if best.is_infinite() && score.is_infinite() || best <= 0.0 { 1.0 } else { (score / best).min(1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_core::snapshot::GPU_PRODUCT_LABEL;
    use phalanx_core::testing::{gpu_node, gpu_pod};

    /// Four H100 nodes, two per block.
    fn snapshot() -> ClusterSnapshot {
        let mut s = ClusterSnapshot::new();
        for i in 0..4 {
            let mut node = gpu_node(&format!("n{i}"), 8);
            node.labels.insert(GPU_PRODUCT_LABEL.into(), "NVIDIA-H100-80GB-HBM3".into());
            node.labels.insert("network.topology.nvidia.com/block".into(), format!("b{}", i / 2));
            s.upsert_node(node);
        }
        s
    }

    #[test]
    fn a_gang_in_one_block_scores_the_block_bandwidth_and_across_blocks_less() {
        let mut s = snapshot();
        let (a, b, c) = (gpu_pod("a", 8), gpu_pod("b", 8), gpu_pod("c", 8));
        s.observe_bound(a.placement("n0"), None);
        s.observe_bound(b.placement("n1"), None);
        s.observe_bound(c.placement("n2"), None);
        let in_block = placement_score(&s, ["uid-a", "uid-b"]);
        assert_eq!(in_block, 90.0, "nodes of one block");
        assert_eq!(placement_score(&s, ["uid-a", "uid-c"]), 10.0, "no shared level: the cluster's");
        let one_node = placement_score(&s, ["uid-a"]);
        assert!(one_node > 90.0, "NVLink inside a node: {one_node}");
    }

    #[test]
    fn the_best_score_finds_the_block_with_room() {
        let mut s = snapshot();
        assert_eq!(best_score(&s, 2, 8), 90.0, "two whole nodes of one block");
        s.observe_bound(gpu_pod("x", 1).placement("n0"), None);
        s.observe_bound(gpu_pod("y", 1).placement("n2"), None);
        assert_eq!(best_score(&s, 2, 8), 10.0, "one whole node free per block");
        assert!(best_score(&s, 2, 4) > 90.0, "two 4-GPU pods fit in one node");
        assert_eq!(quality(10.0, 90.0), 10.0 / 90.0);
        assert_eq!(quality(f64::INFINITY, f64::INFINITY), 1.0);
    }
}
