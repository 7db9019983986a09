//! The state machine's unit tests: what it asks for after events and outcomes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::dra::claim::{ClaimKey, PodClaim, PodClaimSource};
use crate::dra::device::{DeviceSlice, PCIE_ROOT};
use crate::dra::inventory::ClaimWrite;
use crate::dra::testing::{GPU_DRIVER, gpu_claim, gpu_device};
use crate::gang::{GangId, GangKind, GangSpec, InitialScheduling, InvalidGang};
use crate::gang_status::{
    DEBOUNCE, GroupPhase, GroupRecord, GroupStatus, GroupStatusInput, MemberPhase, MemberRecord, MemberSummary,
    StatusResult, StatusWrite,
};
use crate::plugins::default_profile;
use crate::pod::PodPhase;
use crate::queue::BackoffPolicy;
use crate::quota::{ElasticQuota, HardQuota, Limits};
use crate::resources::GPU;
use crate::testing::{gpu_node, gpu_pod};

/// A bind request: pod name, node, GPU indices.
type BindRequest = (String, String, Vec<u32>);

/// The claims written before a bind, with the pod's name.
type PodClaimWrites = (String, Vec<ClaimWrite>);

/// Records what the scheduler asks of the binder, the evictor and the reporter.
#[derive(Clone, Default)]
struct Recorder {
    binds: Arc<Mutex<Vec<BindRequest>>>,
    claim_writes: Arc<Mutex<Vec<PodClaimWrites>>>,
    /// Victim name and preemptor.
    evictions: Arc<Mutex<Vec<(String, String)>>>,
    reports: Arc<Mutex<Vec<Report>>>,
    /// Nodes the binder was told are gone.
    gone_nodes: Arc<Mutex<HashSet<String>>>,
    status_writes: Arc<Mutex<Vec<StatusWrite>>>,
}

impl Recorder {
    fn record(&self, action: Action) {
        match action {
            Action::Bind { key, node, gpus, writes, .. } => {
                self.claim_writes.lock().unwrap().push((key.name.clone(), writes.claims));
                self.binds.lock().unwrap().push((key.name, node, gpus));
            }
            Action::Evict { key, preemptor, .. } => self.evictions.lock().unwrap().push((key.name, preemptor)),
            Action::NodeGone { node, gone } => {
                let mut nodes = self.gone_nodes.lock().unwrap();
                if gone {
                    nodes.insert(node)
                } else {
                    nodes.remove(&node)
                };
            }
            Action::Report(report) => self.reports.lock().unwrap().push(report),
            Action::WriteGroupStatus(write) => self.status_writes.lock().unwrap().push(write),
            Action::Attempted { .. } => {}
        }
    }

    fn bind_count(&self) -> usize {
        self.binds.lock().unwrap().len()
    }

