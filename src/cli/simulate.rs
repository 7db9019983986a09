//! `phalanx simulate`: a trace replayed against a fleet through the
//! scheduler's core on a simulated clock; prints a summary and writes CSV
//! files and a PNG plot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use phalanx::config::{self, SchedulerConfig};
use phalanx::fleet::FleetSpec;
use phalanx::sim::driver::{Settings, simulate};
use phalanx::sim::fleet::{SyntheticFleet, node_specs};
use phalanx::sim::synthetic::{SyntheticSpec, Weighted, generate};
use phalanx::sim::trace::{Job, from_gang_jobs, read_csv};
use phalanx::sim::{plot, report};
use phalanx::workload::knavigator_gang_burst;
use phalanx_core::resources::GPU;

/// The configuration deployed by `deploy/`, used unless `--config` names another.
const DEPLOYED_CONFIG: &str = include_str!("../../deploy/scheduler-config.yaml");

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Jobs to replay: `knavigator` (NVIDIA knavigator's gang burst: 53 jobs, 288 pods of 8 GPUs, 30 s),
    /// `synthetic` (see the synthetic options), or a CSV file `job_id,num_gpu,submit_time,duration[,pods]`.
    #[arg(long, default_value = "knavigator")]
    trace: String,

    /// A fleet file (as in e2e/fleets/); without it, a synthetic fleet from the options below.
    #[arg(long, conflicts_with_all = ["nodes", "gpus_per_node", "rack_size", "block_size", "gpu_product"])]
    fleet: Option<PathBuf>,
    /// Synthetic fleet: number of nodes.
    #[arg(long, default_value_t = 32)]
    nodes: usize,
    /// Synthetic fleet: GPUs per node.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: u32,
    /// Synthetic fleet: nodes per rack (topograph's block level).
    #[arg(long, default_value_t = 8)]
    rack_size: usize,
    /// Synthetic fleet: nodes per block of racks (topograph's spine level).
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Synthetic fleet: GPU product (`nvidia.com/gpu.product`), which picks the GPU topology template.
    #[arg(long, default_value = "NVIDIA-H100-80GB-HBM3")]
    gpu_product: String,

    /// Scheduler configuration (profiles, backoff, preemption, topology levels); default: deploy/scheduler-config.yaml.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Synthetic trace: number of jobs.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Synthetic trace: mean jobs submitted per second (Poisson arrivals); 0 submits all at once.
    #[arg(long, default_value_t = 0.05)]
    arrival_rate: f64,
    /// Synthetic trace: job sizes in GPUs with weights, `GPUS:WEIGHT,...`.
    #[arg(long, default_value = "1:30,2:10,4:10,8:25,16:12,32:8,64:4,128:1")]
    sizes: String,
    /// Synthetic trace: mean run time in seconds (log-normal).
    #[arg(long, default_value_t = 1800.0)]
    mean_duration: f64,
    /// Synthetic trace: spread of run times (sigma of their logarithm); 0: all equal.
    #[arg(long, default_value_t = 1.0)]
    duration_sigma: f64,
    /// Synthetic trace: priorities with weights, `PRIORITY:WEIGHT,...`.
    #[arg(long, default_value = "0")]
    priorities: String,
    /// Synthetic trace: number of namespaces (team-0, team-1, ...).
    #[arg(long, default_value_t = 4)]
    namespaces: usize,
    /// Synthetic trace: random seed (the same seed gives the same trace).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Seconds from a bind to the pod running (image pull, container start).
    #[arg(long, default_value_t = 0.0)]
    startup: f64,
    /// Seconds from an eviction to the victim's GPUs being free (its grace period).
    #[arg(long, default_value_t = 30.0)]
    eviction_grace: f64,
    /// Stop after this much simulated time (hours), reporting unfinished jobs.
    #[arg(long, default_value_t = 24.0 * 30.0)]
    horizon_hours: f64,

    /// Directory for jobs.csv, timeseries.csv and simulation.png.
    #[arg(long, default_value = "simulation")]
    out: PathBuf,
    /// TrueType font for the plot's text (default: DejaVu Sans where installed; none: no text).
    #[arg(long)]
    plot_font: Option<PathBuf>,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{flag}: {value} is not a number of seconds of at least 0"))
}

