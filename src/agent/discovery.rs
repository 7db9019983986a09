//! Where the agent learns the node's topology, in order: a saved
//! `nvidia-smi topo -m` output (`--topology-file`), NVML, then running
//! `nvidia-smi topo -m`. The first that works wins; if none does, the error
//! lists why each failed.

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
pub fn discover(topology_file: Option<&Path>) -> Result<(GpuTopology, &'static str), DiscoveryError> {
    if let Some(path) = topology_file {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| DiscoveryError::ReadFile { path: shown.clone(), source })?;
        let topology = nvidia_smi::parse(&text).map_err(|source| DiscoveryError::ParseFile { path: shown, source })?;
        return Ok((topology, "file"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_every_source_is_named_in_the_error() {
        let err = discover(None).unwrap_err().to_string();
        assert!(err.contains("NVML") && err.contains("nvidia-smi"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = discover(Some(Path::new("/nonexistent/topo.txt"))).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/topo.txt"), "{err}");
    }
}
