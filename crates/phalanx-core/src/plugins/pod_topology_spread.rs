//! Topology spread constraints, as kube-scheduler's PodTopologySpread plugin
//! judges them: `DoNotSchedule` constraints filter (a node is rejected when
//! placing the pod there would make its domain exceed the global minimum by
//! more than `maxSkew`), `ScheduleAnyway` constraints score (fewer matching
//! pods in the node's domain, higher score). Gang members placed earlier in
//! the pass are assumed in the snapshot and count like running pods. A pod
//! that states no constraints gets the profile's defaults
//! (`spread_defaults`).

use std::collections::HashMap;

use super::node_affinity::pod_may_go_to;
use super::taint_toleration::untolerated_taint;
use crate::framework::{ClusterFilterPlugin, PreparedFilter, Rejection, ScoreContext, ScorePlugin};
use crate::label_selector::selects;
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;
use crate::snapshot::ClusterSnapshot;
use crate::spread_defaults::SpreadDefaulting;
use crate::topology_spread::{InclusionPolicy, SpreadConstraint, WhenUnsatisfiable};

#[derive(Default)]
pub struct PodTopologySpread {
    pub defaulting: SpreadDefaulting,
}

impl PodTopologySpread {
    pub const NAME: &'static str = "PodTopologySpread";
    pub const REASON: &'static str = "node(s) didn't match pod topology spread constraints";
    pub const MISSING_LABEL_REASON: &'static str =
        "node(s) didn't match pod topology spread constraints (missing required label)";
}

/// Per-node counting is done for this key in the score, not per domain.
const HOSTNAME: &str = "kubernetes.io/hostname";

/// Matching pods per domain of one constraint (foldhash: hashed for every
/// candidate node of every member).
type DomainCounts<'a> = HashMap<&'a str, i64, foldhash::fast::RandomState>;

/// A raw score for nodes the score leaves out (missing a topology label):
/// they get 0 after normalizing.
const IGNORED: i64 = -1;

impl PodTopologySpread {
    /// The pod's constraints of one kind; a pod that states none gets the
    /// defaults, which select the pods of its workload.
    fn constraints(&self, pod: &PodInfo, snapshot: &ClusterSnapshot, when: WhenUnsatisfiable) -> Vec<SpreadConstraint> {
        if pod.spread.is_empty() {
            self.defaulting.for_pod(pod, snapshot.workloads(), when)
        } else {
            pod.spread.iter().filter(|c| c.when_unsatisfiable == when).cloned().collect()
        }
    }

    /// Whether the score leaves out nodes that lack one of the keys. Not
    /// for kube-scheduler's own defaults: nodes without a zone label are
    /// still spread over by hostname.
    fn scores_only_nodes_with_every_key(&self, pod: &PodInfo) -> bool {
        !pod.spread.is_empty() || self.defaulting != SpreadDefaulting::System
    }
}

/// A node without the key is in the domain "", as kube-scheduler counts it
/// where not every key is required.
fn label_or_empty<'a>(node: &'a NodeSpec, key: &str) -> &'a str {
    node.labels.get(key).map_or("", String::as_str)
}

fn has_every_key(node: &NodeSpec, constraints: &[SpreadConstraint]) -> bool {
    constraints.iter().all(|c| node.labels.contains_key(&c.topology_key))
}

/// Whether the node counts as a domain member for this constraint, by its
/// node-affinity and taint inclusion policies.
fn counts_node(c: &SpreadConstraint, pod: &PodInfo, node: &NodeSpec) -> bool {
    (c.node_affinity_policy == InclusionPolicy::Ignore || pod_may_go_to(pod, node))
        && (c.node_taints_policy == InclusionPolicy::Ignore || untolerated_taint(pod, node).is_none())
}

