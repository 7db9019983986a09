//! Inside a node: filters nodes whose GPU topology has too few free GPUs, and
//! scores each node by the GPUs the pod would get there, relative to the best
//! set of that size on an empty node of the same kind. Pods that ask no GPU
//! are steered to nodes without GPUs, so they do not take a GPU node's CPUs.

use serde::Deserialize;

use crate::framework::{FilterPlugin, Rejection, ScoreContext, ScorePlugin};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;
use crate::topology::graph::LinkBandwidth;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GpuTopologyArgs {
    /// GB/s per link kind, used to model all-reduce bandwidth.
    #[serde(default, rename = "linkBandwidthGBps")]
    pub link_bandwidth: LinkBandwidth,
}

pub struct GpuTopology;

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

    fn filter(&self, pod: &PodInfo, _: &NodeSpec, usage: &NodeInfo) -> Result<(), Rejection> {
        let wanted = pod.gpu_count();
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
