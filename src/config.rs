//! `deploy/scheduler-config.yaml`: shaped like kube-scheduler's
//! `KubeSchedulerConfiguration`. Loading rejects unknown fields and bad
//! values with an error that names the field, so a typo never silently
//! falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use phalanx_core::dra::inventory::ClassResources;
use phalanx_core::framework::Profile;
use phalanx_core::gang_status::WallClock;
use phalanx_core::plugins::{self, GpuTopologyArgs, InterPodAffinityArgs, NodeResourcesFitArgs, PluginArgs};
use phalanx_core::scheduler;
use phalanx_core::scheduler::BackoffPolicy;
use phalanx_core::scheduler::PreemptionSettings;
use phalanx_core::snapshot::TopologySettings;
use phalanx_core::spread_defaults::{DefaultConstraint, SpreadDefaulting};
use phalanx_core::topology::domains::DomainLevels;
use phalanx_core::topology_spread::WhenUnsatisfiable;

use crate::shell::informers::Served;

pub const API_VERSION: &str = "phalanx.dev/v1alpha1";
pub const KIND: &str = "SchedulerConfiguration";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub client: ClientConnection,
    pub leader_election: LeaderElection,
    pub backoff: BackoffPolicy,
    pub profiles: Vec<ProfileSpec>,
    /// Link table and topology levels (from GpuTopology / TopologyDomain
    /// pluginConfig); they describe the cluster, so all profiles share them.
    pub topology: TopologySettings,
    pub preemption: PreemptionSettings,
    /// The resource each DeviceClass's devices count as in quotas
    /// (`DynamicResources` pluginConfig, `deviceClassResources`).
    pub class_resources: ClassResources,
}

impl SchedulerConfig {
    /// The core scheduler's setup from this configuration, for a cluster
    /// serving these optional APIs, with the driver's wall clock.
    pub fn scheduler(&self, served: &Served, wall_clock: WallClock) -> scheduler::SchedulerConfig {
        scheduler::SchedulerConfig {
            profiles: self.profiles.iter().map(ProfileSpec::build).collect(),
            topology: self.topology.clone(),
            backoff: self.backoff,
            preemption: self.preemption,
            gang_kinds: served.gang_kinds.clone(),
            elastic_quotas: served.elastic_quotas,
            dynamic_resources: served.dynamic_resources,
            volumes: true,
            wall_clock,
            class_resources: self.class_resources.clone(),
        }
    }
}

