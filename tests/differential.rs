//! One recorded run of the live scheduler (`PHALANX_RECORD` during the e2e
//! test `of_two_gangs_needing_three_quarters_of_the_fleet_...` in
//! tests/gang.rs: its watch events, bind outcomes, retries and rounds, in
//! `tests/fixtures/recorded/two-gangs.jsonl`) replayed through the
//! simulator's driver and through the live loop's driver with recording
//! writers: both must make the scheduler ask for the same actions in the
//! same order (PodGroup status writes included), and bind every pod where
//! the live run bound it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use phalanx::config;
use phalanx::shell::informers::Served;
use phalanx::shell::metrics::Metrics;
use phalanx::shell::scheduling_loop::{BindRequests, Evictions, Reports, SchedulingLoop, StatusWrites, Writers};
use phalanx::sim::driver::replay;

use phalanx_core::gang_status::{GroupPhase, StatusWrite, WallClock};
use phalanx_core::pod::PodKey;
use phalanx_core::quota::QuotaKind;
use phalanx_core::scheduler::{
    Action, BindResult, ClusterEvent, PreBind, Recorded, Report, Scheduler, SchedulerConfig, Step,
};
use prometheus_client::registry::Registry;

fn recording() -> Vec<Recorded> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recorded/two-gangs.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))).collect()
}

/// The recorded scheduler's setup: the e2e harness's configuration for its
/// scheduler name, and the gang kinds and quotas the cluster served (the
/// lists the recording shows).
fn scheduler_config(recording: &[Recorded]) -> SchedulerConfig {
    let mut served = Served::default();
    let mut bound_by_us = None;
    for Recorded { step, .. } in recording {
        match step {
            Step::Event(ClusterEvent::GangsListed { kind, .. }) => {
                served.gang_kinds.insert(*kind);
            }
            Step::Event(ClusterEvent::QuotasListed { kind: QuotaKind::Elastic, .. }) => served.elastic_quotas = true,
            Step::Event(ClusterEvent::DeviceObjectsListed { .. }) => served.dynamic_resources = true,
            Step::Bind(outcome) if bound_by_us.is_none() => bound_by_us = Some(outcome.uid.clone()),
            _ => {}
        }
    }
    let uid = bound_by_us.expect("the recording has a bind");
    let name = recording
        .iter()
        .find_map(|r| match &r.step {
            Step::Event(ClusterEvent::PodApplied { pod, .. }) if pod.uid == uid => Some(pod.scheduler_name.clone()),
            _ => None,
        })
        .expect("the bound pod was seen");
    let text =
        format!("apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nprofiles:\n- schedulerName: {name}\n");
    // The recording starts now, at a fixed wall-clock time: both drivers stamp alike.
    let wall_clock = WallClock { instant: Instant::now(), timestamp: Timestamp::from_second(1_700_000_000).unwrap() };
    let mut config = config::parse(&text).unwrap().scheduler(&served, wall_clock);
    // Recordings made before volumes were watched list none.
    config.volumes = recording.iter().any(|r| matches!(r.step, Step::Event(ClusterEvent::VolumeObjectsListed { .. })));
    config
}

/// Writers that only note what they were asked, as actions.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Action>>>);

impl BindRequests for Recorder {
    fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>, writes: PreBind) {
        self.0.lock().unwrap().push(Action::Bind { uid, key, node, gpus, writes });
    }

    fn set_node_gone(&self, node: &str, gone: bool) {
        self.0.lock().unwrap().push(Action::NodeGone { node: node.to_string(), gone });
    }
}

impl Evictions for Recorder {
    fn evict(&self, uid: String, key: PodKey, preemptor: String) {
        self.0.lock().unwrap().push(Action::Evict { uid, key, preemptor });
    }
}

impl StatusWrites for Recorder {
    fn write(&self, write: StatusWrite) {
        self.0.lock().unwrap().push(Action::WriteGroupStatus(write));
    }
}

impl Reports for Recorder {
    fn send(&self, report: Report) {
        self.0.lock().unwrap().push(Action::Report(report));
    }
}

/// The live loop's driver, stepped as the recording says.
fn through_the_live_loop(recording: &[Recorded], config: SchedulerConfig) -> Vec<Action> {
    let writers = Recorder::default();
    let metrics = Metrics::register(&mut Registry::default());
    let ready = Arc::new(AtomicBool::new(false));
    let base = config.wall_clock.instant;
    let to = Writers {
        binder: writers.clone(),
        reporter: writers.clone(),
        evictor: writers.clone(),
        statuses: writers.clone(),
    };
    let mut live = SchedulingLoop::new(Scheduler::new(config), to, metrics, ready);
    for Recorded { at_ms, step } in recording {
        let now = base + Duration::from_millis(*at_ms);
        match step.clone() {
            Step::Event(event) => drop(live.apply_event(event, now)),
            Step::Bind(outcome) => drop(live.apply_bind_outcome(outcome, now)),
            Step::Eviction(outcome) => live.apply_eviction_outcome(outcome, now),
            Step::GroupStatus(outcome) => live.apply_status_outcome(outcome, now),
            Step::RetryWaiting => live.retry_waiting(now),
            Step::Decide => drop(live.round(now)),
        }
    }
    writers.0.lock().unwrap().clone()
}

#[test]
fn a_recorded_run_asks_for_the_same_actions_through_both_drivers() {
    let recording = recording();
    let simulated: Vec<Action> = replay(&recording, scheduler_config(&recording))
        .into_iter()
        .filter(|a| !matches!(a, Action::Attempted { .. }))
        .collect();
    let live = through_the_live_loop(&recording, scheduler_config(&recording));
    assert_eq!(simulated, live);

    // And the binds are the live run's: every pod where the API server bound it.
    let asked: BTreeMap<&str, &str> = simulated
        .iter()
        .filter_map(|a| match a {
            Action::Bind { uid, node, .. } => Some((uid.as_str(), node.as_str())),
            _ => None,
        })
        .collect();
    let bound: BTreeMap<&str, &str> = recording
        .iter()
        .filter_map(|r| match &r.step {
            Step::Bind(o) if o.result == BindResult::Bound => Some((o.uid.as_str(), o.node.as_str())),
            _ => None,
        })
        .collect();
    assert!(!bound.is_empty());
    assert_eq!(asked, bound);
    assert!(
        simulated.iter().any(|a| matches!(a, Action::Report(Report::Unschedulable { .. }))),
        "the gang that does not fit is reported waiting"
    );
    let written: BTreeMap<&str, Option<GroupPhase>> = simulated
        .iter()
        .filter_map(|a| match a {
            Action::WriteGroupStatus(w) => Some((w.name.as_str(), w.status.phase)),
            _ => None,
        })
        .collect();
    assert_eq!(written.len(), 2, "both PodGroups' statuses are written: {written:?}");
}
