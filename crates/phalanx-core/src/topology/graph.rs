//! The wiring inside one node as a graph: GPUs, NVSwitches, PCIe switches,
//! host bridges, NUMA nodes (CPU sockets) and NICs, with typed edges. The
//! link matrix only says how far apart two devices are; the graph recovers
//! the components they share (a PCIe switch is what a group of PIX devices
//! has in common), which is what "do not break a switch group" and "nearest
//! NIC" are about.

use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use super::model::{GpuTopology, Link};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vertex {
    Gpu(u32),
    Nic(String),
    NvSwitch,
    PcieSwitch,
    /// A group of PCIe switches below one host bridge (PXB).
    PcieComplex,
    HostBridge,
    /// A CPU socket / NUMA node; `None` when the number is unknown.
    NumaNode(Option<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    NvLink(u8),
    NvSwitch(u8),
    Pix,
    Pxb,
    Phb,
    Node,
    Sys,
}

/// GB/s per direction for each kind of link; `nvlinkPerLink` times the link
/// count for NVLink. Defaults calibrated on the measurements in
/// fixtures/nvidia-smi-topo/README.md (PCIe Gen4/5 busBW 20-35 GB/s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkBandwidth {
    pub nvlink_per_link: f64,
    pub pix: f64,
    pub pxb: f64,
    pub phb: f64,
    pub node: f64,
    pub sys: f64,
}

impl Default for LinkBandwidth {
    fn default() -> Self {
        Self { nvlink_per_link: 25.0, pix: 35.0, pxb: 30.0, phb: 25.0, node: 20.0, sys: 12.0 }
    }
}

impl LinkBandwidth {
    pub fn of(&self, edge: Edge) -> f64 {
        match edge {
            Edge::NvLink(n) | Edge::NvSwitch(n) => self.nvlink_per_link * f64::from(n),
            Edge::Pix => self.pix,
            Edge::Pxb => self.pxb,
            Edge::Phb => self.phb,
            Edge::Node => self.node,
            Edge::Sys => self.sys,
        }
    }

    /// Bandwidth of a link as the matrix names it (the self link is unbounded).
    pub fn of_link(&self, link: Link) -> f64 {
        match pcie_edge(link) {
            Some(e) => self.of(e),
            None => match link {
                Link::NvLink(n) => self.of(Edge::NvLink(n)),
                _ => f64::INFINITY,
            },
        }
    }
}

fn pcie_edge(link: Link) -> Option<Edge> {
    Some(match link {
        Link::Pix => Edge::Pix,
        Link::Pxb => Edge::Pxb,
        Link::Phb => Edge::Phb,
        Link::Node => Edge::Node,
        Link::Sys => Edge::Sys,
        Link::Own | Link::NvLink(_) => return None,
    })
}

/// One PCIe distance level: the link that defines it, the edge up to its
/// component, and the vertex that stands for the component.
type Level = (Link, Edge, fn() -> Vertex);

/// PCIe distance levels, nearest first; SYS joins NUMA nodes and has no component.
const LEVELS: [Level; 4] = [
    (Link::Pix, Edge::Pix, || Vertex::PcieSwitch),
    (Link::Pxb, Edge::Pxb, || Vertex::PcieComplex),
    (Link::Phb, Edge::Phb, || Vertex::HostBridge),
    (Link::Node, Edge::Node, || Vertex::NumaNode(None)),
];

fn rank(link: Link) -> u8 {
    match link {
        Link::Own => 0,
        Link::Pix => 1,
        Link::Pxb => 2,
        Link::Phb => 3,
        Link::Node => 4,
        Link::Sys => 5,
        // NVLink says nothing about the PCIe path.
        Link::NvLink(_) => u8::MAX,
    }
}

#[derive(Debug, Clone)]
pub struct TopologyGraph {
    pub graph: UnGraph<Vertex, Edge>,
    pub gpus: Vec<NodeIndex>,
    pub nics: Vec<NodeIndex>,
}

/// Union-find over device indices.
fn find(parent: &mut [usize], x: usize) -> usize {
    let mut root = x;
    while parent[root] != root {
        root = parent[root];
    }
    let mut cur = x;
    while parent[cur] != root {
        let next = parent[cur];
        parent[cur] = root;
        cur = next;
    }
    root
}

