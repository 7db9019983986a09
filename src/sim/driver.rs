//! The simulation loop: replays jobs against a fleet through the scheduler's
//! own core, on a simulated clock that jumps from one event to the next.
//!
//! It drives the core as `shell::scheduling_loop` does: pods enter the
//! queue as they are created; when capacity frees, the queue hears of a
//! cluster change and the gangs at the head of the line skip their backoff;
//! then every gang ready at that instant is popped and decided through
//! `GangScheduler::decide_and_settle` (holds, quotas, preemption). What the
//! shell does through the API server happens here at once or after a set
//! delay: a bind succeeds, a pod runs its time and finishes, a victim is gone
//! after its grace period and its job is re-created, as a training operator
//! restarts a job that lost pods. The queue's clock is a fixed base
//! `Instant` plus the simulated time, so backoff and timeouts behave as in
//! the scheduler without anyone sleeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::debug;

use super::quality::{best_score, placement_score, quality};
use super::trace::Job;
use crate::core::framework::Profile;
use crate::core::gang::{GangId, GangKind, GangObject, GangSpec};
use crate::core::gang_placement::MemberPlacement;
use crate::core::gang_scheduler::{GangDecision, GangScheduler, Settled};
use crate::core::node::NodeSpec;
use crate::core::pod::{PodInfo, PodKey, PodPhase};
use crate::core::preemption::PreemptionSettings;
use crate::core::queue::{BackoffPolicy, GangKey, SchedulingQueue, UNSCHEDULABLE_FLUSH};
use crate::core::resources::{CPU, GPU, PODS, Resources};
use crate::core::snapshot::{ClusterSnapshot, TopologySettings};

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

struct Simulation<'a> {
    jobs: &'a [Job],
    settings: Settings,
    profiles: HashMap<String, Profile>,
    scheduler_name: String,
    snapshot: ClusterSnapshot,
    queue: SchedulingQueue,
    gangs: GangScheduler,
    base: Instant,
    now: Duration,
    events: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    next_seq: u64,
    state: Vec<JobState>,
    records: Vec<JobRecord>,
    job_of: HashMap<String, usize>,
    evicting: HashSet<String>,
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
    let mut snapshot = ClusterSnapshot::with_settings(settings.topology.clone());
    let node_count = nodes.len();
    let total_gpus = nodes.iter().map(|n| n.allocatable.get(GPU).max(0) as u64).sum();
    for node in nodes {
        snapshot.upsert_node(node);
    }
    let scheduler_name = settings.profiles.first().map(|p| p.scheduler_name.clone()).unwrap_or_default();
    let profiles = std::mem::take(&mut settings.profiles).into_iter().map(|p| (p.scheduler_name.clone(), p)).collect();
    let mut sim = Simulation {
        jobs,
        queue: SchedulingQueue::new(settings.backoff),
        gangs: GangScheduler::new(HashSet::from([GangKind::PodGroup]), settings.preemption),
        settings,
        profiles,
        scheduler_name,
        snapshot,
        base: Instant::now(),
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
        evicting: HashSet::new(),
        allocated: 0,
        outcome_samples: Vec::new(),
        preemptions: 0,
        evicted_pods: 0,
        decision_times: Vec::new(),
        finished: 0,
    };
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

