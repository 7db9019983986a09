//! Placement quality of DRA GPU claims, phalanx beside upstream
//! kube-scheduler's DynamicResources plugin (the control plane's build), on
//! the same claims and slices of the local control plane.
//!
//! One kwok node per topology fixture publishes its GPUs as a ResourceSlice
//! (and, for phalanx, its GPUTopology, matched by UUID). Each trial holds a
//! random set of the node's GPUs with an allocated claim, then asks for 2 or
//! 4 GPUs in one claim: phalanx tries, then kube-scheduler, each with a claim
//! of its own that is gone before the other tries. A choice's quality is
//! DESIGN.md's: the bus bandwidth of the best ring through its GPUs over the
//! best any free set of that size gets. The test asserts phalanx always
//! gets the best (target: mean 1.00), reports kube-scheduler's figures
//! beside it, and writes `target/dra-quality/report.md`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use phalanx::agent::nvidia_smi;
use phalanx::sim::quality::quality;
use phalanx::sim::synthetic::SplitMix64;
use phalanx_core::topology::gpu_choice::{GpuMask, NodeGpuModel};
use phalanx_core::topology::graph::LinkBandwidth;
use phalanx_kube::api::gpu_topology::{GPUTopology, GpuTopologySpec};
use serde_json::{Value, json};
use support::dra::{DRIVER, ensure_gpu_class, publish_slice};
use support::kube_scheduler::KubeScheduler;
use support::{TestEnv, eventually_every, fixture};

const FIXTURES: [&str; 5] = [
    "hgx-h100-nvswitch.txt",
    "dgx-a100-nvswitch.txt",
    "dgx1-v100-hybrid-cube-mesh.txt",
    "pcie-a100-nvlink-bridge-pairs.txt",
    "pcie-8x-rtx4090-two-sockets.txt",
];
const TRIALS_PER_FIXTURE: usize = 10;
const DECIDE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// A fixture's node: its name, and the link model quality is judged by.
struct FixtureNode {
    fixture: &'static str,
    node: String,
    model: NodeGpuModel,
    gpus: usize,
}

/// One trial: the GPUs held, the size asked for, and each scheduler's quality.
struct Trial {
    fixture: &'static str,
    held: Vec<usize>,
    wanted: usize,
    phalanx: (Vec<usize>, f64),
    kube_scheduler: (Vec<usize>, f64),
}

fn uuid(node: &str, i: usize) -> String {
    format!("GPU-{node}-{i}")
}

/// Publishes the fixture as the node's GPUTopology and its GPUs as a ResourceSlice.
async fn publish(env: &TestEnv, node: &str, file: &str) -> NodeGpuModel {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let mut topology = nvidia_smi::parse(&text).expect("fixture parses");
    for (i, gpu) in topology.gpus.iter_mut().enumerate() {
        gpu.uuid = Some(uuid(node, i));
    }
    let devices: Vec<Value> = topology
        .gpus
        .iter()
        .enumerate()
        .map(|(i, gpu)| {
            let mut attributes = json!({"type": {"string": "gpu"}, "uuid": {"string": uuid(node, i)}});
            if let Some(numa) = gpu.numa_node {
                attributes["resource.kubernetes.io/numaNode"] = json!({"int": numa});
            }
            json!({"name": format!("gpu-{i}"), "attributes": attributes})
        })
        .collect();
    let model = NodeGpuModel::new(topology.clone(), &LinkBandwidth::default());
    let report = GPUTopology::new(node, GpuTopologySpec { source: "file".into(), topology });
    Api::<GPUTopology>::all(env.client.clone()).create(&PostParams::default(), &report).await.expect("GPUTopology");
    publish_slice(env, node, devices).await;
    model
}

fn claim_body(name: &str, count: usize) -> ResourceClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {"deviceClassName": DRIVER, "count": count}}]}},
    }))
    .unwrap()
}

