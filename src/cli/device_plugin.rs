//! `phalanx device-plugin`: offer a node's fake GPUs (from a saved
//! `nvidia-smi topo -m` output) to its kubelet and label the node as GPU
//! Feature Discovery would. Runs until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use phalanx::agent::discovery::read_topology_file;
use phalanx::device_plugin::allocation::NodeGpus;
use phalanx::device_plugin::node_labels;
use phalanx::device_plugin::plugin::{self, PluginConfig};
use phalanx_core::topology::graph::LinkBandwidth;
use tracing::info;

/// The plugin's socket in the kubelet's directory.
const ENDPOINT: &str = "phalanx-fake-gpu.sock";

#[derive(clap::Args)]
pub struct DevicePluginArgs {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The node this plugin runs on (in a DaemonSet: from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The saved `nvidia-smi topo -m` output describing the node's GPUs.
    #[arg(long)]
    topology_file: PathBuf,
    /// The extended resource to offer.
    #[arg(long, default_value = "nvidia.com/gpu")]
    resource: String,
    /// The GPU model for the `nvidia.com/gpu.product` label.
    #[arg(long, conflicts_with = "product_file")]
    product: Option<String>,
    /// A file whose first line is the GPU model (one per node).
    #[arg(long)]
    product_file: Option<PathBuf>,
    /// The kubelet's device plugin directory.
    #[arg(long, default_value = phalanx::device_plugin::api::DEFAULT_PLUGIN_DIR)]
    plugin_dir: PathBuf,
}

pub async fn run(args: DevicePluginArgs) -> anyhow::Result<()> {
    let topology = read_topology_file(&args.topology_file, &args.node_name)?;
    let gpus = Arc::new(
        NodeGpus::new(topology, &LinkBandwidth::default())
            .with_context(|| format!("{}: GPUs without UUIDs", args.topology_file.display()))?,
    );
    let product = product(&args)?;
    let client = super::client(args.kubeconfig.as_deref()).await?;
    let labels = node_labels::gpu_labels(&product, gpus.count());
    node_labels::apply(&Api::<Node>::all(client), &args.node_name, &labels).await?;
    info!(node = %args.node_name, gpus = gpus.count(), %product, "node labelled");
    let config = PluginConfig {
        dir: args.plugin_dir,
        endpoint: ENDPOINT.to_string(),
        resource: args.resource,
        poll: Duration::from_secs(1),
    };
    plugin::run(&config, gpus, super::shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

fn product(args: &DevicePluginArgs) -> anyhow::Result<String> {
    let product = match (&args.product, &args.product_file) {
        (Some(product), _) => product.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --product-file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, None) => anyhow::bail!("give the GPU model with --product or --product-file"),
    };
    anyhow::ensure!(!product.trim().is_empty(), "the GPU model (--product or --product-file) is empty");
    Ok(product)
}
