//! GPU topology: inside a node (devices, links, the graph and bandwidths,
//! the choice of GPUs) and across nodes (domains from node labels).

pub mod domains;
pub mod gpu_choice;
pub mod graph;
pub mod model;
pub mod templates;
