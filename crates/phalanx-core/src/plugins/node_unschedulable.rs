//! Keeps pods off cordoned nodes (`spec.unschedulable`) unless they tolerate it.

use super::taint_toleration::reject_unless_tolerated;
use crate::framework::{FilterPlugin, Rejection};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;

pub struct NodeUnschedulable;

impl NodeUnschedulable {
    pub const NAME: &'static str = "NodeUnschedulable";
}

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        if !node.unschedulable {
            return Ok(());
        }
        reject_unless_tolerated(pod, "node.kubernetes.io/unschedulable", "node(s) were unschedulable")
    }
}
