//! Turns Kubernetes objects into the core's compact types. Pure functions:
//! the watch tasks call them so that full objects are dropped at once and
//! never cached. Bad values come back as errors naming the object and field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, NodeSelectorRequirement, NodeSelectorTerm as K8sTerm, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::api::gpu_topology::GPUTopology;
use crate::pod_rules::{PodContext, host_ports, pod_affinity, spread_constraints};
use phalanx_core::gang::{GangId, GangKind};
use phalanx_core::node::{GpuSharing, NodeSpec, SharingStrategy, Taint, TaintEffect};
use phalanx_core::pod::{
    NodeSelectorTerm, PodInfo, PodKey, PodPhase, PreferredTerm, SelectorOperator, SelectorRequirement, Toleration,
    TolerationOperator,
};
use phalanx_core::quantity::{QuantityError, parse_milli, parse_units};
use phalanx_core::resources::{CPU, GPU, PODS, Resources};
pub use phalanx_core::scheduler::TopologyReport;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{object}: {field}: {message}")]
pub struct TranslateError {
    /// "pod team-a/worker-0" or "node gpu-3".
    pub object: String,
    pub field: String,
    pub message: String,
}

pub(crate) fn error(object: &str, field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError { object: object.to_string(), field: field.into(), message: message.into() }
}

/// Adds a Kubernetes resource list (cpu in millicores, the rest in units).
fn add_quantities(
    into: &mut Resources,
    list: Option<&BTreeMap<String, Quantity>>,
    object: &str,
    field: &str,
) -> Result<(), TranslateError> {
    for (name, q) in list.into_iter().flatten() {
        let amount = amount(name, q).map_err(|e| error(object, format!("{field}[{name}]"), e.to_string()))?;
        into.add(&[(name.as_str(), amount)].into_iter().collect());
    }
    Ok(())
}

/// An amount of `resource` as the core counts it: cpu in millicores, the rest in units.
pub(crate) fn amount(resource: &str, q: &Quantity) -> Result<i64, QuantityError> {
    if resource == CPU { parse_milli(&q.0) } else { parse_units(&q.0) }
}

fn container_requests(c: &Container, object: &str, field: &str) -> Result<Resources, TranslateError> {
    let mut r = Resources::new();
    let resources = c.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    add_quantities(&mut r, requests, object, &format!("{field}.resources.requests"))?;
    // A limit without a request defaults the request (the API server does the
    // same for extended resources, which must have request == limit).
    if let Some(limits) = resources.and_then(|r| r.limits.as_ref()) {
        for (name, q) in limits {
            if requests.is_none_or(|req| !req.contains_key(name)) {
                add_quantities(
                    &mut r,
                    Some(&[(name.clone(), q.clone())].into_iter().collect()),
                    object,
                    &format!("{field}.resources.limits"),
                )?;
            }
        }
    }
    Ok(r)
}

/// Effective requests, as kube-scheduler computes them: the larger of the
/// app containers (plus sidecars) and the peak during init, plus overhead,
/// plus one `pods` slot.
pub fn pod_requests(pod: &Pod, object: &str) -> Result<Resources, TranslateError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err(error(object, "spec", "missing"));
    };
    let mut total = Resources::new();
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        add_quantities(&mut total, Some(pod_level), object, "spec.resources.requests")?;
    } else {
        for (i, c) in spec.containers.iter().enumerate() {
            total.add(&container_requests(c, object, &format!("spec.containers[{i}]"))?);
        }
        let mut sidecars = Resources::new();
        let mut init_peak = Resources::new();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            let r = container_requests(c, object, &format!("spec.initContainers[{i}]"))?;
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(&r);
                init_peak.raise_to(&sidecars);
            } else {
                let mut during = r;
                during.add(&sidecars);
                init_peak.raise_to(&during);
            }
        }
        total.add(&sidecars);
        total.raise_to(&init_peak);
    }
    add_quantities(&mut total, spec.overhead.as_ref(), object, "spec.overhead")?;
    total.add(&Resources::new().with(PODS, 1));
    Ok(total)
}