    fn unschedulable_reports(&self) -> Vec<String> {
        let reports = self.reports.lock().unwrap();
        reports
            .iter()
            .filter_map(|r| match r {
                Report::Unschedulable { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The scheduler at a fixed instant, its actions carried out into a recorder.
struct TestLoop {
    s: Scheduler,
    now: Instant,
    rec: Recorder,
}

impl TestLoop {
    fn apply_event(&mut self, event: ClusterEvent) -> bool {
        let change = self.s.apply(event, self.now);
        self.flush();
        change == Change::MayFitMore
    }

    fn apply_outcome(&mut self, outcome: BindOutcome) -> bool {
        let change = self.s.apply_bind_outcome(outcome, self.now);
        self.flush();
        change == Change::MayFitMore
    }

    fn apply_eviction(&mut self, outcome: EvictOutcome) {
        self.s.apply_eviction_outcome(outcome, self.now);
        self.flush();
    }

    fn evict(&mut self, victim: &PodKey, uid: &str, preemptor: &GangKey, message: String) {
        self.s.evict(victim, uid, preemptor, message);
        self.flush();
    }

    /// Decides every gang ready now. Returns whether any was decided.
    fn schedule_round(&mut self) -> bool {
        let mut decided = false;
        loop {
            let actions = self.s.next_actions(self.now);
            let attempted = actions.iter().any(|a| matches!(a, Action::Attempted { .. }));
            actions.into_iter().for_each(|a| self.rec.record(a));
            if !attempted {
                return decided;
            }
            decided = true;
        }
    }

    /// Carries out what applying an event asked for (the binder hears of gone nodes at once).
    fn flush(&mut self) {
        let actions = std::mem::take(&mut self.s.outbox);
        actions.into_iter().for_each(|a| self.rec.record(a));
    }
}

/// A synced scheduler with one 8-GPU node and no backoff (so retries are immediate).
fn synced_loop() -> (TestLoop, Recorder) {
    synced_loop_serving(&[GangKind::PodGroup])
}

/// As `synced_loop`, with the API server serving these kinds of gangs.
fn synced_loop_serving(kinds: &[GangKind]) -> (TestLoop, Recorder) {
    let recorder = Recorder::default();
    let now = Instant::now();
    let config = SchedulerConfig {
        profiles: vec![default_profile("phalanx")],
        backoff: BackoffPolicy { initial: Duration::ZERO, max: Duration::ZERO },
        gang_kinds: kinds.iter().copied().collect(),
        elastic_quotas: true,
        dynamic_resources: false,
        volumes: false,
        class_resources: Default::default(),
        topology: Default::default(),
        preemption: Default::default(),
        wall_clock: WallClock { instant: now, timestamp: jiff::Timestamp::from_second(1_700_000_000).unwrap() },
    };
    let mut l = TestLoop { s: Scheduler::new(config), now, rec: recorder.clone() };
    assert!(!l.s.is_synced(), "nothing is decided before the caches are synced");
    l.apply_event(ClusterEvent::NodeApplied(gpu_node("n1", 8)));
    l.apply_event(ClusterEvent::NodesListed(HashSet::from(["n1".to_string()])));
    l.apply_event(ClusterEvent::PodsListed(HashSet::new()));
    for kind in kinds {
        assert!(!l.s.is_synced(), "gang objects are not all listed yet");
        l.apply_event(ClusterEvent::GangsListed { kind: *kind, ids: HashSet::new() });
    }
    for kind in [QuotaKind::Elastic, QuotaKind::Hard] {
        assert!(!l.s.is_synced(), "quotas are not all listed yet");
        l.apply_event(ClusterEvent::QuotasListed { kind, keys: vec![] });
    }
    assert!(!l.s.is_synced(), "disruption budgets are not listed yet");
    l.apply_event(ClusterEvent::BudgetsListed(vec![]));
    assert!(l.s.is_synced());
    (l, recorder)
}

fn member(name: &str, gpus: i64, group: &str) -> PodInfo {
    let mut pod = gpu_pod(name, gpus);
    pod.job = Some(GangId::new(GangKind::PodGroup, "default", group));
    pod
}

fn group(l: &mut TestLoop, name: &str, object: GangObject) {
    l.apply_event(ClusterEvent::GangApplied { id: GangId::new(GangKind::PodGroup, "default", name), object });
}

fn events(rec: &Recorder) -> Vec<(&'static str, String)> {
    let reports = rec.reports.lock().unwrap();
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Event { reason, message, .. } => Some((*reason, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gang_binds_only_once_min_member_pods_exist_and_then_all_at_once() {
    let (mut l, rec) = synced_loop();
    group(&mut l, "g", GangObject::Valid(GangSpec::of_size(3)));
    for i in 0..2 {
        l.apply_event(ClusterEvent::PodApplied { pod: member(&format!("w{i}"), 2, "g"), gated: false });
    }
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0);
    assert_eq!(rec.unschedulable_reports()[0], "waiting for members of PodGroup default/g: 2 of 3 members created");
    assert!(events(&rec).iter().any(|(reason, m)| *reason == "Waiting" && m.contains("2 of 3")));
    l.apply_event(ClusterEvent::PodApplied { pod: member("w2", 2, "g"), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 3, "the third member completes the gang");
    assert_eq!(l.s.snapshot.node("n1").unwrap().free_gpus().count_ones(), 2);
}

#[test]
fn members_that_succeeded_before_the_rest_were_placed_count_toward_min_member() {
    let (mut l, rec) = synced_loop();
    group(&mut l, "g", GangObject::Valid(GangSpec::of_size(4)));
    let mut early: Vec<PodInfo> = (0..2).map(|i| member(&format!("w{i}"), 3, "g")).collect();
    for pod in &mut early {
        // Bound by a leader that died before it placed the rest.
        pod.node_name = Some("n1".into());
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    }
    for i in 2..4 {
        l.apply_event(ClusterEvent::PodApplied { pod: member(&format!("w{i}"), 3, "g"), gated: false });
    }
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0, "6 GPUs needed, 2 free");
    for pod in &mut early {
        pod.phase = PodPhase::Succeeded;
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
        l.apply_event(succeeded(pod));
    }
    l.s.retry_waiting(l.now);
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2, "{:?}", rec.unschedulable_reports());
    // The gang ran whole; once 4 members succeeded, new pods are a new run.
    for i in 2..4 {
        let mut pod = member(&format!("w{i}"), 3, "g");
        pod.node_name = Some("n1".into());
        pod.phase = PodPhase::Succeeded;
        l.apply_event(succeeded(&pod));
        l.apply_event(ClusterEvent::PodApplied { pod, gated: false });
    }
    l.apply_event(ClusterEvent::PodApplied { pod: member("again", 1, "g"), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2, "one new pod is not a gang of 4");
    assert!(rec.unschedulable_reports().last().unwrap().contains("1 of 4 members created"));
}

fn succeeded(pod: &PodInfo) -> ClusterEvent {
    ClusterEvent::MemberSucceeded { gang: pod.job.clone().expect("a member"), uid: pod.uid.clone() }
}

/// Found by the chaos soak: members of a PyTorchJob finished before a new
/// leader started, so it never saw them and the job's last members waited
/// for a minMember they could not reach. Every kind of gang hears alike.
#[test]
fn members_that_succeeded_before_this_leader_started_count_toward_min_member() {
    let (mut l, rec) = synced_loop();
    let id = GangId::new(GangKind::PodGroup, "ns", "job");
    l.apply_event(ClusterEvent::GangApplied { id: id.clone(), object: GangObject::Valid(GangSpec::of_size(4)) });
    let members: Vec<PodInfo> = (0..4)
        .map(|i| {
            let mut pod = gpu_pod(&format!("w{i}"), 3);
            pod.key.namespace = "ns".into();
            pod.job = Some(id.clone());
            pod
        })
        .collect();
    for pod in &members[2..] {
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    }
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0);
    assert!(rec.unschedulable_reports()[0].contains("2 of 4 members created"), "{:?}", rec.unschedulable_reports());
    for pod in &members[..2] {
        l.apply_event(succeeded(pod));
    }
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2, "the gang woke with 2 placed and 2 succeeded");
}

#[test]
fn a_gang_that_does_not_fit_binds_nothing() {
    let (mut l, rec) = synced_loop();
    group(&mut l, "g", GangObject::Valid(GangSpec::of_size(2)));
    l.apply_event(ClusterEvent::PodApplied { pod: member("a", 4, "g"), gated: false });
    l.apply_event(ClusterEvent::PodApplied { pod: member("b", 6, "g"), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0);
    assert_eq!(l.s.snapshot.node("n1").unwrap().free_gpus(), 0xff, "nothing stays reserved");
    let message = &rec.unschedulable_reports()[0];
    assert!(message.starts_with("gang needs 2 pods placed together (12 GPUs), only 1 have room"), "{message}");
}

#[test]
fn an_invalid_pod_group_is_reported_and_its_pods_wait() {
    let (mut l, rec) = synced_loop();
    let invalid = InvalidGang {
        gang: GangId::new(GangKind::PodGroup, "default", "bad"),
        uid: Some("pg".into()),
        field: "spec.minMember".into(),
        problem: "is 0; a gang needs at least one member".into(),
    };
    group(&mut l, "bad", GangObject::Invalid(invalid));
    l.apply_event(ClusterEvent::PodApplied { pod: member("w0", 1, "bad"), gated: false });
    l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("solo", 1), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1, "the rest of the queue keeps moving");
    assert!(events(&rec).iter().any(|(reason, m)| *reason == "InvalidObject" && m.contains("spec.minMember is 0")));
    assert!(rec.unschedulable_reports()[0].contains("waiting for a valid PodGroup"));
    // A missing PodGroup: its pods wait too.
    l.apply_event(ClusterEvent::PodApplied { pod: member("x", 1, "missing"), gated: false });
    l.schedule_round();
    assert!(
        rec.unschedulable_reports()
            .iter()
            .any(|m| m.contains("default/missing, which the pods name but which does not exist"))
    );
}

fn outcome(pod: &PodInfo, node: &str, result: BindResult) -> BindOutcome {
    BindOutcome { uid: pod.uid.clone(), key: pod.key.clone(), node: node.into(), result }
}

#[test]
fn a_stale_unbound_view_after_the_bind_does_not_bind_again() {
    let (mut l, rec) = synced_loop();
    let pod = gpu_pod("p", 2);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    assert_eq!(rec.binds.lock().unwrap()[0], ("p".to_string(), "n1".to_string(), vec![0, 1]));
    l.apply_outcome(outcome(&pod, "n1", BindResult::Bound));
    // The annotation write, seen after the bind's outcome.
    let mut stale = pod.clone();
    stale.gpu_indices = Some(vec![0, 1]);
    l.apply_event(ClusterEvent::PodApplied { pod: stale, gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1);
    let mut bound = pod.clone();
    bound.node_name = Some("n1".into());
    bound.gpu_indices = Some(vec![0, 1]);
    l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
    assert_eq!(l.s.snapshot.placement(&pod.uid).unwrap().state, PlacementState::Bound);
    assert_eq!(l.s.snapshot.node("n1").unwrap().free_gpus(), 0b1111_1100);
}

#[test]
fn a_conflict_retries_unless_the_watch_shows_the_pod_bound() {
    let (mut l, rec) = synced_loop();
    let pod = gpu_pod("p", 1);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    l.apply_outcome(outcome(&pod, "n1", BindResult::Conflict("UID mismatch".into())));
    assert!(l.s.snapshot.placement(&pod.uid).is_none(), "the assumption is forgotten");
    assert!(l.s.queue.contains(&pod.uid), "and the pod retried");
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2);
    // This time the watch is first: bound (by the second bind).
    let mut bound = pod.clone();
    bound.node_name = Some("n1".into());
    l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
    l.apply_outcome(outcome(&pod, "n1", BindResult::Failed("timeout".into())));
    assert!(!l.s.queue.contains(&pod.uid), "a bound pod is not retried");
    assert_eq!(l.s.snapshot.placement(&pod.uid).unwrap().state, PlacementState::Bound);
}

#[test]
fn a_bind_held_back_from_a_deleted_node_sends_the_pod_elsewhere() {
    let (mut l, rec) = synced_loop();
    let pod = gpu_pod("p", 8);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    l.apply_event(ClusterEvent::NodeDeleted("n1".into()));
    assert!(rec.gone_nodes.lock().unwrap().contains("n1"), "the binder knows before its next call");
    l.apply_event(ClusterEvent::NodeApplied(gpu_node("n2", 8)));
    l.apply_outcome(outcome(&pod, "n1", BindResult::NodeGone));
    assert!(l.s.snapshot.node("n1").is_none(), "nothing is left on the deleted node");
    l.schedule_round();
    assert_eq!(rec.binds.lock().unwrap().last().unwrap().1, "n2");
    l.apply_event(ClusterEvent::NodeApplied(gpu_node("n1", 8)));
    assert!(rec.gone_nodes.lock().unwrap().is_empty(), "a node created again under the name takes binds");
}

#[test]
fn a_pod_deleted_while_binding_releases_its_gpus() {
    let (mut l, _) = synced_loop();
    let pod = gpu_pod("p", 8);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    assert_eq!(l.s.snapshot.node("n1").unwrap().free_gpus(), 0);
    l.apply_outcome(outcome(&pod, "n1", BindResult::PodGone));
    assert_eq!(l.s.snapshot.node("n1").unwrap().free_gpus(), 0xff);
    assert!(!l.s.queue.contains(&pod.uid));
}

#[test]
fn a_relist_drops_what_is_gone_but_keeps_binds_in_flight() {
    let (mut l, _) = synced_loop();
    let (gone, flying) = (gpu_pod("gone", 1), gpu_pod("flying", 1));
    let mut bound = gone.clone();
    bound.node_name = Some("n1".into());
    l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
    l.apply_event(ClusterEvent::PodApplied { pod: flying.clone(), gated: false });
    l.schedule_round();
    l.apply_event(ClusterEvent::PodsListed(HashSet::new()));
    assert!(l.s.snapshot.placement(&gone.uid).is_none());
    assert!(l.s.snapshot.placement(&flying.uid).is_some(), "its bind's outcome settles it");
}

#[test]
fn an_unchanged_reason_is_reported_once_and_a_new_one_again() {
    let (mut l, rec) = synced_loop();
    let pod = gpu_pod("big", 12);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    l.s.retry_waiting(l.now);
    l.schedule_round();
    let reports = rec.unschedulable_reports();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].starts_with("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: "));
    let mut cordoned = gpu_node("n2", 8);
    cordoned.unschedulable = true;
    l.apply_event(ClusterEvent::NodeApplied(cordoned));
    l.s.retry_waiting(l.now);
    l.schedule_round();
    assert_eq!(rec.unschedulable_reports().len(), 2);
    assert!(rec.unschedulable_reports()[1].contains("1 node(s) were unschedulable"));
}

/// Found by the chaos soak: a new leader rewrote the reason of every one of
/// thousands of pending pods, and pods created meanwhile waited minutes for
/// theirs. A reason the pod already shows gets only its Event again.
#[test]
fn a_new_leader_writes_only_the_reasons_pods_do_not_already_show() {
    let (mut first, first_rec) = synced_loop();
    first.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("big", 12), gated: false });
    first.schedule_round();
    let message = first_rec.unschedulable_reports().pop().expect("reported");
    let (mut l, rec) = synced_loop();
    let shown =
        [("same", Some(message.clone())), ("older", Some("0/1 nodes are available".to_string())), ("none", None)];
    for (name, reason) in &shown {
        let mut pod = gpu_pod(name, 12);
        pod.shown_reason = reason.clone();
        l.apply_event(ClusterEvent::PodApplied { pod, gated: false });
    }
    l.schedule_round();
    let reports = rec.reports.lock().unwrap().clone();
    let conditions: Vec<(String, ShownReason)> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Unschedulable { key, shown, message: m, .. } if *m == message => Some((key.name.clone(), *shown)),
            _ => None,
        })
        .collect();
    assert_eq!(
        conditions,
        [("older".to_string(), ShownReason::Outdated), ("none".to_string(), ShownReason::Nothing)],
        "{reports:#?}"
    );
    let events: Vec<String> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Event { reason: "FailedScheduling", regarding, .. } => regarding.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 3, "every pod still gets its Event: {events:?}");
}

