//! Built-in topologies for nodes that have no GPUTopology resource (no agent
//! yet), chosen by the GPU Feature Discovery labels `nvidia.com/gpu.product`
//! and `nvidia.com/gpu.count`.

use super::model::{GpuDevice, GpuTopology, Link};

/// The template for a node's labels, or "all GPUs on one PCIe host bridge"
/// when nothing more specific is known.
pub fn for_labels(product: Option<&str>, count: usize) -> GpuTopology {
    let product = product.unwrap_or_default().to_ascii_uppercase();
    let sxm_nvswitch = count == 8
        && (product.contains("H100")
            || product.contains("H200")
            || product.contains("B200")
            || product.contains("A100"))
        && !product.contains("PCIE");
    if sxm_nvswitch {
        // HGX/DGX H100 and H200 have 18 NVLinks per GPU, A100 12, all through NVSwitch.
        let links = if product.contains("A100") { 12 } else { 18 };
        return nvswitch(count, links, &product);
    }
    if count == 8 {
        return pcie_two_sockets(count, &product);
    }
    one_host_bridge(count, &product)
}

fn devices(count: usize, product: &str, numa: impl Fn(usize) -> Option<u32>) -> Vec<GpuDevice> {
    (0..count)
        .map(|i| GpuDevice {
            index: i as u32,
            numa_node: numa(i),
            model: (!product.is_empty()).then(|| product.to_string()),
            ..Default::default()
        })
        .collect()
}

fn matrix(count: usize, link: impl Fn(usize, usize) -> Link) -> Vec<Vec<Link>> {
    (0..count).map(|a| (0..count).map(|b| if a == b { Link::Own } else { link(a, b) }).collect()).collect()
}

/// Every GPU reaches every other over `links` NVLinks through NVSwitch;
/// half the GPUs on each of two sockets.
pub fn nvswitch(count: usize, links: u8, product: &str) -> GpuTopology {
    let half = count.div_ceil(2).max(1);
    GpuTopology {
        gpus: devices(count, product, |i| Some((i / half) as u32)),
        links: matrix(count, |_, _| Link::NvLink(links)),
        nics: vec![],
    }
}

/// PCIe only: groups of four GPUs behind one switch per socket, SYS across.
pub fn pcie_two_sockets(count: usize, product: &str) -> GpuTopology {
    let half = count.div_ceil(2).max(1);
    GpuTopology {
        gpus: devices(count, product, |i| Some((i / half) as u32)),
        links: matrix(count, |a, b| if a / half == b / half { Link::Pix } else { Link::Sys }),
        nics: vec![],
    }
}

pub fn one_host_bridge(count: usize, product: &str) -> GpuTopology {
    GpuTopology { gpus: devices(count, product, |_| Some(0)), links: matrix(count, |_, _| Link::Phb), nics: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_follow_the_labels_and_are_valid() {
        let h100 = for_labels(Some("NVIDIA-H100-80GB-HBM3"), 8);
        assert_eq!(h100.links[0][7], Link::NvLink(18));
        let a100 = for_labels(Some("NVIDIA-A100-SXM4-80GB"), 8);
        assert_eq!(a100.links[1][2], Link::NvLink(12));
        let rtx = for_labels(Some("NVIDIA-GeForce-RTX-4090"), 8);
        assert_eq!((rtx.links[0][3], rtx.links[3][4]), (Link::Pix, Link::Sys));
        let pcie_a100 = for_labels(Some("NVIDIA-A100-PCIE-40GB"), 8);
        assert_eq!(pcie_a100.links[0][1], Link::Pix);
        let unknown = for_labels(None, 4);
        assert_eq!(unknown.links[0][3], Link::Phb);
        for t in [h100, a100, rtx, pcie_a100, unknown] {
            t.validate().unwrap();
        }
    }
}
