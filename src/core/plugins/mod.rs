//! The built-in plugins and the names the configuration knows them by.

mod node_affinity;
mod node_ready;
mod node_resources_fit;
mod node_unschedulable;
mod taint_toleration;

pub use node_affinity::NodeAffinity;
pub use node_ready::NodeReady;
pub use node_resources_fit::{
    NodeResourcesFit, NodeResourcesFitArgs, ResourceWeight, ScoringStrategy,
};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{TaintToleration, tolerates};

use super::framework::{FilterPlugin, Profile, ScorePlugin, WeightedScore};

/// Filter plugins enabled when the configuration says nothing, in the order they run.
pub const DEFAULT_FILTERS: &[&str] = &[
    NodeUnschedulable::NAME,
    NodeReady::NAME,
    NodeAffinity::NAME,
    TaintToleration::NAME,
    NodeResourcesFit::NAME,
];

/// Score plugins enabled by default, with their weights (kube-scheduler's).
pub const DEFAULT_SCORES: &[(&str, i64)] = &[
    (NodeResourcesFit::NAME, 1),
    (NodeAffinity::NAME, 2),
    (TaintToleration::NAME, 3),
];

pub const QUEUE_SORT_PLUGINS: &[&str] = &["PrioritySort"];

/// Plugin arguments, parsed and validated by the configuration loader.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginArgs {
    pub node_resources_fit: NodeResourcesFitArgs,
}

pub fn filter_plugin(name: &str, args: &PluginArgs) -> Option<Box<dyn FilterPlugin>> {
    Some(match name {
        NodeUnschedulable::NAME => Box::new(NodeUnschedulable),
        NodeReady::NAME => Box::new(NodeReady),
        NodeAffinity::NAME => Box::new(NodeAffinity),
        TaintToleration::NAME => Box::new(TaintToleration),
        NodeResourcesFit::NAME => Box::new(NodeResourcesFit::new(args.node_resources_fit.clone())),
        _ => return None,
    })
}

pub fn score_plugin(name: &str, args: &PluginArgs) -> Option<Box<dyn ScorePlugin>> {
    Some(match name {
        NodeAffinity::NAME => Box::new(NodeAffinity),
        TaintToleration::NAME => Box::new(TaintToleration),
        NodeResourcesFit::NAME => Box::new(NodeResourcesFit::new(args.node_resources_fit.clone())),
        _ => return None,
    })
}

/// Builds a profile from plugin names the configuration loader has already
/// checked. An unknown name here is a bug, not bad input.
pub fn build_profile(
    scheduler_name: &str,
    filters: &[&str],
    scores: &[(&str, i64)],
    args: &PluginArgs,
) -> Profile {
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
    build_profile(
        scheduler_name,
        DEFAULT_FILTERS,
        DEFAULT_SCORES,
        &PluginArgs::default(),
    )
}