fn elastic(namespace: &str, max_gpus: i64) -> Quota {
    Quota::Elastic(ElasticQuota {
        namespace: namespace.into(),
        name: "quota".into(),
        min: Limits([(GPU.to_string(), 4)].into()),
        max: Limits([(GPU.to_string(), max_gpus)].into()),
    })
}

#[test]
fn quotas_apply_and_a_change_counts_as_a_cluster_change() {
    let (mut l, rec) = synced_loop();
    assert!(l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8))), "a new quota");
    assert!(!l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8))), "the same again");
    assert!(l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 16))), "a limit raised");
    assert_eq!(l.s.gangs.quotas().elastic("default").unwrap().max.get(GPU), Some(16));
    let hard = HardQuota { namespace: "default".into(), name: "rq".into(), hard: Limits::default() };
    assert!(l.apply_event(ClusterEvent::QuotaApplied(Quota::Hard(hard))));
    // An unreadable quota is reported; the version read before stays.
    let regarding = ObjectRef {
        kind: Some("ElasticQuota".into()),
        namespace: Some("default".into()),
        name: Some("quota".into()),
        ..Default::default()
    };
    let error = "elasticquota default/quota: spec.max[nvidia.com/gpu]: \"-1\" is negative".to_string();
    l.apply_event(ClusterEvent::Invalid { regarding, error });
    assert!(
        events(&rec).iter().any(|(reason, m)| *reason == "InvalidObject" && m.contains("spec.max[nvidia.com/gpu]"))
    );
    assert_eq!(l.s.gangs.quotas().elastic("default").unwrap().max.get(GPU), Some(16));
    let deleted =
        ClusterEvent::QuotaDeleted { kind: QuotaKind::Elastic, namespace: "default".into(), name: "quota".into() };
    assert!(l.apply_event(deleted));
    assert!(l.s.gangs.quotas().elastic("default").is_none());
    l.apply_event(ClusterEvent::QuotaApplied(elastic("other", 8)));
    l.apply_event(ClusterEvent::QuotasListed { kind: QuotaKind::Elastic, keys: vec![] });
    assert!(l.s.gangs.quotas().elastic("other").is_none(), "not listed, gone");
}