fn requirement(r: &NodeSelectorRequirement, object: &str, field: &str) -> Result<SelectorRequirement, TranslateError> {
    selector_requirement(&r.key, &r.operator, r.values.as_deref(), true, object, field)
}

/// One requirement of a node selector (`numeric`: Gt and Lt allowed) or of a
/// label selector (In, NotIn, Exists, DoesNotExist only).
pub(crate) fn selector_requirement(
    key: &str,
    operator: &str,
    values: Option<&[String]>,
    numeric: bool,
    object: &str,
    field: &str,
) -> Result<SelectorRequirement, TranslateError> {
    let values = || values.unwrap_or_default().to_vec();
    let bound = || match values().as_slice() {
        [one] => one
            .parse::<i64>()
            .map_err(|_| error(object, format!("{field}.values"), format!("{one:?} is not an integer"))),
        _ => Err(error(object, format!("{field}.values"), "Gt and Lt take exactly one value")),
    };
    let operator = match operator {
        "In" => SelectorOperator::In(values()),
        "NotIn" => SelectorOperator::NotIn(values()),
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        "Gt" if numeric => SelectorOperator::Gt(bound()?),
        "Lt" if numeric => SelectorOperator::Lt(bound()?),
        other => {
            return Err(error(object, format!("{field}.operator"), format!("unknown operator {other:?}")));
        }
    };
    Ok(SelectorRequirement { key: key.to_string(), operator })
}

pub(crate) fn term(t: &K8sTerm, object: &str, field: &str) -> Result<NodeSelectorTerm, TranslateError> {
    let match_labels = t
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| requirement(r, object, &format!("{field}.matchExpressions[{i}]")))
        .collect::<Result<_, _>>()?;
    let match_node_name = t
        .match_fields
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}.matchFields[{i}]");
            if r.key != "metadata.name" {
                return Err(error(
                    object,
                    format!("{f}.key"),
                    format!("{:?} is not supported; only metadata.name", r.key),
                ));
            }
            requirement(r, object, &f)
        })
        .collect::<Result<_, _>>()?;
    Ok(NodeSelectorTerm { match_labels, match_node_name })
}

fn taint_effect(effect: &str) -> Option<TaintEffect> {
    match effect {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

pub fn pod_object_name(pod: &Pod) -> String {
    format!(
        "pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn pod_info(pod: &Pod) -> Result<PodInfo, TranslateError> {
    let object = pod_object_name(pod);
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref().ok_or_else(|| error(&object, "spec", "missing"))?;
    let uid = meta.uid.clone().ok_or_else(|| error(&object, "metadata.uid", "missing"))?;
    let affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
    let required_terms = affinity
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|sel| {
            sel.node_selector_terms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    term(
                        t,
                        &object,
                        &format!("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let preferred_terms = affinity
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let f = format!("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            Ok(PreferredTerm { weight: p.weight, term: term(&p.preference, &object, &format!("{f}.preference"))? })
        })
        .collect::<Result<Vec<_>, TranslateError>>()?;
    let tolerations = spec
        .tolerations
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("spec.tolerations[{i}]");
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(e) => Some(
                    taint_effect(e)
                        .ok_or_else(|| error(&object, format!("{field}.effect"), format!("unknown effect {e:?}")))?,
                ),
            };
            let key = t.key.clone().filter(|k| !k.is_empty());
            let operator = match t.operator.as_deref() {
                None | Some("Equal") => TolerationOperator::Equal(t.value.clone().unwrap_or_default()),
                Some("Exists") => TolerationOperator::Exists,
                Some(other) => {
                    return Err(error(&object, format!("{field}.operator"), format!("unknown operator {other:?}")));
                }
            };
            Ok(Toleration { key, operator, effect })
        })
        .collect::<Result<Vec<_>, TranslateError>>()?;
    let labels = meta.labels.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let context = PodContext { object: &object, namespace: &namespace, labels: &labels };
    let host_ports = host_ports(spec, &object)?;
    let pod_affinity = pod_affinity(spec.affinity.as_ref(), &context)?;
    let spread = spread_constraints(spec.topology_spread_constraints.as_ref(), &context)?;
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Running") => PodPhase::Running,
        _ => PodPhase::Pending,
    };
    Ok(PodInfo {
        uid,
        key: PodKey { namespace, name: meta.name.clone().unwrap_or_default() },
        resource_version: meta.resource_version.clone(),
        scheduler_name: spec.scheduler_name.clone().unwrap_or_else(|| "default-scheduler".into()),
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        phase,
        terminating: meta.deletion_timestamp.is_some(),
        requests: pod_requests(pod, &object)?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_terms,
        preferred_terms,
        tolerations,
        priority: spec.priority.unwrap_or(0),
        preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
        labels,
        created: meta.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        job: job_key(pod, &object)?,
        gpu_indices: gpu_annotation(pod, &object)?,
        claims: crate::dra_objects::pod_claims(pod),
        host_ports,
        affinity: pod_affinity,
        spread,
        controller: crate::workload_objects::pod_controller(pod),
        shown_reason: shown_reason(pod),
        volume_claims: crate::volume_objects::pod_volume_claims(pod),
    })
}

/// The message of the pod's `PodScheduled=False` condition, if it has one.
fn shown_reason(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(scheduled.message.clone().unwrap_or_default())
}

pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
pub const KUBEFLOW_JOB_LABEL: &str = "training.kubeflow.org/job-name";
pub const JOBSET_NAME_LABEL: &str = "jobset.sigs.k8s.io/jobset-name";
pub const LWS_NAME_LABEL: &str = "leaderworkerset.sigs.k8s.io/name";
pub const LWS_GROUP_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/group-index";
pub const GPUS_ANNOTATION: &str = "phalanx.dev/gpus";

/// A label's value, if set and not empty.
fn pod_label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str).filter(|v| !v.is_empty())
}

