//! The simulation loop: replays jobs against a fleet through the production
//! `Scheduler`, on a simulated clock that jumps from one event to the next.
//!
//! It drives the scheduler as `shell::scheduling_loop` does: watch events
//! in (pods created, deleted, bound), outcomes of its binds and evictions
//! back, a retry of waiting gangs after each change and every
//! `UNSCHEDULABLE_FLUSH`, and every gang ready at that instant decided. A
//! fake API server carries out its actions: a bind succeeds at once, a pod
//! runs its time and finishes, an eviction is accepted and the victim is
//! gone after its grace period, and its job is re-created, as a training
//! operator restarts a job that lost pods. The scheduler's clock is a fixed
//! base `Instant` plus the simulated time, so backoff and timeouts behave as
//! in the scheduler without anyone sleeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use phalanx_core::framework::Profile;
use phalanx_core::gang::{GangId, GangKind, GangObject, GangSpec};
use phalanx_core::gang_status::WallClock;
use phalanx_core::node::NodeSpec;
use phalanx_core::pod::{PodInfo, PodKey, PodPhase};
use phalanx_core::quota::QuotaKind;
use phalanx_core::resources::{CPU, GPU, PODS, Resources};
use phalanx_core::scheduler::PreemptionSettings;
use phalanx_core::scheduler::{
    Action, Attempt, BindOutcome, BindResult, Change, ClusterEvent, EvictOutcome, EvictResult, Progress, Recorded,
    Scheduler, SchedulerConfig, Step,
};
use phalanx_core::scheduler::{BackoffPolicy, GangKey, UNSCHEDULABLE_FLUSH};
use phalanx_core::snapshot::TopologySettings;

use super::quality::{best_score, placement_score, quality};
use super::trace::Job;

/// The wall-clock time a simulation starts at (timestamps are never read from the real clock).
const SIMULATION_EPOCH: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

/// How the simulated scheduler is configured and how the simulated cluster behaves.
#[derive(Debug)]
pub struct Settings {
    /// Pods name the first profile's scheduler (the simulation takes the profiles).
    pub profiles: Vec<Profile>,
    pub backoff: BackoffPolicy,
    pub preemption: PreemptionSettings,
    pub topology: TopologySettings,
    /// From an eviction to the victim's resources being free (its grace period).
    pub eviction_grace: Duration,
    /// From a bind to the pod running (image pull, container start).
    pub startup: Duration,
    /// Simulated time after which the run stops, jobs still unfinished.
    pub horizon: Duration,
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: Job,
    /// When all its pods first ran together (after startup).
    pub started: Option<Duration>,
    pub finished: Option<Duration>,
    /// Time spent pending, over all its runs (a preempted job waits again).
    pub queued: Duration,
    /// Times it was preempted and re-created.
    pub evictions: u32,
    /// Pods placed in the decision that started it (all of them, for a gang).
    pub placed_together: u32,
    /// Placement score and best achievable score (GB/s) at its first start.
    pub score: Option<f64>,
    pub best: Option<f64>,
}

impl JobRecord {
    pub fn quality(&self) -> Option<f64> {
        Some(quality(self.score?, self.best?))
    }
}

/// The cluster at one instant of simulated time, after that instant's decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Duration,
    pub allocated_gpus: u64,
    pub pending_jobs: usize,
    pub pending_pods: usize,
    pub running_jobs: usize,
    /// Free GPUs on nodes where no pending pod's GPU request fits.
    pub stranded_gpus: u64,
    /// Nodes partly used: some GPUs taken, some free.
    pub broken_nodes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub jobs: Vec<JobRecord>,
    pub samples: Vec<Sample>,
    pub nodes: usize,
    pub total_gpus: u64,
    /// Decisions to preempt, and the pods they evicted.
    pub preemptions: usize,
    pub evicted_pods: usize,
    /// Wall-clock time of each decision (the core's speed, not simulated time).
    pub decision_times: Vec<Duration>,
    /// The run reached the horizon with work left.
    pub hit_horizon: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Submit(usize),
    /// A job's run ends (ignored if the run was preempted meanwhile).
    Finish {
        job: usize,
        run: u32,
    },
    /// Victims whose grace period is over.
    Gone(Vec<String>),
}

