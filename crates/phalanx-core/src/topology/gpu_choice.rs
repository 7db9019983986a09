//! Choosing the GPUs for a pod inside one node.
//!
//! A pod's GPUs are scored as NCCL would run an all-reduce over them: the
//! bottleneck link of the best ring through them. Ties go to the set on the
//! fewest sockets (NUMA locality), then to the set that leaves the remaining
//! free GPUs best connected (so a 1-GPU pod does not break an NVLink pair or
//! a full PCIe switch when a loose GPU is free).
//!
//! Everything depends only on the topology, the free set and the count, so
//! a `NodeGpuModel` computes the answers once per distinct topology (shared by
//! every node of that kind): the ring bandwidth of every subset by dynamic
//! programming, the best subsets of each size inside every free set, and the
//! choice itself for every (free set, count). A decision is then a lookup.

use super::graph::{LinkBandwidth, TopologyGraph};
use super::model::GpuTopology;

/// GPUs are handled as bit sets of their positions in `GpuTopology::gpus`.
pub type GpuMask = u64;

/// Exact tables are built up to this many GPUs (2^12 subsets); larger nodes
/// fall back to a greedy choice.
const EXACT_LIMIT: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuChoice {
    pub gpus: GpuMask,
    /// Modelled all-reduce bandwidth (GB/s): the best ring's slowest link.
    pub ring_bandwidth: f64,
    /// Number of CPU sockets the GPUs sit on.
    pub sockets: u32,
    /// How well connected the GPUs left free are (sum over sizes of the best
    /// ring among them); higher is better.
    pub leftover: f64,
}

#[derive(Debug)]
pub struct NodeGpuModel {
    pub topology: GpuTopology,
    pub graph: TopologyGraph,
    /// GB/s between GPU positions.
    pub bandwidth: Vec<Vec<f64>>,
    /// Socket of each GPU position.
    pub socket: Vec<usize>,
    /// Nearest NIC (index into `topology.nics`) of each GPU position.
    pub nearest_nic: Vec<Option<usize>>,
    ring: Vec<f64>,
    /// `best_of_size[mask * (n + 1) + m]`: best ring among `m`-subsets of `mask`.
    best_of_size: Vec<f64>,
    /// `choices[free * (n + 1) + k]`.
    choices: Vec<Option<GpuChoice>>,
}

/// Positions of the set bits, lowest first.
fn bits(mut mask: GpuMask) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let p = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            p
        })
    })
}

impl NodeGpuModel {
    pub fn new(topology: GpuTopology, table: &LinkBandwidth) -> Self {
        let graph = TopologyGraph::build(&topology);
        let bandwidth = graph.bandwidth_matrix(table);
        let socket = graph.gpu_sockets();
        let nearest_nic = graph.nearest_nics(table);
        let mut model = Self {
            topology,
            graph,
            bandwidth,
            socket,
            nearest_nic,
            ring: vec![],
            best_of_size: vec![],
            choices: vec![],
        };
        if model.gpu_count() <= EXACT_LIMIT {
            model.ring = ring_table(&model.bandwidth);
            model.best_of_size = best_of_size_table(&model.ring, model.gpu_count());
            model.choices = model.choice_table();
        }
        model
    }

    pub fn gpu_count(&self) -> usize {
        self.topology.gpus.len()
    }

    pub fn all_gpus(&self) -> GpuMask {
        if self.gpu_count() >= 64 { u64::MAX } else { (1 << self.gpu_count()) - 1 }
    }

    /// The device indices (as the device plugin numbers them) of a set.
    pub fn device_indices(&self, mask: GpuMask) -> Vec<u32> {
        bits(mask).filter_map(|p| self.topology.gpus.get(p).map(|g| g.index)).collect()
    }

    /// The set of positions holding these device indices; `None` if one is unknown.
    pub fn mask_of_indices(&self, indices: &[u32]) -> Option<GpuMask> {
        indices
            .iter()
            .try_fold(0, |mask, idx| self.topology.gpus.iter().position(|g| g.index == *idx).map(|p| mask | (1 << p)))
    }

