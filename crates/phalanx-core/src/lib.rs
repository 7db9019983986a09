//! The decision core: pure code with no Kubernetes client and no async
//! runtime. `Scheduler` is the state machine the drivers (the live loop,
//! the simulator, `phalanx explain`) feed with events and outcomes; the
//! modules below it decide.

#![forbid(unsafe_code)]

// What drivers give the scheduler and read back: its inputs (nodes, pods,
// gangs, quotas, budgets, topologies), its setup (profiles, plugins), its
// actions and explanations, and the snapshot for those that measure.
pub mod disruption;
pub mod dra;
pub mod explain;
pub mod framework;
pub mod gang;
pub mod gang_status;
pub mod host_port;
mod inter_pod_index;
pub mod label_selector;
pub mod node;
pub mod plugins;
pub mod pod;
pub mod pod_affinity;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod scheduler;
pub mod snapshot;
pub mod spread_defaults;
pub mod topology;
pub mod topology_spread;
pub mod volume;

/// Declares the decision modules behind `Scheduler`: private to the crate,
/// public only with the feature `internals` (the benchmarks that time them).
macro_rules! decision_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

decision_modules!(gang_placement, gang_scheduler, preemption, queue, schedule, update);
mod node_table;

/// Builders for unit tests and benchmarks.
pub mod testing;
