//! The simulated cluster's nodes: from a fleet file (`e2e/fleets/`, the same
//! machines the end-to-end tests create), or a uniform synthetic fleet for
//! large runs, described in the same fleet format.

use crate::fleet::{API_VERSION, DomainLevel, FleetSpec, KIND, PoolSpec};
use phalanx_core::node::NodeSpec;
use phalanx_kube::translate::{TranslateError, node_spec};

/// N nodes of G GPUs of one product, in racks (NVIDIA topograph's block
/// level) grouped into blocks (its spine level), all in one datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticFleet {
    pub nodes: usize,
    pub gpus_per_node: u32,
    pub rack_size: usize,
    pub block_size: usize,
    pub gpu_product: String,
}

impl SyntheticFleet {
    pub fn spec(&self) -> FleetSpec {
        let level = |labels: &[&str], size: usize, prefix: &str| DomainLevel {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            size: size.max(1),
            prefix: prefix.into(),
        };
        FleetSpec {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            pools: vec![PoolSpec {
                name: "gpu".into(),
                count: self.nodes,
                gpus: self.gpus_per_node,
                gpu_product: Some(self.gpu_product.clone()),
                cpu: "224".into(),
                memory: "2Ti".into(),
                pods: 110,
                labels: Default::default(),
                taints: vec![],
                domains: vec![
                    level(&["nvidia.com/gpu.clique", "network.topology.nvidia.com/accelerator"], 1, "nvl"),
                    level(&["network.topology.nvidia.com/block"], self.rack_size, "rack"),
                    level(&["network.topology.nvidia.com/spine"], self.block_size, "block"),
                    level(&["network.topology.nvidia.com/datacenter"], self.nodes, "dc"),
                ],
            }],
        }
    }
}

/// The fleet's nodes as the scheduler sees them, Ready (as kwok keeps them).
pub fn node_specs(fleet: &FleetSpec) -> Result<Vec<NodeSpec>, TranslateError> {
    fleet.nodes().iter().map(|node| node_spec(node).map(|spec| NodeSpec { ready: true, ..spec })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_core::resources::GPU;

    #[test]
    fn a_synthetic_fleet_labels_racks_and_blocks() {
        let fleet = SyntheticFleet {
            nodes: 10,
            gpus_per_node: 4,
            rack_size: 2,
            block_size: 4,
            gpu_product: "NVIDIA-A100-SXM4-80GB".into(),
        };
        let nodes = node_specs(&fleet.spec()).unwrap();
        assert_eq!(nodes.len(), 10);
        assert!(nodes.iter().all(|n| n.ready && n.allocatable.get(GPU) == 4));
        let label = |i: usize, key: &str| nodes[i].labels.get(key).cloned().unwrap();
        assert_eq!(label(3, "network.topology.nvidia.com/block"), "rack-1");
        assert_eq!(label(3, "network.topology.nvidia.com/spine"), "block-0");
        assert_eq!(label(9, "network.topology.nvidia.com/spine"), "block-2");
    }
}
