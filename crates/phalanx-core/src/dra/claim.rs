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
