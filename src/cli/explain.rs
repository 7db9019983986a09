//! `phalanx explain node/NAME [--dot]`: a node's GPU topology and who holds
//! which GPU, from what the API server has (the node's GPUTopology resource,
//! else the template its labels select).
//!
//! `phalanx explain NAMESPACE/NAME [--scheduler URL]`: why a gang waits, or
//! where it runs. Asks a running scheduler's `/explain` endpoint when given
//! one that answers; otherwise lists the cluster into the scheduler's own
//! state (its informers and loop, with nothing bound or written) and runs the
//! same explanation there.

use std::path::PathBuf;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use phalanx::api::gpu_topology::GPUTopology;
use phalanx::config;
use phalanx::core::framework::Profile;
use phalanx::core::gang_scheduler::GangScheduler;
use phalanx::core::plugins::default_profile;
use phalanx::core::pod::PodKey;
use phalanx::core::queue::{BackoffPolicy, SchedulingQueue};
use phalanx::core::snapshot::ClusterSnapshot;
use phalanx::explain::{GangExplanation, NodeReport, PodGpus, Target, render_gang, render_node};
use phalanx::shell::informers;
use phalanx::shell::leader_election::Leadership;
use phalanx::shell::metrics::Metrics;
use phalanx::shell::reporter::Report;
use phalanx::shell::scheduling_loop::{BindRequests, Evictions, Reports, SchedulingLoop};
use phalanx::shell::translate::{node_spec, pod_info, topology_report};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What `phalanx explain` was asked.
pub struct ExplainOptions {
    pub kubeconfig: Option<PathBuf>,
    pub target: String,
    pub dot: bool,
    pub config: Option<PathBuf>,
    pub scheduler: Option<String>,
    pub json: bool,
}

pub async fn run(options: ExplainOptions) -> anyhow::Result<()> {
    match options.target.strip_prefix("node/") {
        Some(node) => explain_node(options.kubeconfig, node, options.dot, options.config).await,
        None => explain_gang(options).await,
    }
}

async fn explain_gang(options: ExplainOptions) -> anyhow::Result<()> {
    let target: Target = options.target.parse()?;
    if let Some(url) = &options.scheduler {
        match ask_scheduler(url, &target, options.json).await {
            Ok(body) => {
                print!("{body}");
                return Ok(());
            }
            Err(SchedulerAnswer::Refused(status, body)) => bail!("{url} answered {status}: {}", body.trim()),
            Err(SchedulerAnswer::Unreachable(e)) => {
                eprintln!("scheduler at {url} did not answer ({e:#}); explaining from the cluster's objects instead");
            }
        }
    }
    let explanation = explain_from_cluster(&options, &target).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", render_gang(&explanation));
    }
    Ok(())
}

enum SchedulerAnswer {
    /// It answered, but not with an explanation (404 for an unknown gang).
    Refused(u16, String),
    Unreachable(anyhow::Error),
}

/// `GET URL/explain/TARGET` over plain HTTP/1.0 (the endpoint is served in
/// the cluster's network, without TLS).
async fn ask_scheduler(url: &str, target: &Target, json: bool) -> Result<String, SchedulerAnswer> {
    let unreachable = |e: anyhow::Error| SchedulerAnswer::Unreachable(e);
    let rest = url.strip_prefix("http://").ok_or_else(|| unreachable(anyhow!("only http:// URLs are supported")))?;
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let format = if json { "json" } else { "text" };
    let base = base.trim_matches('/');
    let prefix = if base.is_empty() { String::new() } else { format!("/{base}") };
    let path = format!("{prefix}/explain/{target}?format={format}");
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.context("sending the request")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.context("reading the answer")?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header in the answer")?;
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
        anyhow::Ok((status, body.to_string()))
    };
    let (status, body) = tokio::time::timeout(SCHEDULER_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(anyhow!("no answer within {SCHEDULER_TIMEOUT:?}")))?
        .map_err(unreachable)?;
    match status {
        200 => Ok(body),
        // Not ready yet, or stopping: the cluster's objects still tell.
        503 => Err(unreachable(anyhow!("{}", body.trim()))),
        _ => Err(SchedulerAnswer::Refused(status, body)),
    }
}

const SCHEDULER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds, reports and evictions go nowhere: explaining changes nothing.
struct Nothing;

