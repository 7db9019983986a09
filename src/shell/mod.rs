//! The I/O shell: watches the API server, feeds the core's `Scheduler`, and
//! writes what it decides (bindings, evictions, status, Events). Also the
//! HTTP endpoints and leader election.

pub mod binder;
pub mod evictor;
pub mod explain;
pub mod http;
pub mod informers;
pub mod leader_election;
pub mod leader_lease;
pub mod metrics;
pub mod pod_group_status;
pub mod rate_limit;
pub mod reporter;
pub mod scheduling_loop;

use phalanx_core::gang_status::WallClock;

/// The real clock, for the timestamps the scheduler writes.
pub fn wall_clock() -> WallClock {
    WallClock { instant: std::time::Instant::now(), timestamp: jiff::Timestamp::now() }
}
