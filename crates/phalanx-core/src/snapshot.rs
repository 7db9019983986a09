//! The scheduler's incremental view of the cluster: nodes, the pods that
//! hold their resources, which GPUs each pod holds, and where each node sits
//! in the topology. Updated event by event, never rebuilt by a scan.
//!
//! A pod the scheduler has decided to bind is *assumed* on its node at once,
//! so the next decision already sees the resources as taken; the watch later
//! *confirms* it, or a failed bind *forgets* it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::dra::claim::{ClaimKey, DeviceClaim};
use super::dra::inventory::{ClaimWrite, DeviceInventory};
use super::dra::selector::SelectorError;
use super::gang::GangId;
use super::host_port::HostPort;
use super::inter_pod_index::InterPodIndex;
use super::node::{NodeInfo, NodeSpec};
use super::node_table::{NodeTable, Slot};
use super::pod::{PodInfo, PodKey, PodPlacement};
use super::pod_affinity::PodAffinity;
use super::resources::{GPU, Resources};
use super::spread_defaults::WorkloadSelectors;
use super::topology::domains::{DomainId, DomainIndex, DomainLevels};
use super::topology::gpu_choice::{GpuMask, NodeGpuModel};
use super::topology::graph::LinkBandwidth;
use super::topology::model::GpuTopology;
use super::topology::templates;
use super::update::Update;
use super::volume::VolumeInventory;

pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementState {
    /// Chosen by this scheduler; the bind may still be in flight.
    Assumed,
    /// Seen bound (`spec.nodeName` set) through the watch.
    Bound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub key: PodKey,
    pub node: String,
    pub requests: Resources,
    pub state: PlacementState,
    /// The GPUs (positions in the node's topology) the pod holds.
    pub gpus: GpuMask,
    /// The device indices recorded on the pod (`phalanx.dev/gpus`), kept so
    /// that `gpus` can be worked out again when the node's model changes (or
    /// arrives after the pod).
    pub gpu_indices: Option<Vec<u32>>,
    /// The gang the pod belongs to, if any.
    pub job: Option<GangId>,
    /// What preemption weighs: the pod's priority, age and labels (for disruption budgets).
    pub priority: i32,
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    pub host_ports: Vec<HostPort>,
    /// The pod's inter-pod affinity: other pods are judged against it too.
    pub affinity: PodAffinity,
    /// PersistentVolumeClaims it uses (in its namespace).
    pub volume_claims: Vec<String>,
}

/// Topology settings shared by every node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopologySettings {
    pub link_bandwidth: LinkBandwidth,
    pub levels: DomainLevels,
}

/// Whether removing a pod's placement freed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Freed,
    NothingHeld,
}

#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    settings: TopologySettings,
    nodes: NodeTable,
    placements: HashMap<String, Placement>,
    /// One model per distinct topology, shared by every node that has it.
    gpu_models: HashMap<GpuTopology, Arc<NodeGpuModel>>,
    /// Topologies reported by the agent (GPUTopology resources), by node.
    reported: HashMap<String, GpuTopology>,
    domains: DomainIndex,
    /// The nodes of each topology domain, in name order, so that a decision
    /// scoped to one domain does not walk the whole cluster.
    domain_members: HashMap<DomainId, Vec<Slot>>,
    /// Last version given to a node (see `NodeInfo::version`).
    versions: u64,
    /// Where each job's placed pods are: node -> pod count.
    jobs: HashMap<GangId, BTreeMap<String, usize>>,
    /// What each namespace's placed pods request (for quotas).
    namespace_usage: HashMap<String, Resources>,
    /// DRA devices and claims, and which devices are held.
    devices: DeviceInventory,
    /// PersistentVolumeClaims, PersistentVolumes and StorageClasses.
    volumes: VolumeInventory,
    /// Services' and controllers' selectors, for default spread constraints.
    workloads: WorkloadSelectors,
    /// Labels of each namespace (affinity terms select namespaces by them).
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    inter_pod: InterPodIndex,
    /// Node labels gangs require a domain of (`GangSpec::required_domain`)
    /// that no configured level reads: each is a flat level after the
    /// configured ones in every node's domains, so scopes and victim
    /// searches work on it as on any level.
    required_keys: Vec<String>,
}

