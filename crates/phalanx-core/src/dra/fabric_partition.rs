//! NVIDIA Fabric Manager partitions. On NVSwitch systems whose Fabric
//! Manager runs in shared-NVSwitch mode, NVIDIA's DRA driver publishes for
//! each full (or passthrough) GPU one `gpu.nvidia.com/partition<N>`
//! attribute per partition size N that holds it, valued with the
//! partition's id. At prepare time the driver activates the partition whose
//! members are exactly the claim's GPUs, and refuses the claim if none is:
//! so the GPUs a claim gets must be the whole of one partition.

use std::collections::BTreeMap;

use super::device::{AttributeValue, Device};

const DRIVER: &str = "gpu.nvidia.com";
const PARTITION: &str = "partition";

/// A full or passthrough GPU whose node publishes partitions. Asked of
/// every candidate device of every node a claim is tried on: the common
/// answer (no partition attribute) is found in one pass.
pub fn is_partitioned_gpu(device: &Device) -> bool {
    device.id.driver == DRIVER
        && device.attributes.keys().any(|k| {
            k.domain == DRIVER && k.name.strip_prefix(PARTITION).is_some_and(|size| size.parse::<u32>().is_ok())
        })
        && matches!(device.text_attribute("type"), Some("gpu" | "vfio"))
}

/// The id of the partition of `size` GPUs that holds the device.
fn partition_of(device: &Device, size: usize) -> Option<&AttributeValue> {
    device.attribute(&format!("{DRIVER}/{PARTITION}{size}"))
}

/// Whether a claim's devices keep the rule: its partitioned GPUs are none,
/// or all of one partition of their number.
pub fn forms_one_partition<'a>(devices: impl IntoIterator<Item = &'a Device>) -> bool {
    let gpus: Vec<&Device> = devices.into_iter().filter(|d| is_partitioned_gpu(d)).collect();
    let Some(first) = gpus.first() else { return true };
    let Some(partition) = partition_of(first, gpus.len()) else { return false };
    gpus.iter().all(|d| partition_of(d, gpus.len()) == Some(partition))
}

/// Splits a group of candidate devices into the partitions of `size` GPUs
/// they belong to, where the group is partitioned GPUs; other groups stay
/// whole. Used where one request takes all of a claim's GPUs, so that each
/// option the topology choice weighs is a whole partition.
pub fn split_by_partition<'a>(group: Vec<&'a Device>, size: usize) -> Vec<Vec<&'a Device>> {
    if group.is_empty() || !group.iter().all(|d| is_partitioned_gpu(d)) {
        return vec![group];
    }
    let mut partitions: BTreeMap<&AttributeValue, Vec<&'a Device>> = BTreeMap::new();
    for device in group {
        if let Some(partition) = partition_of(device, size) {
            partitions.entry(partition).or_default().push(device);
        }
    }
    partitions.into_values().collect()
}
