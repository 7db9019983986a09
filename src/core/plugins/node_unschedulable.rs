//! Keeps pods off cordoned nodes (`spec.unschedulable`) unless they tolerate it.

use super::taint_toleration::tolerates;
use crate::core::framework::{FilterPlugin, Rejection};
use crate::core::node::{NodeInfo, NodeSpec, Taint, TaintEffect};
use crate::core::pod::PodInfo;

pub struct NodeUnschedulable;

impl NodeUnschedulable {
    pub const NAME: &'static str = "NodeUnschedulable";
}

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        if node.unschedulable && !tolerates(&pod.tolerations, &cordon) {
            return Err(Rejection::because("node(s) were unschedulable"));
        }
        Ok(())
    }
}
