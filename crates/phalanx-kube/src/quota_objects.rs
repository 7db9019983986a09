//! Translates the objects that limit a namespace (ElasticQuotas,
//! ResourceQuotas) and protect its pods (PodDisruptionBudgets) into the
//! core's `ElasticQuota`, `HardQuota` and `DisruptionBudget`. Bad values come
//! back as errors naming the object and field, as in `translate`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::api::elastic_quota::ElasticQuota as ElasticQuotaObject;
use crate::translate::{TranslateError, amount, error, selector_requirement};
use phalanx_core::disruption::{DisruptionBudget, LabelSelector};
pub use phalanx_core::quota::Quota;
use phalanx_core::quota::{ElasticQuota, HardQuota, Limits};
use phalanx_core::resources::{CPU, MEMORY, PODS};

/// "elasticquota team-a/quota": how errors name an object.
fn object_name(kind: &str, object: &impl ResourceExt) -> String {
    format!("{kind} {}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// A resource list as limits: cpu in millicores, the rest in units.
fn limits(list: Option<&BTreeMap<String, Quantity>>, object: &str, field: &str) -> Result<Limits, TranslateError> {
    let mut limits = Limits::default();
    for (resource, q) in list.into_iter().flatten() {
        let value = amount(resource, q).map_err(|e| error(object, format!("{field}[{resource}]"), e.to_string()))?;
        limits.0.insert(resource.clone(), value);
    }
    Ok(limits)
}

/// `spec.min` and `spec.max`; a min above the max of the same resource is an
/// error, as scheduler-plugins' validation has it.
pub fn elastic_quota(quota: &ElasticQuotaObject) -> Result<ElasticQuota, TranslateError> {
    let object = object_name("elasticquota", quota);
    let min = limits(quota.spec.min.as_ref(), &object, "spec.min")?;
    let max = limits(quota.spec.max.as_ref(), &object, "spec.max")?;
    for (resource, low) in &min.0 {
        if let Some(high) = max.get(resource)
            && *low > high
        {
            let text = |list: &Option<BTreeMap<String, Quantity>>| {
                list.as_ref().and_then(|l| l.get(resource)).map(|q| q.0.clone()).unwrap_or_default()
            };
            return Err(error(
                &object,
                format!("spec.min[{resource}]"),
                format!("{} is above spec.max[{resource}] ({})", text(&quota.spec.min), text(&quota.spec.max)),
            ));
        }
    }
    Ok(ElasticQuota { namespace: quota.namespace().unwrap_or_default(), name: quota.name_any(), min, max })
}

/// The resource a ResourceQuota key limits the requests of: `requests.X`
/// and the bare `cpu`, `memory` and `ephemeral-storage` limit requests of X,
/// `pods` the number of pods. Limits (`limits.*`), object counts (`count/*`,
/// `services`, ...) and storage classes are not scheduling's business.
fn requested_resource(key: &str) -> Option<&str> {
    match key {
        CPU | MEMORY | "ephemeral-storage" | PODS => Some(key),
        _ => key.strip_prefix("requests.").filter(|r| !r.is_empty()),
    }
}

/// `spec.hard`, keeping only limits on requests. A quota with `scopes` or a
/// `scopeSelector` covers only some of the namespace's pods, which the core
/// cannot tell apart: it limits nothing here (the API server still enforces
/// it when pods are created).
pub fn resource_quota(quota: &ResourceQuota) -> Result<HardQuota, TranslateError> {
    let object = object_name("resourcequota", quota);
    let mut hard = Limits::default();
    let spec = quota.spec.as_ref();
    let scoped = spec.is_some_and(|s| s.scopes.as_ref().is_some_and(|v| !v.is_empty()) || s.scope_selector.is_some());
    if !scoped {
        for (key, q) in spec.and_then(|s| s.hard.as_ref()).into_iter().flatten() {
            let Some(resource) = requested_resource(key) else { continue };
            let value = amount(resource, q).map_err(|e| error(&object, format!("spec.hard[{key}]"), e.to_string()))?;
            // `cpu` and `requests.cpu` limit the same thing: the lower holds.
            let limit = hard.0.entry(resource.to_string()).or_insert(value);
            *limit = (*limit).min(value);
        }
    }
    Ok(HardQuota { namespace: quota.namespace().unwrap_or_default(), name: quota.name_any(), hard })
}

/// The budget with its selector and `status.disruptionsAllowed` (0 until the
/// disruption controller has counted). `None`: the budget has no selector
/// and so protects no pod (policy/v1); an empty selector protects them all.
pub fn disruption_budget(budget: &PodDisruptionBudget) -> Result<Option<DisruptionBudget>, TranslateError> {
    let object = object_name("poddisruptionbudget", budget);
    let Some(selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("spec.selector.matchExpressions[{i}]");
            selector_requirement(&r.key, &r.operator, r.values.as_deref(), false, &object, &field)
        })
        .collect::<Result<_, _>>()?;
    let allowed = budget.status.as_ref().and_then(|s| s.disruptions_allowed).unwrap_or(0);
    Ok(Some(DisruptionBudget {
        namespace: budget.namespace().unwrap_or_default(),
        name: budget.name_any(),
        selector: LabelSelector { match_labels: selector.match_labels.clone().unwrap_or_default(), match_expressions },
        disruptions_allowed: u32::try_from(allowed).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_core::pod::{SelectorOperator, SelectorRequirement};
    use phalanx_core::resources::GPU;
    use serde_json::json;

    fn object<K: serde::de::DeserializeOwned>(body: serde_json::Value) -> K {
        let mut value = json!({"metadata": {"name": "quota", "namespace": "team-a", "uid": "u1"}});
        value.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    fn limits_of(pairs: &[(&str, i64)]) -> Limits {
        Limits(pairs.iter().map(|(r, v)| (r.to_string(), *v)).collect())
    }

    #[test]
    fn an_elastic_quota_gives_min_and_max_in_core_units() {
        let eq: ElasticQuotaObject = object(json!({"spec": {
            "min": {"nvidia.com/gpu": 16, "cpu": "500m"},
            "max": {"nvidia.com/gpu": "32", "cpu": 2, "memory": "1Gi"},
        }}));
        let quota = elastic_quota(&eq).unwrap();
        assert_eq!((quota.namespace.as_str(), quota.name.as_str()), ("team-a", "quota"));
        assert_eq!(quota.min, limits_of(&[(GPU, 16), (CPU, 500)]));
        assert_eq!(quota.max, limits_of(&[(GPU, 32), (CPU, 2000), (MEMORY, 1 << 30)]));
        let empty = elastic_quota(&object::<ElasticQuotaObject>(json!({"spec": {}}))).unwrap();
        assert_eq!((empty.min, empty.max), (Limits::default(), Limits::default()), "nothing named, nothing limited");
    }

    #[test]
    fn bad_elastic_quotas_name_the_field() {
        let negative: ElasticQuotaObject = object(json!({"spec": {"max": {"nvidia.com/gpu": "-1"}}}));
        assert_eq!(
            elastic_quota(&negative).unwrap_err().to_string(),
            "elasticquota team-a/quota: spec.max[nvidia.com/gpu]: \"-1\" is negative"
        );
        let absurd: ElasticQuotaObject = object(json!({"spec": {"max": {"nvidia.com/gpu": "1e30"}}}));
        assert_eq!(
            elastic_quota(&absurd).unwrap_err().to_string(),
            "elasticquota team-a/quota: spec.max[nvidia.com/gpu]: \"1e30\" is too large"
        );
        let huge: ElasticQuotaObject = object(json!({"spec": {"max": {"memory": "7Ei"}}}));
        assert_eq!(elastic_quota(&huge).unwrap().max.get(MEMORY), Some(7 << 60), "large but representable");
        let garbage: ElasticQuotaObject = object(json!({"spec": {"min": {"cpu": "lots"}}}));
        assert_eq!(elastic_quota(&garbage).unwrap_err().field, "spec.min[cpu]");
        let inverted: ElasticQuotaObject =
            object(json!({"spec": {"min": {"nvidia.com/gpu": 40}, "max": {"nvidia.com/gpu": 32}}}));
        let err = elastic_quota(&inverted).unwrap_err();
        assert_eq!(err.field, "spec.min[nvidia.com/gpu]");
        assert_eq!(err.message, "40 is above spec.max[nvidia.com/gpu] (32)");
    }

    #[test]
    fn a_resource_quota_keeps_only_limits_on_requests() {
        let rq: ResourceQuota = object(json!({"spec": {"hard": {
            "requests.nvidia.com/gpu": "8",
            "requests.cpu": "10",
            "cpu": "4",
            "memory": "2Gi",
            "pods": 20,
            "limits.cpu": "100",
            "limits.nvidia.com/gpu": "64",
            "count/jobs.batch": "5",
            "services": "3",
            "gold.storageclass.storage.k8s.io/requests.storage": "1Ti",
        }}}));
        let quota = resource_quota(&rq).unwrap();
        assert_eq!(quota.hard, limits_of(&[(GPU, 8), (CPU, 4000), (MEMORY, 2 << 30), (PODS, 20)]));
        let bad: ResourceQuota = object(json!({"spec": {"hard": {"requests.nvidia.com/gpu": "eight"}}}));
        assert_eq!(
            resource_quota(&bad).unwrap_err().to_string(),
            "resourcequota team-a/quota: spec.hard[requests.nvidia.com/gpu]: \"eight\" is not a quantity (expected a number with an optional suffix such as m, Ki, Gi, k, M, G)"
        );
        // Limits other than requests are never read, so never wrong.
        let ignored: ResourceQuota = object(json!({"spec": {"hard": {"limits.cpu": "-1"}}}));
        assert_eq!(resource_quota(&ignored).unwrap().hard, Limits::default());
    }

    #[test]
    fn a_scoped_resource_quota_limits_nothing() {
        let rq: ResourceQuota =
            object(json!({"spec": {"hard": {"requests.nvidia.com/gpu": "8"}, "scopes": ["BestEffort"]}}));
        assert_eq!(resource_quota(&rq).unwrap().hard, Limits::default());
        let rq: ResourceQuota = object(json!({"spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["low"]}]}}}));
        assert_eq!(resource_quota(&rq).unwrap().hard, Limits::default());
    }

    #[test]
    fn a_disruption_budget_gives_its_selector_and_allowed_disruptions() {
        let pdb: PodDisruptionBudget = object(json!({
            "spec": {"maxUnavailable": 0, "selector": {
                "matchLabels": {"app": "train"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            }},
            "status": {"disruptionsAllowed": 2, "currentHealthy": 4, "desiredHealthy": 2, "expectedPods": 4},
        }));
        let budget = disruption_budget(&pdb).unwrap().unwrap();
        assert_eq!(budget.disruptions_allowed, 2);
        assert_eq!(budget.selector.match_labels, [("app".to_string(), "train".to_string())].into());
        assert_eq!(
            budget.selector.match_expressions,
            vec![
                SelectorRequirement {
                    key: "tier".into(),
                    operator: SelectorOperator::In(vec!["gold".into(), "silver".into()])
                },
                SelectorRequirement { key: "canary".into(), operator: SelectorOperator::DoesNotExist },
            ]
        );
        let labels: BTreeMap<String, String> =
            [("app", "train"), ("tier", "gold")].map(|(k, v)| (k.into(), v.into())).into();
        assert!(budget.covers("team-a", &labels));
    }

    #[test]
    fn a_budget_without_status_allows_nothing_and_without_selector_covers_nothing() {
        let fresh: PodDisruptionBudget = object(json!({"spec": {"maxUnavailable": 0, "selector": {}}}));
        let budget = disruption_budget(&fresh).unwrap().unwrap();
        assert_eq!(budget.disruptions_allowed, 0);
        assert!(budget.covers("team-a", &BTreeMap::new()), "an empty selector covers every pod");
        let unselective: PodDisruptionBudget = object(json!({"spec": {"minAvailable": 1}}));
        assert_eq!(disruption_budget(&unselective).unwrap(), None);
    }

    #[test]
    fn bad_budget_selectors_name_the_field() {
        let pdb: PodDisruptionBudget = object(json!({"spec": {"selector": {"matchExpressions": [
            {"key": "a", "operator": "Exists"},
            {"key": "rank", "operator": "Gt", "values": ["3"]},
        ]}}}));
        assert_eq!(
            disruption_budget(&pdb).unwrap_err().to_string(),
            "poddisruptionbudget team-a/quota: spec.selector.matchExpressions[1].operator: unknown operator \"Gt\""
        );
    }
}
