//! What pods ask for through DRA: DeviceClasses, ResourceClaims with their
//! requests and constraints, and the allocation a claim's status records.

use std::fmt;

use super::device::DeviceId;

/// A DeviceClass: which devices it covers (CEL selectors, all must hold).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceClass {
    pub name: String,
    pub selectors: Vec<String>,
    /// `spec.extendedResourceName`: pods asking for this resource are served by the class.
    pub extended_resource_name: Option<String>,
    /// `spec.config`: passed on to the driver with every allocation from the class.
    pub config: Vec<OpaqueConfig>,
}

/// A driver's own parameters (`config[].opaque`), kept as JSON text: the
/// scheduler only passes them on to the driver in the allocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpaqueConfig {
    pub driver: String,
    pub parameters: String,
}

/// One `spec.devices.config[]` of a claim: for some of its requests (none named: all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimConfig {
    pub requests: Vec<String>,
    pub opaque: OpaqueConfig,
}

/// Where an allocated config came from (`FromClass` configs are not the user's to set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigSource {
    FromClass,
    FromClaim,
}

/// One `status.allocation.devices.config[]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllocatedConfig {
    pub source: ConfigSource,
    pub requests: Vec<String>,
    pub opaque: OpaqueConfig,
}

/// How many matching devices a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AllocationMode {
    ExactCount(u32),
    /// Every matching device of the node (at least one).
    All,
}

/// `exactly` (or one `firstAvailable` alternative): devices of a class, narrowed by selectors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSelection {
    pub device_class: String,
    pub selectors: Vec<String>,
    pub mode: AllocationMode,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RequestKind {
    Exactly(DeviceSelection),
    /// Alternatives in order of preference (`firstAvailable`), with their names.
    FirstAvailable(Vec<(String, DeviceSelection)>),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRequest {
    pub name: String,
    pub kind: RequestKind,
}

impl DeviceRequest {
    /// The selections it may be satisfied by.
    pub fn selections(&self) -> Vec<&DeviceSelection> {
        match &self.kind {
            RequestKind::Exactly(selection) => vec![selection],
            RequestKind::FirstAvailable(subs) => subs.iter().map(|(_, s)| s).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConstraintKind {
    /// Every device takes the same value of this attribute (`domain/name`).
    MatchAttribute(String),
    /// No two devices take the same value of this attribute.
    DistinctAttribute(String),
}

/// A constraint over the devices of some requests (empty: all of the claim's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceConstraint {
    pub requests: Vec<String>,
    pub kind: ConstraintKind,
}

impl DeviceConstraint {
    /// Whether the constraint covers the request (`parent` or `parent/sub`).
    pub fn covers(&self, request: &str) -> bool {
        let parent = request.split_once('/').map_or(request, |(p, _)| p);
        self.requests.is_empty() || self.requests.iter().any(|r| r == request || r == parent)
    }
}

/// One device given to a request (`status.allocation.devices.results[]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceResult {
    /// The request's name (`request/subrequest` for a `firstAvailable` choice).
    pub request: String,
    pub device: DeviceId,
}

/// `status.allocation` as far as scheduling reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimAllocation {
    /// The node the devices are on (the allocation's node selector).
    pub node: String,
    pub results: Vec<DeviceResult>,
    /// What the drivers are given with the devices (classes' and the claim's configs).
    pub config: Vec<AllocatedConfig>,
}

impl ClaimAllocation {
    /// Whether both give the same devices on the same node (configs aside).
    pub fn same_devices(&self, other: &ClaimAllocation) -> bool {
        self.node == other.node && self.results == other.results
    }
}

/// Namespace and name of a ResourceClaim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ClaimKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A ResourceClaim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceClaim {
    pub key: ClaimKey,
    pub uid: String,
    /// The version read (a write of the allocation is conditional on it).
    pub resource_version: Option<String>,
    pub requests: Vec<DeviceRequest>,
    pub constraints: Vec<DeviceConstraint>,
    pub allocation: Option<ClaimAllocation>,
    /// UIDs of the pods the claim is reserved for.
    pub reserved_for: Vec<String>,
    /// `metadata.finalizers`: an allocation is written together with the
    /// one that lets the controller manager deallocate the claim.
    pub finalizers: Vec<String>,
    /// `spec.devices.config`.
    pub config: Vec<ClaimConfig>,
}

impl DeviceClaim {
    /// The class a result's request (`request` or `request/subrequest`) draws from.
    pub fn class_of(&self, request: &str) -> Option<&str> {
        let (parent, sub) = match request.split_once('/') {
            Some((parent, sub)) => (parent, Some(sub)),
            None => (request, None),
        };
        let found = self.requests.iter().find(|r| r.name == parent)?;
        match (&found.kind, sub) {
            (RequestKind::Exactly(s), None) => Some(&s.device_class),
            (RequestKind::FirstAvailable(subs), Some(sub)) => {
                subs.iter().find(|(name, _)| name == sub).map(|(_, s)| s.device_class.as_str())
            }
            _ => None,
        }
    }

    /// What an allocation of this claim with `results` passes on to the
    /// drivers, as kube-scheduler writes it: each class's configs once,
    /// naming the requests allocated from it, then the claim's configs that
    /// apply to all requests or name one that was allocated.
    pub fn allocation_config(
        &self,
        classes: &std::collections::HashMap<String, DeviceClass>,
        results: &[DeviceResult],
    ) -> Vec<AllocatedConfig> {
        let mut config: Vec<AllocatedConfig> = Vec::new();
        let mut from_class: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
        let mut requests: Vec<&str> = Vec::new();
        for result in results {
            let request = result.request.as_str();
            if requests.contains(&request) {
                continue;
            }
            requests.push(request);
            let Some(class) = self.class_of(request).and_then(|c| classes.get(c)) else { continue };
            match from_class.iter().find(|(name, _)| *name == class.name) {
                Some((_, range)) => {
                    for entry in &mut config[range.clone()] {
                        entry.requests.push(request.to_string());
                    }
                }
                None => {
                    let start = config.len();
                    config.extend(class.config.iter().map(|opaque| AllocatedConfig {
                        source: ConfigSource::FromClass,
                        requests: vec![request.to_string()],
                        opaque: opaque.clone(),
                    }));
                    from_class.push((&class.name, start..config.len()));
                }
            }
        }
        let allocated =
            |name: &String| requests.iter().any(|r| r == name || r.split_once('/').is_some_and(|(p, _)| p == name));
        config.extend(self.config.iter().filter(|c| c.requests.is_empty() || c.requests.iter().any(allocated)).map(
            |c| AllocatedConfig {
                source: ConfigSource::FromClaim,
                requests: c.requests.clone(),
                opaque: c.opaque.clone(),
            },
        ));
        config
    }
}

/// How a pod names one of its claims (`spec.resourceClaims[]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PodClaimSource {
    /// The claim is known: `resourceClaimName`, or the claim the controller
    /// manager made from the template (`status.resourceClaimStatuses`).
    Claim(String),
    /// Made from this template, but the claim is not recorded on the pod yet.
    PendingTemplate(String),
    /// The controller recorded that no claim is needed (no name in the status).
    NotNeeded,
}

/// One entry of a pod's `spec.resourceClaims`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PodClaim {
    /// The entry's name in the pod.
    pub name: String,
    pub source: PodClaimSource,
}
