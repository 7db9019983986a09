//! PodGroups and their labelled pods translated into what the core's status
//! tracker keeps, and the core's status back into a status patch.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use phalanx_core::gang_status::{GroupPhase, GroupRecord, GroupStatus, MemberPhase, MemberRecord, MemberSummary};
use serde_json::{Value, json};

use crate::api::pod_group::{PodGroup, PodGroupStatus};
use crate::translate::POD_GROUP_LABEL;

pub fn group_record(group: &PodGroup) -> Option<GroupRecord> {
    Some(GroupRecord {
        namespace: group.namespace()?,
        name: group.metadata.name.clone()?,
        resource_version: group.resource_version(),
        min_member: group.spec.min_member.unwrap_or(0),
        status: group.status.as_ref().map(core_status).unwrap_or_default(),
    })
}

fn core_status(status: &PodGroupStatus) -> GroupStatus {
    let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    GroupStatus {
        phase: status.phase.as_deref().and_then(GroupPhase::parse),
        occupied_by: status.occupied_by.clone().filter(|o| !o.is_empty()),
        scheduled: count(status.scheduled),
        running: count(status.running),
        succeeded: count(status.succeeded),
        failed: count(status.failed),
        schedule_start_time: status.schedule_start_time.as_ref().map(|t| t.0),
    }
}

/// A pod that names a group in its label; `None` for any other.
pub fn member_record(pod: &Pod) -> Option<MemberRecord> {
    let group = pod.labels().get(POD_GROUP_LABEL)?;
    let spec = pod.spec.as_ref();
    Some(MemberRecord {
        uid: pod.metadata.uid.clone()?,
        group: format!("{}/{group}", pod.namespace()?),
        scheduler_name: spec.and_then(|s| s.scheduler_name.clone()).unwrap_or_else(|| "default-scheduler".into()),
        member: MemberSummary {
            name: pod.name_any(),
            bound: spec.and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()),
            phase: MemberPhase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
            owners: pod.owner_references().iter().map(|o| o.name.clone()).collect(),
        },
    })
}

/// The merge patch that sets `status` to `status`, every field spelled out
/// (null removes one), guarded by the resourceVersion it was computed from.
pub fn status_patch(status: &GroupStatus, resource_version: Option<&str>) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {
            "phase": status.phase.map(GroupPhase::as_str),
            "occupiedBy": status.occupied_by,
            "scheduled": status.scheduled,
            "running": status.running,
            "succeeded": status.succeeded,
            "failed": status.failed,
            "scheduleStartTime": status.schedule_start_time.map(Time),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn clock() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn the_patch_spells_out_every_field() {
        let status = GroupStatus {
            phase: Some(GroupPhase::Scheduling),
            scheduled: 1,
            schedule_start_time: Some(clock()),
            ..Default::default()
        };
        let patch = status_patch(&status, Some("42"));
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "42"},
                "status": {
                    "phase": "Scheduling", "occupiedBy": null, "scheduled": 1, "running": 0,
                    "succeeded": 0, "failed": 0, "scheduleStartTime": "2023-11-14T22:13:20Z"
                }
            })
        );
    }

    #[test]
    fn objects_translate() {
        let group: PodGroup = serde_json::from_value(json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "g", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"minMember": 3},
            "status": {"phase": "Running", "running": 3, "scheduled": 3, "occupiedBy": "",
                       "scheduleStartTime": "2023-11-14T22:13:20Z"}
        }))
        .unwrap();
        let record = group_record(&group).unwrap();
        assert_eq!(
            (record.key(), record.min_member, record.resource_version.as_deref()),
            ("ns/g".into(), 3, Some("7"))
        );
        assert_eq!(
            record.status,
            GroupStatus {
                phase: Some(GroupPhase::Running),
                scheduled: 3,
                running: 3,
                schedule_start_time: Some(clock()),
                ..Default::default()
            }
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "w-0", "namespace": "ns", "uid": "u1",
                         "labels": {POD_GROUP_LABEL: "g"},
                         "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "job", "uid": "j"}]},
            "spec": {"schedulerName": "phalanx", "nodeName": "n1", "containers": []},
            "status": {"phase": "Succeeded"}
        }))
        .unwrap();
        assert_eq!(
            member_record(&pod).unwrap(),
            MemberRecord {
                uid: "u1".into(),
                group: "ns/g".into(),
                scheduler_name: "phalanx".into(),
                member: MemberSummary {
                    name: "w-0".into(),
                    bound: true,
                    phase: MemberPhase::Succeeded,
                    owners: vec!["job".into()]
                },
            }
        );
    }
}
