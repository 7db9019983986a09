//! Translates the objects that size a gang (scheduler-plugins PodGroups,
//! upstream PodGroups, PyTorchJobs, JobSets, LeaderWorkerSets) into the
//! core's `GangObject`: its minMember and timeout, or what is wrong with it,
//! naming the field.

use std::time::Duration;

use kube::ResourceExt;

use crate::api::jobset::JobSet;
use crate::api::leader_worker_set::LeaderWorkerSet;
use crate::api::pod_group::PodGroup;
use crate::api::pytorch_job::PyTorchJob;
use crate::api::upstream_pod_group::UpstreamPodGroup;
use phalanx_core::gang::{GangId, GangKind, GangObject, GangSpec, InitialScheduling, InvalidGang};

/// The condition upstream's scheduler sets True once a PodGroup was first placed.
pub const INITIALLY_SCHEDULED: &str = "PodGroupInitiallyScheduled";

fn id_of(kind: GangKind, object: &impl ResourceExt) -> GangId {
    GangId::new(kind, &object.namespace().unwrap_or_default(), &object.name_any())
}

fn invalid(id: GangId, uid: Option<String>, field: &str, problem: String) -> GangObject {
    GangObject::Invalid(InvalidGang { gang: id, uid, field: field.into(), problem })
}

fn timeout(seconds: Option<i32>) -> Option<Duration> {
    seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(s as u64))
}

/// `spec.minMember` must be at least 1; `scheduleTimeoutSeconds` must not be negative.
pub fn pod_group(group: &PodGroup) -> (GangId, GangObject) {
    let id = id_of(GangKind::PodGroup, group);
    let uid = group.uid();
    let min_member = group.spec.min_member.unwrap_or(0);
    if min_member < 1 {
        let problem = format!("is {min_member}; a gang needs at least one member");
        return (id.clone(), invalid(id, uid, "spec.minMember", problem));
    }
    if let Some(t) = group.spec.schedule_timeout_seconds.filter(|t| *t < 0) {
        return (id.clone(), invalid(id, uid, "spec.scheduleTimeoutSeconds", format!("is {t}; it cannot be negative")));
    }
    let spec = GangSpec {
        schedule_timeout: timeout(group.spec.schedule_timeout_seconds),
        uid,
        ..GangSpec::of_size(min_member as usize)
    };
    (id, GangObject::Valid(spec))
}

/// minMember is `runPolicy.schedulingPolicy.minAvailable`, else the sum of
/// all replicas. A job without replicas, with negative counts or with zero
/// workers cannot be placed as a gang.
pub fn pytorch_job(job: &PyTorchJob) -> (GangId, GangObject) {
    let id = id_of(GangKind::PyTorchJob, job);
    let uid = job.uid();
    let specs = &job.spec.pytorch_replica_specs;
    if specs.is_empty() {
        return (id.clone(), invalid(id, uid, "spec.pytorchReplicaSpecs", "is empty: the job has no pods".into()));
    }
    let mut total = 0usize;
    for (kind, spec) in specs {
        let replicas = spec.replicas.unwrap_or(1);
        let field = format!("spec.pytorchReplicaSpecs.{kind}.replicas");
        if replicas < 0 {
            return (id.clone(), invalid(id, uid, &field, format!("is {replicas}; it cannot be negative")));
        }
        if replicas == 0 && kind == "Worker" {
            return (id.clone(), invalid(id, uid, &field, "is 0: a distributed job needs at least one worker".into()));
        }
        total += replicas as usize;
    }
    let policy = job.spec.run_policy.as_ref().and_then(|p| p.scheduling_policy.as_ref());
    let min_member = match policy.and_then(|p| p.min_available) {
        Some(m) if m < 1 => {
            let field = "spec.runPolicy.schedulingPolicy.minAvailable";
            return (id.clone(), invalid(id, uid, field, format!("is {m}; a gang needs at least one member")));
        }
        Some(m) => m as usize,
        None => total,
    };
    let spec = GangSpec {
        schedule_timeout: timeout(policy.and_then(|p| p.schedule_timeout_seconds)),
        max_member: Some(total),
        uid,
        ..GangSpec::of_size(min_member)
    };
    (id, GangObject::Valid(spec))
}

