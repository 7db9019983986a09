//! Writes what users read: the `PodScheduled=False` condition and Events,
//! in a background writer, so a slow API server never holds up a decision.
//! Conditions wait one per pod, a newer one replacing the one still waiting
//! (it keeps its place): however far the writes fall behind, every pending
//! pod's newest reason is written and none is lost. Pods that show no reason
//! yet go first, ahead of every other write. Other reports go through a
//! bounded queue; when it is full one is dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::{debug, warn};

use super::leader_election::Leadership;
use super::metrics::Metrics;
use super::rate_limit::RateLimiter;
use phalanx_core::gang::GangId;
use phalanx_core::pod::PodKey;
pub use phalanx_core::scheduler::Report;
use phalanx_core::scheduler::{GroupCondition, ObjectRef, ShownReason};
use phalanx_kube::api::upstream_pod_group::UpstreamVersion;

pub const REPORTING_CONTROLLER: &str = "phalanx.dev/scheduler";
const QUEUE_CAPACITY: usize = 4096;
const CONCURRENT_WRITES: usize = 16;

#[derive(Clone)]
pub struct Reporter {
    queue: mpsc::Sender<Report>,
    conditions: Arc<ConditionQueue>,
    metrics: Metrics,
    leadership: Leadership,
}

/// Condition reports not yet taken by the writer, at most one per pod:
/// first those of pods that show no reason, then the others, each in the
/// order they were first queued.
#[derive(Default)]
struct WaitingConditions {
    first_reasons: VecDeque<String>,
    updates: VecDeque<String>,
    by_pod: HashMap<String, Report>,
}

impl WaitingConditions {
    /// Queues `report` for the pod `uid`, replacing one still waiting.
    fn put(&mut self, uid: &str, report: Report) {
        let shown = match &report {
            Report::Unschedulable { shown, .. } => *shown,
            _ => ShownReason::Outdated,
        };
        if self.by_pod.insert(uid.to_string(), report).is_none() {
            match shown {
                ShownReason::Nothing => self.first_reasons.push_back(uid.to_string()),
                ShownReason::Outdated => self.updates.push_back(uid.to_string()),
            }
        }
    }

    /// The newest report of the first pod in line.
    fn take(&mut self) -> Option<Report> {
        self.take_first_reason().or_else(|| Self::take_from(&mut self.updates, &mut self.by_pod))
    }

    /// The newest report of the first pod in line that shows no reason.
    fn take_first_reason(&mut self) -> Option<Report> {
        Self::take_from(&mut self.first_reasons, &mut self.by_pod)
    }

    fn take_from(order: &mut VecDeque<String>, by_pod: &mut HashMap<String, Report>) -> Option<Report> {
        while let Some(uid) = order.pop_front() {
            if let Some(report) = by_pod.remove(&uid) {
                return Some(report);
            }
        }
        None
    }
}

#[derive(Default)]
struct ConditionQueue {
    waiting: Mutex<WaitingConditions>,
    ready: Notify,
}

impl ConditionQueue {
    fn put(&self, uid: &str, report: Report) {
        self.waiting.lock().expect("not poisoned").put(uid, report);
        self.ready.notify_one();
    }

    /// A condition for a pod that shows no reason, if one waits.
    fn take_first_reason(&self) -> Option<Report> {
        self.waiting.lock().expect("not poisoned").take_first_reason()
    }

    async fn next(&self) -> Report {
        loop {
            if let Some(report) = self.waiting.lock().expect("not poisoned").take() {
                return report;
            }
            // A put between the take and here leaves a permit: no wakeup is lost.
            self.ready.notified().await;
        }
    }
}

impl Reporter {
    /// Starts the background writer; `upstream` is the version of upstream
    /// PodGroups the API server serves, whose conditions it writes.
    pub fn start(
        client: Client,
        limiter: Arc<RateLimiter>,
        instance: String,
        metrics: Metrics,
        upstream: Option<UpstreamVersion>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let conditions = Arc::new(ConditionQueue::default());
        let writer = Writer { client, limiter, instance, newest: SharedNewest::default(), upstream };
        tokio::spawn(write_reports(writer, rx, conditions.clone()));
        Self { queue, conditions, metrics, leadership: Leadership::always() }
    }

