//! `ElasticQuota` (scheduling.x-k8s.io/v1alpha1, namespaced): a namespace's
//! guaranteed (`min`) and upper (`max`) amounts of each resource, as
//! scheduler-plugins' CapacityScheduling reads them. The schema matches
//! scheduler-plugins' so existing objects work unchanged; phalanx reads the
//! spec and leaves `status.used` to whoever keeps it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "scheduling.x-k8s.io",
    version = "v1alpha1",
    kind = "ElasticQuota",
    plural = "elasticquotas",
    shortname = "eq",
    shortname = "eqs",
    namespaced,
    doc = "A namespace's elastic quota: what it is guaranteed (min) and what it may use at most (max); between the two it borrows what other namespaces leave unused.",
    status = "ElasticQuotaStatus",
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.used"}"#,
    printcolumn = r#"{"name":"Max","type":"string","jsonPath":".spec.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ElasticQuotaSpec {
    /// Guaranteed amounts: what the namespace may always use, reclaiming it from borrowers if need be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::resource_list")]
    pub min: Option<BTreeMap<String, Quantity>>,
    /// Upper limits on what the namespace's scheduled pods request; a resource not named is not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::resource_list")]
    pub max: Option<BTreeMap<String, Quantity>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticQuotaStatus {
    /// What the namespace's scheduled pods request now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::resource_list")]
    pub used: Option<BTreeMap<String, Quantity>>,
}
