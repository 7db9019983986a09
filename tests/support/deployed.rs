//! The phalanx deployed in a cluster (`kubectl apply -k kind/deploy`): its
//! replicas, which one leads, and its HTTP endpoints reached through the API
//! server's pods/proxy subresource (no port-forward, no node ports).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use phalanx_kube::api::gpu_topology::GPUTopology;

pub const NAMESPACE: &str = "phalanx-system";
/// The deployed profile's scheduler name (deploy/scheduler-config.yaml).
pub const SCHEDULER_NAME: &str = "phalanx";
/// Its Lease (leaderElection.resourceName in the same file).
pub const LEASE: &str = "phalanx";
const SCHEDULER_PODS: &str = "app.kubernetes.io/name=phalanx,app.kubernetes.io/component=scheduler";
const HTTP_PORT: u16 = 10351;

/// The scheduler pods that are Ready (their informers synced) and not being deleted.
pub async fn scheduler_pods(client: &Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let list = pods.list(&ListParams::default().labels(SCHEDULER_PODS)).await.expect("list scheduler pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect()
}

/// The Lease holder (a scheduler pod's name), if any.
pub async fn leader(client: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), NAMESPACE).get_opt(LEASE).await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// GET `path` on a scheduler pod's HTTP port through the API server:
/// status code and body.
pub async fn pod_http(client: &Client, pod: &str, path: &str) -> Result<String, kube::Error> {
    let uri = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}:{HTTP_PORT}/proxy{path}");
    client.request_text(http::Request::get(uri).body(Vec::new()).expect("a request")).await
}

/// GPU indices the kubelet gave each pod on `node`, as the agent reported
/// them (device ids mapped through the GPUs' UUIDs), and the device ids.
pub async fn kubelet_gpus(client: &Client, node: &str) -> BTreeMap<(String, String), (Vec<u32>, Vec<String>)> {
    let Some(report) = Api::<GPUTopology>::all(client.clone()).get_opt(node).await.expect("get gputopology") else {
        return BTreeMap::new();
    };
    let gpus = &report.spec.topology.gpus;
    let index_of = |id: &str| gpus.iter().find(|g| g.uuid.as_deref() == Some(id)).map(|g| g.index);
    report
        .status
        .into_iter()
        .flat_map(|s| s.pod_devices)
        .map(|pd| {
            let indices =
                pd.device_ids.iter().map(|id| index_of(id).unwrap_or_else(|| panic!("{id} on {node}"))).collect();
            ((pd.namespace, pd.name), (indices, pd.device_ids))
        })
        .collect()
}
