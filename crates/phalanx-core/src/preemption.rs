//! Gang-aware preemption: when a gang cannot be placed, the cheapest set of
//! victims whose eviction provably lets the whole gang fit.
//!
//! Victims come in units, because evicting one member of a running gang
//! wrecks it: a victim gang's members above its minMember may go one by one,
//! after that only the whole rest of the gang goes. Sets are compared by the
//! highest priority they evict, then GPUs, then gangs disrupted, then age
//! (younger victims lose less work). Only sets that free room where the
//! preemptor really fits count: each candidate scope (a domain that could
//! hold the gang, then the whole cluster) is tried, and a set is kept only
//! if `place_all` succeeds in that scope after its eviction; the narrowest
//! level with such a set wins. Everything is a what-if on the snapshot, put
//! back before returning.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::disruption::DisruptionBudget;
use super::framework::Profile;
use super::gang::GangId;
use super::gang_placement::{
    GangRequest, MemberPlacement, Scope, could_ever_take, node_room, place_all, placement_order, scope_nodes,
    scopes_that_could_hold,
};
use super::pod::{PodInfo, PodKey};
use super::resources::GPU;
use super::snapshot::{ClusterSnapshot, Placement};
use super::topology::domains::NodeDomains;

/// The `preemption` section of the scheduler configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PreemptionSettings {
    pub enabled: bool,
    /// Evict through a PodDisruptionBudget when no other victim set exists.
    pub allow_pod_disruption_budget_violation: bool,
}

impl Default for PreemptionSettings {
    fn default() -> Self {
        Self { enabled: true, allow_pod_disruption_budget_violation: false }
    }
}

/// Who may be evicted for this preemptor.
pub struct PreemptionRules<'a> {
    pub priority: i32,
    pub namespace: &'a str,
    /// The preemptor's namespace is below its ElasticQuota min: it may take
    /// back what other namespaces borrow (by namespace: GPUs they use beyond
    /// their min), whatever their priority.
    pub reclaimable: HashMap<String, i64>,
    /// minMember of a placed gang, where known (otherwise the gang is whole).
    pub min_member: &'a dyn Fn(&GangId) -> Option<usize>,
    pub budgets: Vec<&'a DisruptionBudget>,
    /// Try sets that break a PodDisruptionBudget when no other set exists.
    pub allow_budget_violation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub uid: String,
    pub key: PodKey,
    pub node: String,
    pub gang: Option<GangId>,
}

/// Lower is better: highest priority evicted, GPUs, gangs disrupted, then
/// the set whose oldest victim is youngest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VictimCost {
    pub top_priority: i32,
    pub gpus: i64,
    pub gangs: usize,
    pub oldest: Reverse<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreemptionPlan {
    pub victims: Vec<Victim>,
    /// Where the preemptor's members go once the victims are gone.
    pub placement: Vec<MemberPlacement>,
    pub scope: Scope,
    pub cost: VictimCost,
    /// The set breaks a PodDisruptionBudget (allowed by configuration).
    pub breaks_budget: bool,
}

/// The group a placed pod is evicted with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Owner {
    Gang(GangId),
    Lone(String),
}

/// A placed gang (or lone pod) that could lose members.
struct Candidate {
    /// UIDs, in order, with what weighing them needs.
    pods: Vec<String>,
    facts: Vec<PodFacts>,
    /// Members that may go one by one (above minMember).
    spare: usize,
    priority: i32,
    namespace: String,
}

/// What choosing a placed pod as a victim weighs, read once per plan
/// rather than looked up again in every scope tried.
struct PodFacts {
    domains: NodeDomains,
    gpus: i64,
    created: i64,
}

/// One step of a victim set: a spare member, or all that is left of a gang.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unit {
    Spare { owner: Owner, uid: String },
    Whole { owner: Owner },
}

