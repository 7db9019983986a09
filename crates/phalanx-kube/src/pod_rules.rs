//! Translates what a pod says about other pods: its `hostPort`s, its
//! inter-pod affinity and anti-affinity, and its topology spread
//! constraints. Bad values come back as errors naming the pod and the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm as K8sAffinityTerm, PodSpec, TopologySpreadConstraint,
    WeightedPodAffinityTerm as K8sWeightedTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use phalanx_core::host_port::{ANY_ADDRESS, HostPort, PortProtocol};
use phalanx_core::label_selector::LabelSelector;
use phalanx_core::pod::{SelectorOperator, SelectorRequirement};
use phalanx_core::pod_affinity::{PodAffinity, PodAffinityTerm, WeightedPodAffinityTerm};
use phalanx_core::topology_spread::{InclusionPolicy, SpreadConstraint, WhenUnsatisfiable};

use crate::translate::{TranslateError, error, selector_requirement};

/// Who the pod is, for namespace defaults, `matchLabelKeys` and messages.
pub(crate) struct PodContext<'a> {
    pub object: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The `hostPort`s of the containers and of the sidecars (init containers
/// that keep running), the ones kube-scheduler's NodePorts counts.
pub(crate) fn host_ports(spec: &PodSpec, object: &str) -> Result<Vec<HostPort>, TranslateError> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| c.restart_policy.as_deref() == Some("Always"));
    let containers = spec.containers.iter().enumerate().map(|(i, c)| (format!("spec.containers[{i}]"), c));
    let all = containers.chain(sidecars.map(|(i, c)| (format!("spec.initContainers[{i}]"), c)));
    let mut out = Vec::new();
    for (field, container) in all {
        for (j, p) in container.ports.iter().flatten().enumerate() {
            let field = format!("{field}.ports[{j}]");
            let Some(port) = p.host_port.filter(|p| *p != 0) else { continue };
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| error(object, format!("{field}.hostPort"), format!("{port} is not a port number")))?;
            let protocol = match p.protocol.as_deref() {
                None | Some("") | Some("TCP") => PortProtocol::Tcp,
                Some("UDP") => PortProtocol::Udp,
                Some("SCTP") => PortProtocol::Sctp,
                Some(other) => {
                    return Err(error(object, format!("{field}.protocol"), format!("unknown protocol {other:?}")));
                }
            };
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| ANY_ADDRESS.to_string());
            out.push(HostPort { ip, protocol, port });
        }
    }
    Ok(out)
}

/// `matchLabels` and `matchExpressions`, as one list of requirements.
pub(crate) fn label_selector(s: &K8sLabelSelector, object: &str, field: &str) -> Result<LabelSelector, TranslateError> {
    let labels = s.match_labels.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut requirements = LabelSelector::equal_to(labels).requirements;
    for (i, r) in s.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let requirement = selector_requirement(&r.key, &r.operator, r.values.as_deref(), false, object, &f)?;
        let values = r.values.as_ref().map_or(0, Vec::len);
        match &requirement.operator {
            SelectorOperator::In(_) | SelectorOperator::NotIn(_) if values == 0 => {
                return Err(error(object, format!("{f}.values"), "must be non-empty for In and NotIn"));
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if values > 0 => {
                return Err(error(object, format!("{f}.values"), "must be empty for Exists and DoesNotExist"));
            }
            _ => {}
        }
        requirements.push(requirement);
    }
    Ok(LabelSelector { requirements })
}

/// `matchLabelKeys` (`In`) or `mismatchLabelKeys` (`NotIn`): the pod's own
/// value of each key it has, added to the selector as the API server does.
fn add_label_keys(
    selector: &mut Option<LabelSelector>,
    keys: Option<&Vec<String>>,
    pod: &PodContext<'_>,
    operator: fn(Vec<String>) -> SelectorOperator,
) {
    let Some(selector) = selector else { return };
    for key in keys.into_iter().flatten() {
        if let Some(value) = pod.labels.get(key) {
            selector
                .requirements
                .push(SelectorRequirement { key: key.clone(), operator: operator(vec![value.clone()]) });
        }
    }
}

fn topology_key(key: &str, object: &str, field: &str) -> Result<String, TranslateError> {
    if key.is_empty() {
        return Err(error(object, format!("{field}.topologyKey"), "must not be empty"));
    }
    Ok(key.to_string())
}

