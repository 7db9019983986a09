//! What a DRA driver publishes about a node's devices (ResourceSlices), as
//! the allocator reads it: names, typed attributes and capacities.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// An attribute's value, typed as `resource.k8s.io/v1` types them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum AttributeValue {
    Int(i64),
    Bool(bool),
    String(String),
    /// A semantic version, as written ("1.2.3").
    Version(String),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Int(v) => write!(f, "{v}"),
            AttributeValue::Bool(v) => write!(f, "{v}"),
            AttributeValue::String(v) | AttributeValue::Version(v) => write!(f, "{v}"),
        }
    }
}

/// A fully qualified attribute or capacity name: `domain/name`. Names a
/// driver publishes without a domain belong to the driver's own domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct QualifiedName {
    pub domain: String,
    pub name: String,
}

impl QualifiedName {
    /// Reads `domain/name`, or `name` in `default_domain`.
    pub fn parse(text: &str, default_domain: &str) -> Self {
        match text.rsplit_once('/') {
            Some((domain, name)) => Self { domain: domain.to_string(), name: name.to_string() },
            None => Self { domain: default_domain.to_string(), name: text.to_string() },
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.name)
    }
}

/// The standard attributes that tie a device to the node's hardware.
pub const PCI_BUS_ID: &str = "resource.kubernetes.io/pciBusID";
pub const PCIE_ROOT: &str = "resource.kubernetes.io/pcieRoot";
pub const NUMA_NODE: &str = "resource.kubernetes.io/numaNode";

/// Where a device is published: driver, pool and name identify it in a claim's allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct DeviceId {
    pub driver: String,
    pub pool: String,
    pub device: String,
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.driver, self.pool, self.device)
    }
}

/// Devices held on one node, with how many allocations hold each (more than
/// one only while a conflicting write is being resolved).
pub type HeldDevices = HashMap<DeviceId, u32>;

/// One device of a ResourceSlice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub attributes: BTreeMap<QualifiedName, AttributeValue>,
    /// Capacities in base units (bytes for memory), as quantities are read.
    pub capacity: BTreeMap<QualifiedName, i64>,
}

impl Device {
    /// An attribute by its fully qualified name (`domain/name`; a bare
    /// name is in the driver's domain). A scan: devices have a handful of
    /// attributes, and this runs for every device of every candidate node.
    pub fn attribute(&self, qualified: &str) -> Option<&AttributeValue> {
        let (domain, name) = qualified.rsplit_once('/').unwrap_or((self.id.driver.as_str(), qualified));
        self.attributes.iter().find(|(k, _)| k.name == name && k.domain == domain).map(|(_, v)| v)
    }

    /// The attribute as a string (`uuid`, `pciBusID`, `pcieRoot`).
    pub fn text_attribute(&self, qualified: &str) -> Option<&str> {
        match self.attribute(qualified)? {
            AttributeValue::String(s) | AttributeValue::Version(s) => Some(s),
            _ => None,
        }
    }
}

/// The devices one ResourceSlice publishes for one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSlice {
    /// The ResourceSlice's name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    pub driver: String,
    pub pool: String,
    pub devices: Vec<Device>,
}