/// Finds the cheapest eviction that lets `request` fit, or `None`. The
/// snapshot is unchanged on return.
pub fn plan_preemption(
    profile: &Profile,
    request: &GangRequest<'_>,
    snapshot: &mut ClusterSnapshot,
    rules: &PreemptionRules<'_>,
) -> Option<PreemptionPlan> {
    let order = placement_order(&request.members);
    let needed: Vec<&PodInfo> = order.iter().take(request.required).copied().collect();
    let largest = *needed.first()?;
    let candidates = candidates(snapshot, request.gang, rules);
    if candidates.is_empty() {
        return None;
    }
    let scopes = scopes_that_could_hold(profile, largest, needed.len(), snapshot, request.within.as_ref());
    let mut passes = vec![true];
    if rules.allow_budget_violation {
        passes.push(false);
    }
    // The narrowest level where some domain can be freed wins: a gang that
    // fits in one rack gains nothing from room spread over several. Within
    // that level, the cheapest set.
    let level_of = |scope: &Scope| match scope {
        Scope::Domain { level, .. } => *level,
        Scope::Cluster => usize::MAX,
    };
    for enforce_budgets in passes {
        let mut best: Option<PreemptionPlan> = None;
        for scope in &scopes {
            if best.as_ref().is_some_and(|b| level_of(&b.scope) < level_of(scope)) {
                break;
            }
            let Some(plan) = plan_in_scope(profile, &needed, snapshot, rules, &candidates, *scope, enforce_budgets)
            else {
                continue;
            };
            if best.as_ref().is_none_or(|b| plan.cost < b.cost) {
                best = Some(plan);
            }
        }
        if let Some(mut plan) = best {
            plan.breaks_budget = !enforce_budgets;
            return Some(plan);
        }
    }
    None
}

/// Placed gangs and pods this preemptor may evict.
fn candidates(
    snapshot: &ClusterSnapshot,
    own: Option<&GangId>,
    rules: &PreemptionRules<'_>,
) -> BTreeMap<Owner, Candidate> {
    // Grouped by borrowed gang ids first: an owned key per placement was most of the cost.
    let mut gangs: HashMap<&GangId, Vec<(&str, &Placement)>> = HashMap::new();
    let mut lone: Vec<(&str, &Placement)> = Vec::new();
    // A pod at or above the preemptor's priority rules out itself and its
    // gang (a gang's priority is its highest pod's) unless its namespace can
    // be reclaimed from: sorted out here, before any grouping, because on a
    // busy cluster most pods are such.
    let reclaimable =
        |namespace: &str| namespace != rules.namespace && rules.reclaimable.get(namespace).is_some_and(|g| *g > 0);
    let mut ruled_out: HashSet<&GangId> = HashSet::new();
    for (uid, p) in snapshot.placements() {
        if p.priority >= rules.priority && !reclaimable(&p.key.namespace) {
            ruled_out.extend(&p.job);
            continue;
        }
        match &p.job {
            Some(job) if Some(job) == own => {}
            Some(job) => gangs.entry(job).or_default().push((uid, p)),
            None => lone.push((uid, p)),
        }
    }
    let group = |mut pods: Vec<(&str, &Placement)>| {
        pods.sort_by_key(|(uid, _)| *uid);
        let facts = pods
            .iter()
            .map(|(uid, p)| PodFacts {
                domains: snapshot.node(&p.node).map(|n| n.domains.clone()).unwrap_or_default(),
                gpus: victim_gpus(snapshot, uid, p),
                created: p.created,
            })
            .collect();
        Candidate {
            pods: pods.iter().map(|(uid, _)| uid.to_string()).collect(),
            facts,
            spare: 0,
            priority: pods.iter().map(|(_, p)| p.priority).max().unwrap_or(i32::MIN),
            namespace: pods[0].1.key.namespace.clone(),
        }
    };
    let mut groups: BTreeMap<Owner, Candidate> = BTreeMap::new();
    for (id, pods) in gangs.into_iter().filter(|(id, _)| !ruled_out.contains(id)) {
        groups.insert(Owner::Gang(id.clone()), group(pods));
    }
    for (uid, p) in lone {
        groups.insert(Owner::Lone(uid.to_string()), group(vec![(uid, p)]));
    }
    groups.retain(|owner, group| {
        let min = match owner {
            Owner::Gang(id) => (rules.min_member)(id).unwrap_or(group.pods.len()),
            Owner::Lone(_) => 1,
        };
        group.spare = group.pods.len().saturating_sub(min);
        group.priority < rules.priority || reclaimable(&group.namespace)
    });
    groups
}

