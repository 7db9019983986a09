//! Allocating a pod's ResourceClaims on one candidate node: each request
//! gets free devices of its class that pass its selectors, under the claim's
//! constraints, chosen by topology (`device_choice`). Requests are tried in
//! order, the better-wired alternatives first, backing off when a later
//! request cannot be met.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::claim::{
    AllocationMode, ClaimAllocation, ConstraintKind, DeviceClaim, DeviceClass, DeviceResult, DeviceSelection,
    RequestKind,
};
use super::device::{AttributeValue, Device, DeviceId, HeldDevices};
use super::device_choice::{SetQuality, choose_devices};
use super::fabric_partition;
use super::selector::{SelectorError, SelectorVerdicts, Selectors, Verdict};
use crate::topology::gpu_choice::{GpuMask, NodeGpuModel};

/// The cluster-wide part of what allocation reads.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCatalog<'a> {
    pub classes: &'a HashMap<String, DeviceClass>,
    pub selectors: &'a Selectors,
    /// Verdicts worked out beforehand; expressions missing there are evaluated.
    pub verdicts: Option<&'a SelectorVerdicts>,
}

/// One candidate node's devices and what is already taken there.
#[derive(Debug, Clone, Copy)]
pub struct NodeDevices<'a> {
    pub node: &'a str,
    pub devices: &'a [Device],
    /// Allocated to claims (by their status, or earlier in this pass).
    pub taken: &'a HeldDevices,
    pub gpu_model: Option<&'a NodeGpuModel>,
    /// The node's free GPUs (for judging what a choice leaves behind).
    pub free_gpus: GpuMask,
}

/// How a message names the Fabric Manager partition rule.
const ONE_PARTITION: &str = " forming one Fabric Manager partition";

/// How many devices a request wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Count(usize),
    All,
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wanted::Count(1) => write!(f, "1 device"),
            Wanted::Count(n) => write!(f, "{n} devices"),
            Wanted::All => write!(f, "all devices"),
        }
    }
}

/// Why a pod's claims cannot be allocated on a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationFailure {
    #[error("claim {claim} needs {wanted} of class {class}{constraint}, {free} free")]
    Shortfall { claim: String, wanted: Wanted, class: String, constraint: String, free: usize },
    #[error("claim {claim}: request {request} names DeviceClass {class}, which does not exist")]
    MissingClass { claim: String, request: String, class: String },
    #[error("claim {claim}: {error}")]
    Selector { claim: String, error: SelectorError },
}

impl AllocationFailure {
    /// Whether the failure lies in the objects (a user must fix them) rather than in the node's room.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, AllocationFailure::Shortfall { .. })
    }
}

/// Allocates every claim on `node`, or says why one cannot be. Claims
/// allocated earlier are the caller's to check (they fix the node).
pub fn allocate_claims(
    catalog: DeviceCatalog<'_>,
    node: NodeDevices<'_>,
    claims: &[&DeviceClaim],
) -> Result<Vec<ClaimAllocation>, AllocationFailure> {
    let mut taken_here: HashSet<&DeviceId> = HashSet::new();
    let mut allocations = Vec::with_capacity(claims.len());
    for claim in claims {
        let mut search = ClaimSearch { catalog, node, claim, taken_here: &taken_here, chosen: vec![], shortfall: None };
        if !search.solve(0)? {
            return Err(search.shortfall.unwrap_or_else(|| AllocationFailure::Shortfall {
                claim: claim.key.name.clone(),
                wanted: Wanted::Count(0),
                class: String::new(),
                constraint: String::new(),
                free: 0,
            }));
        }
        let results: Vec<DeviceResult> = search
            .chosen
            .iter()
            .map(|(request, device)| DeviceResult { request: request.clone(), device: device.id.clone() })
            .collect();
        let chosen: Vec<&Device> = search.chosen.iter().map(|(_, d)| *d).collect();
        taken_here.extend(chosen.into_iter().map(|d| &d.id));
        let config = claim.allocation_config(catalog.classes, &results);
        allocations.push(ClaimAllocation { node: node.node.to_string(), results, config });
    }
    Ok(allocations)
}

