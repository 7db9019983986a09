//! Topology across nodes: an ordered list of node-label levels, narrowest
//! first (NVLink domain, rack, block, zone), forming a tree of domains.
//!
//! A node's domain at a level is named by its label values from that level
//! up to the widest, so "rack-1" under two different blocks is two domains,
//! and a node without the label at some level simply belongs to no domain
//! there (it still belongs to the wider ones and to the cluster).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologyLevel {
    /// Short name for messages ("rack").
    pub name: String,
    /// Node labels naming the domain at this level; the first one present wins
    /// (so `nvidia.com/gpu.clique` can stand in for the topograph label).
    pub labels: Vec<String>,
    /// Bandwidth between two nodes whose narrowest shared domain is this level (GB/s).
    #[serde(rename = "bandwidthGBps")]
    pub bandwidth_gbps: f64,
}

/// Levels, narrowest first, plus the bandwidth between nodes sharing none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DomainLevels {
    pub levels: Vec<TopologyLevel>,
    #[serde(rename = "clusterBandwidthGBps")]
    pub cluster_bandwidth_gbps: f64,
}

impl Default for DomainLevels {
    /// NVIDIA topograph's labels; bandwidths from the fixtures' calibration
    /// (NVLink domain; 4x200 Gb InfiniBand within a leaf block, less further out).
    fn default() -> Self {
        let level = |name: &str, labels: &[&str], bw: f64| TopologyLevel {
            name: name.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            bandwidth_gbps: bw,
        };
        Self {
            levels: vec![
                level("nvlink-domain", &["network.topology.nvidia.com/accelerator", "nvidia.com/gpu.clique"], 400.0),
                level("block", &["network.topology.nvidia.com/block"], 90.0),
                level("spine", &["network.topology.nvidia.com/spine"], 45.0),
                level("datacenter", &["network.topology.nvidia.com/datacenter"], 20.0),
            ],
            cluster_bandwidth_gbps: 10.0,
        }
    }
}

/// A domain id, unique across levels.
pub type DomainId = u32;

/// A node's domain at each level, narrowest first (`None` where it has no
/// label). Inline for the usual four levels: every decision reads it for
/// every feasible node.
pub type NodeDomains = SmallVec<[Option<DomainId>; 4]>;

/// Interns domain names; ids are stable for the life of the scheduler.
#[derive(Debug, Default)]
pub struct DomainIndex {
    ids: BTreeMap<(usize, String), DomainId>,
    names: Vec<(usize, String)>,
}

impl DomainLevels {
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The value of a level for a node with these labels.
    fn value<'a>(&self, level: usize, labels: &'a BTreeMap<String, String>) -> Option<&'a str> {
        self.levels[level].labels.iter().find_map(|l| labels.get(l)).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The node's domain at each level (`None` where it has no label).
    pub fn domains_of(&self, labels: &BTreeMap<String, String>, index: &mut DomainIndex) -> NodeDomains {
        (0..self.levels.len())
            .map(|level| {
                self.value(level, labels)?;
                let path: Vec<&str> = (level..self.levels.len()).map(|l| self.value(l, labels).unwrap_or("")).collect();
                Some(index.intern(level, path.join("/")))
            })
            .collect()
    }

    /// The narrowest configured level two nodes share (`None`: only the
    /// cluster). Levels past `self.len()` (a gang's required label) are
    /// not configured and carry no bandwidth.
    pub fn shared_level(&self, a: &[Option<DomainId>], b: &[Option<DomainId>]) -> Option<usize> {
        a.iter().zip(b).take(self.len()).position(|(x, y)| x.is_some() && x == y)
    }

    /// Bandwidth between two nodes with these domains; `same_node` is unbounded.
    pub fn bandwidth(&self, a: &[Option<DomainId>], b: &[Option<DomainId>]) -> f64 {
        match self.shared_level(a, b) {
            Some(level) => self.levels[level].bandwidth_gbps,
            None => self.cluster_bandwidth_gbps,
        }
    }
}

