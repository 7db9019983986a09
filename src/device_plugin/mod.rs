//! A kubelet device plugin for fake GPUs: it offers `nvidia.com/gpu` devices
//! named by the UUIDs of a saved `nvidia-smi topo -m` output, prefers the
//! best-connected GPUs (phalanx's own GPU choice) when the kubelet asks, and
//! labels the node as GPU Feature Discovery would. It lets real kubelets
//! (kind) run GPU pods without GPUs.
//!
//! `allocation` decides (no I/O); `service` serves the kubelet's calls,
//! `registration` registers with it, `plugin` keeps the two going across
//! kubelet restarts, and `node_labels` writes the node's labels.

pub mod allocation;
pub mod api;
pub mod node_labels;
pub mod plugin;
pub mod registration;
pub mod service;
