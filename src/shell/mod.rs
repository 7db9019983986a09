//! The I/O shell: watches the API server, feeds the core, and writes what
//! the core decides (bindings, evictions, status, Events). Also the HTTP endpoints.

pub mod binder;
pub mod evictor;
pub mod explain;
pub mod gang_objects;
pub mod http;
pub mod informers;
pub mod leader_election;
pub mod metrics;
pub mod pod_group_status;
pub mod quota_objects;
pub mod rate_limit;
pub mod reporter;
pub mod scheduling_loop;
pub mod translate;
