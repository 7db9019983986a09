//! Decision-speed benchmarks: one gang placed on a fleet of H100 nodes
//! (NVLink domains of 8 nodes, blocks of 32, spines of 512, as topograph
//! labels them) that other jobs already fill to 50% or 90%; victim
//! selection for a gang on a full fleet; and the memory the scheduler's
//! state takes for 5,000 nodes and 50,000 pods. Each decision is made as
//! the scheduling loop makes it: `GangScheduler::decide` on the gang popped
//! from the queue, then the placed members leave the queue. Prints a table
//! and writes bench/results/decision-speed.md.
//!
//! cargo bench --bench decision [-- --only "512 x 8 GPUs on 5000"]
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it runs small
//! cases only, checks what they placed, and leaves the results file alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use phalanx_core::dra::claim::{ClaimAllocation, DeviceClass, DeviceResult, PodClaim, PodClaimSource};
use phalanx_core::dra::device::{DeviceId, DeviceSlice};
use phalanx_core::dra::testing::{GPU_DRIVER, gpu_claim, gpu_device};
use phalanx_core::framework::Profile;
use phalanx_core::gang::{GangId, GangKind, GangObject, GangSpec};
use phalanx_core::gang_placement::{GangPlacement, Scope};
use phalanx_core::gang_scheduler::{GangDecision, GangScheduler};
use phalanx_core::label_selector::LabelSelector;
use phalanx_core::node::{NodeSpec, TaintEffect};
use phalanx_core::plugins::default_profile;
use phalanx_core::pod::{PodInfo, SelectorOperator, SelectorRequirement, Toleration, TolerationOperator};
use phalanx_core::pod_affinity::PodAffinityTerm;
use phalanx_core::preemption::PreemptionPlan;
use phalanx_core::queue::{BackoffPolicy, GangKey, SchedulingQueue};
use phalanx_core::resources::{CPU, GPU, MEMORY, PODS, Resources};
use phalanx_core::snapshot::{ClusterSnapshot, GPU_PRODUCT_LABEL, Released};
use phalanx_core::testing::{self, Rng};
use phalanx_core::topology_spread::{InclusionPolicy, SpreadConstraint, WhenUnsatisfiable};

const GIB: i64 = 1 << 30;
const NODES_PER_NVLINK_DOMAIN: usize = 8;
const NODES_PER_BLOCK: usize = 32;
const NODES_PER_SPINE: usize = 512;
const HOSTNAME: &str = "kubernetes.io/hostname";

fn node_name(i: usize) -> String {
    format!("gpu-{i:05}")
}

/// An HGX H100 node: 8 GPUs on NVSwitch, placed in the topology by topograph's labels.
fn h100_node(i: usize) -> NodeSpec {
    let labels = BTreeMap::from([
        (GPU_PRODUCT_LABEL.to_string(), "NVIDIA-H100-80GB-HBM3".to_string()),
        ("network.topology.nvidia.com/accelerator".into(), format!("nvl-{}", i / NODES_PER_NVLINK_DOMAIN)),
        ("network.topology.nvidia.com/block".into(), format!("block-{}", i / NODES_PER_BLOCK)),
        ("network.topology.nvidia.com/spine".into(), format!("spine-{}", i / NODES_PER_SPINE)),
        ("network.topology.nvidia.com/datacenter".into(), "dc-1".into()),
        (HOSTNAME.into(), node_name(i)),
    ]);
    NodeSpec {
        name: node_name(i),
        labels,
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new().with(GPU, 8).with(CPU, 192_000).with(MEMORY, 2048 * GIB).with(PODS, 110),
        gpu_sharing: Default::default(),
    }
}

/// A training pod as the shell sees it: requests scaled with its GPUs, the
/// job's labels, and the two tolerations every pod gets by default.
fn pod(name: &str, gpus: i64, job: Option<&GangId>, priority: i32, created: i64) -> PodInfo {
    let cpu = if gpus == 0 { 2000 } else { 24_000 * gpus };
    let requests = Resources::new().with(GPU, gpus).with(CPU, cpu).with(MEMORY, (16 + 200 * gpus) * GIB).with(PODS, 1);
    let mut p = testing::test_pod(name, requests);
    // A gang's pods live in its namespace; lone pods in "default".
    if let Some(job) = job {
        p.key.namespace = job.namespace.clone();
    }
    p.job = job.cloned();
    p.priority = priority;
    p.created = created;
    p.labels = BTreeMap::from([
        ("app.kubernetes.io/name".into(), "trainer".into()),
        ("training.kubeflow.org/job-name".into(), job.map_or_else(|| name.to_string(), |j| j.name.clone())),
        ("training.kubeflow.org/replica-type".into(), "worker".into()),
        ("scheduling.x-k8s.io/pod-group".into(), job.map_or_else(String::new, |j| j.name.clone())),
    ]);
    p.tolerations = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .map(|key| Toleration {
            key: Some(key.into()),
            operator: TolerationOperator::Exists,
            effect: Some(TaintEffect::NoExecute),
        })
        .collect();
    p
}