#[test]
fn nothing_is_decided_while_a_watch_is_away_until_it_lists_again() {
    let (mut l, rec) = synced_loop();
    l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8)));
    l.apply_event(ClusterEvent::WatchLost(Watch::Quotas(QuotaKind::Elastic)));
    assert!(!l.s.is_synced());
    // Meanwhile the quota was lowered, unseen; the pods' watch shows a new pod.
    l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("p", 4), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0, "no decision on a quota that may be stale");
    // The watch lists again: the lowered quota, and every key it holds.
    l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 2)));
    let keys = vec![("default".to_string(), "quota".to_string())];
    l.apply_event(ClusterEvent::QuotasListed { kind: QuotaKind::Elastic, keys });
    assert!(l.s.is_synced());
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0, "4 GPUs exceed the max of 2 now seen");
    assert!(rec.unschedulable_reports().iter().any(|m| m.contains("quota")), "{:?}", rec.unschedulable_reports());
    // A watch lost twice waits for one list.
    l.apply_event(ClusterEvent::WatchLost(Watch::Nodes));
    l.apply_event(ClusterEvent::WatchLost(Watch::Nodes));
    l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("q", 2), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0);
    l.apply_event(ClusterEvent::NodesListed(HashSet::from(["n1".to_string()])));
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1, "the 2-GPU pod fits the quota once nodes are listed again");
}