    /// Modelled all-reduce bandwidth over a set of GPUs.
    pub fn ring_bandwidth(&self, mask: GpuMask) -> f64 {
        match self.ring.get(mask as usize) {
            Some(v) => *v,
            None => ring_by_search(&self.bandwidth, mask),
        }
    }

    /// The best `k` GPUs out of `free`, or `None` if fewer are free.
    pub fn choose(&self, free: GpuMask, k: usize) -> Option<GpuChoice> {
        let free = free & self.all_gpus();
        if k > free.count_ones() as usize {
            return None;
        }
        if !self.choices.is_empty() {
            return self.choices[free as usize * (self.gpu_count() + 1) + k];
        }
        Some(self.greedy_choice(free, 0, k))
    }

    /// The best `k` GPUs out of `free` that include all of `required` (the
    /// kubelet's must-include list, GPUs a container already holds), or
    /// `None` if `required` is not free or larger than `k`.
    pub fn choose_including(&self, free: GpuMask, required: GpuMask, k: usize) -> Option<GpuChoice> {
        let free = free & self.all_gpus();
        let needed = required.count_ones() as usize;
        if required & !free != 0 || needed > k || k > free.count_ones() as usize {
            return None;
        }
        if required == 0 {
            return self.choose(free, k);
        }
        if self.best_of_size.is_empty() {
            return Some(self.greedy_choice(free, required, k));
        }
        let rest = free & !required;
        let mut best: Option<GpuChoice> = None;
        // Every subset of the other free GPUs, by the standard submask walk
        // (the empty one last), topped up with the required GPUs.
        let mut extra = rest;
        loop {
            if extra.count_ones() as usize == k - needed {
                let candidate = self.evaluate(free, required | extra);
                if best.is_none_or(|b| better(&candidate, &b)) {
                    best = Some(candidate);
                }
            }
            if extra == 0 {
                break;
            }
            extra = (extra - 1) & rest;
        }
        best
    }

    /// Lowest-numbered free GPUs: what a topology-blind allocator does.
    pub fn first_fit(&self, free: GpuMask, k: usize) -> Option<GpuMask> {
        let picked: Vec<usize> = bits(free & self.all_gpus()).take(k).collect();
        (picked.len() == k).then(|| picked.iter().fold(0, |m, p| m | (1 << p)))
    }

    fn sockets_of(&self, mask: GpuMask) -> u32 {
        let mut seen: GpuMask = 0;
        for p in bits(mask) {
            seen |= 1 << (self.socket[p] % 64);
        }
        seen.count_ones()
    }

    fn leftover_of(&self, rest: GpuMask) -> f64 {
        let n = self.gpu_count();
        (2..=rest.count_ones() as usize).map(|m| self.best_of_size[rest as usize * (n + 1) + m]).sum()
    }

    pub(crate) fn evaluate(&self, free: GpuMask, pick: GpuMask) -> GpuChoice {
        GpuChoice {
            gpus: pick,
            ring_bandwidth: self.ring_bandwidth(pick),
            sockets: self.sockets_of(pick),
            leftover: if self.best_of_size.is_empty() { 0.0 } else { self.leftover_of(free & !pick) },
        }
    }

    fn choice_table(&self) -> Vec<Option<GpuChoice>> {
        let n = self.gpu_count();
        let mut table = vec![None; (1 << n) * (n + 1)];
        for free in 0..(1u64 << n) {
            table[free as usize * (n + 1)] = Some(self.evaluate(free, 0));
            // Every subset of `free`, by the standard submask walk.
            let mut pick = free;
            while pick != 0 {
                let k = pick.count_ones() as usize;
                let candidate = self.evaluate(free, pick);
                let slot = &mut table[free as usize * (n + 1) + k];
                if slot.is_none_or(|best| better(&candidate, &best)) {
                    *slot = Some(candidate);
                }
                pick = (pick - 1) & free;
            }
        }
        table
    }

