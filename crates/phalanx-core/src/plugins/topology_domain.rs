//! Across nodes: a job's pods go to the smallest topology domain (NVLink
//! domain, rack, block, ...) that can hold the whole job, packing partly used
//! domains before opening empty ones; later members follow the first.

use std::collections::HashMap;

use crate::framework::{ScoreContext, ScorePlugin};
use crate::node::{NodeInfo, NodeSpec};
use crate::topology::domains::DomainId;

pub struct TopologyDomain;

impl TopologyDomain {
    pub const NAME: &'static str = "TopologyDomain";
}

/// 100 for the node itself, less for each wider level, 0 for nothing shared.
fn closeness(shared: Option<usize>, levels: usize) -> i64 {
    match shared {
        Some(level) => (100 * (levels - level) / (levels + 1)) as i64,
        None => 0,
    }
}

/// How many of the job's pods a node could still take.
fn slots(usage: &NodeInfo, gpus_per_pod: usize) -> usize {
    if gpus_per_pod == 0 {
        return 1;
    }
    usage.free_gpus().count_ones() as usize / gpus_per_pod
}

/// The narrowest domain whose nodes can hold `pods` more pods; among those at
/// that level, the one with the fewest free slots (pack before spreading).
pub fn target_domain(
    nodes: &[(&NodeSpec, &NodeInfo)],
    levels: usize,
    pods: usize,
    gpus_per_pod: usize,
) -> Option<DomainId> {
    for level in 0..levels {
        let mut free: HashMap<DomainId, usize> = HashMap::new();
        for (_, usage) in nodes {
            if let Some(Some(d)) = usage.domains.get(level) {
                *free.entry(*d).or_default() += slots(usage, gpus_per_pod);
            }
        }
        let best = free.into_iter().filter(|(_, s)| *s >= pods).min_by_key(|(d, s)| (*s, *d));
        if let Some((d, _)) = best {
            return Some(d);
        }
    }
    None
}

impl ScorePlugin for TopologyDomain {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn score_all(&self, ctx: &ScoreContext<'_>, nodes: &[(&NodeSpec, &NodeInfo)], out: &mut [i64]) {
        out.iter_mut().for_each(|s| *s = 0);
        let (Some(job), Some(demand)) = (ctx.pod.job.as_ref(), ctx.job) else { return };
        let levels = ctx.snapshot.settings().levels.len();
        // Members already placed: stay as close to them as possible, that is
        // at the narrowest level where the node shares a domain with one of
        // them. Their domains are marked once (ids are unique across levels),
        // rather than each node compared with each of them.
        if let Some(placed) = ctx.snapshot.job_nodes(job) {
            let mut near = vec![false; ctx.snapshot.domain_index().domain_count()];
            for anchor in placed.keys().filter_map(|name| ctx.snapshot.node(name)) {
                for id in anchor.domains.iter().take(levels).flatten() {
                    near[*id as usize] = true;
                }
            }
            for (slot, (spec, usage)) in out.iter_mut().zip(nodes) {
                let domains = &usage.domains[..usage.domains.len().min(levels)];
                let shared = domains.iter().position(|d| d.is_some_and(|id| near[id as usize]));
                // Only a node that shares its narrowest domain (or has none) can be one of them.
                let narrowest = domains.iter().position(Option::is_some);
                *slot = if shared == narrowest && placed.contains_key(&spec.name) {
                    100
                } else {
                    closeness(shared, levels)
                };
            }
            return;
        }
        // The first member: aim for the domain that can hold the whole job.
        let Some(target) = target_domain(nodes, levels, demand.pending_pods, demand.gpus_per_pod) else { return };
        let Some(anchor) =
            nodes.iter().find(|(_, u)| u.domains.contains(&Some(target))).map(|(_, u)| u.domains.clone())
        else {
            return;
        };
        for (slot, (_, usage)) in out.iter_mut().zip(nodes) {
            *slot = if usage.domains.contains(&Some(target)) {
                100
            } else {
                closeness(ctx.snapshot.settings().levels.shared_level(&usage.domains, &anchor), levels) / 2
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::JobDemand;
    use crate::gang::{GangId, GangKind};
    use crate::snapshot::ClusterSnapshot;
    use crate::testing::{gpu_node, gpu_pod};

    fn rack_node(name: &str, rack: &str) -> crate::node::NodeSpec {
        let mut n = gpu_node(name, 8);
        n.labels.insert("network.topology.nvidia.com/block".into(), rack.into());
        n
    }

    /// Rack a: four nodes, one half full (28 GPUs free); rack b: four empty nodes.
    fn two_racks() -> ClusterSnapshot {
        let mut s = ClusterSnapshot::new();
        for i in 0..4 {
            s.upsert_node(rack_node(&format!("a{i}"), "a"));
            s.upsert_node(rack_node(&format!("b{i}"), "b"));
        }
        let busy = gpu_pod("busy", 4);
        s.assume(busy.placement("a0"), 0b1111);
        s
    }

    fn job_pod(name: &str) -> crate::pod::PodInfo {
        let mut p = gpu_pod(name, 8);
        p.job = Some(GangId::new(GangKind::PyTorchJob, "default", "llm"));
        p
    }

    #[test]
    fn a_job_goes_to_the_rack_that_holds_all_of_it() {
        let s = two_racks();
        let nodes: Vec<_> = s.nodes().collect();
        let pod = job_pod("w0");
        let demand = JobDemand { pending_pods: 4, gpus_per_pod: 8 };
        let ctx = ScoreContext { pod: &pod, snapshot: &s, job: Some(&demand) };
        let mut out = vec![0; nodes.len()];
        TopologyDomain.score_all(&ctx, &nodes, &mut out);
        for ((spec, _), score) in nodes.iter().zip(&out) {
            assert_eq!(*score == 100, spec.name.starts_with('b'), "{} scored {score}", spec.name);
        }
    }

    #[test]
    fn later_members_follow_the_first_and_smaller_jobs_pack_the_used_rack() {
        let mut s = two_racks();
        let first = job_pod("w0");
        s.assume(first.placement("b2"), 0xff);
        let nodes: Vec<_> = s.nodes().collect();
        let pod = job_pod("w1");
        let demand = JobDemand { pending_pods: 3, gpus_per_pod: 8 };
        let ctx = ScoreContext { pod: &pod, snapshot: &s, job: Some(&demand) };
        let mut out = vec![0; nodes.len()];
        TopologyDomain.score_all(&ctx, &nodes, &mut out);
        let score_of = |n: &str| out[nodes.iter().position(|(s, _)| s.name == n).unwrap()];
        assert!(score_of("b0") > score_of("a1"));

        // A 2-pod job fits both racks; the partly used one is packed first.
        let fresh = two_racks();
        let nodes: Vec<_> = fresh.nodes().collect();
        let target = target_domain(&nodes, 4, 2, 8).unwrap();
        assert_eq!(fresh.domain_index().describe(target), "a");
        assert_eq!(target_domain(&nodes, 4, 9, 8), None, "no rack holds nine 8-GPU pods");
    }
}
