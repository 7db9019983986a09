//! Phalanx: a secondary Kubernetes scheduler for distributed GPU training.
//!
//! The decision core and its state machine are the `phalanx-core` crate
//! (pure, no I/O); the Kubernetes-facing types (CRDs, translation of API
//! objects) are `phalanx-kube`. Here: `shell` watches and writes; `config`
//! reads `deploy/scheduler-config.yaml`; `fleet` describes simulated GPU
//! fleets; `agent` discovers a node's GPUs (NVML, `nvidia-smi`) and who
//! holds them (kubelet); `device_plugin` offers fake GPUs to a real kubelet
//! (kind clusters); `workload` describes benchmark workloads (jobs to
//! submit); `sim` replays them through the core's `Scheduler` on a
//! simulated clock (`phalanx simulate`); `explain` renders a node's GPUs;
//! `cluster_invariants` says what must hold of GPU nodes and gangs (tests, soak).

pub mod agent;
pub mod cluster_invariants;
pub mod config;
pub mod device_plugin;
pub mod explain;
pub mod fleet;
pub mod shell;
pub mod sim;
pub mod workload;
