//! Text a person reads about a node: `phalanx explain node/NAME` shows how
//! its GPUs are wired and who holds them. Why a gang waits is the core's
//! (`phalanx_core::explain`), so the CLI and the scheduler's `/explain`
//! endpoint say the same.

pub mod node;

pub use node::{NodeReport, PodGpus, render_node};
