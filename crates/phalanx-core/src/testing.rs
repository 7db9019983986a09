//! Builders shared by the core's unit tests and the benchmarks.

use super::framework::Profile;
use super::node::NodeSpec;
use super::plugins;
use super::pod::{PodInfo, PodKey, PodPhase};
use super::resources::{CPU, GPU, PODS, Resources};

pub fn test_pod(name: &str, requests: Resources) -> PodInfo {
    PodInfo {
        uid: format!("uid-{name}"),
        key: PodKey { namespace: "default".into(), name: name.into() },
        resource_version: None,
        scheduler_name: "phalanx".into(),
        node_name: None,
        phase: PodPhase::Pending,
        terminating: false,
        requests,
        node_selector: Default::default(),
        required_terms: vec![],
        preferred_terms: vec![],
        tolerations: vec![],
        priority: 0,
        preempt_never: false,
        labels: Default::default(),
        created: 0,
        job: None,
        gpu_indices: None,
        claims: vec![],
    }
}

/// A pod asking `gpus` GPUs and one CPU.
pub fn gpu_pod(name: &str, gpus: i64) -> PodInfo {
    test_pod(name, Resources::new().with(GPU, gpus).with(CPU, 1000).with(PODS, 1))
}

/// A Ready node with `gpus` GPUs, 64 CPUs and room for 110 pods.
pub fn gpu_node(name: &str, gpus: i64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        ready: true,
        allocatable: Resources::new().with(GPU, gpus).with(CPU, 64_000).with(PODS, 110),
        ..Default::default()
    }
}

pub fn profile_with_defaults() -> Profile {
    plugins::default_profile("phalanx")
}

/// xorshift64*: reproducible random numbers for benchmarks, without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
