//! `nodeSelector` and node affinity: required terms filter, preferred terms score.

use crate::framework::{FilterPlugin, Rejection, ScoreContext, ScorePlugin, normalize_to_max};
use crate::node::{NodeInfo, NodeSpec};
use crate::pod::{NodeSelectorTerm, PodInfo};

pub struct NodeAffinity;

impl NodeAffinity {
    pub const NAME: &'static str = "NodeAffinity";
}

/// An empty term matches no node, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeSpec) -> bool {
    if term.match_labels.is_empty() && term.match_node_name.is_empty() {
        return false;
    }
    term.match_labels.iter().all(|r| r.holds(node.labels.get(&r.key).map(String::as_str)))
        && term.match_node_name.iter().all(|r| r.holds(Some(node.name.as_str())))
}

/// Whether the node passes the pod's `nodeSelector` and required node affinity.
pub fn pod_may_go_to(pod: &PodInfo, node: &NodeSpec) -> bool {
    let selector_ok = pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    selector_ok && (pod.required_terms.is_empty() || pod.required_terms.iter().any(|t| term_matches(t, node)))
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        if pod_may_go_to(pod, node) {
            Ok(())
        } else {
            Err(Rejection::because("node(s) didn't match Pod's node affinity/selector"))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn node_local(&self) -> bool {
        true
    }

    fn score(&self, ctx: &ScoreContext<'_>, node: &NodeSpec, _: &NodeInfo) -> i64 {
        ctx.pod.preferred_terms.iter().filter(|p| term_matches(&p.term, node)).map(|p| i64::from(p.weight)).sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{SelectorOperator, SelectorRequirement};
    use rstest::rstest;

    fn node_with(labels: &[(&str, &str)]) -> NodeSpec {
        NodeSpec {
            name: "n1".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn req(key: &str, operator: SelectorOperator) -> SelectorRequirement {
        SelectorRequirement { key: key.into(), operator }
    }

    #[rstest]
    #[case(req("rack", SelectorOperator::In(vec!["r1".into(), "r2".into()])), true)]
    #[case(req("rack", SelectorOperator::NotIn(vec!["r1".into()])), false)]
    #[case(req("zone", SelectorOperator::NotIn(vec!["z".into()])), true)]
    #[case(req("rack", SelectorOperator::Exists), true)]
    #[case(req("zone", SelectorOperator::DoesNotExist), true)]
    #[case(req("gpus", SelectorOperator::Gt(4)), true)]
    #[case(req("gpus", SelectorOperator::Lt(8)), false)]
    #[case(req("rack", SelectorOperator::Gt(1)), false)]
    fn label_requirements(#[case] r: SelectorRequirement, #[case] expected: bool) {
        let node = node_with(&[("rack", "r1"), ("gpus", "8")]);
        let term = NodeSelectorTerm { match_labels: vec![r], match_node_name: vec![] };
        assert_eq!(term_matches(&term, &node), expected);
    }

    #[test]
    fn empty_term_matches_nothing_and_name_fields_match_the_name() {
        let node = node_with(&[]);
        assert!(!term_matches(&NodeSelectorTerm::default(), &node));
        let by_name = NodeSelectorTerm {
            match_labels: vec![],
            match_node_name: vec![req("metadata.name", SelectorOperator::In(vec!["n1".into()]))],
        };
        assert!(term_matches(&by_name, &node));
    }
}
