//! The upstream PodGroup (`scheduling.k8s.io`) in the two versions an API
//! server may serve: `v1beta1` from Kubernetes 1.37 (k8s-openapi's type) and
//! `v1alpha2` in 1.36, which 1.37 removed and k8s-openapi's `v1_37` no longer
//! has: typed here with only the fields phalanx reads, whose shape is the
//! same in both versions.

use k8s_openapi::api::scheduling::v1beta1::{PodGroupSchedulingConstraints, PodGroupSchedulingPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::api::scheduling::v1beta1::PodGroup as PodGroupV1beta1;

pub const GROUP: &str = "scheduling.k8s.io";

/// Which version of the upstream PodGroup the API server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamVersion {
    V1beta1,
    V1alpha2,
}

impl UpstreamVersion {
    /// Newest first: the order discovery asks in.
    pub const ALL: [UpstreamVersion; 2] = [UpstreamVersion::V1beta1, UpstreamVersion::V1alpha2];

    pub fn api_version(self) -> &'static str {
        match self {
            UpstreamVersion::V1beta1 => "scheduling.k8s.io/v1beta1",
            UpstreamVersion::V1alpha2 => "scheduling.k8s.io/v1alpha2",
        }
    }
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "scheduling.k8s.io",
    version = "v1alpha2",
    kind = "PodGroup",
    root = "PodGroupV1alpha2",
    plural = "podgroups",
    namespaced,
    status = "PodGroupV1alpha2Status"
)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupV1alpha2Spec {
    pub scheduling_policy: PodGroupSchedulingPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_constraints: Option<PodGroupSchedulingConstraints>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupV1alpha2Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// What phalanx reads of an upstream PodGroup, whichever its version.
pub struct UpstreamGroupFields<'a> {
    pub policy: &'a PodGroupSchedulingPolicy,
    pub constraints: Option<&'a PodGroupSchedulingConstraints>,
    pub conditions: &'a [Condition],
}

pub trait UpstreamPodGroup: kube::ResourceExt {
    fn fields(&self) -> UpstreamGroupFields<'_>;
}

impl UpstreamPodGroup for PodGroupV1beta1 {
    fn fields(&self) -> UpstreamGroupFields<'_> {
        UpstreamGroupFields {
            policy: &self.spec.scheduling_policy,
            constraints: self.spec.scheduling_constraints.as_ref(),
            conditions: self.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default(),
        }
    }
}

impl UpstreamPodGroup for PodGroupV1alpha2 {
    fn fields(&self) -> UpstreamGroupFields<'_> {
        UpstreamGroupFields {
            policy: &self.spec.scheduling_policy,
            constraints: self.spec.scheduling_constraints.as_ref(),
            conditions: self.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default(),
        }
    }
}
