//! Watches nodes, pods, GPU topologies, gang objects (PodGroups,
//! PyTorchJobs, JobSets, LeaderWorkerSets), quotas (ElasticQuotas, ResourceQuotas),
//! PodDisruptionBudgets, Namespaces (their labels), PersistentVolumeClaims, PersistentVolumes,
//! StorageClasses, pods of gangs that succeeded, and, for
//! PodGroups' status, every pod naming a PodGroup (finished ones too), and turns each
//! change into a `ClusterEvent` for
//! the scheduling loop. Objects are translated here and dropped: no cache of
//! full objects is kept. After every (re-)list, a `*Listed` event carries
//! the complete set of names, so anything missed while disconnected (a 410
//! Gone, a restart of the API server) is removed from the snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController,
    ResourceQuota, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceSlice};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::Api;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::leader_election::Leadership;
use super::metrics::{Metrics, WatchLabels};
use phalanx_core::dra::claim::ClaimKey;
use phalanx_core::gang::{GangId, GangKind, GangObject};
use phalanx_core::gang_status::GroupStatusInput;
use phalanx_core::quota::QuotaKind;
pub use phalanx_core::scheduler::ClusterEvent;
use phalanx_core::scheduler::{DeviceKind, DeviceObject, DeviceObjectKey, ObjectRef, Watch};
use phalanx_core::spread_defaults::{WorkloadKey, WorkloadKind, WorkloadSelector};
use phalanx_core::volume::{StorageCapacityKey, VolumeClaimKey, VolumeKind, VolumeObject, VolumeObjectKey};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use phalanx_kube::api::gpu_topology::GPUTopology;
use phalanx_kube::api::jobset::JobSet;
use phalanx_kube::api::leader_worker_set::LeaderWorkerSet;
use phalanx_kube::api::pod_group::PodGroup;
use phalanx_kube::api::pytorch_job::PyTorchJob;
use phalanx_kube::api::upstream_pod_group::{PodGroupV1alpha2, PodGroupV1beta1, UpstreamVersion};
use phalanx_kube::dra_objects::{self, DRA_API_VERSION};
use phalanx_kube::gang_objects;
use phalanx_kube::pod_group_status::{group_record, member_record};
use phalanx_kube::quota_objects::{self, Quota};
use phalanx_kube::translate::{
    KUBEFLOW_JOB_LABEL, POD_GROUP_LABEL, TranslateError, is_gated, node_spec, pod_info, succeeded_member,
    topology_report,
};
use phalanx_kube::volume_objects;
use phalanx_kube::workload_objects;

/// The optional APIs the API server serves, found by discovery at start:
/// what is watched, and so what the loop waits for before scheduling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub gang_kinds: HashSet<GangKind>,
    /// The version of `scheduling.k8s.io` PodGroups served, newest first.
    pub upstream_pod_groups: Option<UpstreamVersion>,
    /// `scheduling.x-k8s.io/v1alpha1` ElasticQuotas.
    pub elastic_quotas: bool,
    /// `resource.k8s.io/v1`: pods' ResourceClaims are allocated by phalanx.
    pub dynamic_resources: bool,
}

impl Served {
    pub async fn discover(client: &Client) -> Self {
        let mut served = Self::default();
        for version in UpstreamVersion::ALL {
            if serves(client, version.api_version(), "podgroups", "not this version of upstream PodGroups").await {
                served.upstream_pod_groups = Some(version);
                served.gang_kinds.insert(GangKind::UpstreamPodGroup);
                break;
            }
        }
        for (kind, plural) in [
            (GangKind::PodGroup, "podgroups"),
            (GangKind::PyTorchJob, "pytorchjobs"),
            (GangKind::JobSet, "jobsets"),
            (GangKind::LeaderWorkerSet, "leaderworkersets"),
        ] {
            if serves(client, kind.api_version(), plural, "its gangs are not recognised").await {
                served.gang_kinds.insert(kind);
            }
        }
        let version = ElasticQuota::api_version(&());
        served.elastic_quotas = serves(client, &version, "elasticquotas", "no ElasticQuota applies").await;
        served.dynamic_resources =
            serves(client, DRA_API_VERSION, "resourceclaims", "pods' ResourceClaims cannot be allocated").await;
        served
    }
}

/// What discovery learned of one resource.
#[derive(Debug, PartialEq, Eq)]
enum Discovered {
    Served,
    NotServed,
    /// The API server did not answer (connection refused, a timeout).
    NoAnswer,
}