#[test]
fn quota_usage_is_published_for_elastic_quota_namespaces() {
    let (mut l, _) = synced_loop();
    l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 8)));
    let mut bound = gpu_pod("p", 6);
    bound.node_name = Some("n1".into());
    l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
    let usage = l.s.quota_usage();
    let gpus = usage.iter().find(|row| row.namespace == "default" && row.resource == GPU).expect("a GPU row");
    assert_eq!(gpus.used, 6);
    assert_eq!(gpus.borrowed, 2, "6 used over a min of 4");
}

fn budget(allowed: u32) -> Option<DisruptionBudget> {
    Some(DisruptionBudget {
        namespace: "default".into(),
        name: "pdb".into(),
        selector: Default::default(),
        disruptions_allowed: allowed,
    })
}

#[test]
fn budgets_apply_and_only_a_loosened_one_counts_as_a_change() {
    let (mut l, _) = synced_loop();
    let applied = |allowed| ClusterEvent::BudgetApplied {
        namespace: "default".into(),
        name: "pdb".into(),
        budget: budget(allowed),
    };
    assert!(!l.apply_event(applied(0)), "a new budget only protects");
    assert_eq!(l.s.gangs.budgets().count(), 1);
    assert!(l.apply_event(applied(1)), "one more disruption allowed");
    assert!(!l.apply_event(applied(0)));
    assert!(l.apply_event(ClusterEvent::BudgetDeleted { namespace: "default".into(), name: "pdb".into() }));
    assert_eq!(l.s.gangs.budgets().count(), 0);
    l.apply_event(applied(0));
    l.apply_event(ClusterEvent::BudgetsListed(vec![]));
    assert_eq!(l.s.gangs.budgets().count(), 0, "not listed, gone");
}

fn evicted(victim: &PodInfo, preemptor: &str, result: EvictResult) -> EvictOutcome {
    EvictOutcome { uid: victim.uid.clone(), key: victim.key.clone(), preemptor: preemptor.into(), result }
}

#[test]
fn an_eviction_is_asked_once_and_an_evicted_victim_gets_an_event_naming_the_preemptor() {
    let (mut l, rec) = synced_loop();
    let victim = gpu_pod("victim", 8);
    let preemptor = GangKey::Gang(GangId::new(GangKind::PodGroup, "default", "big"));
    l.evict(&victim.key, &victim.uid, &preemptor, "priority 100 over 0".into());
    l.evict(&victim.key, &victim.uid, &preemptor, "priority 100 over 0".into());
    assert_eq!(*rec.evictions.lock().unwrap(), vec![("victim".to_string(), "PodGroup default/big".to_string())]);
    assert!(l.s.evicting.values().any(|e| e.preemptor == preemptor));
    l.apply_eviction(evicted(&victim, "PodGroup default/big", EvictResult::Evicted));
    assert!(!l.s.evicting.values().any(|e| e.preemptor == preemptor));
    let reports = rec.reports.lock().unwrap();
    let Some(Report::Preempted { key, preemptor, message, .. }) = reports.last() else { panic!("{reports:?}") };
    assert_eq!((key.name.as_str(), preemptor.as_str()), ("victim", "PodGroup default/big"));
    assert_eq!(message, "priority 100 over 0");
}

#[test]
fn a_refused_eviction_sends_the_preemptor_back_to_try_again() {
    let (mut l, rec) = synced_loop();
    let big = gpu_pod("big", 12);
    l.apply_event(ClusterEvent::PodApplied { pod: big.clone(), gated: false });
    l.schedule_round();
    assert_eq!(l.s.queue.lengths().unschedulable, 1);
    let victim = gpu_pod("victim", 8);
    l.evict(&victim.key, &victim.uid, &GangKey::of(&big), String::new());
    l.apply_eviction(evicted(&victim, "Pod default/big", EvictResult::Blocked("budget".into())));
    assert_eq!(l.s.queue.lengths().unschedulable, 0, "in backoff, to be tried again");
    assert!(!rec.reports.lock().unwrap().iter().any(|r| matches!(r, Report::Preempted { .. })));
}

#[test]
fn a_standby_decides_nothing_and_a_new_leader_only_after_its_term_s_fresh_list_of_pods() {
    let (mut l, rec) = synced_loop();
    l.apply_event(ClusterEvent::Leadership(None));
    let pod = gpu_pod("p", 4);
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    assert!(!l.schedule_round() && rec.bind_count() == 0, "a standby binds nothing");
    assert!(l.s.queue.contains(&pod.uid), "but keeps its queue");
    l.apply_event(ClusterEvent::Leadership(Some(1)));
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0, "not before the term's own list of pods");
    // The list shows a pod the previous leader bound, with its GPUs.
    let mut bound = gpu_pod("old", 4);
    bound.node_name = Some("n1".into());
    bound.gpu_indices = Some(vec![0, 1, 2, 3]);
    l.apply_event(ClusterEvent::PodApplied { pod: bound.clone(), gated: false });
    // A list made for an earlier term does not count.
    let uids = HashSet::from([pod.uid.clone(), bound.uid.clone()]);
    l.apply_event(ClusterEvent::PodsRelisted { uids: uids.clone(), term: 0 });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 0);
    l.apply_event(ClusterEvent::PodsRelisted { uids, term: 1 });
    l.schedule_round();
    assert_eq!(rec.binds.lock().unwrap()[0], ("p".to_string(), "n1".to_string(), vec![4, 5, 6, 7]));
    // Losing the lease stops decisions.
    l.apply_event(ClusterEvent::Leadership(None));
    l.apply_event(ClusterEvent::PodApplied { pod: gpu_pod("q", 1), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1);
}

