//! What a driver did to the scheduler, step by step, with the time of each:
//! the live loop writes it (`PHALANX_RECORD`), and a recording replayed
//! through any driver must make the scheduler ask for the same actions.

use serde::{Deserialize, Serialize};

use super::{BindOutcome, ClusterEvent, EvictOutcome};
use crate::gang_status::StatusOutcome;

// Mostly events, as `ClusterEvent` is mostly pods.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Step {
    Event(ClusterEvent),
    Bind(BindOutcome),
    Eviction(EvictOutcome),
    GroupStatus(StatusOutcome),
    /// `Scheduler::retry_waiting`.
    RetryWaiting,
    /// Decisions until no gang is ready (`Scheduler::next_actions` until it decides nothing).
    Decide,
}

/// One step, `at_ms` milliseconds after the recording started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub at_ms: u64,
    pub step: Step,
}