fn discovered(answer: &Result<APIResourceList, kube::Error>, plural: &str) -> Discovered {
    match answer {
        Ok(list) if list.resources.iter().any(|r| r.name == plural) => Discovered::Served,
        // An answer without it, or a refusal (404: no such group or version).
        Ok(_) | Err(kube::Error::Api(_)) => Discovered::NotServed,
        Err(_) => Discovered::NoAnswer,
    }
}

/// Whether the API server serves `plural` in `api_version`; says so if not.
/// Asked again until the API server answers: a replica started while it is
/// away must not take "no answer" for "not served" and go on for good
/// without gangs or quotas (found by the chaos soak: a leader restarted
/// during an API server restart placed nothing for minutes).
async fn serves(client: &Client, api_version: &str, plural: &str, consequence: &str) -> bool {
    let mut backoff = watch_backoff();
    loop {
        let answer = client.list_api_group_resources(api_version).await;
        match discovered(&answer, plural) {
            Discovered::Served => return true,
            Discovered::NotServed => {
                tracing::info!(api = api_version, resource = plural, "not served; {consequence}");
                return false;
            }
            Discovered::NoAnswer => {
                if let Err(error) = &answer {
                    warn!(api = api_version, %error, "discovery got no answer; asking again");
                }
                tokio::time::sleep(backoff.next().unwrap_or(WATCH_BACKOFF_MAX)).await;
            }
        }
    }
}

/// Pods are watched unless finished: finished pods hold no resources, and
/// the API server turns a pod's move to Succeeded/Failed into a delete event.
const POD_FIELDS: &str = "status.phase!=Succeeded,status.phase!=Failed";
const SUCCEEDED_FIELDS: &str = "status.phase=Succeeded";

