//! `phalanx-soak`: the chaos soak (driven by `e2e/soak`). On a control plane
//! of its own: a kwok GPU fleet, two phalanx replicas electing a leader, a
//! seeded workload keeping the fleet over-subscribed, a seeded schedule of
//! overlapping faults, and a checker of every invariant running all the
//! time. Writes a report, a PNG timeline and the event log; exits non-zero
//! on any violation.

mod checker;
mod control_plane;
mod event_log;
mod faults;
mod generator;
mod ledger;
mod replicas;
mod report;
mod rng;
mod watches;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use phalanx::cluster_invariants::GPU;
use phalanx::fleet::{FleetSpec, ready_and_untainted};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use serde_json::json;
use tracing::info;

use crate::checker::Checker;
use crate::control_plane::ControlPlane;
use crate::event_log::EventLog;
use crate::faults::{FOREIGN_NAMESPACE, FaultBook, Injector};
use crate::generator::{Generator, NAMESPACES, Rates, from_json};
use crate::ledger::{Ledger, Priority};
use crate::replicas::{LEASE_NAMESPACE, Replicas};
use crate::rng::Rng;

#[derive(Parser)]
#[command(about = "The chaos soak: run it through e2e/soak, which brings up its control plane")]
struct Args {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// The main API server's kubeconfig (generator, faults, checker).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// `e2e/cluster`, with PHALANX_CLUSTER_DIR naming the soak's control plane.
    #[arg(long)]
    cluster_script: PathBuf,
    /// The phalanx binary under test.
    #[arg(long)]
    phalanx: PathBuf,
    #[arg(long)]
    fleet: PathBuf,
    /// `nvidia-smi topo -m` files the GPUTopology fault publishes.
    #[arg(long)]
    fixtures: PathBuf,
    /// Where the report and the PNG go.
    #[arg(long)]
    results: PathBuf,
    /// Where the event log and the replicas' logs go.
    #[arg(long)]
    work: PathBuf,
    /// Mean seconds between two jobs.
    #[arg(long, default_value_t = 1.2)]
    job_interval: f64,
    /// Mean seconds between two faults.
    #[arg(long, default_value_t = 5.0)]
    fault_interval: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("violations found with seed {}; see the report and the event log", args.seed);
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("the soak could not run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn client(path: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Runs the soak; `true` when no invariant was violated.
async fn run(args: &Args) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.results).with_context(|| format!("creating {}", args.results.display()))?;
    std::fs::create_dir_all(&args.work).with_context(|| format!("creating {}", args.work.display()))?;
    let client = client(&args.kubeconfig).await?;
    let event_log_path = args.work.join(format!("soak-seed-{}.events.jsonl", args.seed));
    let log = Arc::new(EventLog::create(&event_log_path).context("creating the event log")?);
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    log.write("start", json!({"seed": args.seed, "minutes": args.minutes}));

    let fleet_spec = FleetSpec::load(&args.fleet)?;
    let fleet: BTreeMap<String, Node> = fleet_spec.nodes().into_iter().map(|n| (n.name_any(), n)).collect();
    let total_gpus: i64 = fleet.values().map(faults::allocatable).sum();
    set_up(&client, total_gpus).await?;
    add_nodes(&client, &fleet).await?;
    let stores = watches::start(&client, log.clone()).await;
    wait_nodes_ready(&stores, fleet.len()).await?;
    info!(nodes = fleet.len(), total_gpus, "fleet ready");