struct ClaimSearch<'a, 'b> {
    catalog: DeviceCatalog<'a>,
    node: NodeDevices<'a>,
    claim: &'a DeviceClaim,
    taken_here: &'b HashSet<&'a DeviceId>,
    /// Devices chosen so far, with the (sub)request they serve.
    chosen: Vec<(String, &'a Device)>,
    /// The first way a request fell short, for the message.
    shortfall: Option<AllocationFailure>,
}

impl<'a> ClaimSearch<'a, '_> {
    /// Satisfies requests `i..`, extending `chosen`; `false` if they cannot be.
    fn solve(&mut self, i: usize) -> Result<bool, AllocationFailure> {
        let Some(request) = self.claim.requests.get(i) else {
            let whole = fabric_partition::forms_one_partition(self.chosen.iter().map(|(_, d)| *d));
            if !whole && self.shortfall.is_none() {
                self.shortfall = Some(AllocationFailure::Shortfall {
                    claim: self.claim.key.name.clone(),
                    wanted: Wanted::Count(self.chosen.len()),
                    class: self.first_class(),
                    constraint: ONE_PARTITION.into(),
                    free: 0,
                });
            }
            return Ok(whole);
        };
        let alternatives: Vec<(String, &DeviceSelection)> = match &request.kind {
            RequestKind::Exactly(selection) => vec![(request.name.clone(), selection)],
            RequestKind::FirstAvailable(subs) => {
                subs.iter().map(|(sub, selection)| (format!("{}/{sub}", request.name), selection)).collect()
            }
        };
        for (name, selection) in alternatives {
            for option in self.options(&name, selection)? {
                let depth = self.chosen.len();
                self.chosen.extend(option.into_iter().map(|d| (name.clone(), d)));
                if self.solve(i + 1)? {
                    return Ok(true);
                }
                self.chosen.truncate(depth);
            }
        }
        Ok(false)
    }

