//! The workload: a seeded stream of jobs that keeps the fleet
//! over-subscribed — PodGroup gangs of 2-64 pods, PyTorchJobs, lone pods —
//! at three priorities in three namespaces, some gangs under a
//! PodDisruptionBudget, every pod finishing after its run time; and the
//! cleanup a job controller does: finished jobs removed, some running and
//! pending jobs deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use phalanx::cluster_invariants::{finished, node_of};
use phalanx_kube::api::pod_group::PodGroup;
use phalanx_kube::api::pytorch_job::PyTorchJob;
use phalanx_kube::translate::{KUBEFLOW_JOB_LABEL, POD_GROUP_LABEL};
use serde_json::{Value, json};

use crate::event_log::EventLog;
use crate::ledger::{JOB_LABEL, Job, JobKind, Ledger, Priority};
use crate::replicas::SCHEDULER_NAME;
use crate::rng::Rng;
use crate::watches::Stores;

pub const NAMESPACES: [&str; 3] = ["soak-a", "soak-b", "soak-c"];
/// kwok's pod stage: the pod succeeds this long after it runs.
const RUN_FOR_ANNOTATION: &str = "e2e.phalanx.dev/run-for";

#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Mean seconds between two jobs.
    pub job_interval: f64,
    /// Mean seconds between two deletions of live work.
    pub delete_interval: f64,
}

pub struct Generator {
    pub client: Client,
    pub rng: Rng,
    pub ledger: Arc<Ledger>,
    pub log: Arc<EventLog>,
    pub stores: Stores,
    pub rates: Rates,
}

/// What a job's pods are doing, from the checker's stores.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Every pod finished or gone: the job is over.
    Over,
    Live,
}

