//! `resource.k8s.io/v1` objects into the core's DRA types, a pod's
//! `spec.resourceClaims` into claim names, and an allocation the core chose
//! back into the claim's status (as a JSON patch conditional on the
//! claim's resourceVersion).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{
    DeviceAttribute, DeviceClass as K8sDeviceClass, DeviceSelector, OpaqueDeviceConfiguration, ResourceClaim,
    ResourceSlice,
};
use serde_json::{Value, json};

use crate::translate::{TranslateError, error};
use phalanx_core::dra::claim::{
    AllocatedConfig, AllocationMode, ClaimAllocation, ClaimConfig, ClaimKey, ConfigSource, ConstraintKind, DeviceClaim,
    DeviceClass, DeviceConstraint, DeviceRequest, DeviceResult, DeviceSelection, OpaqueConfig, PodClaim,
    PodClaimSource, RequestKind,
};
use phalanx_core::dra::device::{AttributeValue, Device, DeviceId, DeviceSlice, QualifiedName};
use phalanx_core::dra::inventory::{Allocates, ClaimWrite};
use phalanx_core::quantity::parse_units;

pub const DRA_API_VERSION: &str = "resource.k8s.io/v1";

/// The finalizer under which the controller manager's resourceclaim
/// controller clears a claim's allocation once no pod is reserved any more
/// (it removes deleted and finished pods from `reservedFor`). Whoever
/// allocates adds it first, as kube-scheduler does.
pub const DELETE_PROTECTION: &str = "resource.kubernetes.io/delete-protection";

fn cel_expressions(selectors: Option<&Vec<DeviceSelector>>) -> Vec<String> {
    selectors.into_iter().flatten().filter_map(|s| s.cel.as_ref().map(|c| c.expression.clone())).collect()
}

pub fn device_class(class: &K8sDeviceClass) -> DeviceClass {
    // 1.37 made the spec optional: a class without one selects every device.
    let spec = class.spec.as_ref();
    DeviceClass {
        name: class.metadata.name.clone().unwrap_or_default(),
        selectors: cel_expressions(spec.and_then(|s| s.selectors.as_ref())),
        extended_resource_name: spec.and_then(|s| s.extended_resource_name.clone()),
        config: spec
            .and_then(|s| s.config.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| opaque(c.opaque.as_ref()))
            .collect(),
    }
}

/// A driver's parameters as JSON text (only opaque configuration exists in `resource.k8s.io/v1`).
fn opaque(config: Option<&OpaqueDeviceConfiguration>) -> Option<OpaqueConfig> {
    let config = config?;
    Some(OpaqueConfig { driver: config.driver.clone(), parameters: config.parameters.0.to_string() })
}

fn opaque_json(config: &OpaqueConfig) -> Value {
    let parameters: Value = serde_json::from_str(&config.parameters).unwrap_or(Value::Null);
    json!({"driver": config.driver, "parameters": parameters})
}

fn config_source(source: &str) -> Option<ConfigSource> {
    match source {
        "FromClass" => Some(ConfigSource::FromClass),
        "FromClaim" => Some(ConfigSource::FromClaim),
        _ => None,
    }
}

/// A slice's devices, or `None` for a slice not tied to one node (network
/// devices: not scheduled by phalanx yet).
pub fn device_slice(slice: &ResourceSlice) -> Result<Option<DeviceSlice>, TranslateError> {
    let name = slice.metadata.name.clone().unwrap_or_default();
    let object = format!("ResourceSlice {name}");
    let spec = &slice.spec;
    let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let mut devices: Vec<Device> = Vec::new();
    for (i, device) in spec.devices.iter().flatten().enumerate() {
        let field = format!("spec.devices[{i}]");
        if devices.iter().any(|d| d.id.device == device.name) {
            return Err(error(&object, format!("{field}.name"), format!("device {:?} appears twice", device.name)));
        }
        let mut attributes = BTreeMap::new();
        for (key, value) in device.attributes.iter().flatten() {
            let value = attribute(value)
                .ok_or_else(|| error(&object, format!("{field}.attributes[{key}]"), "has no value of a known type"))?;
            attributes.insert(QualifiedName::parse(key, &spec.driver), value);
        }
        let mut capacity = BTreeMap::new();
        for (key, value) in device.capacity.iter().flatten() {
            let amount = parse_units(&value.value.0)
                .map_err(|e| error(&object, format!("{field}.capacity[{key}].value"), e.to_string()))?;
            capacity.insert(QualifiedName::parse(key, &spec.driver), amount);
        }
        devices.push(Device {
            id: DeviceId { driver: spec.driver.clone(), pool: spec.pool.name.clone(), device: device.name.clone() },
            attributes,
            capacity,
        });
    }
    Ok(Some(DeviceSlice { name, node, driver: spec.driver.clone(), pool: spec.pool.name.clone(), devices }))
}

