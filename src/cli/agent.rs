//! `phalanx agent`: discover this node's GPU topology, publish it as the
//! node's GPUTopology resource, and report which GPUs the kubelet gave each
//! pod. Runs until SIGTERM, or one round with `--once`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use phalanx::agent::discovery;
use phalanx::agent::pod_resources;
use phalanx::agent::publish::Publisher;
use tracing::{info, warn};

pub struct AgentOptions {
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub topology_file: Option<PathBuf>,
    pub pod_resources_socket: PathBuf,
    pub interval: Duration,
    pub once: bool,
}

pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let client = super::client(options.kubeconfig.as_deref()).await?;
    let publisher = Publisher::new(client, &options.node_name);
    loop {
        round(&publisher, &options).await?;
        if options.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = super::shutdown_signal() => return Ok(()),
        }
    }
}

async fn round(publisher: &Publisher, options: &AgentOptions) -> anyhow::Result<()> {
    let (topology, source) = discovery::discover(options.topology_file.as_deref(), &options.node_name)?;
    let devices = pod_devices(&options.pod_resources_socket).await;
    let published = publisher.publish(&topology, source, devices).await?;
    info!(node = %options.node_name, gpus = topology.gpus.len(), source, ?published, "topology published");
    Ok(())
}

/// Devices per pod from the kubelet, when its socket is there (it is not
/// when the agent runs outside a node, as in tests).
async fn pod_devices(socket: &Path) -> Option<Vec<pod_resources::PodDevices>> {
    if !socket.exists() {
        return None;
    }
    match pod_resources::list_gpu_devices(socket).await {
        Ok(devices) => Some(devices),
        Err(e) => {
            warn!(error = %e, "cannot read the kubelet's pod resources; keeping the last report");
            None
        }
    }
}