impl DomainIndex {
    pub(crate) fn intern(&mut self, level: usize, path: String) -> DomainId {
        if let Some(id) = self.ids.get(&(level, path.clone())) {
            return *id;
        }
        let id = self.names.len() as DomainId;
        self.names.push((level, path.clone()));
        self.ids.insert((level, path), id);
        id
    }

    /// How many domains there are: ids run from 0 to this, less one.
    pub fn domain_count(&self) -> usize {
        self.names.len()
    }

    /// "rack-1 (block-0/zone-a)": the domain's own value and what it sits in.
    pub fn describe(&self, id: DomainId) -> String {
        match self.names.get(id as usize) {
            Some((_, path)) => {
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let own = parts.next().unwrap_or_default();
                let within: Vec<&str> = parts.collect();
                if within.is_empty() { own.to_string() } else { format!("{own} ({})", within.join("/")) }
            }
            None => format!("domain {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BLOCK: &str = "network.topology.nvidia.com/block";
    const SPINE: &str = "network.topology.nvidia.com/spine";

    #[test]
    fn distance_is_the_narrowest_shared_level() {
        let levels = DomainLevels::default();
        let mut index = DomainIndex::default();
        let a = levels.domains_of(&labels(&[(BLOCK, "rack-0"), (SPINE, "s0")]), &mut index);
        let b = levels.domains_of(&labels(&[(BLOCK, "rack-0"), (SPINE, "s0")]), &mut index);
        let c = levels.domains_of(&labels(&[(BLOCK, "rack-1"), (SPINE, "s0")]), &mut index);
        let d = levels.domains_of(&labels(&[(BLOCK, "rack-1"), (SPINE, "s1")]), &mut index);
        assert_eq!(levels.shared_level(&a, &b), Some(1));
        assert_eq!(levels.shared_level(&a, &c), Some(2));
        assert_eq!(levels.shared_level(&c, &d), None, "same rack name under another spine");
        assert_eq!(levels.bandwidth(&a, &c), 45.0);
        assert_eq!(levels.bandwidth(&c, &d), 10.0);
    }

    /// Contradictory labels (one NVLink domain claimed by nodes of two
    /// blocks, one block under two spines): the tree wins, each claim is a
    /// domain of its own, so no placement counts on a link that cannot exist.
    #[test]
    fn a_domain_claimed_under_two_parents_is_two_domains() {
        const NVLINK: &str = "network.topology.nvidia.com/accelerator";
        let levels = DomainLevels::default();
        let mut index = DomainIndex::default();
        let a = levels.domains_of(&labels(&[(NVLINK, "nvl-0"), (BLOCK, "b0"), (SPINE, "s0")]), &mut index);
        let b = levels.domains_of(&labels(&[(NVLINK, "nvl-0"), (BLOCK, "b1"), (SPINE, "s0")]), &mut index);
        let c = levels.domains_of(&labels(&[(NVLINK, "nvl-0"), (BLOCK, "b1"), (SPINE, "s1")]), &mut index);
        assert_ne!(a[0], b[0]);
        assert_eq!(levels.shared_level(&a, &b), Some(2), "only the spine is shared");
        assert_eq!(levels.shared_level(&b, &c), None, "b1 under s0 and b1 under s1 share nothing");
        assert_eq!(index.describe(b[0].unwrap()), "nvl-0 (b1/s0)");
    }

    #[test]
    fn missing_labels_keep_the_node_in_wider_domains() {
        let levels = DomainLevels::default();
        let mut index = DomainIndex::default();
        let unlabelled_rack = levels.domains_of(&labels(&[(SPINE, "s0")]), &mut index);
        let racked = levels.domains_of(&labels(&[(BLOCK, "rack-0"), (SPINE, "s0")]), &mut index);
        assert_eq!(unlabelled_rack[1], None);
        assert_eq!(levels.shared_level(&unlabelled_rack, &racked), Some(2));
        let alias = levels.domains_of(&labels(&[("nvidia.com/gpu.clique", "c1")]), &mut index);
        assert!(alias[0].is_some(), "the clique label stands in for the accelerator label");
        assert_eq!(index.describe(racked[1].unwrap()), "rack-0 (s0)");
    }
}
