//! The decision core: pure code with no Kubernetes client and no async
//! runtime. The shell feeds it events and carries out what it decides.

pub mod disruption;
pub mod framework;
pub mod gang;
pub mod gang_placement;
pub mod gang_scheduler;
pub mod leader_lease;
pub mod node;
mod node_table;
pub mod plugins;
pub mod pod;
pub mod pod_group_status;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod quota;
pub mod resources;
pub mod schedule;
pub mod snapshot;
pub mod topology;

/// Builders for unit tests and benchmarks.
pub mod testing;