/// Starts every watch; gang objects and ElasticQuotas only where the API
/// server serves them. Pods are listed again at the start of every term of
/// `leadership`.
pub fn spawn(
    client: Client,
    scheduler_names: Arc<HashSet<String>>,
    served: &Served,
    metrics: Metrics,
    leadership: Leadership,
    tx: mpsc::Sender<ClusterEvent>,
) {
    tokio::spawn(watch_nodes(Api::all(client.clone()), metrics.clone(), tx.clone()));
    tokio::spawn(watch_topologies(Api::all(client.clone()), metrics.clone(), tx.clone()));
    for kind in &served.gang_kinds {
        let (client, metrics, tx) = (client.clone(), metrics.clone(), tx.clone());
        match kind {
            GangKind::PodGroup => {
                tokio::spawn(watch_group_statuses(Api::all(client.clone()), metrics.clone(), tx.clone()));
                tokio::spawn(watch_group_members(Api::all(client.clone()), metrics.clone(), tx.clone()));
                tokio::spawn(watch_gangs(Api::<PodGroup>::all(client), metrics, *kind, tx, gang_objects::pod_group))
            }
            GangKind::PyTorchJob => {
                tokio::spawn(watch_gangs(Api::<PyTorchJob>::all(client), metrics, *kind, tx, gang_objects::pytorch_job))
            }
            GangKind::UpstreamPodGroup => match served.upstream_pod_groups {
                Some(UpstreamVersion::V1alpha2) => tokio::spawn(watch_gangs(
                    Api::<PodGroupV1alpha2>::all(client),
                    metrics,
                    *kind,
                    tx,
                    gang_objects::upstream_pod_group,
                )),
                _ => tokio::spawn(watch_gangs(
                    Api::<PodGroupV1beta1>::all(client),
                    metrics,
                    *kind,
                    tx,
                    gang_objects::upstream_pod_group,
                )),
            },
            GangKind::JobSet => {
                tokio::spawn(watch_gangs(Api::<JobSet>::all(client), metrics, *kind, tx, gang_objects::jobset))
            }
            GangKind::LeaderWorkerSet => tokio::spawn(watch_gangs(
                Api::<LeaderWorkerSet>::all(client),
                metrics,
                *kind,
                tx,
                gang_objects::leader_worker_set,
            )),
        };
    }
    if served.elastic_quotas {
        let translate = |q: &ElasticQuota| quota_objects::elastic_quota(q).map(Quota::Elastic);
        tokio::spawn(watch_quotas(
            Api::all(client.clone()),
            metrics.clone(),
            QuotaKind::Elastic,
            tx.clone(),
            translate,
        ));
    }
    let translate = |q: &ResourceQuota| quota_objects::resource_quota(q).map(Quota::Hard);
    tokio::spawn(watch_quotas(Api::all(client.clone()), metrics.clone(), QuotaKind::Hard, tx.clone(), translate));
    tokio::spawn(watch_budgets(Api::all(client.clone()), metrics.clone(), tx.clone()));
    if served.dynamic_resources {
        let class = |c: &DeviceClass| Ok(Some(DeviceObject::Class(dra_objects::device_class(c))));
        tokio::spawn(watch_device_objects(
            Api::all(client.clone()),
            metrics.clone(),
            tx.clone(),
            DeviceKind::Class,
            class,
        ));
        let slice = |s: &ResourceSlice| dra_objects::device_slice(s).map(|s| s.map(DeviceObject::Slice));
        tokio::spawn(watch_device_objects(
            Api::all(client.clone()),
            metrics.clone(),
            tx.clone(),
            DeviceKind::Slice,
            slice,
        ));
        let claim = |c: &ResourceClaim| dra_objects::device_claim(c).map(|c| Some(DeviceObject::Claim(c)));
        tokio::spawn(watch_device_objects(
            Api::all(client.clone()),
            metrics.clone(),
            tx.clone(),
            DeviceKind::Claim,
            claim,
        ));
    }
    let claim = |c: &PersistentVolumeClaim| volume_objects::volume_claim(c).map(VolumeObject::Claim);
    tokio::spawn(watch_volume_objects(Api::all(client.clone()), metrics.clone(), tx.clone(), VolumeKind::Claim, claim));
    let volume = |v: &PersistentVolume| volume_objects::persistent_volume(v).map(VolumeObject::Volume);
    tokio::spawn(watch_volume_objects(
        Api::all(client.clone()),
        metrics.clone(),
        tx.clone(),
        VolumeKind::Volume,
        volume,
    ));
    let class = |c: &StorageClass| volume_objects::storage_class(c).map(VolumeObject::Class);
    tokio::spawn(watch_volume_objects(Api::all(client.clone()), metrics.clone(), tx.clone(), VolumeKind::Class, class));
    let csi_node = |n: &CSINode| volume_objects::csi_node(n).map(VolumeObject::CsiNode);
    tokio::spawn(watch_volume_objects(
        Api::all(client.clone()),
        metrics.clone(),
        tx.clone(),
        VolumeKind::CsiNode,
        csi_node,
    ));
    let attachment = |a: &VolumeAttachment| volume_objects::volume_attachment(a).map(VolumeObject::Attachment);
    tokio::spawn(watch_volume_objects(
        Api::all(client.clone()),
        metrics.clone(),
        tx.clone(),
        VolumeKind::Attachment,
        attachment,
    ));
    let driver = |d: &CSIDriver| Ok(VolumeObject::CsiDriver(volume_objects::csi_driver(d)));
    let kind = VolumeKind::CsiDriver;
    tokio::spawn(watch_volume_objects(Api::all(client.clone()), metrics.clone(), tx.clone(), kind, driver));
    let capacity = |c: &CSIStorageCapacity| volume_objects::storage_capacity(c).map(VolumeObject::Capacity);
    let kind = VolumeKind::Capacity;
    tokio::spawn(watch_volume_objects(Api::all(client.clone()), metrics.clone(), tx.clone(), kind, capacity));
    tokio::spawn(watch_namespaces(Api::all(client.clone()), metrics.clone(), tx.clone()));
    let service = |s: &Service| Ok(workload_objects::service(s));
    tokio::spawn(watch_workloads(
        Api::all(client.clone()),
        metrics.clone(),
        tx.clone(),
        WorkloadKind::Service,
        service,
    ));
    let replica_set = |s: &ReplicaSet| workload_objects::replica_set(s);
    let kind = WorkloadKind::ReplicaSet;
    tokio::spawn(watch_workloads(Api::all(client.clone()), metrics.clone(), tx.clone(), kind, replica_set));
    let stateful_set = |s: &StatefulSet| workload_objects::stateful_set(s);
    let kind = WorkloadKind::StatefulSet;
    tokio::spawn(watch_workloads(Api::all(client.clone()), metrics.clone(), tx.clone(), kind, stateful_set));
    let controller = |c: &ReplicationController| Ok(workload_objects::replication_controller(c));
    let kind = WorkloadKind::ReplicationController;
    tokio::spawn(watch_workloads(Api::all(client.clone()), metrics.clone(), tx.clone(), kind, controller));
    tokio::spawn(watch_succeeded_members(Api::all(client.clone()), metrics.clone(), tx.clone()));
    tokio::spawn(watch_pods(Api::all(client), metrics, scheduler_names, leadership, tx));
}