impl ClusterSnapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_settings(settings: TopologySettings) -> Self {
        Self { settings, ..Self::default() }
    }

    pub fn settings(&self) -> &TopologySettings {
        &self.settings
    }

    pub fn devices(&self) -> &DeviceInventory {
        &self.devices
    }

    pub fn volumes(&self) -> &VolumeInventory {
        &self.volumes
    }

    pub fn volumes_mut(&mut self) -> &mut VolumeInventory {
        &mut self.volumes
    }

    pub fn workloads(&self) -> &WorkloadSelectors {
        &self.workloads
    }

    pub fn workloads_mut(&mut self) -> &mut WorkloadSelectors {
        &mut self.workloads
    }

    /// For DeviceClasses and ResourceSlices; claims go through the methods
    /// below, which keep quota usage in step.
    pub fn devices_mut(&mut self) -> &mut DeviceInventory {
        &mut self.devices
    }

    /// Applies a ResourceClaim: its allocation holds devices and counts in
    /// its namespace's quota usage.
    pub fn apply_claim(&mut self, claim: DeviceClaim) -> Result<(), SelectorError> {
        let namespace = claim.key.namespace.clone();
        self.recharging(&namespace, |devices| devices.apply_claim(claim))
    }

    pub fn delete_claim(&mut self, key: &ClaimKey) {
        self.recharging(&key.namespace, |devices| devices.delete_claim(key));
    }

    /// Holds the claim allocations chosen for a pod being placed.
    pub fn assume_claims(&mut self, pod: &PodInfo, writes: &[ClaimWrite]) {
        self.recharging(&pod.key.namespace, |devices| devices.assume(&pod.uid, writes));
    }

    /// Runs a change of claims in `namespace`, moving its quota usage by
    /// what their charges moved.
    fn recharging<T>(&mut self, namespace: &str, change: impl FnOnce(&mut DeviceInventory) -> T) -> T {
        let before = self.devices.charges(namespace).cloned().unwrap_or_default();
        let out = change(&mut self.devices);
        let after = self.devices.charges(namespace).cloned().unwrap_or_default();
        if before != after {
            let usage = self.namespace_usage.entry(namespace.to_string()).or_default();
            usage.subtract(&before);
            usage.add(&after);
        }
        out
    }

    pub fn domain_index(&self) -> &DomainIndex {
        &self.domains
    }

    /// The level whose domains are the values of node label `key`: the
    /// configured level reading it, else a flat level added for it now
    /// (every node's domains are worked out again, once per new key).
    pub fn level_of_label(&mut self, key: &str) -> usize {
        let levels = &self.settings.levels;
        if let Some(level) = levels.levels.iter().position(|l| l.labels.iter().any(|label| label == key)) {
            return level;
        }
        let configured = levels.len();
        if let Some(i) = self.required_keys.iter().position(|k| k == key) {
            return configured + i;
        }
        self.required_keys.push(key.to_string());
        let specs: Vec<NodeSpec> = self.nodes().map(|(spec, _)| spec.clone()).collect();
        for spec in specs {
            self.upsert_node(spec);
        }
        configured + self.required_keys.len() - 1
    }

    /// Adds or updates a node. Returns whether anything a decision reads changed.
    pub fn upsert_node(&mut self, spec: NodeSpec) -> Update {
        let mut domains = self.settings.levels.domains_of(&spec.labels, &mut self.domains);
        let configured = self.settings.levels.len();
        for (i, key) in self.required_keys.iter().enumerate() {
            let value = spec.labels.get(key).filter(|v| !v.is_empty());
            domains.push(value.map(|v| self.domains.intern(configured + i, v.clone())));
        }
        let name = spec.name.clone();
        let (slot, info) = self.nodes.entry(&name);
        let changed = info.spec.as_ref() != Some(&spec);
        let listed = info.spec.is_some() && info.domains == domains;
        let old_domains = std::mem::replace(&mut info.domains, domains.clone());
        if changed {
            if let Some(old) = &info.spec {
                self.inter_pod.node_labels(&old.labels, -1);
            }
            self.inter_pod.node_labels(&spec.labels, 1);
        }
        info.spec = Some(spec);
        if changed || !listed {
            self.versions += 1;
            info.version = self.versions;
        }
        if !listed {
            self.unlist(slot, &old_domains);
            for id in domains.iter().flatten() {
                self.nodes.list(self.domain_members.entry(*id).or_default(), slot);
            }
        }
        if changed {
            self.refresh_gpu_model(&name);
        }
        changed.into()
    }

    /// Takes a node out of its domains' member lists.
    fn unlist(&mut self, slot: Slot, domains: &[Option<DomainId>]) {
        for id in domains.iter().flatten() {
            if let Some(members) = self.domain_members.get_mut(id) {
                self.nodes.unlist(members, slot);
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(slot) = self.nodes.slot_of(name) {
            let domains = self.nodes.at(slot).domains.clone();
            self.unlist(slot, &domains);
            let info = self.nodes.get_mut(name).expect("present");
            if let Some(old) = info.spec.take() {
                self.inter_pod.node_labels(&old.labels, -1);
            }
            self.versions += 1;
            info.version = self.versions;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// The agent's report for a node (`None`: the report was deleted).
    /// Returns whether the node's GPU model changed.
    pub fn set_reported_topology(&mut self, node: &str, topology: Option<GpuTopology>) -> Update {
        let before = self.reported.get(node).cloned();
        match topology {
            Some(t) => self.reported.insert(node.to_string(), t),
            None => self.reported.remove(node),
        };
        if before.as_ref() == self.reported.get(node) {
            return Update::Unchanged;
        }
        self.refresh_gpu_model(node);
        Update::Changed
    }

    /// The reported topology, else a template from the GPU Feature Discovery
    /// labels, for a node that offers GPUs.
    fn refresh_gpu_model(&mut self, name: &str) {
        let Some(info) = self.nodes.get(name) else { return };
        let Some(spec) = &info.spec else { return };
        let gpus = spec.whole_gpus();
        // A report listing more or fewer GPUs than the node offers describes
        // another machine (or a stale one): the template is safer than indices
        // the device plugin does not have.
        let topology = match self.reported.get(name) {
            Some(t) if t.gpus.len() == gpus => Some(t.clone()),
            _ if gpus > 0 => {
                let product = spec.labels.get(GPU_PRODUCT_LABEL).map(String::as_str);
                Some(templates::for_labels(product, gpus.min(64)))
            }
            _ => None,
        };
        let model = topology.map(|t| {
            let table = self.settings.link_bandwidth;
            self.gpu_models.entry(t.clone()).or_insert_with(|| Arc::new(NodeGpuModel::new(t, &table))).clone()
        });
        let info = self.nodes.get_mut(name).expect("present");
        let unchanged = match (&info.gpu_model, &model) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return;
        }
        info.gpu_model = model;
        self.versions += 1;
        info.version = self.versions;
        info.gpu_holders = vec![0; info.gpu_model.as_ref().map_or(0, |m| m.gpu_count())];
        let all = info.gpu_model.as_ref().map_or(0, |m| m.all_gpus());
        // Pods with recorded indices first, so the others are fitted around them.
        let mut unrecorded = Vec::new();
        for uid in info.pods.clone() {
            let Some(p) = self.placements.get_mut(&uid) else { continue };
            let recorded = p.gpu_indices.as_deref().and_then(|idx| info.gpu_model.as_ref()?.mask_of_indices(idx));
            match recorded {
                Some(mask) => p.gpus = mask,
                None => {
                    p.gpus &= all;
                    if (p.gpus.count_ones() as i64) < p.requests.get(GPU) {
                        unrecorded.push(uid.clone());
                        continue;
                    }
                }
            }
            add_holders(&mut info.gpu_holders, p.gpus);
        }
        for uid in unrecorded {
            let Some(p) = self.placements.get_mut(&uid) else { continue };
            let wanted = p.requests.get(GPU).max(0) as usize;
            let free = info.free_gpus();
            p.gpus = info.gpu_model.as_ref().and_then(|m| m.choose(free, wanted)).map_or(0, |c| c.gpus);
            add_holders(&mut info.gpu_holders, p.gpus);
        }
    }

    /// For a node whose agent report is not used because it lists another
    /// number of GPUs than the node has: the two numbers (reported, physical).
    /// A shared node's report is right when it lists its physical GPUs (its
    /// GPUs are not chosen by index, so it is not used either way).
    pub fn unused_report(&self, node: &str) -> Option<(usize, usize)> {
        let reported = self.reported.get(node)?.gpus.len();
        let physical = self.nodes.get(node)?.spec.as_ref()?.physical_gpus()?;
        (reported != physical).then_some((reported, physical))
    }

    /// Nodes with an agent report.
    pub fn reported_nodes(&self) -> impl Iterator<Item = String> + '_ {
        self.reported.keys().cloned()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Nodes whose object exists, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeSpec, &NodeInfo)> {
        self.nodes.iter().filter_map(|info| info.spec.as_ref().map(|spec| (spec, info)))
    }

    /// Nodes in one topology domain whose object exists, in name order.
    pub fn domain_nodes(&self, domain: DomainId) -> impl Iterator<Item = (&NodeSpec, &NodeInfo)> {
        let slots = self.domain_members.get(&domain).into_iter().flatten();
        slots.map(|&slot| self.nodes.at(slot)).filter_map(|info| info.spec.as_ref().map(|spec| (spec, info)))
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

    /// What the placed pods of a namespace request.
    pub fn namespace_usage(&self, namespace: &str) -> Option<&Resources> {
        self.namespace_usage.get(namespace)
    }

    /// Every placement, for preemption to weigh.
    pub fn placements(&self) -> impl Iterator<Item = (&str, &Placement)> {
        self.placements.iter().map(|(uid, p)| (uid.as_str(), p))
    }

    /// Nodes holding pods of `job`, with how many each.
    /// Placed pods that carry inter-pod affinity terms.
    pub fn pods_with_affinity(&self) -> impl Iterator<Item = &Placement> {
        self.inter_pod.pods_with_affinity().filter_map(|uid| self.placements.get(uid))
    }

    /// Placed pods of one namespace.
    pub fn namespace_pods(&self, namespace: &str) -> impl Iterator<Item = &Placement> {
        self.inter_pod.namespace_pods(namespace).filter_map(|uid| self.placements.get(uid))
    }

    /// Whether some placed pod has required anti-affinity (which any pod may break).
    pub fn has_required_anti_affinity(&self) -> bool {
        self.inter_pod.has_required_anti_affinity()
    }

    /// How many distinct values of a label the nodes carry (topology domains of that key).
    pub fn label_value_count(&self, key: &str) -> usize {
        self.inter_pod.label_value_count(key)
    }

    /// Labels of a namespace; none when it is unknown.
    pub fn namespace_labels(&self, namespace: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.namespace_labels.get(namespace).unwrap_or(&NONE)
    }

    /// A namespace was added or relabelled (`None`: deleted).
    pub fn set_namespace(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) -> Update {
        let changed = self.namespace_labels.get(name) != labels.as_ref();
        match labels {
            Some(l) => self.namespace_labels.insert(name.to_string(), l),
            None => self.namespace_labels.remove(name),
        };
        changed.into()
    }

    /// After a (re-)list of namespaces: those not listed are gone.
    pub fn namespaces_listed(&mut self, listed: &HashSet<String>) -> Update {
        let before = self.namespace_labels.len();
        self.namespace_labels.retain(|name, _| listed.contains(name));
        (self.namespace_labels.len() != before).into()
    }

    pub fn job_nodes(&self, job: &GangId) -> Option<&BTreeMap<String, usize>> {
        self.jobs.get(job)
    }

    /// The best free GPUs for `count` GPUs on `node`, as a mask.
    pub fn choose_gpus(&self, node: &str, count: usize) -> Option<GpuMask> {
        if count == 0 {
            return Some(0);
        }
        let info = self.nodes.get(node)?;
        info.gpu_model.as_ref()?.choose(info.free_gpus(), count).map(|c| c.gpus)
    }

    /// Records a decision before the bind is confirmed.
    pub fn assume(&mut self, pod: PodPlacement<'_>, gpus: GpuMask) {
        self.place(pod, PlacementState::Assumed, Some(gpus));
    }

    /// Records a pod seen bound through the watch (bound by anyone). The GPU
    /// indices come from its `phalanx.dev/gpus` annotation when it has one;
    /// otherwise the GPUs it would most likely have got are marked.
    pub fn observe_bound(&mut self, pod: PodPlacement<'_>, gpu_indices: Option<&[u32]>) {
        let gpus = gpu_indices.and_then(|idx| self.nodes.get(pod.node)?.gpu_model.as_ref()?.mask_of_indices(idx));
        let uid = pod.uid;
        self.place(pod, PlacementState::Bound, gpus);
        if let (Some(p), Some(idx)) = (self.placements.get_mut(uid), gpu_indices) {
            p.gpu_indices = Some(idx.to_vec());
        }
    }

    /// Applies the devices the kubelet really gave each pod on `node` (from
    /// the agent), by pod name. Returns how many placements changed.
    pub fn correct_gpus(&mut self, node: &str, devices: &[(PodKey, Vec<u32>)]) -> usize {
        let Some(info) = self.nodes.get_mut(node) else { return 0 };
        let Some(model) = info.gpu_model.clone() else { return 0 };
        let mut changed = 0;
        for uid in info.pods.clone() {
            let Some(p) = self.placements.get_mut(&uid) else { continue };
            let Some((_, indices)) = devices.iter().find(|(k, _)| *k == p.key) else { continue };
            let Some(mask) = model.mask_of_indices(indices) else { continue };
            if mask != p.gpus {
                self.versions += 1;
                info.version = self.versions;
                remove_holders(&mut info.gpu_holders, p.gpus);
                add_holders(&mut info.gpu_holders, mask);
                p.gpus = mask;
                p.gpu_indices = Some(indices.clone());
                changed += 1;
            }
        }
        changed
    }

    /// Drops an assumption whose bind failed. A confirmed placement stays.
    /// Claim allocations and volume bindings chosen for the pod are dropped
    /// either way: a bound pod's are in the claims and volumes by then.
    pub fn forget(&mut self, uid: &str) -> Released {
        self.volumes.forget(uid);
        match self.placements.get(uid).map(|p| p.key.namespace.clone()) {
            Some(namespace) => self.recharging(&namespace, |devices| devices.forget(uid)),
            None => self.devices.forget(uid),
        }
        match self.placements.get(uid) {
            Some(p) if p.state == PlacementState::Assumed => self.release(uid),
            _ => Released::NothingHeld,
        }
    }

    /// A pod is gone: its placement, and the volume bindings chosen for it.
    pub fn remove_pod(&mut self, uid: &str) -> Released {
        self.volumes.forget(uid);
        self.release(uid)
    }

    /// Removes a placement for a what-if (preemption's search), returning it
    /// so that `restore` can put it back exactly.
    /// The devices of claims held for it alone count as free meanwhile.
    pub fn take(&mut self, uid: &str) -> Option<Placement> {
        let placement = self.placements.get(uid)?.clone();
        self.release(uid);
        self.devices.take_out(uid);
        Some(placement)
    }

    /// Puts back a placement removed by `take`.
    pub fn restore(&mut self, uid: &str, p: Placement) {
        self.devices.put_back(uid);
        let pod = PodPlacement {
            uid,
            key: &p.key,
            node: &p.node,
            requests: &p.requests,
            job: p.job.as_ref(),
            priority: p.priority,
            created: p.created,
            labels: &p.labels,
            host_ports: &p.host_ports,
            affinity: &p.affinity,
            volume_claims: &p.volume_claims,
        };
        self.place(pod, p.state, Some(p.gpus));
        if let Some(restored) = self.placements.get_mut(uid) {
            restored.gpu_indices = p.gpu_indices;
        }
    }

    /// Releases whatever the pod held (it was deleted or finished).
    pub fn release(&mut self, uid: &str) -> Released {
        let Some(old) = self.placements.remove(uid) else {
            return Released::NothingHeld;
        };
        if let Some(usage) = self.namespace_usage.get_mut(&old.key.namespace) {
            usage.subtract(&old.requests);
        }
        self.inter_pod.released(uid, &old.key.namespace, &old.affinity);
        if let Some(job) = &old.job
            && let Some(nodes) = self.jobs.get_mut(job)
        {
            if let Some(n) = nodes.get_mut(&old.node) {
                *n -= 1;
                if *n == 0 {
                    nodes.remove(&old.node);
                }
            }
            if nodes.is_empty() {
                self.jobs.remove(job);
            }
        }
        if let Some(info) = self.nodes.get_mut(&old.node) {
            self.versions += 1;
            info.version = self.versions;
            info.requested.subtract(&old.requests);
            info.pods.remove(uid);
            for port in &old.host_ports {
                if let Some(at) = info.host_ports.iter().position(|p| p == port) {
                    info.host_ports.swap_remove(at);
                }
            }
            remove_holders(&mut info.gpu_holders, old.gpus);
            if info.pods.is_empty() && info.spec.is_none() {
                self.nodes.remove(&old.node);
            }
        }
        Released::Freed
    }

    fn place(&mut self, pod: PodPlacement<'_>, state: PlacementState, gpus: Option<GpuMask>) {
        if let Some(old) = self.placements.get_mut(pod.uid)
            && old.node == pod.node
            && &old.requests == pod.requests
            && &old.labels == pod.labels
            && gpus.is_none_or(|g| g == old.gpus)
        {
            old.state = state;
            return;
        }
        self.release(pod.uid);
        let wanted = pod.requests.get(GPU).max(0) as usize;
        let gpus = gpus.or_else(|| self.choose_gpus(pod.node, wanted)).unwrap_or(0);
        let (_, info) = self.nodes.entry(pod.node);
        self.versions += 1;
        info.version = self.versions;
        info.requested.add(pod.requests);
        info.pods.insert(pod.uid.to_string());
        info.host_ports.extend_from_slice(pod.host_ports);
        add_holders(&mut info.gpu_holders, gpus);
        self.inter_pod.placed(pod.uid, &pod.key.namespace, pod.affinity);
        if let Some(job) = pod.job {
            *self.jobs.entry(job.clone()).or_default().entry(pod.node.to_string()).or_default() += 1;
        }
        self.namespace_usage.entry(pod.key.namespace.clone()).or_default().add(pod.requests);
        self.placements.insert(
            pod.uid.to_string(),
            Placement {
                key: pod.key.clone(),
                node: pod.node.to_string(),
                requests: pod.requests.clone(),
                state,
                gpus,
                gpu_indices: None,
                job: pod.job.cloned(),
                priority: pod.priority,
                created: pod.created,
                labels: pod.labels.clone(),
                host_ports: pod.host_ports.to_vec(),
                affinity: pod.affinity.clone(),
                volume_claims: pod.volume_claims.to_vec(),
            },
        );
    }
}

fn add_holders(holders: &mut [u16], gpus: GpuMask) {
    for (p, h) in holders.iter_mut().enumerate() {
        if gpus & (1 << p) != 0 {
            *h += 1;
        }
    }
}

fn remove_holders(holders: &mut [u16], gpus: GpuMask) {
    for (p, h) in holders.iter_mut().enumerate() {
        if gpus & (1 << p) != 0 {
            *h = h.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::GPU;
    use crate::testing::gpu_node as node;

    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    static NO_AFFINITY: PodAffinity =
        PodAffinity { required: vec![], preferred: vec![], required_anti: vec![], preferred_anti: vec![] };

    fn key(name: &str) -> PodKey {
        PodKey { namespace: "default".into(), name: name.into() }
    }

    fn pod<'a>(uid: &'a str, k: &'a PodKey, node: &'a str, requests: &'a Resources) -> PodPlacement<'a> {
        PodPlacement {
            uid,
            key: k,
            node,
            requests,
            job: None,
            priority: 0,
            created: 0,
            labels: &NO_LABELS,
            host_ports: &[],
            affinity: &NO_AFFINITY,
            volume_claims: &[],
        }
    }

    #[test]
    fn a_shared_node_gives_no_gpu_indices_and_its_report_of_physical_gpus_is_right() {
        use crate::node::{GpuSharing, SharingStrategy};
        let mut s = ClusterSnapshot::new();
        let mut shared = node("ts", 32);
        shared.gpu_sharing = GpuSharing::Replica { physical_gpus: 8, strategy: SharingStrategy::TimeSlicing };
        s.upsert_node(shared);
        s.set_reported_topology("ts", Some(crate::topology::templates::nvswitch(8, 18, "H100")));
        assert_eq!(s.unused_report("ts"), None, "8 physical GPUs reported for 8 physical GPUs");
        assert!(s.node("ts").unwrap().gpu_model.is_none(), "replicas are not chosen by index");
        s.set_reported_topology("ts", Some(crate::topology::templates::nvswitch(4, 18, "H100")));
        assert_eq!(s.unused_report("ts"), Some((4, 8)));
    }

    #[test]
    fn assume_confirm_and_release_count_once() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        let ask = Resources::new().with(GPU, 2);
        let k = key("p1");
        s.assume(pod("p1", &k, "a", &ask), 0b11);
        s.observe_bound(pod("p1", &k, "a", &ask), None);
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 2);
        assert_eq!(s.node("a").unwrap().free_gpus(), 0b1111_1100);
        assert_eq!(s.forget("p1"), Released::NothingHeld, "a confirmed pod is not forgotten");
        assert_eq!(s.release("p1"), Released::Freed);
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 0);
        assert_eq!(s.node("a").unwrap().free_gpus(), 0xff);
    }

    #[test]
    fn a_pod_bound_elsewhere_moves_its_resources_and_gpus() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        s.upsert_node(node("b", 8));
        let ask = Resources::new().with(GPU, 4);
        let k = key("p1");
        s.assume(pod("p1", &k, "a", &ask), 0b1111);
        s.observe_bound(pod("p1", &k, "b", &ask), Some(&[4, 5, 6, 7]));
        assert_eq!(s.node("a").unwrap().requested.get(GPU), 0);
        assert_eq!(s.node("a").unwrap().free_gpus(), 0xff);
        assert_eq!(s.node("b").unwrap().free_gpus(), 0x0f);
    }

    #[test]
    fn usage_survives_a_node_object_going_and_coming_back() {
        let mut s = ClusterSnapshot::new();
        let k = key("p1");
        s.observe_bound(pod("p1", &k, "a", &Resources::new().with(GPU, 3)), None);
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
    fn gpus_recorded_on_a_pod_seen_before_its_node_are_kept() {
        let mut s = ClusterSnapshot::new();
        let (k0, k1) = (key("h0"), key("any"));
        s.observe_bound(pod("u0", &k0, "a", &Resources::new().with(GPU, 1)), Some(&[5]));
        s.observe_bound(pod("u1", &k1, "a", &Resources::new().with(GPU, 2)), None);
        s.upsert_node(node("a", 8));
        assert_eq!(s.placement("u0").unwrap().gpus, 1 << 5);
        let other = s.placement("u1").unwrap().gpus;
        assert_eq!((other.count_ones(), other & (1 << 5)), (2, 0), "fitted around the recorded one");
        assert_eq!(s.node("a").unwrap().free_gpus().count_ones(), 5);
    }

    #[test]
    fn a_placement_taken_for_a_what_if_is_restored_exactly() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        let k = key("p");
        s.observe_bound(pod("u", &k, "a", &Resources::new().with(GPU, 2)), Some(&[6, 7]));
        let before = s.placement("u").cloned().unwrap();
        let taken = s.take("u").unwrap();
        assert_eq!(s.node("a").unwrap().free_gpus(), 0xff);
        assert_eq!(s.namespace_usage("default").unwrap().get(GPU), 0);
        s.restore("u", taken);
        assert_eq!(s.placement("u"), Some(&before));
        assert_eq!(s.node("a").unwrap().free_gpus(), 0x3f);
        assert_eq!(s.namespace_usage("default").unwrap().get(GPU), 2);
    }

    #[test]
    fn upsert_reports_only_real_changes() {
        let mut s = ClusterSnapshot::new();
        assert_eq!(s.upsert_node(node("a", 8)), Update::Changed);
        assert_eq!(s.upsert_node(node("a", 8)), Update::Unchanged);
        assert_eq!(s.upsert_node(node("a", 4)), Update::Changed);
    }

    #[test]
    fn bound_pods_without_an_annotation_get_the_gpus_phalanx_would_have_chosen() {
        let mut s = ClusterSnapshot::new();
        let mut rtx = node("rtx", 8);
        rtx.labels.insert(GPU_PRODUCT_LABEL.into(), "NVIDIA-GeForce-RTX-4090".into());
        s.upsert_node(rtx);
        let (k1, k2) = (key("four"), key("other-four"));
        let four = Resources::new().with(GPU, 4);
        s.observe_bound(pod("u1", &k1, "rtx", &four), None);
        s.observe_bound(pod("u2", &k2, "rtx", &four), None);
        let (a, b) = (s.placement("u1").unwrap().gpus, s.placement("u2").unwrap().gpus);
        assert_eq!(a & b, 0);
        assert!(a == 0x0f || a == 0xf0, "one socket: {a:b}");
        // The kubelet says otherwise: the agent's report wins.
        let changed = s.correct_gpus("rtx", &[(k1.clone(), vec![0, 1, 4, 5]), (k2.clone(), vec![2, 3, 6, 7])]);
        assert_eq!(changed, 2);
        assert_eq!(s.placement("u1").unwrap().gpus, 0b0011_0011);
        assert_eq!(s.node("rtx").unwrap().free_gpus(), 0);
    }

    #[test]
    fn a_reported_topology_replaces_the_template() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("n", 8));
        assert_eq!(s.set_reported_topology("n", Some(templates::nvswitch(8, 12, "A100"))), Update::Changed);
        assert_eq!(s.set_reported_topology("n", Some(templates::nvswitch(8, 12, "A100"))), Update::Unchanged);
        let model = s.node("n").unwrap().gpu_model.clone().unwrap();
        assert_eq!(model.ring_bandwidth(0b11), 300.0);
    }

    #[test]
    fn a_report_with_another_number_of_gpus_than_the_node_offers_is_not_used() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("n", 8));
        for gpus in [16, 4] {
            s.set_reported_topology("n", Some(templates::nvswitch(gpus, 12, "A100")));
            assert_eq!(s.node("n").unwrap().gpu_model.as_ref().unwrap().gpu_count(), 8, "the template");
            assert_eq!(s.unused_report("n"), Some((gpus, 8)));
        }
        s.set_reported_topology("n", Some(templates::nvswitch(8, 12, "A100")));
        assert_eq!(s.unused_report("n"), None);
        assert_eq!(s.node("n").unwrap().gpu_model.as_ref().unwrap().ring_bandwidth(0b11), 300.0, "the report");
    }

    #[test]
    fn domains_list_their_nodes_through_relabels_and_removals() {
        let mut s = ClusterSnapshot::new();
        let racked = |name: &str, rack: &str| {
            let mut n = node(name, 8);
            n.labels.insert("network.topology.nvidia.com/block".into(), rack.into());
            n
        };
        s.upsert_node(racked("b", "r1"));
        s.upsert_node(racked("a", "r1"));
        let r1 = s.node("a").unwrap().domains[1].unwrap();
        let names = |s: &ClusterSnapshot, id| s.domain_nodes(id).map(|(n, _)| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&s, r1), ["a", "b"], "in name order");
        s.upsert_node(racked("b", "r2"));
        let r2 = s.node("b").unwrap().domains[1].unwrap();
        assert_eq!((names(&s, r1), names(&s, r2)), (vec!["a".to_string()], vec!["b".to_string()]));
        s.remove_node("a");
        assert!(names(&s, r1).is_empty());
        s.upsert_node(racked("a", "r2"));
        assert_eq!(names(&s, r2), ["a", "b"]);
    }

    #[test]
    fn a_node_gets_a_new_version_whenever_its_usage_changes() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        s.upsert_node(node("b", 8));
        let version = |s: &ClusterSnapshot, n| s.node(n).unwrap().version;
        let (a, b) = (version(&s, "a"), version(&s, "b"));
        assert_ne!(a, b, "unique across nodes");
        s.upsert_node(node("a", 8));
        assert_eq!(version(&s, "a"), a, "an unchanged node keeps its version");
        let k = key("p");
        let ask = Resources::new().with(GPU, 2);
        s.assume(pod("p", &k, "a", &ask), 0b11);
        let assumed = version(&s, "a");
        assert!(assumed > a && version(&s, "b") == b);
        s.forget("p");
        assert!(version(&s, "a") > assumed, "released: not the version before the assumption either");
    }

    #[test]
    fn label_domains_and_namespace_pods_follow_nodes_and_placements() {
        let mut s = ClusterSnapshot::new();
        let zoned = |name: &str, zone: &str| crate::testing::zoned_node(name, 8, zone);
        s.upsert_node(zoned("a", "z1"));
        s.upsert_node(zoned("b", "z1"));
        s.upsert_node(zoned("c", "z2"));
        assert_eq!(s.label_value_count(crate::testing::ZONE), 2);
        s.upsert_node(zoned("c", "z1"));
        assert_eq!(s.label_value_count(crate::testing::ZONE), 1, "relabelled");
        s.remove_node("a");
        assert_eq!(s.label_value_count(crate::testing::HOSTNAME), 2);
        let (k1, k2) = (key("p1"), PodKey { namespace: "other".into(), name: "p2".into() });
        let ask = Resources::new().with(GPU, 1);
        s.assume(pod("u1", &k1, "b", &ask), 0b1);
        s.assume(pod("u2", &k2, "b", &ask), 0b10);
        let names = |s: &ClusterSnapshot, ns| s.namespace_pods(ns).map(|p| p.key.name.clone()).collect::<Vec<_>>();
        assert_eq!((names(&s, "default"), names(&s, "other")), (vec!["p1".to_string()], vec!["p2".to_string()]));
        s.release("u1");
        assert!(names(&s, "default").is_empty());
    }

    #[test]
    fn job_members_are_tracked_by_node() {
        let mut s = ClusterSnapshot::new();
        s.upsert_node(node("a", 8));
        let ask = Resources::new().with(GPU, 1);
        let (k1, k2) = (key("w0"), key("w1"));
        let j = GangId::new(crate::gang::GangKind::PodGroup, "default", "j");
        s.assume(PodPlacement { job: Some(&j), ..pod("u1", &k1, "a", &ask) }, 0b1);
        s.assume(PodPlacement { job: Some(&j), ..pod("u2", &k2, "a", &ask) }, 0b10);
        assert_eq!(s.job_nodes(&j).unwrap().get("a"), Some(&2));
        s.release("u1");
        s.release("u2");
        assert!(s.job_nodes(&j).is_none());
    }
}