fn attribute(value: &DeviceAttribute) -> Option<AttributeValue> {
    if let Some(v) = value.int {
        return Some(AttributeValue::Int(v));
    }
    if let Some(v) = value.bool {
        return Some(AttributeValue::Bool(v));
    }
    if let Some(v) = &value.string {
        return Some(AttributeValue::String(v.clone()));
    }
    value.version.clone().map(AttributeValue::Version)
}

fn selection(
    object: &str,
    field: &str,
    class: &str,
    selectors: Option<&Vec<DeviceSelector>>,
    mode: Option<&str>,
    count: Option<i64>,
) -> Result<DeviceSelection, TranslateError> {
    let mode = match mode {
        None | Some("ExactCount") => {
            let count = count.unwrap_or(1);
            let count = u32::try_from(count)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| error(object, format!("{field}.count"), format!("{count} is not a positive count")))?;
            AllocationMode::ExactCount(count)
        }
        Some("All") => AllocationMode::All,
        Some(other) => {
            return Err(error(object, format!("{field}.allocationMode"), format!("unknown mode {other:?}")));
        }
    };
    Ok(DeviceSelection { device_class: class.to_string(), selectors: cel_expressions(selectors), mode })
}

pub fn device_claim(claim: &ResourceClaim) -> Result<DeviceClaim, TranslateError> {
    let meta = &claim.metadata;
    let key =
        ClaimKey { namespace: meta.namespace.clone().unwrap_or_default(), name: meta.name.clone().unwrap_or_default() };
    let object = format!("ResourceClaim {key}");
    let devices = claim.spec.as_ref().and_then(|s| s.devices.as_ref());
    let mut requests = Vec::new();
    for (i, request) in devices.and_then(|d| d.requests.as_ref()).into_iter().flatten().enumerate() {
        let field = format!("spec.devices.requests[{i}]");
        let kind = match (&request.exactly, &request.first_available) {
            (Some(e), None) => RequestKind::Exactly(selection(
                &object,
                &format!("{field}.exactly"),
                &e.device_class_name,
                e.selectors.as_ref(),
                e.allocation_mode.as_deref(),
                e.count,
            )?),
            (None, Some(subs)) => RequestKind::FirstAvailable(
                subs.iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let field = format!("{field}.firstAvailable[{j}]");
                        let chosen = selection(
                            &object,
                            &field,
                            &s.device_class_name,
                            s.selectors.as_ref(),
                            s.allocation_mode.as_deref(),
                            s.count,
                        )?;
                        Ok((s.name.clone(), chosen))
                    })
                    .collect::<Result<_, TranslateError>>()?,
            ),
            _ => return Err(error(&object, field, "needs exactly one of exactly and firstAvailable")),
        };
        requests.push(DeviceRequest { name: request.name.clone(), kind });
    }
    let mut constraints = Vec::new();
    for (i, c) in devices.and_then(|d| d.constraints.as_ref()).into_iter().flatten().enumerate() {
        let kind = match (&c.match_attribute, &c.distinct_attribute) {
            (Some(a), None) => ConstraintKind::MatchAttribute(a.clone()),
            (None, Some(a)) => ConstraintKind::DistinctAttribute(a.clone()),
            _ => {
                let field = format!("spec.devices.constraints[{i}]");
                return Err(error(&object, field, "needs exactly one of matchAttribute and distinctAttribute"));
            }
        };
        constraints.push(DeviceConstraint { requests: c.requests.clone().unwrap_or_default(), kind });
    }
    let config = devices
        .and_then(|d| d.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(ClaimConfig { requests: c.requests.clone().unwrap_or_default(), opaque: opaque(c.opaque.as_ref())? })
        })
        .collect();
    let status = claim.status.as_ref();
    let allocation = status.and_then(|s| s.allocation.as_ref()).map(|a| ClaimAllocation {
        node: allocated_node(a).unwrap_or_default(),
        results: a
            .devices
            .iter()
            .flat_map(|d| d.results.iter().flatten())
            .map(|r| DeviceResult {
                request: r.request.clone(),
                device: DeviceId { driver: r.driver.clone(), pool: r.pool.clone(), device: r.device.clone() },
            })
            .collect(),
        config: a
            .devices
            .iter()
            .flat_map(|d| d.config.iter().flatten())
            .filter_map(|c| {
                Some(AllocatedConfig {
                    source: config_source(&c.source)?,
                    requests: c.requests.clone().unwrap_or_default(),
                    opaque: opaque(c.opaque.as_ref())?,
                })
            })
            .collect(),
    });
    Ok(DeviceClaim {
        key,
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone(),
        requests,
        constraints,
        allocation,
        reserved_for: status
            .and_then(|s| s.reserved_for.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
        config,
    })
}

