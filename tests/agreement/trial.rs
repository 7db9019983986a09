//! Runs cases on the cluster: creates a case's fleet, bound pods and
//! storage, has each probe tried by phalanx and by kube-scheduler in turn,
//! and removes the case again. Starts and stops the kube-scheduler.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::model::{Case, Labels, PodModel, VolumeUse};
use super::render::{self, CASE, OWNER, Placement, Storage};
use super::support::kube_scheduler::KubeScheduler;
use super::support::{TestEnv, eventually, eventually_every};

const DECIDE: Duration = Duration::from_secs(60);
/// How often the outcome of a try is looked for.
const POLL: Duration = Duration::from_millis(20);

/// How long the schedulers' watches get to see a change before a try relies
/// on it. The API server is local, so they see it within milliseconds; a
/// case with a problem is run again patiently, so that a watch slowed by a
/// busy machine is not taken for a disagreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    Quick,
    Patient,
}

impl Pace {
    fn settle(self) -> Duration {
        match self {
            Pace::Quick => Duration::from_millis(200),
            Pace::Patient => Duration::from_secs(3),
        }
    }
}
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Placed(String),
    /// `PodScheduled=False`, with its message.
    Unschedulable(String),
}

impl Decision {
    pub fn placed(&self) -> bool {
        matches!(self, Decision::Placed(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Phalanx,
    KubeScheduler,
}

impl Contender {
    /// Keeps the two tries' pods and storage apart.
    fn tag(self) -> &'static str {
        match self {
            Contender::Phalanx => "p",
            Contender::KubeScheduler => "k",
        }
    }
}

pub struct Trial {
    client: Client,
    own: String,
    other: String,
    /// The value of [`OWNER`] on everything this run creates.
    run: String,
    phalanx: String,
    kube_scheduler: KubeScheduler,
    pub phases: Phases,
}

/// Where the run's time went.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// Probes tried by both.
    pub probes: u32,
    pub set_up: Duration,
    pub tear_down: Duration,
    pub decide_phalanx: Duration,
    pub decide_kube_scheduler: Duration,
}

pub async fn create_namespace(client: &Client, name: &str, labels: &Labels) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually(Duration::from_secs(30), "the default ServiceAccount", || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
}

async fn create<K>(api: &Api<K>, body: Value)
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let object: K = serde_json::from_value(body).unwrap_or_else(|e| panic!("{name}: {e}"));
    api.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
}

/// Deletes what carries `selector` at once (no grace period).
async fn delete_all<K>(api: &Api<K>, selector: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    api.delete_collection(&now, &ListParams::default().labels(selector)).await.expect("delete collection");
}

impl Trial {
    /// Starts kube-scheduler beside the env's phalanx.
    pub async fn start(env: &TestEnv, other: &str) -> Self {
        Self {
            client: env.client.clone(),
            own: env.name.clone(),
            other: other.to_string(),
            run: env.name.clone(),
            phalanx: env.scheduler_name.clone(),
            kube_scheduler: KubeScheduler::start(env).await,
            phases: Phases::default(),
        }
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn all<K: Resource<DynamicType = ()>>(&self) -> Api<K> {
        Api::all(self.client.clone())
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.own)
    }

    /// Sets the case up, has each probe tried by phalanx and then by
    /// kube-scheduler, and removes the case; returns both decisions per probe.
    pub async fn run_case(&mut self, case: &Case, pace: Pace) -> Vec<(Decision, Decision)> {
        let began = std::time::Instant::now();
        self.set_up(case, pace).await;
        self.phases.set_up += began.elapsed();
        let mut decisions = Vec::new();
        for probe in &case.probes {
            let phalanx = self.try_probe(case, probe, Contender::Phalanx, pace).await;
            let kube_scheduler = self.try_probe(case, probe, Contender::KubeScheduler, pace).await;
            decisions.push((phalanx, kube_scheduler));
            self.phases.probes += 1;
        }
        let began = std::time::Instant::now();
        self.tear_down(case).await;
        self.phases.tear_down += began.elapsed();
        decisions
    }

    async fn set_up(&self, case: &Case, pace: Pace) {
        let nodes: Api<Node> = self.all();
        for node in &case.nodes {
            create(&nodes, render::node(node, &case.id, &self.run)).await;
        }
        // kwok reports them Ready, then the node lifecycle controller lifts
        // the not-ready taint the API server put on them.
        let selector = format!("{CASE}={}", case.id);
        eventually(Duration::from_secs(60), &format!("case {} nodes Ready", case.id), || {
            let (nodes, selector) = (nodes.clone(), selector.clone());
            async move {
                let list = nodes.list(&ListParams::default().labels(&selector)).await.ok()?;
                let settled = list.items.iter().filter(|n| ready_with_only_its_own_taints(n, case)).count();
                (settled == case.nodes.len()).then_some(())
            }
        })
        .await;
        let storage = render::bound_storage(case, &self.own, &self.run);
        self.create_storage(storage).await;
        let claims = self.claims();
        for claim in &case.bound_claims {
            eventually(Duration::from_secs(60), &format!("claim {} Bound", claim.name), || async {
                let phase = claims.get(&claim.name).await.ok()?.status?.phase?;
                (phase == "Bound").then_some(())
            })
            .await;
        }
        for pod in &case.bound {
            let claims: Vec<String> = pod
                .volumes
                .iter()
                .map(|v| match v {
                    VolumeUse::Bound(name) => name.clone(),
                    other => panic!("bound pods only use bound claims, not {other:?}"),
                })
                .collect();
            create(&self.pods(&pod.namespace), render::pod(pod, &self.run, &case.id, Placement::Bound, &claims)).await;
        }
        tokio::time::sleep(pace.settle() * 2).await;
    }

