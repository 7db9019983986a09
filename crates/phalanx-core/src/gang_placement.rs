//! Places a gang as one unit, from one snapshot: every required member gets a
//! node and its GPUs, or none does. Tries the narrowest topology domain that
//! can hold the gang first (an NVLink domain, then a rack, ...), packing
//! partly used domains before empty ones, and only then the whole cluster.
//! A gang with members already placed (bound before a restart, or beyond
//! minMember) is placed next to them.
//!
//! Placements are *assumed* in the snapshot as they are chosen, so each
//! member sees the ones before it; a scope that fails is rolled back whole.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::dra::inventory::{ClaimWrite, DeviceDemand};
use super::framework::{JobDemand, Profile};
use super::gang::GangId;
use super::node::{NodeInfo, NodeSpec};
use super::pod::{PodInfo, PodKey};
use super::resources::GPU;
use super::schedule::{FitError, NodeGate, NodeVerdicts, choose_node_among, filter_node};
use super::snapshot::ClusterSnapshot;
use super::topology::domains::DomainId;
use super::volume::VolumeWrite;

/// Domains tried per level before moving to a wider one: enough to get past
/// a domain whose capacity estimate was too hopeful, few enough to stay fast.
const DOMAINS_PER_LEVEL: usize = 4;

/// What to place.
#[derive(Debug, Clone)]
pub struct GangRequest<'a> {
    pub gang: Option<&'a GangId>,
    /// Pending members.
    pub members: Vec<&'a PodInfo>,
    /// How many of them must all have a place before any binds (minMember
    /// less the members already placed).
    pub required: usize,
    /// A domain all members must share, if the gang's object requires one.
    pub within: Option<RequiredDomain>,
}

/// The domains of one level, one of which must hold the whole gang: the
/// level of a node label (`ClusterSnapshot::level_of_label`), and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredDomain {
    pub level: usize,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlacement {
    pub uid: String,
    pub key: PodKey,
    pub node: String,
    /// Device indices for the `phalanx.dev/gpus` annotation.
    pub gpu_indices: Vec<u32>,
    /// The pod's ResourceClaims, written before the bind.
    pub claims: Vec<ClaimWrite>,
    /// What binds its PersistentVolumeClaims, written before the bind.
    pub volumes: Vec<VolumeWrite>,
}

/// Where the required members went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Domain { level: usize, id: DomainId },
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangPlacement {
    /// Required members first, then the extras that found room.
    pub members: Vec<MemberPlacement>,
    pub scope: Scope,
}

/// The domain that comes closest to holding a gang, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosestDomain {
    pub level: String,
    pub domain: String,
    pub free_gpus: usize,
    /// Nodes in the domain that could take the gang's pods (u32 keeps a
    /// failed placement small).
    pub nodes: u32,
    /// Of those, nodes that hold other pods (less room than when empty).
    pub busy_nodes: u32,
}

/// No placement for the whole gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangUnschedulable {
    pub required: usize,
    pub gpus_per_pod: usize,
    /// How many required members found a place across the cluster before one did not.
    pub placeable: usize,
    /// Why the first member without a place found none.
    pub fit: FitError,
    /// At the narrowest level where some domain is big enough for the gang,
    /// the one with the most free GPUs (boxed: a failure travels by value).
    pub closest: Option<Box<ClosestDomain>>,
    /// The node label whose one value all members must share, if required.
    pub within: Option<String>,
}

impl fmt::Display for GangUnschedulable {
    /// A lone pod reads exactly as kube-scheduler's message; a gang says what
    /// it needs and what the best domain lacks first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.required <= 1 {
            return write!(f, "{}", self.fit);
        }
        write!(f, "gang needs {} pods placed together", self.required)?;
        if self.gpus_per_pod > 0 {
            write!(f, " ({} GPUs)", self.required * self.gpus_per_pod)?;
        }
        if let Some(label) = &self.within {
            write!(f, " within one {label}")?;
        }
        write!(f, ", only {} have room", self.placeable)?;
        if let Some(c) = &self.closest {
            write!(f, "; largest free {} ({}) has {} GPUs", c.level, c.domain, c.free_gpus)?;
        }
        write!(f, "; {}", self.fit)
    }
}