/// The node an allocation's node selector names (`metadata.name In [node]`,
/// as schedulers write it).
fn allocated_node(allocation: &k8s_openapi::api::resource::v1::AllocationResult) -> Option<String> {
    let terms = &allocation.node_selector.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        (r.key == "metadata.name" && r.operator == "In").then(|| r.values.as_ref()?.first().cloned()).flatten()
    })
}

/// A pod's `spec.resourceClaims`, with the claims the controller manager
/// made from templates read from `status.resourceClaimStatuses`.
pub fn pod_claims(pod: &Pod) -> Vec<PodClaim> {
    let statuses = pod.status.as_ref().and_then(|s| s.resource_claim_statuses.as_ref());
    let entries = pod.spec.as_ref().and_then(|s| s.resource_claims.as_ref());
    entries
        .into_iter()
        .flatten()
        .map(|entry| {
            let source = match (&entry.resource_claim_name, &entry.resource_claim_template_name) {
                (Some(name), _) => PodClaimSource::Claim(name.clone()),
                (None, template) => match statuses.and_then(|s| s.iter().find(|s| s.name == entry.name)) {
                    Some(status) => match &status.resource_claim_name {
                        Some(name) => PodClaimSource::Claim(name.clone()),
                        None => PodClaimSource::NotNeeded,
                    },
                    None => PodClaimSource::PendingTemplate(template.clone().unwrap_or_default()),
                },
            };
            PodClaim { name: entry.name.clone(), source }
        })
        .collect()
}

/// A merge patch adding `DELETE_PROTECTION` to a claim about to be
/// allocated, conditional on the version the decision read; `None` if it
/// is there already or nothing is allocated.
pub fn claim_finalizer_patch(write: &ClaimWrite) -> Option<Value> {
    if write.allocates == Allocates::Existing || write.finalizers.iter().any(|f| f == DELETE_PROTECTION) {
        return None;
    }
    let mut finalizers = write.finalizers.clone();
    finalizers.push(DELETE_PROTECTION.to_string());
    Some(json!({"metadata": {"resourceVersion": write.resource_version, "finalizers": finalizers}}))
}

/// A JSON patch of the claim's status: the allocation (when new) and the
/// pod's reservation, applied only if the claim is still at
/// `resource_version` (the decision's, or the finalizer write's). `None`:
/// the claim is reserved for the pod already.
pub fn claim_status_patch(write: &ClaimWrite, resource_version: Option<&str>, pod: (&str, &str)) -> Option<Value> {
    let (pod_name, pod_uid) = pod;
    if write.allocates == Allocates::Existing && write.reserved_for.iter().any(|uid| uid == pod_uid) {
        return None;
    }
    let test = json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version});
    let consumer = json!({"resource": "pods", "name": pod_name, "uid": pod_uid});
    if write.allocates == Allocates::New {
        let results: Vec<Value> = write
            .allocation
            .results
            .iter()
            .map(|r| {
                json!({"request": r.request, "driver": r.device.driver, "pool": r.device.pool, "device": r.device.device})
            })
            .collect();
        let node_selector = json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [write.allocation.node]}
        ]}]});
        let mut devices = json!({"results": results});
        if !write.allocation.config.is_empty() {
            let config: Vec<Value> = write
                .allocation
                .config
                .iter()
                .map(|c| {
                    let source = match c.source {
                        ConfigSource::FromClass => "FromClass",
                        ConfigSource::FromClaim => "FromClaim",
                    };
                    let mut entry = json!({"source": source, "opaque": opaque_json(&c.opaque)});
                    if !c.requests.is_empty() {
                        entry["requests"] = json!(c.requests);
                    }
                    entry
                })
                .collect();
            devices["config"] = json!(config);
        }
        // An unallocated claim has no status worth keeping (it may have none at
        // all, and a JSON patch cannot add below a missing member).
        let status = json!({
            "allocation": {"devices": devices, "nodeSelector": node_selector},
            "reservedFor": [consumer],
        });
        return Some(json!([test, {"op": "add", "path": "/status", "value": status}]));
    }
    let reserve = if write.reserved_for.is_empty() {
        json!({"op": "add", "path": "/status/reservedFor", "value": [consumer]})
    } else {
        json!({"op": "add", "path": "/status/reservedFor/-", "value": consumer})
    };
    Some(json!([test, reserve]))
}

#[cfg(test)]
mod tests;
