//! Gangs: pods that are placed together or not at all. A gang is named by
//! where its size comes from (DESIGN.md, in this order of precedence): a
//! scheduler-plugins PodGroup, an upstream `scheduling.k8s.io` PodGroup, a
//! Kubeflow PyTorchJob, a JobSet, a LeaderWorkerSet group; a pod with none of
//! these is a gang of one.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum GangKind {
    /// `scheduling.x-k8s.io/v1alpha1` PodGroup, named by the pod label.
    PodGroup,
    /// `scheduling.k8s.io` PodGroup, named by `spec.schedulingGroup.podGroupName`.
    UpstreamPodGroup,
    /// A `kubeflow.org/v1` PyTorchJob owning the pod.
    PyTorchJob,
    /// A `jobset.x-k8s.io` JobSet, named by the pod label
    /// `jobset.sigs.k8s.io/jobset-name`: all its jobs' pods are one gang.
    JobSet,
    /// One group of a `leaderworkerset.x-k8s.io` LeaderWorkerSet (its leader
    /// and workers), named by the pod labels `leaderworkerset.sigs.k8s.io/name`
    /// and `group-index`: each group is a gang of the set's group size.
    LeaderWorkerSet,
}

impl GangKind {
    /// The object's kind, as users write it.
    pub fn object_kind(self) -> &'static str {
        match self {
            GangKind::PodGroup | GangKind::UpstreamPodGroup => "PodGroup",
            GangKind::PyTorchJob => "PyTorchJob",
            GangKind::JobSet => "JobSet",
            GangKind::LeaderWorkerSet => "LeaderWorkerSet",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            GangKind::PodGroup => "scheduling.x-k8s.io/v1alpha1",
            GangKind::UpstreamPodGroup => "scheduling.k8s.io/v1beta1",
            GangKind::PyTorchJob => "kubeflow.org/v1",
            GangKind::JobSet => "jobset.x-k8s.io/v1alpha2",
            GangKind::LeaderWorkerSet => "leaderworkerset.x-k8s.io/v1",
        }
    }
}

/// The object a gang's pods name, and for an object with several gangs (a
/// LeaderWorkerSet's groups) which of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct GangId {
    pub kind: GangKind,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

impl GangId {
    pub fn new(kind: GangKind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_string(), name: name.to_string(), group: None }
    }

    /// Group `group` of the object.
    pub fn group_of(kind: GangKind, namespace: &str, name: &str, group: u32) -> Self {
        Self { group: Some(group), ..Self::new(kind, namespace, name) }
    }

    /// The object that sizes this gang (for a group, its whole set).
    pub fn object(&self) -> GangId {
        Self { group: None, ..self.clone() }
    }
}

impl fmt::Display for GangId {
    /// "PodGroup team-a/llama", "LeaderWorkerSet team-a/vllm group 2"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.object_kind(), self.namespace, self.name)?;
        match self.group {
            Some(group) => write!(f, " group {group}"),
            None => Ok(()),
        }
    }
}

/// What the gang's object asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GangSpec {
    /// Pods that must all have a place before any of them binds.
    pub min_member: usize,
    /// How long a placement may be tried before the gang is marked failed to schedule.
    pub schedule_timeout: Option<Duration>,
    /// How many pods will ever exist, where the owner says (a job's replicas).
    pub max_member: Option<usize>,
    /// The object's UID, for Events about it.
    pub uid: Option<String>,
    /// A node label whose value every member's node must share (an upstream
    /// PodGroup's `schedulingConstraints.topology`): the gang is placed
    /// within one such domain or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_domain: Option<String>,
    /// What the object already says of its first placement (an upstream
    /// PodGroup's `PodGroupInitiallyScheduled` condition, final once True).
    #[serde(default)]
    pub initial_scheduling: InitialScheduling,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InitialScheduling {
    #[default]
    NotYet,
    Done,
}

impl GangSpec {
    pub fn of_size(min_member: usize) -> Self {
        Self {
            min_member,
            schedule_timeout: None,
            max_member: None,
            uid: None,
            required_domain: None,
            initial_scheduling: InitialScheduling::NotYet,
        }
    }
}

/// Why a gang's object cannot be used: names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{gang}: {field} {problem}")]
pub struct InvalidGang {
    pub gang: GangId,
    /// The object's UID, for Events about it.
    pub uid: Option<String>,
    pub field: String,
    pub problem: String,
}

/// What is known about a gang's object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GangObject {
    Valid(GangSpec),
    Invalid(InvalidGang),
}

impl GangObject {
    pub fn uid(&self) -> Option<&str> {
        match self {
            GangObject::Valid(spec) => spec.uid.as_deref(),
            GangObject::Invalid(invalid) => invalid.uid.as_deref(),
        }
    }
}