impl BindRequests for Nothing {
    fn bind(&self, _: String, _: PodKey, _: String, _: Vec<u32>) {}
}

impl Reports for Nothing {
    fn send(&self, _: Report) {}
}

impl Evictions for Nothing {
    fn evict(&self, _: String, _: PodKey, _: String) {}
}

/// The scheduler's state as its informers list it, with nothing scheduled:
/// queue positions come from the pending gangs' order, and no node is held.
async fn explain_from_cluster(options: &ExplainOptions, target: &Target) -> anyhow::Result<GangExplanation> {
    let cfg = options.config.as_deref().map(config::load).transpose()?;
    let profiles: Vec<Profile> = match &cfg {
        Some(cfg) => cfg.profiles.iter().map(config::ProfileSpec::build).collect(),
        None => vec![default_profile("phalanx")],
    };
    let client = super::client(options.kubeconfig.as_deref()).await?;
    let names: HashSet<String> = profiles.iter().map(|p| p.scheduler_name.clone()).collect();
    let served = informers::Served::discover(&client).await;
    let metrics = Metrics::register(&mut Registry::default());
    let (event_tx, mut event_rx) = mpsc::channel(8192);
    informers::spawn(client, Arc::new(names), &served, metrics.clone(), Leadership::always(), event_tx);
    let snapshot = ClusterSnapshot::with_settings(cfg.as_ref().map(|c| c.topology.clone()).unwrap_or_default());
    // Nothing is tried here, so backoff never applies.
    let queue = SchedulingQueue::new(BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO });
    let gangs = GangScheduler::new(served.gang_kinds.clone(), cfg.as_ref().map(|c| c.preemption).unwrap_or_default());
    let ready = Arc::new(AtomicBool::new(false));
    let mut state = SchedulingLoop::new(
        profiles,
        snapshot,
        queue,
        gangs,
        served.elastic_quotas,
        Nothing,
        Nothing,
        Nothing,
        metrics,
        ready,
    );
    if !state.sync(&mut event_rx).await {
        bail!("the watches of the cluster ended before listing it");
    }
    Ok(state.explain(target)?)
}

async fn explain_node(
    kubeconfig: Option<PathBuf>,
    node_name: &str,
    dot: bool,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = match config_path {
        Some(path) => config::load(&path)?.topology,
        None => Default::default(),
    };
    let client = super::client(kubeconfig.as_deref()).await?;
    let node = Api::<Node>::all(client.clone()).get(node_name).await.with_context(|| format!("node {node_name}"))?;
    let spec = node_spec(&node)?;
    let report = Api::<GPUTopology>::all(client.clone())
        .get_opt(node_name)
        .await
        .with_context(|| format!("reading the GPUTopology of {node_name}"))?;
    let mut snapshot = ClusterSnapshot::with_settings(settings);
    let source = match &report {
        Some(r) => {
            let parsed = topology_report(r)?;
            snapshot.set_reported_topology(node_name, Some(parsed.topology));
            format!("its GPUTopology resource (source: {})", r.spec.source)
        }
        None => "the built-in template its GPU Feature Discovery labels select".to_string(),
    };
    let product = spec.labels.get(phalanx::core::snapshot::GPU_PRODUCT_LABEL).cloned();
    snapshot.upsert_node(spec);
    let info = snapshot.node(node_name).expect("just added");
    let Some(model) = info.gpu_model.clone() else {
        println!("Node {node_name} has no GPUs.");
        return Ok(());
    };
    if dot {
        print!("{}", model.graph.to_dot());
        return Ok(());
    }
    let levels = &snapshot.settings().levels.levels;
    let domains = info
        .domains
        .iter()
        .zip(levels)
        .filter_map(|(d, level)| d.map(|id| format!("{}={}", level.name, snapshot.domain_index().describe(id))))
        .collect::<Vec<_>>()
        .join(", ");
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .context("listing the node's pods")?;
    let pods = pods
        .items
        .iter()
        .filter_map(|p| pod_info(p).ok())
        .map(|p| PodGpus { gpus: p.gpu_count(), indices: p.gpu_indices.clone(), key: p.key })
        .collect();
    print!(
        "{}",
        render_node(&NodeReport { node: node_name, product: product.as_deref(), source, domains, model: &model, pods })
    );
    Ok(())
}
