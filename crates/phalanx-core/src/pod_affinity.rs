//! Inter-pod affinity and anti-affinity terms, as a pod states them: which
//! pods (selector and namespaces) it wants near or away from, and how near
//! (the node label that names a topology domain).

use std::collections::BTreeMap;

use super::label_selector::{LabelSelector, selects};

/// One `PodAffinityTerm`, with `matchLabelKeys`/`mismatchLabelKeys` already
/// folded into the selector (as the API server does).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodAffinityTerm {
    /// `None`: no `labelSelector`, which selects no pod.
    pub selector: Option<LabelSelector>,
    /// Namespaces named in the term; the pod's own when neither they nor a
    /// namespace selector are given.
    pub namespaces: Vec<String>,
    /// `None`: none given (selects no namespace); an empty one selects all.
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl PodAffinityTerm {
    /// Whether a pod in `namespace` (labelled `namespace_labels`) with
    /// `labels` is one the term is about.
    pub fn selects_pod(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let in_scope = self.namespaces.iter().any(|n| n == namespace)
            || selects(self.namespace_selector.as_ref(), namespace_labels);
        in_scope && selects(self.selector.as_ref(), labels)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub term: PodAffinityTerm,
}

/// `podAffinity` and `podAntiAffinity` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PodAffinity {
    pub required: Vec<PodAffinityTerm>,
    pub preferred: Vec<WeightedPodAffinityTerm>,
    pub required_anti: Vec<PodAffinityTerm>,
    pub preferred_anti: Vec<WeightedPodAffinityTerm>,
}

impl PodAffinity {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
            && self.preferred.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_anti.is_empty()
    }
}