/// The event for an object phalanx cannot read, naming it and the field.
fn invalid<K: Resource<DynamicType = ()>>(obj: &K, error: &TranslateError) -> ClusterEvent {
    let r: ObjectReference = obj.object_ref(&());
    let regarding =
        ObjectRef { api_version: r.api_version, kind: r.kind, namespace: r.namespace, name: r.name, uid: r.uid };
    ClusterEvent::Invalid { regarding, error: error.to_string() }
}

/// What one applied object means for the consumer of a watch.
pub(super) enum Applied<E> {
    Ignored,
    /// A relevant object, with the key it is listed under.
    Event(String, E),
    Invalid(E),
    /// An object that cannot be read but whose last readable version stays
    /// in force: listed under its key, so a re-list does not drop it.
    InvalidKept(String, E),
}

/// What becomes of a watch's failures: each is counted, and a watch that
/// decisions depend on says it is away.
pub(super) struct Failures<E> {
    metrics: Metrics,
    lost: Option<E>,
}

impl Failures<ClusterEvent> {
    fn stop_decisions(metrics: &Metrics, watch: Watch) -> Self {
        Self { metrics: metrics.clone(), lost: Some(ClusterEvent::WatchLost(watch)) }
    }

    fn counted(metrics: &Metrics) -> Self {
        Self { metrics: metrics.clone(), lost: None }
    }
}

/// Runs one watch for ever, translating each event with the given functions
/// and sending the result. Every failure starts the watch again with a
/// fresh list after a backoff, and first sends `lost` (when given): a watch
/// resumed where it stopped would say nothing of a quiet resource, so its
/// consumer could not tell when it is current again; a list's end can.
pub(super) async fn pump<K, E: Clone>(
    api: Api<K>,
    config: watcher::Config,
    failures: Failures<E>,
    tx: mpsc::Sender<E>,
    on_apply: impl Fn(K) -> Applied<E>,
    on_delete: impl Fn(K) -> Option<E>,
    on_listed: impl Fn(HashSet<String>) -> Option<E>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let kind = K::kind(&());
    let mut backoff = watch_backoff();
    loop {
        let mut listed: HashSet<String> = HashSet::new();
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        let error = loop {
            let event = match stream.try_next().await {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => break e,
            };
            let out = match event {
                Event::Init => {
                    listed.clear();
                    continue;
                }
                Event::InitDone => match on_listed(std::mem::take(&mut listed)) {
                    Some(event) => event,
                    None => continue,
                },
                Event::Apply(obj) | Event::InitApply(obj) => match on_apply(obj) {
                    Applied::Ignored => continue,
                    Applied::Event(key, event) => {
                        listed.insert(key);
                        event
                    }
                    Applied::Invalid(event) => event,
                    Applied::InvalidKept(key, event) => {
                        listed.insert(key);
                        event
                    }
                },
                Event::Delete(obj) => match on_delete(obj) {
                    Some(event) => event,
                    None => continue,
                },
            };
            if tx.send(out).await.is_err() {
                return;
            }
        };
        let reason = if expired(&error) { "expired" } else { "error" };
        warn!(%kind, reason, %error, "watch failed; listing again");
        let labels = WatchLabels { resource: kind.to_string(), reason: reason.into() };
        failures.metrics.watch_restarts.get_or_create(&labels).inc();
        if let Some(lost) = &failures.lost
            && tx.send(lost.clone()).await.is_err()
        {
            return;
        }
        tokio::time::sleep(backoff.next().unwrap_or(WATCH_BACKOFF_MAX)).await;
    }
}

/// Longest wait between attempts to re-establish a watch, before jitter
/// (which adds up to as much again).
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(3);

/// client-go's reflector backoff (800 ms doubling, reset after 2 minutes
/// without failure) capped at `WATCH_BACKOFF_MAX` instead of 30 s: after an
/// API server restart every watch is back within seconds of it, instead of
/// one watch (say, PodGroups) lagging the others by up to half a minute,
/// while the queue decides on what the others show (found by the soak: a
/// gang whose PodGroup had not been seen yet waited while lower-priority pods
/// were placed).
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let retries = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(WATCH_BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(retries), Duration::from_secs(120))
}

