//! End-to-end throughput on a real control plane: pods created at a fixed
//! rate, bound by phalanx, by the bind ceiling (a client that only binds),
//! and by the peers (upstream kube-scheduler with its gang scheduling,
//! scheduler-plugins' Coscheduling), each alone on the same fake fleet with
//! the same client QPS and burst. Prints a table and the ratios.
//!
//! `e2e/bench-throughput [--nodes N --pods N --rate R --qps Q ...]` runs it
//! in full (5,000 nodes) and writes bench/results/throughput.md;
//! `cargo test --all-targets` runs a small smoke of the harness (phalanx and
//! the ceiling only) against `PHALANX_E2E_KUBECONFIG` and asserts its numbers.

mod ceiling;
mod fleet;
mod measure;
mod report;
mod schedulers;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::time::Instant;

use measure::{Recorder, RunResult};
use schedulers::{Contender, Setup};
use workload::Workload;

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end throughput of phalanx, the bind ceiling and the peers")]
pub struct Args {
    /// Fake nodes of 8 GPUs in the fleet.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods per run (rounded down to whole gangs).
    #[arg(long, default_value_t = 3000)]
    pods: usize,
    /// Pods created per second.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Client QPS of every scheduler and of the ceiling.
    #[arg(long, default_value_t = 100)]
    qps: u32,
    /// Client burst of every scheduler and of the ceiling.
    #[arg(long, default_value_t = 200)]
    burst: u32,
    /// GPUs per pod.
    #[arg(long, default_value_t = 8)]
    gpus: u32,
    /// Gang sizes, one run each (1: single pods).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    gangs: Vec<usize>,
    /// Which to run: ceiling, phalanx, kube-scheduler, coscheduling.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,phalanx,kube-scheduler,coscheduling")]
    schedulers: Vec<String>,
    /// Directory with the peers' binaries (e2e/build-peers.sh prints it).
    #[arg(long)]
    peers: Option<PathBuf>,
    /// A gang with some but not all members bound for longer counts as partly bound.
    #[arg(long, default_value_t = 5.0)]
    partial_after: f64,
    /// Where the results go (relative to the repository).
    #[arg(long, default_value = "bench/results/throughput.md")]
    out: PathBuf,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// The CI smoke: a small fleet, phalanx and the ceiling only.
    fn smoke() -> Self {
        let mut args = Args::parse_from(["throughput"]);
        args.nodes = 32;
        args.pods = 64;
        args.gpus = 2;
        args.gangs = vec![1, 16];
        args.schedulers = vec!["ceiling".into(), "phalanx".into()];
        args
    }

    fn schedulers(&self) -> Vec<Contender> {
        self.schedulers
            .iter()
            .map(|s| match s.as_str() {
                "ceiling" => Contender::Ceiling,
                "phalanx" => Contender::Phalanx,
                "kube-scheduler" => Contender::KubeScheduler,
                "coscheduling" => Contender::Coscheduling,
                other => panic!("--schedulers: unknown {other:?} (ceiling, phalanx, kube-scheduler, coscheduling)"),
            })
            .collect()
    }
}

