//! What is submitted: pods of `gpus` GPUs each, alone or in gangs of a fixed
//! size, created at a fixed rate. Every scheduler gets the same pods; only
//! the scheduler name and the way a gang is named differ, as each scheduler
//! expects it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::Client;
use kube::api::{Api, PostParams};
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use crate::measure::Recorder;

/// Label on the benchmark's nodes; its pods select it.
pub const FLEET_LABEL: &str = "bench.phalanx.dev/fleet";
/// The label scheduler-plugins' Coscheduling (and phalanx) read.
const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// How a scheduler wants to be told that pods form a gang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GangApi {
    /// `scheduling.x-k8s.io/v1alpha1` PodGroup named by a pod label
    /// (scheduler-plugins' Coscheduling, phalanx).
    SchedulerPlugins,
    /// `scheduling.k8s.io/v1beta1` PodGroup named by `spec.schedulingGroup`
    /// (kube-scheduler's gang scheduling, GenericWorkload in 1.37).
    Upstream,
}

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub gang_size: usize,
    pub gangs: usize,
    pub gpus: u32,
}

impl Workload {
    /// As many whole gangs as fit in `pods`.
    pub fn new(gang_size: usize, pods: usize, gpus: u32) -> Self {
        Self { gang_size, gangs: pods / gang_size, gpus }
    }

    pub fn pods(&self) -> usize {
        self.gang_size * self.gangs
    }

    pub fn name(&self) -> String {
        if self.gang_size == 1 { "single pods".into() } else { format!("gangs of {}", self.gang_size) }
    }

    pub fn pod_name(gang: usize, member: usize) -> String {
        format!("g{gang}-{member}")
    }
}

/// Creates the workload's pods at `rate` pods/s (a gang's object just before
/// its first member), each create in its own task so that a slow answer does
/// not slow the pace. Returns when every create has been answered.
pub async fn submit(
    client: Client,
    namespace: String,
    workload: Workload,
    scheduler: &'static str,
    gang_api: GangApi,
    rate: f64,
    recorder: Arc<Recorder>,
) {
    let namespace = namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut creates = Vec::with_capacity(workload.pods());
    for gang in 0..workload.gangs {
        let group = format!("g{gang}");
        if workload.gang_size > 1 {
            create_gang_object(&client, namespace, &group, workload.gang_size, gang_api).await;
        }
        for member in 0..workload.gang_size {
            tick.tick().await;
            let name = Workload::pod_name(gang, member);
            let gang_ref = (workload.gang_size > 1).then_some((group.as_str(), gang_api));
            let pod = pod(namespace, &name, scheduler, workload.gpus, gang_ref);
            let (pods, recorder) = (pods.clone(), recorder.clone());
            // Recorded when sent: under load the bind can be seen before
            // the create's answer arrives.
            recorder.created(&name, Instant::now());
            creates.push(tokio::spawn(async move {
                if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                    eprintln!("creating pod {name}: {e}");
                }
            }));
        }
    }
    for c in creates {
        let _ = c.await;
    }
}

async fn create_gang_object(client: &Client, namespace: &str, name: &str, size: usize, api: GangApi) {
    let result = match api {
        GangApi::SchedulerPlugins => {
            let group: PodGroup = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"minMember": size}
            }))
            .expect("PodGroup");
            Api::<PodGroup>::namespaced(client.clone(), namespace).create(&PostParams::default(), &group).await.err()
        }
        GangApi::Upstream => {
            let group: UpstreamPodGroup = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"schedulingPolicy": {"gang": {"minCount": size}}}
            }))
            .expect("PodGroup");
            Api::<UpstreamPodGroup>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), &group)
                .await
                .err()
        }
    };
    if let Some(e) = result {
        panic!("creating PodGroup {namespace}/{name}: {e}");
    }
}

/// One benchmark pod: `gpus` GPUs, a CPU and a GiB, on the benchmark's nodes.
pub fn pod(namespace: &str, name: &str, scheduler: &str, gpus: u32, gang: Option<(&str, GangApi)>) -> Pod {
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulerName": scheduler,
            "nodeSelector": {FLEET_LABEL: "throughput"},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "train", "image": "pytorch/pytorch", "resources": {
                "limits": {"nvidia.com/gpu": gpus.to_string()},
                "requests": {"cpu": "1", "memory": "1Gi"}
            }}]
        }
    }))
    .expect("pod");
    match gang {
        Some((group, GangApi::SchedulerPlugins)) => {
            pod.metadata.labels = Some([(POD_GROUP_LABEL.to_string(), group.to_string())].into());
        }
        Some((group, GangApi::Upstream)) => {
            pod.spec.as_mut().expect("spec").scheduling_group =
                Some(serde_json::from_value(json!({"podGroupName": group})).expect("schedulingGroup"));
        }
        None => {}
    }
    pod
}
