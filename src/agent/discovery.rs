//! Where the agent learns the node's topology, in order: a saved
//! `nvidia-smi topo -m` output (`--topology-file`), NVML, then running
//! `nvidia-smi topo -m`. The first that works wins; if none does, the error
//! lists why each failed.
//!
//! A saved output has no UUIDs, so GPUs read from a file get ones derived
//! from the node's name and the GPU's index (`fixture_gpu_uuid`): the fake
//! device plugin names its devices with the same function, so the device
//! ids the kubelet reports map back to GPU indices.

use std::path::Path;

use thiserror::Error;

use super::nvidia_smi;
use phalanx_core::topology::model::GpuTopology;

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("cannot read {path}: {source}")]
    ReadFile { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    ParseFile { path: String, source: nvidia_smi::TopoParseError },
    #[error("no GPU topology found: NVML: {nvml}; nvidia-smi: {nvidia_smi}")]
    NoSource { nvml: String, nvidia_smi: String },
}

/// A discovered topology and the name of its source, as the resource records it.
pub fn discover(topology_file: Option<&Path>, node: &str) -> Result<(GpuTopology, &'static str), DiscoveryError> {
    if let Some(path) = topology_file {
        return Ok((read_topology_file(path, node)?, "file"));
    }
    let nvml_error = match super::nvml::discover() {
        Ok(t) => return Ok((t, "nvml")),
        Err(e) => e.to_string(),
    };
    let smi_error = match std::process::Command::new("nvidia-smi").args(["topo", "-m"]).output() {
        Ok(out) if out.status.success() => match nvidia_smi::parse(&String::from_utf8_lossy(&out.stdout)) {
            Ok(t) => return Ok((t, "nvidia-smi")),
            Err(e) => e.to_string(),
        },
        Ok(out) => format!("exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => e.to_string(),
    };
    Err(DiscoveryError::NoSource { nvml: nvml_error, nvidia_smi: smi_error })
}

/// Reads a saved `nvidia-smi topo -m` output as the topology of `node`,
/// each GPU named by `fixture_gpu_uuid`.
pub fn read_topology_file(path: &Path, node: &str) -> Result<GpuTopology, DiscoveryError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| DiscoveryError::ReadFile { path: shown.clone(), source })?;
    let mut topology = nvidia_smi::parse(&text).map_err(|source| DiscoveryError::ParseFile { path: shown, source })?;
    for gpu in &mut topology.gpus {
        gpu.uuid = Some(fixture_gpu_uuid(node, gpu.index));
    }
    Ok(topology)
}

/// The UUID of GPU `index` of `node` when the GPUs come from a saved output:
/// NVIDIA's form (`GPU-` and 32 hex digits in 8-4-4-4-12 groups), the same
/// on every run and every build (FNV-1a, not the standard library's hasher,
/// whose output may change between Rust releases; then MurmurHash3's
/// finaliser, so that GPU 1 and GPU 2 do not get look-alike UUIDs).
pub fn fixture_gpu_uuid(node: &str, index: u32) -> String {
    let key = format!("{node}/{index}");
    let high = fnv1a(0xcbf2_9ce4_8422_2325, key.as_bytes());
    let low = fnv1a(high, key.as_bytes());
    let hex = format!("{:016x}{:016x}", finalise(high), finalise(low));
    format!("GPU-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn finalise(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ h >> 33
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_every_source_is_named_in_the_error() {
        let err = discover(None, "n").unwrap_err().to_string();
        assert!(err.contains("NVML") && err.contains("nvidia-smi"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = discover(Some(Path::new("/nonexistent/topo.txt")), "n").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/topo.txt"), "{err}");
    }

    #[test]
    fn gpus_from_a_file_get_uuids_per_node_and_index() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvidia-smi-topo/hgx-h100-nvswitch.txt");
        let (topology, source) = discover(Some(&path), "worker-1").unwrap();
        assert_eq!(source, "file");
        let uuids: Vec<String> = topology.gpus.iter().map(|g| g.uuid.clone().unwrap()).collect();
        assert_eq!(uuids[3], fixture_gpu_uuid("worker-1", 3));
        assert_eq!(uuids.iter().collect::<std::collections::HashSet<_>>().len(), 8, "{uuids:?}");
        assert_ne!(fixture_gpu_uuid("worker-2", 3), uuids[3]);
        // NVIDIA's shape, and fixed: a change here breaks running clusters'
        // GPUTopology resources against their device plugins.
        assert_eq!(fixture_gpu_uuid("kind-worker", 0), "GPU-e92710ed-bd8c-595a-db1e-2a019a8690f9");
    }
}
