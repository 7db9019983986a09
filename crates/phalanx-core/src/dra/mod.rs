//! Dynamic Resource Allocation (`resource.k8s.io/v1`): devices published
//! per node, claims that ask for them, and the allocation phalanx makes
//! itself, choosing devices by topology.

pub mod allocator;
pub mod claim;
pub mod device;
pub mod device_choice;
pub mod fabric_partition;
pub mod inventory;
pub mod selector;

/// Builders for DRA unit tests and benchmarks.
pub mod testing;