/// The units to try, cheapest first: spare members, then whole gangs.
fn units(candidates: &BTreeMap<Owner, Candidate>, scope: Scope) -> Vec<(Unit, VictimCost)> {
    let mut units = Vec::new();
    for (owner, group) in candidates {
        if !group.facts.iter().any(|f| scope.contains_domains(&f.domains)) {
            continue;
        }
        let cost_of = |fs: &[&PodFacts]| VictimCost {
            top_priority: group.priority,
            gpus: fs.iter().map(|f| f.gpus).sum(),
            gangs: 1,
            oldest: Reverse(fs.iter().map(|f| f.created).min().unwrap_or(0)),
        };
        if group.spare > 0 {
            for (uid, f) in group.pods.iter().zip(&group.facts) {
                if scope.contains_domains(&f.domains) {
                    units.push((Unit::Spare { owner: owner.clone(), uid: uid.clone() }, cost_of(&[f])));
                }
            }
        }
        units.push((Unit::Whole { owner: owner.clone() }, cost_of(&group.facts.iter().collect::<Vec<_>>())));
    }
    // Cheapest first by the same order sets are compared in (youngest first among equals).
    units.sort_by_key(|(_, cost)| *cost);
    units
}

/// A victim set being built in one scope: what is taken out of the snapshot.
struct Eviction<'c> {
    candidates: &'c BTreeMap<Owner, Candidate>,
    taken: Vec<(String, Placement)>,
    spares_taken: HashMap<Owner, usize>,
    /// Pods taken one by one as spares (the rest went with whole gangs).
    spare_pods: HashSet<String>,
    whole_taken: HashSet<Owner>,
    reclaimed: HashMap<String, i64>,
}

impl<'c> Eviction<'c> {
    fn new(candidates: &'c BTreeMap<Owner, Candidate>) -> Self {
        Self {
            candidates,
            taken: vec![],
            spares_taken: HashMap::new(),
            spare_pods: HashSet::new(),
            whole_taken: HashSet::new(),
            reclaimed: HashMap::new(),
        }
    }

    /// The pods `unit` would evict now, or `None` if it may not be taken.
    fn pods_of(&self, unit: &Unit) -> Option<(Owner, Vec<String>)> {
        match unit {
            Unit::Spare { owner, uid } => {
                let spare = self.candidates[owner].spare;
                let ok = !self.whole_taken.contains(owner)
                    && self.spares_taken.get(owner).copied().unwrap_or(0) < spare
                    && !self.taken.iter().any(|(u, _)| u == uid);
                ok.then(|| (owner.clone(), vec![uid.clone()]))
            }
            Unit::Whole { owner } => {
                let rest = self.candidates[owner].pods.iter().filter(|u| !self.taken.iter().any(|(t, _)| t == *u));
                (!self.whole_taken.contains(owner)).then(|| (owner.clone(), rest.cloned().collect()))
            }
        }
    }

    /// Whether evicting `pods` keeps within budgets and reclaim limits.
    fn allowed(
        &self,
        snapshot: &ClusterSnapshot,
        rules: &PreemptionRules<'_>,
        owner: &Owner,
        pods: &[String],
        budgets: bool,
    ) -> bool {
        let group = &self.candidates[owner];
        if group.priority >= rules.priority {
            // Only reclaim makes this gang a victim: not beyond what its namespace borrows.
            let gpus: i64 =
                pods.iter().filter_map(|u| Some(victim_gpus(snapshot, u, snapshot.placement(u)?))).sum();
            let limit = rules.reclaimable.get(&group.namespace).copied().unwrap_or(0);
            if self.reclaimed.get(&group.namespace).copied().unwrap_or(0) + gpus > limit {
                return false;
            }
        }
        !budgets
            || rules.budgets.iter().all(|b| {
                let covered = |uid: &String| {
                    snapshot.placement(uid).is_some_and(|p| b.covers(&p.key.namespace, &p.labels))
                        || self.taken.iter().any(|(u, p)| u == uid && b.covers(&p.key.namespace, &p.labels))
                };
                let already = self.taken.iter().filter(|(u, _)| covered(u)).count();
                let more = pods.iter().filter(|u| covered(u)).count();
                already + more <= b.disruptions_allowed as usize
            })
    }

