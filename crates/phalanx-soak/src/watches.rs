//! The checker's own view of the cluster: one watch per kind through the
//! main API server (never the one the fault injector restarts), kept in
//! reflector stores, every pod event written to the event log. Pod
//! deletions and eviction marks are remembered here, since a pod deleted
//! with no grace period can come and go between two checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use phalanx::cluster_invariants::{finished, node_of};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use serde_json::json;

use crate::event_log::EventLog;

#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub quotas: Store<ElasticQuota>,
    pub history: Arc<PodHistory>,
}

/// What happened to pods that may be gone by the next check.
#[derive(Default)]
pub struct PodHistory(Mutex<Seen>);

#[derive(Default)]
pub struct Seen {
    /// By namespace/name: when its deletion was first seen.
    pub deleted: BTreeMap<String, Instant>,
    /// Pods marked for eviction (the Eviction API's DisruptionTarget condition).
    pub evicted: BTreeMap<String, Instant>,
    /// When the API server evicted each (that condition's transition time):
    /// under load a deletion is seen seconds after the eviction.
    pub eviction_times: BTreeMap<String, Timestamp>,
    /// When each pod was first seen bound.
    pub bound: BTreeMap<String, Instant>,
}

impl PodHistory {
    pub fn lock(&self) -> MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The pod's `DisruptionTarget=True` condition, if it has one.
fn disruption_target(pod: &Pod) -> Option<&PodCondition> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
}

/// Starts the watches; returns once every store has its first list.
pub async fn start(client: &Client, log: Arc<EventLog>) -> Stores {
    let history = Arc::new(PodHistory::default());
    let pods = {
        let (history, log) = (history.clone(), log.clone());
        watch(Api::all(client.clone()), log.clone(), move |event, pod: &Pod| {
            let key = key(pod);
            let now = Instant::now();
            let mut seen = history.lock();
            if event == "delete" || pod.metadata.deletion_timestamp.is_some() {
                seen.deleted.entry(key.clone()).or_insert(now);
            }
            if let Some(condition) = disruption_target(pod) {
                seen.evicted.entry(key.clone()).or_insert(now);
                if let Some(at) = &condition.last_transition_time {
                    seen.eviction_times.entry(key.clone()).or_insert(at.0);
                }
            }
            if node_of(pod).is_some() {
                seen.bound.entry(key.clone()).or_insert(now);
            }
            log.write(
                "watch",
                json!({"object": "pod", "event": event, "pod": key, "node": node_of(pod),
                    "phase": pod.status.as_ref().and_then(|s| s.phase.clone()), "finished": finished(pod)}),
            );
        })
    };
    let note = log.clone();
    let nodes = watch(Api::all(client.clone()), log.clone(), move |event, node: &Node| {
        let spec = node.spec.as_ref();
        note.write(
            "watch",
            json!({"object": "node", "event": event, "node": node.name_any(),
                "unschedulable": spec.and_then(|s| s.unschedulable), "taints": spec.and_then(|s| s.taints.as_ref()).map_or(0, Vec::len)}),
        );
    });
    let note = log.clone();
    let quotas = watch(Api::all(client.clone()), log.clone(), move |event, q: &ElasticQuota| {
        note.write(
            "watch",
            json!({"object": "elasticquota", "event": event, "namespace": q.namespace(), "max": q.spec.max}),
        );
    });
    let note = log.clone();
    // Budgets are only logged: the ledger knows which jobs have one.
    let budgets = watch(Api::all(client.clone()), log, move |event, b: &PodDisruptionBudget| {
        note.write("watch", json!({"object": "pdb", "event": event, "namespace": b.namespace(), "name": b.name_any()}));
    });
    // Ready once listed; an error means the writer went, which the
    // watch tasks never do.
    let _ = pods.wait_until_ready().await;
    let _ = nodes.wait_until_ready().await;
    let _ = quotas.wait_until_ready().await;
    let _ = budgets.wait_until_ready().await;
    Stores { pods, nodes, quotas, history }
}

/// A reflector for `api`, run for ever in a task; `note` sees each applied
/// ("apply") or deleted ("delete") object.
fn watch<K>(api: Api<K>, log: Arc<EventLog>, note: impl Fn(&str, &K) + Send + 'static) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => note("apply", &obj),
                Ok(watcher::Event::Delete(obj)) => note("delete", &obj),
                Ok(watcher::Event::Init) => log.write("watch", json!({"object": kind, "event": "relist"})),
                Ok(watcher::Event::InitDone) => {}
                Err(e) => log.write("watch", json!({"object": kind, "event": "error", "error": e.to_string()})),
            }
        }
    });
    reader
}