    async fn create_storage(&self, storage: Storage) {
        let (classes, volumes) = (self.all::<StorageClass>(), self.all::<PersistentVolume>());
        for class in storage.classes {
            create(&classes, class).await;
        }
        for driver in storage.drivers {
            create(&self.all::<CSIDriver>(), driver).await;
        }
        for capacity in storage.capacities {
            create(&Api::<CSIStorageCapacity>::namespaced(self.client.clone(), &self.own), capacity).await;
        }
        for volume in storage.volumes {
            create(&volumes, volume).await;
        }
        for claim in storage.claims {
            create(&self.claims(), claim).await;
        }
    }

    /// One scheduler's try at a probe, with storage of its own; the probe is
    /// gone again (and the schedulers have seen it go) when this returns.
    async fn try_probe(&mut self, case: &Case, probe: &PodModel, contender: Contender, pace: Pace) -> Decision {
        let tag = contender.tag();
        let scheduler = match contender {
            Contender::Phalanx => self.phalanx.clone(),
            Contender::KubeScheduler => self.kube_scheduler.name.clone(),
        };
        let (storage, claims) = render::probe_storage(probe, tag, &self.run);
        let own_claims: Vec<String> =
            storage.claims.iter().filter_map(|c| c["metadata"]["name"].as_str()).map(str::to_string).collect();
        if !storage.claims.is_empty() {
            self.create_storage(storage).await;
            tokio::time::sleep(pace.settle()).await;
        }
        let mut body = render::pod(probe, &self.run, &case.id, Placement::Scheduler(&scheduler), &claims);
        let name = format!("{}-{tag}", probe.name);
        body["metadata"]["name"] = json!(name);
        let pods = self.pods(&probe.namespace);
        create(&pods, body).await;
        let began = std::time::Instant::now();
        let claims_api = self.claims();
        let decision = eventually_every(POLL, DECIDE, &format!("{scheduler} deciding {name}"), || {
            let (pods, claims_api, name, own_claims) =
                (pods.clone(), claims_api.clone(), name.clone(), own_claims.clone());
            async move {
                let pod = pods.get(&name).await.ok()?;
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    return Some(Decision::Placed(node));
                }
                // A claim waiting for its first consumer names the chosen
                // node before the pod is bound (once the volume is there).
                for claim in &own_claims {
                    let annotations = claims_api.get(claim).await.ok()?.metadata.annotations.unwrap_or_default();
                    if let Some(node) = annotations.get(SELECTED_NODE) {
                        return Some(Decision::Placed(node.clone()));
                    }
                }
                let conditions = pod.status?.conditions?;
                let refused = conditions.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
                Some(Decision::Unschedulable(refused.message.unwrap_or_default()))
            }
        })
        .await;
        let took = began.elapsed();
        match contender {
            Contender::Phalanx => self.phases.decide_phalanx += took,
            Contender::KubeScheduler => self.phases.decide_kube_scheduler += took,
        }
        let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        pods.delete(&name, &now).await.expect("delete probe");
        eventually_every(POLL, Duration::from_secs(30), &format!("{name} gone"), || async {
            pods.get_opt(&name).await.ok().and_then(|p| p.is_none().then_some(()))
        })
        .await;
        tokio::time::sleep(pace.settle()).await;
        decision
    }

    async fn tear_down(&self, case: &Case) {
        let selector = format!("{OWNER}={}", self.run);
        for namespace in [&self.own, &self.other] {
            let pods = self.pods(namespace);
            delete_all(&pods, &selector).await;
            eventually(Duration::from_secs(30), &format!("case {} pods gone", case.id), || async {
                pods.list(&ListParams::default().labels(&selector)).await.ok().filter(|l| l.items.is_empty())
            })
            .await;
        }
        delete_all(&self.claims(), &selector).await;
        delete_all(&self.all::<PersistentVolume>(), &selector).await;
        delete_all(&self.all::<StorageClass>(), &selector).await;
        delete_all(&self.all::<CSIDriver>(), &selector).await;
        delete_all(&Api::<CSIStorageCapacity>::namespaced(self.client.clone(), &self.own), &selector).await;
        delete_all(&self.all::<Node>(), &format!("{CASE}={}", case.id)).await;
    }

    /// Stops kube-scheduler and removes what the run left: the second
    /// namespace, and volumes and claims still held by their finalizers.
    pub async fn stop(self) {
        let selector = format!("{OWNER}={}", self.run);
        let claims = self.claims();
        let volumes: Api<PersistentVolume> = self.all();
        for _ in 0..60 {
            let left = claims.list(&ListParams::default().labels(&selector)).await.map(|l| l.items.len()).unwrap_or(0)
                + volumes.list(&ListParams::default().labels(&selector)).await.map(|l| l.items.len()).unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        strip_finalizers(&claims, &selector).await;
        strip_finalizers(&volumes, &selector).await;
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.other, &DeleteParams::default()).await;
        eprintln!("[agreement] kube-scheduler's log: {}", self.kube_scheduler.log.display());
        self.kube_scheduler.stop().await;
    }
}

async fn strip_finalizers<K>(api: &Api<K>, selector: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Ok(list) = api.list(&ListParams::default().labels(selector)).await else { return };
    for object in list.items {
        let name = object.meta().name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"finalizers": null}});
        let _ = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    }
}

fn ready_with_only_its_own_taints(node: &Node, case: &Case) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let Some(model) = case.nodes.iter().find(|n| n.name == name) else { return false };
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    phalanx::fleet::is_ready(node) && taints.iter().all(|t| model.taints.iter().any(|m| m.key == t.key))
}