    fn take(&mut self, snapshot: &mut ClusterSnapshot, unit: &Unit, owner: Owner, pods: Vec<String>) {
        let namespace = self.candidates[&owner].namespace.clone();
        for uid in pods {
            let gpus = snapshot.placement(&uid).map(|p| victim_gpus(snapshot, &uid, p)).unwrap_or(0);
            if let Some(p) = snapshot.take(&uid) {
                *self.reclaimed.entry(namespace.clone()).or_default() += gpus;
                self.taken.push((uid, p));
            }
        }
        match unit {
            Unit::Spare { uid, .. } => {
                self.spare_pods.insert(uid.clone());
                *self.spares_taken.entry(owner).or_default() += 1;
            }
            Unit::Whole { .. } => {
                self.whole_taken.insert(owner);
            }
        }
    }

    fn put_back(self, snapshot: &mut ClusterSnapshot) {
        for (uid, p) in self.taken {
            snapshot.restore(&uid, p);
        }
    }
}

/// An upper bound on how many of the needed members the scope could take now,
/// by each node's free resources and GPUs, kept up to date as victims are
/// taken and put back. Below what is needed, `place_all` would fail, so it
/// is not run: most victim sets tried on the way up are far too small.
struct RoomBound<'p> {
    /// The members' shape; `None` when they differ (then there is no bound).
    pod: Option<&'p PodInfo>,
    /// Room per node of the scope that could ever take the pod, capped at what is needed.
    nodes: HashMap<String, usize>,
    total: usize,
    cap: usize,
}

impl<'p> RoomBound<'p> {
    fn new(profile: &Profile, needed: &[&'p PodInfo], snapshot: &ClusterSnapshot, scope: Scope) -> Self {
        let first = needed.first().copied();
        let pod = first.filter(|f| needed.iter().all(|p| p.same_constraints(f)));
        let cap = needed.len();
        let mut bound = Self { pod, nodes: HashMap::new(), total: 0, cap };
        if let Some(pod) = pod {
            for (spec, usage) in scope_nodes(snapshot, scope) {
                if could_ever_take(profile, pod, spec, usage, snapshot) {
                    let room = node_room(pod, spec, usage).1.min(cap);
                    bound.nodes.insert(spec.name.clone(), room);
                    bound.total += room;
                }
            }
        }
        bound
    }

    /// Counts the room of `nodes` again.
    fn refresh<'a>(&mut self, snapshot: &ClusterSnapshot, nodes: impl Iterator<Item = &'a str>) {
        let Some(pod) = self.pod else { return };
        for name in nodes {
            let (Some(room), Some(usage)) = (self.nodes.get_mut(name), snapshot.node(name)) else { continue };
            let Some(spec) = usage.spec.as_ref() else { continue };
            self.total -= *room;
            *room = node_room(pod, spec, usage).1.min(self.cap);
            self.total += *room;
        }
    }

    fn may_fit(&self, needed: usize) -> bool {
        self.pod.is_none() || self.total >= needed
    }
}

/// Whether the members fit in `scope` now (a what-if: rolled back).
fn fits(
    profile: &Profile,
    needed: &[&PodInfo],
    snapshot: &mut ClusterSnapshot,
    scope: Scope,
) -> Option<Vec<MemberPlacement>> {
    let placed = place_all(profile, needed, snapshot, &HashSet::new(), scope).ok()?;
    for m in &placed {
        snapshot.forget(&m.uid);
    }
    Some(placed)
}

