//! The independent checker: which nodes of a case a probe may run on, by the
//! rules of the Kubernetes API documentation and kube-scheduler's default
//! filters, computed straight from the generator's model. It shares no code
//! with phalanx, so a bug in phalanx's filters cannot hide here.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;

/// The first rule a node breaks, named after kube-scheduler's filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    NodeUnschedulable,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    VolumeRestrictions,
    VolumeBinding,
    PodTopologySpread,
    InterPodAffinity,
}

impl Rule {
    pub const ALL: [Rule; 9] = [
        Rule::NodeUnschedulable,
        Rule::TaintToleration,
        Rule::NodeAffinity,
        Rule::NodePorts,
        Rule::NodeResourcesFit,
        Rule::VolumeRestrictions,
        Rule::VolumeBinding,
        Rule::PodTopologySpread,
        Rule::InterPodAffinity,
    ];
}

/// Each node of the case, and the rule it breaks for the probe (`None`: it fits).
pub type Verdicts = BTreeMap<String, Option<Rule>>;

/// What the checker knows besides the case: the labels of each namespace.
pub struct World<'a> {
    pub case: &'a Case,
    pub namespace_labels: &'a BTreeMap<String, Labels>,
}

pub fn verdicts(world: &World, probe: &PodModel) -> Verdicts {
    let case = world.case;
    case.nodes.iter().map(|node| (node.name.clone(), first_broken_rule(world, probe, node))).collect()
}

fn first_broken_rule(world: &World, probe: &PodModel, node: &NodeModel) -> Option<Rule> {
    let case = world.case;
    let on_node: Vec<&PodModel> = case.bound.iter().filter(|p| p.node.as_deref() == Some(&node.name)).collect();
    let checks: [(Rule, &dyn Fn() -> bool); 9] = [
        (Rule::NodeUnschedulable, &|| {
            !node.unschedulable
                || tolerated(
                    &probe.tolerations,
                    &Taint {
                        key: "node.kubernetes.io/unschedulable".into(),
                        value: String::new(),
                        effect: Effect::NoSchedule,
                    },
                )
        }),
        (Rule::TaintToleration, &|| untolerated_hard_taint(probe, node).is_none()),
        (Rule::NodeAffinity, &|| required_node_affinity_matches(probe, node)),
        (Rule::NodePorts, &|| {
            probe
                .host_ports
                .iter()
                .all(|want| on_node.iter().flat_map(|p| &p.host_ports).all(|held| !ports_clash(want, held)))
        }),
        (Rule::NodeResourcesFit, &|| {
            let cpu: u64 = on_node.iter().map(|p| p.cpu_milli).sum();
            let memory: u64 = on_node.iter().map(|p| p.memory_mi).sum();
            // A resource the pod does not request is not checked: a pod
            // asking no CPU fits a node whose CPU is overcommitted already.
            (probe.cpu_milli == 0 || cpu + probe.cpu_milli <= node.cpu_milli)
                && (probe.memory_mi == 0 || memory + probe.memory_mi <= node.memory_mi)
                && on_node.len() < node.max_pods as usize
        }),
        (Rule::VolumeRestrictions, &|| !holds_claim_held_by_another(case, probe)),
        (Rule::VolumeBinding, &|| volumes_can_bind(case, probe, node)),
        (Rule::PodTopologySpread, &|| spread_allows(world, probe, node)),
        (Rule::InterPodAffinity, &|| inter_pod_affinity_allows(world, probe, node)),
    ];
    checks.iter().find(|(_, holds)| !holds()).map(|(rule, _)| *rule)
}

pub fn matches(requirements: &Requirements, labels: &Labels) -> bool {
    requirements.iter().all(|r| {
        let value = labels.get(&r.key);
        match &r.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    })
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        t.effect.is_none_or(|e| e == taint.effect)
            && t.key.as_ref().is_none_or(|k| *k == taint.key)
            && t.value.as_ref().is_none_or(|v| *v == taint.value)
    })
}