/// A 410 Gone: the resource version the watch resumed from is no longer
/// kept (an API server restarted, etcd compacted), so the watcher re-lists.
fn expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

async fn watch_nodes(api: Api<Node>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |node: Node| match node_spec(&node) {
        Ok(spec) => Applied::Event(spec.name.clone(), ClusterEvent::NodeApplied(spec)),
        Err(error) => Applied::Invalid(invalid(&node, &error)),
    };
    let on_delete = |node: Node| Some(ClusterEvent::NodeDeleted(node.name_any()));
    let failures = Failures::stop_decisions(&metrics, Watch::Nodes);
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, |keys| {
        Some(ClusterEvent::NodesListed(keys))
    })
    .await;
}

/// A new leader must not decide on a view its watch may not have caught up
/// with (pods the previous leader bound a moment ago): each term restarts
/// the watch, whose list is a consistent read from the API server, and that
/// list's end (`PodsRelisted`) tells the loop it may decide. Events of the
/// old watch still queued are older than the list, so order holds.
async fn watch_pods(
    api: Api<Pod>,
    metrics: Metrics,
    scheduler_names: Arc<HashSet<String>>,
    mut leadership: Leadership,
    tx: mpsc::Sender<ClusterEvent>,
) {
    loop {
        let term = leadership.term();
        let on_listed = move |uids| match term {
            Some(term) if term > 0 => Some(ClusterEvent::PodsRelisted { uids, term }),
            _ => Some(ClusterEvent::PodsListed(uids)),
        };
        tokio::select! {
            _ = watch_pods_once(api.clone(), &metrics, &scheduler_names, tx.clone(), on_listed) => return,
            _ = leadership.next_term(term) => tracing::info!("a new term: listing pods afresh"),
        }
    }
}

async fn watch_pods_once(
    api: Api<Pod>,
    metrics: &Metrics,
    scheduler_names: &HashSet<String>,
    tx: mpsc::Sender<ClusterEvent>,
    on_listed: impl Fn(HashSet<String>) -> Option<ClusterEvent>,
) {
    let on_apply = |pod: Pod| {
        // Only pods that hold node resources, or that wait for one of our
        // profiles, matter; the rest are never translated.
        let spec = pod.spec.as_ref();
        let bound = spec.and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
        let ours = spec.and_then(|s| s.scheduler_name.as_ref()).is_some_and(|n| scheduler_names.contains(n));
        // Pending pods of other schedulers matter only as members of a gang
        // (to warn that the gang's members disagree).
        let labels = pod.metadata.labels.as_ref();
        let gang_member = labels.is_some_and(|l| l.contains_key(POD_GROUP_LABEL) || l.contains_key(KUBEFLOW_JOB_LABEL));
        if !bound && !ours && !gang_member {
            return Applied::Ignored;
        }
        match pod_info(&pod) {
            Ok(info) => Applied::Event(info.uid.clone(), ClusterEvent::PodApplied { gated: is_gated(&pod), pod: info }),
            Err(error) => Applied::Invalid(invalid(&pod, &error)),
        }
    };
    let on_delete = |pod: Pod| pod.metadata.uid.map(|uid| ClusterEvent::PodDeleted { uid });
    let config = watcher::Config::default().fields(POD_FIELDS);
    pump(api, config, Failures::stop_decisions(metrics, Watch::Pods), tx, on_apply, on_delete, on_listed).await;
}

/// PodGroups as their status tracker keeps them (resourceVersion and status).
async fn watch_group_statuses(api: Api<PodGroup>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |group: PodGroup| match group_record(&group) {
        Some(record) => Applied::Event(record.key(), status_event(GroupStatusInput::GroupApplied(record))),
        None => Applied::Ignored,
    };
    let on_delete = |group: PodGroup| {
        let key = format!("{}/{}", group.namespace()?, group.name_any());
        Some(status_event(GroupStatusInput::GroupDeleted(key)))
    };
    let on_listed = |keys| Some(status_event(GroupStatusInput::GroupsListed(keys)));
    pump(api, watcher::Config::default(), Failures::counted(&metrics), tx, on_apply, on_delete, on_listed).await;
}

