//! What a node reports about its GPUs: devices, the GPU-to-GPU link matrix
//! (as `nvidia-smi topo -m` and NVML name the links) and NICs. This is the
//! spec of the `phalanx.dev` GPUTopology resource, and what the parser, NVML
//! discovery and the built-in templates all produce.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API group, version and kind the agent publishes a node's topology as
/// (the `GPUTopology` CRD; the kube crate checks its derive against these).
pub const GPU_TOPOLOGY_API_VERSION: &str = "phalanx.dev/v1alpha1";
pub const GPU_TOPOLOGY_KIND: &str = "GPUTopology";

/// How two devices are connected, nearest first (`nvidia-smi topo -m` legend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// The device itself ("X").
    Own,
    /// A bonded set of this many NVLinks ("NV12"), directly or through NVSwitch.
    NvLink(u8),
    /// At most one PCIe bridge/switch.
    Pix,
    /// Several PCIe bridges, without the host bridge.
    Pxb,
    /// Through a PCIe host bridge (typically the CPU).
    Phb,
    /// Between PCIe host bridges within one NUMA node.
    Node,
    /// Across the SMP interconnect between NUMA nodes (older drivers: "SOC").
    Sys,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown link {0:?} (expected X, NV#, PIX, PXB, PHB, NODE or SYS)")]
pub struct UnknownLink(pub String);

impl FromStr for Link {
    type Err = UnknownLink;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "X" => Link::Own,
            "PIX" => Link::Pix,
            "PXB" => Link::Pxb,
            "PHB" => Link::Phb,
            "NODE" => Link::Node,
            "SYS" | "SOC" => Link::Sys,
            nv if nv.starts_with("NV") => {
                let n: u8 = nv[2..].parse().map_err(|_| UnknownLink(s.to_string()))?;
                if n == 0 {
                    return Err(UnknownLink(s.to_string()));
                }
                Link::NvLink(n)
            }
            _ => return Err(UnknownLink(s.to_string())),
        })
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Own => write!(f, "X"),
            Link::NvLink(n) => write!(f, "NV{n}"),
            Link::Pix => write!(f, "PIX"),
            Link::Pxb => write!(f, "PXB"),
            Link::Phb => write!(f, "PHB"),
            Link::Node => write!(f, "NODE"),
            Link::Sys => write!(f, "SYS"),
        }
    }
}

impl Serialize for Link {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Link {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Link".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(X|NV[1-9][0-9]*|PIX|PXB|PHB|NODE|SYS|SOC)$",
            "description": "A link as nvidia-smi topo -m names it"
        })
    }
}

impl<'de> Deserialize<'de> for Link {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// The index the device plugin and `CUDA_VISIBLE_DEVICES` use.
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// CPUs close to the GPU, as nvidia-smi prints them ("0-55,112-167").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NicDevice {
    /// "NIC0", or the device name when known ("mlx5_0").
    pub name: String,
    /// Link to each GPU, in GPU order.
    pub gpu_links: Vec<Link>,
}

/// A node's GPU topology as reported. `links[i][j]` is the link between the
/// i-th and j-th entry of `gpus`; the diagonal is `Link::Own`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuTopology {
    pub gpus: Vec<GpuDevice>,
    pub links: Vec<Vec<Link>>,
    #[serde(default)]
    pub nics: Vec<NicDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("links has {rows} rows for {gpus} GPUs")]
    RowCount { rows: usize, gpus: usize },
    #[error("links[{row}] has {len} entries for {gpus} GPUs")]
    RowLength { row: usize, len: usize, gpus: usize },
    #[error("links[{0}][{0}] must be X (a GPU's link to itself)")]
    Diagonal(usize),
    #[error("links[{0}][{1}] is {2} but links[{1}][{0}] is {3}: the matrix must be symmetric")]
    Asymmetric(usize, usize, Link, Link),
    #[error("links[{0}][{1}] is X off the diagonal")]
    OwnOffDiagonal(usize, usize),
    #[error("gpus[{0}].index {1} appears twice")]
    DuplicateIndex(usize, u32),
    #[error("nics[{nic}].gpuLinks has {len} entries for {gpus} GPUs")]
    NicLinks { nic: usize, len: usize, gpus: usize },
    #[error("{0} GPUs on one node is more than phalanx supports (64)")]
    TooManyGpus(usize),
}

impl GpuTopology {
    /// Checks the shape: a square, symmetric matrix with X on the diagonal only,
    /// distinct indices, one NIC link per GPU.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let n = self.gpus.len();
        if n > 64 {
            return Err(TopologyError::TooManyGpus(n));
        }
        if self.links.len() != n {
            return Err(TopologyError::RowCount { rows: self.links.len(), gpus: n });
        }
        // All row lengths first: the symmetry check below reads links[j][i]
        // for rows it has not reached yet.
        for (i, row) in self.links.iter().enumerate() {
            if row.len() != n {
                return Err(TopologyError::RowLength { row: i, len: row.len(), gpus: n });
            }
        }
        for (i, row) in self.links.iter().enumerate() {
            for (j, link) in row.iter().enumerate() {
                match (i == j, *link) {
                    (true, Link::Own) => {}
                    (true, _) => return Err(TopologyError::Diagonal(i)),
                    (false, Link::Own) => return Err(TopologyError::OwnOffDiagonal(i, j)),
                    (false, l) if l != self.links[j][i] => {
                        return Err(TopologyError::Asymmetric(i, j, l, self.links[j][i]));
                    }
                    _ => {}
                }
            }
        }
        for (i, g) in self.gpus.iter().enumerate() {
            if self.gpus[..i].iter().any(|o| o.index == g.index) {
                return Err(TopologyError::DuplicateIndex(i, g.index));
            }
        }
        for (k, nic) in self.nics.iter().enumerate() {
            if nic.gpu_links.len() != n {
                return Err(TopologyError::NicLinks { nic: k, len: nic.gpu_links.len(), gpus: n });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_through_text() {
        for text in ["X", "NV1", "NV18", "PIX", "PXB", "PHB", "NODE", "SYS"] {
            assert_eq!(text.parse::<Link>().unwrap().to_string(), text);
        }
        assert_eq!("SOC".parse::<Link>(), Ok(Link::Sys));
        assert!("NV".parse::<Link>().is_err());
        assert!("NV0".parse::<Link>().is_err());
        assert!("LOL".parse::<Link>().is_err());
    }

    #[test]
    fn validation_catches_bad_shapes() {
        let gpu = |i| GpuDevice { index: i, ..Default::default() };
        let mut t = GpuTopology {
            gpus: vec![gpu(0), gpu(1)],
            links: vec![vec![Link::Own, Link::NvLink(4)], vec![Link::NvLink(4), Link::Own]],
            nics: vec![],
        };
        assert_eq!(t.validate(), Ok(()));
        t.links[1][0] = Link::Sys;
        assert!(matches!(t.validate(), Err(TopologyError::Asymmetric(0, 1, _, _))));
        t.links[1][0] = Link::NvLink(4);
        t.gpus[1].index = 0;
        assert_eq!(t.validate(), Err(TopologyError::DuplicateIndex(1, 0)));
        t.gpus[1].index = 1;
        t.links.pop();
        assert!(matches!(t.validate(), Err(TopologyError::RowCount { .. })));
        // A short row after a good one is reported, not read past its end.
        t.links.push(vec![]);
        assert!(matches!(t.validate(), Err(TopologyError::RowLength { row: 1, len: 0, gpus: 2 })));
    }
}
