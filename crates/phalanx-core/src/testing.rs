//! Builders shared by the core's unit tests and the benchmarks.

use super::framework::Profile;
use super::label_selector::LabelSelector;
use super::node::NodeSpec;
use super::plugins;
use super::pod::{PodInfo, PodKey, PodPhase};
use super::pod_affinity::PodAffinityTerm;
use super::resources::{CPU, GPU, PODS, Resources};
#[cfg(any(test, feature = "internals"))]
use super::schedule::{FitError, choose_node};
use super::snapshot::ClusterSnapshot;
use super::topology_spread::{InclusionPolicy, SpreadConstraint, WhenUnsatisfiable};

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
        host_ports: vec![],
        affinity: Default::default(),
        spread: vec![],
        controller: None,
        shown_reason: None,
        volume_claims: vec![],
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

pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// `gpu_node` labelled with its hostname and `zone`.
pub fn zoned_node(name: &str, gpus: i64, zone: &str) -> NodeSpec {
    let mut node = gpu_node(name, gpus);
    node.labels.insert(HOSTNAME.into(), name.into());
    node.labels.insert(ZONE.into(), zone.into());
    node
}

/// Nodes (name, zone) with 8 GPUs each.
pub fn zoned_cluster(nodes: &[(&str, &str)]) -> ClusterSnapshot {
    let mut s = ClusterSnapshot::new();
    for (name, zone) in nodes {
        s.upsert_node(zoned_node(name, 8, zone));
    }
    s
}

/// Decides with the default profile and assumes the pod where it goes, as a pass does.
#[cfg(any(test, feature = "internals"))]
pub fn place_one(s: &mut ClusterSnapshot, pod: &PodInfo) -> Result<String, FitError> {
    let choice = choose_node(&profile_with_defaults(), pod, s, None)?;
    s.assume(pod.placement(&choice.node), choice.gpus);
    Ok(choice.node)
}

/// A selector requiring each of these labels (`matchLabels`).
pub fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::equal_to(labels.iter().copied())
}

/// An affinity term over pods in "default" with these labels, per `topology_key` domain.
pub fn affinity_term(topology_key: &str, labels: &[(&str, &str)]) -> PodAffinityTerm {
    PodAffinityTerm {
        selector: Some(selector(labels)),
        namespaces: vec!["default".into()],
        namespace_selector: None,
        topology_key: topology_key.into(),
    }
}

/// A `DoNotSchedule` spread over pods with these labels, with kube-scheduler's defaults.
pub fn spread(topology_key: &str, max_skew: i32, labels: &[(&str, &str)]) -> SpreadConstraint {
    SpreadConstraint {
        max_skew,
        topology_key: topology_key.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        selector: Some(selector(labels)),
        min_domains: 1,
        node_affinity_policy: InclusionPolicy::Honor,
        node_taints_policy: InclusionPolicy::Ignore,
    }
}

/// `pod` with these labels added.
pub fn labelled(mut pod: PodInfo, labels: &[(&str, &str)]) -> PodInfo {
    pod.labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    pod
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
