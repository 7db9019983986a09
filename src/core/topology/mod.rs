//! GPU topology: inside a node (devices, links, the graph and bandwidths,
//! the choice of GPUs) and across nodes (domains from node labels).

pub mod model;
pub mod nvidia_smi;
