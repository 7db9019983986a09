//! Phalanx's Kubernetes-facing types: its custom resources (`api`) and the
//! translation of API objects into the core's types (`translate`,
//! `gang_objects`, `quota_objects`, `dra_objects`, `volume_objects`, `pod_group_status`), and
//! the PodGroup status back into a patch. Pure: no client, no async runtime; the shell and the
//! simulator both use it.

pub mod api;
pub mod dra_objects;
pub mod gang_objects;
pub mod pod_group_status;
mod pod_rules;
pub mod quota_objects;
pub mod translate;
pub mod volume_objects;
pub mod workload_objects;