fn plan_in_scope(
    profile: &Profile,
    needed: &[&PodInfo],
    snapshot: &mut ClusterSnapshot,
    rules: &PreemptionRules<'_>,
    candidates: &BTreeMap<Owner, Candidate>,
    scope: Scope,
    enforce_budgets: bool,
) -> Option<PreemptionPlan> {
    let mut eviction = Eviction::new(candidates);
    let mut chosen: Vec<Unit> = Vec::new();
    let mut placement = None;
    let mut room = RoomBound::new(profile, needed, snapshot, scope);
    for (unit, _) in units(candidates, scope) {
        let Some((owner, pods)) = eviction.pods_of(&unit) else { continue };
        if pods.is_empty() || !eviction.allowed(snapshot, rules, &owner, &pods, enforce_budgets) {
            continue;
        }
        let before = eviction.taken.len();
        eviction.take(snapshot, &unit, owner, pods);
        room.refresh(snapshot, eviction.taken[before..].iter().map(|(_, p)| p.node.as_str()));
        chosen.push(unit);
        placement = room.may_fit(needed.len()).then(|| fits(profile, needed, snapshot, scope)).flatten();
        if placement.is_some() {
            break;
        }
    }
    if placement.is_none() {
        eviction.put_back(snapshot);
        return None;
    }
    // Minimal: put back each unit, most expensive first, that is not needed.
    // A spare of a gang that goes whole stays evicted: putting it back alone
    // would leave that gang running below its minMember.
    let mut kept: Vec<Unit> = Vec::new();
    while let Some(unit) = chosen.pop() {
        if let Unit::Spare { owner, .. } = &unit
            && kept.iter().any(|k| matches!(k, Unit::Whole { owner: o } if o == owner))
        {
            kept.push(unit);
            continue;
        }
        let restored = restore_unit(snapshot, &mut eviction, &unit);
        room.refresh(snapshot, restored.iter().map(|(_, p)| p.node.as_str()));
        // Pods put back on nodes the placement found does not use leave it
        // valid (whether a member fits reads only its own node), so the unit
        // is not needed; no new search. Most units taken on the way up are
        // of this kind: cheap pods spread over the scope.
        let used: HashSet<&str> = placement.iter().flatten().map(|m| m.node.as_str()).collect();
        if restored.iter().all(|(_, p)| !used.contains(p.node.as_str())) {
            continue;
        }
        match room.may_fit(needed.len()).then(|| fits(profile, needed, snapshot, scope)).flatten() {
            Some(p) => placement = Some(p),
            None => {
                for (uid, p) in restored.iter().cloned() {
                    snapshot.take(&uid);
                    eviction.taken.push((uid, p));
                }
                room.refresh(snapshot, restored.iter().map(|(_, p)| p.node.as_str()));
                kept.push(unit);
            }
        }
    }
    let victims: Vec<Victim> = eviction
        .taken
        .iter()
        .map(|(uid, p)| Victim { uid: uid.clone(), key: p.key.clone(), node: p.node.clone(), gang: p.job.clone() })
        .collect();
    let cost = VictimCost {
        top_priority: eviction.taken.iter().map(|(_, p)| p.priority).max().unwrap_or(i32::MIN),
        gpus: eviction.taken.iter().map(|(uid, p)| victim_gpus(snapshot, uid, p)).sum(),
        gangs: kept.iter().map(owner_of).collect::<HashSet<_>>().len(),
        oldest: Reverse(eviction.taken.iter().map(|(_, p)| p.created).min().unwrap_or(0)),
    };
    eviction.put_back(snapshot);
    Some(PreemptionPlan { victims, placement: placement.unwrap_or_default(), scope, cost, breaks_budget: false })
}

/// A victim's GPUs: those it requests and those of DRA claims held for it.
fn victim_gpus(snapshot: &ClusterSnapshot, uid: &str, p: &Placement) -> i64 {
    p.requests.get(GPU) + snapshot.devices().gpus_held_for(uid)
}