    /// Device sets that would satisfy one (sub)request given the choices so far, best first.
    fn options(&mut self, name: &str, selection: &DeviceSelection) -> Result<Vec<Vec<&'a Device>>, AllocationFailure> {
        let (matching, any_taken) = self.matching(name, selection)?;
        let constraints: Vec<&ConstraintKind> =
            self.claim.constraints.iter().filter(|c| c.covers(name)).map(|c| &c.kind).collect();
        let available: Vec<&'a Device> =
            matching.into_iter().filter(|d| constraints.iter().all(|c| self.allowed(c, d))).collect();
        let wanted = match selection.mode {
            AllocationMode::ExactCount(n) => Wanted::Count(n as usize),
            AllocationMode::All => Wanted::All,
        };
        let count = match wanted {
            Wanted::Count(n) => n,
            // `All` takes every matching device, so none may be taken already.
            Wanted::All if any_taken => usize::MAX,
            Wanted::All => available.len().max(1),
        };
        // A match constraint not yet fixed by an earlier request: one option per value.
        let unfixed = constraints.iter().find_map(|c| match c {
            ConstraintKind::MatchAttribute(attribute) if self.fixed_value(attribute).is_none() => Some(attribute),
            _ => None,
        });
        let groups: Vec<Vec<&'a Device>> = match unfixed {
            Some(attribute) => {
                let mut by_value: BTreeMap<&AttributeValue, Vec<&'a Device>> = BTreeMap::new();
                for device in &available {
                    if let Some(value) = device.attribute(attribute) {
                        by_value.entry(value).or_default().push(device);
                    }
                }
                by_value.into_values().collect()
            }
            None => vec![available],
        };
        // Where this request takes all of the claim's GPUs, each option is a
        // whole Fabric Manager partition (the rule is checked for every
        // claim once all its requests are met).
        let partitioned = self.claim.requests.len() == 1
            && count != usize::MAX
            && groups.iter().flatten().any(|d| fabric_partition::is_partitioned_gpu(d));
        let groups: Vec<Vec<&'a Device>> = match partitioned {
            true => groups.into_iter().flat_map(|g| fabric_partition::split_by_partition(g, count)).collect(),
            false => groups,
        };
        let distinct = constraints.iter().find_map(|c| match c {
            ConstraintKind::DistinctAttribute(attribute) => Some(attribute.as_str()),
            _ => None,
        });
        let mut options: Vec<(Vec<&'a Device>, SetQuality)> = groups
            .iter()
            .filter_map(|group| match distinct {
                Some(attribute) => distinct_values(group, count, attribute),
                None => choose_devices(group, count, self.node.gpu_model, self.node.free_gpus)
                    .map(|(picked, quality)| (picked.into_iter().map(|i| group[i]).collect(), quality)),
            })
            .collect();
        options.sort_by(|(_, a), (_, b)| {
            if a.better_than(b) {
                std::cmp::Ordering::Less
            } else if b.better_than(a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        if options.is_empty() && self.shortfall.is_none() {
            self.shortfall = Some(AllocationFailure::Shortfall {
                claim: self.claim.key.name.clone(),
                wanted,
                class: selection.device_class.clone(),
                constraint: constraints
                    .iter()
                    .map(|c| describe(c))
                    .chain(partitioned.then(|| ONE_PARTITION.to_string()))
                    .collect(),
                free: groups.iter().map(Vec::len).max().unwrap_or(0),
            });
        }
        Ok(options.into_iter().map(|(devices, _)| devices).collect())
    }

    /// Free devices of the node that the class and the request's selectors
    /// accept, and whether any accepted device is taken.
    fn matching(&self, name: &str, selection: &DeviceSelection) -> Result<(Vec<&'a Device>, bool), AllocationFailure> {
        let claim = || self.claim.key.name.clone();
        let class =
            self.catalog.classes.get(&selection.device_class).ok_or_else(|| AllocationFailure::MissingClass {
                claim: claim(),
                request: name.to_string(),
                class: selection.device_class.clone(),
            })?;
        let expressions: Vec<(&String, Option<&[Verdict]>)> = class
            .selectors
            .iter()
            .chain(&selection.selectors)
            .map(|e| (e, self.catalog.verdicts.and_then(|v| v.of(e, self.node.node))))
            .collect();
        let mut matching = Vec::new();
        let mut any_taken = false;
        for (position, device) in self.node.devices.iter().enumerate() {
            let mut accepted = Ok(true);
            for (expression, known) in &expressions {
                accepted = match known.and_then(|k| k.get(position)) {
                    Some(verdict) => verdict.clone(),
                    None => self.catalog.selectors.verdict(expression, device),
                };
                if accepted != Ok(true) {
                    break;
                }
            }
            match accepted {
                Err(error) => return Err(AllocationFailure::Selector { claim: claim(), error }),
                Ok(false) => {}
                Ok(true) if self.is_taken(&device.id) => any_taken = true,
                Ok(true) => matching.push(device),
            }
        }
        Ok((matching, any_taken))
    }

    /// The class of the claim's first request, for messages about the whole claim.
    fn first_class(&self) -> String {
        let request = self.claim.requests.first().map(|r| &r.kind);
        match request {
            Some(RequestKind::Exactly(selection)) => selection.device_class.clone(),
            Some(RequestKind::FirstAvailable(subs)) => {
                subs.first().map(|(_, s)| s.device_class.clone()).unwrap_or_default()
            }
            None => String::new(),
        }
    }

    fn is_taken(&self, id: &DeviceId) -> bool {
        self.node.taken.contains_key(id) || self.taken_here.contains(id) || self.chosen.iter().any(|(_, d)| &d.id == id)
    }

    /// The value a match constraint's devices already share, if one was chosen.
    fn fixed_value(&self, attribute: &str) -> Option<&'a AttributeValue> {
        self.chosen.iter().find_map(|(request, device)| {
            let covered =
                self.claim.constraints.iter().any(|c| {
                    c.covers(request) && matches!(&c.kind, ConstraintKind::MatchAttribute(a) if a == attribute)
                });
            covered.then(|| device.attribute(attribute)).flatten()
        })
    }

    /// Whether a device keeps a constraint given the devices chosen so far.
    fn allowed(&self, constraint: &ConstraintKind, device: &Device) -> bool {
        match constraint {
            ConstraintKind::MatchAttribute(attribute) => {
                match (device.attribute(attribute), self.fixed_value(attribute)) {
                    (None, _) => false,
                    (Some(value), Some(fixed)) => value == fixed,
                    (Some(_), None) => true,
                }
            }
            ConstraintKind::DistinctAttribute(attribute) => device.attribute(attribute).is_some_and(|value| {
                !self.chosen.iter().any(|(request, other)| {
                    let covered = self.claim.constraints.iter().any(|c| {
                        c.covers(request) && matches!(&c.kind, ConstraintKind::DistinctAttribute(a) if a == attribute)
                    });
                    covered && other.attribute(attribute) == Some(value)
                })
            }),
        }
    }
}

/// The first `count` devices with pairwise different values of `attribute`.
fn distinct_values<'a>(group: &[&'a Device], count: usize, attribute: &str) -> Option<(Vec<&'a Device>, SetQuality)> {
    let mut seen = HashSet::new();
    let picked: Vec<&'a Device> =
        group.iter().copied().filter(|d| d.attribute(attribute).is_some_and(|v| seen.insert(v))).take(count).collect();
    (picked.len() == count).then_some((picked, SetQuality::Local { level: 0, group: group.len() }))
}

/// " on one pcieRoot", " with distinct uuid": a constraint as a message says it.
fn describe(constraint: &ConstraintKind) -> String {
    let short = |attribute: &str| attribute.rsplit('/').next().unwrap_or(attribute).to_string();
    match constraint {
        ConstraintKind::MatchAttribute(a) => format!(" on one {}", short(a)),
        ConstraintKind::DistinctAttribute(a) => format!(" with distinct {}", short(a)),
    }
}

#[cfg(test)]
mod tests;
