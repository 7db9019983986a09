//! What the fake GPU device plugin decides, without I/O: the device list the
//! kubelet gets, which available GPUs it should prefer for a container
//! (phalanx's own GPU choice, the link-graph scoring the scheduler uses),
//! and what a container is given for its GPUs.

use std::collections::HashMap;

use thiserror::Error;

use super::api::{
    ContainerAllocateResponse, ContainerPreferredAllocationRequest, Device, HEALTHY, NumaNode, TopologyInfo,
};
use phalanx_core::topology::gpu_choice::{GpuMask, NodeGpuModel};
use phalanx_core::topology::graph::LinkBandwidth;
use phalanx_core::topology::model::GpuTopology;

/// The environment variable the NVIDIA container runtime reads: which GPUs
/// (by UUID) the container sees.
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";

/// The host's indices of the container's GPUs, in the order of
/// `NVIDIA_VISIBLE_DEVICES` (what `phalanx.dev/gpus` records).
pub const GPU_INDICES_ENV: &str = "PHALANX_GPU_INDICES";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocationError {
    #[error("GPU {position} (index {index}) has no UUID")]
    MissingUuid { position: usize, index: u32 },
    #[error("{field}: {id:?} is not a GPU of this node")]
    UnknownDevice { field: &'static str, id: String },
    #[error("allocation_size {size} with {must_include} must-include and {available} available devices")]
    Impossible { size: i32, must_include: usize, available: usize },
}

/// A node's GPUs as the device plugin offers them: device id (the GPU's
/// UUID) per position of the topology.
#[derive(Debug)]
pub struct NodeGpus {
    model: NodeGpuModel,
    ids: Vec<String>,
}

impl NodeGpus {
    /// Every GPU must carry a UUID: it is the device id the kubelet hands out.
    pub fn new(topology: GpuTopology, bandwidth: &LinkBandwidth) -> Result<Self, AllocationError> {
        let ids = topology
            .gpus
            .iter()
            .enumerate()
            .map(|(position, g)| g.uuid.clone().ok_or(AllocationError::MissingUuid { position, index: g.index }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { model: NodeGpuModel::new(topology, bandwidth), ids })
    }

    pub fn count(&self) -> usize {
        self.ids.len()
    }

    /// The ListAndWatch list: every GPU healthy, on its NUMA node when known.
    pub fn devices(&self) -> Vec<Device> {
        self.model
            .topology
            .gpus
            .iter()
            .zip(&self.ids)
            .map(|(gpu, id)| Device {
                id: id.clone(),
                health: HEALTHY.to_string(),
                topology: gpu.numa_node.map(|n| TopologyInfo { nodes: vec![NumaNode { id: i64::from(n) }] }),
            })
            .collect()
    }

    /// The best-connected `allocation_size` GPUs among the available ones,
    /// including the must-include ones, as device ids in GPU order.
    pub fn preferred(&self, request: &ContainerPreferredAllocationRequest) -> Result<Vec<String>, AllocationError> {
        let available = self.mask_of("available_deviceIDs", &request.available_device_ids)?;
        let required = self.mask_of("must_include_deviceIDs", &request.must_include_device_ids)?;
        let impossible = || AllocationError::Impossible {
            size: request.allocation_size,
            must_include: request.must_include_device_ids.len(),
            available: request.available_device_ids.len(),
        };
        let size = usize::try_from(request.allocation_size).map_err(|_| impossible())?;
        let choice = self.model.choose_including(available | required, required, size).ok_or_else(impossible)?;
        Ok(self.ids_of(choice.gpus))
    }

    /// What a container holding these GPUs gets: their UUIDs for the NVIDIA
    /// runtime and their host indices.
    pub fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, AllocationError> {
        let positions = ids.iter().map(|id| self.position("devices_ids", id)).collect::<Result<Vec<_>, _>>()?;
        let indices: Vec<String> = positions.iter().map(|&p| self.model.topology.gpus[p].index.to_string()).collect();
        let envs = HashMap::from([
            (VISIBLE_DEVICES_ENV.to_string(), ids.join(",")),
            (GPU_INDICES_ENV.to_string(), indices.join(",")),
        ]);
        Ok(ContainerAllocateResponse { envs, annotations: HashMap::new() })
    }

    fn position(&self, field: &'static str, id: &str) -> Result<usize, AllocationError> {
        self.ids
            .iter()
            .position(|known| known == id)
            .ok_or_else(|| AllocationError::UnknownDevice { field, id: id.to_string() })
    }

    fn mask_of(&self, field: &'static str, ids: &[String]) -> Result<GpuMask, AllocationError> {
        ids.iter().try_fold(0, |mask, id| Ok(mask | 1 << self.position(field, id)?))
    }

    fn ids_of(&self, mask: GpuMask) -> Vec<String> {
        (0..self.ids.len()).filter(|p| mask >> p & 1 == 1).map(|p| self.ids[p].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::discovery::read_topology_file;

    fn fixture(name: &str) -> NodeGpus {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvidia-smi-topo").join(name);
        NodeGpus::new(read_topology_file(&path, "worker").unwrap(), &LinkBandwidth::default()).unwrap()
    }

    fn ids(gpus: &NodeGpus, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&i| gpus.ids[i].clone()).collect()
    }

    fn request(available: Vec<String>, must_include: Vec<String>, size: i32) -> ContainerPreferredAllocationRequest {
        ContainerPreferredAllocationRequest {
            available_device_ids: available,
            must_include_device_ids: must_include,
            allocation_size: size,
        }
    }

    #[test]
    fn the_device_list_names_every_gpu_by_uuid_with_its_numa_node() {
        let gpus = fixture("pcie-8x-rtx4090-two-sockets.txt");
        let devices = gpus.devices();
        assert_eq!(devices.len(), 8);
        assert_eq!(devices[5].id, crate::agent::discovery::fixture_gpu_uuid("worker", 5));
        assert!(devices.iter().all(|d| d.health == HEALTHY));
        let numa: Vec<i64> = devices.iter().map(|d| d.topology.as_ref().unwrap().nodes[0].id).collect();
        assert_eq!(numa, [0, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn four_on_the_pcie_box_stay_on_one_socket() {
        let gpus = fixture("pcie-8x-rtx4090-two-sockets.txt");
        // GPU 0 is taken: the kubelet's own order would give 1-4, across sockets.
        let available = ids(&gpus, &[1, 2, 3, 4, 5, 6, 7]);
        let chosen = gpus.preferred(&request(available, vec![], 4)).unwrap();
        assert_eq!(chosen, ids(&gpus, &[4, 5, 6, 7]));
    }

    #[test]
    fn a_pair_takes_an_nvlink_bridge_and_a_must_include_gpu_its_partner() {
        let gpus = fixture("pcie-a100-nvlink-bridge-pairs.txt");
        // Free: loose 0, the intact bridge 2-3, loose 4 and 6.
        let available = ids(&gpus, &[0, 2, 3, 4, 6]);
        assert_eq!(gpus.preferred(&request(available, vec![], 2)).unwrap(), ids(&gpus, &[2, 3]));
        // A container already holding GPU 7 that needs two gets its bridge partner 6.
        let available = ids(&gpus, &[0, 2, 3, 6, 7]);
        let chosen = gpus.preferred(&request(available, ids(&gpus, &[7]), 2)).unwrap();
        assert_eq!(chosen, ids(&gpus, &[6, 7]));
        // A single GPU does not break the free bridge.
        let chosen = gpus.preferred(&request(ids(&gpus, &[0, 2, 3]), vec![], 1)).unwrap();
        assert_eq!(chosen, ids(&gpus, &[0]));
    }

    #[test]
    fn impossible_requests_and_unknown_ids_are_errors() {
        let gpus = fixture("pcie-a100-nvlink-bridge-pairs.txt");
        let err = gpus.preferred(&request(ids(&gpus, &[0, 1]), vec![], 3)).unwrap_err();
        assert!(matches!(err, AllocationError::Impossible { size: 3, available: 2, .. }), "{err}");
        let err = gpus.preferred(&request(vec!["GPU-nope".into()], vec![], 1)).unwrap_err();
        assert_eq!(err.to_string(), "available_deviceIDs: \"GPU-nope\" is not a GPU of this node");
        assert!(gpus.preferred(&request(ids(&gpus, &[0]), vec![], -1)).is_err());
        assert!(gpus.allocate(&["GPU-nope".into()]).is_err());
    }

    #[test]
    fn a_container_sees_its_gpus_by_uuid_and_index() {
        let gpus = fixture("hgx-h100-nvswitch.txt");
        let response = gpus.allocate(&ids(&gpus, &[6, 2])).unwrap();
        assert_eq!(response.envs[VISIBLE_DEVICES_ENV], ids(&gpus, &[6, 2]).join(","));
        assert_eq!(response.envs[GPU_INDICES_ENV], "6,2");
    }

    #[test]
    fn a_topology_without_uuids_is_refused() {
        let topology = phalanx_core::topology::templates::nvswitch(2, 18, "H100");
        let err = NodeGpus::new(topology, &LinkBandwidth::default()).unwrap_err();
        assert_eq!(err, AllocationError::MissingUuid { position: 0, index: 0 });
    }
}