fn owner_of(unit: &Unit) -> &Owner {
    match unit {
        Unit::Spare { owner, .. } | Unit::Whole { owner } => owner,
    }
}

/// Puts a unit's pods back into the snapshot; returns them (to take again).
fn restore_unit(snapshot: &mut ClusterSnapshot, eviction: &mut Eviction<'_>, unit: &Unit) -> Vec<(String, Placement)> {
    let owner = owner_of(unit).clone();
    let pods: Vec<String> = match unit {
        Unit::Spare { uid, .. } => vec![uid.clone()],
        // The whole gang goes back except spares taken on their own.
        Unit::Whole { .. } => eviction.candidates[&owner]
            .pods
            .iter()
            .filter(|u| !eviction.spare_pods.contains(*u) && eviction.taken.iter().any(|(t, _)| t == *u))
            .cloned()
            .collect(),
    };
    let mut restored = Vec::new();
    eviction.taken.retain(|(uid, p)| {
        if pods.contains(uid) {
            restored.push((uid.clone(), p.clone()));
            false
        } else {
            true
        }
    });
    for (uid, p) in &restored {
        snapshot.restore(uid, p.clone());
    }
    restored
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::disruption::LabelSelector;
    use crate::gang::GangKind;
    use crate::gang_placement::place_gang;
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};

    const BLOCK: &str = "network.topology.nvidia.com/block";

    /// `racks` racks of `per_rack` 8-GPU nodes, all empty.
    fn fleet(racks: usize, per_rack: usize) -> ClusterSnapshot {
        let mut s = ClusterSnapshot::new();
        for r in 0..racks {
            for n in 0..per_rack {
                let mut node = gpu_node(&format!("r{r}-n{n}"), 8);
                node.labels.insert(BLOCK.into(), format!("rack-{r}"));
                s.upsert_node(node);
            }
        }
        s
    }

    /// Places a running gang: one pod of `gpus` GPUs on each node given.
    fn run_gang(s: &mut ClusterSnapshot, name: &str, nodes: &[String], gpus: i64, priority: i32, created: i64) {
        let id = GangId::new(GangKind::PodGroup, "default", name);
        for (i, node) in nodes.iter().enumerate() {
            let mut p = gpu_pod(&format!("{name}-{i}"), gpus);
            p.job = Some(id.clone());
            p.priority = priority;
            p.created = created;
            p.labels.insert("gang".into(), name.into());
            s.observe_bound(p.placement(node), None);
        }
    }

    fn nodes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn preemptor(pods: usize, gpus: i64, priority: i32) -> (GangId, Vec<PodInfo>) {
        let id = GangId::new(GangKind::PodGroup, "default", "urgent");
        let members = (0..pods)
            .map(|i| {
                let mut p = gpu_pod(&format!("urgent-{i}"), gpus);
                p.job = Some(id.clone());
                p.priority = priority;
                p
            })
            .collect();
        (id, members)
    }

    fn rules<'a>(priority: i32, min: &'a dyn Fn(&GangId) -> Option<usize>) -> PreemptionRules<'a> {
        PreemptionRules {
            priority,
            namespace: "default",
            reclaimable: HashMap::new(),
            min_member: min,
            budgets: vec![],
            allow_budget_violation: false,
        }
    }

    fn plan(
        s: &mut ClusterSnapshot,
        members: &[PodInfo],
        id: &GangId,
        r: &PreemptionRules<'_>,
    ) -> Option<PreemptionPlan> {
        let request = GangRequest { gang: Some(id), members: members.iter().collect(), required: members.len(), within: None };
        let before: Vec<(String, Placement)> =
            s.placements().map(|(u, p)| (u.to_string(), p.clone())).collect::<BTreeMap<_, _>>().into_iter().collect();
        let plan = plan_preemption(&profile_with_defaults(), &request, s, r);
        let after: Vec<(String, Placement)> =
            s.placements().map(|(u, p)| (u.to_string(), p.clone())).collect::<BTreeMap<_, _>>().into_iter().collect();
        assert_eq!(before, after, "the what-if left the snapshot changed");
        plan
    }

    fn victim_gangs(plan: &PreemptionPlan) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for v in &plan.victims {
            *out.entry(v.gang.as_ref().map_or("-".into(), |g| g.name.clone())).or_default() += 1;
        }
        out
    }

    #[test]
    fn the_lowest_priority_gangs_that_free_one_rack_are_evicted() {
        let mut s = fleet(2, 4);
        // Rack 0: two gangs of priority 10 and 20; rack 1: one gang of priority 5
        // on 3 nodes plus one of priority 50: rack 1 would need the 50.
        run_gang(&mut s, "a", &nodes(&["r0-n0", "r0-n1"]), 8, 10, 0);
        run_gang(&mut s, "b", &nodes(&["r0-n2", "r0-n3"]), 8, 20, 0);
        run_gang(&mut s, "c", &nodes(&["r1-n0", "r1-n1", "r1-n2"]), 8, 5, 0);
        run_gang(&mut s, "d", &nodes(&["r1-n3"]), 8, 50, 0);
        let (id, members) = preemptor(4, 8, 100);
        let min = |_: &GangId| None;
        let plan = plan(&mut s, &members, &id, &rules(100, &min)).expect("a plan");
        assert_eq!(victim_gangs(&plan), BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]));
        assert_eq!(plan.cost.top_priority, 20);
        assert!(plan.placement.iter().all(|m| m.node.starts_with("r0")), "{:?}", plan.placement);
    }

    #[test]
    fn spare_members_go_before_whole_gangs_and_no_gang_is_left_below_min() {
        let mut s = fleet(1, 4);
        run_gang(&mut s, "elastic", &nodes(&["r0-n0", "r0-n1", "r0-n2", "r0-n3"]), 8, 10, 0);
        let min = |g: &GangId| (g.name == "elastic").then_some(2);
        let (id, members) = preemptor(2, 8, 100);
        let plan = plan(&mut s, &members, &id, &rules(100, &min)).unwrap();
        assert_eq!(victim_gangs(&plan), BTreeMap::from([("elastic".to_string(), 2)]), "two spares, the gang lives");
        let (id, members) = preemptor(3, 8, 100);
        let plan = super::tests::plan(&mut s, &members, &id, &rules(100, &min)).unwrap();
        assert_eq!(victim_gangs(&plan), BTreeMap::from([("elastic".to_string(), 4)]), "a third would break it: all go");
    }

    #[test]
    fn equal_priority_never_preempts_and_budgets_protect() {
        let mut s = fleet(1, 2);
        run_gang(&mut s, "peer", &nodes(&["r0-n0", "r0-n1"]), 8, 100, 0);
        let min = |_: &GangId| None;
        let (id, members) = preemptor(1, 8, 100);
        assert!(plan(&mut s, &members, &id, &rules(100, &min)).is_none());

        let budget = DisruptionBudget {
            namespace: "default".into(),
            name: "keep".into(),
            selector: LabelSelector {
                match_labels: [("gang".to_string(), "peer".to_string())].into(),
                ..Default::default()
            },
            disruptions_allowed: 0,
        };
        let mut r = rules(200, &min);
        r.budgets = vec![&budget];
        assert!(plan(&mut s, &members, &id, &r).is_none(), "the budget allows no disruption");
        r.allow_budget_violation = true;
        let p = plan(&mut s, &members, &id, &r).expect("allowed when configured");
        assert!(p.breaks_budget);
    }

    #[test]
    fn a_namespace_below_its_min_reclaims_from_a_borrower_of_higher_priority() {
        let mut s = fleet(1, 2);
        run_gang(&mut s, "borrower", &nodes(&["r0-n0", "r0-n1"]), 8, 1000, 0);
        // The borrower's pods live in namespace "default"; the preemptor is in "team-b".
        let min = |_: &GangId| Some(1);
        let (id, mut members) = preemptor(1, 8, 0);
        members[0].key.namespace = "team-b".into();
        let mut r = rules(0, &min);
        r.namespace = "team-b";
        assert!(plan(&mut s, &members, &id, &r).is_none(), "lower priority, no reclaim");
        r.reclaimable = [("default".to_string(), 8)].into();
        let p = plan(&mut s, &members, &id, &r).unwrap();
        assert_eq!(p.victims.len(), 1, "only what the borrower borrows");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// On random fleets: a plan proves its placement, evicts only lower
        /// priority, never leaves a gang below its minMember, and is minimal
        /// by units (putting back any unit breaks the placement).
        #[test]
        fn plans_are_sound_and_minimal(
            racks in 1usize..3,
            per_rack in 2usize..5,
            gangs in proptest::collection::vec((1usize..4, 1i64..3, 0i32..5, 0usize..3), 1..8),
            want in 1usize..4,
            priority in 3i32..6,
        ) {
            let mut s = fleet(racks, per_rack);
            let all: Vec<String> = s.node_names().map(str::to_string).collect();
            let mut mins = HashMap::new();
            let mut next = 0;
            for (g, (size, quarter_gpus, prio, spare)) in gangs.iter().enumerate() {
                let take: Vec<String> = all.iter().cycle().skip(next).take(*size).cloned().collect();
                next += size;
                let name = format!("g{g}");
                let gpus = quarter_gpus * 4;
                let free_everywhere = take.iter().all(|n| s.node(n).unwrap().free_gpus().count_ones() as i64 >= gpus);
                if !free_everywhere { continue; }
                run_gang(&mut s, &name, &take, gpus, *prio, g as i64);
                mins.insert(name, size.saturating_sub(*spare).max(1));
            }
            let min = |g: &GangId| mins.get(&g.name).copied();
            let (id, members) = preemptor(want, 8, priority);
            let r = rules(priority, &min);
            let Some(p) = plan(&mut s, &members, &id, &r) else { return Ok(()) };
            for v in &p.victims {
                prop_assert!(s.placement(&v.uid).unwrap().priority < priority);
            }
            // Evict, check the proof and the gangs left behind.
            let taken: Vec<(String, Placement)> = p.victims.iter().map(|v| (v.uid.clone(), s.take(&v.uid).unwrap())).collect();
            let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: want, within: None };
            let placed = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new());
            prop_assert!(placed.is_ok(), "the plan's placement does not hold");
            for m in placed.unwrap().members { s.forget(&m.uid); }
            for (name, min) in &mins {
                let left = s.job_nodes(&GangId::new(GangKind::PodGroup, "default", name)).map_or(0, |n| n.values().sum::<usize>());
                prop_assert!(left == 0 || left >= *min, "gang {name} left with {left} of min {min}");
            }
            // Minimal by units: put back one spare (if its gang survives) or a whole gang.
            let mut by_gang: BTreeMap<String, Vec<(String, Placement)>> = BTreeMap::new();
            for (uid, pl) in taken { by_gang.entry(pl.job.as_ref().unwrap().name.clone()).or_default().push((uid, pl)); }
            for (name, pods) in &by_gang {
                let left = s.job_nodes(&GangId::new(GangKind::PodGroup, "default", name)).map_or(0, |n| n.values().sum::<usize>());
                let options: Vec<Vec<(String, Placement)>> = if left > 0 {
                    pods.iter().map(|p| vec![p.clone()]).collect()
                } else {
                    vec![pods.clone()]
                };
                for option in options {
                    for (uid, pl) in &option { s.restore(uid, pl.clone()); }
                    let still = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new());
                    if let Ok(pl) = &still { for m in &pl.members { s.forget(&m.uid); } }
                    let scoped_ok = still.as_ref().is_ok_and(|pl| pl.scope == p.scope);
                    prop_assert!(!scoped_ok, "victims of {name} were not needed");
                    for (uid, _) in &option { s.take(uid); }
                }
            }
        }
    }
}
