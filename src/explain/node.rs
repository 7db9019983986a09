//! `phalanx explain node/NAME`: how a node's GPUs are wired, what phalanx
//! models them at, and which pod holds which GPU.

use std::fmt::Write;

use phalanx_core::pod::PodKey;
use phalanx_core::topology::gpu_choice::NodeGpuModel;

/// A pod on the node, with the GPU indices recorded on it (if any).
pub struct PodGpus {
    pub key: PodKey,
    pub gpus: usize,
    pub indices: Option<Vec<u32>>,
}

pub struct NodeReport<'a> {
    pub node: &'a str,
    pub product: Option<&'a str>,
    /// Where the topology came from: "GPUTopology (nvml)", "template for ...".
    pub source: String,
    /// "block=rack-0, spine=block-1", or empty.
    pub domains: String,
    pub model: &'a NodeGpuModel,
    pub pods: Vec<PodGpus>,
}

fn table(out: &mut String, header: &[String], rows: &[(String, Vec<String>)]) {
    let width = rows
        .iter()
        .flat_map(|(l, cells)| std::iter::once(l.len()).chain(cells.iter().map(String::len)))
        .chain(header.iter().map(String::len))
        .max()
        .unwrap_or(4)
        + 2;
    let _ = write!(out, "{:width$}", "");
    for h in header {
        let _ = write!(out, "{h:width$}");
    }
    out.push('\n');
    for (label, cells) in rows {
        let _ = write!(out, "{label:width$}");
        for c in cells {
            let _ = write!(out, "{c:width$}");
        }
        out.push('\n');
    }
}

pub fn render_node(report: &NodeReport<'_>) -> String {
    let model = report.model;
    let topo = &model.topology;
    let n = topo.gpus.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Node {}: {} GPUs{}; topology from {}",
        report.node,
        n,
        report.product.map(|p| format!(" ({p})")).unwrap_or_default(),
        report.source
    );
    if !report.domains.is_empty() {
        let _ = writeln!(out, "Domains: {}", report.domains);
    }
    let names: Vec<String> = topo.gpus.iter().map(|g| format!("GPU{}", g.index)).collect();
    out.push_str("\nLinks (nvidia-smi topo -m notation):\n");
    let rows: Vec<(String, Vec<String>)> =
        (0..n).map(|i| (names[i].clone(), topo.links[i].iter().map(|l| l.to_string()).collect())).collect();
    table(&mut out, &names, &rows);
    out.push_str("\nModelled bandwidth (GB/s per direction):\n");
    let rows: Vec<(String, Vec<String>)> = (0..n)
        .map(|i| {
            let cells =
                (0..n).map(|j| if i == j { "-".into() } else { format!("{:.0}", model.bandwidth[i][j]) }).collect();
            (names[i].clone(), cells)
        })
        .collect();
    table(&mut out, &names, &rows);

    out.push_str("\nGPU    socket  nearest NIC  held by\n");
    for (p, gpu) in topo.gpus.iter().enumerate() {
        let nic = model.nearest_nic[p].and_then(|i| topo.nics.get(i)).map_or("-", |nic| nic.name.as_str());
        let holders: Vec<String> = report
            .pods
            .iter()
            .filter(|pod| pod.indices.as_ref().is_some_and(|idx| idx.contains(&gpu.index)))
            .map(|pod| pod.key.to_string())
            .collect();
        let held = if holders.is_empty() { "(free)".to_string() } else { holders.join(", ") };
        let _ = writeln!(out, "GPU{:<3} {:<7} {:<12} {}", gpu.index, model.socket[p], nic, held);
    }
    let unrecorded: Vec<String> = report
        .pods
        .iter()
        .filter(|p| p.indices.is_none() && p.gpus > 0)
        .map(|p| format!("{} ({} GPUs)", p.key, p.gpus))
        .collect();
    if !unrecorded.is_empty() {
        let _ = writeln!(
            out,
            "\nPods holding GPUs phalanx did not choose (no phalanx.dev/gpus): {}",
            unrecorded.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_core::topology::graph::LinkBandwidth;
    use phalanx_core::topology::templates;

    #[test]
    fn the_node_report_shows_links_bandwidth_and_holders() {
        let model = NodeGpuModel::new(templates::pcie_two_sockets(8, "RTX"), &LinkBandwidth::default());
        let key = |n: &str| PodKey { namespace: "ml".into(), name: n.into() };
        let text = render_node(&NodeReport {
            node: "rtx-0",
            product: Some("NVIDIA-GeForce-RTX-4090"),
            source: "template for the GPU Feature Discovery labels".into(),
            domains: "block=rack-0".into(),
            model: &model,
            pods: vec![
                PodGpus { key: key("train"), gpus: 4, indices: Some(vec![4, 5, 6, 7]) },
                PodGpus { key: key("legacy"), gpus: 1, indices: None },
            ],
        });
        assert!(text.contains("Node rtx-0: 8 GPUs (NVIDIA-GeForce-RTX-4090)"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("GPU5") && l.ends_with("ml/train")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("GPU0") && l.ends_with("(free)")), "{text}");
        assert!(text.contains("PIX") && text.contains("SYS") && text.contains("35"), "{text}");
        assert!(text.contains("ml/legacy (1 GPUs)"), "{text}");
    }
}