impl TopologyGraph {
    /// Builds the graph from a validated topology.
    pub fn build(topo: &GpuTopology) -> Self {
        let n = topo.gpus.len();
        let devices = n + topo.nics.len();
        let link = |a: usize, b: usize| -> Link {
            match (a < n, b < n) {
                (true, true) => topo.links[a][b],
                (true, false) => topo.nics[b - n].gpu_links[a],
                (false, true) => topo.nics[a - n].gpu_links[b],
                // The model keeps no NIC-to-NIC links.
                (false, false) => Link::Sys,
            }
        };
        let mut graph = UnGraph::new_undirected();
        let gpus: Vec<NodeIndex> = topo.gpus.iter().map(|g| graph.add_node(Vertex::Gpu(g.index))).collect();
        let nics: Vec<NodeIndex> = topo.nics.iter().map(|c| graph.add_node(Vertex::Nic(c.name.clone()))).collect();
        let device_vertex = |d: usize| if d < n { gpus[d] } else { nics[d - n] };

        // Which vertex each device currently hangs from (itself at first).
        let mut attach: Vec<NodeIndex> = (0..devices).map(device_vertex).collect();
        let mut parent: Vec<usize> = (0..devices).collect();
        let mut numa_vertices: Vec<NodeIndex> = Vec::new();
        for (level, (level_link, edge, vertex)) in LEVELS.iter().enumerate() {
            for a in 0..devices {
                for b in a + 1..devices {
                    let same_numa = a < n
                        && b < n
                        && level == LEVELS.len() - 1
                        && topo.gpus[a].numa_node.is_some()
                        && topo.gpus[a].numa_node == topo.gpus[b].numa_node;
                    if rank(link(a, b)) <= rank(*level_link) || same_numa {
                        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                        parent[ra] = rb;
                    }
                }
            }
            let is_numa_level = level == LEVELS.len() - 1;
            let mut component_vertex: Vec<Option<NodeIndex>> = vec![None; devices];
            #[allow(clippy::needless_range_loop)] // `d` also feeds the union-find
            for d in 0..devices {
                let root = find(&mut parent, d);
                let size = (0..devices).filter(|&o| find(&mut parent, o) == root).count();
                // A component of one device that is not a socket adds nothing.
                if size < 2 && !is_numa_level {
                    continue;
                }
                let v = *component_vertex[root].get_or_insert_with(|| {
                    let numa = (0..n).filter(|&g| find(&mut parent, g) == root).find_map(|g| topo.gpus[g].numa_node);
                    let v = graph.add_node(if is_numa_level { Vertex::NumaNode(numa) } else { vertex() });
                    if is_numa_level {
                        numa_vertices.push(v);
                    }
                    v
                });
                if attach[d] != v {
                    if graph.find_edge(attach[d], v).is_none() {
                        graph.add_edge(attach[d], v, *edge);
                    }
                    attach[d] = v;
                }
            }
        }
        for (i, &a) in numa_vertices.iter().enumerate() {
            for &b in &numa_vertices[i + 1..] {
                graph.add_edge(a, b, Edge::Sys);
            }
        }
        Self::add_nvlinks(&mut graph, &gpus, topo);
        Self { graph, gpus, nics }
    }

