//! Topology benchmarks: speed of the GPU choice and of scoring a large
//! fleet, and placement quality against exhaustive search and a
//! topology-blind first fit. Prints a table and writes it to
//! bench/results/topology.md.
//!
//! cargo bench --bench topology

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use phalanx::agent::nvidia_smi;
use phalanx_core::framework::JobDemand;
use phalanx_core::node::NodeSpec;
use phalanx_core::plugins::default_profile;
use phalanx_core::pod::PodInfo;
use phalanx_core::resources::{CPU, GPU, PODS, Resources};
use phalanx_core::schedule::choose_node;
use phalanx_core::snapshot::{ClusterSnapshot, GPU_PRODUCT_LABEL};
use phalanx_core::testing::{self, Rng};
use phalanx_core::topology::gpu_choice::{GpuMask, NodeGpuModel, ring_by_search};
use phalanx_core::topology::graph::LinkBandwidth;
use phalanx_core::topology::model::GpuTopology;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn time_each(runs: usize, mut f: impl FnMut(usize)) -> (Duration, Duration, Duration) {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed()
        })
        .collect();
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / runs as u32;
    (mean, percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn fixtures() -> Vec<(String, GpuTopology)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nvidia-smi-topo");
    let mut out: Vec<(String, GpuTopology)> = std::fs::read_dir(dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            (name, nvidia_smi::parse(&text).expect("fixture parses"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn pod(gpus: i64) -> PodInfo {
    testing::test_pod("bench", Resources::new().with(GPU, gpus).with(CPU, 4000).with(PODS, 1))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs this as a quick smoke
    // test with small counts and leaves the results file alone.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |n: usize| if full { n } else { (n / 50).max(2) };
    let table = LinkBandwidth::default();
    let mut report = String::new();
    let _ = writeln!(report, "# Topology benchmarks\n");
    let _ = writeln!(
        report,
        "Machine: {} cores; release build.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Choosing k of 8 GPUs on one node.
    let _ = writeln!(report, "## Choosing k of 8 GPUs on one node (target: under 20 us)\n");
    let _ = writeln!(report, "| topology | build tables (once per kind of node) | choose, mean | p50 | p99 |");
    let _ = writeln!(report, "|---|---|---|---|---|");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, topology) in fixtures() {
        let start = Instant::now();
        let model = NodeGpuModel::new(topology, &table);
        let build = start.elapsed();
        let cases: Vec<(GpuMask, usize)> = (0..scale(10_000))
            .map(|_| {
                let free = rng.next_u64() & model.all_gpus();
                (free, 1 + (rng.next_u64() as usize % free.count_ones().max(1) as usize))
            })
            .collect();
        let mut sink = 0u64;
        let (mean, p50, p99) = time_each(cases.len(), |i| {
            sink ^= model.choose(cases[i].0, cases[i].1).map_or(0, |c| c.gpus);
        });
        std::hint::black_box(sink);
        let _ = writeln!(report, "| {name} | {build:.2?} | {mean:.2?} | {p50:.2?} | {p99:.2?} |");
    }

    // 2. Placement quality against exhaustive search and first fit.
    let _ = writeln!(report, "\n## Placement quality (target: mean ratio at least 0.99)\n");
    let _ = writeln!(
        report,
        "Ratio of the modelled all-reduce bandwidth of the chosen GPUs to the best over every subset of the \
         free GPUs (every ring tried), over random occupancy and every request size.\n"
    );
    let _ = writeln!(report, "| topology | cases | phalanx mean | phalanx worst | first-fit mean | first-fit worst |");
    let _ = writeln!(report, "|---|---|---|---|---|---|");
    let (mut all_ours, mut all_ff, mut n_all) = (0.0, 0.0, 0usize);
    let (mut worst_ours_all, mut worst_ff_all) = (f64::INFINITY, f64::INFINITY);
    for (name, topology) in fixtures() {
        let model = NodeGpuModel::new(topology, &table);
        let (mut sum_ours, mut sum_ff, mut worst_ours, mut worst_ff, mut cases) = (0.0, 0.0, 1.0f64, 1.0f64, 0usize);
        for _ in 0..scale(300) {
            let free = rng.next_u64() & model.all_gpus();
            for k in 2..=free.count_ones() as usize {
                let best = (0..=model.all_gpus())
                    .filter(|s| s & !free == 0 && s.count_ones() as usize == k)
                    .map(|s| ring_by_search(&model.bandwidth, s))
                    .fold(f64::NEG_INFINITY, f64::max);
                let ours = model.choose(free, k).expect("fits").ring_bandwidth / best;
                let ff = ring_by_search(&model.bandwidth, model.first_fit(free, k).expect("fits")) / best;
                sum_ours += ours;
                sum_ff += ff;
                worst_ours = worst_ours.min(ours);
                worst_ff = worst_ff.min(ff);
                cases += 1;
            }
        }
        let _ = writeln!(
            report,
            "| {name} | {cases} | {:.4} | {:.4} | {:.4} | {:.4} |",
            sum_ours / cases as f64,
            worst_ours,
            sum_ff / cases as f64,
            worst_ff
        );
        all_ours += sum_ours;
        all_ff += sum_ff;
        n_all += cases;
        worst_ours_all = worst_ours_all.min(worst_ours);
        worst_ff_all = worst_ff_all.min(worst_ff);
    }
    let _ = writeln!(
        report,
        "| **all** | {n_all} | **{:.4}** | {:.4} | {:.4} | {:.4} |",
        all_ours / n_all as f64,
        worst_ours_all,
        all_ff / n_all as f64,
        worst_ff_all
    );

    // 3. Scoring a 5,000-node fleet for one pod.
    let _ = writeln!(report, "\n## One decision on 5,000 nodes x 8 GPUs (target: under 5 ms)\n");
    let _ = writeln!(report, "| occupancy | request | mean | p50 | p99 |");
    let _ = writeln!(report, "|---|---|---|---|---|");
    let profile = default_profile("phalanx");
    for occupancy in [0.5, 0.9] {
        let mut snapshot = ClusterSnapshot::new();
        for i in 0..5000 {
            let product = if i % 5 == 0 { "NVIDIA-GeForce-RTX-4090" } else { "NVIDIA-H100-80GB-HBM3" };
            let mut labels = std::collections::BTreeMap::new();
            labels.insert(GPU_PRODUCT_LABEL.to_string(), product.to_string());
            labels.insert("network.topology.nvidia.com/block".to_string(), format!("rack-{}", i / 32));
            snapshot.upsert_node(NodeSpec {
                name: format!("node-{i:04}"),
                labels,
                taints: vec![],
                unschedulable: false,
                ready: true,
                allocatable: Resources::new().with(GPU, 8).with(CPU, 224_000).with(PODS, 110),
                gpu_sharing: Default::default(),
            });
            let used = (0..8).filter(|_| (rng.next_u64() % 1000) as f64 / 1000.0 < occupancy).count() as i64;
            if used > 0 {
                let mut holder = pod(used);
                holder.uid = format!("holder-{i}");
                snapshot.observe_bound(holder.placement(&format!("node-{i:04}")), None);
            }
        }
        for gpus in [1, 4, 8] {
            let p = pod(gpus);
            let demand = JobDemand { pending_pods: 1, gpus_per_pod: gpus as usize };
            let (mean, p50, p99) = time_each(scale(50), |_| {
                std::hint::black_box(choose_node(&profile, &p, &snapshot, Some(&demand)).ok());
            });
            let _ =
                writeln!(report, "| {:.0}% | {gpus} GPUs | {mean:.2?} | {p50:.2?} | {p99:.2?} |", occupancy * 100.0);
        }
    }

    print!("{report}");
    if !full {
        return;
    }
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results");
    std::fs::create_dir_all(out).expect("results dir");
    std::fs::write(format!("{out}/topology.md"), &report).expect("write results");
    eprintln!("written to bench/results/topology.md");
}