/// Cluster-wide settings and the field that set each, to report disagreements.
#[derive(Default)]
struct SharedSettings {
    topology: TopologySettings,
    link_bandwidth_from: Option<String>,
    levels_from: Option<String>,
    class_resources: ClassResources,
    class_resources_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClientConnection {
    pub kubeconfig: Option<String>,
    /// Requests per second this client may send to the API server, all writes together.
    pub qps: f64,
    pub burst: u32,
}

impl Default for ClientConnection {
    fn default() -> Self {
        Self { kubeconfig: None, qps: 50.0, burst: 100 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElection {
    pub leader_elect: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_namespace: String,
    pub resource_name: String,
}

/// One profile, by plugin names (validated) and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    pub scheduler_name: String,
    pub filters: Vec<&'static str>,
    pub scores: Vec<(&'static str, i64)>,
    pub args: PluginArgs,
}

impl ProfileSpec {
    pub fn build(&self) -> Profile {
        plugins::build_profile(&self.scheduler_name, &self.filters, &self.scores, &self.args)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    client_connection: ClientConnection,
    #[serde(default)]
    leader_election: RawLeaderElection,
    #[serde(default = "default_initial_backoff")]
    pod_initial_backoff_seconds: u64,
    #[serde(default = "default_max_backoff")]
    pod_max_backoff_seconds: u64,
    #[serde(default)]
    profiles: Vec<RawProfile>,
    #[serde(default)]
    preemption: PreemptionSettings,
}

fn default_initial_backoff() -> u64 {
    1
}

fn default_max_backoff() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawLeaderElection {
    leader_elect: bool,
    lease_duration: String,
    renew_deadline: String,
    retry_period: String,
    resource_namespace: String,
    resource_name: String,
}

impl Default for RawLeaderElection {
    fn default() -> Self {
        Self {
            leader_elect: false,
            lease_duration: "15s".into(),
            renew_deadline: "10s".into(),
            retry_period: "2s".into(),
            resource_namespace: "phalanx-system".into(),
            resource_name: "phalanx".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    scheduler_name: String,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    plugin_config: Vec<RawPluginConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPlugins {
    #[serde(default)]
    queue_sort: PluginSet,
    #[serde(default)]
    filter: PluginSet,
    #[serde(default)]
    score: PluginSet,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PluginSet {
    #[serde(default)]
    enabled: Vec<PluginRef>,
    #[serde(default)]
    disabled: Vec<PluginRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginRef {
    name: String,
    #[serde(default)]
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginConfig {
    name: String,
    #[serde(default)]
    args: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeResourcesFitConfig {
    scoring_strategy: NodeResourcesFitArgs,
}

/// A field path and what is wrong with it, before the file name is attached.
#[derive(Debug, Error)]
#[error("{0}: {1}")]
pub struct FieldError(pub String, pub String);

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError(field.into(), message.into())
}

pub fn load(path: &Path) -> Result<SchedulerConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    from_text(&text, path)
}

/// Parses configuration text; `path` names it in errors.
pub fn from_text(text: &str, path: &Path) -> Result<SchedulerConfig, ConfigError> {
    parse(text).map_err(|FieldError(field, message)| ConfigError::Invalid { path: path.to_path_buf(), field, message })
}

/// The configuration in `text` (the contents of the file `load` reads).
pub fn parse(text: &str) -> Result<SchedulerConfig, FieldError> {
    let raw: RawConfig =
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| {
            // The root, or a key that is itself empty, has no path to name.
            let field = match e.path().to_string() {
                p if p == "." || p.is_empty() => "(document)".to_string(),
                p => p,
            };
            bad(field, e.into_inner().to_string())
        })?;
    if raw.api_version != API_VERSION {
        return Err(bad("apiVersion", format!("must be {API_VERSION}, not {:?}", raw.api_version)));
    }
    if raw.kind != KIND {
        return Err(bad("kind", format!("must be {KIND}, not {:?}", raw.kind)));
    }
    let client = raw.client_connection;
    if !(client.qps.is_finite() && client.qps > 0.0) {
        return Err(bad("clientConnection.qps", format!("must be a positive number, not {}", client.qps)));
    }
    if client.burst == 0 {
        return Err(bad("clientConnection.burst", "must be at least 1"));
    }
    if raw.pod_initial_backoff_seconds == 0 {
        return Err(bad("podInitialBackoffSeconds", "must be at least 1"));
    }
    if raw.pod_max_backoff_seconds < raw.pod_initial_backoff_seconds {
        return Err(bad("podMaxBackoffSeconds", "must not be less than podInitialBackoffSeconds"));
    }
    let leader_election = leader_election(raw.leader_election)?;
    let mut profiles = Vec::new();
    let mut shared = SharedSettings::default();
    for (i, p) in raw.profiles.into_iter().enumerate() {
        let spec = profile(&format!("profiles[{i}]"), p, &mut shared)?;
        if profiles.iter().any(|o: &ProfileSpec| o.scheduler_name == spec.scheduler_name) {
            return Err(bad(
                format!("profiles[{i}].schedulerName"),
                format!("{:?} is used by an earlier profile", spec.scheduler_name),
            ));
        }
        profiles.push(spec);
    }
    if profiles.is_empty() {
        return Err(bad("profiles", "at least one profile is required"));
    }
    Ok(SchedulerConfig {
        client,
        leader_election,
        backoff: BackoffPolicy {
            initial: Duration::from_secs(raw.pod_initial_backoff_seconds),
            max: Duration::from_secs(raw.pod_max_backoff_seconds),
        },
        profiles,
        topology: shared.topology,
        preemption: raw.preemption,
        class_resources: shared.class_resources,
    })
}

fn leader_election(raw: RawLeaderElection) -> Result<LeaderElection, FieldError> {
    let duration = |field: &str, text: &str| {
        parse_duration(text).ok_or_else(|| {
            bad(format!("leaderElection.{field}"), format!("{text:?} is not a duration such as \"15s\" or \"500ms\""))
        })
    };
    let le = LeaderElection {
        leader_elect: raw.leader_elect,
        lease_duration: duration("leaseDuration", &raw.lease_duration)?,
        renew_deadline: duration("renewDeadline", &raw.renew_deadline)?,
        retry_period: duration("retryPeriod", &raw.retry_period)?,
        resource_namespace: raw.resource_namespace,
        resource_name: raw.resource_name,
    };
    // The Lease records its duration in whole seconds.
    if le.lease_duration < Duration::from_secs(1) || le.lease_duration.subsec_nanos() != 0 {
        return Err(bad("leaderElection.leaseDuration", "must be a whole number of seconds, at least 1s"));
    }
    if le.renew_deadline >= le.lease_duration {
        return Err(bad("leaderElection.renewDeadline", "must be shorter than leaseDuration"));
    }
    // A leader needs more than one try at renewing before its deadline.
    if le.retry_period.is_zero() || le.retry_period >= le.renew_deadline {
        return Err(bad("leaderElection.retryPeriod", "must be more than 0 and shorter than renewDeadline"));
    }
    for (field, value) in [("resourceNamespace", &le.resource_namespace), ("resourceName", &le.resource_name)] {
        if value.trim().is_empty() {
            return Err(bad(format!("leaderElection.{field}"), "must not be empty"));
        }
    }
    Ok(le)
}

fn profile(at: &str, raw: RawProfile, shared: &mut SharedSettings) -> Result<ProfileSpec, FieldError> {
    if raw.scheduler_name.trim().is_empty() {
        return Err(bad(format!("{at}.schedulerName"), "must not be empty"));
    }
    let known_filters = plugins::DEFAULT_FILTERS;
    let known_scores: Vec<&'static str> = plugins::DEFAULT_SCORES.iter().map(|(n, _)| *n).collect();

    let queue_sort = resolve(
        &format!("{at}.plugins.queueSort"),
        &raw.plugins.queue_sort,
        plugins::QUEUE_SORT_PLUGINS,
        plugins::QUEUE_SORT_PLUGINS.iter().map(|n| (*n, 0)).collect(),
        false,
    )?;
    if queue_sort.len() != 1 {
        return Err(bad(format!("{at}.plugins.queueSort"), "exactly one queue sort plugin must be enabled"));
    }
    let filters = resolve(
        &format!("{at}.plugins.filter"),
        &raw.plugins.filter,
        known_filters,
        known_filters.iter().map(|n| (*n, 0)).collect(),
        false,
    )?;
    let scores = resolve(
        &format!("{at}.plugins.score"),
        &raw.plugins.score,
        &known_scores,
        plugins::DEFAULT_SCORES.to_vec(),
        true,
    )?;

    let mut args = PluginArgs::default();
    let mut configured: Vec<&str> = Vec::new();
    for (j, pc) in raw.plugin_config.iter().enumerate() {
        let field = format!("{at}.pluginConfig[{j}]");
        if configured.contains(&pc.name.as_str()) {
            return Err(bad(format!("{field}.name"), format!("{:?} is configured twice", pc.name)));
        }
        configured.push(&pc.name);
        match pc.name.as_str() {
            plugins::NodeResourcesFit::NAME => {
                let cfg: NodeResourcesFitConfig = parse_args(&field, &pc.args)?;
                for (k, r) in cfg.scoring_strategy.resources.iter().enumerate() {
                    let rf = format!("{field}.args.scoringStrategy.resources[{k}]");
                    if r.name.is_empty() {
                        return Err(bad(format!("{rf}.name"), "must not be empty"));
                    }
                    if !(1..=100).contains(&r.weight) {
                        return Err(bad(
                            format!("{rf}.weight"),
                            format!("must be between 1 and 100, not {}", r.weight),
                        ));
                    }
                }
                args.node_resources_fit = cfg.scoring_strategy;
            }
            plugins::GpuTopology::NAME => {
                let cfg: GpuTopologyArgs = parse_args(&field, &pc.args)?;
                let table = cfg.link_bandwidth;
                for (name, v) in [
                    ("nvlinkPerLink", table.nvlink_per_link),
                    ("pix", table.pix),
                    ("pxb", table.pxb),
                    ("phb", table.phb),
                    ("node", table.node),
                    ("sys", table.sys),
                ] {
                    positive(&format!("{field}.args.linkBandwidthGBps.{name}"), v)?;
                }
                agree(&field, &mut shared.link_bandwidth_from, shared.topology.link_bandwidth != table)?;
                shared.topology.link_bandwidth = table;
                args.multi_gpu_on_shared = if cfg.multi_gpu_pods_on_shared_nodes {
                    plugins::MultiGpuOnSharedNodes::Allowed
                } else {
                    plugins::MultiGpuOnSharedNodes::KeptOff
                };
            }
            plugins::TopologyDomain::NAME => {
                let levels: DomainLevels = parse_args(&field, &pc.args)?;
                for (k, level) in levels.levels.iter().enumerate() {
                    let lf = format!("{field}.args.levels[{k}]");
                    if level.name.is_empty() || levels.levels[..k].iter().any(|o| o.name == level.name) {
                        return Err(bad(format!("{lf}.name"), "must be non-empty and unique"));
                    }
                    if level.labels.is_empty() || level.labels.iter().any(String::is_empty) {
                        return Err(bad(format!("{lf}.labels"), "name at least one non-empty node label"));
                    }
                    positive(&format!("{lf}.bandwidthGBps"), level.bandwidth_gbps)?;
                }
                positive(&format!("{field}.args.clusterBandwidthGBps"), levels.cluster_bandwidth_gbps)?;
                agree(&field, &mut shared.levels_from, shared.topology.levels != levels)?;
                shared.topology.levels = levels;
            }
            plugins::InterPodAffinity::NAME => {
                let cfg: InterPodAffinityArgs = parse_args(&field, &pc.args)?;
                if !(0..=100).contains(&cfg.hard_pod_affinity_weight) {
                    return Err(bad(
                        format!("{field}.args.hardPodAffinityWeight"),
                        format!("must be between 0 and 100, not {}", cfg.hard_pod_affinity_weight),
                    ));
                }
                args.inter_pod_affinity = cfg;
            }
            plugins::PodTopologySpread::NAME => {
                let cfg: PodTopologySpreadArgs = parse_args(&field, &pc.args)?;
                args.spread_defaulting = cfg.defaulting(&field)?;
            }
            DYNAMIC_RESOURCES => {
                let cfg: DynamicResourcesArgs = parse_args(&field, &pc.args)?;
                for (class, resource) in &cfg.device_class_resources.0 {
                    if class.is_empty() || resource.is_empty() {
                        let at = format!("{field}.args.deviceClassResources");
                        return Err(bad(at, "DeviceClass and resource names must not be empty"));
                    }
                }
                let differs = shared.class_resources != cfg.device_class_resources;
                agree(&field, &mut shared.class_resources_from, differs)?;
                shared.class_resources = cfg.device_class_resources;
            }
            name if known_filters.contains(&name) || known_scores.contains(&name) => {
                if !(pc.args.is_null() || pc.args.as_object().is_some_and(|o| o.is_empty())) {
                    return Err(bad(format!("{field}.args"), format!("plugin {name} takes no arguments")));
                }
            }
            other => {
                return Err(bad(format!("{field}.name"), format!("unknown plugin {other:?}")));
            }
        }
    }
    Ok(ProfileSpec {
        scheduler_name: raw.scheduler_name,
        filters: filters.into_iter().map(|(n, _)| n).collect(),
        scores,
        args,
    })
}

/// DRA allocation is always on; its pluginConfig says how claims count in quotas.
const DYNAMIC_RESOURCES: &str = "DynamicResources";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DynamicResourcesArgs {
    #[serde(default)]
    device_class_resources: ClassResources,
}

/// kube-scheduler's `PodTopologySpreadArgs`: where pods that state no
/// spread constraints get theirs.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct PodTopologySpreadArgs {
    defaulting_type: Option<String>,
    default_constraints: Vec<DefaultConstraintArgs>,
}

/// A default constraint names no selector: each pod's is its workload's.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefaultConstraintArgs {
    max_skew: i32,
    topology_key: String,
    when_unsatisfiable: String,
}

impl PodTopologySpreadArgs {
    fn defaulting(self, field: &str) -> Result<SpreadDefaulting, FieldError> {
        let at = |f: String| format!("{field}.args.{f}");
        match self.defaulting_type.as_deref() {
            None | Some("System") if self.default_constraints.is_empty() => return Ok(SpreadDefaulting::System),
            None | Some("System") => {
                return Err(bad(at("defaultConstraints".into()), "must be empty when defaultingType is System"));
            }
            Some("List") => {}
            Some(other) => {
                return Err(bad(at("defaultingType".into()), format!("must be System or List, not {other:?}")));
            }
        }
        let mut constraints: Vec<DefaultConstraint> = Vec::new();
        for (i, c) in self.default_constraints.into_iter().enumerate() {
            let f = |name: &str| at(format!("defaultConstraints[{i}].{name}"));
            if c.max_skew < 1 {
                return Err(bad(f("maxSkew"), format!("must be at least 1, not {}", c.max_skew)));
            }
            if c.topology_key.is_empty() {
                return Err(bad(f("topologyKey"), "must not be empty"));
            }
            let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
                "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
                other => {
                    let message = format!("must be DoNotSchedule or ScheduleAnyway, not {other:?}");
                    return Err(bad(f("whenUnsatisfiable"), message));
                }
            };
            let same =
                |o: &DefaultConstraint| o.topology_key == c.topology_key && o.when_unsatisfiable == when_unsatisfiable;
            if constraints.iter().any(same) {
                return Err(bad(f("topologyKey"), "repeats another constraint's key and whenUnsatisfiable"));
            }
            constraints.push(DefaultConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key,
                when_unsatisfiable,
            });
        }
        Ok(SpreadDefaulting::List(constraints))
    }
}

fn parse_args<T: serde::de::DeserializeOwned>(field: &str, args: &serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        // The path of the args themselves is ".", not a field below them.
        let at = match e.path().to_string() {
            p if p == "." => format!("{field}.args"),
            p => format!("{field}.args.{p}"),
        };
        bad(at, e.into_inner().to_string())
    })
}

fn positive(field: &str, value: f64) -> Result<(), FieldError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(bad(field, format!("must be a positive number, not {value}")))
    }
}

/// Cluster-wide arguments may be set by several profiles only if they agree.
fn agree(field: &str, set_by: &mut Option<String>, differs: bool) -> Result<(), FieldError> {
    match set_by {
        Some(first) if differs => Err(bad(
            format!("{field}.args"),
            format!("differs from {first}.args; it describes the cluster, the same for every profile"),
        )),
        Some(_) => Ok(()),
        None => {
            *set_by = Some(field.to_string());
            Ok(())
        }
    }
}

/// Applies `disabled` (a name, or "*" for every default) and then `enabled`
/// to the defaults of one extension point, as kube-scheduler does.
fn resolve(
    at: &str,
    set: &PluginSet,
    known: &[&'static str],
    defaults: Vec<(&'static str, i64)>,
    weighted: bool,
) -> Result<Vec<(&'static str, i64)>, FieldError> {
    let lookup = |field: String, name: &str| {
        known
            .iter()
            .copied()
            .find(|k| *k == name)
            .ok_or_else(|| bad(field, format!("unknown plugin {name:?} (known here: {})", known.join(", "))))
    };
    let mut result = defaults;
    for (i, d) in set.disabled.iter().enumerate() {
        if d.name == "*" {
            result.clear();
        } else {
            let name = lookup(format!("{at}.disabled[{i}].name"), &d.name)?;
            result.retain(|(n, _)| *n != name);
        }
    }
    for (i, e) in set.enabled.iter().enumerate() {
        let name = lookup(format!("{at}.enabled[{i}].name"), &e.name)?;
        let weight = match (weighted, e.weight) {
            (false, Some(_)) => {
                return Err(bad(format!("{at}.enabled[{i}].weight"), "only score plugins take a weight"));
            }
            (false, None) => 0,
            (true, None) => 1,
            (true, Some(w)) if (1..=100).contains(&w) => w,
            (true, Some(w)) => {
                return Err(bad(format!("{at}.enabled[{i}].weight"), format!("must be between 1 and 100, not {w}")));
            }
        };
        match result.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = weight,
            None => result.push((name, weight)),
        }
    }
    Ok(result)
}

/// "1m30s", "15s", "500ms", "2h".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MINIMAL: &str =
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles:\n- schedulerName: phalanx\n";

    fn error_of(text: &str) -> (String, String) {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(FieldError(f, m)) => (f, m),
        }
    }