/// Every pod that names a PodGroup, whatever its phase: finished members
/// count in the group's status.
async fn watch_group_members(api: Api<Pod>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |pod: Pod| match member_record(&pod) {
        Some(record) => Applied::Event(record.uid.clone(), status_event(GroupStatusInput::MemberApplied(record))),
        None => Applied::Ignored,
    };
    let on_delete = |pod: Pod| Some(status_event(GroupStatusInput::MemberDeleted(pod.metadata.uid?)));
    let on_listed = |uids| Some(status_event(GroupStatusInput::MembersListed(uids)));
    let config = watcher::Config::default().labels(POD_GROUP_LABEL);
    pump(api, config, Failures::counted(&metrics), tx, on_apply, on_delete, on_listed).await;
}

/// Pods of gangs that succeeded: each counts toward its gang's minMember.
/// The pod watch never lists finished pods, so a leader that starts after
/// some members finished learns of them only here.
async fn watch_succeeded_members(api: Api<Pod>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |pod: Pod| match succeeded_member(&pod) {
        Some((gang, uid)) => Applied::Event(uid.clone(), ClusterEvent::MemberSucceeded { gang, uid }),
        None => Applied::Ignored,
    };
    // A member that did its part keeps counting once its pod is deleted.
    let config = watcher::Config::default().fields(SUCCEEDED_FIELDS);
    pump(api, config, Failures::counted(&metrics), tx, on_apply, |_| None, |_| None).await;
}

fn status_event(input: GroupStatusInput) -> ClusterEvent {
    ClusterEvent::GroupStatus(input)
}

/// A DRA kind's objects, keyed as `DeviceObjectKey` (claims by `namespace/name`).
async fn watch_device_objects<K>(
    api: Api<K>,
    metrics: Metrics,
    tx: mpsc::Sender<ClusterEvent>,
    kind: DeviceKind,
    translate: impl Fn(&K) -> Result<Option<DeviceObject>, TranslateError>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let key_of = move |obj: &K| match (kind, obj.namespace()) {
        (DeviceKind::Claim, Some(namespace)) => format!("{namespace}/{}", obj.name_any()),
        _ => obj.name_any(),
    };
    let key = move |text: String| match kind {
        DeviceKind::Class => DeviceObjectKey::Class(text),
        DeviceKind::Slice => DeviceObjectKey::Slice(text),
        DeviceKind::Claim => {
            let (namespace, name) = text.split_once('/').unwrap_or_default();
            DeviceObjectKey::Claim(ClaimKey { namespace: namespace.into(), name: name.into() })
        }
    };
    let on_apply = |obj: K| match translate(&obj) {
        Ok(Some(object)) => Applied::Event(key_of(&obj), ClusterEvent::DeviceObjectApplied(object)),
        Ok(None) => Applied::Ignored,
        Err(error) => Applied::Invalid(invalid(&obj, &error)),
    };
    let on_delete = |obj: K| Some(ClusterEvent::DeviceObjectDeleted(key(key_of(&obj))));
    let on_listed = |keys: HashSet<String>| {
        Some(ClusterEvent::DeviceObjectsListed { kind, keys: keys.into_iter().map(key).collect() })
    };
    let failures = Failures::stop_decisions(&metrics, Watch::Devices(kind));
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, on_listed).await;
}

/// A volume kind's objects, keyed as `VolumeObjectKey` (claims by `namespace/name`).
/// An object that cannot be read is reported and left out: pods using it wait.
async fn watch_volume_objects<K>(
    api: Api<K>,
    metrics: Metrics,
    tx: mpsc::Sender<ClusterEvent>,
    kind: VolumeKind,
    translate: impl Fn(&K) -> Result<VolumeObject, TranslateError>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let key_of = move |obj: &K| match obj.namespace() {
        Some(namespace) => format!("{namespace}/{}", obj.name_any()),
        None => obj.name_any(),
    };
    let key = move |text: String| match kind {
        VolumeKind::Claim => {
            let (namespace, name) = text.split_once('/').unwrap_or_default();
            VolumeObjectKey::Claim(VolumeClaimKey { namespace: namespace.into(), name: name.into() })
        }
        VolumeKind::Volume => VolumeObjectKey::Volume(text),
        VolumeKind::Class => VolumeObjectKey::Class(text),
        VolumeKind::CsiNode => VolumeObjectKey::CsiNode(text),
        VolumeKind::Attachment => VolumeObjectKey::Attachment(text),
        VolumeKind::CsiDriver => VolumeObjectKey::CsiDriver(text),
        VolumeKind::Capacity => {
            let (namespace, name) = text.split_once('/').unwrap_or_default();
            VolumeObjectKey::Capacity(StorageCapacityKey { namespace: namespace.into(), name: name.into() })
        }
    };
    let on_apply = |obj: K| match translate(&obj) {
        Ok(object) => Applied::Event(key_of(&obj), ClusterEvent::VolumeObjectApplied(object)),
        Err(error) => Applied::Invalid(invalid(&obj, &error)),
    };
    let on_delete = |obj: K| Some(ClusterEvent::VolumeObjectDeleted(key(key_of(&obj))));
    let on_listed = |keys: HashSet<String>| {
        Some(ClusterEvent::VolumeObjectsListed { kind, keys: keys.into_iter().map(key).collect() })
    };
    let failures = Failures::stop_decisions(&metrics, Watch::Volumes(kind));
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, on_listed).await;
}

