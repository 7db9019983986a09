//! What one case is made of, in the generator's own terms: nodes, pods
//! already bound, storage, and the probe pods whose feasibility both
//! schedulers decide. The checker reads these, never the API objects, so it
//! shares no code with either scheduler.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

pub const ZONE: &str = "agreement.phalanx.dev/zone";
pub const RACK: &str = "agreement.phalanx.dev/rack";
pub const DISK: &str = "agreement.phalanx.dev/disk";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// The label of the second namespace, which namespace selectors pick.
pub const TEAM: &str = "agreement.phalanx.dev/team";

#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub nodes: Vec<NodeModel>,
    /// Pods bound before any probe (with `nodeName`, as another scheduler would).
    pub bound: Vec<PodModel>,
    /// Claims bound to volumes before any probe, shared by the probes.
    pub bound_claims: Vec<BoundClaim>,
    pub probes: Vec<PodModel>,
}

#[derive(Clone, Debug)]
pub struct NodeModel {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub cpu_milli: u64,
    pub memory_mi: u64,
    pub max_pods: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Clone, Debug)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

#[derive(Clone, Debug)]
pub struct Toleration {
    /// `None` with `Exists`: every key.
    pub key: Option<String>,
    /// `None`: operator Exists.
    pub value: Option<String>,
    /// `None`: every effect.
    pub effect: Option<Effect>,
}

#[derive(Clone, Debug)]
pub enum Operator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

/// Requirements that must all hold (a node selector term, or a label
/// selector's expressions).
pub type Requirements = Vec<Requirement>;

#[derive(Clone, Debug)]
pub enum Namespaces {
    /// The namespace of the pod that carries the term.
    Own,
    Listed(Vec<String>),
    /// Namespaces whose labels include these (`{}`: every namespace).
    Selected(Labels),
}

#[derive(Clone, Debug)]
pub struct PodTerm {
    pub selector: Requirements,
    pub namespaces: Namespaces,
    pub topology_key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InclusionPolicy {
    Honor,
    Ignore,
}

#[derive(Clone, Debug)]
pub struct Spread {
    pub max_skew: u32,
    pub topology_key: String,
    pub selector: Requirements,
    /// Label keys whose values on the pod are added to the selector.
    pub match_label_keys: Vec<String>,
    pub min_domains: Option<u32>,
    pub node_affinity_policy: Option<InclusionPolicy>,
    pub node_taints_policy: Option<InclusionPolicy>,
    /// `DoNotSchedule`; otherwise `ScheduleAnyway`, which never filters.
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub port: u16,
    pub protocol: &'static str,
    /// `None`: every address.
    pub host_ip: Option<&'static str>,
}

#[derive(Clone, Debug)]
pub struct PodModel {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    /// Set for bound pods.
    pub node: Option<String>,
    pub cpu_milli: u64,
    pub memory_mi: u64,
    pub host_ports: Vec<HostPort>,
    pub node_selector: Labels,
    /// Required node affinity: any term, all of its requirements.
    pub node_terms: Vec<Requirements>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Vec<PodTerm>,
    pub anti_affinity: Vec<PodTerm>,
    pub spread: Vec<Spread>,
    pub volumes: Vec<VolumeUse>,
}

/// A claim bound to a volume before the probes, with the volume's node affinity.
#[derive(Clone, Debug)]
pub struct BoundClaim {
    pub name: String,
    pub read_write_once_pod: bool,
    /// The volume's required node affinity, if any.
    pub volume_affinity: Option<Requirement>,
}

/// How a pod uses storage.
#[derive(Clone, Debug)]
pub enum VolumeUse {
    /// One of the case's bound claims.
    Bound(String),
    /// A claim of an `Immediate` class that nothing binds.
    UnboundImmediate,
    /// A claim of a `WaitForFirstConsumer` class without a provisioner, and
    /// local volumes (one node each) it could be bound to.
    LocalVolumes { request_gi: u32, volumes: Vec<LocalVolume> },
    /// A claim of a `WaitForFirstConsumer` class with a provisioner that may
    /// only make volumes in these zones (`None`: anywhere), and where the
    /// provisioner publishes its capacity, the room it has per zone.
    Provisioned { request_gi: u32, allowed_zones: Option<Vec<String>>, capacity: Option<Vec<ZoneRoom>> },
}

/// A CSIStorageCapacity for the nodes of one zone.
#[derive(Clone, Debug)]
pub struct ZoneRoom {
    pub zone: String,
    pub capacity_gi: u32,
    pub maximum_volume_gi: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct LocalVolume {
    pub node: String,
    pub size_gi: u32,
}