fn affinity_term(t: &K8sAffinityTerm, pod: &PodContext<'_>, field: &str) -> Result<PodAffinityTerm, TranslateError> {
    let object = pod.object;
    let mut selector =
        t.label_selector.as_ref().map(|s| label_selector(s, object, &format!("{field}.labelSelector"))).transpose()?;
    add_label_keys(&mut selector, t.match_label_keys.as_ref(), pod, SelectorOperator::In);
    add_label_keys(&mut selector, t.mismatch_label_keys.as_ref(), pod, SelectorOperator::NotIn);
    let namespace_selector = t
        .namespace_selector
        .as_ref()
        .map(|s| label_selector(s, object, &format!("{field}.namespaceSelector")))
        .transpose()?;
    let mut namespaces = t.namespaces.clone().unwrap_or_default();
    if namespaces.is_empty() && namespace_selector.is_none() {
        namespaces.push(pod.namespace.to_string());
    }
    Ok(PodAffinityTerm {
        selector,
        namespaces,
        namespace_selector,
        topology_key: topology_key(&t.topology_key, object, field)?,
    })
}

fn required_terms(
    terms: Option<&Vec<K8sAffinityTerm>>,
    pod: &PodContext<'_>,
    field: &str,
) -> Result<Vec<PodAffinityTerm>, TranslateError> {
    let field = format!("{field}.requiredDuringSchedulingIgnoredDuringExecution");
    terms.into_iter().flatten().enumerate().map(|(i, t)| affinity_term(t, pod, &format!("{field}[{i}]"))).collect()
}

fn preferred_terms(
    terms: Option<&Vec<K8sWeightedTerm>>,
    pod: &PodContext<'_>,
    field: &str,
) -> Result<Vec<WeightedPodAffinityTerm>, TranslateError> {
    let field = format!("{field}.preferredDuringSchedulingIgnoredDuringExecution");
    terms
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            let f = format!("{field}[{i}]");
            if !(1..=100).contains(&w.weight) {
                return Err(error(
                    pod.object,
                    format!("{f}.weight"),
                    format!("must be between 1 and 100, not {}", w.weight),
                ));
            }
            Ok(WeightedPodAffinityTerm {
                weight: w.weight,
                term: affinity_term(&w.pod_affinity_term, pod, &format!("{f}.podAffinityTerm"))?,
            })
        })
        .collect()
}

pub(crate) fn pod_affinity(affinity: Option<&Affinity>, pod: &PodContext<'_>) -> Result<PodAffinity, TranslateError> {
    let near = affinity.and_then(|a| a.pod_affinity.as_ref());
    let away = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    let (near_field, away_field) = ("spec.affinity.podAffinity", "spec.affinity.podAntiAffinity");
    Ok(PodAffinity {
        required: required_terms(
            near.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            pod,
            near_field,
        )?,
        preferred: preferred_terms(
            near.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            pod,
            near_field,
        )?,
        required_anti: required_terms(
            away.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            pod,
            away_field,
        )?,
        preferred_anti: preferred_terms(
            away.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            pod,
            away_field,
        )?,
    })
}

fn inclusion_policy(
    value: Option<&str>,
    default: InclusionPolicy,
    object: &str,
    field: String,
) -> Result<InclusionPolicy, TranslateError> {
    match value {
        None | Some("") => Ok(default),
        Some("Honor") => Ok(InclusionPolicy::Honor),
        Some("Ignore") => Ok(InclusionPolicy::Ignore),
        Some(other) => Err(error(object, field, format!("unknown policy {other:?}; Honor or Ignore"))),
    }
}