struct JobState {
    run: u32,
    running: HashSet<String>,
    pending_since: Option<Duration>,
}

/// A member the scheduler asked to bind.
struct BindRequest {
    uid: String,
    key: PodKey,
    node: String,
    gpus: Vec<u32>,
}

struct Simulation<'a> {
    jobs: &'a [Job],
    settings: Settings,
    scheduler: Scheduler,
    scheduler_name: String,
    /// The fake API server's pods, by UID.
    pods: HashMap<String, PodInfo>,
    base: Instant,
    now: Duration,
    events: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    next_seq: u64,
    state: Vec<JobState>,
    records: Vec<JobRecord>,
    job_of: HashMap<String, usize>,
    allocated: u64,
    outcome_samples: Vec<Sample>,
    preemptions: usize,
    evicted_pods: usize,
    decision_times: Vec<Duration>,
    finished: usize,
}

/// Runs the jobs on the nodes; `progress` hears (jobs finished, jobs) as jobs end.
pub fn simulate(
    jobs: &[Job],
    nodes: Vec<NodeSpec>,
    mut settings: Settings,
    progress: &mut dyn FnMut(usize),
) -> Outcome {
    let node_count = nodes.len();
    let total_gpus = nodes.iter().map(|n| n.allocatable.get(GPU).max(0) as u64).sum();
    let scheduler_name = settings.profiles.first().map(|p| p.scheduler_name.clone()).unwrap_or_default();
    let base = Instant::now();
    let scheduler = Scheduler::new(SchedulerConfig {
        profiles: std::mem::take(&mut settings.profiles),
        topology: settings.topology.clone(),
        backoff: settings.backoff,
        preemption: settings.preemption,
        gang_kinds: HashSet::from([GangKind::PodGroup]),
        elastic_quotas: false,
        dynamic_resources: false,
        volumes: false,
        wall_clock: WallClock { instant: base, timestamp: SIMULATION_EPOCH },
        class_resources: Default::default(),
    });
    let mut sim = Simulation {
        jobs,
        scheduler,
        settings,
        scheduler_name,
        pods: HashMap::new(),
        base,
        now: Duration::ZERO,
        events: BinaryHeap::new(),
        next_seq: 0,
        state: jobs.iter().map(|_| JobState { run: 0, running: HashSet::new(), pending_since: None }).collect(),
        records: jobs
            .iter()
            .map(|job| JobRecord {
                job: job.clone(),
                started: None,
                finished: None,
                queued: Duration::ZERO,
                evictions: 0,
                placed_together: 0,
                score: None,
                best: None,
            })
            .collect(),
        job_of: HashMap::new(),
        allocated: 0,
        outcome_samples: Vec::new(),
        preemptions: 0,
        evicted_pods: 0,
        decision_times: Vec::new(),
        finished: 0,
    };
    sim.list(nodes);
    for (i, job) in jobs.iter().enumerate() {
        sim.at(job.submit, Event::Submit(i));
    }
    let hit_horizon = sim.run(progress);
    Outcome {
        jobs: sim.records,
        samples: sim.outcome_samples,
        nodes: node_count,
        total_gpus,
        preemptions: sim.preemptions,
        evicted_pods: sim.evicted_pods,
        decision_times: sim.decision_times,
        hit_horizon,
    }
}

/// Replays a live run's recording (`PHALANX_RECORD`) on the simulated
/// clock: each input at its time, each retry and round of decisions where
/// the live loop took it, outcomes as the API server gave them. Returns
/// every action the scheduler asked for, in order.
pub fn replay(recording: &[Recorded], config: SchedulerConfig) -> Vec<Action> {
    // The recording starts at the wall clock's instant.
    let base = config.wall_clock.instant;
    let mut scheduler = Scheduler::new(config);
    let mut actions = Vec::new();
    for Recorded { at_ms, step } in recording {
        let now = base + Duration::from_millis(*at_ms);
        match step.clone() {
            Step::Event(event) => {
                let _ = scheduler.apply(event, now);
            }
            Step::Bind(outcome) => {
                let _ = scheduler.apply_bind_outcome(outcome, now);
            }
            Step::Eviction(outcome) => scheduler.apply_eviction_outcome(outcome, now),
            Step::GroupStatus(outcome) => scheduler.apply_status_outcome(outcome, now),
            Step::RetryWaiting => scheduler.retry_waiting(now),
            Step::Decide => loop {
                let decided = scheduler.next_actions(now);
                let progress = Progress::of(&decided);
                actions.extend(decided);
                if progress == Progress::NothingReady {
                    break;
                }
            },
        }
    }
    actions
}