/// A pod using the claim of its own name: bound to `node` already, or for `scheduler` to place there.
fn pod_body(env: &TestEnv, name: &str, node: &str, scheduler: Option<&str>) -> Pod {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 0,
        "resourceClaims": [{"name": "gpu", "resourceClaimName": name}],
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"claims": [{"name": "gpu"}]}}],
    });
    match scheduler {
        Some(scheduler) => {
            spec["schedulerName"] = json!(scheduler);
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        None => spec["nodeName"] = json!(node),
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": env.name}, "spec": spec})).unwrap()
}

/// Holds `gpus` of `node` with a claim allocated and reserved for a pod bound there.
async fn hold(env: &TestEnv, name: &str, node: &str, gpus: &[usize]) {
    let claims: Api<ResourceClaim> = Api::namespaced(env.client.clone(), &env.name);
    claims.create(&PostParams::default(), &claim_body(name, gpus.len())).await.expect("holder claim");
    let pod = env.create(&pod_body(env, name, node, None)).await;
    let results: Vec<Value> = gpus
        .iter()
        .map(|i| json!({"request": "gpus", "driver": DRIVER, "pool": node, "device": format!("gpu-{i}")}))
        .collect();
    let status = json!({"status": {
        "allocation": {"devices": {"results": results}, "nodeSelector": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}},
        "reservedFor": [{"resource": "pods", "name": name, "uid": pod.metadata.uid}],
    }});
    claims.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("holder allocation");
}

/// Removes a pod and the claim of its name (finalizers and all), and waits until both are gone.
async fn release(env: &TestEnv, name: &str) {
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    let _ = env.pods().delete(name, &now).await;
    let claims: Api<ResourceClaim> = Api::namespaced(env.client.clone(), &env.name);
    let no_finalizers = json!({"metadata": {"finalizers": null}});
    let _ = claims.patch(name, &PatchParams::default(), &Patch::Merge(&no_finalizers)).await;
    let _ = claims.delete(name, &now).await;
    eventually_every(POLL, Duration::from_secs(30), &format!("{name} gone"), || async {
        let pod = env.pods().get_opt(name).await.ok()?;
        let claim = claims.get_opt(name).await.ok()?;
        (pod.is_none() && claim.is_none()).then_some(())
    })
    .await;
}

/// The GPUs `scheduler` allocates for a claim of `wanted` on `node`.
async fn choice(env: &TestEnv, name: &str, node: &str, wanted: usize, scheduler: &str) -> Vec<usize> {
    let claims: Api<ResourceClaim> = Api::namespaced(env.client.clone(), &env.name);
    claims.create(&PostParams::default(), &claim_body(name, wanted)).await.expect("claim");
    env.create(&pod_body(env, name, node, Some(scheduler))).await;
    let mut gpus: Vec<usize> = eventually_every(POLL, DECIDE, &format!("{scheduler} allocating {name}"), || async {
        let allocation = claims.get(name).await.ok()?.status?.allocation?;
        let results = allocation.devices?.results?;
        Some(results.iter().map(|r| r.device.trim_start_matches("gpu-").parse().unwrap()).collect())
    })
    .await;
    gpus.sort();
    release(env, name).await;
    gpus
}

