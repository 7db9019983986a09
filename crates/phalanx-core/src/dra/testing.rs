//! Builders for DRA unit tests and benchmarks: GPUs as NVIDIA's DRA driver
//! publishes them, and a topology they belong to.

use std::collections::BTreeMap;

use super::claim::{AllocationMode, ClaimKey, DeviceClaim, DeviceRequest, DeviceSelection, RequestKind};
use super::device::{AttributeValue, Device, DeviceId, QualifiedName};
use crate::topology::gpu_choice::NodeGpuModel;
use crate::topology::graph::LinkBandwidth;
use crate::topology::model::{GpuDevice, GpuTopology, Link};

pub const GPU_DRIVER: &str = "gpu.nvidia.com";

fn qualified(text: &str) -> QualifiedName {
    QualifiedName::parse(text, GPU_DRIVER)
}

/// GPU `index` of pool "node", wired as in `h100_like_topology` (NUMA node
/// and PCIe root by halves).
pub fn gpu_device(name: &str, index: u32) -> Device {
    let mut device = Device {
        id: DeviceId { driver: GPU_DRIVER.into(), pool: "node".into(), device: name.into() },
        attributes: BTreeMap::from([
            (qualified("uuid"), AttributeValue::String(format!("GPU-{index}"))),
            (qualified("productName"), AttributeValue::String("NVIDIA H100 80GB HBM3".into())),
            (qualified("type"), AttributeValue::String("gpu".into())),
            (qualified("driverVersion"), AttributeValue::Version("580.65.6".into())),
            (
                qualified("resource.kubernetes.io/pciBusID"),
                AttributeValue::String(format!("0000:{:02x}:00.0", 0x18 + index)),
            ),
        ]),
        capacity: BTreeMap::from([(qualified("memory"), 80 << 30)]),
    };
    place(&mut device, index / 4, index / 4);
    device
}

/// Sets a device's `pcieRoot` and `numaNode` attributes.
pub fn place(device: &mut Device, root: u32, numa: u32) {
    device
        .attributes
        .insert(qualified("resource.kubernetes.io/pcieRoot"), AttributeValue::String(format!("pci0000:{root:02x}")));
    device.attributes.insert(qualified("resource.kubernetes.io/numaNode"), AttributeValue::Int(numa.into()));
}

/// Eight GPUs in NVLink pairs (0-1, 2-3, ...), PCIe within a socket of four, SYS across.
pub fn h100_like_topology() -> GpuTopology {
    let link = |a: usize, b: usize| match (a == b, a / 2 == b / 2, a / 4 == b / 4) {
        (true, _, _) => Link::Own,
        (_, true, _) => Link::NvLink(12),
        (_, _, true) => Link::Node,
        _ => Link::Sys,
    };
    GpuTopology {
        gpus: (0..8u32)
            .map(|i| GpuDevice {
                index: i,
                uuid: Some(format!("GPU-{i}")),
                // As nvidia-smi writes bus ids.
                pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x18 + i)),
                numa_node: Some(i / 4),
                ..Default::default()
            })
            .collect(),
        links: (0..8).map(|a| (0..8).map(|b| link(a, b)).collect()).collect(),
        nics: vec![],
    }
}

pub fn h100_model() -> NodeGpuModel {
    NodeGpuModel::new(h100_like_topology(), &LinkBandwidth::default())
}

/// A claim with one request for `count` devices of `class`.
pub fn gpu_claim(name: &str, class: &str, count: u32) -> DeviceClaim {
    DeviceClaim {
        key: ClaimKey { namespace: "default".into(), name: name.into() },
        uid: format!("uid-{name}"),
        resource_version: Some("1".into()),
        requests: vec![DeviceRequest {
            name: "gpus".into(),
            kind: RequestKind::Exactly(DeviceSelection {
                device_class: class.into(),
                selectors: vec![],
                mode: AllocationMode::ExactCount(count),
            }),
        }],
        constraints: vec![],
        allocation: None,
        reserved_for: vec![],
        finalizers: vec![],
        config: vec![],
    }
}