/// The gang of a pod that succeeded, with the pod's UID; `None` for a pod
/// of no gang (or one whose gang cannot be read) and one not succeeded.
pub fn succeeded_member(pod: &Pod) -> Option<(GangId, String)> {
    let succeeded = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
    let gang = job_key(pod, &pod_object_name(pod)).ok().flatten().filter(|_| succeeded)?;
    Some((gang, pod.metadata.uid.clone()?))
}

/// The gang a pod belongs to, in DESIGN.md's order of precedence: its
/// PodGroup label, its upstream scheduling group, the PyTorchJob that owns it
/// (by owner reference, else by the training-operator's job label), its
/// JobSet, its LeaderWorkerSet group (the labels their controllers set).
fn job_key(pod: &Pod, object: &str) -> Result<Option<GangId>, TranslateError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(group) = pod_label(pod, POD_GROUP_LABEL) {
        return Ok(Some(GangId::new(GangKind::PodGroup, ns, group)));
    }
    let upstream = pod.spec.as_ref().and_then(|s| s.scheduling_group.as_ref()).and_then(|g| g.pod_group_name.as_ref());
    if let Some(group) = upstream.filter(|g| !g.is_empty()) {
        return Ok(Some(GangId::new(GangKind::UpstreamPodGroup, ns, group)));
    }
    let owner =
        pod.metadata.owner_references.iter().flatten().find(|o| {
            o.kind == GangKind::PyTorchJob.object_kind() && o.api_version == GangKind::PyTorchJob.api_version()
        });
    if let Some(job) = owner.map(|o| o.name.as_str()).or(pod_label(pod, KUBEFLOW_JOB_LABEL)) {
        return Ok(Some(GangId::new(GangKind::PyTorchJob, ns, job)));
    }
    if let Some(set) = pod_label(pod, JOBSET_NAME_LABEL) {
        return Ok(Some(GangId::new(GangKind::JobSet, ns, set)));
    }
    let Some(set) = pod_label(pod, LWS_NAME_LABEL) else { return Ok(None) };
    let field = format!("metadata.labels[{LWS_GROUP_INDEX_LABEL}]");
    let index = pod_label(pod, LWS_GROUP_INDEX_LABEL)
        .ok_or_else(|| error(object, &field, "missing on a LeaderWorkerSet pod"))?;
    let group = index.parse().map_err(|_| error(object, &field, format!("{index:?} is not a group index")))?;
    Ok(Some(GangId::group_of(GangKind::LeaderWorkerSet, ns, set, group)))
}

