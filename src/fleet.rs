//! Fleet files: a YAML description of GPU node pools, turned into fake Node
//! objects (for kwok on the local control plane) or, later, into the
//! simulator's cluster. One format for both, so a benchmark and an e2e run
//! describe the same machines the same way.
//!
//! ```yaml
//! apiVersion: phalanx.dev/v1alpha1
//! kind: Fleet
//! pools:
//!   - name: h100
//!     count: 8
//!     gpus: 8
//!     gpuProduct: NVIDIA-H100-80GB-HBM3
//!     cpu: "224"
//!     memory: 2Ti
//!     domains:            # consecutive nodes share a domain, narrowest first
//!       - {labels: [network.topology.nvidia.com/block], size: 4, prefix: rack}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use thiserror::Error;

use phalanx_core::quantity::{parse_milli, parse_units};

pub const API_VERSION: &str = "phalanx.dev/v1alpha1";
pub const KIND: &str = "Fleet";
/// kwok acts as the kubelet of nodes with this annotation.
pub const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
pub const GPU_COUNT_LABEL: &str = "nvidia.com/gpu.count";

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {field}: {message}")]
    Invalid { path: String, field: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    pub api_version: String,
    pub kind: String,
    pub pools: Vec<PoolSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    pub name: String,
    pub count: usize,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub gpu_product: Option<String>,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
    #[serde(default = "default_pods")]
    pub pods: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
    #[serde(default)]
    pub domains: Vec<DomainLevel>,
}

fn default_cpu() -> String {
    "128".into()
}

fn default_memory() -> String {
    "1Ti".into()
}

fn default_pods() -> u32 {
    110
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: String,
}

/// One level of the topology: every `size` consecutive nodes of the pool
/// share the value `{prefix}-{n}` for each of `labels`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainLevel {
    pub labels: Vec<String>,
    pub size: usize,
    pub prefix: String,
}

impl FleetSpec {
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read { path: shown.clone(), source })?;
        Self::parse(&text).map_err(|(field, message)| FleetError::Invalid { path: shown, field, message })
    }

    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let spec: FleetSpec = serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: String, m: String| Err((f, m));
        if self.api_version != API_VERSION {
            return bad("apiVersion".into(), format!("must be {API_VERSION}"));
        }
        if self.kind != KIND {
            return bad("kind".into(), format!("must be {KIND}"));
        }
        for (i, p) in self.pools.iter().enumerate() {
            let at = format!("pools[{i}]");
            let dns_label = !p.name.is_empty()
                && p.name.len() <= 50
                && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.name.starts_with('-')
                && !p.name.ends_with('-');
            if !dns_label {
                return bad(format!("{at}.name"), format!("{:?} is not a lowercase DNS label", p.name));
            }
            if self.pools[..i].iter().any(|o| o.name == p.name) {
                return bad(format!("{at}.name"), format!("{:?} names two pools", p.name));
            }
            if let Err(e) = parse_milli(&p.cpu) {
                return bad(format!("{at}.cpu"), e.to_string());
            }
            if let Err(e) = parse_units(&p.memory) {
                return bad(format!("{at}.memory"), e.to_string());
            }
            for (j, t) in p.taints.iter().enumerate() {
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                    return bad(format!("{at}.taints[{j}].effect"), format!("unknown effect {:?}", t.effect));
                }
            }
            for (j, d) in p.domains.iter().enumerate() {
                if d.size == 0 {
                    return bad(format!("{at}.domains[{j}].size"), "must be at least 1".into());
                }
                if d.labels.is_empty() {
                    return bad(format!("{at}.domains[{j}].labels"), "name at least one label".into());
                }
            }
        }
        Ok(())
    }

    pub fn node_count(&self) -> usize {
        self.pools.iter().map(|p| p.count).sum()
    }

    /// The Node objects of the fleet, with status (capacity, allocatable) filled in.
    pub fn nodes(&self) -> Vec<Node> {
        self.pools.iter().flat_map(PoolSpec::nodes).collect()
    }
}

