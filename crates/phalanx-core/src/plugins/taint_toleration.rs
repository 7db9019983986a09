//! Taints and tolerations: a NoSchedule or NoExecute taint keeps every pod
//! that does not tolerate it away; PreferNoSchedule only lowers the score.

use crate::framework::{FilterPlugin, Rejection, ScoreContext, ScorePlugin, normalize_to_max};
use crate::node::{NodeInfo, NodeSpec, Taint, TaintEffect};
use crate::pod::{PodInfo, Toleration, TolerationOperator};

pub struct TaintToleration;

impl TaintToleration {
    pub const NAME: &'static str = "TaintToleration";
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_matches = t.effect.is_none_or(|e| e == taint.effect);
        let key_matches = t.key.as_deref().is_none_or(|k| k == taint.key);
        let value_matches = match &t.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal(v) => *v == taint.value,
        };
        effect_matches && key_matches && value_matches
    })
}

/// Cordoned and not-ready nodes keep away every pod that does not tolerate
/// the NoSchedule taint Kubernetes names for that condition.
pub fn reject_unless_tolerated(pod: &PodInfo, taint_key: &str, reason: &str) -> Result<(), Rejection> {
    let taint = Taint { key: taint_key.into(), value: String::new(), effect: TaintEffect::NoSchedule };
    if tolerates(&pod.tolerations, &taint) { Ok(()) } else { Err(Rejection::because(reason)) }
}

/// The first NoSchedule or NoExecute taint of the node the pod does not tolerate.
pub fn untolerated_taint<'n>(pod: &PodInfo, node: &'n NodeSpec) -> Option<&'n Taint> {
    node.taints
        .iter()
        .find(|taint| taint.effect != TaintEffect::PreferNoSchedule && !tolerates(&pod.tolerations, taint))
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeSpec, _: &NodeInfo) -> Result<(), Rejection> {
        match untolerated_taint(pod, node) {
            Some(taint) => {
                Err(Rejection::because(format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value)))
            }
            None => Ok(()),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn node_local(&self) -> bool {
        true
    }

    fn score(&self, ctx: &ScoreContext<'_>, node: &NodeSpec, _: &NodeInfo) -> i64 {
        let pod = ctx.pod;
        node.taints
            .iter()
            .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerates(&pod.tolerations, t))
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint { key: key.into(), value: value.into(), effect }
    }

    fn toleration(key: Option<&str>, op: TolerationOperator, effect: Option<TaintEffect>) -> Toleration {
        Toleration { key: key.map(Into::into), operator: op, effect }
    }

    #[rstest]
    #[case(toleration(Some("gpu"), TolerationOperator::Equal("true".into()), Some(TaintEffect::NoSchedule)), true)]
    #[case(toleration(Some("gpu"), TolerationOperator::Equal("false".into()), None), false)]
    #[case(toleration(Some("gpu"), TolerationOperator::Exists, None), true)]
    #[case(toleration(Some("gpu"), TolerationOperator::Exists, Some(TaintEffect::NoExecute)), false)]
    #[case(toleration(None, TolerationOperator::Exists, None), true)]
    #[case(toleration(Some("other"), TolerationOperator::Exists, None), false)]
    fn toleration_matching(#[case] t: Toleration, #[case] expected: bool) {
        assert_eq!(tolerates(&[t], &taint("gpu", "true", TaintEffect::NoSchedule)), expected);
    }
}