impl Simulation<'_> {
    fn at(&mut self, when: Duration, event: Event) {
        self.next_seq += 1;
        self.events.push(Reverse((when, self.next_seq, event)));
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Steps from event to event. Returns whether the horizon cut the run short.
    fn run(&mut self, progress: &mut dyn FnMut(usize)) -> bool {
        let mut next_flush = UNSCHEDULABLE_FLUSH;
        loop {
            let next_event = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_wakeup = self.queue.next_wakeup().map(|w| w.saturating_duration_since(self.base));
            // The scheduler's periodic retry of unschedulable gangs matters only
            // while something can still change.
            let flush = (next_event.is_some() && self.queue.lengths().unschedulable > 0).then_some(next_flush);
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
                changed |= self.apply(event, progress);
            }
            if self.now >= next_flush {
                changed = true;
                next_flush = self.now + UNSCHEDULABLE_FLUSH;
            }
            let now = self.instant();
            if changed {
                self.queue.cluster_changed(now);
                self.gangs.retry_head(&mut self.queue);
            }
            while let Some(key) = self.queue.pop(now) {
                self.decide(&key, now);
            }
            self.sample();
        }
    }

    /// Applies one event. Returns whether capacity was freed.
    fn apply(&mut self, event: Event, progress: &mut dyn FnMut(usize)) -> bool {
        match event {
            Event::Submit(job) => {
                let spec = GangSpec::of_size(self.jobs[job].pods as usize);
                self.gangs.set_object(self.gang_id(job), Some(GangObject::Valid(spec)));
                self.create_pods(job, self.jobs[job].pods);
                false
            }
            Event::Finish { job, run } if self.state[job].run == run => {
                for uid in std::mem::take(&mut self.state[job].running) {
                    self.release(&uid);
                }
                // Members re-created after a preemption took spares end with the job.
                let id = self.gang_id(job);
                let key = GangKey::Gang(id.clone());
                for uid in self.queue.members(&key).map(|p| p.uid.clone()).collect::<Vec<_>>() {
                    self.queue.remove(&uid);
                    self.job_of.remove(&uid);
                }
                self.gangs.set_object(id, None);
                self.state[job].pending_since = None;
                self.records[job].finished = Some(self.now);
                self.finished += 1;
                progress(self.finished);
                true
            }
            Event::Finish { .. } => false,
            Event::Gone(victims) => {
                let mut hit: Vec<usize> = Vec::new();
                for uid in victims {
                    self.evicting.remove(&uid);
                    let Some(&job) = self.job_of.get(&uid) else { continue };
                    if self.state[job].running.remove(&uid) {
                        self.release(&uid);
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
                true
            }
        }
    }

    fn gang_id(&self, job: usize) -> GangId {
        let job = &self.jobs[job];
        GangId::new(GangKind::PodGroup, &job.namespace, &job.name)
    }

    /// Creates `count` pods of the job (all of them, or the ones a
    /// preemption took) and queues them.
    fn create_pods(&mut self, job: usize, count: u32) {
        let spec = &self.jobs[job];
        let run = self.state[job].run;
        let requests = Resources::new().with(GPU, i64::from(spec.gpus_per_pod)).with(CPU, 1000).with(PODS, 1);
        let gang = self.gang_id(job);
        let now = self.instant();
        for i in 0..count {
            // Names as a job controller gives them: a new suffix per creation.
            let name = format!("{}-r{run}-{}-{i}", spec.name, self.next_seq);
            let pod = PodInfo {
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
            };
            self.job_of.insert(pod.uid.clone(), job);
            self.queue.upsert(pod, now);
        }
        self.next_seq += 1;
        self.state[job].pending_since.get_or_insert(self.now);
    }

    fn release(&mut self, uid: &str) {
        if let Some(p) = self.snapshot.placement(uid) {
            self.allocated -= p.requests.get(GPU).max(0) as u64;
        }
        self.snapshot.release(uid);
        self.job_of.remove(uid);
    }

    fn decide(&mut self, key: &GangKey, now: Instant) {
        let started = Instant::now();
        let Settled { verdict, placed } =
            self.gangs.decide_and_settle(key, &self.profiles, &mut self.snapshot, &mut self.queue, now);
        self.decision_times.push(started.elapsed());
        match verdict.decision {
            GangDecision::Bind(_) => self.bind(placed),
            GangDecision::Preempt { plan, message } => {
                debug!(%message, "preempting");
                self.preemptions += 1;
                let victims: Vec<String> =
                    plan.victims.into_iter().map(|v| v.uid).filter(|uid| self.evicting.insert(uid.clone())).collect();
                self.at(self.now + self.settings.eviction_grace, Event::Gone(victims));
            }
            GangDecision::Wait(_) | GangDecision::Unschedulable { .. } | GangDecision::Drop => {}
        }
    }

    /// The binds all succeed: the members are bound where the core put them.
    fn bind(&mut self, placed: Vec<(MemberPlacement, PodInfo)>) {
        let Some(&job) = placed.first().and_then(|(m, _)| self.job_of.get(&m.uid)) else { return };
        let starts = self.state[job].running.is_empty();
        if starts && self.records[job].started.is_none() {
            // Quality against the best on the GPUs that were free before this placement.
            let uids: Vec<&str> = placed.iter().map(|(m, _)| m.uid.as_str()).collect();
            let taken: Vec<_> = uids.iter().filter_map(|uid| Some((*uid, self.snapshot.take(uid)?))).collect();
            let best = best_score(&self.snapshot, uids.len(), self.jobs[job].gpus_per_pod as usize);
            for (uid, placement) in taken {
                self.snapshot.restore(uid, placement);
            }
            self.records[job].best = Some(best);
            self.records[job].score = Some(placement_score(&self.snapshot, uids.iter().copied()));
            self.records[job].placed_together = uids.len() as u32;
        }
        for (member, pod) in &placed {
            self.snapshot.observe_bound(pod.placement(&member.node), Some(&member.gpu_indices));
            self.allocated += pod.gpu_count() as u64;
            self.state[job].running.insert(member.uid.clone());
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
        let smallest_request =
            self.queue.keys().filter_map(|k| self.queue.members(k).map(PodInfo::gpu_count).min()).min();
        let (mut stranded, mut broken) = (0u64, 0usize);
        for (spec, info) in self.snapshot.nodes() {
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
            pending_pods: self.queue.uids().count(),
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