fn status_group(name: &str) -> GroupStatusInput {
    GroupStatusInput::GroupApplied(GroupRecord {
        namespace: "ns".into(),
        name: name.into(),
        resource_version: Some("1".into()),
        min_member: 1,
        status: GroupStatus::default(),
    })
}

fn status_member(uid: &str, group: &str) -> GroupStatusInput {
    GroupStatusInput::MemberApplied(MemberRecord {
        uid: uid.into(),
        group: format!("ns/{group}"),
        scheduler_name: "phalanx".into(),
        member: MemberSummary { name: uid.into(), bound: true, phase: MemberPhase::Running, owners: vec![] },
    })
}

#[test]
fn pod_group_status_is_written_by_the_leader_only_and_its_outcome_is_applied_back() {
    let (mut l, rec) = synced_loop();
    l.apply_event(ClusterEvent::Leadership(None));
    l.apply_event(ClusterEvent::GroupStatus(status_group("g")));
    l.apply_event(ClusterEvent::GroupStatus(status_member("a", "g")));
    l.apply_event(ClusterEvent::GroupStatus(GroupStatusInput::GroupsListed(["ns/g".to_string()].into())));
    l.apply_event(ClusterEvent::GroupStatus(GroupStatusInput::MembersListed(["a".to_string()].into())));
    l.now += DEBOUNCE;
    l.schedule_round();
    assert!(rec.status_writes.lock().unwrap().is_empty(), "a standby writes no status");
    assert_eq!(l.s.next_wakeup(), None, "a standby does not wake for statuses");

    // Leading from a new term: what fell due meanwhile is written.
    l.apply_event(ClusterEvent::Leadership(Some(2)));
    assert!(l.s.next_wakeup().is_some_and(|at| at <= l.now), "due while it stood by");
    l.now += DEBOUNCE;
    l.schedule_round();
    let writes = std::mem::take(&mut *rec.status_writes.lock().unwrap());
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].group.as_str(), writes[0].status.phase), ("ns/g", Some(GroupPhase::Running)));

    // A conflict is looked at again later; a write is not asked for twice meanwhile.
    l.s.apply_status_outcome(StatusOutcome { group: "ns/g".into(), result: StatusResult::Conflict }, l.now);
    l.schedule_round();
    assert!(rec.status_writes.lock().unwrap().is_empty(), "retried after a pause, not at once");
    let retry_at = l.s.next_wakeup().expect("a retry is due");
    assert!(retry_at > l.now + DEBOUNCE);
    l.now = retry_at;
    l.schedule_round();
    assert_eq!(rec.status_writes.lock().unwrap().len(), 1, "written again after the pause");
}

/// n1's eight GPUs published through DRA, and the class that selects them.
fn publish_gpus(l: &mut TestLoop) {
    let class = crate::dra::claim::DeviceClass {
        name: GPU_DRIVER.into(),
        selectors: vec!["device.driver == 'gpu.nvidia.com'".into()],
        extended_resource_name: None,
        config: vec![],
    };
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Class(class)));
    let slice = DeviceSlice {
        name: "n1-gpu.nvidia.com".into(),
        node: "n1".into(),
        driver: GPU_DRIVER.into(),
        pool: "node".into(),
        devices: (0..8).map(|i| gpu_device(&format!("gpu-{i}"), i)).collect(),
    };
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Slice(slice)));
}

fn claiming_member(name: &str, group: &str, claim: PodClaimSource) -> PodInfo {
    let mut pod = member(name, 0, group);
    pod.claims = vec![PodClaim { name: "gpu".into(), source: claim }];
    pod
}

#[test]
fn a_gang_with_claims_binds_with_every_claim_allocated_on_its_node() {
    let (mut l, rec) = synced_loop();
    publish_gpus(&mut l);
    group(&mut l, "g", GangObject::Valid(GangSpec::of_size(2)));
    for i in 0..2 {
        let claim = gpu_claim(&format!("w{i}-gpu"), GPU_DRIVER, 4);
        l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(claim)));
        let pod = claiming_member(&format!("w{i}"), "g", PodClaimSource::Claim(format!("w{i}-gpu")));
        l.apply_event(ClusterEvent::PodApplied { pod, gated: false });
    }
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2);
    let writes = rec.claim_writes.lock().unwrap().clone();
    let mut devices = Vec::new();
    for (_, claims) in &writes {
        assert_eq!(claims.len(), 1);
        let allocation = &claims[0].allocation;
        assert_eq!(allocation.node, "n1");
        // Four devices on one PCIe root (no GPUTopology names these GPUs).
        let roots: HashSet<String> = allocation
            .results
            .iter()
            .map(|r| {
                let index: u32 = r.device.device.trim_start_matches("gpu-").parse().unwrap();
                gpu_device("x", index).attribute(PCIE_ROOT).unwrap().to_string()
            })
            .collect();
        assert_eq!((allocation.results.len(), roots.len()), (4, 1), "{allocation:?}");
        devices.extend(allocation.results.iter().map(|r| r.device.clone()));
    }
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 8, "no device given twice");

    // A third pod's claim finds nothing free, and says so.
    let claim = gpu_claim("late-gpu", GPU_DRIVER, 1);
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(claim)));
    let mut late = claiming_member("late", "g", PodClaimSource::Claim("late-gpu".into()));
    late.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: late, gated: false });
    l.schedule_round();
    let reports = rec.unschedulable_reports();
    assert!(
        reports.iter().any(|m| m.contains("claim late-gpu needs 1 device of class gpu.nvidia.com, 0 free")),
        "{reports:?}"
    );
}