    /// Reports only while `leadership` holds: a standby writes nothing.
    pub fn gated_by(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    pub fn send(&self, report: Report) {
        if !self.leadership.is_leading() {
            return;
        }
        if let Report::Unschedulable { uid, .. } = &report {
            let uid = uid.clone();
            self.conditions.put(&uid, report);
        } else if self.queue.try_send(report).is_err() {
            self.metrics.reports_dropped.inc();
        }
    }
}

#[derive(Clone)]
struct Writer {
    client: Client,
    limiter: Arc<RateLimiter>,
    instance: String,
    newest: SharedNewest,
    upstream: Option<UpstreamVersion>,
}

/// The newest condition report sent for each pod (by UID), so that an older
/// one still being written (or retried after a 409) for the same pod gives
/// way instead of landing last: writes run concurrently, and "1 of 2
/// members created" must not overwrite the verdict that followed it.
#[derive(Default)]
struct NewestCondition {
    sequence: u64,
    by_pod: HashMap<String, u64>,
}

type SharedNewest = Arc<Mutex<NewestCondition>>;

/// Marks `uid`'s newest condition report; returns its number.
fn mark_newest(newest: &SharedNewest, uid: &str) -> u64 {
    let mut newest = newest.lock().expect("not poisoned");
    newest.sequence += 1;
    let sequence = newest.sequence;
    newest.by_pod.insert(uid.to_string(), sequence);
    sequence
}

fn is_newest(newest: &SharedNewest, uid: &str, sequence: u64) -> bool {
    newest.lock().expect("not poisoned").by_pod.get(uid) == Some(&sequence)
}

/// Forgets `uid` once its newest report is written.
fn done(newest: &SharedNewest, uid: &str, sequence: u64) {
    let mut newest = newest.lock().expect("not poisoned");
    if newest.by_pod.get(uid) == Some(&sequence) {
        newest.by_pod.remove(uid);
    }
}

async fn write_reports(writer: Writer, mut rx: mpsc::Receiver<Report>, conditions: Arc<ConditionQueue>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_WRITES));
    loop {
        let report = match conditions.take_first_reason() {
            Some(report) => report,
            None => tokio::select! {
                received = rx.recv() => match received {
                    Some(report) => report,
                    // Every Reporter is gone: nothing more will come.
                    None => return,
                },
                report = conditions.next() => report,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let writer = writer.clone();
        let condition = match &report {
            Report::Unschedulable { uid, .. } => Some((uid.clone(), mark_newest(&writer.newest, uid))),
            _ => None,
        };
        tokio::spawn(async move {
            let written = writer.write(&report, condition.as_ref().map(|(_, sequence)| *sequence)).await;
            if let Some((uid, sequence)) = &condition {
                done(&writer.newest, uid, *sequence);
            }
            match written {
                // Refused: the RBAC in use lacks a rule, which someone must fix.
                Err(kube::Error::Api(e)) if e.code == 403 => warn!(error = %e, ?report, "report refused"),
                Err(e) => debug!(error = %e, ?report, "report not written"),
                Ok(()) => {}
            }
            drop(permit);
        });
    }
}

impl Writer {
    /// `sequence`: the number `mark_newest` gave a condition report.
    async fn write(&self, report: &Report, sequence: Option<u64>) -> Result<(), kube::Error> {
        match report {
            Report::Unschedulable { key, uid, resource_version, message, .. } => {
                let newest = || sequence.is_none_or(|s| is_newest(&self.newest, uid, s));
                self.unschedulable_condition(key, uid, resource_version.clone(), message, newest).await
            }
            Report::Scheduled { key, uid, node } => {
                let note = format!("Successfully assigned {key} to {node}");
                self.event(object_reference(&ObjectRef::pod(key, uid)), "Normal", "Scheduled", "Scheduling", &note)
                    .await
            }
            Report::Event { regarding, warning, reason, message } => {
                let type_ = if *warning { "Warning" } else { "Normal" };
                self.event(object_reference(regarding), type_, reason, "Scheduling", message).await
            }
            Report::Preempted { key, uid, preemptor, message } => {
                let note = preempted_note(preemptor, message);
                self.event(object_reference(&ObjectRef::pod(key, uid)), "Warning", "Preempted", "Preempting", &note)
                    .await
            }
            Report::GroupCondition { gang, condition } => self.group_condition(gang, condition).await,
            Report::Nominated { key, uid, node } => {
                self.limiter.acquire().await;
                Api::<Pod>::namespaced(self.client.clone(), &key.namespace)
                    .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&nomination(uid, node)))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// `PodScheduled=False` with the message. The resourceVersion makes the
    /// write a no-op (409) if the pod changed meanwhile; then the pod is read
    /// again and, if it is still the same pod and still unbound, written once
    /// more at its current version (the change may have been our own last
    /// condition, whose watch event had not arrived yet).
    async fn unschedulable_condition(
        &self,
        key: &PodKey,
        uid: &str,
        resource_version: Option<String>,
        message: &str,
        newest: impl Fn() -> bool,
    ) -> Result<(), kube::Error> {
        let api = Api::<Pod>::namespaced(self.client.clone(), &key.namespace);
        let mut version = resource_version;
        for _ in 0..2 {
            self.limiter.acquire().await;
            if !newest() {
                // A newer report for this pod is on its way; it decides.
                return Ok(());
            }
            let patch = json!({
                "metadata": {"uid": uid, "resourceVersion": version},
                "status": {"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": Timestamp::now().to_string(),
                }]}
            });
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                other => return other.map(|_| ()),
            }
            self.limiter.acquire().await;
            let current = api.get(&key.name).await?;
            let unbound = current.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none();
            if current.metadata.uid.as_deref() != Some(uid) || !unbound {
                return Ok(());
            }
            version = current.metadata.resource_version;
        }
        Ok(())
    }

    /// A condition of an upstream PodGroup, merged by type into its status
    /// (a strategic merge patch: the list is keyed by type).
    async fn group_condition(&self, gang: &GangId, condition: &GroupCondition) -> Result<(), kube::Error> {
        let Some(version) = self.upstream else { return Ok(()) };
        self.limiter.acquire().await;
        let (group, api_version) = version.api_version().split_once('/').expect("group/version");
        let resource = ApiResource {
            group: group.into(),
            version: api_version.into(),
            api_version: version.api_version().into(),
            kind: "PodGroup".into(),
            plural: "podgroups".into(),
        };
        let patch = json!({"status": {"conditions": [{
            "type": condition.kind.name(),
            "status": condition.status.name(),
            "reason": condition.reason,
            "message": truncate(&condition.message, 32 * 1024),
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &gang.namespace, &resource)
            .patch_status(&gang.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(|_| ())
    }

    async fn event(
        &self,
        regarding: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        self.limiter.acquire().await;
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or("phalanx"), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(namespace.clone()), ..Default::default() },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(truncate(note, 1024)),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_.into()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

fn preempted_note(preemptor: &str, message: &str) -> String {
    if message.is_empty() {
        format!("Preempted by {preemptor}")
    } else {
        format!("Preempted by {preemptor}: {message}")
    }
}

/// The status merge patch that nominates `node` (clears the nomination when
/// empty); the UID keeps it off a pod recreated under the same name.
fn nomination(uid: &str, node: &str) -> serde_json::Value {
    let node = if node.is_empty() { serde_json::Value::Null } else { json!(node) };
    json!({"metadata": {"uid": uid}, "status": {"nominatedNodeName": node}})
}

/// Events reject notes over 1 kB; cut on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The API's form of the object an Event is about.
fn object_reference(object: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_condition_report_gives_way_to_a_newer_one_for_the_same_pod() {
        let newest = SharedNewest::default();
        let older = mark_newest(&newest, "pod-a");
        let other_pod = mark_newest(&newest, "pod-b");
        assert!(is_newest(&newest, "pod-a", older));
        let newer = mark_newest(&newest, "pod-a");
        assert!(!is_newest(&newest, "pod-a", older), "superseded");
        assert!(is_newest(&newest, "pod-a", newer));
        assert!(is_newest(&newest, "pod-b", other_pod), "other pods are not affected");
        done(&newest, "pod-a", older);
        assert!(is_newest(&newest, "pod-a", newer), "finishing the older one keeps the newer");
        done(&newest, "pod-a", newer);
        done(&newest, "pod-b", other_pod);
        assert!(newest.lock().unwrap().by_pod.is_empty(), "nothing kept once written");
    }

    fn condition(pod: usize, message: &str) -> Report {
        condition_over(pod, message, ShownReason::Outdated)
    }

    fn condition_over(pod: usize, message: &str, shown: ShownReason) -> Report {
        Report::Unschedulable {
            key: PodKey { namespace: "ns".into(), name: format!("p{pod}") },
            uid: format!("uid-{pod}"),
            resource_version: None,
            message: message.into(),
            shown,
        }
    }

    /// Found by the chaos soak: after a change of leader with thousands of
    /// pods pending, pods created meanwhile waited minutes behind rewrites of
    /// reasons other pods already showed. A pod that shows none goes first.
    #[test]
    fn pods_that_show_no_reason_are_written_before_updates() {
        let mut waiting = WaitingConditions::default();
        for pod in 0..100 {
            waiting.put(&format!("uid-{pod}"), condition(pod, "usage changed"));
        }
        waiting.put("uid-100", condition_over(100, "new", ShownReason::Nothing));
        waiting.put("uid-101", condition_over(101, "new", ShownReason::Nothing));
        assert_eq!(waiting.take(), Some(condition_over(100, "new", ShownReason::Nothing)));
        assert_eq!(waiting.take_first_reason(), Some(condition_over(101, "new", ShownReason::Nothing)));
        assert_eq!(waiting.take_first_reason(), None, "only updates wait");
        assert_eq!(waiting.take(), Some(condition(0, "usage changed")), "then updates, in order");
    }

    /// Found by the chaos soak: with hundreds of pods pending, every attempt
    /// reports each member again (quota messages carry the usage, so they
    /// change), the bounded queue filled, and some pods were never given a
    /// reason. Conditions now wait one per pod, the newest kept.
    #[test]
    fn conditions_wait_one_per_pod_newest_kept_none_dropped_however_many() {
        let mut waiting = WaitingConditions::default();
        let pods = QUEUE_CAPACITY * 2;
        for round in ["first", "second", "third"] {
            for pod in 0..pods {
                waiting.put(&format!("uid-{pod}"), condition(pod, round));
            }
        }
        let mut taken = Vec::new();
        while let Some(report) = waiting.take() {
            taken.push(report);
        }
        assert_eq!(taken.len(), pods, "one per pod, none dropped");
        for (pod, report) in taken.iter().enumerate() {
            assert_eq!(report, &condition(pod, "third"), "in first-queued order, the newest message");
        }
        waiting.put("uid-1", condition(1, "again"));
        assert_eq!(waiting.take(), Some(condition(1, "again")), "a pod taken may queue again");
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_condition_queued_while_it_waits() {
        let queue = Arc::new(ConditionQueue::default());
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.put("uid-7", condition(7, "late"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert_eq!(got.expect("woken").expect("joined"), condition(7, "late"));
    }

    #[test]
    fn a_preempted_event_names_the_preemptor() {
        assert_eq!(preempted_note("PodGroup team-a/llm", ""), "Preempted by PodGroup team-a/llm");
        assert_eq!(
            preempted_note("PodGroup team-a/llm", "priority 1000 over 10"),
            "Preempted by PodGroup team-a/llm: priority 1000 over 10"
        );
    }

    #[test]
    fn a_nomination_sets_or_clears_the_nominated_node() {
        assert_eq!(
            nomination("u1", "gpu-3"),
            json!({"metadata": {"uid": "u1"}, "status": {"nominatedNodeName": "gpu-3"}})
        );
        assert_eq!(nomination("u1", "")["status"]["nominatedNodeName"], serde_json::Value::Null);
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(&long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."));
        assert_eq!(truncate("short", 1024), "short");
    }
}
