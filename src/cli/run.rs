//! `phalanx run`: the scheduler in the foreground until SIGTERM or Ctrl-C.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use phalanx::config;
use phalanx::shell::binder::Binder;
use phalanx::shell::evictor::Evictor;
use phalanx::shell::explain;
use phalanx::shell::http::{self, HealthState};
use phalanx::shell::informers;
use phalanx::shell::leader_election::{self, Leadership};
use phalanx::shell::metrics::Metrics;
use phalanx::shell::pod_group_status::StatusWriter;
use phalanx::shell::rate_limit::RateLimiter;
use phalanx::shell::reporter::Reporter;
use phalanx::shell::scheduling_loop::{Inputs, SchedulingLoop, Writers};
use phalanx::shell::wall_clock;
use phalanx_core::scheduler::Scheduler;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing::info;

/// How long in-flight binds get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn run(kubeconfig: Option<PathBuf>, config_path: &Path, http_address: SocketAddr) -> anyhow::Result<()> {
    let cfg = config::load(config_path)?;
    let kubeconfig = kubeconfig.or_else(|| cfg.client.kubeconfig.clone().map(PathBuf::from));
    let client_config = super::config(kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(client_config.clone()).context("building the Kubernetes client")?;
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| format!("phalanx-{}", std::process::id()));

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listener =
        tokio::net::TcpListener::bind(http_address).await.with_context(|| format!("listening on {http_address}"))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (explain_tx, explain_rx) = explain::channel();

    // With two replicas, only the lease holder writes; the other keeps its
    // caches warm. Without election this replica always leads.
    let (leadership, lease, election) = if cfg.leader_election.leader_elect {
        let (leadership, lease, election) =
            leader_election::start(client.clone(), &cfg.leader_election, instance.clone(), metrics.clone());
        (leadership, Some(lease), Some(election))
    } else {
        metrics.leader.set(1);
        (Leadership::always(), None, None)
    };
    let http_state =
        HealthState { registry: Arc::new(registry), ready: ready.clone(), lease, explain: Some(explain_tx) };
    let mut http_shutdown = shutdown_rx.clone();
    let http_task = tokio::spawn(http::serve(listener, http_state, async move {
        let _ = http_shutdown.wait_for(|stop| *stop).await;
    }));

    // Binds get their own budget and events theirs, as kube-scheduler gives
    // its event broadcaster a separate client: Events never slow down binds.
    let bind_limiter = Arc::new(RateLimiter::new(cfg.client.qps, cfg.client.burst));
    let report_limiter = Arc::new(RateLimiter::new(cfg.client.qps, cfg.client.burst));
    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
    let binder =
        Binder::new(client.clone(), bind_limiter.clone(), outcome_tx, metrics.clone()).gated_by(leadership.clone());
    // Evictions share the binds' budget: both decide where pods run.
    let (eviction_tx, eviction_rx) = mpsc::unbounded_channel();
    let evictor = Evictor::new(client_config, bind_limiter, eviction_tx, metrics.clone())
        .context("building the Kubernetes client for evictions")?
        .gated_by(leadership.clone());
    let draining = binder.clone();
    let served = informers::Served::discover(&client).await;
    let upstream = served.upstream_pod_groups;
    let reporter = Reporter::start(client.clone(), report_limiter.clone(), instance.clone(), metrics.clone(), upstream)
        .gated_by(leadership.clone());

    // PodGroup status shares the Events' budget.
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let statuses = StatusWriter::new(client.clone(), report_limiter, leadership.clone(), status_tx);

    let names: HashSet<String> = cfg.profiles.iter().map(|p| p.scheduler_name.clone()).collect();
    let (event_tx, event_rx) = mpsc::channel(8192);
    informers::spawn(client, Arc::new(names.clone()), &served, metrics.clone(), leadership.clone(), event_tx);

    let scheduler = Scheduler::new(cfg.scheduler(&served, wall_clock()));
    let writers = Writers { binder, reporter, evictor, statuses };
    let scheduling = SchedulingLoop::new(scheduler, writers, metrics, ready)
        .with_leadership(leadership)
        .with_explain_requests(explain_rx);
    let scheduling = match std::env::var_os("PHALANX_RECORD") {
        Some(path) => {
            let path = PathBuf::from(path);
            let recording = scheduling.recording_to(&path);
            recording.with_context(|| format!("PHALANX_RECORD: creating {}", path.display()))?
        }
        None => scheduling,
    };
    info!(%instance, profiles = ?names, %http_address, "phalanx starting");
    let inputs = Inputs {
        events: event_rx,
        binds: outcome_rx,
        evictions: eviction_rx,
        statuses: status_rx,
        shutdown: shutdown_rx,
    };
    let loop_task = tokio::spawn(scheduling.run(inputs));

    super::shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = loop_task.await;
    // Binds already sent get a moment to finish; whatever completes, a
    // restarted scheduler sees through its watch.
    draining.drain(DRAIN).await;
    if let Some(election) = election {
        // Binds are done: the standby may take over now, not a lease duration later.
        election.release().await;
    }
    http_task.await.context("http server task")?.context("http server")?;
    info!("stopped");
    Ok(())
}