fn scheduler_config(path: Option<&Path>) -> anyhow::Result<SchedulerConfig> {
    Ok(match path {
        Some(path) => config::load(path)?,
        None => config::from_text(DEPLOYED_CONFIG, Path::new("deploy/scheduler-config.yaml (built in)"))?,
    })
}

fn jobs(args: &SimulateArgs, max_gpus_per_pod: u32) -> anyhow::Result<Vec<Job>> {
    Ok(match args.trace.as_str() {
        "knavigator" => from_gang_jobs(&knavigator_gang_burst()),
        "synthetic" => {
            if !(args.arrival_rate.is_finite() && args.arrival_rate >= 0.0) {
                bail!("--arrival-rate: {} is not a rate of at least 0", args.arrival_rate);
            }
            if !(args.duration_sigma.is_finite() && args.duration_sigma >= 0.0) {
                bail!("--duration-sigma: {} is not a spread of at least 0", args.duration_sigma);
            }
            generate(&SyntheticSpec {
                jobs: args.jobs,
                arrivals_per_second: args.arrival_rate,
                sizes: args.sizes.parse::<Weighted<u32>>().context("--sizes")?,
                gpus_per_pod: max_gpus_per_pod,
                mean_duration: seconds("mean-duration", args.mean_duration)?,
                duration_sigma: args.duration_sigma,
                priorities: args.priorities.parse::<Weighted<i32>>().context("--priorities")?,
                namespaces: args.namespaces,
                seed: args.seed,
            })
        }
        file => read_csv(Path::new(file), max_gpus_per_pod)?,
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = scheduler_config(args.config.as_deref())?;
    let fleet = match &args.fleet {
        Some(path) => FleetSpec::load(path)?,
        None => SyntheticFleet {
            nodes: args.nodes,
            gpus_per_node: args.gpus_per_node,
            rack_size: args.rack_size,
            block_size: args.block_size,
            gpu_product: args.gpu_product.clone(),
        }
        .spec(),
    };
    let nodes = node_specs(&fleet).context("reading the fleet's nodes")?;
    let max_gpus_per_pod = nodes.iter().map(|n| n.allocatable.get(GPU)).max().unwrap_or(0);
    if max_gpus_per_pod <= 0 {
        bail!("the fleet has no GPUs");
    }
    let jobs = jobs(&args, max_gpus_per_pod as u32)?;
    let settings = Settings {
        profiles: cfg.profiles.iter().map(config::ProfileSpec::build).collect(),
        backoff: cfg.backoff,
        preemption: cfg.preemption,
        topology: cfg.topology.clone(),
        eviction_grace: seconds("eviction-grace", args.eviction_grace)?,
        startup: seconds("startup", args.startup)?,
        horizon: seconds("horizon-hours", args.horizon_hours * 3600.0)?,
    };
    eprintln!("simulating {} jobs on {} nodes", jobs.len(), nodes.len());
    // Hidden when stderr is not a terminal.
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} jobs finished").expect("template"),
    );
    let outcome = simulate(&jobs, nodes, settings, &mut |finished| bar.set_position(finished as u64));
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let jobs_csv = args.out.join("jobs.csv");
    let series_csv = args.out.join("timeseries.csv");
    let png = args.out.join("simulation.png");
    report::write_jobs_csv(&outcome, &jobs_csv).with_context(|| format!("writing {}", jobs_csv.display()))?;
    report::write_series_csv(&outcome, &series_csv).with_context(|| format!("writing {}", series_csv.display()))?;
    let text = plot::load_font(args.plot_font.as_deref());
    if !text {
        eprintln!("no font found (see --plot-font): the plot has no text");
    }
    plot::draw(&outcome, &png, text)?;

    let summary = report::summarize(&outcome);
    println!("{}", summary.table(&outcome));
    if outcome.hit_horizon {
        println!("stopped at the horizon ({} h of simulated time) with work left", args.horizon_hours);
    }
    println!("wrote {}, {}, {}", jobs_csv.display(), series_csv.display(), png.display());
    Ok(())
}
