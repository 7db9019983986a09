//! Phalanx: a secondary Kubernetes scheduler for distributed GPU training.
//!
//! `core` decides (pure, no I/O); `shell` watches and writes; `config` reads
//! `deploy/scheduler-config.yaml`; `fleet` describes simulated GPU fleets;
//! `agent` discovers a node's GPUs (NVML) and who holds them (kubelet);
//! `device_plugin` offers fake GPUs to a real kubelet (kind clusters);
//! `workload` describes benchmark workloads (jobs to submit); `sim` replays
//! them through the core on a simulated clock (`phalanx simulate`).

pub mod agent;
pub mod api;
pub mod config;
pub mod core;
pub mod device_plugin;
pub mod explain;
pub mod fleet;
pub mod shell;
pub mod sim;
pub mod workload;