/// Members in placement order: the largest GPU requests first (they are the
/// hardest to fit), then by name so decisions are reproducible.
pub(crate) fn placement_order<'a>(members: &[&'a PodInfo]) -> Vec<&'a PodInfo> {
    let mut order = members.to_vec();
    order.sort_by(|a, b| (Reverse(a.gpu_count()), &a.key).cmp(&(Reverse(b.gpu_count()), &b.key)));
    order
}

/// Places the gang, or changes nothing. `held` are nodes held for another
/// gang waiting ahead of this one.
pub fn place_gang(
    profile: &Profile,
    request: &GangRequest<'_>,
    snapshot: &mut ClusterSnapshot,
    held: &HashSet<String>,
) -> Result<GangPlacement, GangUnschedulable> {
    let order = placement_order(&request.members);
    let required = request.required.min(order.len());
    let (needed, extras) = order.split_at(required);
    let gpus_per_pod = order.first().map_or(0, |p| p.gpu_count());
    let within = request.within.as_ref();
    let mut failure: Option<(usize, FitError)> = None;
    for scope in candidate_scopes(profile, needed, request.gang, snapshot, held, within) {
        match place_all(profile, needed, snapshot, held, scope) {
            Ok(mut members) => {
                for pod in extras {
                    let mut placed = place_all(profile, &[pod], snapshot, held, scope);
                    if within.is_none() {
                        placed = placed.or_else(|_| place_all(profile, &[pod], snapshot, held, Scope::Cluster));
                    }
                    members.extend(placed.into_iter().flatten());
                }
                return Ok(GangPlacement { members, scope });
            }
            // Without a required domain the cluster's answer is the one to
            // give; with one, the domain that came closest.
            Err((placeable, fit))
                if scope == Scope::Cluster
                    || (within.is_some() && failure.as_ref().is_none_or(|(best, _)| placeable > *best)) =>
            {
                failure = Some((placeable, fit))
            }
            Err(_) => {}
        }
    }
    let (placeable, fit) = match (failure, within) {
        (Some(failure), _) => failure,
        (None, Some(within)) => (0, no_domain_big_enough(snapshot, within)),
        (None, None) => unreachable!("the cluster scope is always tried without a required domain"),
    };
    let closest = order.first().and_then(|largest| closest_domain(profile, largest, required, snapshot)).map(Box::new);
    let within = within.map(|w| w.label.clone());
    Err(GangUnschedulable { required, gpus_per_pod, placeable, fit, closest, within })
}

/// Why no domain of the required level was tried: nodes without the label,
/// and nodes whose domains cannot hold the gang.
fn no_domain_big_enough(snapshot: &ClusterSnapshot, within: &RequiredDomain) -> FitError {
    let mut reasons = BTreeMap::new();
    for (_, usage) in snapshot.nodes() {
        let reason = match usage.domains.get(within.level).copied().flatten() {
            None => format!("node(s) didn't have the label {} the gang requires", within.label),
            Some(_) => format!("node(s) were in a {} too small for the gang", within.label),
        };
        *reasons.entry(reason).or_default() += 1;
    }
    FitError { total_nodes: snapshot.node_count(), reasons }
}

/// Places every member within `scope`, or rolls back and says how many had
/// a place and why the next had none.
pub(crate) fn place_all(
    profile: &Profile,
    members: &[&PodInfo],
    snapshot: &mut ClusterSnapshot,
    held: &HashSet<String>,
    scope: Scope,
) -> Result<Vec<MemberPlacement>, (usize, FitError)> {
    let gpus_per_pod = members.iter().map(|p| p.gpu_count()).max().unwrap_or(0);
    let mut placed: Vec<MemberPlacement> = Vec::with_capacity(members.len());
    let mut verdicts = NodeVerdicts::default();
    let mut last_demand = None;
    for (i, pod) in members.iter().enumerate() {
        // Members' claims are allocated as they are placed: a demand is read before.
        let demand = snapshot.devices().demand(pod);
        let shared = last_demand.as_ref().is_some_and(|d: &DeviceDemand| d.shares_verdicts_with(&demand));
        if i > 0 && (!members[i - 1].same_constraints(pod) || !shared) {
            verdicts = NodeVerdicts::default();
        }
        last_demand = Some(demand);
        let demand = JobDemand { pending_pods: members.len() - i, gpus_per_pod };
        let gate = |spec: &NodeSpec, usage: &NodeInfo| gate(scope, held, spec, usage);
        let nodes = scope_nodes(snapshot, scope);
        match choose_node_among(profile, pod, snapshot, nodes, Some(&demand), gate, &mut verdicts) {
            Ok(choice) => {
                snapshot.assume(pod.placement(&choice.node), choice.gpus);
                snapshot.assume_claims(pod, &choice.claims);
                snapshot.volumes_mut().assume(&pod.uid, &choice.volumes);
                placed.push(MemberPlacement {
                    uid: pod.uid.clone(),
                    key: pod.key.clone(),
                    node: choice.node,
                    gpu_indices: choice.gpu_indices,
                    claims: choice.claims,
                    volumes: choice.volumes,
                });
            }
            Err(fit) => {
                for p in &placed {
                    snapshot.forget(&p.uid);
                }
                return Err((i, fit));
            }
        }
    }
    Ok(placed)
}

