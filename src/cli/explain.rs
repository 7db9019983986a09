//! `phalanx explain node/NAME [--dot]`: a node's GPU topology and who holds
//! which GPU, from what the API server has (the node's GPUTopology resource,
//! else the template its labels select).

use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use phalanx::api::gpu_topology::GPUTopology;
use phalanx::config;
use phalanx::core::snapshot::ClusterSnapshot;
use phalanx::explain::{NodeReport, PodGpus, render_node};
use phalanx::shell::translate::{node_spec, pod_info, topology_report};

pub async fn run(
    kubeconfig: Option<PathBuf>,
    target: &str,
    dot: bool,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Some(node_name) = target.strip_prefix("node/") else {
        bail!("explain takes node/NAME (pods and jobs come with gang scheduling)");
    };
    let settings = match config_path {
        Some(path) => config::load(&path)?.topology,
        None => Default::default(),
    };
    let client = super::client(kubeconfig.as_deref()).await?;
    let node = Api::<Node>::all(client.clone()).get(node_name).await.with_context(|| format!("node {node_name}"))?;
    let spec = node_spec(&node)?;
    let report = Api::<GPUTopology>::all(client.clone())
        .get_opt(node_name)
        .await
        .with_context(|| format!("reading the GPUTopology of {node_name}"))?;
    let mut snapshot = ClusterSnapshot::with_settings(settings);
    let source = match &report {
        Some(r) => {
            let parsed = topology_report(r)?;
            snapshot.set_reported_topology(node_name, Some(parsed.topology));
            format!("its GPUTopology resource (source: {})", r.spec.source)
        }
        None => "the built-in template its GPU Feature Discovery labels select".to_string(),
    };
    let product = spec.labels.get(phalanx::core::snapshot::GPU_PRODUCT_LABEL).cloned();
    snapshot.upsert_node(spec);
    let info = snapshot.node(node_name).expect("just added");
    let Some(model) = info.gpu_model.clone() else {
        println!("Node {node_name} has no GPUs.");
        return Ok(());
    };
    if dot {
        print!("{}", model.graph.to_dot());
        return Ok(());
    }
    let levels = &snapshot.settings().levels.levels;
    let domains = info
        .domains
        .iter()
        .zip(levels)
        .filter_map(|(d, level)| d.map(|id| format!("{}={}", level.name, snapshot.domain_index().describe(id))))
        .collect::<Vec<_>>()
        .join(", ");
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .context("listing the node's pods")?;
    let pods = pods
        .items
        .iter()
        .filter_map(|p| pod_info(p).ok())
        .map(|p| PodGpus { gpus: p.gpu_count(), indices: p.gpu_indices.clone(), key: p.key })
        .collect();
    print!(
        "{}",
        render_node(&NodeReport { node: node_name, product: product.as_deref(), source, domains, model: &model, pods })
    );
    Ok(())
}
