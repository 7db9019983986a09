//! Choosing `k` devices among a node's candidates by how they are wired.
//! Devices that are GPUs of the node's GPUTopology (same `uuid` or PCI bus
//! id) are chosen with the link-graph scoring device-plugin GPUs get; other
//! devices by their `pcieRoot` and `numaNode` attributes (one root beats one
//! NUMA node beats anything).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::device::{AttributeValue, Device, NUMA_NODE, PCI_BUS_ID, PCIE_ROOT};
use crate::topology::gpu_choice::{GpuChoice, GpuMask, NodeGpuModel, better};

/// How good a chosen set is; comparable between sets of the same size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SetQuality {
    /// The link-graph score of the GPUs.
    Linked(GpuChoice),
    /// Same `pcieRoot` (2), same NUMA node (1), or neither (0); then the
    /// smaller group used, so larger groups stay whole.
    Local { level: u8, group: usize },
}

impl SetQuality {
    pub fn better_than(&self, other: &SetQuality) -> bool {
        match (self, other) {
            (SetQuality::Linked(a), SetQuality::Linked(b)) => better(a, b),
            (SetQuality::Local { level: a, group: ga }, SetQuality::Local { level: b, group: gb }) => {
                (a, std::cmp::Reverse(ga)).cmp(&(b, std::cmp::Reverse(gb))) == Ordering::Greater
            }
            // A set scored on the link graph is known to be well wired.
            (SetQuality::Linked(_), SetQuality::Local { .. }) => true,
            (SetQuality::Local { .. }, SetQuality::Linked(_)) => false,
        }
    }
}

/// The position of each device in the node's GPU topology, when it is one of its GPUs.
pub fn gpu_positions(model: &NodeGpuModel, devices: &[&Device]) -> Vec<Option<usize>> {
    devices
        .iter()
        .map(|device| {
            let uuid = device.text_attribute("uuid");
            let bus = device.text_attribute(PCI_BUS_ID).and_then(pci_address);
            model.topology.gpus.iter().position(|gpu| {
                (uuid.is_some() && gpu.uuid.as_deref() == uuid)
                    || (bus.is_some() && gpu.pci_bus_id.as_deref().and_then(pci_address) == bus)
            })
        })
        .collect()
}

/// A PCI address without the formatting differences between tools
/// (`00000000:18:00.0` from nvidia-smi, `0000:18:00.0` from sysfs).
fn pci_address(text: &str) -> Option<(u32, String)> {
    let (domain, rest) = match text.matches(':').count() {
        2 => text.split_once(':')?,
        1 => ("0", text),
        _ => return None,
    };
    Some((u32::from_str_radix(domain, 16).ok()?, rest.to_ascii_lowercase()))
}

/// The best `k` of `candidates` (positions into `candidates`, in their
/// order), or `None` if there are fewer. `free_gpus` are all the node's
/// free GPUs, so that leftovers are judged on the whole node.
pub fn choose_devices(
    candidates: &[&Device],
    k: usize,
    model: Option<&NodeGpuModel>,
    free_gpus: GpuMask,
) -> Option<(Vec<usize>, SetQuality)> {
    if k > candidates.len() {
        return None;
    }
    if let Some(model) = model {
        let positions = gpu_positions(model, candidates);
        if positions.iter().all(Option::is_some) && k > 0 {
            let mask = positions.iter().flatten().fold(0, |m: GpuMask, p| m | (1 << p));
            let pick = model.choose(mask, k)?.gpus;
            let chosen = positions.iter().enumerate().filter(|(_, p)| p.is_some_and(|p| pick & (1 << p) != 0));
            let quality = model.evaluate(free_gpus | mask, pick);
            return Some((chosen.map(|(i, _)| i).collect(), SetQuality::Linked(quality)));
        }
    }
    Some(by_locality(candidates, k))
}

/// The tightest `pcieRoot` group with room for `k`, else the tightest NUMA
/// node, else the first `k`.
fn by_locality(candidates: &[&Device], k: usize) -> (Vec<usize>, SetQuality) {
    for (level, attribute) in [(2, PCIE_ROOT), (1, NUMA_NODE)] {
        let mut groups: BTreeMap<&AttributeValue, Vec<usize>> = BTreeMap::new();
        for (i, device) in candidates.iter().enumerate() {
            if let Some(value) = device.attribute(attribute) {
                groups.entry(value).or_default().push(i);
            }
        }
        if let Some(group) = groups.into_values().filter(|g| g.len() >= k).min_by_key(Vec::len) {
            let size = group.len();
            return (group.into_iter().take(k).collect(), SetQuality::Local { level, group: size });
        }
    }
    ((0..k).collect(), SetQuality::Local { level: 0, group: candidates.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dra::testing::{gpu_device, h100_model};

    #[test]
    fn matches_gpus_by_uuid_or_bus_id() {
        let model = h100_model();
        let mut by_bus = gpu_device("b", 5);
        by_bus.attributes.retain(|name, _| name.name != "uuid");
        let devices = [gpu_device("a", 2), by_bus];
        let refs: Vec<&Device> = devices.iter().collect();
        assert_eq!(gpu_positions(&model, &refs), vec![Some(2), Some(5)]);
    }

    #[test]
    fn prefers_one_pcie_root_then_one_numa_node() {
        // Devices with no GPUTopology: two roots on NUMA 0 (sizes 3 and 2), one on NUMA 1.
        let mut devices: Vec<Device> = (0..7).map(|i| gpu_device(&format!("d{i}"), i)).collect();
        for (device, (root, numa)) in devices.iter_mut().zip([(0, 0), (0, 0), (0, 0), (1, 0), (1, 0), (2, 1), (3, 1)]) {
            crate::dra::testing::place(device, root, numa);
        }
        let refs: Vec<&Device> = devices.iter().collect();
        let (two, quality) = choose_devices(&refs, 2, None, 0).unwrap();
        assert_eq!(two, vec![3, 4], "the root with exactly two left");
        assert_eq!(quality, SetQuality::Local { level: 2, group: 2 });
        let (four, quality) = choose_devices(&refs, 4, None, 0).unwrap();
        assert_eq!(four, vec![0, 1, 2, 3]);
        assert_eq!(quality, SetQuality::Local { level: 1, group: 5 });
        assert!(choose_devices(&refs, 8, None, 0).is_none());
    }
}