/// `phalanx.dev/gpus: "0,1,2,3"`.
fn gpu_annotation(pod: &Pod, object: &str) -> Result<Option<Vec<u32>>, TranslateError> {
    let Some(text) = pod.metadata.annotations.as_ref().and_then(|a| a.get(GPUS_ANNOTATION)) else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(Some(vec![]));
    }
    text.split(',').map(|part| part.trim().parse::<u32>()).collect::<Result<Vec<_>, _>>().map(Some).map_err(|_| {
        error(
            object,
            format!("metadata.annotations[{GPUS_ANNOTATION}]"),
            format!("{text:?} is not a comma-separated list of GPU indices"),
        )
    })
}

/// The annotation value for a set of GPU indices.
pub fn gpu_annotation_value(indices: &[u32]) -> String {
    indices.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Pods held back by `spec.schedulingGates` are not scheduled until the gates are gone.
pub fn is_gated(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty())
}

pub fn node_spec(node: &Node) -> Result<NodeSpec, TranslateError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let object = format!("node {name}");
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let mut allocatable = Resources::new();
    // Allocatable falls back to capacity, as the kubelet reports both.
    let list = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    add_quantities(&mut allocatable, list, &object, "status.allocatable")?;
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let effect = taint_effect(&t.effect).ok_or_else(|| {
                error(&object, format!("spec.taints[{i}].effect"), format!("unknown effect {:?}", t.effect))
            })?;
            Ok(Taint { key: t.key.clone(), value: t.value.clone().unwrap_or_default(), effect })
        })
        .collect::<Result<Vec<_>, TranslateError>>()?;
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let gpu_sharing = gpu_sharing(&labels, &allocatable, &object)?;
    Ok(NodeSpec {
        name,
        labels,
        taints,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready,
        allocatable,
        gpu_sharing,
    })
}

pub const GPU_COUNT_LABEL: &str = "nvidia.com/gpu.count";
pub const GPU_REPLICAS_LABEL: &str = "nvidia.com/gpu.replicas";
pub const GPU_SHARING_STRATEGY_LABEL: &str = "nvidia.com/gpu.sharing-strategy";
pub const MIG_STRATEGY_LABEL: &str = "nvidia.com/mig.strategy";

/// What one `nvidia.com/gpu` is, from GPU Feature Discovery's labels: a MIG
/// slice under `mig.strategy=single`; a replica of a physical GPU when
/// `gpu.replicas` > 1 or `gpu.sharing-strategy` is not `none` (the physical
/// GPUs from `gpu.count`, else allocatable / replicas); else a whole GPU.
fn gpu_sharing(
    labels: &BTreeMap<String, String>,
    allocatable: &Resources,
    object: &str,
) -> Result<GpuSharing, TranslateError> {
    if labels.get(MIG_STRATEGY_LABEL).map(String::as_str) == Some("single") {
        return Ok(GpuSharing::MigSlice);
    }
    let number = |key: &str| -> Result<Option<u32>, TranslateError> {
        let Some(text) = labels.get(key) else { return Ok(None) };
        let field = format!("metadata.labels[{key}]");
        text.parse().map(Some).map_err(|_| error(object, field, format!("{text:?} is not a count")))
    };
    let replicas = number(GPU_REPLICAS_LABEL)?.unwrap_or(1);
    let strategy = match labels.get(GPU_SHARING_STRATEGY_LABEL).map(String::as_str) {
        None | Some("none") if replicas <= 1 => return Ok(GpuSharing::Whole),
        None | Some("none") | Some("time-slicing") => SharingStrategy::TimeSlicing,
        Some("mps") => SharingStrategy::Mps,
        Some(other) => {
            let field = format!("metadata.labels[{GPU_SHARING_STRATEGY_LABEL}]");
            return Err(error(object, field, format!("{other:?} is not none, time-slicing or mps")));
        }
    };
    let offered = u32::try_from(allocatable.get(GPU).max(0)).unwrap_or(u32::MAX);
    let physical_gpus = number(GPU_COUNT_LABEL)?.unwrap_or(offered / replicas.max(1));
    Ok(GpuSharing::Replica { physical_gpus, strategy })
}

