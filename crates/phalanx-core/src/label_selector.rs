//! Label selectors over pods and namespaces (`matchLabels` and
//! `matchExpressions`, the former folded into the latter).

use std::collections::BTreeMap;

use super::pod::{SelectorOperator, SelectorRequirement};

/// Every requirement must hold: an empty selector matches all labels. A
/// selector that is absent where Kubernetes allows one matches nothing
/// (`Option<LabelSelector>::None`), as `LabelSelectorAsSelector(nil)` does.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LabelSelector {
    pub requirements: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// `matchLabels`: each label must have its value.
    pub fn equal_to<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let requirements = labels
            .into_iter()
            .map(|(key, value)| SelectorRequirement {
                key: key.to_string(),
                operator: SelectorOperator::In(vec![value.to_string()]),
            })
            .collect();
        Self { requirements }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.holds(labels.get(&r.key).map(String::as_str)))
    }
}

/// Whether an optional selector (absent: nothing) matches.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_some_and(|s| s.matches(labels))
}