fn mask(gpus: &[usize]) -> GpuMask {
    gpus.iter().fold(0, |m, g| m | (1 << g))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phalanx_gives_every_dra_claim_the_best_gpus_and_kube_scheduler_is_measured_beside_it() {
    let mut env = TestEnv::new("dra-quality").await;
    support::ensure_crds(&env.client).await;
    let pools: String = (0..FIXTURES.len()).map(|i| format!("- {{name: f{i}, count: 1, gpus: 8}}\n")).collect();
    let names = env.add_pools(&pools).await;
    ensure_gpu_class(&env).await;
    let mut nodes = Vec::new();
    for (file, node) in FIXTURES.into_iter().zip(&names) {
        let model = publish(&env, node, file).await;
        let gpus = nvidia_smi::parse(&std::fs::read_to_string(fixture(file)).unwrap()).unwrap().gpus.len();
        nodes.push(FixtureNode { fixture: file, node: node.clone(), model, gpus });
    }
    env.start_scheduler().await;
    let kube_scheduler = KubeScheduler::start(&env).await;
    // Both schedulers see the slices before the first claim.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rng = SplitMix64(7);
    let mut trials = Vec::new();
    for fixture_node in &nodes {
        for t in 0..TRIALS_PER_FIXTURE {
            let wanted = if rng.unit() < 0.5 { 2 } else { 4 };
            let mut held: Vec<usize> = (0..fixture_node.gpus).filter(|_| rng.unit() < 0.35).collect();
            held.truncate(fixture_node.gpus - wanted);
            let node = &fixture_node.node;
            let holder = format!("hold-{}-{t}", fixture_node.node);
            if !held.is_empty() {
                hold(&env, &holder, node, &held).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let free = mask(&(0..fixture_node.gpus).collect::<Vec<_>>()) & !mask(&held);
            let best = fixture_node.model.choose(free, wanted).expect("room for the claim").ring_bandwidth;
            let judge = |gpus: Vec<usize>| {
                assert_eq!(mask(&gpus) & mask(&held), 0, "{gpus:?} overlaps the held {held:?}");
                let ratio = quality(fixture_node.model.ring_bandwidth(mask(&gpus)), best);
                (gpus, ratio)
            };
            let phalanx = judge(choice(&env, &format!("p-{node}-{t}"), node, wanted, &env.scheduler_name).await);
            let kube = judge(choice(&env, &format!("k-{node}-{t}"), node, wanted, &kube_scheduler.name).await);
            if !held.is_empty() {
                release(&env, &holder).await;
            }
            trials.push(Trial { fixture: fixture_node.fixture, held, wanted, phalanx, kube_scheduler: kube });
        }
    }
    kube_scheduler.stop().await;
    let report = report(&trials);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dra-quality");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("report.md"), &report).unwrap();
    eprintln!("{report}");
    for node in &nodes {
        let slices = Api::<ResourceSlice>::all(env.client.clone());
        let _ = slices.delete(&format!("{}-{DRIVER}", node.node), &DeleteParams::default()).await;
        let _ = Api::<GPUTopology>::all(env.client.clone()).delete(&node.node, &DeleteParams::default()).await;
    }
    env.teardown().await;
    for trial in &trials {
        assert!(
            trial.phalanx.1 >= 0.999,
            "{}: with {:?} held, phalanx took {:?} for {} GPUs (quality {:.2})",
            trial.fixture,
            trial.held,
            trial.phalanx.0,
            trial.wanted,
            trial.phalanx.1
        );
    }
}

/// Mean and worst quality per fixture for both, and every trial.
fn report(trials: &[Trial]) -> String {
    let mut by_fixture: BTreeMap<&str, Vec<&Trial>> = BTreeMap::new();
    for trial in trials {
        by_fixture.entry(trial.fixture).or_default().push(trial);
    }
    let stats = |ratios: Vec<f64>| {
        let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
        let worst = ratios.iter().copied().fold(1.0, f64::min);
        (mean, worst)
    };
    let mut text = String::from(
        "# DRA placement quality: phalanx and kube-scheduler's DynamicResources\n\n\
         Quality: the best ring's bus bandwidth through the allocated GPUs over the best any free set of that size gets.\n\n\
         | fixture | trials | phalanx mean | phalanx worst | kube-scheduler mean | kube-scheduler worst |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let mut rows: Vec<(&str, Vec<&Trial>)> = by_fixture.into_iter().collect();
    rows.push(("all", trials.iter().collect()));
    for (fixture, trials) in rows {
        let (pm, pw) = stats(trials.iter().map(|t| t.phalanx.1).collect());
        let (km, kw) = stats(trials.iter().map(|t| t.kube_scheduler.1).collect());
        text += &format!("| {fixture} | {} | {pm:.2} | {pw:.2} | {km:.2} | {kw:.2} |\n", trials.len());
    }
    text += "\n| fixture | held | wanted | phalanx | kube-scheduler |\n|---|---|---:|---|---|\n";
    for t in trials {
        text += &format!(
            "| {} | {:?} | {} | {:?} ({:.2}) | {:?} ({:.2}) |\n",
            t.fixture, t.held, t.wanted, t.phalanx.0, t.phalanx.1, t.kube_scheduler.0, t.kube_scheduler.1
        );
    }
    text
}