/// A fleet, the jobs already running on it, and the gang objects they name.
struct Fleet {
    snapshot: ClusterSnapshot,
    /// Node count (the snapshot counts them by walking them).
    nodes: usize,
    objects: Vec<(GangId, GangSpec)>,
    gpus_used: usize,
    /// With DRA, devices held per node by the claims of pods running there.
    devices_held: Option<Vec<usize>>,
}

/// How pods ask for GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuAsk {
    /// `nvidia.com/gpu` in the requests (device plugin).
    DevicePlugin,
    /// One ResourceClaim per pod for its GPUs, every node's GPUs published
    /// as DRA devices (as NVIDIA's DRA driver does).
    DraClaim,
}

impl Fleet {
    fn new(nodes: usize, ask: GpuAsk) -> Self {
        let mut snapshot = ClusterSnapshot::new();
        for i in 0..nodes {
            snapshot.upsert_node(h100_node(i));
        }
        let devices_held = (ask == GpuAsk::DraClaim).then(|| {
            let class = DeviceClass {
                name: GPU_DRIVER.into(),
                selectors: vec![format!("device.driver == '{GPU_DRIVER}'")],
                extended_resource_name: None,
                config: vec![],
            };
            snapshot.devices_mut().apply_class(class).expect("the selector compiles");
            for i in 0..nodes {
                snapshot.devices_mut().apply_slice(DeviceSlice {
                    name: format!("{}-{GPU_DRIVER}", node_name(i)),
                    node: node_name(i),
                    driver: GPU_DRIVER.into(),
                    pool: "node".into(),
                    devices: (0..8).map(|g| gpu_device(&format!("gpu-{g}"), g)).collect(),
                });
            }
            vec![0; nodes]
        });
        Self { snapshot, nodes, objects: vec![], gpus_used: 0, devices_held }
    }

    fn nodes(&self) -> usize {
        self.nodes
    }

    fn free_gpus(&self, i: usize) -> usize {
        match &self.devices_held {
            Some(held) => 8 - held[i],
            None => self.snapshot.node(&node_name(i)).map_or(0, |n| n.free_gpus().count_ones() as usize),
        }
    }

    /// Binds `p`; with DRA, its GPUs become a claim allocated on the node and reserved for it.
    fn bind(&mut self, p: &PodInfo, node: usize) {
        let gpus = p.gpu_count();
        let mut p = p.clone();
        if let Some(held) = &mut self.devices_held {
            let first = held[node];
            held[node] += gpus;
            p.requests.set(GPU, 0);
            let mut claim = claim_for(&mut p, gpus);
            claim.allocation = Some(ClaimAllocation {
                node: node_name(node),
                results: (first..first + gpus)
                    .map(|g| DeviceResult {
                        request: "gpus".into(),
                        device: DeviceId { driver: GPU_DRIVER.into(), pool: "node".into(), device: format!("gpu-{g}") },
                    })
                    .collect(),
                config: vec![],
            });
            claim.reserved_for = vec![p.uid.clone()];
            self.snapshot.apply_claim(claim).expect("no selectors");
        }
        self.snapshot.observe_bound(p.placement(&node_name(node)), None);
        self.gpus_used += gpus;
    }