    /// For nodes too large for exact tables: grow the set from `start` one
    /// GPU at a time, always adding the GPU that keeps the ring fastest.
    fn greedy_choice(&self, free: GpuMask, start: GpuMask, k: usize) -> GpuChoice {
        let mut pick = start;
        for _ in start.count_ones() as usize..k {
            let next = bits(free & !pick)
                .max_by(|&a, &b| {
                    let (ca, cb) = (self.evaluate(free, pick | 1 << a), self.evaluate(free, pick | 1 << b));
                    if better(&ca, &cb) { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less }
                })
                .expect("k <= free GPUs");
            pick |= 1 << next;
        }
        self.evaluate(free, pick)
    }
}

/// The order of preference between two candidate sets of the same size.
pub(crate) fn better(a: &GpuChoice, b: &GpuChoice) -> bool {
    const EPS: f64 = 1e-9;
    if (a.ring_bandwidth - b.ring_bandwidth).abs() > EPS {
        return a.ring_bandwidth > b.ring_bandwidth;
    }
    if a.sockets != b.sockets {
        return a.sockets < b.sockets;
    }
    if (a.leftover - b.leftover).abs() > EPS {
        return a.leftover > b.leftover;
    }
    a.gpus < b.gpus
}

/// Ring bandwidth of every subset: a bottleneck Hamiltonian cycle, found by
/// dynamic programming over paths that start at the subset's lowest GPU.
fn ring_table(bw: &[Vec<f64>]) -> Vec<f64> {
    let n = bw.len();
    let size = 1usize << n;
    let mut ring = vec![0.0; size];
    let mut path = vec![f64::NEG_INFINITY; size * n.max(1)];
    for start in 0..n {
        path.iter_mut().for_each(|v| *v = f64::NEG_INFINITY);
        path[(1 << start) * n + start] = f64::INFINITY;
        // Subsets whose lowest member is `start`, in increasing order.
        for mask in (1usize << start..size).step_by(1 << (start + 1)) {
            for last in bits(mask as u64) {
                let here = path[mask * n + last];
                if here == f64::NEG_INFINITY {
                    continue;
                }
                for next in start + 1..n {
                    if mask & (1 << next) == 0 {
                        let slot = &mut path[(mask | 1 << next) * n + next];
                        *slot = slot.max(here.min(bw[last][next]));
                    }
                }
            }
            ring[mask] = match mask.count_ones() {
                1 => f64::INFINITY,
                // The path from `start` to the other member is the one link.
                2 => path[mask * n + (63 - (mask as u64).leading_zeros() as usize)],
                _ => bits(mask as u64)
                    .filter(|&last| last != start)
                    .map(|last| path[mask * n + last].min(bw[last][start]))
                    .fold(f64::NEG_INFINITY, f64::max),
            };
        }
    }
    ring
}

/// `best[mask * (n + 1) + m]`: the best ring among the `m`-subsets of `mask`.
fn best_of_size_table(ring: &[f64], n: usize) -> Vec<f64> {
    let mut best = vec![0.0; ring.len() * (n + 1)];
    for mask in 1..ring.len() {
        let size = mask.count_ones() as usize;
        best[mask * (n + 1) + size] = ring[mask];
        for i in bits(mask as u64) {
            let smaller = mask & !(1 << i);
            for m in 1..size {
                let v = best[smaller * (n + 1) + m];
                let slot = &mut best[mask * (n + 1) + m];
                *slot = slot.max(v);
            }
        }
    }
    best
}

/// Ring bandwidth by trying every cycle: the reference the tables are
/// checked against, and the answer for nodes beyond the exact limit.
pub fn ring_by_search(bw: &[Vec<f64>], mask: GpuMask) -> f64 {
    let members: Vec<usize> = bits(mask).collect();
    match members.len() {
        0 | 1 => f64::INFINITY,
        2 => bw[members[0]][members[1]],
        _ => {
            let (first, rest) = members.split_first().expect("three or more");
            let mut rest = rest.to_vec();
            let mut best = f64::NEG_INFINITY;
            permute(&mut rest, 0, &mut |order| {
                let mut bottleneck = bw[*first][order[0]].min(bw[order[order.len() - 1]][*first]);
                for w in order.windows(2) {
                    bottleneck = bottleneck.min(bw[w[0]][w[1]]);
                }
                best = best.max(bottleneck);
            });
            best
        }
    }
}

