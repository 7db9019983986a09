//! `phalanx fleet FILE`: create the fleet's fake nodes, or bring existing
//! ones back to what the file says (labels, taints, capacity).

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use phalanx::fleet::FleetSpec;
use tracing::info;

pub async fn apply(kubeconfig: Option<PathBuf>, file: &Path) -> anyhow::Result<()> {
    let fleet = FleetSpec::load(file)?;
    let api: Api<Node> = Api::all(super::client(kubeconfig.as_deref()).await?);
    let nodes = fleet.nodes();
    let total = nodes.len();
    futures::stream::iter(nodes)
        .map(|node| apply_node(&api, node))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    info!(nodes = total, file = %file.display(), "fleet applied");
    println!("{total} nodes from {}", file.display());
    Ok(())
}

async fn apply_node(api: &Api<Node>, node: Node) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let params = PatchParams::default();
            let meta = serde_json::json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations},
                                          "spec": {"taints": node.spec.as_ref().and_then(|s| s.taints.clone())}});
            api.patch(&name, &params, &Patch::Merge(&meta)).await.with_context(|| format!("updating node {name}"))?;
            let status = serde_json::json!({"status": {"capacity": node.status.as_ref().and_then(|s| s.capacity.clone()),
                                                       "allocatable": node.status.as_ref().and_then(|s| s.allocatable.clone())}});
            api.patch_status(&name, &params, &Patch::Merge(&status))
                .await
                .with_context(|| format!("updating the status of node {name}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating node {name}")),
    }
}
