//! Text a person reads: `phalanx explain node/NAME` shows how a node's GPUs
//! are wired and who holds them; `phalanx explain NAMESPACE/NAME` (and the
//! scheduler's `/explain/...` endpoint) says why a gang waits or where it runs.

pub mod gang;
pub mod node;

pub use gang::{ExplainError, GangExplanation, SchedulerState, Target, explain_gang, render_gang};
pub use node::{NodeReport, PodGpus, render_node};