    /// Fills the fleet to `occupancy` of its GPUs with assorted jobs placed
    /// where they happened to land: lone pods of 1, 2 and 4 GPUs on random
    /// nodes (which leaves nodes partly used), and gangs of 1 to 16 whole
    /// nodes on the first free nodes after a random one (spanning domains).
    /// Some gangs are elastic (minMember below their size). With `full`, what
    /// no gang fits into is filled with lone pods, up to the last GPU.
    fn occupy(&mut self, rng: &mut Rng, occupancy: f64, full: bool) {
        let total = self.nodes() * 8;
        let target = (total as f64 * occupancy) as usize;
        let mut job = 0;
        let mut gangs_fit = true;
        while self.gpus_used < target && gangs_fit {
            job += 1;
            let priority = rng.below(100) as i32;
            let created = 1_700_000_000 + job;
            let roll = rng.below(100);
            if roll < 75 {
                let gpus = [1, 2, 4][roll % 3];
                let p = pod(&format!("solo-{job}"), gpus as i64, None, priority, created);
                let node = (0..32).map(|_| rng.below(self.nodes())).find(|n| self.free_gpus(*n) >= gpus);
                if let Some(node) = node {
                    self.bind(&p, node);
                }
                continue;
            }
            let size = [1, 2, 4, 8, 16][rng.below(5)];
            let start = rng.below(self.nodes());
            let free: Vec<usize> = (0..self.nodes())
                .map(|k| (start + k) % self.nodes())
                .filter(|n| self.free_gpus(*n) == 8)
                .take(size)
                .collect();
            if free.len() < size {
                gangs_fit = false;
                continue;
            }
            let id = GangId::new(GangKind::PodGroup, &format!("team-{}", job % 7), &format!("job-{job}"));
            let min_member = if rng.below(4) == 0 { size.div_ceil(2) } else { size };
            self.objects.push((id.clone(), GangSpec::of_size(min_member)));
            for (i, node) in free.into_iter().enumerate() {
                let p = pod(&format!("job-{job}-worker-{i}"), 8, Some(&id), priority, created);
                self.bind(&p, node);
            }
        }
        if full {
            for node in 0..self.nodes() {
                while self.free_gpus(node) > 0 {
                    job += 1;
                    let gpus = 1 << self.free_gpus(node).ilog2().min(2);
                    let p = pod(&format!("fill-{job}"), gpus, None, rng.below(100) as i32, 1_700_000_000 + job);
                    self.bind(&p, node);
                }
            }
        }
    }

    fn gang_scheduler(&self) -> GangScheduler {
        let mut gangs = GangScheduler::new(HashSet::from([GangKind::PodGroup]), Default::default());
        for (id, spec) in &self.objects {
            gangs.set_object(id.clone(), Some(GangObject::Valid(spec.clone())));
        }
        gangs
    }
}

/// What the gang's members say about each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberRules {
    None,
    /// Required affinity to the gang within one spine, required
    /// anti-affinity to it per node, and a DoNotSchedule spread over nodes
    /// with maxSkew 1: what a user spreading replicas writes.
    AffinityAndSpread,
}

fn with_rules(mut p: PodInfo, rules: MemberRules) -> PodInfo {
    if rules == MemberRules::None {
        return p;
    }
    let group = p.labels["scheduling.x-k8s.io/pod-group"].clone();
    let own = LabelSelector {
        requirements: vec![SelectorRequirement {
            key: "scheduling.x-k8s.io/pod-group".into(),
            operator: SelectorOperator::In(vec![group]),
        }],
    };
    let term = |key: &str| PodAffinityTerm {
        selector: Some(own.clone()),
        namespaces: vec![p.key.namespace.clone()],
        namespace_selector: None,
        topology_key: key.into(),
    };
    p.affinity.required.push(term("network.topology.nvidia.com/spine"));
    p.affinity.required_anti.push(term(HOSTNAME));
    p.spread.push(SpreadConstraint {
        max_skew: 1,
        topology_key: HOSTNAME.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        selector: Some(own.clone()),
        min_domains: 1,
        node_affinity_policy: InclusionPolicy::Honor,
        node_taints_policy: InclusionPolicy::Ignore,
    });
    p
}

/// The gang to decide on: `pods` members of 8 GPUs each, queued and popped.
/// The pod's ResourceClaim for `gpus` devices (not allocated), named on the pod.
fn claim_for(p: &mut PodInfo, gpus: usize) -> phalanx_core::dra::claim::DeviceClaim {
    let name = format!("{}-gpu", p.key.name);
    let mut claim = gpu_claim(&name, GPU_DRIVER, gpus as u32);
    claim.key.namespace = p.key.namespace.clone();
    p.claims = vec![PodClaim { name: "gpu".into(), source: PodClaimSource::Claim(name) }];
    claim
}

