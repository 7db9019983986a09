//! PodDisruptionBudgets, as preemption reads them: which placed pods a
//! budget covers and how many of them may still be disrupted.

use std::collections::BTreeMap;

use super::pod::SelectorRequirement;

/// `matchLabels` and `matchExpressions`; an empty selector selects every pod
/// of the namespace (policy/v1 semantics).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.holds(labels.get(&r.key).map(String::as_str)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DisruptionBudget {
    pub namespace: String,
    pub name: String,
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: u32,
}

impl DisruptionBudget {
    pub fn covers(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.selector.matches(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::SelectorOperator;

    #[test]
    fn a_budget_covers_pods_of_its_namespace_its_selector_matches() {
        let budget = DisruptionBudget {
            namespace: "a".into(),
            name: "pdb".into(),
            selector: LabelSelector {
                match_labels: [("app".to_string(), "train".to_string())].into(),
                match_expressions: vec![SelectorRequirement { key: "tier".into(), operator: SelectorOperator::Exists }],
            },
            disruptions_allowed: 0,
        };
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "train".to_string()), ("tier".to_string(), "gold".to_string())].into();
        assert!(budget.covers("a", &labels));
        assert!(!budget.covers("b", &labels));
        assert!(!budget.covers("a", &[("app".to_string(), "train".to_string())].into()));
        let everything = DisruptionBudget { selector: LabelSelector::default(), ..budget };
        assert!(everything.covers("a", &BTreeMap::new()));
    }
}
