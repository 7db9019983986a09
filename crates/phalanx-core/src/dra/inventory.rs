//! The DRA objects the scheduler keeps (classes, slices, claims) and which
//! devices are held: by claims' allocations as their status records them,
//! and by allocations this scheduler chose whose write is still in flight.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::allocator::{AllocationFailure, DeviceCatalog, NodeDevices, allocate_claims};
use super::claim::{
    AllocationMode, ClaimAllocation, ClaimKey, DeviceClaim, DeviceClass, DeviceConstraint, DeviceRequest,
    PodClaimSource,
};
use super::device::{Device, DeviceSlice, HeldDevices};
use super::selector::{SelectorError, SelectorVerdicts, Selectors};
use crate::node::NodeInfo;
use crate::pod::PodInfo;
use crate::resources::Resources;

/// What to write into one claim before the pod binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimWrite {
    pub key: ClaimKey,
    pub uid: String,
    /// The write is conditional on this version.
    pub resource_version: Option<String>,
    pub allocation: ClaimAllocation,
    /// Whether `allocation` is new (written with the reservation) or the
    /// claim's own (only the pod's reservation is added).
    pub allocates: Allocates,
    /// UIDs of the pods the claim is reserved for already.
    pub reserved_for: Vec<String>,
    /// The claim's finalizers as read.
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocates {
    New,
    Existing,
}

/// What a refused reservation of a claim allocated already can do, given
/// the claim as read again (`ClaimWrite::rebase`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebased {
    /// The pod is reserved already.
    Reserved,
    /// Write again, conditional on the version read.
    Retry(Box<ClaimWrite>),
    /// The allocation this write counts on has not landed yet (another
    /// member of the same pass allocates the claim it shares).
    NotAllocatedYet,
    /// Allocated to other devices or another node: the placement is stale.
    AllocatedOtherwise,
}

impl ClaimWrite {
    /// A reservation refused because the claim changed since it was read
    /// (another pod sharing it reserved it, or allocated it in the same
    /// pass), worked out again from the claim as it is now.
    pub fn rebase(&self, now: &DeviceClaim, pod_uid: &str) -> Rebased {
        match &now.allocation {
            None => Rebased::NotAllocatedYet,
            Some(allocation) if !allocation.same_devices(&self.allocation) => Rebased::AllocatedOtherwise,
            Some(_) if now.reserved_for.iter().any(|uid| uid == pod_uid) => Rebased::Reserved,
            Some(_) => Rebased::Retry(Box::new(ClaimWrite {
                resource_version: now.resource_version.clone(),
                allocates: Allocates::Existing,
                reserved_for: now.reserved_for.clone(),
                finalizers: now.finalizers.clone(),
                ..self.clone()
            })),
        }
    }
}

/// Why a pod's claims are not known yet: it waits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnresolvedClaim {
    #[error("waiting for the ResourceClaim of resourceClaims[{entry}] to be made from template {template}")]
    FromTemplate { entry: String, template: String },
    #[error("waiting for ResourceClaim {0}, which does not exist yet")]
    Missing(ClaimKey),
}

/// What a pod asks of the nodes' devices (`DeviceInventory::demand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceDemand {
    NoClaims,
    /// Claims to allocate, by their requests and constraints.
    Open(Vec<(Vec<DeviceRequest>, Vec<DeviceConstraint>)>),
    /// Tied to its claims' node, or waiting for a claim.
    Pinned,
}

impl DeviceDemand {
    /// Whether a node's verdict for a pod with this demand holds for a pod with `other`.
    pub fn shares_verdicts_with(&self, other: &DeviceDemand) -> bool {
        self != &DeviceDemand::Pinned && self == other
    }
}