/// The gang to decide on: `pods` members of 8 GPUs each, queued and popped.
fn queue_gang(
    fleet: &mut Fleet,
    gangs: &mut GangScheduler,
    pods: usize,
    priority: i32,
    rules: MemberRules,
) -> (SchedulingQueue, GangKey, Vec<PodInfo>) {
    let id = GangId::new(GangKind::PodGroup, "research", "llm-pretrain");
    gangs.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(pods))));
    let members: Vec<PodInfo> = (0..pods)
        .map(|i| {
            let mut p =
                with_rules(pod(&format!("llm-pretrain-worker-{i}"), 8, Some(&id), priority, 1_800_000_000), rules);
            if fleet.devices_held.is_some() {
                p.requests.set(GPU, 0);
                let claim = claim_for(&mut p, 8);
                fleet.snapshot.apply_claim(claim).expect("no selectors");
            }
            p
        })
        .collect();
    let mut queue = SchedulingQueue::new(BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO });
    for m in &members {
        queue.upsert(m.clone(), Instant::now());
    }
    let key = queue.pop(Instant::now()).expect("the gang is queued");
    (queue, key, members)
}

struct Timings {
    samples: Vec<Duration>,
}

impl Timings {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }
}

/// Runs `once` `runs` times (stopping early after `budget`, but never
/// before 5 runs); it returns how long its timed part took.
fn repeat(runs: usize, budget: Duration, mut once: impl FnMut() -> Duration) -> Timings {
    let started = Instant::now();
    let mut samples = Vec::with_capacity(runs);
    while samples.len() < runs && (samples.len() < 5 || started.elapsed() < budget) {
        samples.push(once());
    }
    Timings { samples }
}

/// No GPU held twice, every member on its own 8 GPUs (GPU indices, or
/// the devices of its claim), all inside the scope.
fn check_placement(snapshot: &ClusterSnapshot, placement: &GangPlacement, pods: usize) {
    assert_eq!(placement.members.len(), pods, "the whole gang is placed");
    let mut gpus = HashSet::new();
    for m in &placement.members {
        let node = snapshot.node(&m.node).expect("placed on a known node");
        assert!(node.gpu_holders.iter().all(|h| *h <= 1), "{} over-committed", m.node);
        let given: Vec<String> = match m.claims.as_slice() {
            [] => m.gpu_indices.iter().map(u32::to_string).collect(),
            [claim] => {
                assert_eq!(claim.allocation.node, m.node, "claim allocated on the member's node");
                claim.allocation.results.iter().map(|r| r.device.device.clone()).collect()
            }
            more => panic!("{} has {} claims", m.uid, more.len()),
        };
        assert_eq!(given.len(), 8, "{} got {given:?}", m.uid);
        for g in given {
            assert!(gpus.insert((m.node.clone(), g.clone())), "GPU {g} of {} given twice", m.node);
        }
        assert!(placement.scope.contains(node), "{} outside {:?}", m.node, placement.scope);
    }
}

/// Members on distinct nodes, all under one spine.
fn check_rules(snapshot: &ClusterSnapshot, placement: &GangPlacement) {
    let nodes: HashSet<&str> = placement.members.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(nodes.len(), placement.members.len(), "one member per node");
    let spines: HashSet<&String> = nodes
        .iter()
        .map(|n| &snapshot.node(n).unwrap().spec.as_ref().unwrap().labels["network.topology.nvidia.com/spine"])
        .collect();
    assert_eq!(spines.len(), 1, "one spine: {spines:?}");
}

/// Victims are lower-priority and, once gone, leave the GPUs the plan names free.
fn check_preemption(snapshot: &mut ClusterSnapshot, plan: &PreemptionPlan, pods: usize, priority: i32) {
    assert_eq!(plan.placement.len(), pods);
    let taken: Vec<_> =
        plan.victims.iter().map(|v| (v.uid.clone(), snapshot.take(&v.uid).expect("victim placed"))).collect();
    assert!(taken.iter().all(|(_, p)| p.priority < priority), "only lower-priority victims");
    let mut gpus = HashSet::new();
    for m in &plan.placement {
        let node = snapshot.node(&m.node).expect("known node");
        let model = node.gpu_model.as_ref().expect("GPU node");
        let mask = model.mask_of_indices(&m.gpu_indices).expect("known GPUs");
        assert_eq!(mask & !node.free_gpus(), 0, "{} GPUs {:?} free once the victims are gone", m.node, m.gpu_indices);
        for g in &m.gpu_indices {
            assert!(gpus.insert((m.node.clone(), *g)), "GPU {g} of {} given twice", m.node);
        }
    }
    for (uid, p) in taken {
        snapshot.restore(&uid, p);
    }
}