impl PoolSpec {
    fn nodes(&self) -> impl Iterator<Item = Node> + '_ {
        (0..self.count).map(move |i| self.node(i))
    }

    fn node(&self, index: usize) -> Node {
        let name = format!("{}-{index}", self.name);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("type".to_string(), "kwok".to_string()),
            ("phalanx.dev/pool".to_string(), self.name.clone()),
        ]);
        if self.gpus > 0 {
            labels.insert(GPU_COUNT_LABEL.into(), self.gpus.to_string());
            labels.insert("nvidia.com/gpu.present".into(), "true".into());
            if let Some(product) = &self.gpu_product {
                labels.insert(GPU_PRODUCT_LABEL.into(), product.clone());
            }
        }
        for level in &self.domains {
            for label in &level.labels {
                labels.insert(label.clone(), format!("{}-{}", level.prefix, index / level.size));
            }
        }
        labels.extend(self.labels.clone());
        let mut resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpu.clone())),
            ("memory".to_string(), Quantity(self.memory.clone())),
            ("pods".to_string(), Quantity(self.pods.to_string())),
        ]);
        if self.gpus > 0 {
            resources.insert(phalanx_core::resources::GPU.into(), Quantity(self.gpus.to_string()));
        }
        let taints: Vec<Taint> = self
            .taints
            .iter()
            .map(|t| Taint {
                key: t.key.clone(),
                value: Some(t.value.clone()),
                effect: t.effect.clone(),
                ..Default::default()
            })
            .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(KWOK_ANNOTATION.0.into(), KWOK_ANNOTATION.1.into())])),
                ..Default::default()
            },
            spec: Some(NodeSpec { taints: (!taints.is_empty()).then_some(taints), ..Default::default() }),
            status: Some(NodeStatus {
                allocatable: Some(resources.clone()),
                capacity: Some(resources),
                ..Default::default()
            }),
        }
    }
}

/// The node reports Ready=True (kwok says so once it manages the node).
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready and without taints: the not-ready taint set at creation goes once
/// the node lifecycle controller has seen the node Ready. What a fleet's
/// user waits for before scheduling on it.
pub fn ready_and_untainted(node: &Node) -> bool {
    is_ready(node) && node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none_or(|t| t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_fleets_parse_and_label_their_domains() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fleets");
        let big = FleetSpec::load(&dir.join("h100-32.yaml")).unwrap();
        assert_eq!(big.node_count(), 32);
        let nodes = big.nodes();
        let label = |n: &Node, k: &str| n.metadata.labels.as_ref().unwrap().get(k).cloned();
        assert_eq!(
            label(&nodes[0], "network.topology.nvidia.com/block"),
            label(&nodes[7], "network.topology.nvidia.com/block")
        );
        assert_ne!(
            label(&nodes[7], "network.topology.nvidia.com/block"),
            label(&nodes[8], "network.topology.nvidia.com/block")
        );
        assert_eq!(label(&nodes[3], GPU_COUNT_LABEL).as_deref(), Some("8"));
        let small = FleetSpec::load(&dir.join("small-mixed.yaml")).unwrap();
        assert!(small.pools.len() >= 2, "a mixed fleet has more than one kind of node");
    }

    #[test]
    fn bad_fleets_name_the_field() {
        let base = "apiVersion: phalanx.dev/v1alpha1\nkind: Fleet\npools:\n";
        let cases = [
            (format!("{base}- {{name: A, count: 1}}\n"), "pools[0].name"),
            (format!("{base}- {{name: a, count: 1, cpu: lots}}\n"), "pools[0].cpu"),
            (format!("{base}- {{name: a, count: -1}}\n"), "pools[0].count"),
            (
                format!("{base}- {{name: a, count: 1, domains: [{{labels: [r], size: 0, prefix: r}}]}}\n"),
                "pools[0].domains[0].size",
            ),
            (format!("{base}- {{name: a, count: 1, gpu: 8}}\n"), "pools[0].gpu"),
        ];
        for (text, field) in cases {
            let (f, m) = FleetSpec::parse(&text).unwrap_err();
            assert_eq!(f, field, "{m}");
        }
    }
}
