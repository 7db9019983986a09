//! Inside a node: filters nodes whose GPU topology has too few free GPUs, and
//! scores each node by the GPUs the pod would get there, relative to the best
//! set of that size on an empty node of the same kind. Pods that ask no GPU
//! are steered to nodes without GPUs, so they do not take a GPU node's CPUs.
//! Pods of two or more GPUs are kept off nodes whose GPUs are shared
//! (time-slicing, MPS) or sliced (MIG), where which GPUs they get cannot be
//! chosen, unless the profile allows it.

use serde::Deserialize;

use crate::framework::{FilterPlugin, Rejection, ScoreContext, ScorePlugin};
use crate::node::{GpuSharing, NodeInfo, NodeSpec, SharingStrategy};
use crate::pod::PodInfo;
use crate::topology::graph::LinkBandwidth;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GpuTopologyArgs {
    /// GB/s per link kind, used to model all-reduce bandwidth.
    #[serde(default, rename = "linkBandwidthGBps")]
    pub link_bandwidth: LinkBandwidth,
    /// Pods of 2+ GPUs may go to nodes whose GPUs are shared or sliced.
    #[serde(default)]
    pub multi_gpu_pods_on_shared_nodes: bool,
}

/// Whether pods of two or more GPUs may go to nodes whose GPUs are shared or sliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiGpuOnSharedNodes {
    #[default]
    KeptOff,
    Allowed,
}

#[derive(Debug, Default)]
pub struct GpuTopology {
    pub multi_gpu_on_shared: MultiGpuOnSharedNodes,
}

impl GpuTopology {
    pub const NAME: &'static str = "GpuTopology";
    /// Lost per extra CPU socket the GPUs span.
    const SOCKET_PENALTY: i64 = 10;
}

impl FilterPlugin for GpuTopology {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn reads_usage(&self) -> bool {
        true
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, usage: &NodeInfo) -> Result<(), Rejection> {
        let wanted = pod.gpu_count();
        if wanted > 1 && self.multi_gpu_on_shared == MultiGpuOnSharedNodes::KeptOff {
            match node.gpu_sharing {
                GpuSharing::Whole => {}
                GpuSharing::Replica { strategy, .. } => {
                    let how = match strategy {
                        SharingStrategy::TimeSlicing => "time-slicing",
                        SharingStrategy::Mps => "MPS",
                    };
                    return Err(Rejection::because(format!(
                        "node(s) shared their GPUs by {how}: a pod of 2 or more GPUs could get replicas of one GPU"
                    )));
                }
                GpuSharing::MigSlice => {
                    return Err(Rejection::because(
                        "node(s) offered MIG slices, not whole GPUs: a pod of 2 or more GPUs could get slices of one GPU",
                    ));
                }
            }
        }
        match &usage.gpu_model {
            Some(model) if wanted > 0 && model.choose(usage.free_gpus(), wanted).is_none() => {
                Err(Rejection::because("node(s) had too few free GPUs in their topology"))
            }
            _ => Ok(()),
        }
    }
}

impl ScorePlugin for GpuTopology {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn node_local(&self) -> bool {
        true
    }

    fn score(&self, ctx: &ScoreContext<'_>, _: &NodeSpec, usage: &NodeInfo) -> i64 {
        let wanted = ctx.pod.gpu_count();
        let Some(model) = &usage.gpu_model else {
            return if wanted == 0 { 100 } else { 0 };
        };
        if wanted == 0 {
            return 0;
        }
        let (Some(here), Some(ideal)) =
            (model.choose(usage.free_gpus(), wanted), model.choose(model.all_gpus(), wanted))
        else {
            return 0;
        };
        let share = if ideal.ring_bandwidth.is_finite() && ideal.ring_bandwidth > 0.0 {
            (100.0 * here.ring_bandwidth / ideal.ring_bandwidth).round() as i64
        } else {
            100
        };
        (share - Self::SOCKET_PENALTY * (i64::from(here.sockets) - 1)).clamp(0, 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gpu_node, gpu_pod};

    fn shared(sharing: GpuSharing) -> NodeSpec {
        NodeSpec { gpu_sharing: sharing, ..gpu_node("n", 32) }
    }

    #[test]
    fn pods_of_several_gpus_are_kept_off_shared_and_sliced_nodes_unless_allowed() {
        let time_sliced = shared(GpuSharing::Replica { physical_gpus: 8, strategy: SharingStrategy::TimeSlicing });
        let mig = shared(GpuSharing::MigSlice);
        let usage = NodeInfo::default();
        let kept_off = GpuTopology::default();
        assert!(kept_off.filter(&gpu_pod("one", 1), &time_sliced, &usage).is_ok(), "one replica is fine");
        let why = kept_off.filter(&gpu_pod("two", 2), &time_sliced, &usage).unwrap_err();
        assert_eq!(
            why.0,
            ["node(s) shared their GPUs by time-slicing: a pod of 2 or more GPUs could get replicas of one GPU"]
        );
        assert!(kept_off.filter(&gpu_pod("two", 2), &mig, &usage).unwrap_err().0[0].contains("MIG slices"));
        assert!(kept_off.filter(&gpu_pod("two", 2), &gpu_node("whole", 8), &usage).is_ok());
        let allowed = GpuTopology { multi_gpu_on_shared: MultiGpuOnSharedNodes::Allowed };
        assert!(allowed.filter(&gpu_pod("two", 2), &time_sliced, &usage).is_ok());
        assert!(allowed.filter(&gpu_pod("two", 2), &mig, &usage).is_ok());
    }
}