    let control_plane = ControlPlane::new(&args.cluster_script);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let phalanx_kubeconfig = control_plane.start_phalanx_apiserver(port).await?;
    let replicas = Arc::new(Replicas::start(&args.phalanx, &phalanx_kubeconfig, &args.work, 2)?);
    let waited = Instant::now();
    while replicas.leader().await.is_none() {
        if waited.elapsed() > Duration::from_secs(60) {
            replicas.stop_all().await;
            bail!("no phalanx replica leads after 60 s; logs in {}", args.work.display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    info!("a replica leads; the soak starts");

    let seeded = Rng::new(args.seed);
    let ledger = Arc::new(Ledger::default());
    let book = Arc::new(FaultBook::default());
    let plan = faults::schedule(&mut seeded.fork(2), length, args.fault_interval);
    log.write("schedule", json!({"faults": plan.iter().map(|p| json!({"at_s": p.at.as_secs_f64(), "fault": p.kind.as_str(), "hold_s": p.hold.as_secs()})).collect::<Vec<_>>()}));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let checker =
        Checker::new(client.clone(), stores.clone(), ledger.clone(), book.clone(), replicas.clone(), log.clone());
    let checking = tokio::spawn(checker.run(stopped));

    let start = Instant::now();
    let generator = Generator {
        client: client.clone(),
        rng: seeded.fork(1),
        ledger: ledger.clone(),
        log: log.clone(),
        stores: stores.clone(),
        rates: Rates { job_interval: args.job_interval, delete_interval: 20.0 },
    };
    let fixtures = fixture_files(&args.fixtures)?;
    let injector = Arc::new(Injector::new(
        client.clone(),
        control_plane,
        replicas.clone(),
        stores.clone(),
        ledger.clone(),
        log.clone(),
        book.clone(),
        fleet.clone(),
        fixtures,
    ));
    let soak = async {
        tokio::join!(generator.run(start + length), injector.clone().run(plan, start));
        // Time for the last decisions and reasons to land, checked as before.
        tokio::time::sleep(Duration::from_secs(20)).await;
    };
    let interrupted = tokio::select! {
        () = soak => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let _ = stop.send(true);
    let mut checker = checking.await?;
    // Before the count, while pods still wait for a reason, up to the
    // recovery bound every fault gets (the last faults end with the load,
    // and a new leader writes a reason for every pending pod again). The
    // invariants are no longer checked meanwhile: the load has stopped.
    let deadline = Instant::now() + checker::RECOVERY_BOUND;
    while !interrupted && Instant::now() < deadline && checker::pending_without_reason(&stores, &ledger) > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fates = checker.account_for_every_pod().await;
    replicas.stop_all().await;
    if interrupted {
        log.write("interrupted", json!({}));
    }

    let records = book.lock().clone();
    let (jobs, pods) = {
        let book = ledger.lock();
        (book.jobs.len(), book.jobs.values().map(|j| j.pods.len()).sum())
    };
    let facts = report::RunFacts {
        seed: args.seed,
        minutes: args.minutes,
        nodes: fleet.len(),
        jobs,
        pods,
        event_log: event_log_path.display().to_string(),
    };
    let markdown = report::markdown(&facts, &checker, &records, &fates);
    let report_path = args.results.join(format!("soak-seed-{}.md", args.seed));
    std::fs::write(&report_path, &markdown).with_context(|| format!("writing {}", report_path.display()))?;
    let png = args.results.join(format!("soak-seed-{}.png", args.seed));
    report::timeline(&checker.samples, &records, &log, checker.total_gpus, &png)?;
    log.write("end", json!({"violations": checker.violations.len()}));
    log.flush();
    println!("{markdown}");
    println!("report: {}\ntimeline: {}\nevent log: {}", report_path.display(), png.display(), event_log_path.display());
    Ok(checker.violations.is_empty() && !interrupted)
}

/// Namespaces, priority classes, and an ElasticQuota per namespace whose
/// max is 45% of the fleet's GPUs (three of them: 135%, so quotas bind).
async fn set_up(client: &Client, total_gpus: i64) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in NAMESPACES.iter().chain(&[LEASE_NAMESPACE, FOREIGN_NAMESPACE]) {
        create_if_absent(&namespaces, from_json(json!({"metadata": {"name": ns}}))).await?;
    }
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for p in Priority::ALL {
        create_if_absent(&classes, from_json(json!({"metadata": {"name": p.class()}, "value": p.value()}))).await?;
    }
    let max = (total_gpus * 45 / 100 / 8 * 8).max(8);
    for ns in NAMESPACES {
        let quotas: Api<ElasticQuota> = Api::namespaced(client.clone(), ns);
        let quota = from_json(json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
            "metadata": {"name": "gpus", "namespace": ns}, "spec": {"max": {GPU: max.to_string()}}}));
        create_if_absent(&quotas, quota).await?;
    }
    // Pods are refused until a namespace's default ServiceAccount exists.
    for ns in NAMESPACES.iter().chain(&[FOREIGN_NAMESPACE]) {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let began = Instant::now();
        while accounts.get_opt("default").await?.is_none() {
            if began.elapsed() > Duration::from_secs(60) {
                bail!("namespace {ns}: no default ServiceAccount after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(())
}

async fn create_if_absent<K>(api: &Api<K>, object: K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", object.name_any()))),
    }
}

async fn add_nodes(client: &Client, fleet: &BTreeMap<String, Node>) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(fleet.values().cloned())
        .map(|n| {
            let api = api.clone();
            async move { create_if_absent(&api, n).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn wait_nodes_ready(stores: &watches::Stores, wanted: usize) -> anyhow::Result<()> {
    let began = Instant::now();
    loop {
        let ready = stores.nodes.state().iter().filter(|n| ready_and_untainted(n)).count();
        if ready >= wanted {
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(180) {
            bail!("{ready} of {wanted} nodes Ready and untainted after 180 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn fixture_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    Ok(files)
}
