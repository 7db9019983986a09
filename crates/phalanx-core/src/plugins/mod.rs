//! The built-in plugins and the names the configuration knows them by.

mod gpu_topology;
mod node_affinity;
mod node_ready;
mod node_resources_fit;
mod node_unschedulable;
mod taint_toleration;
mod topology_domain;

pub use gpu_topology::{GpuTopology, GpuTopologyArgs, MultiGpuOnSharedNodes};
pub use node_affinity::NodeAffinity;
pub use node_ready::NodeReady;
pub use node_resources_fit::{NodeResourcesFit, NodeResourcesFitArgs, ResourceWeight, ScoringStrategy};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{TaintToleration, tolerates};
pub use topology_domain::{TopologyDomain, target_domain};

use super::framework::{FilterPlugin, Profile, ScorePlugin, WeightedScore};
use super::topology::domains::DomainLevels;

/// Filter plugins enabled when the configuration says nothing, in the order they run.
pub const DEFAULT_FILTERS: &[&str] = &[
    NodeUnschedulable::NAME,
    NodeReady::NAME,
    NodeAffinity::NAME,
    TaintToleration::NAME,
    NodeResourcesFit::NAME,
    GpuTopology::NAME,
];

/// Score plugins enabled by default, with their weights (kube-scheduler's).
pub const DEFAULT_SCORES: &[(&str, i64)] = &[
    (NodeResourcesFit::NAME, 1),
    (NodeAffinity::NAME, 2),
    (TaintToleration::NAME, 3),
    (GpuTopology::NAME, 3),
    (TopologyDomain::NAME, 5),
];

pub const QUEUE_SORT_PLUGINS: &[&str] = &["PrioritySort"];

/// Plugin arguments, parsed and validated by the configuration loader.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginArgs {
    pub node_resources_fit: NodeResourcesFitArgs,
    pub multi_gpu_on_shared: MultiGpuOnSharedNodes,
}

/// Arguments that describe the cluster rather than one profile; every
/// profile that sets them must agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedArgs {
    pub gpu_topology: GpuTopologyArgs,
    pub topology_domain: DomainLevels,
}

pub fn filter_plugin(name: &str, args: &PluginArgs) -> Option<Box<dyn FilterPlugin>> {
    Some(match name {
        NodeUnschedulable::NAME => Box::new(NodeUnschedulable),
        NodeReady::NAME => Box::new(NodeReady),
        NodeAffinity::NAME => Box::new(NodeAffinity),
        TaintToleration::NAME => Box::new(TaintToleration),
        NodeResourcesFit::NAME => Box::new(NodeResourcesFit::new(args.node_resources_fit.clone())),
        GpuTopology::NAME => Box::new(GpuTopology { multi_gpu_on_shared: args.multi_gpu_on_shared }),
        _ => return None,
    })
}

pub fn score_plugin(name: &str, args: &PluginArgs) -> Option<Box<dyn ScorePlugin>> {
    Some(match name {
        NodeAffinity::NAME => Box::new(NodeAffinity),
        TaintToleration::NAME => Box::new(TaintToleration),
        NodeResourcesFit::NAME => Box::new(NodeResourcesFit::new(args.node_resources_fit.clone())),
        GpuTopology::NAME => Box::new(GpuTopology::default()),
        TopologyDomain::NAME => Box::new(TopologyDomain),
        _ => return None,
    })
}

/// Builds a profile from plugin names the configuration loader has already
/// checked. An unknown name here is a bug, not bad input.
pub fn build_profile(scheduler_name: &str, filters: &[&str], scores: &[(&str, i64)], args: &PluginArgs) -> Profile {
    Profile {
        scheduler_name: scheduler_name.to_string(),
        filters: filters
            .iter()
            .map(|n| filter_plugin(n, args).unwrap_or_else(|| panic!("unknown filter plugin {n}")))
            .collect(),
        scores: scores
            .iter()
            .map(|(n, weight)| WeightedScore {
                plugin: score_plugin(n, args).unwrap_or_else(|| panic!("unknown score plugin {n}")),
                weight: *weight,
            })
            .collect(),
    }
}

pub fn default_profile(scheduler_name: &str) -> Profile {
    build_profile(scheduler_name, DEFAULT_FILTERS, DEFAULT_SCORES, &PluginArgs::default())
}