/// A count the object gives, or 1 where it gives none; `None` when negative.
fn count_of(value: Option<i32>) -> Option<usize> {
    usize::try_from(value.unwrap_or(1)).ok()
}

/// Every pod its jobs run at once: the sum over replicated jobs of
/// `replicas` x `parallelism` (a job with fewer completions runs that many).
/// With `startupPolicyOrder: InOrder` the controller creates each replicated
/// job only once the one before is ready, so only the first one's pods can be
/// waited for together: they are the gang, and the rest join it as they come.
pub fn jobset(set: &JobSet) -> (GangId, GangObject) {
    let id = id_of(GangKind::JobSet, set);
    let uid = set.uid();
    if set.spec.replicated_jobs.is_empty() {
        return (id.clone(), invalid(id, uid, "spec.replicatedJobs", "is empty: the set has no pods".into()));
    }
    let mut per_job = Vec::new();
    for (i, job) in set.spec.replicated_jobs.iter().enumerate() {
        let field = |name: &str| format!("spec.replicatedJobs[{i}].{name}");
        let spec = &job.template.spec;
        let (Some(replicas), Some(parallelism)) = (count_of(job.replicas), count_of(spec.parallelism)) else {
            let (name, value) = match job.replicas.filter(|r| *r < 0) {
                Some(r) => ("replicas", r),
                None => ("template.spec.parallelism", spec.parallelism.unwrap_or_default()),
            };
            return (id.clone(), invalid(id, uid, &field(name), format!("is {value}; it cannot be negative")));
        };
        let at_once = match spec.completions.and_then(|c| usize::try_from(c).ok()) {
            Some(completions) => parallelism.min(completions),
            None => parallelism,
        };
        per_job.push(replicas * at_once);
    }
    let total: usize = per_job.iter().sum();
    if total == 0 {
        return (
            id.clone(),
            invalid(id, uid, "spec.replicatedJobs", "run no pods: every job has 0 replicas or parallelism".into()),
        );
    }
    let in_order = set.spec.startup_policy.as_ref().and_then(|p| p.startup_policy_order.as_deref()) == Some("InOrder");
    let first = per_job.iter().copied().find(|n| *n > 0).unwrap_or(total);
    let min_member = if in_order { first } else { total };
    (id, GangObject::Valid(GangSpec { max_member: Some(total), uid, ..GangSpec::of_size(min_member) }))
}

/// Each group is `leaderWorkerTemplate.size` pods (the leader included).
/// With `startupPolicy: LeaderReady` the workers are created only once the
/// leader is ready, so the leader goes first and the workers join it.
pub fn leader_worker_set(set: &LeaderWorkerSet) -> (GangId, GangObject) {
    let id = id_of(GangKind::LeaderWorkerSet, set);
    let uid = set.uid();
    let size = set.spec.leader_worker_template.size.unwrap_or(1);
    let Some(size) = usize::try_from(size).ok().filter(|s| *s >= 1) else {
        let field = "spec.leaderWorkerTemplate.size";
        return (id.clone(), invalid(id, uid, field, format!("is {size}; a group needs at least its leader")));
    };
    let leader_first = set.spec.startup_policy.as_deref() == Some("LeaderReady");
    let min_member = if leader_first { 1 } else { size };
    (id, GangObject::Valid(GangSpec { max_member: Some(size), uid, ..GangSpec::of_size(min_member) }))
}