impl Simulation<'_> {
    fn at(&mut self, when: Duration, event: Event) {
        self.next_seq += 1;
        self.events.push(Reverse((when, self.next_seq, event)));
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// The watches' first lists: the fleet, and no pods, gangs, quotas or budgets yet.
    fn list(&mut self, nodes: Vec<NodeSpec>) {
        let now = self.instant();
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        let mut lists = vec![
            ClusterEvent::NodesListed(names),
            ClusterEvent::PodsListed(HashSet::new()),
            ClusterEvent::GangsListed { kind: GangKind::PodGroup, ids: HashSet::new() },
            ClusterEvent::QuotasListed { kind: QuotaKind::Hard, keys: vec![] },
            ClusterEvent::BudgetsListed(vec![]),
        ];
        let applied = nodes.into_iter().map(ClusterEvent::NodeApplied).chain(lists.drain(..));
        for event in applied {
            // Nothing waits yet: no retry is due.
            let _ = self.scheduler.apply(event, now);
        }
    }

    /// Steps from event to event. Returns whether the horizon cut the run short.
    fn run(&mut self, progress: &mut dyn FnMut(usize)) -> bool {
        let mut next_flush = UNSCHEDULABLE_FLUSH;
        loop {
            let next_event = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_wakeup = self.scheduler.next_wakeup().map(|w| w.saturating_duration_since(self.base));
            // The scheduler's periodic retry of unschedulable gangs matters only
            // while something can still change.
            let flush =
                (next_event.is_some() && self.scheduler.queue_lengths().unschedulable > 0).then_some(next_flush);
            let Some(next) = [next_event, next_wakeup, flush].into_iter().flatten().min() else {
                return false;
            };
            if next > self.settings.horizon {
                return true;
            }
            self.now = next.max(self.now);
            let mut changed = false;
            while let Some(Reverse((t, _, _))) = self.events.peek()
                && *t <= self.now
            {
                let Reverse((_, _, event)) = self.events.pop().expect("peeked");
                changed |= self.apply(event, progress) == Change::MayFitMore;
            }
            if self.now >= next_flush {
                changed = true;
                next_flush = self.now + UNSCHEDULABLE_FLUSH;
            }
            if changed {
                self.scheduler.retry_waiting(self.instant());
            }
            while self.decide_next() == Progress::Decided {}
            self.sample();
        }
    }

    /// Tells the scheduler what the fake API server saw.
    fn watch(&mut self, event: ClusterEvent) {
        // The simulation retries waiting gangs as the trace's events say: a
        // job that ended, victims gone.
        let _ = self.scheduler.apply(event, self.instant());
    }

    /// Applies one event.
    fn apply(&mut self, event: Event, progress: &mut dyn FnMut(usize)) -> Change {
        match event {
            Event::Submit(job) => {
                let object = GangObject::Valid(GangSpec::of_size(self.jobs[job].pods as usize));
                self.watch(ClusterEvent::GangApplied { id: self.gang_id(job), object });
                self.create_pods(job, self.jobs[job].pods);
                Change::NoNewRoom
            }
            Event::Finish { job, run } if self.state[job].run == run => {
                for uid in std::mem::take(&mut self.state[job].running) {
                    self.delete_pod(&uid);
                }
                // Members re-created after a preemption took spares end with the job.
                let id = self.gang_id(job);
                let key = GangKey::Gang(id.clone());
                let queued: Vec<String> = self.scheduler.queued_members(&key).map(|p| p.uid.clone()).collect();
                for uid in queued {
                    self.delete_pod(&uid);
                }
                self.watch(ClusterEvent::GangDeleted(id));
                self.state[job].pending_since = None;
                self.records[job].finished = Some(self.now);
                self.finished += 1;
                progress(self.finished);
                Change::MayFitMore
            }
            Event::Finish { .. } => Change::NoNewRoom,
            Event::Gone(victims) => {
                let mut hit: Vec<usize> = Vec::new();
                for uid in victims {
                    let Some(&job) = self.job_of.get(&uid) else { continue };
                    if self.state[job].running.remove(&uid) {
                        self.delete_pod(&uid);
                        self.evicted_pods += 1;
                        hit.push(job);
                    }
                }
                hit.sort_unstable();
                hit.dedup();
                for job in hit {
                    let lost = self.jobs[job].pods - self.state[job].running.len() as u32;
                    if self.state[job].running.is_empty() {
                        // The whole gang went: its run is over, and it starts again.
                        self.state[job].run += 1;
                        self.records[job].evictions += 1;
                    }
                    self.create_pods(job, lost);
                }
                Change::MayFitMore
            }
        }
    }

    fn gang_id(&self, job: usize) -> GangId {
        let job = &self.jobs[job];
        GangId::new(GangKind::PodGroup, &job.namespace, &job.name)
    }

    /// Creates `count` pods of the job (all of them, or the ones a
    /// preemption took).
    fn create_pods(&mut self, job: usize, count: u32) {
        let spec = &self.jobs[job];
        let run = self.state[job].run;
        let requests = Resources::new().with(GPU, i64::from(spec.gpus_per_pod)).with(CPU, 1000).with(PODS, 1);
        let gang = self.gang_id(job);
        let mut created = Vec::with_capacity(count as usize);
        for i in 0..count {
            // Names as a job controller gives them: a new suffix per creation.
            let name = format!("{}-r{run}-{}-{i}", spec.name, self.next_seq);
            created.push(PodInfo {
                uid: format!("{}/{name}", spec.namespace),
                key: PodKey { namespace: spec.namespace.clone(), name },
                resource_version: None,
                scheduler_name: self.scheduler_name.clone(),
                node_name: None,
                phase: PodPhase::Pending,
                terminating: false,
                requests: requests.clone(),
                node_selector: Default::default(),
                required_terms: vec![],
                preferred_terms: vec![],
                tolerations: vec![],
                priority: spec.priority,
                preempt_never: false,
                labels: Default::default(),
                created: self.now.as_secs() as i64,
                job: Some(gang.clone()),
                gpu_indices: None,
                claims: vec![],
                host_ports: vec![],
                affinity: Default::default(),
                spread: vec![],
                controller: None,
                shown_reason: None,
                volume_claims: vec![],
            });
        }
        for pod in created {
            self.job_of.insert(pod.uid.clone(), job);
            self.pods.insert(pod.uid.clone(), pod.clone());
            self.watch(ClusterEvent::PodApplied { pod, gated: false });
        }
        self.next_seq += 1;
        self.state[job].pending_since.get_or_insert(self.now);
    }

    /// The pod is gone from the API server (finished, evicted, or its job ended).
    fn delete_pod(&mut self, uid: &str) {
        if let Some(p) = self.scheduler.snapshot().placement(uid) {
            self.allocated -= p.requests.get(GPU).max(0) as u64;
        }
        self.pods.remove(uid);
        self.job_of.remove(uid);
        self.watch(ClusterEvent::PodDeleted { uid: uid.to_string() });
    }

    /// Asks the scheduler for its next decision and carries out what it asks.
    fn decide_next(&mut self) -> Progress {
        let now = self.instant();
        let started = Instant::now();
        let actions = self.scheduler.next_actions(now);
        let elapsed = started.elapsed();
        let progress = Progress::of(&actions);
        let (mut binds, mut victims) = (Vec::new(), Vec::new());
        for action in actions {
            match action {
                Action::Bind { uid, key, node, gpus, .. } => binds.push(BindRequest { uid, key, node, gpus }),
                Action::Evict { uid, key, preemptor } => {
                    // The Eviction API accepts; the pod terminates over its grace period.
                    let outcome = EvictOutcome { uid: uid.clone(), key, preemptor, result: EvictResult::Evicted };
                    self.scheduler.apply_eviction_outcome(outcome, now);
                    victims.push(uid);
                }
                Action::Attempted { result, .. } => {
                    self.decision_times.push(elapsed);
                    if let Attempt::Preempting { .. } = result {
                        self.preemptions += 1;
                        // Victims already leaving for another preemptor are not asked for twice.
                        let gone = std::mem::take(&mut victims);
                        self.at(self.now + self.settings.eviction_grace, Event::Gone(gone));
                    }
                }
                // The simulated cluster keeps no PodGroup status (nothing
                // feeds its watches), so no status write is ever asked for.
                Action::NodeGone { .. } | Action::Report(_) | Action::WriteGroupStatus(_) => {}
            }
        }
        if !binds.is_empty() {
            self.bind(binds);
        }
        progress
    }

    /// The binds all succeed: the members are bound where the scheduler put them.
    fn bind(&mut self, placed: Vec<BindRequest>) {
        let Some(&job) = placed.first().and_then(|b| self.job_of.get(&b.uid)) else { return };
        let starts = self.state[job].running.is_empty();
        if starts && self.records[job].started.is_none() {
            // Quality against the best on the GPUs that were free before this placement.
            let uids: Vec<&str> = placed.iter().map(|b| b.uid.as_str()).collect();
            let gpus_per_pod = self.jobs[job].gpus_per_pod as usize;
            let best = self.scheduler.without_pods(&uids, |snapshot| best_score(snapshot, uids.len(), gpus_per_pod));
            self.records[job].best = Some(best);
            self.records[job].score = Some(placement_score(self.scheduler.snapshot(), uids.iter().copied()));
            self.records[job].placed_together = uids.len() as u32;
        }
        let now = self.instant();
        for BindRequest { uid, key, node, gpus } in placed {
            let outcome = BindOutcome { uid: uid.clone(), key, node: node.clone(), result: BindResult::Bound };
            let _ = self.scheduler.apply_bind_outcome(outcome, now);
            let Some(pod) = self.pods.get_mut(&uid) else { continue };
            pod.node_name = Some(node);
            pod.gpu_indices = Some(gpus);
            pod.phase = PodPhase::Running;
            let pod = pod.clone();
            self.allocated += pod.gpu_count() as u64;
            self.watch(ClusterEvent::PodApplied { pod, gated: false });
            self.state[job].running.insert(uid);
        }
        if starts {
            let state = &mut self.state[job];
            let record = &mut self.records[job];
            if let Some(since) = state.pending_since.take() {
                record.queued += self.now - since;
            }
            let running_at = self.now + self.settings.startup;
            record.started.get_or_insert(running_at);
            let run = state.run;
            self.at(running_at + self.jobs[job].duration, Event::Finish { job, run });
        } else {
            self.state[job].pending_since = None;
        }
    }

    fn sample(&mut self) {
        let smallest_request = self.scheduler.queued_pods().map(PodInfo::gpu_count).min();
        let (mut stranded, mut broken) = (0u64, 0usize);
        for (spec, info) in self.scheduler.snapshot().nodes() {
            let free = info.free_of(GPU).max(0) as u64;
            let total = spec.allocatable.get(GPU).max(0) as u64;
            if free > 0 && free < total {
                broken += 1;
            }
            let usable = spec.ready && !spec.unschedulable;
            if smallest_request.is_some_and(|least| !usable || free < least as u64) {
                stranded += free;
            }
        }
        let pending_jobs = self.state.iter().filter(|s| s.pending_since.is_some()).count();
        let sample = Sample {
            at: self.now,
            allocated_gpus: self.allocated,
            pending_jobs,
            pending_pods: self.scheduler.queued_pod_count(),
            running_jobs: self.state.iter().filter(|s| !s.running.is_empty()).count(),
            stranded_gpus: stranded,
            broken_nodes: broken,
        };
        // One sample per instant: the last state at that instant wins.
        if self.outcome_samples.last().is_some_and(|s| s.at == sample.at) {
            self.outcome_samples.pop();
        }
        self.outcome_samples.push(sample);
    }
}
