//! `LeaderWorkerSet` (leaderworkerset.x-k8s.io/v1): read by phalanx to size
//! each of its groups (a leader and its workers, as multi-node inference runs)
//! as one gang. Only the fields phalanx reads are typed; the pod templates and
//! status are kept as they are. The CRD generated from this type is installed
//! in the test control plane (`e2e/crds/`), where no LWS controller runs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pytorch_job::PreservedObject;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "leaderworkerset.x-k8s.io",
    version = "v1",
    kind = "LeaderWorkerSet",
    plural = "leaderworkersets",
    namespaced,
    doc = "Groups of a leader pod and its workers (the fields phalanx reads).",
    status = "PreservedObject",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerSetSpec {
    /// How many groups; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub leader_worker_template: LeaderWorkerTemplate,
    /// `LeaderCreated` (the default: all pods of a group at once) or
    /// `LeaderReady` (workers only once the leader is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerTemplate {
    /// Pods per group, the leader included; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_template: Option<PreservedObject>,
    #[serde(default)]
    pub worker_template: PreservedObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}