/// `spec.schedulingPolicy.gang.minCount` (a basic policy is a gang of one)
/// and `spec.schedulingConstraints.topology`, the node label whose one value
/// all members share, in whichever version the API server serves.
pub fn upstream_pod_group(group: &impl UpstreamPodGroup) -> (GangId, GangObject) {
    let id = id_of(GangKind::UpstreamPodGroup, group);
    let uid = group.uid();
    let fields = group.fields();
    let min_member = match fields.policy.gang.as_ref() {
        Some(gang) if gang.min_count < 1 => {
            let field = "spec.schedulingPolicy.gang.minCount";
            return (
                id.clone(),
                invalid(id, uid, field, format!("is {}; a gang needs at least one member", gang.min_count)),
            );
        }
        Some(gang) => gang.min_count as usize,
        None => 1,
    };
    let topology = fields.constraints.and_then(|c| c.topology.as_deref()).unwrap_or_default();
    let required_domain = match topology {
        [] => None,
        [one] if one.key.trim().is_empty() => {
            let field = "spec.schedulingConstraints.topology[0].key";
            return (id.clone(), invalid(id, uid, field, "is empty; it names the node label of the domain".into()));
        }
        [one] => Some(one.key.clone()),
        more => {
            let field = "spec.schedulingConstraints.topology";
            let problem = format!("lists {} constraints; one is supported", more.len());
            return (id.clone(), invalid(id, uid, field, problem));
        }
    };
    let scheduled = fields.conditions.iter().any(|c| c.type_ == INITIALLY_SCHEDULED && c.status == "True");
    let initial_scheduling = if scheduled { InitialScheduling::Done } else { InitialScheduling::NotYet };
    let spec = GangSpec { uid, required_domain, initial_scheduling, ..GangSpec::of_size(min_member) };
    (id, GangObject::Valid(spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::upstream_pod_group::{PodGroupV1alpha2, PodGroupV1beta1};
    use serde_json::json;

    fn object<K: serde::de::DeserializeOwned>(name: &str, uid: &str, spec: serde_json::Value) -> K {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "team-a", "uid": uid}, "spec": spec}))
            .unwrap()
    }

    fn group(spec: serde_json::Value) -> PodGroup {
        object("llm", "pg-1", spec)
    }

    fn job(spec: serde_json::Value) -> PyTorchJob {
        object("bert", "job-1", spec)
    }

    fn problem(object: GangObject) -> String {
        match object {
            GangObject::Invalid(i) => i.to_string(),
            GangObject::Valid(spec) => panic!("expected invalid, got {spec:?}"),
        }
    }

    #[test]
    fn a_pod_group_gives_min_member_and_timeout() {
        let (id, object) = pod_group(&group(json!({"minMember": 4, "scheduleTimeoutSeconds": 30})));
        assert_eq!(id, GangId::new(GangKind::PodGroup, "team-a", "llm"));
        let GangObject::Valid(spec) = object else { panic!() };
        assert_eq!((spec.min_member, spec.schedule_timeout), (4, Some(Duration::from_secs(30))));
        assert_eq!(spec.uid.as_deref(), Some("pg-1"));
    }

    #[test]
    fn a_huge_min_member_is_read_as_it_is() {
        // The gang scheduler then says no cluster holds that many pods.
        let GangObject::Valid(spec) = pod_group(&group(json!({"minMember": i32::MAX}))).1 else { panic!() };
        assert_eq!(spec.min_member, i32::MAX as usize);
        assert!(problem(pod_group(&group(json!({"minMember": i32::MIN}))).1).contains("is -2147483648"));
    }

    #[test]
    fn bad_pod_groups_name_the_field() {
        assert_eq!(
            problem(pod_group(&group(json!({"minMember": 0}))).1),
            "PodGroup team-a/llm: spec.minMember is 0; a gang needs at least one member"
        );
        assert!(problem(pod_group(&group(json!({}))).1).contains("spec.minMember is 0"));
        assert!(
            problem(pod_group(&group(json!({"minMember": 2, "scheduleTimeoutSeconds": -5}))).1)
                .contains("spec.scheduleTimeoutSeconds is -5")
        );
    }

    #[test]
    fn a_pytorch_job_is_sized_by_min_available_else_all_replicas() {
        let replicas = json!({"Master": {"replicas": 1, "template": {}}, "Worker": {"replicas": 3, "template": {}}});
        let GangObject::Valid(spec) = pytorch_job(&job(json!({"pytorchReplicaSpecs": replicas}))).1 else { panic!() };
        assert_eq!((spec.min_member, spec.max_member), (4, Some(4)));
        let with_policy = json!({"pytorchReplicaSpecs": replicas,
            "runPolicy": {"schedulingPolicy": {"minAvailable": 2, "scheduleTimeoutSeconds": 60}}});
        let GangObject::Valid(spec) = pytorch_job(&job(with_policy)).1 else { panic!() };
        assert_eq!((spec.min_member, spec.schedule_timeout), (2, Some(Duration::from_secs(60))));
    }

    #[test]
    fn bad_pytorch_jobs_name_the_field() {
        let zero_workers = json!({"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 0}}});
        assert_eq!(
            problem(pytorch_job(&job(zero_workers)).1),
            "PyTorchJob team-a/bert: spec.pytorchReplicaSpecs.Worker.replicas is 0: a distributed job needs at least one worker"
        );
        assert!(problem(pytorch_job(&job(json!({"pytorchReplicaSpecs": {}}))).1).contains("is empty"));
        let negative = json!({"pytorchReplicaSpecs": {"Worker": {"replicas": -2}}});
        assert!(problem(pytorch_job(&job(negative)).1).contains("Worker.replicas is -2"));
        let bad_min = json!({"pytorchReplicaSpecs": {"Worker": {"replicas": 2}},
            "runPolicy": {"schedulingPolicy": {"minAvailable": 0}}});
        assert!(problem(pytorch_job(&job(bad_min)).1).contains("minAvailable is 0"));
    }

    fn set(spec: serde_json::Value) -> JobSet {
        object("train", "js-1", spec)
    }

    fn replicated(name: &str, replicas: i32, parallelism: i32) -> serde_json::Value {
        json!({"name": name, "replicas": replicas, "template": {"spec": {"parallelism": parallelism, "template": {}}}})
    }

    #[test]
    fn a_jobset_is_every_pod_its_jobs_run_at_once() {
        let spec = json!({"replicatedJobs": [replicated("driver", 1, 1), replicated("workers", 2, 4)]});
        let (id, GangObject::Valid(gang)) = jobset(&set(spec)) else { panic!() };
        assert_eq!(id, GangId::new(GangKind::JobSet, "team-a", "train"));
        assert_eq!((gang.min_member, gang.max_member, gang.uid.as_deref()), (9, Some(9), Some("js-1")));
        // Defaults: one job, one pod; fewer completions than parallelism run fewer pods.
        let spec = json!({"replicatedJobs": [{"name": "a", "template": {"spec": {"parallelism": 4, "completions": 2}}},
                                             {"name": "b"}]});
        let GangObject::Valid(gang) = jobset(&set(spec)).1 else { panic!() };
        assert_eq!(gang.min_member, 3);
    }

    #[test]
    fn an_in_order_jobset_waits_for_its_first_job_only() {
        let spec = json!({"replicatedJobs": [replicated("driver", 1, 1), replicated("workers", 2, 4)],
                          "startupPolicy": {"startupPolicyOrder": "InOrder"}});
        let GangObject::Valid(gang) = jobset(&set(spec)).1 else { panic!() };
        assert_eq!((gang.min_member, gang.max_member), (1, Some(9)));
    }

    #[test]
    fn bad_jobsets_name_the_field() {
        assert!(problem(jobset(&set(json!({"replicatedJobs": []}))).1).contains("spec.replicatedJobs is empty"));
        let negative = json!({"replicatedJobs": [replicated("a", 1, 1), replicated("b", -1, 1)]});
        assert_eq!(
            problem(jobset(&set(negative)).1),
            "JobSet team-a/train: spec.replicatedJobs[1].replicas is -1; it cannot be negative"
        );
        let negative = json!({"replicatedJobs": [replicated("a", 1, -3)]});
        assert!(problem(jobset(&set(negative)).1).contains("spec.replicatedJobs[0].template.spec.parallelism is -3"));
        assert!(problem(jobset(&set(json!({"replicatedJobs": [replicated("a", 0, 1)]}))).1).contains("run no pods"));
    }

    fn lws(spec: serde_json::Value) -> LeaderWorkerSet {
        object("vllm", "lws-1", spec)
    }

    #[test]
    fn a_leader_worker_set_group_is_its_size() {
        let (id, GangObject::Valid(gang)) = leader_worker_set(&lws(json!({"replicas": 3,
            "leaderWorkerTemplate": {"size": 4, "workerTemplate": {}}})))
        else {
            panic!()
        };
        assert_eq!((id.kind, id.group), (GangKind::LeaderWorkerSet, None));
        assert_eq!((gang.min_member, gang.max_member), (4, Some(4)));
        let leader_first = json!({"startupPolicy": "LeaderReady", "leaderWorkerTemplate": {"size": 4}});
        let GangObject::Valid(gang) = leader_worker_set(&lws(leader_first)).1 else { panic!() };
        assert_eq!((gang.min_member, gang.max_member), (1, Some(4)));
        assert_eq!(
            problem(leader_worker_set(&lws(json!({"leaderWorkerTemplate": {"size": 0}}))).1),
            "LeaderWorkerSet team-a/vllm: spec.leaderWorkerTemplate.size is 0; a group needs at least its leader"
        );
    }

    fn upstream<K: serde::de::DeserializeOwned>(api_version: &str, spec: serde_json::Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": api_version, "kind": "PodGroup",
            "metadata": {"name": "g", "namespace": "ns", "uid": "pg-9"},
            "spec": spec,
            "status": {"conditions": [{"type": "PodGroupInitiallyScheduled", "status": "True", "reason": "Scheduled",
                "message": "", "lastTransitionTime": "2026-12-07T10:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn an_upstream_pod_group_reads_alike_in_both_versions() {
        let spec = json!({"schedulingPolicy": {"gang": {"minCount": 8}},
            "schedulingConstraints": {"topology": [{"key": "topology.kubernetes.io/rack"}]}});
        let beta: PodGroupV1beta1 = upstream("scheduling.k8s.io/v1beta1", spec.clone());
        let alpha: PodGroupV1alpha2 = upstream("scheduling.k8s.io/v1alpha2", spec);
        let (id, beta) = upstream_pod_group(&beta);
        assert_eq!(id, GangId::new(GangKind::UpstreamPodGroup, "ns", "g"));
        assert_eq!(beta, upstream_pod_group(&alpha).1, "the same gang from either version");
        let GangObject::Valid(spec) = beta else { panic!() };
        assert_eq!(spec.min_member, 8);
        assert_eq!(spec.required_domain.as_deref(), Some("topology.kubernetes.io/rack"));
        assert_eq!(spec.initial_scheduling, InitialScheduling::Done);
        let basic: PodGroupV1beta1 = upstream("scheduling.k8s.io/v1beta1", json!({"schedulingPolicy": {"basic": {}}}));
        let GangObject::Valid(spec) = upstream_pod_group(&basic).1 else { panic!() };
        assert_eq!((spec.min_member, spec.required_domain), (1, None));
    }

    #[test]
    fn bad_upstream_pod_groups_name_the_field() {
        let bad = |spec| problem(upstream_pod_group(&upstream::<PodGroupV1beta1>("scheduling.k8s.io/v1beta1", spec)).1);
        assert_eq!(
            bad(json!({"schedulingPolicy": {"gang": {"minCount": 0}}})),
            "PodGroup ns/g: spec.schedulingPolicy.gang.minCount is 0; a gang needs at least one member"
        );
        let empty_key = json!({"schedulingPolicy": {"gang": {"minCount": 2}},
            "schedulingConstraints": {"topology": [{"key": " "}]}});
        assert!(bad(empty_key).contains("spec.schedulingConstraints.topology[0].key is empty"));
        let two = json!({"schedulingPolicy": {"gang": {"minCount": 2}},
            "schedulingConstraints": {"topology": [{"key": "a"}, {"key": "b"}]}});
        assert!(bad(two).contains("spec.schedulingConstraints.topology lists 2 constraints; one is supported"));
    }
}
