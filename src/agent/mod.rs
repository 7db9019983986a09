//! The node agent's sources of truth: NVML for what GPUs a node has and how
//! they are wired, and the kubelet's pod-resources API for which pods hold
//! which of them.

pub mod discovery;
pub mod nvidia_smi;
pub mod nvml;
pub mod pod_resources;
pub mod publish;
