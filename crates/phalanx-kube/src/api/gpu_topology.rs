//! `GPUTopology` (phalanx.dev/v1alpha1, cluster-scoped, named after its
//! node): written by the topology agent, read by the scheduler. The spec is
//! how the node's GPUs are wired; the status is which GPUs the kubelet really
//! gave each pod, so the scheduler's view converges to the truth.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use phalanx_core::topology::model::GpuTopology;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phalanx.dev",
    version = "v1alpha1",
    kind = "GPUTopology",
    plural = "gputopologies",
    shortname = "gputopo",
    status = "GpuTopologyStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GpuTopologySpec {
    /// How the topology was found: "nvml", "nvidia-smi" or "file".
    pub source: String,
    #[serde(flatten)]
    pub topology: GpuTopology,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuTopologyStatus {
    /// The GPU devices the kubelet assigned to each pod on the node.
    #[serde(default)]
    pub pod_devices: Vec<PodDevices>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDevices {
    pub namespace: String,
    pub name: String,
    /// Device IDs as the device plugin names them (GPU UUIDs, or indices).
    pub device_ids: Vec<String>,
}
