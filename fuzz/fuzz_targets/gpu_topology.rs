//! Feeds arbitrary bytes, read as a GPUTopology resource in YAML or JSON, to
//! the scheduler's decoding of it: whatever is accepted must be a valid
//! topology that the GPU model can be built from and choose GPUs in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phalanx_kube::api::gpu_topology::GPUTopology;
use phalanx_core::topology::gpu_choice::NodeGpuModel;
use phalanx_core::topology::graph::LinkBandwidth;
use phalanx_kube::translate::topology_report;

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = serde_yaml_ng::from_slice::<GPUTopology>(data) else { return };
    match topology_report(&resource) {
        Ok(report) => {
            assert_eq!(report.topology.validate(), Ok(()));
            let model = NodeGpuModel::new(report.topology, &LinkBandwidth::default());
            for k in 0..=model.gpu_count() {
                if let Some(choice) = model.choose(model.all_gpus(), k) {
                    assert_eq!(choice.gpus.count_ones() as usize, k);
                }
            }
        }
        Err(e) => assert!(e.object.starts_with("gputopology ") && !e.field.is_empty()),
    }
});