pub fn topology_report(report: &GPUTopology) -> Result<TopologyReport, TranslateError> {
    let node = report.metadata.name.clone().unwrap_or_default();
    let object = format!("gputopology {node}");
    let topology = report.spec.topology.clone();
    topology.validate().map_err(|e| error(&object, "spec", e.to_string()))?;
    let index_of = |id: &str| {
        topology
            .gpus
            .iter()
            .find(|g| g.uuid.as_deref() == Some(id))
            .map(|g| g.index)
            .or_else(|| id.parse::<u32>().ok().filter(|i| topology.gpus.iter().any(|g| g.index == *i)))
    };
    let mut pod_gpus = Vec::new();
    for (i, pd) in report.status.iter().flat_map(|s| &s.pod_devices).enumerate() {
        let indices = pd
            .device_ids
            .iter()
            .map(|id| {
                index_of(id).ok_or_else(|| {
                    error(
                        &object,
                        format!("status.podDevices[{i}].deviceIds"),
                        format!("{id:?} is not a GPU of this node"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        pod_gpus.push((PodKey { namespace: pd.namespace.clone(), name: pd.name.clone() }, indices));
    }
    Ok(TopologyReport { node, topology, pod_gpus })
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_core::resources::{GPU, MEMORY};
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "w-0", "namespace": "team-a", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn requests_follow_kube_scheduler_rules() {
        let p = pod(json!({
            "schedulerName": "phalanx",
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "4"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1"}}}
            ],
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "3"}}},
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "overhead": {"memory": "10Mi"}
        }));
        let info = pod_info(&p).unwrap();
        assert_eq!(info.requests.get(CPU), 3000, "init peak dominates 1.5 + 0.1");
        assert_eq!(info.requests.get(GPU), 4, "a limit alone sets the request");
        assert_eq!(info.requests.get(MEMORY), (1 << 30) + 10 * (1 << 20));
        assert_eq!(info.requests.get(PODS), 1);
        assert_eq!(info.scheduler_name, "phalanx");
        assert_eq!(info.created, 1_767_225_600);
        assert_eq!(info.job, None);
    }

    #[test]
    fn jobs_and_gpu_annotations_are_read() {
        let mut p = pod(json!({"containers": [{"name": "a"}]}));
        p.metadata.labels = Some([(KUBEFLOW_JOB_LABEL.to_string(), "llama".to_string())].into());
        p.metadata.annotations = Some([(GPUS_ANNOTATION.to_string(), "4, 5,6".to_string())].into());
        let info = pod_info(&p).unwrap();
        assert_eq!(info.job, Some(GangId::new(GangKind::PyTorchJob, "team-a", "llama")));
        assert_eq!(info.gpu_indices, Some(vec![4, 5, 6]));
        assert_eq!(gpu_annotation_value(&[4, 5, 6]), "4,5,6");
        p.metadata.annotations = Some([(GPUS_ANNOTATION.to_string(), "all".to_string())].into());
        assert_eq!(pod_info(&p).unwrap_err().field, "metadata.annotations[phalanx.dev/gpus]");
    }

    #[test]
    fn jobset_and_leader_worker_set_pods_name_their_gangs() {
        let mut p = pod(json!({"containers": [{"name": "a"}]}));
        let labels = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        p.metadata.labels = labels(&[(JOBSET_NAME_LABEL, "train")]);
        assert_eq!(pod_info(&p).unwrap().job, Some(GangId::new(GangKind::JobSet, "team-a", "train")));
        // A PodGroup (as Trainer makes for coscheduling) comes first.
        p.metadata.labels = labels(&[(JOBSET_NAME_LABEL, "train"), (POD_GROUP_LABEL, "train-pg")]);
        assert_eq!(pod_info(&p).unwrap().job, Some(GangId::new(GangKind::PodGroup, "team-a", "train-pg")));
        p.metadata.labels = labels(&[(LWS_NAME_LABEL, "vllm"), (LWS_GROUP_INDEX_LABEL, "2")]);
        assert_eq!(pod_info(&p).unwrap().job, Some(GangId::group_of(GangKind::LeaderWorkerSet, "team-a", "vllm", 2)));
        p.metadata.labels = labels(&[(LWS_NAME_LABEL, "vllm"), (LWS_GROUP_INDEX_LABEL, "two")]);
        let e = pod_info(&p).unwrap_err();
        assert_eq!(e.field, "metadata.labels[leaderworkerset.sigs.k8s.io/group-index]");
        assert!(e.message.contains("\"two\" is not a group index"), "{e}");
        p.metadata.labels = labels(&[(LWS_NAME_LABEL, "vllm")]);
        assert!(pod_info(&p).unwrap_err().message.contains("missing"));
    }

    #[test]
    fn affinity_and_tolerations_translate() {
        let p = pod(json!({
            "containers": [{"name": "a"}],
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, {"operator": "Exists"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["4"]}]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}}
                ]
            }}
        }));
        let info = pod_info(&p).unwrap();
        assert_eq!(info.scheduler_name, "default-scheduler");
        assert_eq!(info.required_terms[0].match_labels[0].operator, SelectorOperator::Gt(4));
        assert_eq!(info.preferred_terms[0].weight, 10);
        assert_eq!(info.tolerations[1], Toleration { key: None, operator: TolerationOperator::Exists, effect: None });
    }

    #[test]
    fn bad_values_name_object_and_field() {
        let p = pod(json!({"containers": [{"name": "a", "resources": {"requests": {"nvidia.com/gpu": "lots"}}}]}));
        let err = pod_info(&p).unwrap_err();
        assert_eq!(err.object, "pod team-a/w-0");
        assert_eq!(err.field, "spec.containers[0].resources.requests[nvidia.com/gpu]");

        let p = pod(json!({"containers": [{"name": "a"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["many"]}]}]}}}}));
        let err = pod_info(&p).unwrap_err();
        assert!(err.field.ends_with("nodeSelectorTerms[0].matchExpressions[0].values"), "{}", err.field);
    }

    /// Quantities the API server may let through (or that come from an older
    /// or hostile writer): whole units rounded up as kube does, the rest an
    /// error naming the container and resource.
    #[test]
    fn absurd_and_negative_quantities() {
        let requesting = |resource: &str, amount: &str| {
            pod_info(&pod(json!({"containers": [{"name": "a", "resources": {"requests": {resource: amount}}}]})))
        };
        assert_eq!(requesting(GPU, "1e18").unwrap().requests.get(GPU), 1_000_000_000_000_000_000);
        assert_eq!(requesting(GPU, "0.5").unwrap().requests.get(GPU), 1, "rounded up, as kube's Value()");
        for (resource, amount, message) in
            [(GPU, "-1", "is negative"), (MEMORY, "999Ei", "is too large"), (GPU, "1e19", "is too large")]
        {
            let err = requesting(resource, amount).unwrap_err();
            assert_eq!(err.object, "pod team-a/w-0");
            assert_eq!(err.field, format!("spec.containers[0].resources.requests[{resource}]"));
            assert!(err.message.contains(message), "{amount}: {}", err.message);
        }
    }

    #[test]
    fn priority_extremes_and_odd_group_labels_are_taken_as_they_are() {
        for priority in [i32::MIN, i32::MAX] {
            let mut p = pod(json!({"containers": [{"name": "a"}], "priority": priority}));
            p.metadata.labels = Some([(POD_GROUP_LABEL.to_string(), "Not_A.DNS-name".to_string())].into());
            let info = pod_info(&p).unwrap();
            assert_eq!(info.priority, priority);
            assert_eq!(info.job, Some(GangId::new(GangKind::PodGroup, "team-a", "Not_A.DNS-name")));
        }
        let mut p = pod(json!({"containers": [{"name": "a"}]}));
        p.metadata.labels = Some([(POD_GROUP_LABEL.to_string(), String::new())].into());
        assert_eq!(pod_info(&p).unwrap().job, None, "an empty group label names no gang");
    }

    #[test]
    fn node_translation_reads_readiness_taints_and_allocatable() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "gpu-1", "labels": {"rack": "r1"}},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoExecute"}]},
            "status": {
                "capacity": {"nvidia.com/gpu": "8", "cpu": "64"},
                "allocatable": {"nvidia.com/gpu": "8", "cpu": "63500m", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap();
        let spec = node_spec(&node).unwrap();
        assert!(spec.ready && spec.unschedulable);
        assert_eq!(spec.allocatable.get(CPU), 63_500);
        assert_eq!(spec.allocatable.get(GPU), 8);
        assert_eq!(spec.taints[0].effect, TaintEffect::NoExecute);
        let absurd: Node = serde_json::from_value(json!({
            "metadata": {"name": "gpu-2"}, "status": {"allocatable": {"nvidia.com/gpu": "1E40"}}
        }))
        .unwrap();
        assert_eq!(node_spec(&absurd).unwrap_err().field, "status.allocatable[nvidia.com/gpu]");
    }

    fn labelled_node(gpus: &str, labels: serde_json::Value) -> Result<NodeSpec, TranslateError> {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "gpu-1", "labels": labels},
            "status": {"allocatable": {"nvidia.com/gpu": gpus}}
        }))
        .unwrap();
        node_spec(&node)
    }

    #[test]
    fn gpu_sharing_is_read_from_the_gpu_feature_discovery_labels() {
        let whole = labelled_node("8", json!({"nvidia.com/gpu.count": "8", "nvidia.com/gpu.replicas": "1"})).unwrap();
        assert_eq!((whole.gpu_sharing, whole.whole_gpus()), (GpuSharing::Whole, 8));
        let sliced = labelled_node(
            "32",
            json!({"nvidia.com/gpu.count": "8", "nvidia.com/gpu.replicas": "4",
            "nvidia.com/gpu.sharing-strategy": "time-slicing"}),
        )
        .unwrap();
        let replica = GpuSharing::Replica { physical_gpus: 8, strategy: SharingStrategy::TimeSlicing };
        assert_eq!((sliced.gpu_sharing, sliced.whole_gpus(), sliced.physical_gpus()), (replica, 0, Some(8)));
        // Without gpu.count, the physical GPUs are allocatable / replicas.
        let mps =
            labelled_node("16", json!({"nvidia.com/gpu.replicas": "2", "nvidia.com/gpu.sharing-strategy": "mps"}))
                .unwrap();
        assert_eq!(mps.gpu_sharing, GpuSharing::Replica { physical_gpus: 8, strategy: SharingStrategy::Mps });
        let mig = labelled_node("7", json!({"nvidia.com/mig.strategy": "single"})).unwrap();
        assert_eq!((mig.gpu_sharing, mig.whole_gpus(), mig.physical_gpus()), (GpuSharing::MigSlice, 0, None));
        // Mixed MIG leaves nvidia.com/gpu whole (the slices are resources of their own).
        let mixed = labelled_node("8", json!({"nvidia.com/mig.strategy": "mixed"})).unwrap();
        assert_eq!(mixed.gpu_sharing, GpuSharing::Whole);
    }

    #[test]
    fn bad_gpu_sharing_labels_name_the_label() {
        let e = labelled_node("8", json!({"nvidia.com/gpu.replicas": "four"})).unwrap_err();
        assert_eq!((e.object.as_str(), e.field.as_str()), ("node gpu-1", "metadata.labels[nvidia.com/gpu.replicas]"));
        let e = labelled_node("8", json!({"nvidia.com/gpu.sharing-strategy": "magic"})).unwrap_err();
        assert_eq!(e.field, "metadata.labels[nvidia.com/gpu.sharing-strategy]");
        assert!(e.message.contains("not none, time-slicing or mps"), "{e}");
    }
}