fn untolerated_hard_taint<'a>(pod: &PodModel, node: &'a NodeModel) -> Option<&'a Taint> {
    node.taints.iter().find(|t| t.effect != Effect::PreferNoSchedule && !tolerated(&pod.tolerations, t))
}

fn required_node_affinity_matches(pod: &PodModel, node: &NodeModel) -> bool {
    pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
        && (pod.node_terms.is_empty() || pod.node_terms.iter().any(|term| matches(term, &node.labels)))
}

/// Two host ports clash on one protocol and port unless both name
/// different addresses.
fn ports_clash(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

fn holds_claim_held_by_another(case: &Case, probe: &PodModel) -> bool {
    probe.volumes.iter().any(|v| match v {
        VolumeUse::Bound(name) => {
            let claim = case.bound_claims.iter().find(|c| c.name == *name).expect("a bound claim of the case");
            claim.read_write_once_pod
                && case.bound.iter().any(|p| p.volumes.iter().any(|u| matches!(u, VolumeUse::Bound(n) if n == name)))
        }
        _ => false,
    })
}

fn volumes_can_bind(case: &Case, probe: &PodModel, node: &NodeModel) -> bool {
    probe.volumes.iter().all(|v| match v {
        VolumeUse::Bound(name) => {
            let claim = case.bound_claims.iter().find(|c| c.name == *name).expect("a bound claim of the case");
            claim.volume_affinity.as_ref().is_none_or(|r| matches(&vec![r.clone()], &node.labels))
        }
        VolumeUse::UnboundImmediate => false,
        VolumeUse::LocalVolumes { request_gi, volumes } => {
            volumes.iter().any(|l| l.node == node.name && l.size_gi >= *request_gi)
        }
        VolumeUse::Provisioned { request_gi, allowed_zones, capacity } => {
            let zone = node.labels.get(ZONE);
            allowed_zones.as_ref().is_none_or(|zones| zone.is_some_and(|z| zones.contains(z)))
                && capacity.as_ref().is_none_or(|rooms| {
                    rooms
                        .iter()
                        .any(|r| zone == Some(&r.zone) && r.maximum_volume_gi.unwrap_or(r.capacity_gi) >= *request_gi)
                })
        }
    })
}

/// The namespaces a term looks in, for a pod in `own`.
fn term_namespaces(world: &World, term: &PodTerm, own: &str) -> BTreeSet<String> {
    match &term.namespaces {
        Namespaces::Own => [own.to_string()].into(),
        Namespaces::Listed(names) => names.iter().cloned().collect(),
        Namespaces::Selected(wanted) => world
            .namespace_labels
            .iter()
            .filter(|(_, labels)| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

/// Whether `pod` is one the term of a pod in namespace `owner` selects.
fn term_selects(world: &World, term: &PodTerm, owner: &str, pod: &PodModel) -> bool {
    term_namespaces(world, term, owner).contains(&pod.namespace) && matches(&term.selector, &pod.labels)
}

fn node_of<'a>(case: &'a Case, pod: &PodModel) -> &'a NodeModel {
    let name = pod.node.as_ref().expect("a bound pod");
    case.nodes.iter().find(|n| n.name == *name).expect("the bound pod's node")
}

/// Required inter-pod affinity as the API documents it (and kube-scheduler
/// implements it): each affinity term's domain on this node must hold a pod
/// that matches every affinity term, unless no pod anywhere does and the
/// probe matches them all itself; no anti-affinity term's domain may hold a
/// pod it selects; and no bound pod's anti-affinity may select the probe
/// within its domain.
fn inter_pod_affinity_allows(world: &World, probe: &PodModel, node: &NodeModel) -> bool {
    let case = world.case;
    if !probe.affinity.is_empty() {
        if probe.affinity.iter().any(|t| !node.labels.contains_key(&t.topology_key)) {
            return false;
        }
        let matching: Vec<&PodModel> = case
            .bound
            .iter()
            .filter(|p| probe.affinity.iter().all(|t| term_selects(world, t, &probe.namespace, p)))
            .collect();
        let in_domain = |term: &PodTerm, pod: &PodModel| {
            node_of(case, pod).labels.get(&term.topology_key) == node.labels.get(&term.topology_key)
        };
        let every_term_has_one = probe.affinity.iter().all(|t| matching.iter().any(|p| in_domain(t, p)));
        if !every_term_has_one {
            let none_anywhere = matching.iter().all(|p| {
                let labels = &node_of(case, p).labels;
                probe.affinity.iter().all(|t| !labels.contains_key(&t.topology_key))
            });
            let selects_itself = probe.affinity.iter().all(|t| term_selects(world, t, &probe.namespace, probe));
            if !(none_anywhere && selects_itself) {
                return false;
            }
        }
    }
    let same_domain = |key: &str, pod: &PodModel| {
        node.labels.get(key).is_some_and(|value| node_of(case, pod).labels.get(key) == Some(value))
    };
    let repelled = probe.anti_affinity.iter().any(|term| {
        case.bound.iter().any(|p| term_selects(world, term, &probe.namespace, p) && same_domain(&term.topology_key, p))
    });
    let repelling = case.bound.iter().any(|p| {
        p.anti_affinity
            .iter()
            .any(|term| term_selects(world, term, &p.namespace, probe) && same_domain(&term.topology_key, p))
    });
    !repelled && !repelling
}

fn spread_selector(spread: &Spread, probe: &PodModel) -> Requirements {
    let mut selector = spread.selector.clone();
    for key in &spread.match_label_keys {
        if let Some(value) = probe.labels.get(key) {
            selector.push(Requirement { key: key.clone(), operator: Operator::In(vec![value.clone()]) });
        }
    }
    selector
}

/// `DoNotSchedule` constraints: the skew the probe would make on this node's
/// domain (its matching pods, plus the probe if it matches, minus the
/// fewest in any eligible domain, or 0 while there are fewer eligible
/// domains than `minDomains`) must stay within `maxSkew`. Eligible nodes
/// carry every constraint's key and pass the inclusion policies (node
/// affinity honoured, taints ignored, unless the constraint says otherwise).
fn spread_allows(world: &World, probe: &PodModel, node: &NodeModel) -> bool {
    let case = world.case;
    let required: Vec<&Spread> = probe.spread.iter().filter(|s| s.required).collect();
    required.iter().all(|spread| {
        let Some(value) = node.labels.get(&spread.topology_key) else {
            return false;
        };
        let selector = spread_selector(spread, probe);
        let mut domains: BTreeMap<&String, i64> = BTreeMap::new();
        for candidate in &case.nodes {
            if !required.iter().all(|s| candidate.labels.contains_key(&s.topology_key)) {
                continue;
            }
            if spread.node_affinity_policy != Some(InclusionPolicy::Ignore)
                && !required_node_affinity_matches(probe, candidate)
            {
                continue;
            }
            if spread.node_taints_policy == Some(InclusionPolicy::Honor)
                && untolerated_hard_taint(probe, candidate).is_some()
            {
                continue;
            }
            let count = case
                .bound
                .iter()
                .filter(|p| {
                    p.node.as_deref() == Some(&candidate.name)
                        && p.namespace == probe.namespace
                        && matches(&selector, &p.labels)
                })
                .count() as i64;
            *domains.entry(&candidate.labels[&spread.topology_key]).or_default() += count;
        }
        let mut min = domains.values().copied().min().unwrap_or(i64::from(i32::MAX));
        if (domains.len() as u32) < spread.min_domains.unwrap_or(1) {
            min = 0;
        }
        let own = domains.get(value).copied().unwrap_or(0);
        let itself = i64::from(matches(&selector, &probe.labels));
        own + itself - min <= i64::from(spread.max_skew)
    })
}