async fn watch_topologies(api: Api<GPUTopology>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |report: GPUTopology| match topology_report(&report) {
        Ok(r) => Applied::Event(r.node.clone(), ClusterEvent::TopologyApplied(r)),
        Err(error) => Applied::Invalid(invalid(&report, &error)),
    };
    let on_delete = |report: GPUTopology| Some(ClusterEvent::TopologyDeleted(report.name_any()));
    let failures = Failures::counted(&metrics);
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, |keys| {
        Some(ClusterEvent::TopologiesListed(keys))
    })
    .await;
}

async fn watch_gangs<K>(
    api: Api<K>,
    metrics: Metrics,
    kind: GangKind,
    tx: mpsc::Sender<ClusterEvent>,
    translate: impl Fn(&K) -> (GangId, GangObject),
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let on_apply = |object: K| {
        let (id, object) = translate(&object);
        Applied::Event(format!("{}/{}", id.namespace, id.name), ClusterEvent::GangApplied { id, object })
    };
    let on_delete = |object: K| {
        let (namespace, name) = namespaced_key(&object);
        Some(ClusterEvent::GangDeleted(GangId::new(kind, &namespace, &name)))
    };
    let on_listed = move |keys: HashSet<String>| {
        let ids = split_keys(keys).iter().map(|(ns, name)| GangId::new(kind, ns, name)).collect();
        Some(ClusterEvent::GangsListed { kind, ids })
    };
    let failures = Failures::stop_decisions(&metrics, Watch::Gangs(kind));
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, on_listed).await;
}

/// Namespace and name of a namespaced object.
fn namespaced_key(object: &impl Resource) -> (String, String) {
    (object.meta().namespace.clone().unwrap_or_default(), object.meta().name.clone().unwrap_or_default())
}

/// The "namespace/name" keys a watch lists namespaced objects under.
fn list_key(object: &impl Resource) -> String {
    let (namespace, name) = namespaced_key(object);
    format!("{namespace}/{name}")
}

fn split_keys(keys: HashSet<String>) -> Vec<(String, String)> {
    keys.iter().filter_map(|k| k.split_once('/')).map(|(ns, name)| (ns.to_string(), name.to_string())).collect()
}

/// ElasticQuotas or ResourceQuotas. An unreadable one is reported, and the
/// version read before it stays in force.
async fn watch_quotas<K>(
    api: Api<K>,
    metrics: Metrics,
    kind: QuotaKind,
    tx: mpsc::Sender<ClusterEvent>,
    translate: impl Fn(&K) -> Result<Quota, TranslateError>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let on_apply = |object: K| match translate(&object) {
        Ok(quota) => Applied::Event(list_key(&object), ClusterEvent::QuotaApplied(quota)),
        Err(error) => Applied::InvalidKept(list_key(&object), invalid(&object, &error)),
    };
    let on_delete = move |object: K| {
        let (namespace, name) = namespaced_key(&object);
        Some(ClusterEvent::QuotaDeleted { kind, namespace, name })
    };
    let on_listed = move |keys: HashSet<String>| Some(ClusterEvent::QuotasListed { kind, keys: split_keys(keys) });
    let failures = Failures::stop_decisions(&metrics, Watch::Quotas(kind));
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, on_listed).await;
}

