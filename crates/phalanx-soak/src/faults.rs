//! The fault injector: a seeded schedule of faults that overlap (one kind
//! at a time per component: the leader, phalanx's API server, etcd, a
//! node), each held for a while and then undone. Every fault is recorded
//! with its start and end; the checker measures the recovery after it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Binding, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use phalanx::agent::discovery::read_topology_file;
use phalanx::agent::publish::Publisher;
use phalanx::cluster_invariants::{GPU, finished, gpus_of, node_of};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use phalanx_kube::api::gpu_topology::GPUTopology;
use phalanx_kube::translate::GPUS_ANNOTATION;
use serde_json::json;

use crate::control_plane::ControlPlane;
use crate::event_log::EventLog;
use crate::generator::{NAMESPACES, from_json, not_found};
use crate::ledger::{JOB_LABEL, Ledger, Priority};
use crate::replicas::Replicas;
use crate::rng::Rng;
use crate::watches::Stores;

pub const FOREIGN_NAMESPACE: &str = "soak-foreign";
const CHAOS_TAINT: &str = "soak.phalanx.dev/chaos";
const BLOCK_LABEL: &str = "network.topology.nvidia.com/block";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    LeaderKilled,
    LeaderFrozen,
    ApiServerRestarted,
    WatchesExpired,
    EtcdRestarted,
    NodeDeletedAndReadded,
    NodeCordoned,
    NodeTainted,
    TopologyLabelChanged,
    GpuTopologyChanged,
    EvictionRefusedByPdb,
    ForeignBinding,
    QuotaBelowUsage,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        Self::LeaderKilled,
        Self::LeaderFrozen,
        Self::ApiServerRestarted,
        Self::WatchesExpired,
        Self::EtcdRestarted,
        Self::NodeDeletedAndReadded,
        Self::NodeCordoned,
        Self::NodeTainted,
        Self::TopologyLabelChanged,
        Self::GpuTopologyChanged,
        Self::EvictionRefusedByPdb,
        Self::ForeignBinding,
        Self::QuotaBelowUsage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeaderKilled => "leader SIGKILLed",
            Self::LeaderFrozen => "leader frozen (SIGSTOP/SIGCONT)",
            Self::ApiServerRestarted => "API server restarted",
            Self::WatchesExpired => "watches expired (410)",
            Self::EtcdRestarted => "etcd restarted",
            Self::NodeDeletedAndReadded => "node deleted and re-added",
            Self::NodeCordoned => "node cordoned",
            Self::NodeTainted => "node tainted",
            Self::TopologyLabelChanged => "topology label changed",
            Self::GpuTopologyChanged => "GPUTopology changed",
            Self::EvictionRefusedByPdb => "PDB added to running gang",
            Self::ForeignBinding => "binding by another client",
            Self::QuotaBelowUsage => "quota lowered below usage",
        }
    }

    /// How long it is held (seconds, inclusive range), and how often it is
    /// drawn relative to the others.
    fn hold_and_weight(self) -> ((u64, u64), u32) {
        match self {
            Self::LeaderKilled => ((1, 5), 3),
            Self::LeaderFrozen => ((2, 10), 3),
            Self::ApiServerRestarted => ((2, 8), 2),
            Self::WatchesExpired => ((0, 0), 2),
            Self::EtcdRestarted => ((1, 4), 1),
            Self::NodeDeletedAndReadded => ((2, 10), 3),
            Self::NodeCordoned => ((5, 30), 3),
            Self::NodeTainted => ((5, 30), 3),
            Self::TopologyLabelChanged => ((10, 40), 2),
            Self::GpuTopologyChanged => ((10, 40), 2),
            Self::EvictionRefusedByPdb => ((20, 60), 2),
            Self::ForeignBinding => ((10, 40), 3),
            Self::QuotaBelowUsage => ((15, 40), 2),
        }
    }

    /// Phalanx itself, its API server or etcd is away while it lasts:
    /// nothing can settle, whatever else went wrong before.
    pub fn takes_phalanx_away(self) -> bool {
        self.component() != Component::Objects
    }

    /// The component it takes, so that two faults never fight over one.
    fn component(self) -> Component {
        match self {
            Self::LeaderKilled | Self::LeaderFrozen => Component::Leader,
            Self::ApiServerRestarted | Self::WatchesExpired => Component::ApiServer,
            Self::EtcdRestarted => Component::Etcd,
            _ => Component::Objects,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Component {
    Leader,
    ApiServer,
    Etcd,
    /// Nodes, quotas, budgets: one object per fault, chosen apart.
    Objects,
}

/// One fault of the schedule.
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: Duration,
    pub kind: FaultKind,
    pub hold: Duration,
    pub seed: u64,
}

/// The faults for a run of `length`, one every `mean_gap` seconds on average.
pub fn schedule(rng: &mut Rng, length: Duration, mean_gap: f64) -> Vec<Planned> {
    let kinds: Vec<(FaultKind, u32)> = FaultKind::ALL.iter().map(|k| (*k, k.hold_and_weight().1)).collect();
    let mut plan = Vec::new();
    let mut at = Duration::from_secs(10);
    // The last stretch is fault-free, so that every recovery can be measured.
    let last = length.saturating_sub(Duration::from_secs(30));
    while at < last {
        let kind = *rng.weighted(&kinds);
        let (low, high) = kind.hold_and_weight().0;
        plan.push(Planned { at, kind, hold: Duration::from_secs(rng.between(low, high)), seed: rng.next_u64() });
        at += Duration::from_secs_f64(rng.exponential(mean_gap).clamp(0.5, mean_gap * 4.0));
    }
    plan
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: usize,
    pub kind: FaultKind,
    pub target: String,
    pub started: Instant,
    pub ended: Option<Instant>,
    /// From its end until the scheduler was settled again.
    pub recovery: Option<Duration>,
    /// Not injected: no target, or the injection itself failed.
    pub skipped: Option<String>,
}

#[derive(Default)]
pub struct FaultBook(Mutex<Vec<Record>>);

impl FaultBook {
    pub fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("no target: {0}")]
    NoTarget(&'static str),
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    ControlPlane(#[from] crate::control_plane::ControlPlaneError),
    #[error(transparent)]
    Replica(#[from] crate::replicas::ReplicaError),
    #[error("{0}")]
    Other(String),
}

pub struct Injector {
    pub client: Client,
    pub control_plane: ControlPlane,
    pub replicas: Arc<Replicas>,
    pub stores: Stores,
    pub ledger: Arc<Ledger>,
    pub log: Arc<EventLog>,
    pub book: Arc<FaultBook>,
    /// The fleet's nodes as created, to re-add a deleted one as it was.
    pub fleet: BTreeMap<String, Node>,
    pub fixtures: Vec<PathBuf>,
    busy: Mutex<BTreeSet<String>>,
    components: BTreeMap<Component, tokio::sync::Mutex<()>>,
}

impl Injector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        control_plane: ControlPlane,
        replicas: Arc<Replicas>,
        stores: Stores,
        ledger: Arc<Ledger>,
        log: Arc<EventLog>,
        book: Arc<FaultBook>,
        fleet: BTreeMap<String, Node>,
        fixtures: Vec<PathBuf>,
    ) -> Self {
        let components = [Component::Leader, Component::ApiServer, Component::Etcd, Component::Objects]
            .into_iter()
            .map(|c| (c, tokio::sync::Mutex::new(())))
            .collect();
        Self {
            client,
            control_plane,
            replicas,
            stores,
            ledger,
            log,
            book,
            fleet,
            fixtures,
            busy: Mutex::new(BTreeSet::new()),
            components,
        }
    }

    /// Runs the schedule from `start`; returns when every fault is undone.
    pub async fn run(self: Arc<Self>, plan: Vec<Planned>, start: Instant) {
        let mut tasks = Vec::new();
        for planned in plan {
            tokio::time::sleep_until((start + planned.at).into()).await;
            let this = self.clone();
            tasks.push(tokio::spawn(async move { this.inject(planned).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn inject(&self, planned: Planned) {
        let kind = planned.kind;
        let _held = if kind.component() == Component::Objects {
            None
        } else {
            // A component already under a fault: this one waits its turn.
            Some(self.components[&kind.component()].lock().await)
        };
        let id = {
            let mut book = self.book.lock();
            let id = book.len();
            book.push(Record {
                id,
                kind,
                target: String::new(),
                started: Instant::now(),
                ended: None,
                recovery: None,
                skipped: None,
            });
            id
        };
        let mut rng = Rng::new(planned.seed);
        let result = self.apply(kind, planned.hold, &mut rng, id).await;
        let mut book = self.book.lock();
        let record = &mut book[id];
        record.ended = Some(Instant::now());
        match result {
            Ok(target) => {
                record.target = target.clone();
                self.log.write("fault", json!({"id": id, "fault": kind.as_str(), "event": "end", "target": target}));
            }
            Err(e) => {
                record.skipped = Some(e.to_string());
                self.log.write(
                    "fault",
                    json!({"id": id, "fault": kind.as_str(), "event": "skipped", "error": e.to_string()}),
                );
            }
        }
    }

    fn begin(&self, id: usize, kind: FaultKind, target: &str, hold: Duration) {
        self.book.lock()[id].target = target.to_string();
        self.log.write(
            "fault",
            json!({"id": id, "fault": kind.as_str(), "event": "start", "target": target, "hold_s": hold.as_secs_f64()}),
        );
    }

    /// Injects the fault, holds it, undoes it; returns its target.
    async fn apply(&self, kind: FaultKind, hold: Duration, rng: &mut Rng, id: usize) -> Result<String, FaultError> {
        match kind {
            FaultKind::LeaderKilled | FaultKind::LeaderFrozen => {
                let (leader, _, _) = self.replicas.leader().await.ok_or(FaultError::NoTarget("no replica leads"))?;
                self.begin(id, kind, &leader, hold);
                if kind == FaultKind::LeaderKilled {
                    self.replicas.kill(&leader);
                    tokio::time::sleep(hold).await;
                    self.replicas.restart(&leader)?;
                } else {
                    self.replicas.signal(&leader, "STOP");
                    tokio::time::sleep(hold).await;
                    self.replicas.signal(&leader, "CONT");
                }
                Ok(leader)
            }
            FaultKind::ApiServerRestarted | FaultKind::WatchesExpired => {
                // A restarted API server has a new watch cache: every watch
                // phalanx resumes from an older resourceVersion gets 410.
                self.begin(id, kind, "phalanx's API server", hold);
                self.control_plane.stop_phalanx_apiserver().await?;
                tokio::time::sleep(hold).await;
                self.control_plane.restart_phalanx_apiserver().await?;
                Ok("phalanx's API server".into())
            }
            FaultKind::EtcdRestarted => {
                self.begin(id, kind, "etcd", hold);
                self.control_plane.restart_etcd(hold.as_secs()).await?;
                Ok("etcd".into())
            }
            FaultKind::NodeDeletedAndReadded => {
                let node = self.claim_node(rng, true)?;
                self.begin(id, kind, &node, hold);
                let result = self.delete_and_readd(&node, hold).await;
                self.release(&node);
                result.map(|()| node)
            }
            FaultKind::NodeCordoned => {
                self.hold_node_patch(
                    id,
                    kind,
                    rng,
                    hold,
                    json!({"spec": {"unschedulable": true}}),
                    json!({"spec": {"unschedulable": null}}),
                )
                .await
            }
            FaultKind::NodeTainted => {
                let taint = json!({"spec": {"taints": [{"key": CHAOS_TAINT, "value": "1", "effect": "NoSchedule"}]}});
                self.hold_node_patch(id, kind, rng, hold, taint, json!({"spec": {"taints": null}})).await
            }
            FaultKind::TopologyLabelChanged => {
                let blocks: BTreeSet<String> =
                    self.fleet.values().filter_map(|n| n.labels().get(BLOCK_LABEL).cloned()).collect();
                let blocks: Vec<String> = blocks.into_iter().collect();
                let other = rng.pick(&blocks).cloned().ok_or(FaultError::NoTarget("no block labels"))?;
                let node = self.claim_node(rng, false)?;
                let original = self.fleet.get(&node).and_then(|n| n.labels().get(BLOCK_LABEL).cloned());
                let result = self
                    .hold_patch_on(
                        id,
                        kind,
                        &node,
                        hold,
                        json!({"metadata": {"labels": {BLOCK_LABEL: other}}}),
                        json!({"metadata": {"labels": {BLOCK_LABEL: original}}}),
                    )
                    .await;
                self.release(&node);
                result.map(|()| format!("{node} -> {other}"))
            }
            FaultKind::GpuTopologyChanged => {
                let fixture = rng.pick(&self.fixtures).cloned().ok_or(FaultError::NoTarget("no fixtures"))?;
                let node = self.claim_node(rng, false)?;
                self.begin(id, kind, &node, hold);
                let result = self.publish_topology(&node, &fixture, hold).await;
                self.release(&node);
                result.map(|()| format!("{node}: {}", fixture.file_name().unwrap_or_default().to_string_lossy()))
            }
            FaultKind::EvictionRefusedByPdb => self.protect_running_gang(id, kind, rng, hold).await,
            FaultKind::ForeignBinding => self.bind_foreign(id, kind, rng, hold).await,
            FaultKind::QuotaBelowUsage => self.lower_quota(id, kind, rng, hold).await,
        }
    }

    /// A node no other fault holds; `free_gpus`: prefer one with free GPUs
    /// (where phalanx is likely to bind next).
    fn claim_node(&self, rng: &mut Rng, free_gpus: bool) -> Result<String, FaultError> {
        let used = used_gpus(&self.stores);
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let present: BTreeSet<String> = self.stores.nodes.state().iter().map(|n| n.name_any()).collect();
        let candidates: Vec<&String> = self
            .fleet
            .keys()
            .filter(|n| !busy.contains(*n) && present.contains(*n))
            .filter(|n| !free_gpus || used.get(*n).copied().unwrap_or(0) < allocatable(&self.fleet[*n]))
            .collect();
        let node = rng.pick(&candidates).map(|n| (*n).clone()).ok_or(FaultError::NoTarget("no free node"))?;
        busy.insert(node.clone());
        Ok(node)
    }

    fn release(&self, node: &str) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(node);
    }

    async fn delete_and_readd(&self, node: &str, hold: Duration) -> Result<(), FaultError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.delete(node, &DeleteParams::default()).await?;
        tokio::time::sleep(hold).await;
        let mut fresh = self.fleet[node].clone();
        fresh.metadata.resource_version = None;
        fresh.metadata.uid = None;
        // The deletion may still be finishing: try for a while.
        for _ in 0..50 {
            match api.create(&PostParams::default(), &fresh).await {
                Err(kube::Error::Api(s)) if s.code == 409 => tokio::time::sleep(Duration::from_millis(200)).await,
                other => return other.map(|_| ()).map_err(FaultError::from),
            }
        }
        Err(FaultError::Other(format!("node {node} could not be created again")))
    }

    async fn hold_node_patch(
        &self,
        id: usize,
        kind: FaultKind,
        rng: &mut Rng,
        hold: Duration,
        apply: serde_json::Value,
        undo: serde_json::Value,
    ) -> Result<String, FaultError> {
        let node = self.claim_node(rng, true)?;
        let result = self.hold_patch_on(id, kind, &node, hold, apply, undo).await;
        self.release(&node);
        result.map(|()| node)
    }

    async fn hold_patch_on(
        &self,
        id: usize,
        kind: FaultKind,
        node: &str,
        hold: Duration,
        apply: serde_json::Value,
        undo: serde_json::Value,
    ) -> Result<(), FaultError> {
        let api: Api<Node> = Api::all(self.client.clone());
        self.begin(id, kind, node, hold);
        api.patch(node, &PatchParams::default(), &Patch::Merge(&apply)).await?;
        tokio::time::sleep(hold).await;
        patch_until_done(&api, node, &undo).await
    }

    async fn publish_topology(&self, node: &str, fixture: &std::path::Path, hold: Duration) -> Result<(), FaultError> {
        let topology = read_topology_file(fixture, node).map_err(|e| FaultError::Other(e.to_string()))?;
        Publisher::new(self.client.clone(), node)
            .publish(&topology, "file", None)
            .await
            .map_err(|e| FaultError::Other(e.to_string()))?;
        tokio::time::sleep(hold).await;
        match Api::<GPUTopology>::all(self.client.clone()).delete(node, &DeleteParams::default()).await {
            Err(e) if !not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Pods bound to a node and not finished, as the soak's watch sees them.
    fn running_pods(&self) -> Vec<Arc<Pod>> {
        self.stores.pods.state().into_iter().filter(|p| node_of(p).is_some() && !finished(p)).collect()
    }

    /// A budget forbidding any eviction, put on a running gang of low or mid
    /// priority (the ones preemption picks) that phalanx may not have seen yet.
    async fn protect_running_gang(
        &self,
        id: usize,
        kind: FaultKind,
        rng: &mut Rng,
        hold: Duration,
    ) -> Result<String, FaultError> {
        let bound: BTreeSet<String> =
            self.running_pods().iter().filter_map(|p| p.labels().get(JOB_LABEL).cloned()).collect();
        let candidates: Vec<(String, String, u32)> = self
            .ledger
            .lock()
            .jobs
            .values()
            .filter(|j| {
                j.deleted.is_none()
                    && j.protected_since.is_none()
                    && j.priority < Priority::High
                    && bound.contains(&j.name)
            })
            .map(|j| (j.namespace.clone(), j.name.clone(), j.size))
            .collect();
        let (ns, job, size) = rng.pick(&candidates).cloned().ok_or(FaultError::NoTarget("no running gang"))?;
        self.begin(id, kind, &job, hold);
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &ns);
        let budget: PodDisruptionBudget = from_json(json!({
            "metadata": {"name": format!("{job}-chaos"), "namespace": ns},
            "spec": {"minAvailable": size, "selector": {"matchLabels": {JOB_LABEL: job}}}}));
        let created = api.create(&PostParams::default(), &budget).await?;
        if let Some(j) = self.ledger.lock().jobs.get_mut(&job) {
            j.protected_since = Some(Instant::now());
            j.budget_created = created.metadata.creation_timestamp.map(|t| t.0);
        }
        tokio::time::sleep(hold).await;
        if let Some(j) = self.ledger.lock().jobs.get_mut(&job) {
            j.protected_since = None;
            j.budget_created = None;
        }
        match api.delete(&format!("{job}-chaos"), &DeleteParams::default()).await {
            Err(e) if !not_found(&e) => Err(e.into()),
            _ => Ok(job),
        }
    }

    /// A pod of another scheduler bound straight onto free GPUs of a node
    /// phalanx may be about to bind to, holding them for a while.
    async fn bind_foreign(
        &self,
        id: usize,
        kind: FaultKind,
        rng: &mut Rng,
        hold: Duration,
    ) -> Result<String, FaultError> {
        let node = self.claim_node(rng, true)?;
        let result = self.bind_foreign_on(id, kind, &node, rng, hold).await;
        self.release(&node);
        result
    }

    async fn bind_foreign_on(
        &self,
        id: usize,
        kind: FaultKind,
        node: &str,
        rng: &mut Rng,
        hold: Duration,
    ) -> Result<String, FaultError> {
        let held: BTreeSet<u32> = self
            .running_pods()
            .iter()
            .filter(|p| node_of(p) == Some(node))
            .filter_map(|p| p.annotations().get(GPUS_ANNOTATION).cloned())
            .flat_map(|text| text.split(',').filter_map(|i| i.trim().parse().ok()).collect::<Vec<u32>>())
            .collect();
        let capacity = allocatable(&self.fleet[node]) as u32;
        let free: Vec<u32> = (0..capacity).filter(|i| !held.contains(i)).collect();
        if free.is_empty() {
            return Err(FaultError::NoTarget("no free GPU"));
        }
        let count = (rng.between(1, 4) as usize).min(free.len());
        let gpus: Vec<String> = free[..count].iter().map(u32::to_string).collect();
        let name = format!("foreign-{id}");
        self.begin(id, kind, &format!("{node}: {name}"), hold);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), FOREIGN_NAMESPACE);
        let pod: Pod = from_json(json!({
            "metadata": {"name": name, "namespace": FOREIGN_NAMESPACE, "annotations": {GPUS_ANNOTATION: gpus.join(",")}},
            "spec": {"schedulerName": "another-scheduler", "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {GPU: count.to_string()}}}]}}));
        let created = api.create(&PostParams::default(), &pod).await?;
        self.ledger.lock().foreign_binds.insert(node.to_string(), Instant::now());
        let binding: Binding = from_json(json!({
            "metadata": {"name": name, "namespace": FOREIGN_NAMESPACE, "uid": created.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}));
        let bound =
            api.create_subresource::<_, kube::core::Status>("binding", &name, &PostParams::default(), &binding).await;
        if let Err(e) = bound {
            let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await;
            return Err(e.into());
        }
        tokio::time::sleep(hold).await;
        match api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await {
            Err(e) if !not_found(&e) => Err(e.into()),
            _ => Ok(format!("{node}: {count} GPUs")),
        }
    }

    async fn lower_quota(
        &self,
        id: usize,
        kind: FaultKind,
        rng: &mut Rng,
        hold: Duration,
    ) -> Result<String, FaultError> {
        let ns = rng.pick(&NAMESPACES).copied().ok_or(FaultError::NoTarget("no namespace"))?;
        let api: Api<ElasticQuota> = Api::namespaced(self.client.clone(), ns);
        let quota = api.get("gpus").await?;
        let original = quota.spec.max.as_ref().and_then(|m| m.get(GPU)).map(|q| q.0.clone());
        let usage: i64 =
            self.running_pods().iter().filter(|p| p.namespace().as_deref() == Some(ns)).map(|p| gpus_of(p)).sum();
        let lowered = (usage / 2 / 8 * 8).max(8);
        self.begin(id, kind, &format!("{ns}: max {lowered} (using {usage})"), hold);
        self.ledger.lock().note_quota_change(ns);
        let patch = |max: serde_json::Value| json!({"spec": {"max": {GPU: max}}});
        api.patch("gpus", &PatchParams::default(), &Patch::Merge(&patch(json!(lowered.to_string())))).await?;
        tokio::time::sleep(hold).await;
        self.ledger.lock().note_quota_change(ns);
        let restore = patch(json!(original));
        let result = api.patch("gpus", &PatchParams::default(), &Patch::Merge(&restore)).await;
        self.ledger.lock().note_quota_change(ns);
        result?;
        Ok(format!("{ns}: {usage} used, max {lowered} for {}s", hold.as_secs()))
    }
}

/// Undoing a fault must not be lost to another fault (etcd restarting):
/// retried for a minute.
async fn patch_until_done(api: &Api<Node>, node: &str, patch: &serde_json::Value) -> Result<(), FaultError> {
    let mut last = None;
    for _ in 0..60 {
        match api.patch(node, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.map_or_else(|| FaultError::Other("patch".into()), FaultError::from))
}

pub fn allocatable(node: &Node) -> i64 {
    node.status.as_ref().and_then(|s| s.allocatable.as_ref()?.get(GPU)?.0.parse().ok()).unwrap_or(0)
}

/// GPUs held by unfinished pods, by node.
pub fn used_gpus(stores: &Stores) -> BTreeMap<String, i64> {
    let pods = stores.pods.state();
    phalanx::cluster_invariants::gpus_by_node(pods.iter().map(|p| &**p).filter(|p| !finished(p)))
}
