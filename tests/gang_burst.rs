//! End-to-end: NVIDIA knavigator's gang-scheduling burst (53 PodGroups, 288
//! whole-node pods of 30 s) on 32 fake H100 nodes, submitted all at once.
//! Checks at every pod event that no gang ever runs partially and no node's
//! GPUs are over-committed, then reports the makespan against its lower bound
//! (printed, and written to `gang-burst.md` in cargo's scratch directory, or
//! in `$PHALANX_RESULTS_DIR`: `PHALANX_RESULTS_DIR=bench/results` updates the
//! committed `bench/results/gang-burst.md`).
//!
//! A gang is *partial* when one of its members has been running for longer
//! than [`BIND_WINDOW`] while another member is still unbound. Kubernetes binds
//! one pod per API call, so even a gang placed in one decision is bound over a
//! short while (and kwok starts a pod as soon as it is bound); the window
//! allows for that and nothing more. A scheduler that places pods one by one
//! breaks this as soon as a gang does not fit whole.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use phalanx::workload::{GangJob, knavigator_gang_burst, makespan_lower_bound};
use phalanx_kube::api::pod_group::{PodGroup, PodGroupSpec};
use serde_json::json;
use support::{ENV_LABEL, TestEnv};

const FLEET: &str = "e2e/fleets/h100-32.yaml";
/// Where the report goes: a scratch directory, so that a test run leaves the
/// committed results alone; `PHALANX_RESULTS_DIR=bench/results` records them.
const REPORT: &str = "gang-burst.md";
const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
/// kwok ends a running pod with this annotation after the duration it gives.
const RUN_FOR_ANNOTATION: &str = "e2e.phalanx.dev/run-for";
const GPU: &str = "nvidia.com/gpu";
/// The whole test, from creating its namespace to the last pod finished.
const TIME_BOX: Duration = Duration::from_secs(15 * 60);
/// How long a gang may be partly bound while its members' bindings land.
const BIND_WINDOW: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_knavigator_gang_burst_never_runs_a_partial_gang() {
    let deadline = Instant::now() + TIME_BOX;
    let mut env = TestEnv::new("gang-burst").await;
    env.add_fleet_file(FLEET).await;
    env.start_scheduler().await;
    let capacity = gpu_capacity(&env).await;
    let total_gpus: u32 = capacity.values().sum();
    let jobs = knavigator_gang_burst();

    let outcome = AssertUnwindSafe(run_burst(&env, &jobs, capacity, deadline)).catch_unwind().await;
    // Nothing of the run outlives it, whatever happened: pods and PodGroups
    // go before the nodes they ran on and the namespace.
    clean_up(&env).await;
    let log_tail = tail(&env.log(), 40);
    env.teardown().await;
    let outcome = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));

    let lower_bound = makespan_lower_bound(&jobs, total_gpus);
    let report = outcome.report(&jobs, total_gpus, lower_bound);
    println!("{report}");
    let dir = std::env::var_os("PHALANX_RESULTS_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        |dir| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
    );
    let path = dir.join(REPORT);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, &report).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));

    let check = &outcome.checker;
    assert!(
        outcome.completed,
        "time box of {TIME_BOX:?} ran out: {} of {} pods Succeeded; unfinished gangs: {}\nphalanx log, last lines:\n{log_tail}",
        check.succeeded(),
        check.members.len(),
        check.unfinished().join(", "),
    );
    assert!(
        check.violations.is_empty(),
        "{} gang(s) ran partially, {} GPU over-commit(s), {} other violation(s); the first ones:\n{}",
        check.partial_gangs(),
        check.overcommits,
        check.violations.len() - check.partial_gangs() - check.overcommits,
        check.violations.iter().take(12).cloned().collect::<Vec<_>>().join("\n"),
    );
}

/// GPUs each of the env's nodes offers, as the API server has them.
async fn gpu_capacity(env: &TestEnv) -> BTreeMap<String, u32> {
    let selector = format!("{ENV_LABEL}={}", env.name);
    let nodes = env.nodes().list(&ListParams::default().labels(&selector)).await.expect("list nodes");
    nodes
        .items
        .iter()
        .map(|n| {
            let gpus = n.status.as_ref().and_then(|s| s.allocatable.as_ref()?.get(GPU)?.0.parse().ok()).unwrap_or(0);
            (n.name_any(), gpus)
        })
        .collect()
}