#[test]
fn a_failed_bind_frees_the_devices_it_allocated() {
    let (mut l, rec) = synced_loop();
    publish_gpus(&mut l);
    let claim = gpu_claim("a-gpu", GPU_DRIVER, 8);
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(claim)));
    let mut pod = claiming_member("a", "g", PodClaimSource::Claim("a-gpu".into()));
    pod.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1);
    let key = ClaimKey { namespace: "default".into(), name: "b-gpu".into() };
    let other = DeviceObject::Claim(crate::dra::claim::DeviceClaim { key, ..gpu_claim("b-gpu", GPU_DRIVER, 8) });
    l.apply_event(ClusterEvent::DeviceObjectApplied(other));
    let mut b = claiming_member("b", "g", PodClaimSource::Claim("b-gpu".into()));
    b.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: b.clone(), gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1, "a's claim holds every GPU");
    let n1 = || l.s.snapshot.node("n1").unwrap().clone();
    assert!(l.s.snapshot.devices().fit(&b, "n1", &n1()).is_err());
    let freed = l.apply_outcome(BindOutcome {
        uid: pod.uid.clone(),
        key: pod.key.clone(),
        node: "n1".into(),
        result: BindResult::Failed("ResourceClaim default/a-gpu: conflict".into()),
    });
    assert!(freed);
    let n1 = l.s.snapshot.node("n1").unwrap().clone();
    let writes = l.s.snapshot.devices().fit(&b, "n1", &n1).expect("a's devices are free again");
    assert_eq!(writes[0].allocation.results.len(), 8);
}

#[test]
fn quotas_count_the_gpus_of_claims() {
    let (mut l, rec) = synced_loop();
    publish_gpus(&mut l);
    l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 6)));
    for (name, gpus) in [("four", 4), ("three", 3)] {
        let claim = gpu_claim(&format!("{name}-gpu"), GPU_DRIVER, gpus);
        l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(claim)));
    }
    let mut four = claiming_member("four", "g", PodClaimSource::Claim("four-gpu".into()));
    four.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: four, gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1);
    assert_eq!(l.s.snapshot.namespace_usage("default").unwrap().get(GPU), 4, "the assumed claim counts");
    let mut three = claiming_member("three", "g", PodClaimSource::Claim("three-gpu".into()));
    three.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: three, gated: false });
    l.schedule_round();
    assert_eq!(rec.bind_count(), 1, "4 + 3 GPUs is over the max of 6");
    let reports = rec.unschedulable_reports();
    assert!(reports.iter().any(|m| m.contains("ElasticQuota default/quota")), "{reports:?}");
    // The first claim's allocation is seen in its status; deleting the claim frees the quota.
    let key = ClaimKey { namespace: "default".into(), name: "four-gpu".into() };
    l.apply_event(ClusterEvent::DeviceObjectDeleted(DeviceObjectKey::Claim(key)));
    assert_eq!(l.s.snapshot.namespace_usage("default").unwrap().get(GPU), 0);
}

#[test]
fn preempting_a_claim_holder_frees_its_devices_for_the_preemptor_once_released() {
    let (mut l, rec) = synced_loop();
    publish_gpus(&mut l);
    // A low-priority pod holds all eight devices through its claim.
    let mut held = gpu_claim("low-gpu", GPU_DRIVER, 8);
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(held.clone())));
    let mut low = claiming_member("low", "g", PodClaimSource::Claim("low-gpu".into()));
    low.job = None;
    l.apply_event(ClusterEvent::PodApplied { pod: low.clone(), gated: false });
    l.schedule_round();
    l.apply_outcome(outcome(&low, "n1", BindResult::Bound));
    held.allocation = Some(rec.claim_writes.lock().unwrap()[0].1[0].allocation.clone());
    held.reserved_for = vec![low.uid.clone()];
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(held.clone())));

    // A higher-priority pod asking for eight devices evicts it.
    let claim = gpu_claim("high-gpu", GPU_DRIVER, 8);
    l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(claim)));
    let mut high = claiming_member("high", "g", PodClaimSource::Claim("high-gpu".into()));
    (high.job, high.priority) = (None, 100);
    l.apply_event(ClusterEvent::PodApplied { pod: high.clone(), gated: false });
    l.schedule_round();
    assert_eq!(*rec.evictions.lock().unwrap(), vec![("low".to_string(), "Pod default/high".to_string())]);

    // The victim is gone, but its claim still holds the devices until the
    // controller manager releases it: nothing more is evicted meanwhile.
    l.apply_eviction(evicted(&low, "Pod default/high", EvictResult::Evicted));
    assert!(l.apply_event(ClusterEvent::PodDeleted { uid: low.uid.clone() }));
    l.s.retry_waiting(l.now);
    assert!(l.schedule_round(), "tried again");
    assert_eq!(rec.bind_count(), 1, "the devices are not free yet");
    assert_eq!(rec.evictions.lock().unwrap().len(), 1, "no second eviction");
    let reports = rec.unschedulable_reports();
    assert!(
        reports
            .last()
            .is_some_and(|m| m.contains("waiting for 1 preempted pods to terminate and their ResourceClaims")),
        "{reports:?}"
    );
    held.reserved_for.clear();
    held.allocation = None;
    assert!(l.apply_event(ClusterEvent::DeviceObjectApplied(DeviceObject::Claim(held))));
    l.s.retry_waiting(l.now);
    l.schedule_round();
    let binds = rec.binds.lock().unwrap().clone();
    assert_eq!(binds.last().map(|(name, node, _)| (name.as_str(), node.as_str())), Some(("high", "n1")));
    let writes = rec.claim_writes.lock().unwrap();
    assert_eq!(writes.last().unwrap().1[0].allocation.results.len(), 8);
}

