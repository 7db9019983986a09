//! Inter-pod affinity and anti-affinity, as kube-scheduler's InterPodAffinity
//! plugin judges them: required terms filter, preferred terms score. The
//! required anti-affinity of pods already placed applies to the incoming pod
//! too (symmetry), and so do their affinity terms when scoring. Members of
//! the same gang placed earlier in the pass are assumed in the snapshot, so
//! they count exactly like pods already running.

use std::collections::{BTreeSet, HashMap};

use crate::framework::{ClusterFilterPlugin, PreparedFilter, Rejection, ScoreContext, ScorePlugin};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::PodInfo;
use crate::pod_affinity::{PodAffinityTerm, WeightedPodAffinityTerm};
use crate::snapshot::{ClusterSnapshot, Placement};

/// `pluginConfig` arguments, as kube-scheduler's `InterPodAffinityArgs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct InterPodAffinityArgs {
    /// What a placed pod's required affinity term adds to the score of nodes
    /// in its domain when the incoming pod matches it (0..=100).
    pub hard_pod_affinity_weight: i64,
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        Self { hard_pod_affinity_weight: 1 }
    }
}

#[derive(Default)]
pub struct InterPodAffinity {
    pub args: InterPodAffinityArgs,
}

impl InterPodAffinity {
    pub const NAME: &'static str = "InterPodAffinity";
    pub const AFFINITY_REASON: &'static str = "node(s) didn't match pod affinity rules";
    pub const ANTI_AFFINITY_REASON: &'static str = "node(s) didn't match pod anti-affinity rules";
    pub const EXISTING_ANTI_AFFINITY_REASON: &'static str = "node(s) didn't satisfy existing pods anti-affinity rules";
}

/// Pods counted per topology domain: label key, then value. Foldhash, as
/// these are hashed for every candidate node of every member.
type DomainCounts<'a> = FastMap<&'a str, FastMap<&'a str, i64>>;
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn count(counts: &DomainCounts<'_>, key: &str, value: &str) -> i64 {
    counts.get(key).and_then(|values| values.get(value)).copied().unwrap_or(0)
}

/// What a node scores: the sum, over the keys counted, of its domain's count.
fn node_count(counts: &DomainCounts<'_>, node: &NodeSpec) -> i64 {
    counts.iter().filter_map(|(key, values)| values.get(node.labels.get(*key)?.as_str())).sum()
}

/// The placed pods `terms` could select: those of the namespaces they
/// name, or every pod when one selects namespaces by label.
fn candidates<'a>(
    snapshot: &'a ClusterSnapshot,
    terms: impl Iterator<Item = &'a PodAffinityTerm>,
) -> Box<dyn Iterator<Item = &'a Placement> + 'a> {
    let mut namespaces: BTreeSet<&str> = BTreeSet::new();
    for term in terms {
        if term.namespace_selector.is_some() {
            return Box::new(snapshot.placements().map(|(_, p)| p));
        }
        namespaces.extend(term.namespaces.iter().map(String::as_str));
    }
    Box::new(namespaces.into_iter().flat_map(|ns| snapshot.namespace_pods(ns)))
}

/// A placed pod with the node it is on, skipping the pod being decided
/// (a what-if may have it placed already) and nodes whose object is gone.
fn placed_on<'a>(
    snapshot: &'a ClusterSnapshot,
    pod: &PodInfo,
    placed: &'a Placement,
) -> Option<(&'a Placement, &'a NodeSpec)> {
    if placed.key == pod.key {
        return None;
    }
    Some((placed, snapshot.node(&placed.node)?.spec.as_ref()?))
}

fn count_in_domain<'a>(counts: &mut DomainCounts<'a>, term: &'a PodAffinityTerm, node: &'a NodeSpec, by: i64) {
    if let Some(value) = node.labels.get(&term.topology_key) {
        *counts.entry(term.topology_key.as_str()).or_default().entry(value.as_str()).or_default() += by;
    }
}

/// Whether `term` (stated by a pod) selects `other`, a placed pod.
fn selects_placed(snapshot: &ClusterSnapshot, term: &PodAffinityTerm, other: &Placement) -> bool {
    term.selects_pod(&other.key.namespace, snapshot.namespace_labels(&other.key.namespace), &other.labels)
}