    /// All-to-all NVLink with one count is an NVSwitch fabric; anything else
    /// (bridges, hybrid cube-mesh) is direct GPU-to-GPU links.
    fn add_nvlinks(graph: &mut UnGraph<Vertex, Edge>, gpus: &[NodeIndex], topo: &GpuTopology) {
        let n = gpus.len();
        let counts: Vec<u8> = (0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .filter_map(|(a, b)| match topo.links[a][b] {
                Link::NvLink(c) => Some(c),
                _ => None,
            })
            .collect();
        let all_to_all = n >= 3 && counts.len() == n * (n - 1) && counts.iter().all(|&c| c == counts[0]);
        if all_to_all {
            let switch = graph.add_node(Vertex::NvSwitch);
            for &g in gpus {
                graph.add_edge(g, switch, Edge::NvSwitch(counts[0]));
            }
            return;
        }
        for a in 0..n {
            for b in a + 1..n {
                if let Link::NvLink(c) = topo.links[a][b] {
                    graph.add_edge(gpus[a], gpus[b], Edge::NvLink(c));
                }
            }
        }
    }

    /// Bandwidth between two devices: over NVLink (direct or one switch) if
    /// there is any, else the slowest PCIe edge on the path between them.
    pub fn bandwidth(&self, a: NodeIndex, b: NodeIndex, table: &LinkBandwidth) -> f64 {
        if a == b {
            return f64::INFINITY;
        }
        let nv = self
            .graph
            .edges(a)
            .filter_map(|e| {
                let other = if e.source() == a { e.target() } else { e.source() };
                match *e.weight() {
                    Edge::NvLink(c) if other == b => Some(table.of(Edge::NvLink(c))),
                    Edge::NvSwitch(c) if self.graph.find_edge(other, b).is_some() => Some(table.of(Edge::NvSwitch(c))),
                    _ => None,
                }
            })
            .fold(0.0, f64::max);
        if nv > 0.0 {
            return nv;
        }
        self.pcie_path_bandwidth(a, b, table)
    }

    /// Breadth-first search over PCIe and SYS edges only; the path's slowest edge.
    fn pcie_path_bandwidth(&self, a: NodeIndex, b: NodeIndex, table: &LinkBandwidth) -> f64 {
        let mut best = vec![None::<f64>; self.graph.node_count()];
        best[a.index()] = Some(f64::INFINITY);
        let mut frontier = vec![a];
        while let Some(v) = frontier.pop() {
            let here = best[v.index()].unwrap_or(0.0);
            for e in self.graph.edges(v) {
                if matches!(e.weight(), Edge::NvLink(_) | Edge::NvSwitch(_)) {
                    continue;
                }
                let other = if e.source() == v { e.target() } else { e.source() };
                let through = here.min(table.of(*e.weight()));
                if best[other.index()].is_none_or(|old| through > old) {
                    best[other.index()] = Some(through);
                    frontier.push(other);
                }
            }
        }
        best[b.index()].unwrap_or(table.sys)
    }

    /// GPU-to-GPU bandwidth matrix in GB/s (diagonal: infinity).
    pub fn bandwidth_matrix(&self, table: &LinkBandwidth) -> Vec<Vec<f64>> {
        self.gpus.iter().map(|&a| self.gpus.iter().map(|&b| self.bandwidth(a, b, table)).collect()).collect()
    }

    /// The NUMA node vertex each GPU hangs under, as a socket number: the
    /// reported NUMA node when known, else the socket's position.
    pub fn gpu_sockets(&self) -> Vec<usize> {
        let sockets: Vec<NodeIndex> =
            self.graph.node_indices().filter(|&v| matches!(self.graph[v], Vertex::NumaNode(_))).collect();
        self.gpus
            .iter()
            .map(|&g| {
                sockets
                    .iter()
                    .position(|&s| self.pcie_reaches_without_sys(g, s))
                    .map(|pos| match self.graph[sockets[pos]] {
                        Vertex::NumaNode(Some(n)) => n as usize,
                        _ => pos,
                    })
                    .unwrap_or(0)
            })
            .collect()
    }

    fn pcie_reaches_without_sys(&self, from: NodeIndex, to: NodeIndex) -> bool {
        let mut seen = vec![false; self.graph.node_count()];
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            if v == to {
                return true;
            }
            if std::mem::replace(&mut seen[v.index()], true) {
                continue;
            }
            for e in self.graph.edges(v) {
                if matches!(e.weight(), Edge::Pix | Edge::Pxb | Edge::Phb | Edge::Node) {
                    stack.push(if e.source() == v { e.target() } else { e.source() });
                }
            }
        }
        false
    }

    /// For each GPU, the index of the NIC with the fastest PCIe path to it.
    pub fn nearest_nics(&self, table: &LinkBandwidth) -> Vec<Option<usize>> {
        self.gpus
            .iter()
            .map(|&g| {
                let mut best: Option<(usize, f64)> = None;
                for (i, &nic) in self.nics.iter().enumerate() {
                    let bw = self.pcie_path_bandwidth(g, nic, table);
                    if best.is_none_or(|(_, b)| bw > b) {
                        best = Some((i, bw));
                    }
                }
                best.map(|(i, _)| i)
            })
            .collect()
    }

    /// Graphviz DOT, for `phalanx explain node NAME --dot`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("graph topology {\n  node [shape=box];\n");
        for v in self.graph.node_indices() {
            let label = match &self.graph[v] {
                Vertex::Gpu(i) => format!("GPU{i}"),
                Vertex::Nic(name) => name.clone(),
                Vertex::NvSwitch => "NVSwitch".into(),
                Vertex::PcieSwitch => "PCIe switch".into(),
                Vertex::PcieComplex => "PCIe switches".into(),
                Vertex::HostBridge => "host bridge".into(),
                Vertex::NumaNode(Some(n)) => format!("NUMA {n}"),
                Vertex::NumaNode(None) => "socket".into(),
            };
            out.push_str(&format!("  v{} [label=\"{label}\"];\n", v.index()));
        }
        for e in self.graph.edge_references() {
            let label = match e.weight() {
                Edge::NvLink(c) => format!("NV{c}"),
                Edge::NvSwitch(c) => format!("NV{c}"),
                other => format!("{other:?}").to_uppercase(),
            };
            out.push_str(&format!("  v{} -- v{} [label=\"{label}\"];\n", e.source().index(), e.target().index()));
        }
        out.push_str("}\n");
        out
    }
}