fn describe_scope(snapshot: &ClusterSnapshot, scope: Scope) -> String {
    match scope {
        Scope::Domain { level, id } => {
            format!("{} {}", snapshot.settings().levels.levels[level].name, snapshot.domain_index().describe(id))
        }
        Scope::Cluster => "cluster".into(),
    }
}

struct Row {
    case: String,
    outcome: String,
    timings: Timings,
    target: Option<Duration>,
}

fn placement_name(nodes: usize, occupancy: f64, pods: usize, rules: MemberRules, ask: GpuAsk) -> String {
    let rules = match rules {
        MemberRules::None => "",
        MemberRules::AffinityAndSpread => " with affinity and spread",
    };
    let ask = match ask {
        GpuAsk::DevicePlugin => "",
        GpuAsk::DraClaim => " through one DRA claim each",
    };
    format!("place {pods} x 8 GPUs{ask}{rules} on {nodes} nodes at {:.0}%", occupancy * 100.0)
}

fn victims_name(nodes: usize, pods: usize) -> String {
    format!("victims for {pods} x 8 GPUs on {nodes} full nodes")
}

/// Places one gang of `pods` x 8 GPUs on `nodes` nodes filled to `occupancy`.
fn placement_case(
    profiles: &HashMap<String, Profile>,
    nodes: usize,
    occupancy: f64,
    pods: usize,
    (rules, ask): (MemberRules, GpuAsk),
    runs: usize,
) -> Row {
    let mut rng = Rng(0x5eed_0000 + nodes as u64 * 31 + (occupancy * 100.0) as u64);
    let mut fleet = Fleet::new(nodes, ask);
    fleet.occupy(&mut rng, occupancy, false);
    let mut gangs = fleet.gang_scheduler();
    let (mut queue, key, members) = queue_gang(&mut fleet, &mut gangs, pods, 0, rules);
    let whole_nodes_free = (0..nodes).filter(|i| fleet.free_gpus(*i) == 8).count();
    let snapshot = &mut fleet.snapshot;
    let mut outcome = String::new();
    let timings = repeat(runs, Duration::from_secs(10), || {
        let started = Instant::now();
        let verdict = gangs.decide(&key, profiles, snapshot, &queue, Instant::now());
        // What the loop does with a placement before handing it to the binder.
        if let GangDecision::Bind(placement) = &verdict.decision {
            for m in &placement.members {
                queue.remove(&m.uid);
            }
        }
        let took = started.elapsed();
        match verdict.decision {
            GangDecision::Bind(placement) => {
                if outcome.is_empty() {
                    check_placement(snapshot, &placement, pods);
                    if rules == MemberRules::AffinityAndSpread {
                        check_rules(snapshot, &placement);
                    }
                    outcome = format!("placed in {}", describe_scope(snapshot, placement.scope));
                }
                for m in &placement.members {
                    assert_eq!(snapshot.forget(&m.uid), Released::Freed, "assumed");
                }
                for m in &members {
                    queue.upsert(m.clone(), Instant::now());
                }
                assert_eq!(queue.pop(Instant::now()).as_ref(), Some(&key));
            }
            GangDecision::Unschedulable { .. } => {
                assert!(pods > whole_nodes_free, "a gang that fits was refused");
                outcome = format!("does not fit ({whole_nodes_free} whole nodes free)");
            }
            other => panic!("unexpected decision {other:?}"),
        }
        took
    });
    let target = match (nodes, pods) {
        (5000, 64) => Some(Duration::from_millis(10)),
        (5000, 512) => Some(Duration::from_millis(100)),
        _ => None,
    };
    Row { case: placement_name(nodes, occupancy, pods, rules, ask), outcome, timings, target }
}