async fn watch_budgets(api: Api<PodDisruptionBudget>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |object: PodDisruptionBudget| {
        let key = list_key(&object);
        match quota_objects::disruption_budget(&object) {
            Ok(budget) => {
                let (namespace, name) = namespaced_key(&object);
                Applied::Event(key, ClusterEvent::BudgetApplied { namespace, name, budget })
            }
            Err(error) => Applied::InvalidKept(key, invalid(&object, &error)),
        }
    };
    let on_delete = |object: PodDisruptionBudget| {
        let (namespace, name) = namespaced_key(&object);
        Some(ClusterEvent::BudgetDeleted { namespace, name })
    };
    let on_listed = |keys: HashSet<String>| Some(ClusterEvent::BudgetsListed(split_keys(keys)));
    let failures = Failures::stop_decisions(&metrics, Watch::Budgets);
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, on_listed).await;
}

/// Namespace labels, which inter-pod affinity terms select namespaces by.
/// One workload kind's selectors, keyed `namespace/name`. They only steer
/// scores, so a failing watch holds no decision back.
async fn watch_workloads<K>(
    api: Api<K>,
    metrics: Metrics,
    tx: mpsc::Sender<ClusterEvent>,
    kind: WorkloadKind,
    translate: impl Fn(&K) -> Result<WorkloadSelector, TranslateError>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let key = move |text: String| {
        let (namespace, name) = text.split_once('/').unwrap_or_default();
        WorkloadKey { kind, namespace: namespace.into(), name: name.into() }
    };
    let key_of = |obj: &K| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let on_apply = |obj: K| match translate(&obj) {
        Ok(selector) => Applied::Event(key_of(&obj), ClusterEvent::WorkloadSelectorApplied(selector)),
        Err(error) => Applied::Invalid(invalid(&obj, &error)),
    };
    let on_delete = |obj: K| Some(ClusterEvent::WorkloadSelectorDeleted(key(key_of(&obj))));
    let on_listed = |keys: HashSet<String>| {
        Some(ClusterEvent::WorkloadSelectorsListed { kind, keys: keys.into_iter().map(key).collect() })
    };
    pump(api, watcher::Config::default(), Failures::counted(&metrics), tx, on_apply, on_delete, on_listed).await;
}

async fn watch_namespaces(api: Api<Namespace>, metrics: Metrics, tx: mpsc::Sender<ClusterEvent>) {
    let on_apply = |object: Namespace| {
        let name = object.name_any();
        let labels = object.metadata.labels.unwrap_or_default();
        Applied::Event(name.clone(), ClusterEvent::NamespaceApplied { name, labels })
    };
    let on_delete = |object: Namespace| Some(ClusterEvent::NamespaceDeleted(object.name_any()));
    let failures = Failures::counted(&metrics);
    pump(api, watcher::Config::default(), failures, tx, on_apply, on_delete, |keys| {
        Some(ClusterEvent::NamespacesListed(keys))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn status(code: u16) -> Box<Status> {
        Box::new(Status { code, ..Default::default() })
    }

    #[test]
    fn a_watch_is_retried_within_seconds_however_long_the_api_server_was_away() {
        let delays: Vec<Duration> = watch_backoff().take(30).collect();
        assert!(delays[0] < Duration::from_secs(2), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * WATCH_BACKOFF_MAX), "{delays:?}");
        assert!(delays[10..].iter().all(|d| *d >= WATCH_BACKOFF_MAX), "it does back off: {delays:?}");
    }

    #[test]
    fn discovery_takes_only_an_answer_for_not_served() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
        let resource = |name: &str| APIResource { name: name.into(), ..Default::default() };
        let list = APIResourceList { resources: vec![resource("podgroups")], ..Default::default() };
        assert_eq!(discovered(&Ok(list.clone()), "podgroups"), Discovered::Served);
        assert_eq!(discovered(&Ok(list), "jobsets"), Discovered::NotServed);
        assert_eq!(discovered(&Err(kube::Error::Api(status(404))), "jobsets"), Discovered::NotServed);
        let refused = kube::Error::Service("client error (Connect)".into());
        assert_eq!(discovered(&Err(refused), "podgroups"), Discovered::NoAnswer);
    }

    #[test]
    fn only_a_410_gone_counts_as_an_expired_watch() {
        assert!(expired(&watcher::Error::WatchError(status(410))));
        assert!(expired(&watcher::Error::WatchStartFailed(kube::Error::Api(status(410)))));
        assert!(!expired(&watcher::Error::WatchError(status(500))));
        assert!(!expired(&watcher::Error::NoResourceVersion));
    }
}
