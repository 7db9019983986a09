//! Writes the node's GPUTopology resource: the spec only when the topology
//! changed (so a steady node causes no writes and no scheduler work), the
//! status when the kubelet's device assignment changed.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use thiserror::Error;

use phalanx_core::topology::model::GpuTopology;
use phalanx_kube::api::gpu_topology::{GPUTopology, GpuTopologySpec, GpuTopologyStatus, PodDevices};

const FIELD_MANAGER: &str = "phalanx-agent";

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("node {node}: {source}")]
    Node { node: String, source: kube::Error },
    #[error("gputopology {node}: {source}")]
    Write { node: String, source: kube::Error },
}

/// What a publish round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub spec_written: bool,
    pub status_written: bool,
}

pub struct Publisher {
    api: Api<GPUTopology>,
    nodes: Api<Node>,
    node: String,
}

impl Publisher {
    pub fn new(client: Client, node: &str) -> Self {
        Self { api: Api::all(client.clone()), nodes: Api::all(client), node: node.to_string() }
    }

    pub async fn publish(
        &self,
        topology: &GpuTopology,
        source: &str,
        pod_devices: Option<Vec<PodDevices>>,
    ) -> Result<Published, PublishError> {
        let write_err = |source| PublishError::Write { node: self.node.clone(), source };
        let existing = self.api.get_opt(&self.node).await.map_err(write_err)?;
        let spec = GpuTopologySpec { source: source.to_string(), topology: topology.clone() };
        let spec_written = existing.as_ref().is_none_or(|e| e.spec != spec);
        if spec_written {
            // Owned by the Node, so the resource goes when the node does.
            let node = self
                .nodes
                .get(&self.node)
                .await
                .map_err(|source| PublishError::Node { node: self.node.clone(), source })?;
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.name_any(),
                uid: node.uid().unwrap_or_default(),
                ..Default::default()
            };
            let mut object = GPUTopology::new(&self.node, spec);
            object.metadata.owner_references = Some(vec![owner]);
            self.api
                .patch(&self.node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
                .await
                .map_err(write_err)?;
        }
        let status_written = match pod_devices {
            Some(devices) => {
                let status = GpuTopologyStatus { pod_devices: devices };
                let unchanged = existing.as_ref().and_then(|e| e.status.as_ref()) == Some(&status);
                if !unchanged {
                    self.api
                        .patch_status(&self.node, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
                        .await
                        .map_err(write_err)?;
                }
                !unchanged
            }
            None => false,
        };
        Ok(Published { spec_written, status_written })
    }
}