struct Outcome {
    checker: Checker,
    /// When each job's PodGroup was submitted, from the start of the run.
    submitted: Vec<Duration>,
    /// When the last pod had been created.
    submission_done: Duration,
    completed: bool,
}

/// Watches the namespace's pods, submits the burst once the watch is up, and
/// checks every event until all pods succeeded or the deadline passed.
async fn run_burst(env: &TestEnv, jobs: &[GangJob], capacity: BTreeMap<String, u32>, deadline: Instant) -> Outcome {
    let epoch = Instant::now();
    let mut checker = Checker::new(jobs, capacity, BIND_WINDOW);
    let (watching, watch_is_up) = tokio::sync::oneshot::channel();
    let observe = observe(env.pods(), &mut checker, epoch, deadline, watching);
    let submit = async {
        watch_is_up.await.expect("the pod watch starts");
        submit(env, jobs, epoch).await
    };
    let (completed, (submitted, submission_done)) = tokio::join!(observe, submit);
    Outcome { checker, submitted, submission_done, completed }
}

/// Creates each job's PodGroup and then its pods, job after job, as
/// knavigator does. Returns when each job was submitted and when all were.
async fn submit(env: &TestEnv, jobs: &[GangJob], epoch: Instant) -> (Vec<Duration>, Duration) {
    let groups: Api<PodGroup> = Api::namespaced(env.client.clone(), &env.name);
    let pods = env.pods();
    let mut submitted = Vec::with_capacity(jobs.len());
    for job in jobs {
        submitted.push(epoch.elapsed());
        let spec = PodGroupSpec { min_member: Some(job.pods as i32), ..Default::default() };
        groups.create(&PostParams::default(), &PodGroup::new(&job.name, spec)).await.expect("create PodGroup");
        futures::stream::iter(0..job.pods)
            .map(|i| {
                let (pods, pod) = (pods.clone(), member_pod(env, job, i));
                async move { pods.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_or_else(|e| panic!("creating the pods of {}: {e}", job.name));
    }
    (submitted, epoch.elapsed())
}

fn member_name(job: &GangJob, index: u32) -> String {
    format!("{}-{index}", job.name)
}

/// Member `index` of a job: asks the job's GPUs per pod, names its PodGroup,
/// and finishes after the job's run time.
fn member_pod(env: &TestEnv, job: &GangJob, index: u32) -> Pod {
    let mut pod = env.pod(&member_name(job, index), job.gpus_per_pod);
    pod.metadata.labels = Some([(POD_GROUP_LABEL.to_string(), job.name.clone())].into());
    let run_for = format!("{}s", job.run_for.as_secs());
    pod.metadata.annotations = Some([(RUN_FOR_ANNOTATION.to_string(), run_for)].into());
    let resources = json!({"nvidia.com/gpu": job.gpus_per_pod.to_string(), "cpu": "1", "memory": "1Gi"});
    let container = &mut pod.spec.as_mut().unwrap().containers[0];
    container.resources.as_mut().unwrap().requests = Some(serde_json::from_value(resources).unwrap());
    pod
}

/// Feeds every pod event (and a tick a second) to the checker until all pods
/// succeeded (true) or the deadline passed (false).
async fn observe(
    pods: Api<Pod>,
    checker: &mut Checker,
    epoch: Instant,
    deadline: Instant,
    watching: tokio::sync::oneshot::Sender<()>,
) -> bool {
    let mut watching = Some(watching);
    let events = watcher(pods, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let timeout = tokio::time::sleep_until(deadline.into());
    let mut timeout = std::pin::pin!(timeout);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    checker.observe(epoch.elapsed(), &pod.name_any(), pod_state(&pod));
                }
                Some(Ok(watcher::Event::Delete(pod))) => checker.deleted(epoch.elapsed(), &pod.name_any()),
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(tx) = watching.take() {
                        let _ = tx.send(());
                    }
                }
                Some(Ok(watcher::Event::Init)) => {}
                // The watcher re-lists after its backoff; the checker's
                // records only move forward, so a re-list is harmless.
                Some(Err(e)) => eprintln!("pod watch: {e}"),
                None => panic!("the pod watch ended"),
            },
            _ = tick.tick() => checker.tick(epoch.elapsed()),
            _ = &mut timeout => return false,
        }
        if checker.all_succeeded() {
            return true;
        }
    }
}