fn permute(items: &mut [usize], k: usize, visit: &mut impl FnMut(&[usize])) {
    if k == items.len() {
        visit(items);
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permute(items, k + 1, visit);
        items.swap(k, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::{GpuDevice, Link};
    use crate::topology::templates;
    use proptest::prelude::*;

    /// A topology from rows of link names, GPUs on sockets by `numa`.
    pub fn topology(rows: &[&str], numa: &[u32]) -> GpuTopology {
        let links: Vec<Vec<Link>> =
            rows.iter().map(|r| r.split_whitespace().map(|c| c.parse().unwrap()).collect()).collect();
        let gpus = (0..rows.len())
            .map(|i| GpuDevice { index: i as u32, numa_node: numa.get(i).copied(), ..Default::default() })
            .collect();
        let t = GpuTopology { gpus, links, nics: vec![] };
        t.validate().unwrap();
        t
    }

    fn nvlink_pairs() -> GpuTopology {
        topology(
            &[
                "X NV12 NODE NODE SYS SYS SYS SYS",
                "NV12 X NODE NODE SYS SYS SYS SYS",
                "NODE NODE X NV12 SYS SYS SYS SYS",
                "NODE NODE NV12 X SYS SYS SYS SYS",
                "SYS SYS SYS SYS X NV12 NODE NODE",
                "SYS SYS SYS SYS NV12 X NODE NODE",
                "SYS SYS SYS SYS NODE NODE X NV12",
                "SYS SYS SYS SYS NODE NODE NV12 X",
            ],
            &[0, 0, 0, 0, 1, 1, 1, 1],
        )
    }

    fn mask(positions: &[usize]) -> GpuMask {
        positions.iter().fold(0, |m, p| m | 1 << p)
    }

    #[test]
    fn a_pair_request_takes_the_free_nvlink_pair_and_a_single_does_not_break_it() {
        let model = NodeGpuModel::new(nvlink_pairs(), &LinkBandwidth::default());
        // Free: the intact pair 2-3 and loose GPUs 0, 4 and 6.
        let free = mask(&[0, 2, 3, 4, 6]);
        let two = model.choose(free, 2).unwrap();
        assert_eq!(two.gpus, mask(&[2, 3]));
        assert_eq!(two.ring_bandwidth, 300.0);
        let one = model.choose(free, 1).unwrap();
        assert!(one.gpus & mask(&[2, 3]) == 0, "took {:b}", one.gpus);
        // First fit would have broken nothing here but picks 0 and 2 for a pair.
        assert_eq!(model.first_fit(free, 2), Some(mask(&[0, 2])));
    }

    #[test]
    fn a_required_gpu_pulls_in_its_nvlink_partner() {
        let model = NodeGpuModel::new(nvlink_pairs(), &LinkBandwidth::default());
        let all = model.all_gpus();
        // Holding GPU 5, a pair takes its NVLink partner 4, not a free pair elsewhere.
        assert_eq!(model.choose_including(all, mask(&[5]), 2).unwrap().gpus, mask(&[4, 5]));
        // Four around GPU 6: the two pairs of its socket.
        assert_eq!(model.choose_including(all, mask(&[6]), 4).unwrap().gpus, mask(&[4, 5, 6, 7]));
        assert_eq!(model.choose_including(all, 0, 2), model.choose(all, 2));
        assert_eq!(model.choose_including(mask(&[1, 2]), mask(&[0]), 2), None, "GPU 0 is not free");
        assert_eq!(model.choose_including(all, mask(&[0, 1, 2]), 2), None, "more required than asked");
    }

    #[test]
    fn four_gpus_stay_on_one_socket_of_a_pcie_box() {
        let model = NodeGpuModel::new(templates::pcie_two_sockets(8, "RTX"), &LinkBandwidth::default());
        let free = model.all_gpus() & !mask(&[0]);
        let four = model.choose(free, 4).unwrap();
        assert_eq!(four.gpus, mask(&[4, 5, 6, 7]));
        assert_eq!(four.sockets, 1);
        assert_eq!(model.first_fit(free, 4), Some(mask(&[1, 2, 3, 4])), "first fit crosses sockets");
        assert!(model.ring_bandwidth(mask(&[1, 2, 3, 4])) < four.ring_bandwidth);
    }

    #[test]
    fn a_single_gpu_goes_where_it_breaks_the_least() {
        let model = NodeGpuModel::new(templates::pcie_two_sockets(8, "RTX"), &LinkBandwidth::default());
        // Socket 0 has three free, socket 1 four: take from the broken socket.
        let one = model.choose(model.all_gpus() & !mask(&[0]), 1).unwrap();
        assert!(one.gpus & mask(&[1, 2, 3]) != 0);
    }

    #[test]
    fn nvswitch_rings_run_at_full_nvlink_speed() {
        let model = NodeGpuModel::new(templates::nvswitch(8, 18, "H100"), &LinkBandwidth::default());
        for k in 2..=8 {
            assert_eq!(model.choose(model.all_gpus(), k).unwrap().ring_bandwidth, 450.0);
        }
        assert_eq!(model.choose(mask(&[1, 2]), 3), None);
        assert_eq!(model.device_indices(mask(&[1, 5])), vec![1, 5]);
        assert_eq!(model.mask_of_indices(&[1, 5]), Some(mask(&[1, 5])));
        assert_eq!(model.mask_of_indices(&[9]), None);
    }

    #[test]
    fn the_graph_recovers_sockets_switches_and_nvswitch() {
        use crate::topology::graph::Vertex;
        let model = NodeGpuModel::new(templates::pcie_two_sockets(8, "RTX"), &LinkBandwidth::default());
        assert_eq!(model.socket, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let count = |v: Vertex| model.graph.graph.node_weights().filter(|w| **w == v).count();
        assert_eq!(count(Vertex::PcieSwitch), 2);
        assert_eq!(model.bandwidth[0][1], LinkBandwidth::default().pix);
        assert_eq!(model.bandwidth[0][7], LinkBandwidth::default().sys);
        let h100 = NodeGpuModel::new(templates::nvswitch(8, 18, "H100"), &LinkBandwidth::default());
        assert_eq!(h100.graph.graph.node_weights().filter(|w| **w == Vertex::NvSwitch).count(), 1);
        assert!(h100.graph.to_dot().contains("NVSwitch"));
    }

    fn symmetric_matrix(n: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
        proptest::collection::vec(1u32..400, n * n).prop_map(move |raw| {
            let mut m = vec![vec![f64::INFINITY; n]; n];
            for a in 0..n {
                for b in a + 1..n {
                    m[a][b] = f64::from(raw[a * n + b]);
                    m[b][a] = m[a][b];
                }
            }
            m
        })
    }

    proptest! {
        #[test]
        fn ring_table_matches_trying_every_cycle(bw in (2usize..=7).prop_flat_map(symmetric_matrix)) {
            let table = ring_table(&bw);
            for mask in 1..(1u64 << bw.len()) {
                prop_assert_eq!(table[mask as usize], ring_by_search(&bw, mask), "mask {:b}", mask);
            }
        }

        #[test]
        fn the_choice_is_the_best_ring_of_its_size(free in 0u64..256, k in 0usize..=8) {
            static MODEL: std::sync::LazyLock<NodeGpuModel> =
                std::sync::LazyLock::new(|| NodeGpuModel::new(nvlink_pairs(), &LinkBandwidth::default()));
            let model = &*MODEL;
            match model.choose(free, k) {
                None => prop_assert!(k > free.count_ones() as usize),
                Some(c) => {
                    prop_assert_eq!(c.gpus & !free, 0);
                    prop_assert_eq!(c.gpus.count_ones() as usize, k);
                    let best = (0..256u64)
                        .filter(|s| s & !free == 0 && s.count_ones() as usize == k)
                        .map(|s| model.ring_bandwidth(s))
                        .fold(f64::NEG_INFINITY, f64::max);
                    prop_assert_eq!(c.ring_bandwidth, if k == 0 { 0.0 } else { best });
                }
            }
        }
    }
}
