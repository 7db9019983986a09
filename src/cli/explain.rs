//! `phalanx explain node/NAME [--dot]`: a node's GPU topology and who holds
//! which GPU, from what the API server has (the node's GPUTopology resource,
//! else the template its labels select).
//!
//! `phalanx explain NAMESPACE/NAME [--scheduler URL]`: why a gang waits, or
//! where it runs. Asks a running scheduler's `/explain` endpoint when given
//! one that answers; otherwise lists the cluster through the scheduler's
//! informers, feeds what they list to a `Scheduler` of its own (which decides
//! nothing: it is asked, not run) and asks it the same question.

use std::path::PathBuf;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use phalanx::config;
use phalanx::explain::{NodeReport, PodGpus, render_node};
use phalanx::shell::informers;
use phalanx::shell::leader_election::Leadership;
use phalanx::shell::metrics::Metrics;
use phalanx::shell::wall_clock;
use phalanx_core::explain::{GangExplanation, Target, render_gang};
use phalanx_core::plugins::default_profile;
use phalanx_core::scheduler::BackoffPolicy;
use phalanx_core::scheduler::{Scheduler, SchedulerConfig};
use phalanx_core::snapshot::ClusterSnapshot;
use phalanx_kube::api::gpu_topology::GPUTopology;
use phalanx_kube::translate::{node_spec, pod_info, topology_report};
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

/// The scheduler's state as its informers list it, with nothing decided:
/// queue positions come from the pending gangs' order, and no node is held.
async fn explain_from_cluster(options: &ExplainOptions, target: &Target) -> anyhow::Result<GangExplanation> {
    let cfg = options.config.as_deref().map(config::load).transpose()?;
    let client = super::client(options.kubeconfig.as_deref()).await?;
    let served = informers::Served::discover(&client).await;
    // Nothing is tried here, so backoff never applies.
    let no_backoff = BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO };
    let config = match &cfg {
        Some(cfg) => SchedulerConfig { backoff: no_backoff, ..cfg.scheduler(&served, wall_clock()) },
        None => SchedulerConfig {
            profiles: vec![default_profile("phalanx")],
            topology: Default::default(),
            backoff: no_backoff,
            preemption: Default::default(),
            gang_kinds: served.gang_kinds.clone(),
            elastic_quotas: served.elastic_quotas,
            dynamic_resources: served.dynamic_resources,
            volumes: true,
            wall_clock: wall_clock(),
            class_resources: Default::default(),
        },
    };
    let names: HashSet<String> = config.profiles.iter().map(|p| p.scheduler_name.clone()).collect();
    let metrics = Metrics::register(&mut Registry::default());
    let (event_tx, mut events) = mpsc::channel(8192);
    informers::spawn(client, Arc::new(names), &served, metrics, Leadership::always(), event_tx);
    let mut scheduler = Scheduler::new(config);
    while !scheduler.is_synced() {
        let event = events.recv().await.context("the watches of the cluster ended before listing it")?;
        let _ = scheduler.apply(event, Instant::now());
    }
    Ok(scheduler.explain(target, Instant::now())?)
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
    let product = spec.labels.get(phalanx_core::snapshot::GPU_PRODUCT_LABEL).cloned();
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