/// Pods on the node, in the incoming pod's namespace, that the constraint selects.
fn matching_pods(snapshot: &ClusterSnapshot, usage: &NodeInfo, c: &SpreadConstraint, pod: &PodInfo) -> i64 {
    usage
        .pods
        .iter()
        .filter_map(|uid| snapshot.placement(uid))
        .filter(|p| p.key != pod.key && p.key.namespace == pod.key.namespace && selects(c.selector.as_ref(), &p.labels))
        .count() as i64
}

/// What kube-scheduler's PreFilter computes: matching pods per domain, and
/// the global minimum, for each `DoNotSchedule` constraint.
struct Prepared<'a> {
    pod: &'a PodInfo,
    constraints: Vec<SpreadConstraint>,
    counts: Vec<DomainCounts<'a>>,
    minimum: Vec<i64>,
}

impl ClusterFilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>> {
        let constraints = self.constraints(pod, snapshot, WhenUnsatisfiable::DoNotSchedule);
        if constraints.is_empty() {
            return None;
        }
        let mut counts: Vec<DomainCounts> = vec![DomainCounts::default(); constraints.len()];
        // Every node with the key counts as a domain member, unless the pod's
        // node affinity or the taints narrow them, or several keys must all
        // be present: then the nodes are walked (as kube-scheduler does).
        let every_node_counts = constraints.len() == 1
            && constraints.iter().all(|c| {
                let affinity_free = pod.node_selector.is_empty() && pod.required_terms.is_empty();
                (c.node_affinity_policy == InclusionPolicy::Ignore || affinity_free)
                    && c.node_taints_policy == InclusionPolicy::Ignore
            });
        let domains: Vec<usize> = if every_node_counts {
            constraints.iter().map(|c| snapshot.label_value_count(&c.topology_key)).collect()
        } else {
            for (spec, _) in snapshot.nodes().filter(|(spec, _)| has_every_key(spec, &constraints)) {
                for (c, domains) in constraints.iter().zip(counts.iter_mut()) {
                    if counts_node(c, pod, spec) {
                        domains.entry(spec.labels[&c.topology_key].as_str()).or_default();
                    }
                }
            }
            counts.iter().map(|c| c.len()).collect()
        };
        // Only pods of the pod's own namespace count.
        for placed in snapshot.namespace_pods(&pod.key.namespace).filter(|p| p.key != pod.key) {
            let Some(spec) = snapshot.node(&placed.node).and_then(|n| n.spec.as_ref()) else { continue };
            if !has_every_key(spec, &constraints) {
                continue;
            }
            for (c, domains) in constraints.iter().zip(counts.iter_mut()) {
                if counts_node(c, pod, spec) && selects(c.selector.as_ref(), &placed.labels) {
                    *domains.entry(spec.labels[&c.topology_key].as_str()).or_default() += 1;
                }
            }
        }
        let minimum = constraints
            .iter()
            .zip(&counts)
            .zip(&domains)
            .map(|((c, counted), &domains)| {
                // Too few domains, or one without a matching pod: the global minimum is 0.
                if domains < c.min_domains.max(1) as usize || counted.len() < domains {
                    0
                } else {
                    counted.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        Some(Box::new(Prepared { pod, constraints, counts, minimum }))
    }
}

impl PreparedFilter for Prepared<'_> {
    fn filter(&self, node: &NodeSpec) -> Result<(), Rejection> {
        for ((c, domains), minimum) in self.constraints.iter().zip(&self.counts).zip(&self.minimum) {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Err(Rejection::because(PodTopologySpread::MISSING_LABEL_REASON));
            };
            let itself = i64::from(selects(c.selector.as_ref(), &self.pod.labels));
            let skew = domains.get(value.as_str()).copied().unwrap_or(0) + itself - minimum;
            if skew > i64::from(c.max_skew) {
                return Err(Rejection::because(PodTopologySpread::REASON));
            }
        }
        Ok(())
    }
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Per `ScheduleAnyway` constraint: the matching pods in the node's
    /// domain, weighted by the log of the number of domains among the
    /// candidates, plus `maxSkew - 1`; lower is better (see `normalize`).
    fn score_all(&self, ctx: &ScoreContext<'_>, nodes: &[(&NodeSpec, &NodeInfo)], out: &mut [i64]) {
        let (pod, snapshot) = (ctx.pod, ctx.snapshot);
        let constraints = self.constraints(pod, snapshot, WhenUnsatisfiable::ScheduleAnyway);
        if constraints.is_empty() {
            out.fill(IGNORED);
            return;
        }
        let every_key = self.scores_only_nodes_with_every_key(pod);
        let counted = |spec: &NodeSpec| !every_key || has_every_key(spec, &constraints);
        let scored: Vec<bool> = nodes.iter().map(|(spec, _)| counted(spec)).collect();
        let mut counts: Vec<DomainCounts> = vec![DomainCounts::default(); constraints.len()];
        for ((spec, _), _) in nodes.iter().zip(&scored).filter(|(_, s)| **s) {
            for (c, domains) in constraints.iter().zip(counts.iter_mut()) {
                if c.topology_key != HOSTNAME {
                    domains.entry(label_or_empty(spec, &c.topology_key)).or_default();
                }
            }
        }
        let candidates = scored.iter().filter(|s| **s).count();
        let weights: Vec<f64> = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == HOSTNAME { candidates } else { domains.len() };
                ((size + 2) as f64).ln()
            })
            .collect();
        for (spec, usage) in snapshot.nodes().filter(|(spec, _)| counted(spec)) {
            for (c, domains) in constraints.iter().zip(counts.iter_mut()) {
                if c.topology_key == HOSTNAME || !counts_node(c, pod, spec) {
                    continue;
                }
                if let Some(count) = domains.get_mut(label_or_empty(spec, &c.topology_key)) {
                    *count += matching_pods(snapshot, usage, c, pod);
                }
            }
        }
        for ((slot, (spec, usage)), scored) in out.iter_mut().zip(nodes).zip(&scored) {
            if !scored {
                *slot = IGNORED;
                continue;
            }
            let mut score = 0.0;
            for ((c, domains), weight) in constraints.iter().zip(&counts).zip(&weights) {
                let Some(value) = spec.labels.get(&c.topology_key).map(String::as_str) else { continue };
                let count = if c.topology_key == HOSTNAME {
                    matching_pods(snapshot, usage, c, pod)
                } else {
                    domains.get(value).copied().unwrap_or(0)
                };
                score += count as f64 * weight + f64::from(c.max_skew - 1);
            }
            *slot = score.round() as i64;
        }
    }

    /// The fewest matching pods get 100; ignored nodes 0.
    fn normalize(&self, scores: &mut [i64]) {
        let counted = || scores.iter().copied().filter(|s| *s != IGNORED);
        let max = counted().max().unwrap_or(0);
        let min = counted().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = match *s {
                IGNORED => 0,
                _ if max == 0 => 100,
                raw => 100 * (max + min - raw) / max,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::gang::{GangId, GangKind};
    use crate::gang_placement::{GangRequest, place_gang};
    use crate::label_selector::LabelSelector;
    use crate::schedule::choose_node;
    use crate::spread_defaults::{PodController, WorkloadKey, WorkloadKind, WorkloadSelector};
    use crate::testing::{
        ZONE, gpu_pod, labelled, place_one, profile_with_defaults, spread, zoned_cluster, zoned_node,
    };

    fn spread_pod(name: &str, max_skew: i32) -> PodInfo {
        let mut pod = labelled(gpu_pod(name, 1), &[("app", "train")]);
        pod.spread.push(spread(ZONE, max_skew, &[("app", "train")]));
        pod
    }

    fn per_zone(s: &ClusterSnapshot) -> BTreeMap<String, usize> {
        let mut zones = BTreeMap::new();
        for (spec, usage) in s.nodes() {
            *zones.entry(spec.labels[ZONE].clone()).or_default() += usage.pods.len();
        }
        zones
    }

    #[test]
    fn six_pods_with_max_skew_one_over_three_zones_land_two_per_zone() {
        let mut s = zoned_cluster(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")]);
        for i in 0..6 {
            place_one(&mut s, &spread_pod(&format!("p{i}"), 1)).unwrap();
        }
        assert_eq!(per_zone(&s), BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]));
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let mut s = zoned_cluster(&[("a1", "a"), ("b1", "b")]);
        let pod = |name: &str| {
            let mut p = spread_pod(name, 1);
            p.spread[0].min_domains = 3;
            p
        };
        place_one(&mut s, &pod("p0")).unwrap();
        place_one(&mut s, &pod("p1")).unwrap();
        let err = place_one(&mut s, &pod("p2")).unwrap_err();
        assert_eq!(err.to_string(), "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints.");
    }

    #[test]
    fn nodes_without_the_topology_label_are_rejected_with_their_own_reason() {
        let mut s = zoned_cluster(&[("a1", "a")]);
        s.upsert_node(crate::testing::gpu_node("bare", 8));
        let mut pod = spread_pod("p", 1);
        pod.requests = pod.requests.with(crate::resources::GPU, 8);
        s.observe_bound(gpu_pod("filler", 8).placement("a1"), None);
        let err = place_one(&mut s, &pod).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 {}.",
                PodTopologySpread::MISSING_LABEL_REASON
            )
        );
    }

    #[test]
    fn the_node_affinity_policy_decides_whether_unreachable_zones_count() {
        for (policy, third_fits) in [(InclusionPolicy::Honor, true), (InclusionPolicy::Ignore, false)] {
            let mut s = zoned_cluster(&[("a1", "a"), ("b1", "b"), ("c1", "c")]);
            let pod = |name: &str| {
                let mut p = spread_pod(name, 1);
                p.spread[0].node_affinity_policy = policy;
                p.required_terms.push(crate::pod::NodeSelectorTerm {
                    match_labels: vec![crate::pod::SelectorRequirement {
                        key: ZONE.into(),
                        operator: crate::pod::SelectorOperator::In(vec!["a".into(), "b".into()]),
                    }],
                    match_node_name: vec![],
                });
                p
            };
            place_one(&mut s, &pod("p0")).unwrap();
            place_one(&mut s, &pod("p1")).unwrap();
            assert_eq!(place_one(&mut s, &pod("p2")).is_ok(), third_fits, "{policy:?}");
        }
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_zone() {
        let mut s = zoned_cluster(&[("a1", "a"), ("b1", "b")]);
        s.observe_bound(labelled(gpu_pod("old", 1), &[("app", "train")]).placement("a1"), None);
        let mut pod = spread_pod("p", 1);
        pod.spread[0].when_unsatisfiable = WhenUnsatisfiable::ScheduleAnyway;
        assert_eq!(choose_node(&profile_with_defaults(), &pod, &s, None).unwrap().node, "b1");
    }

    /// PodTopologySpread's normalized scores for `pod` on every node, by name.
    fn spread_scores(plugin: &PodTopologySpread, pod: &PodInfo, s: &ClusterSnapshot) -> BTreeMap<String, i64> {
        let nodes: Vec<(&NodeSpec, &NodeInfo)> = s.nodes().collect();
        let mut scores = vec![0; nodes.len()];
        plugin.score_all(&ScoreContext { pod, snapshot: s, job: None }, &nodes, &mut scores);
        plugin.normalize(&mut scores);
        nodes.iter().map(|(spec, _)| spec.name.clone()).zip(scores).collect()
    }

    #[test]
    fn a_pod_of_a_workload_without_constraints_is_spread_by_kube_scheduler_s_defaults() {
        // Nodes without a zone label: the hostname default still applies.
        let mut s = ClusterSnapshot::new();
        for name in ["n1", "n2"] {
            let mut node = zoned_node(name, 8, "-");
            node.labels.remove(ZONE);
            s.upsert_node(node);
        }
        let web = |name: &str| PodInfo {
            controller: Some(PodController { kind: WorkloadKind::ReplicaSet, name: "web-1".into() }),
            ..labelled(gpu_pod(name, 0), &[("app", "web")])
        };
        for name in ["old-0", "old-1"] {
            s.observe_bound(web(name).placement("n1"), None);
        }
        let system = PodTopologySpread::default();
        let pod = web("new");
        let even = BTreeMap::from([("n1".to_string(), 0), ("n2".to_string(), 0)]);
        assert_eq!(spread_scores(&system, &pod, &s), even, "the ReplicaSet's selector unknown: no default");

        let key = |kind, name: &str| WorkloadKey { kind, namespace: "default".into(), name: name.into() };
        let app_web = LabelSelector::equal_to([("app", "web")]);
        let set = WorkloadSelector { key: key(WorkloadKind::ReplicaSet, "web-1"), selector: app_web.clone() };
        s.workloads_mut().apply(set);
        let scores = spread_scores(&system, &pod, &s);
        assert!(scores["n2"] > scores["n1"], "away from its ReplicaSet's pods: {scores:?}");

        // A Service that selects it is enough, without a controller.
        s.workloads_mut().delete(&key(WorkloadKind::ReplicaSet, "web-1"));
        s.workloads_mut().apply(WorkloadSelector { key: key(WorkloadKind::Service, "web"), selector: app_web });
        let lone = PodInfo { controller: None, ..web("lone") };
        let scores = spread_scores(&system, &lone, &s);
        assert!(scores["n2"] > scores["n1"], "away from its Service's pods: {scores:?}");

        let none = PodTopologySpread { defaulting: SpreadDefaulting::List(vec![]) };
        assert_eq!(spread_scores(&none, &lone, &s), even, "a profile that lists no defaults");
        let own = PodInfo { spread: vec![spread(ZONE, 1, &[("app", "web")])], ..web("own") };
        assert_eq!(spread_scores(&system, &own, &s), even, "its own constraint (DoNotSchedule) replaces the defaults");
    }

    #[test]
    fn gang_members_placed_earlier_in_the_pass_count() {
        let mut s = zoned_cluster(&[("a1", "a"), ("a2", "a"), ("b1", "b")]);
        let id = GangId::new(GangKind::PodGroup, "default", "g");
        let members: Vec<PodInfo> =
            (0..4).map(|i| PodInfo { job: Some(id.clone()), ..spread_pod(&format!("m{i}"), 1) }).collect();
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 4, within: None };
        place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        assert_eq!(per_zone(&s), BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
    }

    proptest::proptest! {
        /// With DoNotSchedule, placing pods one after another never leaves
        /// two zones further apart than maxSkew, however full the nodes are.
        #[test]
        fn do_not_schedule_never_exceeds_max_skew(
            zones_of_nodes in proptest::collection::vec(0usize..4, 1..10),
            gpus in proptest::collection::vec(1i64..4, 1..10),
            max_skew in 1i32..3,
            pods in 1usize..20,
        ) {
            let mut s = ClusterSnapshot::new();
            for (i, zone) in zones_of_nodes.iter().enumerate() {
                s.upsert_node(zoned_node(&format!("n{i}"), gpus[i % gpus.len()], &format!("z{zone}")));
            }
            for i in 0..pods {
                let _ = place_one(&mut s, &spread_pod(&format!("p{i}"), max_skew));
                let counts = per_zone(&s);
                let (max, min) = (counts.values().max().unwrap(), counts.values().min().unwrap());
                proptest::prop_assert!(max - min <= max_skew as usize, "{counts:?}");
            }
        }
    }
}