    #[test]
    fn the_shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/scheduler-config.yaml");
        let cfg = load(&path).unwrap();
        assert_eq!(cfg.profiles[0].scheduler_name, "phalanx");
        assert!(cfg.profiles[0].filters.contains(&"NodeResourcesFit"));
    }

    #[test]
    fn defaults_fill_what_is_not_said() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.client, ClientConnection::default());
        assert_eq!(cfg.profiles[0].filters, plugins::DEFAULT_FILTERS);
        assert_eq!(cfg.profiles[0].scores, plugins::DEFAULT_SCORES);
        assert_eq!(cfg.backoff.max, Duration::from_secs(10));
    }

    #[test]
    fn a_profile_may_let_pods_of_several_gpus_onto_shared_nodes() {
        assert_eq!(
            parse(MINIMAL).unwrap().profiles[0].args.multi_gpu_on_shared,
            plugins::MultiGpuOnSharedNodes::KeptOff
        );
        let cfg = parse(&format!(
            "{MINIMAL}  pluginConfig:\n  - name: GpuTopology\n    args: {{multiGpuPodsOnSharedNodes: true}}\n"
        ))
        .unwrap();
        assert_eq!(cfg.profiles[0].args.multi_gpu_on_shared, plugins::MultiGpuOnSharedNodes::Allowed);
    }

    #[test]
    fn inter_pod_plugins_are_on_by_default_and_take_kube_schedulers_arguments() {
        let cfg = parse(&format!(
            "{MINIMAL}  plugins:\n    filter:\n      disabled: [{{name: PodTopologySpread}}]\n  pluginConfig:\n    - name: InterPodAffinity\n      args: {{hardPodAffinityWeight: 7}}\n"
        ))
        .unwrap();
        let profile = &cfg.profiles[0];
        assert!(profile.filters.contains(&"InterPodAffinity") && profile.filters.contains(&"NodePorts"));
        assert!(!profile.filters.contains(&"PodTopologySpread"));
        assert!(profile.scores.contains(&("PodTopologySpread", 2)));
        assert_eq!(profile.args.inter_pod_affinity.hard_pod_affinity_weight, 7);
        let built = profile.build();
        let cluster_filters: Vec<_> = built.cluster_filters.iter().map(|f| f.name()).collect();
        assert_eq!(cluster_filters, ["VolumeRestrictions", "NodeVolumeLimits", "VolumeBinding", "InterPodAffinity"]);
        let err = parse(&format!(
            "{MINIMAL}  pluginConfig:\n    - name: InterPodAffinity\n      args: {{hardPodAffinityWeight: 101}}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("hardPodAffinityWeight"), "{err}");
    }

    #[test]
    fn spread_defaults_are_kube_scheduler_s_unless_the_profile_lists_its_own() {
        assert_eq!(parse(MINIMAL).unwrap().profiles[0].args.spread_defaulting, SpreadDefaulting::System);
        let list = "  pluginConfig:\n    - name: PodTopologySpread\n      args:\n        defaultingType: List\n        defaultConstraints:\n          - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}\n";
        let cfg = parse(&format!("{MINIMAL}{list}")).unwrap();
        let SpreadDefaulting::List(constraints) = &cfg.profiles[0].args.spread_defaulting else { panic!("a list") };
        assert_eq!(constraints.len(), 1);
        assert_eq!((constraints[0].max_skew, constraints[0].when_unsatisfiable), (1, WhenUnsatisfiable::DoNotSchedule));
        for (bad, field) in [
            (
                "{defaultingType: System, defaultConstraints: [{maxSkew: 1, topologyKey: k, whenUnsatisfiable: DoNotSchedule}]}",
                "args.defaultConstraints",
            ),
            ("{defaultingType: Sometimes}", "args.defaultingType"),
            (
                "{defaultingType: List, defaultConstraints: [{maxSkew: 0, topologyKey: k, whenUnsatisfiable: DoNotSchedule}]}",
                "defaultConstraints[0].maxSkew",
            ),
            (
                "{defaultingType: List, defaultConstraints: [{maxSkew: 1, topologyKey: k, whenUnsatisfiable: Never}]}",
                "defaultConstraints[0].whenUnsatisfiable",
            ),
        ] {
            let text = format!("{MINIMAL}  pluginConfig:\n    - name: PodTopologySpread\n      args: {bad}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn device_classes_count_as_the_resources_configured() {
        assert_eq!(parse(MINIMAL).unwrap().class_resources, ClassResources::default());
        let cfg = parse(&format!(
            "{MINIMAL}  pluginConfig:\n  - name: DynamicResources\n    args: {{deviceClassResources: {{gpu.nvidia.com: nvidia.com/gpu, mig.nvidia.com: nvidia.com/mig}}}}\n"
        ))
        .unwrap();
        assert_eq!(cfg.class_resources.0.get("mig.nvidia.com").map(String::as_str), Some("nvidia.com/mig"));
        let (field, message) = error_of(&format!(
            "{MINIMAL}  pluginConfig:\n  - name: DynamicResources\n    args: {{deviceClassResources: {{gpu.nvidia.com: ''}}}}\n"
        ));
        assert_eq!(field, "profiles[0].pluginConfig[0].args.deviceClassResources");
        assert!(message.contains("must not be empty"), "{message}");
    }

    #[test]
    fn disabling_all_then_enabling_some() {
        let cfg = parse(&format!(
            "{MINIMAL}  plugins:\n    score:\n      disabled: [{{name: '*'}}]\n      enabled: [{{name: NodeResourcesFit, weight: 7}}]\n    filter:\n      disabled: [{{name: NodeReady}}]\n"
        ))
        .unwrap();
        assert_eq!(cfg.profiles[0].scores, vec![("NodeResourcesFit", 7)]);
        assert!(!cfg.profiles[0].filters.contains(&"NodeReady"));
    }

    #[rstest]
    #[case("apiVersion: v1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a}]\n", "apiVersion")]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a}]\nbogus: 1\n",
        "bogus"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {qps: fast}\nprofiles: [{schedulerName: a}]\n",
        "clientConnection.qps"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {qps: -5}\nprofiles: [{schedulerName: a}]\n",
        "clientConnection.qps"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, plugins: {filter: {enabled: [{name: Nope}]}}}]\n",
        "profiles[0].plugins.filter.enabled[0].name"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, plugins: {score: {enabled: [{name: NodeAffinity, weight: 0}]}}}]\n",
        "profiles[0].plugins.score.enabled[0].weight"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a}, {schedulerName: a}]\n",
        "profiles[1].schedulerName"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Random, resources: []}}}]}]\n",
        "profiles[0].pluginConfig[0].args.scoringStrategy.type"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: NodeAffinity, args: {x: 1}}]}]\n",
        "profiles[0].pluginConfig[0].args"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaseDuration: soon}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.leaseDuration"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaderElect: true, leaseDuration: 1500ms}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.leaseDuration"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaseDuration: 4s, renewDeadline: 5s}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.renewDeadline"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 3s}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.retryPeriod"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaderElect: true, resourceName: \"\"}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.resourceName"
    )]
    #[case("apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: []\n", "profiles")]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {burst: -1}\nprofiles: [{schedulerName: a}]\n",
        "clientConnection.burst"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {qps: .nan}\nprofiles: [{schedulerName: a}]\n",
        "clientConnection.qps"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\npodInitialBackoffSeconds: ten\nprofiles: [{schedulerName: a}]\n",
        "podInitialBackoffSeconds"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\npodInitialBackoffSeconds: 5\npodMaxBackoffSeconds: 2\nprofiles: [{schedulerName: a}]\n",
        "podMaxBackoffSeconds"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaseDuration: 15}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.leaseDuration"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaseDuration: 99999999999999999999h}\nprofiles: [{schedulerName: a}]\n",
        "leaderElection.leaseDuration"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: {schedulerName: a}\n",
        "profiles"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: '  '}]\n",
        "profiles[0].schedulerName"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: GpuTopology, args: {linkBandwidthGBps: {nvlinkPerLink: fast, pix: 35, pxb: 30, phb: 25, node: 20, sys: 12}}}]}]\n",
        "profiles[0].pluginConfig[0].args.linkBandwidthGBps.nvlinkPerLink"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: GpuTopology, args: {linkBandwidthGBps: {nvlinkPerLink: 25, pix: -35, pxb: 30, phb: 25, node: 20, sys: 12}}}]}]\n",
        "profiles[0].pluginConfig[0].args.linkBandwidthGBps.pix"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: TopologyDomain, args: {clusterBandwidthGBps: 0, levels: []}}]}]\n",
        "profiles[0].pluginConfig[0].args.clusterBandwidthGBps"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: MostAllocated, resources: [{name: cpu, weight: heavy}]}}}]}]\n",
        "profiles[0].pluginConfig[0].args.scoringStrategy.resources[0].weight"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: MostAllocated, resources: [{name: cpu, weight: 1000}]}}}]}]\n",
        "profiles[0].pluginConfig[0].args.scoringStrategy.resources[0].weight"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: NodeAffinity}, {name: NodeAffinity}]}]\n",
        "profiles[0].pluginConfig[1].name"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, pluginConfig: [{name: GpuTopology}]}]\n",
        "profiles[0].pluginConfig[0].args"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, plugins: {queueSort: {disabled: [{name: '*'}]}}}]\n",
        "profiles[0].plugins.queueSort"
    )]
    #[case(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles: [{schedulerName: a, plugins: {bind: {}}}]\n",
        "profiles[0].plugins.bind"
    )]
    fn bad_values_name_their_field(#[case] text: &str, #[case] field: &str) {
        let (f, m) = error_of(text);
        assert_eq!(f, field, "message: {m}");
        assert!(!m.is_empty());
    }

    #[test]
    fn topology_settings_come_from_plugin_config_and_must_agree() {
        let cfg = parse(&format!(
            "{MINIMAL}  pluginConfig:\n  - name: TopologyDomain\n    args:\n      clusterBandwidthGBps: 5\n      levels:\n      - {{name: rack, labels: [example.com/rack], bandwidthGBps: 50}}\n"
        ))
        .unwrap();
        assert_eq!(cfg.topology.levels.levels[0].labels, vec!["example.com/rack"]);
        let two = "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles:\n\
            - {schedulerName: a, pluginConfig: [{name: GpuTopology, args: {linkBandwidthGBps: {nvlinkPerLink: 25, pix: 35, pxb: 30, phb: 25, node: 20, sys: 12}}}]}\n\
            - {schedulerName: b, pluginConfig: [{name: GpuTopology, args: {linkBandwidthGBps: {nvlinkPerLink: 50, pix: 35, pxb: 30, phb: 25, node: 20, sys: 12}}}]}\n";
        let (field, message) = error_of(two);
        assert_eq!(field, "profiles[1].pluginConfig[0].args", "{message}");
        let bad_level = format!(
            "{MINIMAL}  pluginConfig:\n  - name: TopologyDomain\n    args:\n      clusterBandwidthGBps: 5\n      levels:\n      - {{name: rack, labels: [], bandwidthGBps: 50}}\n"
        );
        assert_eq!(error_of(&bad_level).0, "profiles[0].pluginConfig[0].args.levels[0].labels");
    }

    #[test]
    fn leader_election_is_read_with_its_times() {
        let cfg = parse(
            "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nleaderElection: {leaderElect: true, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 500ms, resourceNamespace: ops, resourceName: sched}\nprofiles: [{schedulerName: a}]\n",
        )
        .unwrap();
        let le = cfg.leader_election;
        assert!(le.leader_elect);
        assert_eq!((le.lease_duration, le.renew_deadline), (Duration::from_secs(4), Duration::from_secs(3)));
        assert_eq!(le.retry_period, Duration::from_millis(500));
        assert_eq!((le.resource_namespace.as_str(), le.resource_name.as_str()), ("ops", "sched"));
    }

    #[test]
    fn broken_yaml_names_the_line() {
        let (field, message) = error_of(&format!("{MINIMAL}  plugins: [unclosed\n"));
        assert!(message.contains("line 5"), "{field}: {message}");
        for text in ["", "~", "42", "- a\n- b\n", "\u{0}", "a: &x [*x]\n"] {
            let (field, message) = error_of(text);
            assert!(!field.is_empty() && !message.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn unknown_fields_are_named_in_the_message() {
        let (_, message) = error_of(&format!("{MINIMAL}  pluginConfigs: []\n"));
        assert!(message.contains("unknown field `pluginConfigs`"), "{message}");
    }

    #[rstest]
    #[case("15s", Some(15_000))]
    #[case("1m30s", Some(90_000))]
    #[case("500ms", Some(500))]
    #[case("10", None)]
    #[case("", None)]
    #[case("5d", None)]
    fn durations(#[case] text: &str, #[case] millis: Option<u64>) {
        assert_eq!(parse_duration(text).map(|d| d.as_millis() as u64), millis);
    }

    /// The fuzzer's corpus (`fuzz/corpus/config`), run by the ordinary test suite.
    #[test]
    fn fuzz_corpus_gives_a_config_or_a_field_error() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/config");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if let Err(FieldError(field, message)) = parse(&String::from_utf8_lossy(&std::fs::read(&path).unwrap())) {
                assert!(!field.is_empty() && !message.is_empty(), "{}", path.display());
            }
            count += 1;
        }
        assert!(count >= 4, "only {count} files in {dir}");
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_a_config_or_a_field_error(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