/// Why a pod's claims do not fit a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimMisfit {
    #[error(transparent)]
    Unresolved(#[from] UnresolvedClaim),
    #[error("claim {claim} is allocated on node {node}")]
    AllocatedElsewhere { claim: String, node: String },
    #[error(transparent)]
    Allocation(#[from] AllocationFailure),
}

/// A claim allocation chosen here, not yet in the claim's status.
#[derive(Debug, Clone)]
struct Assumed {
    allocation: ClaimAllocation,
    /// The pods it was chosen for (several when the claim is shared).
    pods: Vec<String>,
}

/// Which resource each DeviceClass's devices count as in quotas (as
/// Kueue's `deviceClassMappings`): by default `gpu.nvidia.com` devices are
/// `nvidia.com/gpu`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct ClassResources(pub BTreeMap<String, String>);

impl Default for ClassResources {
    fn default() -> Self {
        Self(BTreeMap::from([("gpu.nvidia.com".to_string(), crate::resources::GPU.to_string())]))
    }
}

#[derive(Debug, Default)]
pub struct DeviceInventory {
    classes: HashMap<String, DeviceClass>,
    selectors: Selectors,
    verdicts: SelectorVerdicts,
    slices: HashMap<String, DeviceSlice>,
    /// Every node's devices, its slices merged in slice-name order.
    node_devices: HashMap<String, Vec<Device>>,
    claims: HashMap<ClaimKey, DeviceClaim>,
    assumed: HashMap<ClaimKey, Assumed>,
    /// Devices held on each node, counted per holder.
    held: HashMap<String, HeldDevices>,
    class_resources: ClassResources,
    /// What each namespace's allocated and assumed claims count as in quotas.
    charges: HashMap<String, Resources>,
    /// Pods' UIDs to the allocated claims they hold (reserved for them, or assumed for them).
    holdings: HashMap<String, HashSet<ClaimKey>>,
    /// Preemption's what-if: pods taken out, and the claims all of whose
    /// holders are among them (their devices count as free until put back).
    taken_out: HashSet<String>,
    vacated: HashSet<ClaimKey>,
}

impl DeviceInventory {
    /// Sets which resource each DeviceClass's devices count as in quotas.
    pub fn set_class_resources(&mut self, mapping: ClassResources) {
        self.class_resources = mapping;
    }

    /// What a namespace's claims count as in quotas (allocated or being allocated).
    pub fn charges(&self, namespace: &str) -> Option<&Resources> {
        self.charges.get(namespace)
    }

    /// What the members' claims not yet allocated will count as in quotas
    /// (a claim shared between members once; `All` counts nothing until
    /// allocated, as its size depends on the node).
    pub fn pending_charges(&self, members: &[&PodInfo]) -> Resources {
        let mut seen = HashSet::new();
        let mut total = Resources::new();
        for claim in members.iter().flat_map(|m| self.pod_claims(m).unwrap_or_default()) {
            if claim.allocation.is_some() || self.assumed.contains_key(&claim.key) || !seen.insert(&claim.key) {
                continue;
            }
            for request in &claim.requests {
                let Some(selection) = request.selections().into_iter().next() else { continue };
                if let (AllocationMode::ExactCount(n), Some(resource)) =
                    (selection.mode, self.class_resources.0.get(&selection.device_class))
                {
                    total.add(&Resources::new().with(resource, i64::from(n)));
                }
            }
        }
        total
    }

    /// What one allocation of a claim counts as in quotas.
    fn charge_of(&self, key: &ClaimKey, allocation: &ClaimAllocation) -> Resources {
        let mut charge = Resources::new();
        let Some(claim) = self.claims.get(key) else { return charge };
        for result in &allocation.results {
            if let Some(resource) = claim.class_of(&result.request).and_then(|c| self.class_resources.0.get(c)) {
                charge.add(&Resources::new().with(resource, 1));
            }
        }
        charge
    }

    /// Marks an allocation's devices held (or no longer) and counts it in its namespace's charges.
    fn hold(&mut self, key: &ClaimKey, allocation: &ClaimAllocation, how: Hold) {
        let charge = self.charge_of(key, allocation);
        let namespace = self.charges.entry(key.namespace.clone()).or_default();
        match how {
            Hold::Take => namespace.add(&charge),
            Hold::Release => namespace.subtract(&charge),
        }
        hold_devices(&mut self.held, allocation, how);
    }

    /// Adds or replaces a class; says which selector does not compile.
    pub fn apply_class(&mut self, class: DeviceClass) -> Result<(), SelectorError> {
        let compiled = self.learn(&class.selectors);
        self.classes.insert(class.name.clone(), class);
        compiled
    }

    /// Compiles expressions and works out their verdicts on every device;
    /// says which does not compile.
    fn learn<'e>(&mut self, expressions: impl IntoIterator<Item = &'e String>) -> Result<(), SelectorError> {
        let mut compiled = Ok(());
        for expression in expressions {
            match self.selectors.compile(expression) {
                Ok(()) => self.verdicts.learn(&self.selectors, expression, self.node_devices.iter()),
                Err(e) => compiled = compiled.and(Err(e)),
            }
        }
        compiled
    }

    pub fn delete_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    pub fn apply_slice(&mut self, slice: DeviceSlice) {
        let node = slice.node.clone();
        if let Some(old) = self.slices.insert(slice.name.clone(), slice)
            && old.node != node
        {
            self.rebuild_node(&old.node);
        }
        self.rebuild_node(&node);
    }

    pub fn delete_slice(&mut self, name: &str) {
        if let Some(old) = self.slices.remove(name) {
            self.rebuild_node(&old.node);
        }
    }

    fn rebuild_node(&mut self, node: &str) {
        // A node has one slice per driver (or a few): the scan is over all
        // slices, once per slice change.
        let mut slices: Vec<&DeviceSlice> = self.slices.values().filter(|s| s.node == node).collect();
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        let devices: Vec<Device> = slices.into_iter().flat_map(|s| s.devices.iter().cloned()).collect();
        self.verdicts.relearn_node(&self.selectors, node, &devices);
        if devices.is_empty() {
            self.node_devices.remove(node);
        } else {
            self.node_devices.insert(node.to_string(), devices);
        }
    }

    /// Adds or replaces a claim; says which of its selectors does not compile.
    pub fn apply_claim(&mut self, claim: DeviceClaim) -> Result<(), SelectorError> {
        let compiled = self.learn(claim.requests.iter().flat_map(|r| r.selections()).flat_map(|s| &s.selectors));
        let key = claim.key.clone();
        let holders = self.holders(&key);
        let old = self.claims.insert(key.clone(), claim);
        if let Some(allocation) = old.and_then(|c| c.allocation) {
            self.hold(&key, &allocation, Hold::Release);
        }
        if let Some(allocation) = self.claims.get(&key).and_then(|c| c.allocation.clone()) {
            if let Some(assumed) = self.assumed.remove(&key) {
                // Our write arrived (or someone else's won): the status is the truth now.
                self.hold(&key, &assumed.allocation, Hold::Release);
            }
            self.hold(&key, &allocation, Hold::Take);
        }
        self.reindex(&key, holders);
        compiled
    }

    pub fn delete_claim(&mut self, key: &ClaimKey) {
        let holders = self.holders(key);
        if let Some(allocation) = self.claims.get(key).and_then(|c| c.allocation.clone()) {
            self.hold(key, &allocation, Hold::Release);
        }
        if let Some(assumed) = self.assumed.remove(key) {
            self.hold(key, &assumed.allocation, Hold::Release);
        }
        self.claims.remove(key);
        self.reindex(key, holders);
    }

    /// The allocation a claim holds devices by: its status's, else the one assumed here.
    fn allocation_of(&self, key: &ClaimKey) -> Option<&ClaimAllocation> {
        let status = self.claims.get(key).and_then(|c| c.allocation.as_ref());
        status.or_else(|| self.assumed.get(key).map(|a| &a.allocation))
    }

    /// The pods an allocated claim is held for: reserved in its status, or assumed here.
    fn holders(&self, key: &ClaimKey) -> Vec<String> {
        if self.allocation_of(key).is_none() {
            return vec![];
        }
        let reserved = self.claims.get(key).map(|c| c.reserved_for.as_slice()).unwrap_or_default();
        let assumed = self.assumed.get(key).map(|a| a.pods.as_slice()).unwrap_or_default();
        let mut holders: Vec<String> = reserved.iter().chain(assumed).cloned().collect();
        holders.sort();
        holders.dedup();
        holders
    }

    /// Brings `holdings` up to date after a change of one claim.
    fn reindex(&mut self, key: &ClaimKey, before: Vec<String>) {
        let after = self.holders(key);
        for pod in before.iter().filter(|p| !after.contains(p)) {
            if let Some(keys) = self.holdings.get_mut(pod) {
                keys.remove(key);
                if keys.is_empty() {
                    self.holdings.remove(pod);
                }
            }
        }
        for pod in after {
            self.holdings.entry(pod).or_default().insert(key.clone());
        }
    }

    /// Whether some allocated claim is still held for the pod (a preempted
    /// pod's devices are free only once the controller manager releases them).
    pub fn holds_devices_for(&self, pod_uid: &str) -> bool {
        self.holdings.contains_key(pod_uid)
    }

    /// The GPUs (by the class mapping) of the claims held for a pod, for
    /// weighing it as a victim; a shared claim counts for each of its pods.
    pub fn gpus_held_for(&self, pod_uid: &str) -> i64 {
        let Some(keys) = self.holdings.get(pod_uid) else { return 0 };
        keys.iter()
            .filter_map(|key| self.allocation_of(key).map(|a| self.charge_of(key, a).get(crate::resources::GPU)))
            .sum()
    }

    /// The claims held for a pod, by name, each with the devices it was
    /// given (what `explain` shows of a placed member).
    pub fn devices_held_for(&self, pod_uid: &str) -> Vec<(String, Vec<String>)> {
        let Some(keys) = self.holdings.get(pod_uid) else { return vec![] };
        let mut held: Vec<(String, Vec<String>)> = keys
            .iter()
            .filter_map(|key| {
                let devices = self.allocation_of(key)?.results.iter().map(|r| r.device.device.clone()).collect();
                Some((key.name.clone(), devices))
            })
            .collect();
        held.sort();
        held
    }

    /// Preemption's what-if: the pod is gone, and so are the devices of
    /// claims held for it and for no pod still here. `put_back` undoes it.
    pub fn take_out(&mut self, pod_uid: &str) {
        self.taken_out.insert(pod_uid.to_string());
        let Some(keys) = self.holdings.get(pod_uid) else { return };
        let freed: Vec<ClaimKey> = keys
            .iter()
            .filter(|k| !self.vacated.contains(*k) && self.holders(k).iter().all(|p| self.taken_out.contains(p)))
            .cloned()
            .collect();
        for key in freed {
            if let Some(allocation) = self.allocation_of(&key).cloned() {
                hold_devices(&mut self.held, &allocation, Hold::Release);
            }
            self.vacated.insert(key);
        }
    }

    /// Undoes `take_out` for one pod: its claims' devices are held again.
    pub fn put_back(&mut self, pod_uid: &str) {
        self.taken_out.remove(pod_uid);
        let Some(keys) = self.holdings.get(pod_uid) else { return };
        let back: Vec<ClaimKey> = keys.iter().filter(|k| self.vacated.contains(*k)).cloned().collect();
        for key in back {
            if let Some(allocation) = self.allocation_of(&key).cloned() {
                hold_devices(&mut self.held, &allocation, Hold::Take);
            }
            self.vacated.remove(&key);
        }
    }

    /// Names of the objects of one kind, to drop those a re-list no longer has.
    pub fn class_names(&self) -> HashSet<String> {
        self.classes.keys().cloned().collect()
    }

    pub fn slice_names(&self) -> HashSet<String> {
        self.slices.keys().cloned().collect()
    }

    pub fn claim_keys(&self) -> HashSet<ClaimKey> {
        self.claims.keys().cloned().collect()
    }

    pub fn claim(&self, key: &ClaimKey) -> Option<&DeviceClaim> {
        self.claims.get(key)
    }

    /// The devices published for a node.
    pub fn devices_of(&self, node: &str) -> &[Device] {
        self.node_devices.get(node).map_or(&[], Vec::as_slice)
    }

    /// The pod's claims, or why one is not known yet.
    pub fn pod_claims(&self, pod: &PodInfo) -> Result<Vec<&DeviceClaim>, UnresolvedClaim> {
        let mut claims = Vec::with_capacity(pod.claims.len());
        for entry in &pod.claims {
            let name = match &entry.source {
                PodClaimSource::Claim(name) => name,
                PodClaimSource::NotNeeded => continue,
                PodClaimSource::PendingTemplate(template) => {
                    return Err(UnresolvedClaim::FromTemplate {
                        entry: entry.name.clone(),
                        template: template.clone(),
                    });
                }
            };
            let key = ClaimKey { namespace: pod.key.namespace.clone(), name: name.clone() };
            match self.claims.get(&key) {
                Some(claim) => claims.push(claim),
                None => return Err(UnresolvedClaim::Missing(key)),
            }
        }
        Ok(claims)
    }

    /// What a pod asks of the nodes' devices, as far as a node's verdict
    /// depends on it.
    pub fn demand(&self, pod: &PodInfo) -> DeviceDemand {
        if pod.claims.is_empty() {
            return DeviceDemand::NoClaims;
        }
        let Ok(claims) = self.pod_claims(pod) else { return DeviceDemand::Pinned };
        if claims.iter().any(|c| c.allocation.is_some() || self.assumed.contains_key(&c.key)) {
            return DeviceDemand::Pinned;
        }
        DeviceDemand::Open(claims.iter().map(|c| (c.requests.clone(), c.constraints.clone())).collect())
    }

    /// What the pod's claims would be on `node`: allocations that already
    /// exist there, and new ones chosen from the node's free devices.
    pub fn fit(&self, pod: &PodInfo, node: &str, usage: &NodeInfo) -> Result<Vec<ClaimWrite>, ClaimMisfit> {
        let claims = self.pod_claims(pod)?;
        let mut writes = Vec::with_capacity(claims.len());
        let mut unallocated = Vec::new();
        for claim in claims {
            let existing = claim.allocation.as_ref().or_else(|| self.assumed.get(&claim.key).map(|a| &a.allocation));
            match existing {
                Some(allocation) if allocation.node != node => {
                    return Err(ClaimMisfit::AllocatedElsewhere {
                        claim: claim.key.name.clone(),
                        node: allocation.node.clone(),
                    });
                }
                Some(allocation) => writes.push(write(claim, allocation.clone(), Allocates::Existing)),
                None => unallocated.push(claim),
            }
        }
        if unallocated.is_empty() {
            return Ok(writes);
        }
        let none = HeldDevices::new();
        let devices = NodeDevices {
            node,
            devices: self.devices_of(node),
            taken: self.held.get(node).unwrap_or(&none),
            gpu_model: usage.gpu_model.as_deref(),
            free_gpus: usage.free_gpus(),
        };
        let catalog =
            DeviceCatalog { classes: &self.classes, selectors: &self.selectors, verdicts: Some(&self.verdicts) };
        let allocations = allocate_claims(catalog, devices, &unallocated)?;
        writes.extend(
            unallocated
                .into_iter()
                .zip(allocations)
                .map(|(claim, allocation)| write(claim, allocation, Allocates::New)),
        );
        Ok(writes)
    }

    /// Holds what `fit` chose for a pod until its writes are seen or fail.
    pub fn assume(&mut self, pod_uid: &str, writes: &[ClaimWrite]) {
        for w in writes {
            let holders = self.holders(&w.key);
            match self.assumed.get_mut(&w.key) {
                Some(assumed) => assumed.pods.push(pod_uid.to_string()),
                None if w.allocates == Allocates::New => {
                    self.hold(&w.key, &w.allocation, Hold::Take);
                    let pods = vec![pod_uid.to_string()];
                    self.assumed.insert(w.key.clone(), Assumed { allocation: w.allocation.clone(), pods });
                }
                None => {}
            }
            self.reindex(&w.key, holders);
        }
    }

    /// Releases what was assumed for a pod whose writes or bind failed.
    pub fn forget(&mut self, pod_uid: &str) {
        let keys: Vec<ClaimKey> =
            self.assumed.iter().filter(|(_, a)| a.pods.iter().any(|p| p == pod_uid)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let holders = self.holders(&key);
            let Some(assumed) = self.assumed.get_mut(&key) else { continue };
            assumed.pods.retain(|p| p != pod_uid);
            if assumed.pods.is_empty()
                && let Some(assumed) = self.assumed.remove(&key)
            {
                self.hold(&key, &assumed.allocation, Hold::Release);
            }
            self.reindex(&key, holders);
        }
    }
}

fn write(claim: &DeviceClaim, allocation: ClaimAllocation, allocates: Allocates) -> ClaimWrite {
    ClaimWrite {
        key: claim.key.clone(),
        uid: claim.uid.clone(),
        resource_version: claim.resource_version.clone(),
        allocation,
        allocates,
        reserved_for: claim.reserved_for.clone(),
        finalizers: claim.finalizers.clone(),
    }
}

#[derive(Clone, Copy)]
enum Hold {
    Take,
    Release,
}

fn hold_devices(held: &mut HashMap<String, HeldDevices>, allocation: &ClaimAllocation, how: Hold) {
    let node = held.entry(allocation.node.clone()).or_default();
    for result in &allocation.results {
        match how {
            Hold::Take => *node.entry(result.device.clone()).or_default() += 1,
            Hold::Release => {
                if let Some(count) = node.get_mut(&result.device) {
                    *count -= 1;
                    if *count == 0 {
                        node.remove(&result.device);
                    }
                }
            }
        }
    }
    if node.is_empty() {
        held.remove(&allocation.node);
    }
}

#[cfg(test)]
mod tests;
