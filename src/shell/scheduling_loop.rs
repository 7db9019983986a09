//! The live driver of the core's `Scheduler`: the one task that owns it.
//! Watch events and the outcomes of binds, evictions and PodGroup status
//! writes go in, in arrival order, with the time they arrived; the actions
//! the scheduler asks for go out to the binder, the evictor, the reporter
//! and the status writer; metrics are published
//! from its state. Nothing else touches scheduling state, so no locks.
//!
//! With `PHALANX_RECORD=FILE`, every step it takes (each input with its
//! time, each retry of waiting gangs, each round of decisions) is written to
//! FILE as JSON lines, to be replayed through another driver.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use phalanx_core::gang_status::{StatusOutcome, StatusWrite};
use phalanx_core::pod::PodKey;
use phalanx_core::scheduler::UNSCHEDULABLE_FLUSH;
use phalanx_core::scheduler::{
    Action, Attempt, BindOutcome, Change, ClusterEvent, EvictOutcome, PreBind, Progress, Recorded, Report, Scheduler,
    Step,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::binder::Binder;
use super::evictor::Evictor;
use super::explain::ExplainRequest;
use super::leader_election::Leadership;
use super::metrics::Metrics;
use super::pod_group_status::StatusWriter;
use super::reporter::Reporter;

/// Decisions made between two looks at the event channels: enough to amortise
/// the look, few enough that events are not left waiting.
const DECISIONS_PER_ROUND: usize = 128;
/// How often quota usage is published as metrics.
const QUOTA_METRICS_EVERY: Duration = Duration::from_secs(1);

/// Where the loop sends its binds: the binder in production, a recorder in tests.
pub trait BindRequests {
    /// `writes` are carried out before the bind.
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>, writes: PreBind);
    /// A node was deleted (`gone`) or is there again: binds not yet sent
    /// to it must not be sent.
    fn set_node_gone(&self, _node: &str, _gone: bool) {}
}

/// Where the loop sends preemption victims: the evictor in production, a
/// recorder in tests. `preemptor` names who the victim makes room for, as
/// users should read it ("PodGroup team-a/llm").
pub trait Evictions {
    fn evict(&self, uid: String, key: PodKey, preemptor: String);
}

/// Where the loop sends what users should read.
pub trait Reports {
    fn send(&self, report: Report);
}

/// Where the loop sends PodGroup statuses to write: the status writer in
/// production, a recorder in tests.
pub trait StatusWrites {
    fn write(&self, write: StatusWrite);
}

impl StatusWrites for StatusWriter {
    fn write(&self, write: StatusWrite) {
        StatusWriter::write(self, write);
    }
}

impl Evictions for Evictor {
    fn evict(&self, uid: String, key: PodKey, preemptor: String) {
        Evictor::evict(self, uid, key, preemptor);
    }
}

impl BindRequests for Binder {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>, writes: PreBind) {
        Binder::bind(self, uid, key, node, gpus, writes);
    }

    fn set_node_gone(&self, node: &str, gone: bool) {
        Binder::set_node_gone(self, node, gone);
    }
}

impl Reports for Reporter {
    fn send(&self, report: Report) {
        Reporter::send(self, report);
    }
}

/// What a round of decisions left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Gangs may be waiting for the next round.
    MoreLeft,
    Idle,
}

/// The steps the loop takes, written as JSON lines (`PHALANX_RECORD`).
struct Recording {
    started: Instant,
    out: BufWriter<File>,
}