impl Generator {
    /// Submits and deletes work until `until`.
    pub async fn run(mut self, until: Instant) {
        let mut next_job = Instant::now();
        let mut next_delete = Instant::now() + self.secs(self.rates.delete_interval);
        let mut next_cleanup = Instant::now();
        let mut serial = 0u32;
        while Instant::now() < until {
            let now = Instant::now();
            if now >= next_job {
                serial += 1;
                self.submit(serial).await;
                next_job = now + self.secs(self.rates.job_interval);
            }
            if now >= next_delete {
                self.delete_some_live_job().await;
                next_delete = now + self.secs(self.rates.delete_interval);
            }
            if now >= next_cleanup {
                self.clean_up_finished().await;
                next_cleanup = now + Duration::from_secs(3);
            }
            let wake = next_job.min(next_delete).min(next_cleanup).min(until);
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    fn secs(&mut self, mean: f64) -> Duration {
        Duration::from_secs_f64(self.rng.exponential(mean).min(mean * 5.0))
    }

    async fn submit(&mut self, serial: u32) {
        let kind = *self.rng.weighted(&[(JobKind::PodGroup, 6), (JobKind::PyTorchJob, 2), (JobKind::LonePod, 2)]);
        let size = match kind {
            JobKind::PodGroup => *self.rng.weighted(&[(2, 8), (4, 8), (8, 5), (16, 3), (32, 2), (64, 1)]),
            JobKind::PyTorchJob => self.rng.between(2, 8) as u32,
            JobKind::LonePod => 1,
        };
        let gpus_per_pod = match kind {
            JobKind::LonePod => *self.rng.weighted(&[(1, 3), (2, 2), (4, 2), (8, 2)]),
            _ if size >= 16 => 8,
            _ => *self.rng.weighted(&[(2, 1), (4, 2), (8, 4)]),
        };
        let priority = *self.rng.weighted(&[(Priority::Low, 5), (Priority::Mid, 3), (Priority::High, 2)]);
        let namespace = *self.rng.pick(&NAMESPACES).unwrap_or(&NAMESPACES[0]);
        let protected = kind != JobKind::LonePod && self.rng.unit() < 0.2;
        let run_for = self.rng.between(20, 90);
        let name = format!("j{serial:05}-{}", kind.as_str());
        let pods: Vec<String> = (0..size).map(|i| format!("{name}-{i}")).collect();
        let mut job = Job {
            namespace: namespace.to_string(),
            name: name.clone(),
            kind,
            size,
            gpus_per_pod,
            priority,
            created: Instant::now(),
            deleted: None,
            protected_since: None,
            budget_created: None,
            pods: pods.clone(),
        };
        self.log.write(
            "generator",
            json!({"action": "submit", "job": name, "namespace": namespace, "type": kind.as_str(), "size": size,
                "gpus_per_pod": gpus_per_pod, "priority": priority.class(), "pdb": protected, "run_for_s": run_for}),
        );
        let result = self.create_objects(&job, protected, run_for).await;
        if protected && result.is_ok() {
            job.protected_since = Some(Instant::now());
        }
        self.ledger.lock().jobs.insert(name.clone(), job);
        if let Err(e) = result {
            self.log.write("generator", json!({"action": "submit-failed", "job": name, "error": e.to_string()}));
        }
    }

    async fn create_objects(&self, job: &Job, protected: bool, run_for: u64) -> Result<(), kube::Error> {
        let ns = job.namespace.as_str();
        let mut owner = None;
        match job.kind {
            JobKind::PodGroup => {
                let group: PodGroup = from_json(json!({
                    "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                    "metadata": {"name": job.name, "namespace": ns}, "spec": {"minMember": job.size}}));
                Api::<PodGroup>::namespaced(self.client.clone(), ns).create(&PostParams::default(), &group).await?;
            }
            JobKind::PyTorchJob => {
                let template = json!({"spec": {"containers": [{"name": "pytorch", "image": "pytorch/pytorch"}]}});
                let object: PyTorchJob = from_json(json!({
                    "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                    "metadata": {"name": job.name, "namespace": ns},
                    "spec": {"pytorchReplicaSpecs": {
                        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                        "Worker": {"replicas": job.size - 1, "restartPolicy": "OnFailure", "template": template}}}}));
                let created = Api::<PyTorchJob>::namespaced(self.client.clone(), ns)
                    .create(&PostParams::default(), &object)
                    .await?;
                owner = created.metadata.uid;
            }
            JobKind::LonePod => {}
        }
        if protected {
            let budget: PodDisruptionBudget = from_json(json!({
                "metadata": {"name": job.name, "namespace": ns},
                "spec": {"minAvailable": job.size, "selector": {"matchLabels": {JOB_LABEL: job.name}}}}));
            Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), &budget)
                .await?;
        }
        let pods: Vec<Pod> =
            job.pods.iter().enumerate().map(|(i, name)| pod(job, i, name, run_for, owner.as_deref())).collect();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(pods)
            .map(|p| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &p).await }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().try_for_each(|r| r.map(|_| ()))
    }

    fn progress(&self, job: &Job) -> Progress {
        let pods = &self.stores.pods;
        let live = job.pods.iter().any(|name| {
            pods.get(&kube::runtime::reflector::ObjectRef::new(name).within(&job.namespace))
                .is_some_and(|p| !finished(&p))
        });
        if live { Progress::Live } else { Progress::Over }
    }

    /// Jobs whose pods all finished (or went), removed as a job controller's
    /// TTL would, so that the cluster does not fill with finished pods.
    async fn clean_up_finished(&self) {
        let candidates: Vec<Job> = self
            .ledger
            .lock()
            .jobs
            .values()
            .filter(|j| j.deleted.is_none() && j.created.elapsed() > Duration::from_secs(5))
            .cloned()
            .collect();
        for job in candidates {
            if self.progress(&job) == Progress::Over {
                self.delete(&job, "cleanup").await;
            }
        }
    }

    /// A running or pending job deleted, as a user cancelling it.
    async fn delete_some_live_job(&mut self) {
        let live: Vec<Job> = self.ledger.lock().jobs.values().filter(|j| j.deleted.is_none()).cloned().collect();
        let Some(job) = self.rng.pick(&live).cloned() else { return };
        let bound = job.pods.iter().any(|name| {
            self.stores
                .pods
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(&job.namespace))
                .is_some_and(|p| node_of(&p).is_some())
        });
        self.delete(&job, if bound { "delete-running" } else { "delete-pending" }).await;
    }

    async fn delete(&self, job: &Job, why: &str) {
        if let Some(j) = self.ledger.lock().jobs.get_mut(&job.name) {
            j.deleted = Some(Instant::now());
        }
        self.log.write("generator", json!({"action": why, "job": job.name, "namespace": job.namespace}));
        let ns = job.namespace.as_str();
        let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        let selector = ListParams::default().labels(&format!("{JOB_LABEL}={}", job.name));
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut errors = Vec::new();
        if let Err(e) = pods.delete_collection(&now, &selector).await {
            errors.push(e.to_string());
        }
        let result = match job.kind {
            JobKind::PodGroup => {
                Api::<PodGroup>::namespaced(self.client.clone(), ns).delete(&job.name, &now).await.map(|_| ())
            }
            JobKind::PyTorchJob => {
                Api::<PyTorchJob>::namespaced(self.client.clone(), ns).delete(&job.name, &now).await.map(|_| ())
            }
            JobKind::LonePod => Ok(()),
        };
        errors.extend(result.err().filter(|e| !not_found(e)).map(|e| e.to_string()));
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = budgets.delete(&job.name, &now).await
            && !not_found(&e)
        {
            errors.push(e.to_string());
        }
        if !errors.is_empty() {
            self.log.write("generator", json!({"action": "delete-failed", "job": job.name, "errors": errors}));
        }
    }
}

pub fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| unreachable!("the soak's own object does not decode: {e}"))
}

/// Member `index` of `job`, as its controller would create it.
fn pod(job: &Job, index: usize, name: &str, run_for: u64, owner: Option<&str>) -> Pod {
    let mut labels = json!({JOB_LABEL: job.name});
    match job.kind {
        JobKind::PodGroup => labels[POD_GROUP_LABEL] = json!(job.name),
        JobKind::PyTorchJob => {
            let (kind, replica) = if index == 0 { ("master", 0) } else { ("worker", index - 1) };
            labels[KUBEFLOW_JOB_LABEL] = json!(job.name);
            labels["training.kubeflow.org/operator-name"] = json!("pytorchjob-controller");
            labels["training.kubeflow.org/replica-type"] = json!(kind);
            labels["training.kubeflow.org/replica-index"] = json!(replica.to_string());
        }
        JobKind::LonePod => {}
    }
    let owners = owner.map(|uid| {
        json!([{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job.name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
    });
    let mut pod: Pod = from_json(json!({
        "metadata": {"name": name, "namespace": job.namespace, "labels": labels,
            "annotations": {RUN_FOR_ANNOTATION: format!("{run_for}s")}},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "priorityClassName": job.priority.class(),
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "train", "image": "pytorch/pytorch", "resources": {
                "limits": {"nvidia.com/gpu": job.gpus_per_pod.to_string()},
                "requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    }));
    if let Some(owners) = owners {
        pod.metadata.owner_references = Some(from_json(owners));
    }
    pod
}