pub(crate) fn spread_constraints(
    constraints: Option<&Vec<TopologySpreadConstraint>>,
    pod: &PodContext<'_>,
) -> Result<Vec<SpreadConstraint>, TranslateError> {
    let object = pod.object;
    constraints
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("spec.topologySpreadConstraints[{i}]");
            if c.max_skew < 1 {
                return Err(error(
                    object,
                    format!("{field}.maxSkew"),
                    format!("must be at least 1, not {}", c.max_skew),
                ));
            }
            let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
                "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
                other => {
                    return Err(error(
                        object,
                        format!("{field}.whenUnsatisfiable"),
                        format!("unknown value {other:?}; DoNotSchedule or ScheduleAnyway"),
                    ));
                }
            };
            let min_domains = match c.min_domains {
                Some(n) if n < 1 => {
                    return Err(error(object, format!("{field}.minDomains"), format!("must be at least 1, not {n}")));
                }
                other => other.unwrap_or(1),
            };
            let mut selector = c
                .label_selector
                .as_ref()
                .map(|s| label_selector(s, object, &format!("{field}.labelSelector")))
                .transpose()?;
            add_label_keys(&mut selector, c.match_label_keys.as_ref(), pod, SelectorOperator::In);
            Ok(SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: topology_key(&c.topology_key, object, &field)?,
                when_unsatisfiable,
                selector,
                min_domains,
                node_affinity_policy: inclusion_policy(
                    c.node_affinity_policy.as_deref(),
                    InclusionPolicy::Honor,
                    object,
                    format!("{field}.nodeAffinityPolicy"),
                )?,
                node_taints_policy: inclusion_policy(
                    c.node_taints_policy.as_deref(),
                    InclusionPolicy::Ignore,
                    object,
                    format!("{field}.nodeTaintsPolicy"),
                )?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use phalanx_core::pod::PodInfo;
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;
    use crate::translate::pod_info;

    fn translate(spec: Value) -> Result<PodInfo, TranslateError> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "w-0", "namespace": "team-a", "uid": "u1", "labels": {"app": "web", "rev": "7"}},
            "spec": spec,
        }))
        .unwrap();
        pod_info(&pod)
    }

    fn term(extra: Value) -> Value {
        let mut t = json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"});
        t.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        t
    }

    #[test]
    fn affinity_terms_default_to_the_pods_namespace_and_fold_in_label_keys() {
        let info = translate(json!({"containers": [{"name": "a"}], "affinity": {
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"matchLabelKeys": ["rev", "absent"], "mismatchLabelKeys": ["app"]}))]},
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 30, "podAffinityTerm": term(json!({"namespaceSelector": {}}))}]}}}))
        .unwrap();
        let anti = &info.affinity.required_anti[0];
        assert_eq!(anti.namespaces, ["team-a"]);
        let keys: Vec<(&str, &SelectorOperator)> =
            anti.selector.as_ref().unwrap().requirements.iter().map(|r| (r.key.as_str(), &r.operator)).collect();
        assert_eq!(
            keys,
            [
                ("app", &SelectorOperator::In(vec!["web".into()])),
                ("rev", &SelectorOperator::In(vec!["7".into()])),
                ("app", &SelectorOperator::NotIn(vec!["web".into()])),
            ]
        );
        let preferred = &info.affinity.preferred[0];
        assert_eq!(preferred.weight, 30);
        assert!(preferred.term.namespaces.is_empty(), "a namespace selector replaces the default");
        assert_eq!(preferred.term.namespace_selector, Some(LabelSelector::default()), "empty: every namespace");
    }

    #[test]
    fn spread_constraints_and_host_ports_translate_with_kube_defaults() {
        let info = translate(json!({
            "containers": [{"name": "a", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
                {"containerPort": 9000}]}],
            "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}},
                "matchLabelKeys": ["rev"]}]}))
        .unwrap();
        assert_eq!(
            info.host_ports,
            [
                HostPort { ip: ANY_ADDRESS.into(), protocol: PortProtocol::Tcp, port: 8080 },
                HostPort { ip: "10.0.0.1".into(), protocol: PortProtocol::Udp, port: 53 },
            ]
        );
        let c = &info.spread[0];
        assert_eq!((c.max_skew, c.min_domains, c.when_unsatisfiable), (2, 1, WhenUnsatisfiable::ScheduleAnyway));
        assert_eq!((c.node_affinity_policy, c.node_taints_policy), (InclusionPolicy::Honor, InclusionPolicy::Ignore));
        assert_eq!(c.selector.as_ref().unwrap().requirements.len(), 2, "rev folded in");
    }

    #[rstest]
    #[case(
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term(json!({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}))]}}}),
        "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator"
    )]
    #[case(
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(json!({"topologyKey": ""}))]}}}),
        "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"
    )]
    #[case(
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term(json!({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}))]}}}),
        "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].values"
    )]
    #[case(
        json!({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}),
        "spec.topologySpreadConstraints[0].maxSkew"
    )]
    #[case(
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule"}]}),
        "spec.topologySpreadConstraints[0].topologyKey"
    )]
    #[case(
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}]}),
        "spec.topologySpreadConstraints[0].whenUnsatisfiable"
    )]
    #[case(
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "nodeTaintsPolicy": "Maybe"}]}),
        "spec.topologySpreadConstraints[0].nodeTaintsPolicy"
    )]
    fn bad_rules_name_the_pod_and_the_field(#[case] mut spec: Value, #[case] field: &str) {
        spec["containers"] = json!([{"name": "a"}]);
        let err = translate(spec).unwrap_err();
        assert_eq!((err.object.as_str(), err.field.as_str()), ("pod team-a/w-0", field), "{err}");
    }

    #[test]
    fn host_ports_out_of_range_or_of_unknown_protocol_are_refused() {
        let err = translate(json!({"containers": [{"name": "a", "ports": [{"containerPort": 1, "hostPort": 70000}]}]}))
            .unwrap_err();
        assert_eq!(err.field, "spec.containers[0].ports[0].hostPort");
        let err = translate(
            json!({"containers": [{"name": "a", "ports": [{"containerPort": 1, "hostPort": 7, "protocol": "QUIC"}]}]}),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.containers[0].ports[0].protocol");
    }
}
