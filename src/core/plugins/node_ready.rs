//! Keeps pods off nodes whose Ready condition is not True, unless they
//! tolerate the not-ready taint (as DaemonSet pods do).

use super::taint_toleration::tolerates;
use crate::core::framework::{FilterPlugin, Rejection};
use crate::core::node::{NodeInfo, NodeSpec, Taint, TaintEffect};
use crate::core::pod::PodInfo;

pub struct NodeReady;

impl NodeReady {
    pub const NAME: &'static str = "NodeReady";
}

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        let not_ready = Taint {
            key: "node.kubernetes.io/not-ready".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        if !node.ready && !tolerates(&pod.tolerations, &not_ready) {
            return Err(Rejection::because("node(s) were not ready"));
        }
        Ok(())
    }
}