#[cfg(test)]
mod topology_report_tests {
    use super::*;
    use crate::api::gpu_topology::{GpuTopologySpec, GpuTopologyStatus, PodDevices};
    use phalanx_core::topology::templates;

    fn report(status: Vec<PodDevices>) -> GPUTopology {
        let mut topology = templates::nvswitch(8, 18, "H100");
        topology.gpus[3].uuid = Some("GPU-abc".into());
        let mut r = GPUTopology::new("gpu-1", GpuTopologySpec { source: "file".into(), topology });
        r.status = Some(GpuTopologyStatus { pod_devices: status });
        r
    }

    #[test]
    fn device_ids_map_to_indices_by_uuid_or_number() {
        let pd = PodDevices { namespace: "a".into(), name: "w".into(), device_ids: vec!["GPU-abc".into(), "5".into()] };
        let r = topology_report(&report(vec![pd])).unwrap();
        assert_eq!(r.node, "gpu-1");
        assert_eq!(r.pod_gpus[0].1, vec![3, 5]);
    }

    /// The fuzzer's corpus (`fuzz/corpus/gpu_topology`, resources in YAML or
    /// JSON), run by the ordinary test suite: what is accepted builds a GPU
    /// model; what is refused names the resource and a field.
    #[test]
    fn fuzz_corpus_is_decoded_or_refused_by_field() {
        use phalanx_core::topology::gpu_choice::NodeGpuModel;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/gpu_topology");
        let (mut accepted, mut count) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            count += 1;
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(resource) = serde_yaml_ng::from_slice::<GPUTopology>(&bytes) else { continue };
            match topology_report(&resource) {
                Ok(report) => {
                    let model = NodeGpuModel::new(report.topology, &Default::default());
                    for k in 0..=model.gpu_count() {
                        let chosen = model.choose(model.all_gpus(), k).map(|c| c.gpus.count_ones() as usize);
                        assert!(chosen.is_none_or(|n| n == k));
                    }
                    accepted += 1;
                }
                Err(e) => assert!(e.object.starts_with("gputopology ") && !e.field.is_empty(), "{e}"),
            }
        }
        assert!(count >= 10 && accepted >= 5, "{accepted} of {count} files in {dir} accepted");
    }

    #[test]
    fn malformed_topologies_name_what_is_wrong() {
        let mut duplicate = report(vec![]);
        duplicate.spec.topology.gpus[5].index = 2;
        let err = topology_report(&duplicate).unwrap_err();
        assert_eq!((err.object.as_str(), err.field.as_str()), ("gputopology gpu-1", "spec"));
        assert_eq!(err.message, "gpus[5].index 2 appears twice");
        let mut short = report(vec![]);
        short.spec.topology.links.truncate(3);
        assert_eq!(topology_report(&short).unwrap_err().message, "links has 3 rows for 8 GPUs");
        let mut wide = report(vec![]);
        wide.spec.topology.links[4].push(phalanx_core::topology::model::Link::Sys);
        assert_eq!(topology_report(&wide).unwrap_err().message, "links[4] has 9 entries for 8 GPUs");
        let mut many = report(vec![]);
        many.spec.topology = templates::nvswitch(65, 18, "H100");
        assert!(topology_report(&many).unwrap_err().message.contains("65 GPUs"));
        let pd = PodDevices { namespace: "a".into(), name: "w".into(), device_ids: vec!["99".into()] };
        let err = topology_report(&report(vec![pd])).unwrap_err();
        assert_eq!(err.message, "\"99\" is not a GPU of this node");
    }

    #[test]
    fn a_topology_naming_gpus_that_do_not_exist_is_rejected() {
        let pd = PodDevices { namespace: "a".into(), name: "w".into(), device_ids: vec!["17".into()] };
        let err = topology_report(&report(vec![pd])).unwrap_err();
        assert_eq!(err.field, "status.podDevices[0].deviceIds");
        let mut bad = report(vec![]);
        bad.spec.topology.links[0].pop();
        assert_eq!(topology_report(&bad).unwrap_err().field, "spec");
    }
}
