//! The custom resources phalanx defines or reads, as Rust types. The CRD
//! manifests in `deploy/crds/` are generated from these (`phalanx crds`) and a
//! test keeps them in sync.

pub mod gpu_topology;

use kube::CustomResourceExt;

/// Every CRD phalanx ships, as YAML documents.
pub fn crd_manifests() -> Vec<(String, String)> {
    let crd = gpu_topology::GPUTopology::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    vec![(name, serde_yaml_ng::to_string(&crd).expect("a CRD serializes"))]
}