/// The nodes a scope spans, in name order.
pub(crate) fn scope_nodes(
    snapshot: &ClusterSnapshot,
    scope: Scope,
) -> Box<dyn Iterator<Item = (&NodeSpec, &NodeInfo)> + '_> {
    match scope {
        Scope::Domain { id, .. } => Box::new(snapshot.domain_nodes(id)),
        Scope::Cluster => Box::new(snapshot.nodes()),
    }
}

fn gate(scope: Scope, held: &HashSet<String>, spec: &NodeSpec, usage: &NodeInfo) -> NodeGate {
    if !scope.contains(usage) {
        return NodeGate::OutOfScope;
    }
    if held.contains(&spec.name) { NodeGate::Held } else { NodeGate::Open }
}

/// Per topology domain (level, id), counted over every node in a decision:
/// foldhash, as SipHash was a tenth of an unschedulable gang's decision.
type DomainMap<V> = HashMap<(usize, DomainId), V, foldhash::fast::RandomState>;

/// The levels a gang's scopes are drawn from: the configured ones, or only
/// the level of its required domain.
fn scope_levels(snapshot: &ClusterSnapshot, within: Option<&RequiredDomain>) -> std::ops::Range<usize> {
    match within {
        Some(w) => w.level..w.level + 1,
        None => 0..snapshot.settings().levels.len(),
    }
}

/// Scopes to try, best first; the whole cluster is last, unless the gang
/// requires one domain of a level (then only that level's domains).
fn candidate_scopes(
    profile: &Profile,
    needed: &[&PodInfo],
    gang: Option<&GangId>,
    snapshot: &ClusterSnapshot,
    held: &HashSet<String>,
    within: Option<&RequiredDomain>,
) -> Vec<Scope> {
    let levels = scope_levels(snapshot, within);
    let mut scopes = Vec::new();
    let placed = gang.and_then(|g| snapshot.job_nodes(g)).filter(|nodes| !nodes.is_empty());
    if let Some(placed) = placed {
        // Next to the members already placed: the narrowest domain holding them all.
        let anchors: Vec<&NodeInfo> = placed.keys().filter_map(|n| snapshot.node(n)).collect();
        for level in levels {
            let first = anchors.first().and_then(|a| a.domains.get(level).copied().flatten());
            if let Some(id) = first
                && anchors.iter().all(|a| a.domains.get(level) == Some(&Some(id)))
            {
                scopes.push(Scope::Domain { level, id });
            }
        }
    } else if let Some(largest) = needed.first().filter(|_| needed.len() > 1 || within.is_some()) {
        // Domains that look big enough for the whole gang, packing the fullest first.
        let mut room: DomainMap<usize> = DomainMap::default();
        for (spec, usage) in snapshot.nodes() {
            if held.contains(&spec.name) || filter_node(profile, largest, spec, usage).is_err() {
                continue;
            }
            let fits = pods_that_fit(largest, |name| usage.free_of(name), usage.free_gpus().count_ones() as usize);
            for level in levels.clone() {
                if let Some(Some(id)) = usage.domains.get(level) {
                    *room.entry((level, *id)).or_default() += fits;
                }
            }
        }
        let (mut big_enough, mut short): (Vec<_>, Vec<_>) =
            room.into_iter().partition(|(_, fits)| *fits >= needed.len());
        big_enough.sort_by_key(|((level, id), fits)| (*level, *fits, *id));
        scopes = capped_per_level(big_enough.into_iter().map(|(domain, _)| domain));
        // A required domain has no wider fallback: where none looks big
        // enough (the estimate goes by the largest member), the roomiest
        // are tried.
        if within.is_some() && scopes.is_empty() {
            short.sort_by_key(|((_, id), fits)| (Reverse(*fits), *id));
            scopes = capped_per_level(short.into_iter().filter(|(_, fits)| *fits > 0).map(|(domain, _)| domain));
        }
    }
    if within.is_none() {
        scopes.push(Scope::Cluster);
    }
    scopes
}

