//! The decision core: pure code with no Kubernetes client and no async
//! runtime. `Scheduler` is the state machine the drivers (the live loop,
//! the simulator, `phalanx explain`) feed with events and outcomes; the
//! modules below it decide.

#![forbid(unsafe_code)]

pub mod disruption;
pub mod explain;
pub mod framework;
pub mod gang;
pub mod gang_placement;
pub mod gang_scheduler;
pub mod host_port;
mod inter_pod_index;
pub mod label_selector;
pub mod node;
mod node_table;
pub mod plugins;
pub mod pod;
pub mod pod_affinity;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod quota;
pub mod resources;
pub mod schedule;
pub mod scheduler;
pub mod snapshot;
pub mod topology;
pub mod topology_spread;
pub mod update;

/// Builders for unit tests and benchmarks.
pub mod testing;
