//! `phalanx simulate`: replays a trace of jobs against a described fleet
//! through the scheduler's own decision core, on a simulated clock.
//!
//! `trace` and `synthetic` say which jobs arrive when; `fleet` which nodes
//! there are; `driver` runs the core over them; `quality` scores placements;
//! `report` and `plot` say what happened.

pub mod driver;
pub mod fleet;
pub mod plot;
pub mod quality;
pub mod report;
pub mod synthetic;
pub mod trace;