impl Recording {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self { started: Instant::now(), out: BufWriter::new(File::create(path)?) })
    }

    fn write(&mut self, now: Instant, step: Step) -> std::io::Result<()> {
        let at_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        serde_json::to_writer(&mut self.out, &Recorded { at_ms, step })?;
        // A test may kill the scheduler at any time: each line is whole.
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Where the loop sends what the scheduler asks for.
pub struct Writers<B = Binder, R = Reporter, E = Evictor, S = StatusWriter> {
    pub binder: B,
    pub reporter: R,
    pub evictor: E,
    pub statuses: S,
}

/// What the loop hears: watch events, the outcomes of what it asked for,
/// and when to stop.
pub struct Inputs {
    pub events: mpsc::Receiver<ClusterEvent>,
    pub binds: mpsc::UnboundedReceiver<BindOutcome>,
    pub evictions: mpsc::UnboundedReceiver<EvictOutcome>,
    pub statuses: mpsc::UnboundedReceiver<StatusOutcome>,
    pub shutdown: watch::Receiver<bool>,
}

pub struct SchedulingLoop<B = Binder, R = Reporter, E = Evictor, S = StatusWriter> {
    scheduler: Scheduler,
    writers: Writers<B, R, E, S>,
    metrics: Metrics,
    /// Set once every watch has listed (for `/readyz`).
    ready: Arc<AtomicBool>,
    /// Decisions are made only while this replica leads.
    leadership: Leadership,
    /// The term the scheduler was last told of.
    told_term: Option<Option<u64>>,
    next_quota_metrics: Instant,
    /// Questions from the `/explain` endpoint.
    explain_requests: Option<mpsc::Receiver<ExplainRequest>>,
    recording: Option<Recording>,
}

impl<B: BindRequests, R: Reports, E: Evictions, S: StatusWrites> SchedulingLoop<B, R, E, S> {
    pub fn new(scheduler: Scheduler, writers: Writers<B, R, E, S>, metrics: Metrics, ready: Arc<AtomicBool>) -> Self {
        Self {
            scheduler,
            writers,
            metrics,
            ready,
            leadership: Leadership::always(),
            told_term: None,
            next_quota_metrics: Instant::now(),
            explain_requests: None,
            recording: None,
        }
    }

    /// Writes every step to `path` (JSON lines of `Recorded`).
    pub fn recording_to(mut self, path: &Path) -> std::io::Result<Self> {
        self.recording = Some(Recording::create(path)?);
        Ok(self)
    }

    fn record(&mut self, now: Instant, step: impl FnOnce() -> Step) {
        if let Some(recording) = &mut self.recording
            && let Err(error) = recording.write(now, step())
        {
            warn!(%error, "recording stopped");
            self.recording = None;
        }
    }

    /// Decides only while `leadership` holds, each term after its fresh list of pods.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Answers `/explain` questions arriving on `requests` between rounds.
    pub fn with_explain_requests(mut self, requests: mpsc::Receiver<ExplainRequest>) -> Self {
        self.explain_requests = Some(requests);
        self
    }

    /// Applies a watch event at `now`; what it asks for right away (the
    /// binder hearing of a deleted node, an Event about an unreadable
    /// object) is carried out with the next round.
    pub fn apply_event(&mut self, event: ClusterEvent, now: Instant) -> Change {
        self.record(now, || Step::Event(event.clone()));
        if let ClusterEvent::Leadership(term) = &event {
            self.told_term = Some(*term);
        }
        self.scheduler.apply(event, now)
    }

    pub fn apply_bind_outcome(&mut self, outcome: BindOutcome, now: Instant) -> Change {
        self.record(now, || Step::Bind(outcome.clone()));
        self.scheduler.apply_bind_outcome(outcome, now)
    }

    pub fn apply_eviction_outcome(&mut self, outcome: EvictOutcome, now: Instant) {
        self.record(now, || Step::Eviction(outcome.clone()));
        self.scheduler.apply_eviction_outcome(outcome, now);
    }

    pub fn apply_status_outcome(&mut self, outcome: StatusOutcome, now: Instant) {
        self.record(now, || Step::GroupStatus(outcome.clone()));
        self.scheduler.apply_status_outcome(outcome, now);
    }

    /// Tells the scheduler whether this replica leads, when that changed.
    fn observe_leadership(&mut self, now: Instant) {
        let term = self.leadership.term();
        if self.told_term != Some(term) {
            let _ = self.apply_event(ClusterEvent::Leadership(term), now);
        }
    }

    /// Waiting gangs get another look (after a change, and periodically).
    pub fn retry_waiting(&mut self, now: Instant) {
        self.record(now, || Step::RetryWaiting);
        self.scheduler.retry_waiting(now);
    }

    /// Decides for up to a round of gangs, carrying out what each asks.
    pub fn round(&mut self, now: Instant) -> Round {
        self.record(now, || Step::Decide);
        if !self.ready.load(Ordering::Relaxed) && self.scheduler.is_synced() {
            self.ready.store(true, Ordering::Relaxed);
            info!(nodes = self.scheduler.snapshot().node_count(), "caches synced; scheduling starts");
        }
        for _ in 0..DECISIONS_PER_ROUND {
            if self.told_term != Some(self.leadership.term()) {
                // The lease changed mid-round: the scheduler hears of it first.
                return Round::MoreLeft;
            }
            let started = Instant::now();
            let actions = self.scheduler.next_actions(now);
            let progress = Progress::of(&actions);
            self.carry_out(actions, started);
            if progress == Progress::NothingReady {
                return Round::Idle;
            }
        }
        Round::MoreLeft
    }

    /// Hands each action to its writer; `started`: when the decision began.
    fn carry_out(&mut self, actions: Vec<Action>, started: Instant) {
        for action in actions {
            match action {
                Action::Bind { uid, key, node, gpus, writes } => self.writers.binder.bind(uid, key, node, gpus, writes),
                Action::Evict { uid, key, preemptor } => self.writers.evictor.evict(uid, key, preemptor),
                Action::NodeGone { node, gone } => self.writers.binder.set_node_gone(&node, gone),
                Action::Report(report) => {
                    if matches!(&report, Report::Event { reason: "InvalidObject", .. }) {
                        self.metrics.invalid_objects.inc();
                    }
                    self.writers.reporter.send(report);
                }
                Action::WriteGroupStatus(write) => self.writers.statuses.write(write),
                Action::Attempted { profile, result, .. } => {
                    let seconds = started.elapsed().as_secs_f64();
                    match result {
                        Attempt::Scheduled => self.metrics.attempt("scheduled", &profile, seconds),
                        Attempt::Unschedulable { preemption_tried } => {
                            if preemption_tried {
                                self.metrics.preemption("none", 0);
                            }
                            self.metrics.attempt("unschedulable", &profile, seconds);
                        }
                        Attempt::Preempting { victims } => self.metrics.preemption("planned", victims),
                        Attempt::Waiting | Attempt::Dropped => {}
                    }
                }
            }
        }
    }

    fn answer(&mut self, request: ExplainRequest) {
        let _ = request.reply.send(self.scheduler.explain(&request.target, Instant::now()));
    }

    /// Runs until `shutdown` turns true or the watches end.
    pub async fn run(mut self, inputs: Inputs) {
        let Inputs { mut events, binds: mut outcomes, mut evictions, mut statuses, mut shutdown } = inputs;
        let mut leadership = self.leadership.clone();
        let mut next_flush = Instant::now() + UNSCHEDULABLE_FLUSH;
        // Whether anything applied since the last round may let waiting pods fit.
        let mut changed = false;
        let mut explain_requests = self.explain_requests.take();
        loop {
            if *shutdown.borrow() {
                info!(binds_in_flight = self.scheduler.binds_in_flight(), "scheduling loop stopping");
                return;
            }
            while let Ok(event) = events.try_recv() {
                changed |= self.apply_event(event, Instant::now()) == Change::MayFitMore;
            }
            while let Ok(outcome) = outcomes.try_recv() {
                changed |= self.apply_bind_outcome(outcome, Instant::now()) == Change::MayFitMore;
            }
            while let Ok(outcome) = evictions.try_recv() {
                self.apply_eviction_outcome(outcome, Instant::now());
            }
            while let Ok(outcome) = statuses.try_recv() {
                self.apply_status_outcome(outcome, Instant::now());
            }
            while let Some(request) = explain_requests.as_mut().and_then(|r| r.try_recv().ok()) {
                self.answer(request);
            }
            let now = Instant::now();
            if now >= next_flush {
                changed = true;
                next_flush = now + UNSCHEDULABLE_FLUSH;
            }
            if std::mem::take(&mut changed) {
                self.retry_waiting(now);
            }
            self.observe_leadership(now);
            let round = self.round(now);
            self.publish_metrics(now);
            if round == Round::MoreLeft {
                tokio::task::yield_now().await;
                continue;
            }
            let wake_at = self.scheduler.next_wakeup().map_or(next_flush, |t| t.min(next_flush));
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => changed |= self.apply_event(event, Instant::now()) == Change::MayFitMore,
                    None => return,
                },
                Some(outcome) = outcomes.recv() => {
                    changed |= self.apply_bind_outcome(outcome, Instant::now()) == Change::MayFitMore;
                }
                Some(outcome) = evictions.recv() => {
                    self.apply_eviction_outcome(outcome, Instant::now());
                }
                Some(outcome) = statuses.recv() => self.apply_status_outcome(outcome, Instant::now()),
                Some(request) = next_request(&mut explain_requests) => self.answer(request),
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = shutdown.changed() => {}
                _ = leadership.changed() => {}
            }
        }
    }

    /// Queue lengths and waiting gangs each round; quota usage at most once
    /// per `QUOTA_METRICS_EVERY`.
    fn publish_metrics(&mut self, now: Instant) {
        for (reason, count) in self.scheduler.waiting_gangs() {
            self.metrics.set_gangs_waiting(reason.as_str(), count);
        }
        let l = self.scheduler.queue_lengths();
        self.metrics.set_pending("active", l.active);
        self.metrics.set_pending("backoff", l.backoff);
        self.metrics.set_pending("unschedulable", l.unschedulable);
        self.metrics.set_pending("waiting", l.waiting);
        self.metrics.set_pending("binding", self.scheduler.binds_in_flight());
        self.metrics.queued_pods.set(self.scheduler.queued_pod_count() as i64);
        if now >= self.next_quota_metrics {
            self.next_quota_metrics = now + QUOTA_METRICS_EVERY;
            self.metrics.set_quota_usage(&self.scheduler.quota_usage());
        }
    }
}

/// The next `/explain` question; never, without a channel.
async fn next_request(requests: &mut Option<mpsc::Receiver<ExplainRequest>>) -> Option<ExplainRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}
