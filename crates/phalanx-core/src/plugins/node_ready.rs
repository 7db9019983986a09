//! Keeps pods off nodes whose Ready condition is not True, unless they
//! tolerate the not-ready taint (as DaemonSet pods do).

use super::taint_toleration::reject_unless_tolerated;
use crate::framework::{FilterPlugin, Rejection};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;

pub struct NodeReady;

impl NodeReady {
    pub const NAME: &'static str = "NodeReady";
}

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        if node.ready {
            return Ok(());
        }
        reject_unless_tolerated(pod, "node.kubernetes.io/not-ready", "node(s) were not ready")
    }
}