/// Whether `term` (stated by a placed pod) selects the incoming pod.
fn selects_incoming(snapshot: &ClusterSnapshot, term: &PodAffinityTerm, pod: &PodInfo) -> bool {
    term.selects_pod(&pod.key.namespace, snapshot.namespace_labels(&pod.key.namespace), &pod.labels)
}

/// What kube-scheduler's PreFilter computes: placed pods matching the
/// incoming pod's required terms, and placed pods whose required
/// anti-affinity the incoming pod matches, per domain.
struct Prepared<'a> {
    pod: &'a PodInfo,
    affinity: DomainCounts<'a>,
    anti_affinity: DomainCounts<'a>,
    existing_anti_affinity: DomainCounts<'a>,
    /// No placed pod matches all the required affinity terms, and the pod
    /// matches them itself: the first of a self-affine group, which may go
    /// to any node that has the terms' topology labels.
    first_of_group: bool,
}

impl ClusterFilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>> {
        let terms = &pod.affinity;
        let own_terms = !terms.required.is_empty() || !terms.required_anti.is_empty();
        if !own_terms && !snapshot.has_required_anti_affinity() {
            return None;
        }
        let mut existing_anti_affinity = DomainCounts::default();
        for (placed, node) in snapshot.pods_with_affinity().filter_map(|p| placed_on(snapshot, pod, p)) {
            for term in placed.affinity.required_anti.iter().filter(|t| selects_incoming(snapshot, t, pod)) {
                count_in_domain(&mut existing_anti_affinity, term, node, 1);
            }
        }
        let mut affinity = DomainCounts::default();
        let mut anti_affinity = DomainCounts::default();
        if own_terms {
            let scope = candidates(snapshot, terms.required.iter().chain(&terms.required_anti));
            for (placed, node) in scope.filter_map(|p| placed_on(snapshot, pod, p)) {
                if !terms.required.is_empty() && terms.required.iter().all(|t| selects_placed(snapshot, t, placed)) {
                    for term in &terms.required {
                        count_in_domain(&mut affinity, term, node, 1);
                    }
                }
                for term in terms.required_anti.iter().filter(|t| selects_placed(snapshot, t, placed)) {
                    count_in_domain(&mut anti_affinity, term, node, 1);
                }
            }
        }
        let first_of_group = affinity.is_empty()
            && !terms.required.is_empty()
            && terms.required.iter().all(|t| selects_incoming(snapshot, t, pod));
        Some(Box::new(Prepared { pod, affinity, anti_affinity, existing_anti_affinity, first_of_group }))
    }
}