/// Victim selection for a gang of `pods` x 8 GPUs on a full fleet of lower-priority jobs.
fn preemption_case(profiles: &HashMap<String, Profile>, nodes: usize, pods: usize, runs: usize) -> Row {
    let mut rng = Rng(0xfeed_f00d + nodes as u64);
    let mut fleet = Fleet::new(nodes, GpuAsk::DevicePlugin);
    fleet.occupy(&mut rng, 1.0, true);
    assert_eq!(fleet.gpus_used, nodes * 8, "the fleet is full");
    let mut gangs = fleet.gang_scheduler();
    let priority = 1000;
    let (queue, key, _) = queue_gang(&mut fleet, &mut gangs, pods, priority, MemberRules::None);
    let snapshot = &mut fleet.snapshot;
    let mut outcome = String::new();
    let timings = repeat(runs, Duration::from_secs(20), || {
        let started = Instant::now();
        let decision = gangs.decide(&key, profiles, snapshot, &queue, Instant::now()).decision;
        let took = started.elapsed();
        let GangDecision::Preempt { plan, message } = decision else { panic!("no preemption: {decision:?}") };
        if outcome.is_empty() {
            check_preemption(snapshot, &plan, pods, priority);
            outcome = message;
        }
        // The victims never go in the bench: plan afresh next time.
        gangs.abandon_preemption(&key);
        took
    });
    Row {
        case: victims_name(nodes, pods),
        outcome,
        timings,
        target: (nodes == 5000).then(|| Duration::from_millis(50)),
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// In a fresh process: builds the scheduler's state for `nodes` nodes and
/// `pods` pods (nine in ten bound, the rest pending gangs) and prints the
/// RSS before and after, in KiB.
fn memory_child(nodes: usize, pods: usize) {
    let before = vm_rss_kib();
    let mut rng = Rng(0x3e3e);
    let mut fleet = Fleet::new(nodes, GpuAsk::DevicePlugin);
    let bound = pods * 9 / 10;
    fleet.occupy(&mut rng, 0.85, false);
    // Sidecars and data loaders without GPUs make up the rest of the bound pods.
    let gpu_pods = fleet.snapshot.placed_pod_uids().count();
    for n in 0..bound.saturating_sub(gpu_pods) {
        let p = pod(&format!("loader-{n}"), 0, None, 0, 1_700_000_000 + n as i64);
        fleet.bind(&p, n % nodes);
    }
    let mut gangs = fleet.gang_scheduler();
    let mut queue =
        SchedulingQueue::new(BackoffPolicy { initial: Duration::from_secs(1), max: Duration::from_secs(60) });
    let mut queued = 0;
    let mut job = 0;
    while queued < pods - bound {
        job += 1;
        let size = [8, 16, 32, 64][job % 4].min(pods - bound - queued);
        let id = GangId::new(GangKind::PodGroup, "research", &format!("pending-{job}"));
        gangs.set_object(id.clone(), Some(GangObject::Valid(GangSpec::of_size(size))));
        for i in 0..size {
            queue.upsert(
                pod(&format!("pending-{job}-worker-{i}"), 8, Some(&id), 10, 1_800_000_000 + job as i64),
                Instant::now(),
            );
        }
        queued += size;
    }
    let after = vm_rss_kib();
    let placed = fleet.snapshot.placed_pod_uids().count();
    assert_eq!(placed + queued, pods);
    std::hint::black_box((&fleet.snapshot, &queue, &gangs));
    println!("{before} {after} {placed} {queued}");
}

/// Runs `memory_child` in a fresh process and returns (before, after) in KiB.
fn measure_memory(nodes: usize, pods: usize) -> (u64, u64, usize, usize) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--memory-child", &nodes.to_string(), &pods.to_string()])
        .output()
        .expect("memory child runs");
    assert!(out.status.success(), "memory child failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    assert_eq!(fields.len(), 4, "memory child printed {text:?}");
    (fields[0], fields[1], fields[2] as usize, fields[3] as usize)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let build = if cfg!(debug_assertions) { "debug build (unoptimised: slower than release)" } else { "release build" };
    format!("{cpu}, {cores} cores (shared with other jobs), {build}, one thread")
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Hand-written notes in the results file below this line are kept.
const KEPT_MARKER: &str = "## Speed work";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory-child") {
        memory_child(args[at + 1].parse().expect("nodes"), args[at + 2].parse().expect("pods"));
        return;
    }
    // `cargo bench` passes --bench; `cargo test` runs a quick smoke version.
    let full = args.iter().any(|a| a == "--bench");
    // `--only TEXT`: just the cases whose name contains TEXT (for profiling);
    // the results file is then left alone.
    let only = args.iter().position(|a| a == "--only").map(|at| args[at + 1].clone());
    let wanted = |case: &str| only.as_deref().is_none_or(|o| case.contains(o));
    let profiles = HashMap::from([("phalanx".to_string(), default_profile("phalanx"))]);
    let mut rows = Vec::new();
    let (fleets, gang_sizes, runs): (&[usize], &[usize], usize) =
        if full { (&[500, 5000], &[8, 64, 512], 200) } else { (&[64], &[2, 8, 32], 3) };
    for &nodes in fleets {
        for occupancy in [0.5, 0.9] {
            for &pods in gang_sizes {
                // The rules and DRA claims on the 64-pod case (8 in the smoke run).
                let plain = (MemberRules::None, GpuAsk::DevicePlugin);
                let variants = if pods == gang_sizes[1] {
                    &[
                        plain,
                        (MemberRules::AffinityAndSpread, GpuAsk::DevicePlugin),
                        (MemberRules::None, GpuAsk::DraClaim),
                    ][..]
                } else {
                    &[plain]
                };
                let named = |(rules, ask): &(MemberRules, GpuAsk)| placement_name(nodes, occupancy, pods, *rules, *ask);
                for &variant in variants.iter().filter(|v| wanted(&named(v))) {
                    let row = placement_case(&profiles, nodes, occupancy, pods, variant, runs);
                    eprintln!("{}: p99 {}", row.case, ms(row.timings.p99()));
                    rows.push(row);
                }
            }
        }
    }
    let (victim_nodes, victim_pods) = if full { (5000, 64) } else { (64, 8) };
    if wanted(&victims_name(victim_nodes, victim_pods)) {
        let row = preemption_case(&profiles, victim_nodes, victim_pods, if full { 50 } else { 3 });
        eprintln!("{}: p99 {}", row.case, ms(row.timings.p99()));
        rows.push(row);
    }
    if only.is_some() {
        return;
    }
    let (mem_nodes, mem_pods) = if full { (5000, 50_000) } else { (64, 640) };
    let (before, after, bound, pending) = measure_memory(mem_nodes, mem_pods);
    assert!(after > before, "building the state takes memory");

    let mut report = String::new();
    let _ = writeln!(report, "# Decision speed and memory\n");
    let _ = writeln!(report, "Measured {} on {}.\n", jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"), machine());
    let _ = writeln!(
        report,
        "Fleet: HGX H100 nodes (8 GPUs on NVSwitch) in NVLink domains of {NODES_PER_NVLINK_DOMAIN} nodes, blocks of \
         {NODES_PER_BLOCK} and spines of {NODES_PER_SPINE} (topograph labels), one datacenter. Occupancy: lone pods of \
         1, 2 and 4 GPUs on random nodes and gangs of 1 to 16 whole nodes where they happened to land. Each run is one \
         `GangScheduler::decide` on the popped gang plus taking its placed members off the queue, as the loop does; \
         the placement is undone between runs (untimed).\n"
    );
    let _ = writeln!(report, "| case | outcome | runs | p50 | p99 | max | target (p99) |");
    let _ = writeln!(report, "|---|---|---|---|---|---|---|");
    for row in &rows {
        let target = match row.target {
            Some(t) if row.timings.p99() <= t => format!("< {} met", ms(t)),
            Some(t) => format!("< {} **missed**", ms(t)),
            None => "-".into(),
        };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {target} |",
            row.case,
            row.outcome,
            row.timings.samples.len(),
            ms(row.timings.percentile(0.5)),
            ms(row.timings.p99()),
            ms(row.timings.max()),
        );
    }
    let delta_mb = (after - before) as f64 / 1024.0;
    let total_mb = after as f64 / 1024.0;
    let verdict = if total_mb < 300.0 { "met" } else { "**missed**" };
    let _ = writeln!(
        report,
        "\nMemory (fresh process, VmRSS): {mem_nodes} nodes, {bound} bound pods and {pending} pending pods in gangs \
         (snapshot, queue, gang objects): **{delta_mb:.1} MB** for the state, {total_mb:.1} MB in total \
         (target: under 300 MB, {verdict}).\n"
    );
    print!("{report}");
    if !full {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results/decision-speed.md");
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| old.find(KEPT_MARKER).map(|at| old[at..].to_string()))
        .unwrap_or_default();
    std::fs::write(path, format!("{report}{kept}")).expect("write results");
    eprintln!("written to bench/results/decision-speed.md");
}
