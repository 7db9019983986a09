//! What inter-pod rules look up in the snapshot without walking all of it:
//! placed pods by namespace (affinity terms and spread constraints select
//! pods of named namespaces), those that carry affinity terms, and how many
//! nodes carry each value of each label (the topology domains).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::pod_affinity::PodAffinity;

#[derive(Debug, Default)]
pub(crate) struct InterPodIndex {
    by_namespace: HashMap<String, HashSet<String>>,
    with_affinity: HashSet<String>,
    /// How many of those have required anti-affinity, which can reject any pod.
    with_required_anti: usize,
    /// Label key -> value -> nodes (with a Node object) labelled so.
    label_values: HashMap<String, HashMap<String, usize>>,
}

impl InterPodIndex {
    pub fn placed(&mut self, uid: &str, namespace: &str, affinity: &PodAffinity) {
        self.by_namespace.entry(namespace.to_string()).or_default().insert(uid.to_string());
        if !affinity.is_empty() {
            self.with_affinity.insert(uid.to_string());
            if !affinity.required_anti.is_empty() {
                self.with_required_anti += 1;
            }
        }
    }

    pub fn released(&mut self, uid: &str, namespace: &str, affinity: &PodAffinity) {
        if let Some(uids) = self.by_namespace.get_mut(namespace) {
            uids.remove(uid);
            if uids.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
        if self.with_affinity.remove(uid) && !affinity.required_anti.is_empty() {
            self.with_required_anti -= 1;
        }
    }

    /// A node's labels appeared (`by` 1) or went (`by` -1).
    pub fn node_labels(&mut self, labels: &BTreeMap<String, String>, by: isize) {
        for (key, value) in labels {
            let values = self.label_values.entry(key.clone()).or_default();
            let nodes = values.entry(value.clone()).or_default();
            *nodes = nodes.saturating_add_signed(by);
            if *nodes == 0 {
                values.remove(value);
                if values.is_empty() {
                    self.label_values.remove(key);
                }
            }
        }
    }

    pub fn namespace_pods(&self, namespace: &str) -> impl Iterator<Item = &str> {
        self.by_namespace.get(namespace).into_iter().flatten().map(String::as_str)
    }

    pub fn pods_with_affinity(&self) -> impl Iterator<Item = &str> {
        self.with_affinity.iter().map(String::as_str)
    }

    pub fn has_required_anti_affinity(&self) -> bool {
        self.with_required_anti > 0
    }

    /// How many distinct values of the label the nodes carry.
    pub fn label_value_count(&self, key: &str) -> usize {
        self.label_values.get(key).map_or(0, HashMap::len)
    }
}
