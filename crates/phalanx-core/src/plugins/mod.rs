//! The built-in plugins and the names the configuration knows them by.

mod gpu_topology;
mod inter_pod_affinity;
mod node_affinity;
mod node_ports;
mod node_ready;
mod node_resources_fit;
mod node_unschedulable;
mod node_volume_limits;
mod pod_topology_spread;
mod taint_toleration;
mod topology_domain;
mod volume_binding;
mod volume_restrictions;

pub use gpu_topology::{GpuTopology, GpuTopologyArgs, MultiGpuOnSharedNodes};
pub use inter_pod_affinity::{InterPodAffinity, InterPodAffinityArgs};
pub use node_affinity::{NodeAffinity, term_matches};
pub use node_ports::NodePorts;
pub use node_ready::NodeReady;
pub use node_resources_fit::{NodeResourcesFit, NodeResourcesFitArgs, ResourceWeight, ScoringStrategy};
pub use node_unschedulable::NodeUnschedulable;
pub use node_volume_limits::{MAX_VOLUME_COUNT_EXCEEDED, NodeVolumeLimits};
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::{TaintToleration, tolerates};
pub use topology_domain::{TopologyDomain, target_domain};
pub use volume_binding::VolumeBinding;
pub use volume_restrictions::{READ_WRITE_ONCE_POD_CONFLICT, VolumeRestrictions};

use super::framework::{ClusterFilterPlugin, FilterPlugin, Profile, ScorePlugin, WeightedScore};
use super::spread_defaults::SpreadDefaulting;
use super::topology::domains::DomainLevels;

/// Filter plugins enabled when the configuration says nothing, in the order they run.
pub const DEFAULT_FILTERS: &[&str] = &[
    NodeUnschedulable::NAME,
    NodeReady::NAME,
    NodeAffinity::NAME,
    TaintToleration::NAME,
    NodePorts::NAME,
    NodeResourcesFit::NAME,
    GpuTopology::NAME,
    VolumeRestrictions::NAME,
    NodeVolumeLimits::NAME,
    VolumeBinding::NAME,
    PodTopologySpread::NAME,
    InterPodAffinity::NAME,
];

/// Score plugins enabled by default, with their weights (kube-scheduler's
/// for its plugins). The gang's topology domain is chosen before scoring
/// (`gang_placement`), and within it GpuTopology and TopologyDomain (8 of
/// the 18 weight units) keep GPU placement first; the inter-pod scores
/// rank nodes the topology sees alike.
pub const DEFAULT_SCORES: &[(&str, i64)] = &[
    (NodeResourcesFit::NAME, 1),
    (NodeAffinity::NAME, 2),
    (TaintToleration::NAME, 3),
    (PodTopologySpread::NAME, 2),
    (InterPodAffinity::NAME, 2),
    (GpuTopology::NAME, 3),
    (TopologyDomain::NAME, 5),
];

pub const QUEUE_SORT_PLUGINS: &[&str] = &["PrioritySort"];

/// Plugin arguments, parsed and validated by the configuration loader.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginArgs {
    pub node_resources_fit: NodeResourcesFitArgs,
    pub multi_gpu_on_shared: MultiGpuOnSharedNodes,
    pub inter_pod_affinity: InterPodAffinityArgs,
    /// PodTopologySpread's `defaultingType` and `defaultConstraints`.
    pub spread_defaulting: SpreadDefaulting,
}

/// Arguments that describe the cluster rather than one profile; every
/// profile that sets them must agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedArgs {
    pub gpu_topology: GpuTopologyArgs,
    pub topology_domain: DomainLevels,
}

/// A filter judges one node alone, or reads the pods on other nodes too.
pub enum Filter {
    Node(Box<dyn FilterPlugin>),
    Cluster(Box<dyn ClusterFilterPlugin>),
}

pub fn filter_plugin(name: &str, args: &PluginArgs) -> Option<Filter> {
    Some(match name {
        NodeUnschedulable::NAME => Filter::Node(Box::new(NodeUnschedulable)),
        NodeReady::NAME => Filter::Node(Box::new(NodeReady)),
        NodeAffinity::NAME => Filter::Node(Box::new(NodeAffinity)),
        TaintToleration::NAME => Filter::Node(Box::new(TaintToleration)),
        NodePorts::NAME => Filter::Node(Box::new(NodePorts)),
        NodeResourcesFit::NAME => Filter::Node(Box::new(NodeResourcesFit::new(args.node_resources_fit.clone()))),
        GpuTopology::NAME => Filter::Node(Box::new(GpuTopology { multi_gpu_on_shared: args.multi_gpu_on_shared })),
        VolumeRestrictions::NAME => Filter::Cluster(Box::new(VolumeRestrictions)),
        NodeVolumeLimits::NAME => Filter::Cluster(Box::new(NodeVolumeLimits)),
        VolumeBinding::NAME => Filter::Cluster(Box::new(VolumeBinding)),
        PodTopologySpread::NAME => {
            Filter::Cluster(Box::new(PodTopologySpread { defaulting: args.spread_defaulting.clone() }))
        }
        InterPodAffinity::NAME => Filter::Cluster(Box::new(InterPodAffinity { args: args.inter_pod_affinity.clone() })),
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
        PodTopologySpread::NAME => Box::new(PodTopologySpread { defaulting: args.spread_defaulting.clone() }),
        InterPodAffinity::NAME => Box::new(InterPodAffinity { args: args.inter_pod_affinity.clone() }),
        _ => return None,
    })
}

/// Builds a profile from plugin names the configuration loader has already
/// checked. An unknown name here is a bug, not bad input.
pub fn build_profile(scheduler_name: &str, filters: &[&str], scores: &[(&str, i64)], args: &PluginArgs) -> Profile {
    let mut profile = Profile {
        scheduler_name: scheduler_name.to_string(),
        filters: Vec::new(),
        cluster_filters: Vec::new(),
        scores: scores
            .iter()
            .map(|(n, weight)| WeightedScore {
                plugin: score_plugin(n, args).unwrap_or_else(|| panic!("unknown score plugin {n}")),
                weight: *weight,
            })
            .collect(),
    };
    for name in filters {
        match filter_plugin(name, args).unwrap_or_else(|| panic!("unknown filter plugin {name}")) {
            Filter::Node(plugin) => profile.filters.push(plugin),
            Filter::Cluster(plugin) => profile.cluster_filters.push(plugin),
        }
    }
    profile
}

pub fn default_profile(scheduler_name: &str) -> Profile {
    build_profile(scheduler_name, DEFAULT_FILTERS, DEFAULT_SCORES, &PluginArgs::default())
}
