//! The node labels GPU Feature Discovery would put on a node with these
//! GPUs, which the scheduler's templates and the agent's DaemonSet read.
//! Written by server-side apply under the plugin's own field manager, so
//! they are the plugin's and nobody else's labels are touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use thiserror::Error;

const FIELD_MANAGER: &str = "phalanx-device-plugin";

pub const PRESENT_LABEL: &str = "nvidia.com/gpu.present";
pub const PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
pub const COUNT_LABEL: &str = "nvidia.com/gpu.count";

#[derive(Debug, Error)]
pub enum LabelError {
    #[error("labelling node {node}: {source}")]
    Apply { node: String, source: kube::Error },
}

/// The labels for `count` GPUs named `product` ("NVIDIA H100 80GB HBM3"
/// becomes "NVIDIA-H100-80GB-HBM3", as GFD writes it).
pub fn gpu_labels(product: &str, count: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PRESENT_LABEL.to_string(), "true".to_string()),
        (PRODUCT_LABEL.to_string(), label_value(product)),
        (COUNT_LABEL.to_string(), count.to_string()),
    ])
}

/// A label value: letters, digits, `-`, `_` and `.`, at most 63, starting
/// and ending with a letter or digit; anything else becomes `-`.
fn label_value(text: &str) -> String {
    let replaced: String =
        text.trim().chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let cut: String = replaced.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

pub async fn apply(nodes: &Api<Node>, node: &str, labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    let patch = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}});
    nodes
        .patch(node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| LabelError::Apply { node: node.to_string(), source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_what_gpu_feature_discovery_writes() {
        let labels = gpu_labels("NVIDIA H100 80GB HBM3", 8);
        assert_eq!(labels[PRODUCT_LABEL], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(labels[COUNT_LABEL], "8");
        assert_eq!(labels[PRESENT_LABEL], "true");
        assert_eq!(label_value(" (A100/PCIe) "), "A100-PCIe");
        assert_eq!(label_value(&"x".repeat(70)).len(), 63);
    }
}