pub struct Run {
    pub workload: Workload,
    pub scheduler: Contender,
    pub result: RunResult,
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test` runs the smoke.
    let full = std::env::args().any(|a| a == "--bench");
    let args = if full { Args::parse() } else { Args::smoke() };
    let schedulers = args.schedulers();
    let kubeconfig = std::env::var_os("PHALANX_E2E_KUBECONFIG")
        .or_else(|| std::env::var_os("KUBECONFIG"))
        .map(PathBuf::from)
        .expect("set PHALANX_E2E_KUBECONFIG (or KUBECONFIG) to a cluster; `e2e/cluster up` prints one");
    let kc = Kubeconfig::read_from(&kubeconfig).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    let workdir = std::env::temp_dir().join(format!("phalanx-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("workdir");
    let setup = Setup { kubeconfig, qps: args.qps, burst: args.burst, peers: args.peers.clone(), workdir };
    if schedulers.iter().any(|s| matches!(s, Contender::KubeScheduler | Contender::Coscheduling)) {
        assert!(setup.peers.is_some(), "kube-scheduler and coscheduling need --peers DIR (e2e/build-peers.sh)");
    }

    let began = Instant::now();
    let load_before = report::load_average();
    let nodes = fleet::ensure(&client, args.nodes).await;
    let fleet_seen = fleet::ready_count(&client).await;
    let mut runs = Vec::new();
    for &gang_size in &args.gangs {
        let workload = Workload::new(gang_size, args.pods, args.gpus);
        for &scheduler in &schedulers {
            let result = run_one(&client, &args, &setup, &nodes, workload, scheduler).await;
            runs.push(Run { workload, scheduler, result });
        }
    }
    let text = report::render(&args, fleet_seen, &runs, load_before, began.elapsed());
    println!("{text}");
    if full {
        let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(&args.out);
        std::fs::write(&out, &text).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
        eprintln!("written to {}", out.display());
    } else {
        fleet::remove(&client).await;
        check_smoke(&runs);
    }
    let _ = std::fs::remove_dir_all(&setup.workdir);
}

/// The smoke asserts that the harness measured something sane.
fn check_smoke(runs: &[Run]) {
    for run in runs {
        let (r, what) = (&run.result, format!("{} / {}", run.scheduler.label(), run.workload.name()));
        assert_eq!(r.pods_bound, r.pods, "{what}: every pod bound");
        assert_eq!(r.gangs_complete, run.workload.gangs, "{what}: every gang complete");
        // The ceiling knows nothing of gangs.
        if run.scheduler != Contender::Ceiling {
            assert_eq!(r.partial_gangs, 0, "{what}: no gang partly bound");
        }
        assert!(r.pods_per_second > 1.0 && r.pods_per_second.is_finite(), "{what}: {} pods/s", r.pods_per_second);
        assert!(r.latency_p50 <= r.latency_p99 && r.latency_p99 < Duration::from_secs(60), "{what}: {r:?}");
    }
    println!("throughput smoke: {} runs measured, no gang partly bound", runs.len());
}

async fn run_one(
    client: &Client,
    args: &Args,
    setup: &Setup,
    nodes: &[String],
    workload: Workload,
    scheduler: Contender,
) -> RunResult {
    let what = format!("{} | {}", scheduler.label(), workload.name());
    let namespace = format!("tp-{}-{}", scheduler.scheduler_name().trim_start_matches("bench-"), workload.gang_size);
    create_namespace(client, &namespace).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let mut process = schedulers::start(scheduler, setup);
    let ceiling = (scheduler == Contender::Ceiling)
        .then(|| tokio::spawn(ceiling::run(pods.clone(), nodes.to_vec(), 8, f64::from(args.qps), args.burst)));
    warm_up(&pods, &namespace, scheduler, &what).await;

    let recorder = Arc::new(Recorder::new());
    let watch = tokio::spawn({
        let (recorder, pods) = (recorder.clone(), pods.clone());
        async move { recorder.watch(pods).await }
    });
    let submit = tokio::spawn(workload::submit(
        client.clone(),
        namespace.clone(),
        workload,
        scheduler.scheduler_name(),
        scheduler.gang_api(),
        args.rate,
        recorder.clone(),
    ));
    let ended = follow(&recorder, &workload, &what, process.as_mut()).await;
    let result = recorder.result(&workload, Duration::from_secs_f64(args.partial_after), ended);
    eprintln!(
        "[{what}] {:.1} pods/s, {:.2} gangs/s, p50 {:.2}s p99 {:.2}s, {} of {} bound, {} partly bound gangs",
        result.pods_per_second,
        result.gangs_per_second,
        result.latency_p50.as_secs_f64(),
        result.latency_p99.as_secs_f64(),
        result.pods_bound,
        result.pods,
        result.partial_gangs
    );

    submit.abort();
    watch.abort();
    if let Some(c) = ceiling {
        c.abort();
    }
    if let Some(mut child) = process.take() {
        let _ = child.kill().await;
    }
    clean_up(client, &namespace).await;
    result
}

/// Prints progress every two seconds until every pod is bound, or nothing
/// was bound for a minute after the last create. Returns the end.
async fn follow(
    recorder: &Recorder,
    workload: &Workload,
    what: &str,
    mut process: Option<&mut tokio::process::Child>,
) -> Instant {
    let stall = Duration::from_secs(60);
    let (mut last_bound, mut last_change) = (0, Instant::now());
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (created, bound) = recorder.counts();
        if bound != last_bound {
            (last_bound, last_change) = (bound, Instant::now());
        }
        if bound >= workload.pods() {
            return Instant::now();
        }
        if created >= workload.pods() && last_change.elapsed() > stall {
            eprintln!("[{what}] nothing bound for {stall:?}; stopping with {bound} of {} bound", workload.pods());
            return last_change;
        }
        if let Some(child) = process.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("[{what}] the scheduler exited: {status}");
        }
        if started.elapsed().as_millis() % 2000 < 250 {
            eprintln!("[{what}] {created}/{} created, {bound} bound", workload.pods());
        }
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A namespace left by an interrupted run is removed first.
    if namespaces.get_opt(name).await.expect("namespace").is_some() {
        clean_up(client, name).await;
    }
    loop {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => break,
            // Still terminating from an earlier run.
            Err(kube::Error::Api(e)) if e.code == 409 => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    while accounts.get_opt("default").await.ok().flatten().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One pod through the scheduler before the clock starts, so that its start
/// (informers listing the whole fleet) is not counted.
async fn warm_up(pods: &Api<Pod>, namespace: &str, scheduler: Contender, what: &str) {
    let pod = workload::pod(namespace, "warm-up", scheduler.scheduler_name(), 1, None);
    pods.create(&PostParams::default(), &pod).await.expect("creating the warm-up pod");
    let started = Instant::now();
    loop {
        let bound = pods.get("warm-up").await.ok().and_then(|p| p.spec?.node_name).is_some();
        if bound {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "[{what}] the warm-up pod was not bound in 5 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("[{what}] ready after {:.1}s", started.elapsed().as_secs_f64());
    pods.delete("warm-up", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .expect("deleting the warm-up pod");
    while pods.get_opt("warm-up").await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes the run's pods at once (no grace) and its namespace, so the next
/// run finds the fleet empty.
async fn clean_up(client: &Client, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    loop {
        let _ = pods.delete_collection(&now, &ListParams::default()).await;
        match pods.list_metadata(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let _ = Api::<Namespace>::all(client.clone()).delete(namespace, &DeleteParams::default()).await;
}
