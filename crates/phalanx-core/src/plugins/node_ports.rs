//! `hostPort`s: a node cannot take a pod asking for a port (protocol and
//! address) that a pod there holds already, members of the same gang placed
//! earlier in the pass included (they are assumed on their node).

use crate::framework::{FilterPlugin, Rejection};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;

pub struct NodePorts;

impl NodePorts {
    pub const NAME: &'static str = "NodePorts";
    pub const REASON: &'static str = "node(s) didn't have free ports for the requested pod ports";
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, _: &NodeSpec, usage: &NodeInfo) -> Result<(), Rejection> {
        let taken = pod.host_ports.iter().any(|wanted| usage.host_ports.iter().any(|held| held.conflicts_with(wanted)));
        if taken { Err(Rejection::because(Self::REASON)) } else { Ok(()) }
    }

    fn reads_usage(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::{GangId, GangKind};
    use crate::gang_placement::{GangRequest, place_gang};
    use crate::host_port::{ANY_ADDRESS, HostPort, PortProtocol};
    use crate::schedule::choose_node;
    use crate::snapshot::ClusterSnapshot;
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};
    use std::collections::{BTreeSet, HashSet};

    fn with_port(name: &str, ip: &str, port: u16) -> PodInfo {
        let mut pod = gpu_pod(name, 0);
        pod.host_ports = vec![HostPort { ip: ip.into(), protocol: PortProtocol::Tcp, port }];
        pod
    }

    #[test]
    fn a_held_port_keeps_the_second_pod_away_with_kube_schedulers_words() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(gpu_node("a", 0));
        let first = with_port("web-0", ANY_ADDRESS, 8080);
        s.observe_bound(first.placement("a"), None);
        let err = choose_node(&profile_with_defaults(), &with_port("web-1", "10.0.0.5", 8080), &s, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
        );
        assert!(choose_node(&profile_with_defaults(), &with_port("other", ANY_ADDRESS, 8081), &s, None).is_ok());
        s.release(&first.uid);
        assert!(choose_node(&profile_with_defaults(), &with_port("web-1", ANY_ADDRESS, 8080), &s, None).is_ok());
    }

    #[test]
    fn gang_members_asking_one_port_go_to_different_nodes_or_not_at_all() {
        let mut s = ClusterSnapshot::new();
        for n in ["a", "b"] {
            s.upsert_node(gpu_node(n, 8));
        }
        let id = GangId::new(GangKind::PodGroup, "default", "g");
        let members: Vec<PodInfo> = (0..3)
            .map(|i| {
                let mut p = with_port(&format!("m{i}"), ANY_ADDRESS, 9000);
                p.job = Some(id.clone());
                p
            })
            .collect();
        let two = GangRequest { gang: Some(&id), members: members[..2].iter().collect(), required: 2, within: None };
        let placed = place_gang(&profile_with_defaults(), &two, &mut s, &HashSet::new()).unwrap();
        let nodes: BTreeSet<&str> = placed.members.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes.len(), 2, "one per node: {placed:?}");
        for m in &placed.members {
            s.forget(&m.uid);
        }
        let three = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 3, within: None };
        let err = place_gang(&profile_with_defaults(), &three, &mut s, &HashSet::new()).unwrap_err();
        assert_eq!(err.placeable, 2);
        assert!(err.to_string().contains("2 node(s) didn't have free ports"), "{err}");
        assert!(s.nodes().all(|(_, u)| u.host_ports.is_empty()), "rolled back");
    }
}
