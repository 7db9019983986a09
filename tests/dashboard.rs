//! The Grafana dashboard (deploy/grafana/phalanx.json) against the metrics
//! phalanx registers: every series a query names is one phalanx exposes, and
//! every metric phalanx registers is on some panel.

use std::collections::{BTreeSet, HashMap, HashSet};

use phalanx::shell::metrics::{Metrics, QuotaUsage, ResultLabels};
use prometheus_client::registry::Registry;
use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/phalanx.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every metric family phalanx registers, with its type where the text
/// exposition shows it. Families with labels are exposed only once they hold
/// a series, so one sample is recorded through each recording method first;
/// the names themselves come from the registry's Debug form, which lists
/// every registered family, sampled or not.
fn families() -> Vec<(String, Option<String>)> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.attempt("scheduled", "phalanx", 0.01);
    metrics.set_pending("active", 1);
    metrics.bind_duration.get_or_create(&ResultLabels { result: "bound".into() }).observe(0.01);
    metrics.eviction("evicted");
    metrics.preemption("evicted", 2);
    metrics.set_gangs_waiting("quota", 1);
    metrics.set_quota_usage(&[QuotaUsage {
        namespace: "team-a".into(),
        resource: "nvidia.com/gpu".into(),
        used: 8,
        borrowed: 0,
    }]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let types: HashMap<&str, &str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' ')).collect();
    let debug = format!("{registry:?}");
    assert!(debug.contains("Prefix(\"phalanx\")"), "metrics are registered under the phalanx prefix");
    debug
        .split("Descriptor { name: \"")
        .skip(1)
        .map(|rest| {
            let name = format!("phalanx_{}", &rest[..rest.find('"').expect("closing quote")]);
            let kind = types.get(name.as_str()).map(|k| k.to_string());
            (name, kind)
        })
        .collect()
}

/// The series names a family is queried by (any of a sample's forms when
/// its type is unknown).
fn series(name: &str, kind: Option<&str>) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        Some("counter") => &["_total"],
        Some("histogram") => &["_bucket", "_sum", "_count"],
        Some(_) => &[""],
        None => &["", "_total", "_bucket", "_sum", "_count"],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

/// Every PromQL expression of the dashboard (panel targets and variable
/// queries), with where it is.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr =
                target["expr"].as_str().unwrap_or_else(|| panic!("panel {}: a target without expr", panel["title"]));
            out.push((format!("panel {}", panel["title"]), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if var["type"] == "query" {
            out.push((
                format!("variable {}", var["name"]),
                var["definition"].as_str().expect("definition").to_string(),
            ));
        }
    }
    out
}

/// The `phalanx_*` identifiers of an expression, outside quoted strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("phalanx_") {
            names.insert(word.clone());
        }
        word.clear();
    }
    names
}

#[test]
fn every_series_the_dashboard_queries_is_one_phalanx_exposes() {
    let families = families();
    let typed = families.iter().filter(|(_, kind)| kind.is_some()).count();
    assert!(typed >= 12, "the exposition shows the families' types: {families:?}");
    let exposed: HashSet<String> = families.iter().flat_map(|(name, kind)| series(name, kind.as_deref())).collect();
    let dashboard = dashboard();
    let expressions = expressions(&dashboard);
    assert!(!expressions.is_empty());
    for (place, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no phalanx metric in {expr}");
        for name in names {
            assert!(exposed.contains(&name), "{place}: {name} is not a series phalanx exposes ({expr})");
        }
    }
}

#[test]
fn every_metric_phalanx_registers_is_on_a_panel() {
    let dashboard = dashboard();
    let queried: BTreeSet<String> = expressions(&dashboard)
        .iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    for (name, kind) in families() {
        assert!(
            series(&name, kind.as_deref()).iter().any(|s| queried.contains(s)),
            "{name} ({kind:?}) is registered but no panel of deploy/grafana/phalanx.json shows it"
        );
    }
}

#[test]
fn panels_have_unique_ids_a_place_and_the_datasource_variable() {
    let dashboard = dashboard();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()), "a stable uid, so re-imports replace it");
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    let mut ids = HashSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        assert!(ids.insert(panel["id"].as_u64().expect("numeric id")), "panel {title}: id repeated");
        let grid = &panel["gridPos"];
        for field in ["h", "w", "x", "y"] {
            assert!(grid[field].is_u64(), "panel {title}: gridPos.{field}");
        }
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "panel {title}: wider than the grid");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}: the datasource variable");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().unwrap();
            for used in expr.split('$').skip(1) {
                let name: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(
                    name.starts_with("__")
                        || name.chars().all(|c| c.is_ascii_digit())
                        || variables.contains(&name.as_str()),
                    "panel {title}: ${name} is not a variable of the dashboard"
                );
            }
        }
    }
}

#[test]
fn metric_names_are_read_outside_quotes_only() {
    let names = metric_names(r#"sum(rate(phalanx_a_total{x="phalanx_not_a_metric"}[5m])) / phalanx_b"#);
    assert_eq!(names, BTreeSet::from(["phalanx_a_total".to_string(), "phalanx_b".to_string()]));
}