/// Domains in the order given, at most `DOMAINS_PER_LEVEL` of each level.
fn capped_per_level(domains: impl Iterator<Item = (usize, DomainId)>) -> Vec<Scope> {
    let mut per_level: BTreeMap<usize, usize> = BTreeMap::new();
    let mut scopes = Vec::new();
    for (level, id) in domains {
        let tried = per_level.entry(level).or_default();
        if *tried < DOMAINS_PER_LEVEL {
            *tried += 1;
            scopes.push(Scope::Domain { level, id });
        }
    }
    scopes
}

/// How many pods like `pod` fit into what is `free` (by resource name) with `free_gpus` GPUs.
fn pods_that_fit(pod: &PodInfo, free: impl Fn(&str) -> i64, free_gpus: usize) -> usize {
    pod.requests
        .iter()
        .map(|(name, amount)| {
            let available = if name == GPU { free_gpus as i64 } else { free(name) };
            if amount <= 0 { usize::MAX } else { (available.max(0) / amount) as usize }
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// Whether a node could ever take the pod, whatever runs on it now.
pub(crate) fn could_ever_take(
    profile: &Profile,
    pod: &PodInfo,
    spec: &NodeSpec,
    usage: &NodeInfo,
    snapshot: &ClusterSnapshot,
) -> bool {
    profile.filters.iter().filter(|f| !f.reads_usage()).all(|f| f.filter(pod, spec, usage).is_ok())
        && profile
            .cluster_filters
            .iter()
            .filter(|f| !f.reads_pods())
            .all(|f| f.prepare(pod, snapshot).is_none_or(|check| check.filter(spec).is_ok()))
}

/// A node's room for pods like `pod`: when empty, and now.
pub(crate) fn node_room(pod: &PodInfo, spec: &NodeSpec, usage: &NodeInfo) -> (usize, usize) {
    let all_gpus = usage.gpu_holders.len().max(spec.allocatable.get(GPU).max(0) as usize);
    let empty = pods_that_fit(pod, |name| spec.allocatable.get(name), all_gpus);
    let now = pods_that_fit(pod, |name| usage.free_of(name), usage.free_gpus().count_ones() as usize);
    (empty, now.min(empty))
}

/// Scopes where the gang would fit if enough were evicted: per level, the
/// domains whose nodes could hold it when empty (the freest first), then
/// the whole cluster.
pub(crate) fn scopes_that_could_hold(
    profile: &Profile,
    largest: &PodInfo,
    required: usize,
    snapshot: &ClusterSnapshot,
    within: Option<&RequiredDomain>,
) -> Vec<Scope> {
    let levels = scope_levels(snapshot, within);
    let mut room: DomainMap<(usize, usize)> = DomainMap::default();
    for (spec, usage) in snapshot.nodes() {
        if !could_ever_take(profile, largest, spec, usage, snapshot) {
            continue;
        }
        let (empty, now) = node_room(largest, spec, usage);
        for level in levels.clone() {
            if let Some(Some(id)) = usage.domains.get(level) {
                let r = room.entry((level, *id)).or_default();
                r.0 += empty;
                r.1 += now;
            }
        }
    }
    let mut big_enough: Vec<((usize, DomainId), (usize, usize))> =
        room.into_iter().filter(|(_, (empty, _))| *empty >= required).collect();
    big_enough.sort_by_key(|((level, id), (_, now))| (*level, Reverse(*now), *id));
    let mut scopes = capped_per_level(big_enough.into_iter().map(|(domain, _)| domain));
    if within.is_none() {
        scopes.push(Scope::Cluster);
    }
    scopes
}

impl Scope {
    pub fn contains(&self, usage: &NodeInfo) -> bool {
        self.contains_domains(&usage.domains)
    }

    /// Whether a node in these domains (one per level) is in the scope.
    pub fn contains_domains(&self, domains: &[Option<DomainId>]) -> bool {
        match self {
            Scope::Domain { level, id } => domains.get(*level) == Some(&Some(*id)),
            Scope::Cluster => true,
        }
    }
}

/// A node's room for pods of one shape.
#[derive(Debug, Clone, Copy)]
struct NodeRoom<'s> {
    name: &'s str,
    /// When nothing runs there.
    empty: usize,
    now: usize,
}

/// The narrowest domain big enough for the gang once free (`None`: the whole
/// cluster), with the room of each of its nodes.
type Candidates<'s> = (Option<(usize, DomainId)>, Vec<NodeRoom<'s>>);

fn narrowest_candidates<'s>(
    profile: &Profile,
    largest: &PodInfo,
    required: usize,
    snapshot: &'s ClusterSnapshot,
    excluded: &HashSet<String>,
    prefer: impl Fn(&[NodeRoom<'s>]) -> (usize, usize),
) -> Option<Candidates<'s>> {
    let levels = snapshot.settings().levels.len();
    let mut by_domain: DomainMap<Vec<NodeRoom>> = DomainMap::default();
    let mut everything = Vec::new();
    for (spec, usage) in snapshot.nodes() {
        if excluded.contains(&spec.name) || !could_ever_take(profile, largest, spec, usage, snapshot) {
            continue;
        }
        let (empty, now) = node_room(largest, spec, usage);
        if empty == 0 {
            continue;
        }
        let room = NodeRoom { name: spec.name.as_str(), empty, now };
        for (level, id) in usage.domains.iter().enumerate().take(levels) {
            if let Some(id) = id {
                by_domain.entry((level, *id)).or_default().push(room);
            }
        }
        everything.push(room);
    }
    let capacity = |nodes: &[NodeRoom]| nodes.iter().map(|n| n.empty).sum::<usize>();
    for level in 0..levels {
        let best = by_domain
            .iter()
            .filter(|((l, _), nodes)| *l == level && capacity(nodes) >= required)
            .max_by_key(|((_, id), nodes)| (prefer(nodes), Reverse(*id)));
        if let Some((domain, nodes)) = best {
            return Some((Some(*domain), nodes.clone()));
        }
    }
    (capacity(&everything) >= required).then_some((None, everything))
}

/// The domain that comes closest to holding the gang right now.
fn closest_domain(
    profile: &Profile,
    largest: &PodInfo,
    required: usize,
    snapshot: &ClusterSnapshot,
) -> Option<ClosestDomain> {
    let gpus = largest.gpu_count().max(1);
    let (domain, nodes) = narrowest_candidates(profile, largest, required, snapshot, &HashSet::new(), |nodes| {
        (nodes.iter().map(|n| n.now).sum(), 0)
    })?;
    let free_gpus = nodes.iter().map(|n| n.now).sum::<usize>() * gpus;
    let free_gpus = if largest.gpu_count() == 0 { 0 } else { free_gpus };
    let busy_nodes = nodes.iter().filter(|n| n.now < n.empty).count() as u32;
    let (level, domain) = match domain {
        Some((level, id)) => {
            (snapshot.settings().levels.levels[level].name.clone(), snapshot.domain_index().describe(id))
        }
        None => ("cluster".into(), "all nodes".into()),
    };
    Some(ClosestDomain { level, domain, free_gpus, nodes: nodes.len() as u32, busy_nodes })
}

/// Nodes to hold for a gang that found no placement, so that capacity freed
/// for it is not taken by smaller gangs behind it: in the narrowest domain
/// that could hold the gang once free, the nodes nearest to free (keeping
/// the nodes held before, so the hold does not wander). Nothing is held for
/// a gang that could never fit.
pub fn nodes_to_hold(
    profile: &Profile,
    request: &GangRequest<'_>,
    snapshot: &ClusterSnapshot,
    held_before: &HashSet<String>,
    held_for_others: &HashSet<String>,
) -> HashSet<String> {
    let order = placement_order(&request.members);
    let Some(largest) = order.first() else { return HashSet::new() };
    let required = request.required.min(order.len());
    let kept = |nodes: &[NodeRoom]| {
        (nodes.iter().filter(|n| held_before.contains(n.name)).count(), nodes.iter().map(|n| n.now).sum())
    };
    let Some((_, mut nodes)) = narrowest_candidates(profile, largest, required, snapshot, held_for_others, kept) else {
        return HashSet::new();
    };
    nodes.sort_by_key(|n| (Reverse(held_before.contains(n.name)), Reverse(n.now), n.name));
    let mut room = 0;
    let mut hold = HashSet::new();
    for node in nodes {
        if room >= required {
            break;
        }
        room += node.empty;
        hold.insert(node.name.to_string());
    }
    hold
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::gang::GangKind;
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};

    const BLOCK: &str = "network.topology.nvidia.com/block";

    /// Racks of 4 nodes x 8 GPUs: `used[r]` nodes of rack r are full.
    fn racks(used: &[usize]) -> ClusterSnapshot {
        let mut s = ClusterSnapshot::new();
        for (r, full) in used.iter().enumerate() {
            for n in 0..4 {
                let mut node = gpu_node(&format!("r{r}-n{n}"), 8);
                node.labels.insert(BLOCK.into(), format!("rack-{r}"));
                s.upsert_node(node);
                if n < *full {
                    let busy = gpu_pod(&format!("busy-{r}-{n}"), 8);
                    s.observe_bound(busy.placement(&format!("r{r}-n{n}")), None);
                }
            }
        }
        s
    }

    fn gang(name: &str, pods: usize, gpus: i64) -> (GangId, Vec<PodInfo>) {
        let id = GangId::new(GangKind::PodGroup, "default", name);
        let members = (0..pods)
            .map(|i| {
                let mut p = gpu_pod(&format!("{name}-{i}"), gpus);
                p.job = Some(id.clone());
                p
            })
            .collect();
        (id, members)
    }

    fn racks_of(placement: &GangPlacement) -> BTreeSet<String> {
        placement.members.iter().map(|m| m.node.split('-').next().unwrap().to_string()).collect()
    }

    #[test]
    fn a_gang_goes_whole_into_the_fullest_rack_that_holds_it() {
        // Rack 0 has 1 free node, rack 1 has 2, rack 2 has 4: a 2-node gang packs rack 1.
        let mut s = racks(&[3, 2, 0]);
        let (id, members) = gang("g", 2, 8);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 2, within: None };
        let placement = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        assert_eq!(racks_of(&placement), BTreeSet::from(["r1".to_string()]));
        assert_eq!(placement.members.len(), 2);
        assert!(s.placement("uid-g-0").is_some(), "reserved in the snapshot");
    }

    /// A label no configured level reads: "room" across the racks, so that
    /// rooms 0 and 1 hold rack 0 and half of rack 1, room 2 the rest.
    const ROOM: &str = "example.com/room";

    fn rooms(used: &[usize]) -> ClusterSnapshot {
        let mut s = racks(used);
        let specs: Vec<NodeSpec> = s.nodes().map(|(spec, _)| spec.clone()).collect();
        for (i, mut spec) in specs.into_iter().enumerate() {
            spec.labels.insert(ROOM.into(), format!("room-{}", i / 3));
            s.upsert_node(spec);
        }
        s
    }

    fn required(s: &mut ClusterSnapshot, label: &str) -> Option<RequiredDomain> {
        Some(RequiredDomain { level: s.level_of_label(label), label: label.into() })
    }

    #[test]
    fn a_gang_that_requires_one_value_of_a_label_is_placed_within_one_or_not_at_all() {
        // Racks 0 and 1 each have 2 free nodes; rooms of 3 nodes: room-0 is
        // r0-n0..n2 (n0, n1 full), room-1 r0-n3, r1-n0, r1-n1 (r1-n0, r1-n1 full),
        // room-2 r1-n2, r1-n3 and rack 2's first node, room-3 the rest of rack 2.
        let mut s = rooms(&[2, 2, 0]);
        let (id, members) = gang("g", 3, 8);
        let within = required(&mut s, ROOM);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 3, within };
        let placement = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        let rooms: BTreeSet<&str> = placement
            .members
            .iter()
            .map(|m| s.node(&m.node).unwrap().spec.as_ref().unwrap().labels[ROOM].as_str())
            .collect();
        assert_eq!(rooms.len(), 1, "one room: {placement:?}");
        assert!(matches!(placement.scope, Scope::Domain { level, .. } if level == s.settings().levels.len()));

        // 4 more 8-GPU pods: 5 nodes are free, but no room has 4 of them.
        let (id, members) = gang("h", 4, 8);
        let within = request.within.clone();
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 4, within };
        let free_before: u32 = s.nodes().map(|(_, u)| u.free_gpus().count_ones()).sum();
        let err = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap_err();
        let free_after: u32 = s.nodes().map(|(_, u)| u.free_gpus().count_ones()).sum();
        assert_eq!(free_before, free_after, "nothing stays assumed");
        assert!(err.to_string().starts_with("gang needs 4 pods placed together (32 GPUs) within one example.com/room"), "{err}");
        let unlimited = GangRequest { within: None, ..request };
        assert!(place_gang(&profile_with_defaults(), &unlimited, &mut s, &HashSet::new()).is_ok(), "spread, it fits");
    }

    #[test]
    fn a_required_configured_level_is_that_level_and_nodes_without_the_label_are_out() {
        let mut s = racks(&[0, 0]);
        assert_eq!(s.level_of_label(BLOCK), 1, "the block level reads the label");
        s.upsert_node(gpu_node("bare", 8));
        let (id, members) = gang("g", 5, 8);
        let within = required(&mut s, BLOCK);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 5, within };
        let err = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("within one network.topology.nvidia.com/block, only 4 have room"), "{message}");
        assert!(s.placement("uid-g-0").is_none(), "nothing stays assumed");

        // No node carries the label: no domain to try.
        let mut s = ClusterSnapshot::new();
        s.upsert_node(gpu_node("bare", 8));
        let request = GangRequest { within: required(&mut s, "example.com/room"), ..request };
        let message = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap_err().to_string();
        assert!(message.ends_with("0/1 nodes are available: 1 node(s) didn't have the label example.com/room the gang requires."), "{message}");
    }

    #[test]
    fn a_gang_too_big_for_any_rack_spans_racks_and_one_too_big_for_all_places_nothing() {
        let mut s = racks(&[2, 2, 2]);
        let (id, members) = gang("wide", 5, 8);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 5, within: None };
        let placement = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        assert_eq!(placement.scope, Scope::Cluster);
        assert_eq!(placement.members.len(), 5);

        let (id, members) = gang("huge", 2, 8);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 2, within: None };
        let free_before: u32 = s.nodes().map(|(_, u)| u.free_gpus().count_ones()).sum();
        let err = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap_err();
        assert_eq!((err.required, err.placeable), (2, 1));
        let free_after: u32 = s.nodes().map(|(_, u)| u.free_gpus().count_ones()).sum();
        assert_eq!(free_before, free_after, "the member that had room was rolled back");
        assert!(err.to_string().starts_with("gang needs 2 pods placed together (16 GPUs), only 1 have room"), "{err}");
    }

    #[test]
    fn the_rest_of_a_gang_is_placed_next_to_its_bound_members() {
        let mut s = racks(&[0, 0]);
        let (id, members) = gang("g", 3, 8);
        // One member was bound (before a restart) in rack 1.
        s.observe_bound(members[0].placement("r1-n2"), None);
        let request = GangRequest { gang: Some(&id), members: members[1..].iter().collect(), required: 2, within: None };
        let placement = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        assert_eq!(racks_of(&placement), BTreeSet::from(["r1".to_string()]));
    }

    #[test]
    fn members_beyond_min_member_take_what_room_is_left() {
        let mut s = racks(&[3]);
        let (id, members) = gang("elastic", 3, 4);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 1, within: None };
        let placement = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        assert_eq!(placement.members.len(), 2, "one free node holds two of the three");
    }

    #[test]
    fn held_nodes_are_left_alone_and_counted_in_the_reason() {
        let mut s = racks(&[0]);
        let held: HashSet<String> = (0..4).map(|n| format!("r0-n{n}")).collect();
        let pod = gpu_pod("small", 1);
        let request = GangRequest { gang: None, members: vec![&pod], required: 1, within: None };
        let err = place_gang(&profile_with_defaults(), &request, &mut s, &held).unwrap_err();
        assert_eq!(err.to_string(), "0/4 nodes are available: 4 node(s) were held for a gang waiting ahead.");
    }

    proptest::proptest! {
        /// Verdicts kept between members and scopes walked through their own
        /// node lists change nothing: each member goes where a decision from
        /// scratch over every node sends it.
        #[test]
        fn kept_verdicts_place_members_as_fresh_decisions_do(
            busy in proptest::collection::vec(0usize..9, 12),
            sizes in proptest::collection::vec(proptest::sample::select(vec![2i64, 4, 8]), 1..7),
        ) {
            let mut s = ClusterSnapshot::new();
            for (i, used) in busy.iter().enumerate() {
                let mut node = gpu_node(&format!("r{}-n{}", i / 4, i % 4), 8);
                node.labels.insert(BLOCK.into(), format!("rack-{}", i / 4));
                s.upsert_node(node);
                if *used > 0 {
                    let p = gpu_pod(&format!("busy-{i}"), (*used).min(8) as i64);
                    s.observe_bound(p.placement(&format!("r{}-n{}", i / 4, i % 4)), None);
                }
            }
            let id = GangId::new(GangKind::PodGroup, "default", "g");
            let members: Vec<PodInfo> = sizes
                .iter()
                .enumerate()
                .map(|(i, gpus)| {
                    let mut p = gpu_pod(&format!("g-{i}"), *gpus);
                    p.job = Some(id.clone());
                    p
                })
                .collect();
            let order = placement_order(&members.iter().collect::<Vec<_>>());
            let profile = profile_with_defaults();
            let held = HashSet::from(["r0-n1".to_string()]);
            for scope in candidate_scopes(&profile, &order, Some(&id), &s, &held, None) {
                let kept = place_all(&profile, &order, &mut s, &held, scope);
                if let Ok(placed) = &kept {
                    for m in placed {
                        s.forget(&m.uid);
                    }
                }
                let mut fresh: Vec<MemberPlacement> = Vec::new();
                let mut failed = None;
                for (i, pod) in order.iter().enumerate() {
                    let demand = JobDemand { pending_pods: order.len() - i, gpus_per_pod: order[0].gpu_count() };
                    let gate = |spec: &NodeSpec, usage: &NodeInfo| gate(scope, &held, spec, usage);
                    match crate::schedule::choose_node_gated(&profile, pod, &s, Some(&demand), gate) {
                        Ok(c) => {
                            s.assume(pod.placement(&c.node), c.gpus);
                            fresh.push(MemberPlacement {
                                uid: pod.uid.clone(),
                                key: pod.key.clone(),
                                node: c.node,
                                gpu_indices: c.gpu_indices,
                                claims: c.claims,
                                volumes: c.volumes,
                            });
                        }
                        Err(fit) => {
                            failed = Some((i, fit));
                            break;
                        }
                    }
                }
                for m in &fresh {
                    s.forget(&m.uid);
                }
                match (kept, failed) {
                    (Ok(placed), None) => proptest::prop_assert_eq!(placed, fresh),
                    (Err(kept), Some(fresh)) => proptest::prop_assert_eq!(kept, fresh),
                    (kept, fresh) => proptest::prop_assert!(false, "{kept:?} against {fresh:?}"),
                }
            }
        }
    }

    #[test]
    fn a_blocked_gang_holds_the_nodes_nearest_to_free_in_one_rack() {
        // Rack 0: 3 full nodes; rack 1: 2 full. A 3-node gang cannot fit now;
        // it waits on rack 1, where the most is free, and holds just 3 nodes.
        let s = racks(&[3, 2]);
        let (id, members) = gang("big", 3, 8);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 3, within: None };
        let hold = nodes_to_hold(&profile_with_defaults(), &request, &s, &HashSet::new(), &HashSet::new());
        assert_eq!(hold.len(), 3);
        assert!(hold.iter().all(|n| n.starts_with("r1")), "{hold:?}");
        assert!(hold.contains("r1-n2") && hold.contains("r1-n3"), "the free nodes are held first");
        let (id, members) = gang("never", 9, 8);
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 9, within: None };
        assert!(nodes_to_hold(&profile_with_defaults(), &request, &s, &HashSet::new(), &HashSet::new()).is_empty());
    }
}