impl PreparedFilter for Prepared<'_> {
    fn filter(&self, node: &NodeSpec) -> Result<(), Rejection> {
        let mut peers_there = true;
        for term in &self.pod.affinity.required {
            match node.labels.get(&term.topology_key) {
                Some(value) => peers_there &= count(&self.affinity, &term.topology_key, value) > 0,
                None => return Err(Rejection::because(InterPodAffinity::AFFINITY_REASON)),
            }
        }
        if !peers_there && !self.first_of_group {
            return Err(Rejection::because(InterPodAffinity::AFFINITY_REASON));
        }
        for term in &self.pod.affinity.required_anti {
            if let Some(value) = node.labels.get(&term.topology_key)
                && count(&self.anti_affinity, &term.topology_key, value) > 0
            {
                return Err(Rejection::because(InterPodAffinity::ANTI_AFFINITY_REASON));
            }
        }
        if node_count(&self.existing_anti_affinity, node) > 0 {
            return Err(Rejection::because(InterPodAffinity::EXISTING_ANTI_AFFINITY_REASON));
        }
        Ok(())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Each placed pod adds the weight of every preferred term (of the
    /// incoming pod, or of its own) that selects the other, to its domain;
    /// anti-affinity terms subtract. A node scores what its domains gathered.
    fn score_all(&self, ctx: &ScoreContext<'_>, nodes: &[(&NodeSpec, &NodeInfo)], out: &mut [i64]) {
        out.fill(0);
        let (pod, snapshot) = (ctx.pod, ctx.snapshot);
        let own = &pod.affinity;
        let mut domains = DomainCounts::default();
        let own_preferences = own.preferred.iter().map(|w| (w, 1)).chain(own.preferred_anti.iter().map(|w| (w, -1)));
        let own_preferences: Vec<(&WeightedPodAffinityTerm, i64)> = own_preferences.collect();
        if !own_preferences.is_empty() {
            let scope = candidates(snapshot, own_preferences.iter().map(|(w, _)| &w.term));
            for (placed, node) in scope.filter_map(|p| placed_on(snapshot, pod, p)) {
                for (w, sign) in own_preferences.iter().filter(|(w, _)| selects_placed(snapshot, &w.term, placed)) {
                    count_in_domain(&mut domains, &w.term, node, sign * i64::from(w.weight));
                }
            }
        }
        for (placed, node) in snapshot.pods_with_affinity().filter_map(|p| placed_on(snapshot, pod, p)) {
            let theirs = &placed.affinity;
            if self.args.hard_pod_affinity_weight > 0 {
                for term in theirs.required.iter().filter(|t| selects_incoming(snapshot, t, pod)) {
                    count_in_domain(&mut domains, term, node, self.args.hard_pod_affinity_weight);
                }
            }
            for w in theirs.preferred.iter().filter(|w| selects_incoming(snapshot, &w.term, pod)) {
                count_in_domain(&mut domains, &w.term, node, i64::from(w.weight));
            }
            for w in theirs.preferred_anti.iter().filter(|w| selects_incoming(snapshot, &w.term, pod)) {
                count_in_domain(&mut domains, &w.term, node, -i64::from(w.weight));
            }
        }
        for (slot, (spec, _)) in out.iter_mut().zip(nodes) {
            *slot = node_count(&domains, spec);
        }
    }

    /// Onto 0..=100 between the lowest (at most 0) and the highest (at least 0) raw score.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0).max(0);
        let min = scores.iter().copied().min().unwrap_or(0).min(0);
        let spread = max - min;
        for s in scores.iter_mut() {
            *s = if spread > 0 { 100 * (*s - min) / spread } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use crate::gang::{GangId, GangKind};
    use crate::gang_placement::{GangRequest, place_gang};
    use crate::pod::PodInfo;
    use crate::pod_affinity::WeightedPodAffinityTerm;
    use crate::schedule::choose_node;
    use crate::testing::{
        HOSTNAME, ZONE, affinity_term, gpu_pod, labelled, place_one, profile_with_defaults, selector, zoned_cluster,
    };

    fn replica(name: &str) -> PodInfo {
        let mut pod = labelled(gpu_pod(name, 1), &[("app", "web")]);
        pod.affinity.required_anti.push(affinity_term(HOSTNAME, &[("app", "web")]));
        pod
    }

    #[test]
    fn three_anti_affine_replicas_on_two_nodes_leave_one_with_kube_schedulers_message() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z1")]);
        let first = place_one(&mut s, &replica("web-0")).unwrap();
        let second = place_one(&mut s, &replica("web-1")).unwrap();
        assert_ne!(first, second);
        let err = place_one(&mut s, &replica("web-2")).unwrap_err();
        assert_eq!(err.to_string(), "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.");
    }

    #[test]
    fn a_placed_pods_anti_affinity_keeps_matching_pods_out_of_its_domain() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
        let mut loner = gpu_pod("loner", 1);
        loner.affinity.required_anti.push(affinity_term(ZONE, &[("app", "web")]));
        s.observe_bound(loner.placement("a"), None);
        let web = labelled(gpu_pod("web", 1), &[("app", "web")]);
        assert_eq!(place_one(&mut s, &web).unwrap(), "c", "zone z1 is the loner's");
        let mut in_z1 = labelled(gpu_pod("web-2", 1), &[("app", "web")]);
        in_z1.node_selector.insert(ZONE.into(), "z1".into());
        let err = place_one(&mut s, &in_z1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             2 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        assert!(place_one(&mut s, &gpu_pod("other", 1)).is_ok(), "pods it does not select go anywhere");
    }

    #[test]
    fn required_affinity_follows_its_peers_and_the_first_of_a_group_goes_anywhere_labelled() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z2"), ("c", "z2")]);
        let mut unlabelled = crate::testing::gpu_node("bare", 8);
        unlabelled.labels.insert("other".into(), "x".into());
        s.upsert_node(unlabelled);
        let member = |name: &str| {
            let mut pod = labelled(gpu_pod(name, 1), &[("group", "g")]);
            pod.affinity.required.push(affinity_term(ZONE, &[("group", "g")]));
            pod
        };
        let first = place_one(&mut s, &member("g-0")).unwrap();
        assert_ne!(first, "bare", "the first of a group still needs the topology label");
        let zone = if first == "a" { "z1" } else { "z2" };
        for i in 1..4 {
            let node = place_one(&mut s, &member(&format!("g-{i}"))).unwrap();
            assert_eq!(s.node(&node).unwrap().spec.as_ref().unwrap().labels[ZONE], zone);
        }
        // A pod that wants the group but is not in it has no first-pod pass.
        let mut follower = gpu_pod("f", 1);
        follower.affinity.required.push(affinity_term(ZONE, &[("group", "other")]));
        let err = place_one(&mut s, &follower).unwrap_err();
        assert!(err.to_string().contains("4 node(s) didn't match pod affinity rules"), "{err}");
    }

    #[test]
    fn namespace_selectors_read_namespace_labels() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z2")]);
        let mut db = labelled(gpu_pod("db", 1), &[("app", "db")]);
        db.key.namespace = "data".into();
        s.observe_bound(db.placement("b"), None);
        let mut term = affinity_term(ZONE, &[("app", "db")]);
        term.namespaces.clear();
        term.namespace_selector = Some(selector(&[("team", "data")]));
        let mut pod = gpu_pod("client", 1);
        pod.affinity.required.push(term);
        assert!(place_one(&mut s, &pod).is_err(), "namespace not labelled: no peer");
        s.set_namespace("data", Some(BTreeMap::from([("team".to_string(), "data".to_string())])));
        assert_eq!(place_one(&mut s, &pod).unwrap(), "b");
    }

    #[test]
    fn preferred_terms_score_towards_and_away_from_peers() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z2")]);
        s.observe_bound(labelled(gpu_pod("cache", 0), &[("app", "cache")]).placement("b"), None);
        let mut near = gpu_pod("near", 1);
        near.affinity
            .preferred
            .push(WeightedPodAffinityTerm { weight: 50, term: affinity_term(ZONE, &[("app", "cache")]) });
        assert_eq!(choose_node(&profile_with_defaults(), &near, &s, None).unwrap().node, "b");
        let mut away = gpu_pod("away", 1);
        away.affinity
            .preferred_anti
            .push(WeightedPodAffinityTerm { weight: 50, term: affinity_term(ZONE, &[("app", "cache")]) });
        assert_eq!(choose_node(&profile_with_defaults(), &away, &s, None).unwrap().node, "a");
    }

    #[test]
    fn a_gang_of_anti_affine_members_is_placed_one_per_node_or_not_at_all() {
        let mut s = zoned_cluster(&[("a", "z1"), ("b", "z1"), ("c", "z1")]);
        let id = GangId::new(GangKind::PodGroup, "default", "g");
        let members: Vec<PodInfo> =
            (0..4).map(|i| PodInfo { job: Some(id.clone()), ..replica(&format!("m{i}")) }).collect();
        let three = GangRequest { gang: Some(&id), members: members[..3].iter().collect(), required: 3, within: None };
        let placed = place_gang(&profile_with_defaults(), &three, &mut s, &HashSet::new()).unwrap();
        let nodes: BTreeSet<&str> = placed.members.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes.len(), 3, "{placed:?}");
        for m in &placed.members {
            s.forget(&m.uid);
        }
        let four = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 4, within: None };
        let err = place_gang(&profile_with_defaults(), &four, &mut s, &HashSet::new()).unwrap_err();
        assert_eq!(err.placeable, 3);
        assert!(err.to_string().contains("3 node(s) didn't match pod anti-affinity rules"), "{err}");
        assert_eq!(s.placements().count(), 0, "nothing stays assumed");
    }
}