fn pod_state(pod: &Pod) -> PodState {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let stage = match (node.is_some(), pod.status.as_ref().and_then(|s| s.phase.as_deref())) {
        (false, _) => Stage::Pending,
        (true, Some("Running")) => Stage::Running,
        (true, Some("Succeeded")) => Stage::Succeeded,
        (true, Some("Failed")) => Stage::Failed,
        (true, _) => Stage::Bound,
    };
    PodState { node, stage }
}

/// Deletes the run's pods and PodGroups and waits (a minute at most) until
/// they are gone, so that none is left on a node the teardown removes. Never
/// panics: the teardown must follow.
async fn clean_up(env: &TestEnv) {
    let (pods, groups): (Api<Pod>, Api<PodGroup>) = (env.pods(), Api::namespaced(env.client.clone(), &env.name));
    let all = ListParams::default();
    let _ = pods.delete_collection(&DeleteParams::default(), &all).await;
    let _ = groups.delete_collection(&DeleteParams::default(), &all).await;
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let left = match (pods.list(&all).await, groups.list(&all).await) {
            (Ok(p), Ok(g)) => p.items.len() + g.items.len(),
            _ => usize::MAX,
        };
        if left == 0 {
            return;
        }
        if Instant::now() > limit {
            eprintln!("clean-up: pods or PodGroups of {} still there after a minute", env.name);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The commit the scheduler was built from, for the report.
fn revision() -> String {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    out.ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().into())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// The invariant checker: pure, fed with what the watch saw and when.

/// How far a pod got; only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Pending,
    Bound,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct PodState {
    node: Option<String>,
    stage: Stage,
}

#[derive(Debug, Default)]
struct Member {
    gang: usize,
    gpus: u32,
    node: Option<String>,
    stage: Option<Stage>,
    bound_at: Option<Duration>,
    running_at: Option<Duration>,
    finished_at: Option<Duration>,
}

#[derive(Debug, Default)]
struct GangRecord {
    name: String,
    size: u32,
    bound: u32,
    succeeded: u32,
    /// When its first member was seen running.
    running_since: Option<Duration>,
    first_bind: Option<Duration>,
    last_bind: Option<Duration>,
    last_finished: Option<Duration>,
    /// When it was found partial, if ever.
    partial_at: Option<Duration>,
}

impl GangRecord {
    fn bind_spread(&self) -> Option<Duration> {
        Some(self.last_bind? - self.first_bind?)
    }
}

struct Checker {
    window: Duration,
    capacity: BTreeMap<String, u32>,
    /// GPUs held on each node by bound pods that have not finished.
    used: BTreeMap<String, u32>,
    gangs: Vec<GangRecord>,
    members: BTreeMap<String, Member>,
    violations: Vec<String>,
    overcommits: usize,
}

impl Checker {
    fn new(jobs: &[GangJob], capacity: BTreeMap<String, u32>, window: Duration) -> Self {
        let mut members = BTreeMap::new();
        for (gang, job) in jobs.iter().enumerate() {
            for i in 0..job.pods {
                members.insert(member_name(job, i), Member { gang, gpus: job.gpus_per_pod, ..Default::default() });
            }
        }
        let gangs =
            jobs.iter().map(|j| GangRecord { name: j.name.clone(), size: j.pods, ..Default::default() }).collect();
        Self { window, capacity, used: BTreeMap::new(), gangs, members, violations: vec![], overcommits: 0 }
    }

    /// A watch event: pod `name` is now in `state`, `at` after the start.
    fn observe(&mut self, at: Duration, name: &str, state: PodState) {
        let Some(member) = self.members.get(name) else { return };
        let (gang, gpus, old, new) = (member.gang, member.gpus, member.stage, state.stage);
        if old >= Some(new) {
            return;
        }
        // Checked before the change lands too: when the last member binds,
        // the gang was partial until this very moment.
        self.check_partial(gang, at);
        let crossed = |stage: Stage| old < Some(stage) && new >= stage;
        if crossed(Stage::Bound) {
            let node = state.node.unwrap_or_default();
            let member = self.members.get_mut(name).unwrap();
            member.node = Some(node.clone());
            member.bound_at = Some(at);
            let record = &mut self.gangs[gang];
            record.bound += 1;
            record.first_bind.get_or_insert(at);
            record.last_bind = Some(at);
            *self.used.entry(node.clone()).or_default() += gpus;
            self.check_node(at, &node);
        }
        let member = self.members.get_mut(name).unwrap();
        member.stage = Some(new);
        let record = &mut self.gangs[gang];
        if crossed(Stage::Running) {
            member.running_at = Some(at);
            record.running_since.get_or_insert(at);
        }
        if crossed(Stage::Succeeded) {
            member.finished_at = Some(at);
            record.last_finished = Some(at);
            if let Some(used) = member.node.as_ref().and_then(|n| self.used.get_mut(n)) {
                *used -= gpus;
            }
            if new == Stage::Failed {
                self.violations.push(format!("{}: pod {name} failed", secs(at)));
            } else {
                record.succeeded += 1;
            }
        }
        self.check_partial(gang, at);
    }

    fn deleted(&mut self, at: Duration, name: &str) {
        if self.members.get(name).is_some_and(|m| m.finished_at.is_none()) {
            self.violations.push(format!("{}: pod {name} was deleted before it finished", secs(at)));
        }
    }

    /// Time passing with no event: a gang can become partial by waiting.
    fn tick(&mut self, at: Duration) {
        for gang in 0..self.gangs.len() {
            self.check_partial(gang, at);
        }
    }

    fn check_partial(&mut self, gang: usize, at: Duration) {
        let g = &mut self.gangs[gang];
        let Some(since) = g.running_since else { return };
        if g.bound < g.size && at.saturating_sub(since) > self.window && g.partial_at.is_none() {
            g.partial_at = Some(at);
            let unbound = g.size - g.bound;
            self.violations.push(format!(
                "{}: gang {} ran partially: a member running since {}, {unbound} of its {} members still unbound",
                secs(at),
                g.name,
                secs(since),
                g.size,
            ));
        }
    }

    fn check_node(&mut self, at: Duration, node: &str) {
        let used = self.used.get(node).copied().unwrap_or(0);
        let Some(&capacity) = self.capacity.get(node) else {
            self.violations.push(format!("{}: a pod was bound to {node:?}, not a node of this test", secs(at)));
            return;
        };
        if used > capacity {
            self.overcommits += 1;
            let holders: Vec<&str> = self
                .members
                .iter()
                .filter(|(_, m)| m.node.as_deref() == Some(node) && m.finished_at.is_none())
                .map(|(n, _)| n.as_str())
                .collect();
            self.violations.push(format!(
                "{}: {node} has {used} of its {capacity} GPUs bound, to {}",
                secs(at),
                holders.join(", ")
            ));
        }
    }

    fn succeeded(&self) -> usize {
        self.members.values().filter(|m| m.stage == Some(Stage::Succeeded)).count()
    }

    fn all_succeeded(&self) -> bool {
        self.succeeded() == self.members.len()
    }

    fn partial_gangs(&self) -> usize {
        self.gangs.iter().filter(|g| g.partial_at.is_some()).count()
    }

    fn unfinished(&self) -> Vec<String> {
        self.gangs
            .iter()
            .filter(|g| g.succeeded < g.size)
            .map(|g| format!("{} ({} of {} bound, {} succeeded)", g.name, g.bound, g.size, g.succeeded))
            .collect()
    }

    /// How long the succeeded pods were seen running (kwok's part of the makespan).
    fn run_times(&self) -> Vec<Duration> {
        self.members
            .values()
            .filter(|m| m.stage == Some(Stage::Succeeded))
            .filter_map(|m| Some(m.finished_at? - m.running_at?))
            .collect()
    }

    /// GPU-seconds held by bound pods, from their binding to their end.
    fn gpu_seconds(&self) -> f64 {
        let held = |m: &Member| Some((m.finished_at? - m.bound_at?).as_secs_f64() * f64::from(m.gpus));
        self.members.values().filter_map(held).sum()
    }

    fn widest_bind_spread(&self) -> Option<&GangRecord> {
        self.gangs.iter().filter(|g| g.bind_spread().is_some()).max_by_key(|g| g.bind_spread())
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Outcome {
    /// The makespan: first submission to the last pod finished.
    fn makespan(&self) -> Option<Duration> {
        let last = self.checker.gangs.iter().map(|g| g.last_finished).max()??;
        Some(last - self.submitted.first().copied()?)
    }

    fn report(&self, jobs: &[GangJob], total_gpus: u32, lower_bound: Duration) -> String {
        let c = &self.checker;
        let pods: u32 = jobs.iter().map(|j| j.pods).sum();
        let verdict = match (self.completed, c.violations.is_empty()) {
            (true, true) => "passed".to_string(),
            (true, false) => format!("failed: {} violation(s)", c.violations.len()),
            (false, _) => format!("failed: time box ran out with {} of {pods} pods Succeeded", c.succeeded()),
        };
        let makespan = self.makespan().filter(|_| self.completed);
        let ratio = makespan.map_or("-".into(), |m| format!("{:.3}", m.as_secs_f64() / lower_bound.as_secs_f64()));
        let occupancy = makespan.map_or("-".into(), |m| {
            format!("{:.1} %", 100.0 * c.gpu_seconds() / (m.as_secs_f64() * f64::from(total_gpus)))
        });
        let runs = c.run_times();
        let run_time = match (runs.iter().sum::<Duration>().checked_div(runs.len() as u32), runs.iter().max()) {
            (Some(mean), Some(max)) => format!("{} mean, {} max", secs(mean), secs(*max)),
            _ => "-".into(),
        };
        let spread = c
            .widest_bind_spread()
            .map_or("-".into(), |g| format!("{} ({}, {} pods)", secs(g.bind_spread().unwrap()), g.name, g.size));
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "# Gang burst (NVIDIA knavigator) on the local control plane\n");
        let _ = writeln!(
            w,
            "Written by `cargo test --test gang_burst`: {} jobs (`scheduling.x-k8s.io` PodGroups, minMember = \
             pods), {pods} pods of 8 GPUs running 30 s each, submitted one job after another at the start, on {} \
             fake nodes with {total_gpus} GPUs (`{FLEET}`, kwok as the kubelet), one `phalanx run` built from \
             `{}`. A gang ran partially if a member ran for more than {} while another member was unbound.\n",
            jobs.len(),
            c.capacity.len(),
            revision(),
            secs(BIND_WINDOW),
        );
        let _ = writeln!(w, "| metric | value |\n|---|---|");
        let _ = writeln!(w, "| result | {verdict} |");
        let _ = writeln!(
            w,
            "| makespan (first submission to last pod Succeeded) | {} |",
            makespan.map_or("-".into(), secs)
        );
        let _ = writeln!(w, "| lower bound (GPU time / GPUs) | {} |", secs(lower_bound));
        let _ = writeln!(w, "| makespan / lower bound | {ratio} |");
        let _ = writeln!(w, "| GPUs held (bound to finished) over the makespan | {occupancy} |");
        let _ = writeln!(w, "| pod run time seen (Running to Succeeded; 30 s asked) | {run_time} |");
        let _ = writeln!(w, "| max bind spread within a gang | {spread} |");
        let _ = writeln!(w, "| gangs that ran partially | {} of {} |", c.partial_gangs(), c.gangs.len());
        let _ = writeln!(w, "| GPU over-commits | {} |", c.overcommits);
        let _ = writeln!(w, "| submission of all jobs | {} |", secs(self.submission_done));
        let _ = writeln!(w, "\n## Per gang (seconds from the first submission)\n");
        let _ =
            writeln!(w, "| job | pods | submitted | first bind | last bind | bind spread | last finished | partial |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
        let origin = self.submitted.first().copied().unwrap_or_default();
        let at =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.saturating_sub(origin).as_secs_f64()));
        for (g, submitted) in c.gangs.iter().zip(&self.submitted) {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                g.name,
                g.size,
                at(Some(*submitted)),
                at(g.first_bind),
                at(g.last_bind),
                g.bind_spread().map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
                at(g.last_finished),
                g.partial_at.map_or("no".into(), |d| at(Some(d))),
            );
        }
        if !c.violations.is_empty() {
            let _ = writeln!(w, "\n## First violations\n");
            for v in c.violations.iter().take(20) {
                let _ = writeln!(w, "- {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod checker {
    //! The checker on made-up event sequences: it must catch what a
    //! one-by-one scheduler does, and pass what a gang scheduler does.
    use super::*;

    fn job(name: &str, pods: u32) -> GangJob {
        GangJob { name: name.into(), pods, gpus_per_pod: 8, run_for: Duration::from_secs(30) }
    }

    fn two_nodes() -> BTreeMap<String, u32> {
        [("n0".to_string(), 8), ("n1".to_string(), 8)].into()
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn on(node: &str, stage: Stage) -> PodState {
        PodState { node: Some(node.into()), stage }
    }

    #[test]
    fn a_gang_bound_within_the_window_is_whole() {
        let mut c = Checker::new(&[job("a", 2)], two_nodes(), BIND_WINDOW);
        c.observe(s(1.0), "a-0", on("n0", Stage::Bound));
        c.observe(s(1.1), "a-0", on("n0", Stage::Running));
        c.tick(s(2.0));
        c.observe(s(2.5), "a-1", on("n1", Stage::Running));
        c.tick(s(20.0));
        c.observe(s(31.1), "a-0", on("n0", Stage::Succeeded));
        c.observe(s(32.5), "a-1", on("n1", Stage::Succeeded));
        c.tick(s(40.0));
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert!(c.all_succeeded());
        assert_eq!(c.gangs[0].bind_spread(), Some(s(1.5)));
    }

    #[test]
    fn a_member_running_while_another_waits_past_the_window_is_caught_by_the_tick() {
        let mut c = Checker::new(&[job("a", 2)], two_nodes(), BIND_WINDOW);
        c.observe(s(1.0), "a-0", on("n0", Stage::Running));
        c.tick(s(5.0));
        assert!(c.violations.is_empty());
        c.tick(s(6.5));
        assert_eq!(c.partial_gangs(), 1, "{:?}", c.violations);
        c.tick(s(7.5));
        assert_eq!(c.violations.len(), 1, "a gang is reported once");
    }

    #[test]
    fn a_late_last_member_is_caught_when_it_binds_even_between_ticks() {
        let mut c = Checker::new(&[job("a", 2)], two_nodes(), BIND_WINDOW);
        c.observe(s(1.0), "a-0", on("n0", Stage::Running));
        c.tick(s(5.9));
        c.observe(s(6.2), "a-1", on("n1", Stage::Bound));
        assert_eq!(c.partial_gangs(), 1, "{:?}", c.violations);
    }

    #[test]
    fn a_member_seen_only_once_finished_counts_as_bound_running_and_done() {
        // After a re-list the watch may show a pod's latest state only.
        let mut c = Checker::new(&[job("a", 1)], two_nodes(), BIND_WINDOW);
        c.observe(s(40.0), "a-0", on("n0", Stage::Succeeded));
        c.observe(s(41.0), "a-0", on("n0", Stage::Running));
        assert!(c.violations.is_empty());
        assert!(c.all_succeeded());
        assert_eq!(c.used["n0"], 0);
    }

    #[test]
    fn two_pods_on_one_node_over_commit_it_until_one_finishes() {
        let mut c = Checker::new(&[job("a", 1), job("b", 1), job("c", 1)], two_nodes(), BIND_WINDOW);
        c.observe(s(1.0), "a-0", on("n0", Stage::Running));
        c.observe(s(2.0), "b-0", on("n0", Stage::Bound));
        assert_eq!(c.overcommits, 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("a-0, b-0"), "{:?}", c.violations);
        c.observe(s(31.0), "a-0", on("n0", Stage::Succeeded));
        c.observe(s(32.0), "c-0", on("elsewhere", Stage::Bound));
        assert_eq!(c.overcommits, 1);
        assert!(c.violations[1].contains("not a node of this test"), "{:?}", c.violations);
    }

    #[test]
    fn a_failed_or_deleted_member_is_a_violation() {
        let mut c = Checker::new(&[job("a", 2)], two_nodes(), BIND_WINDOW);
        c.observe(s(1.0), "a-0", on("n0", Stage::Failed));
        c.deleted(s(2.0), "a-1");
        assert_eq!(c.violations.len(), 2, "{:?}", c.violations);
        assert!(!c.all_succeeded());
    }
}
