//! The scheduler's incremental view of the cluster: nodes and the pods that
//! hold their resources. Updated event by event, never rebuilt by a scan.
//!
//! A pod the scheduler has decided to bind is *assumed* on its node at once,
//! so the next decision already sees the resources as taken; the watch later
//! *confirms* it, or a failed bind *forgets* it.

use std::collections::{BTreeMap, HashMap};

use super::node::{NodeInfo, NodeSpec};
use super::resources::Resources;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementState {
    /// Chosen by this scheduler; the bind may still be in flight.
    Assumed,
    /// Seen bound (`spec.nodeName` set) through the watch.
    Bound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub requests: Resources,
    pub state: PlacementState,
}

#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    nodes: BTreeMap<String, NodeInfo>,
    placements: HashMap<String, Placement>,
}

impl ClusterSnapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or updates a node. Returns whether anything a decision reads changed.
    pub fn upsert_node(&mut self, spec: NodeSpec) -> bool {
        let info = self.nodes.entry(spec.name.clone()).or_default();
        let changed = info.spec.as_ref() != Some(&spec);
        info.spec = Some(spec);
        changed
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.spec = None;
            if info.pod_count == 0 {
                self.nodes.remove(name);
            }
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Nodes whose object exists, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeSpec, &NodeInfo)> {
        self.nodes
            .values()
            .filter_map(|info| info.spec.as_ref().map(|spec| (spec, info)))
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes().map(|(spec, _)| spec.name.as_str())
    }

    pub fn node_count(&self) -> usize {
        self.nodes().count()
    }

    pub fn placement(&self, uid: &str) -> Option<&Placement> {
        self.placements.get(uid)
    }

    pub fn placed_pod_uids(&self) -> impl Iterator<Item = &str> {
        self.placements.keys().map(String::as_str)
    }

    /// Records a decision before the bind is confirmed.
    pub fn assume(&mut self, uid: &str, node: &str, requests: &Resources) {
        self.place(uid, node, requests, PlacementState::Assumed);
    }

    /// Records a pod seen bound through the watch (bound by anyone).
    pub fn observe_bound(&mut self, uid: &str, node: &str, requests: &Resources) {
        self.place(uid, node, requests, PlacementState::Bound);
    }

    /// Drops an assumption whose bind failed. A confirmed placement stays.
    /// Returns whether anything was released.
    pub fn forget(&mut self, uid: &str) -> bool {
        match self.placements.get(uid) {
            Some(p) if p.state == PlacementState::Assumed => self.release(uid),
            _ => false,
        }
    }

    /// Releases whatever the pod held (it was deleted or finished).
    pub fn release(&mut self, uid: &str) -> bool {
        let Some(old) = self.placements.remove(uid) else {
            return false;
        };
        if let Some(info) = self.nodes.get_mut(&old.node) {
            info.requested.subtract(&old.requests);
            info.pod_count -= 1;
            if info.pod_count == 0 && info.spec.is_none() {
                self.nodes.remove(&old.node);
            }
        }
        true
    }

    fn place(&mut self, uid: &str, node: &str, requests: &Resources, state: PlacementState) {
        if let Some(old) = self.placements.get(uid)
            && old.node == node
            && &old.requests == requests
        {
            self.placements.get_mut(uid).expect("present").state = state;
            return;
        }
        self.release(uid);
        let info = self.nodes.entry(node.to_string()).or_default();
        info.requested.add(requests);
        info.pod_count += 1;
        self.placements.insert(
            uid.to_string(),
            Placement {
                node: node.to_string(),
                requests: requests.clone(),
                state,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::resources::GPU;
    use crate::core::testing::gpu_node as node;

    #[test]
    fn assume_confirm_and_release_count_once() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        let ask = Resources::new().with(GPU, 2);
        s.assume("p1", "a", &ask);
        s.observe_bound("p1", "a", &ask);
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 2);
        assert!(!s.forget("p1"), "a confirmed pod is not forgotten");
        assert!(s.release("p1"));
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 0);
    }

    #[test]
    fn a_pod_bound_elsewhere_moves_its_resources() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        s.upsert_node(node("b", 8));
        let ask = Resources::new().with(GPU, 4);
        s.assume("p1", "a", &ask);
        s.observe_bound("p1", "b", &ask);
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 0);
        assert_eq!(s.node("b").unwrap().requested.get(GPU), 4);
    }

    #[test]
    fn usage_survives_a_node_object_going_and_coming_back() {
        let mut s = ClusterSnapshot::new();
        s.observe_bound("p1", "a", &Resources::new().with(GPU, 3));
        assert_eq!(s.node_count(), 0, "no object yet");
        s.upsert_node(node("a", 8));
        assert_eq!(s.node("a").unwrap().free().get(GPU), 5);
        s.remove_node("a");
        assert_eq!(s.node_count(), 0);
        s.upsert_node(node("a", 8));
        assert_eq!(s.node("a").unwrap().free().get(GPU), 5);
        s.remove_node("a");
        s.release("p1");
        assert!(s.node("a").is_none(), "empty ghost nodes are dropped");
    }

    #[test]
    fn upsert_reports_only_real_changes() {
        let mut s = ClusterSnapshot::new();
        assert!(s.upsert_node(node("a", 8)));
        assert!(!s.upsert_node(node("a", 8)));
        assert!(s.upsert_node(node("a", 4)));
    }
}