#[test]
fn a_partly_placed_gang_keeps_the_quota_it_still_needs() {
    let (mut l, rec) = synced_loop();
    l.apply_event(ClusterEvent::QuotaApplied(elastic("default", 4)));
    group(&mut l, "g", GangObject::Valid(GangSpec::of_size(3)));
    // One member bound by a leader that died before it bound the other two.
    let mut bound = member("w0", 1, "g");
    bound.node_name = Some("n1".into());
    l.apply_event(ClusterEvent::PodApplied { pod: bound, gated: false });
    for i in 1..3 {
        l.apply_event(ClusterEvent::PodApplied { pod: member(&format!("w{i}"), 1, "g"), gated: false });
    }
    // A higher-priority pod is tried first: 1 + 2 GPUs would fit the max of 4,
    // but the gang still needs 2 of them.
    let mut other = gpu_pod("other", 2);
    other.priority = 100;
    l.apply_event(ClusterEvent::PodApplied { pod: other, gated: false });
    l.schedule_round();
    let bound: Vec<String> = rec.binds.lock().unwrap().iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(bound, ["w1", "w2"], "{:?}", rec.unschedulable_reports());
    assert!(rec.unschedulable_reports().iter().any(|m| m.contains("ElasticQuota default/quota")));
}

fn group_conditions(rec: &Recorder) -> Vec<(String, &'static str, ConditionStatus, &'static str, String)> {
    let reports = rec.reports.lock().unwrap();
    reports
        .iter()
        .filter_map(|r| match r {
            Report::GroupCondition { gang, condition } => Some((
                gang.name.clone(),
                condition.kind.name(),
                condition.status,
                condition.reason,
                condition.message.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn an_upstream_pod_group_gets_the_conditions_upstream_s_scheduler_writes() {
    let (mut l, rec) = synced_loop_serving(&[GangKind::PodGroup, GangKind::UpstreamPodGroup]);
    let id = GangId::new(GangKind::UpstreamPodGroup, "default", "up");
    l.apply_event(ClusterEvent::GangApplied { id: id.clone(), object: GangObject::Valid(GangSpec::of_size(2)) });
    let members: Vec<PodInfo> = (0..2)
        .map(|i| {
            let mut pod = gpu_pod(&format!("up-{i}"), 8);
            pod.job = Some(id.clone());
            pod
        })
        .collect();
    for pod in &members {
        l.apply_event(ClusterEvent::PodApplied { pod: pod.clone(), gated: false });
    }
    l.schedule_round();
    l.schedule_round();
    let conditions = group_conditions(&rec);
    assert_eq!(conditions.len(), 1, "an unchanged message once: {conditions:?}");
    let (name, kind, status, reason, message) = &conditions[0];
    assert_eq!(
        (name.as_str(), *kind, *status, *reason),
        ("up", "PodGroupInitiallyScheduled", ConditionStatus::False, "Unschedulable")
    );
    assert!(message.starts_with("gang needs 2 pods placed together (16 GPUs)"), "{message}");

    l.apply_event(ClusterEvent::NodeApplied(gpu_node("n2", 8)));
    l.s.retry_waiting(l.now);
    l.schedule_round();
    assert_eq!(rec.bind_count(), 2);
    let last = group_conditions(&rec).pop().unwrap();
    assert_eq!((last.2, last.3, last.4.as_str()), (ConditionStatus::True, "Scheduled", "2 members placed"));
    let binds = rec.binds.lock().unwrap().clone();
    for pod in &members {
        let node = &binds.iter().find(|(name, _, _)| *name == pod.key.name).unwrap().1;
        l.apply_outcome(outcome(pod, node, BindResult::Bound));
    }

    // A lone pod of higher priority preempts the gang: DisruptionTarget.
    let mut high = gpu_pod("high", 8);
    high.priority = 1000;
    l.apply_event(ClusterEvent::PodApplied { pod: high, gated: false });
    l.schedule_round();
    assert_eq!(rec.evictions.lock().unwrap().len(), 2, "the whole gang goes");
    let last = group_conditions(&rec).pop().unwrap();
    assert_eq!((last.1, last.2, last.3), ("DisruptionTarget", ConditionStatus::True, "PreemptionByScheduler"));
    assert_eq!(last.4, "preempted to make room for Pod default/high");

    // Once the object says it was scheduled, it is never marked unschedulable again.
    let done = GangSpec { initial_scheduling: InitialScheduling::Done, ..GangSpec::of_size(2) };
    l.apply_event(ClusterEvent::GangApplied { id, object: GangObject::Valid(done) });
    let before = group_conditions(&rec).len();
    for pod in &members {
        l.apply_event(ClusterEvent::PodDeleted { uid: pod.uid.clone() });
        let mut again = pod.clone();
        again.uid = format!("{}-again", pod.uid);
        l.apply_event(ClusterEvent::PodApplied { pod: again, gated: false });
    }
    l.schedule_round();
    assert!(group_conditions(&rec)[before..].iter().all(|c| c.1 != "PodGroupInitiallyScheduled"));
}
