//! Keeps `status` of `scheduling.x-k8s.io` PodGroups up to date, as
//! scheduler-plugins' PodGroup controller does, in a task of its own so it
//! never holds up a scheduling decision.
//!
//! Two watches of its own feed it: PodGroups, and every pod carrying the
//! label `scheduling.x-k8s.io/pod-group` (finished pods included, which the
//! scheduler's pod watch leaves out). A change to a group or to one of its
//! pods marks the group; a marked group is looked at once `DEBOUNCE` has
//! passed since the first mark, so a burst of pod updates costs one write.
//! The core ([`next_status`]) says what the status should be; it is written
//! through the status subresource with a merge patch, only when it differs
//! from what the API server holds, and with the resourceVersion it was
//! computed from, so a stale view is refused (409) rather than written.
//!
//! Phalanx keeps the status of the groups whose pods name one of its
//! profiles (`spec.schedulerName`); a group with no pods yet is only given
//! its first phase (Pending). Groups of other schedulers are left alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::informers::{Applied, pump};
use super::leader_election::Leadership;
use super::rate_limit::RateLimiter;
use phalanx_kube::api::pod_group::{PodGroup, PodGroupStatus};
use phalanx_kube::pod_group_status::{GroupPhase, GroupStatus, GroupView, MemberPhase, MemberSummary, next_status};
use phalanx_kube::translate::POD_GROUP_LABEL;

/// How long a group's changes are gathered before its status is worked out.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long after a refused or failed write the group is tried again.
const RETRY: Duration = Duration::from_secs(2);
const CONCURRENT_WRITES: usize = 8;
const INPUT_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("PodGroup {group} changed since its status was worked out")]
    Conflict { group: String },
    #[error("PodGroup {group} is gone")]
    Gone { group: String },
    #[error("status of PodGroup {group} not written: this replica no longer leads")]
    NotLeading { group: String },
    #[error("writing the status of PodGroup {group}: {source}")]
    Write {
        group: String,
        #[source]
        source: kube::Error,
    },
}

/// Starts the watches and the writer; they run until the process ends. The
/// writer writes only while `leadership` holds (a standby keeps watching).
pub fn spawn(client: Client, scheduler_names: Arc<HashSet<String>>, limiter: Arc<RateLimiter>, leadership: Leadership) {
    let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
    tokio::spawn(watch_groups(Api::all(client.clone()), tx.clone()));
    tokio::spawn(watch_members(Api::all(client.clone()), tx));
    tokio::spawn(run(Tracker::new(scheduler_names), rx, Writer { client, limiter, leadership }));
}

/// What the watches report, translated.
#[derive(Debug)]
pub enum Input {
    GroupApplied(GroupRecord),
    GroupDeleted(String),
    /// `namespace/name` of every group after a (re-)list.
    GroupsListed(HashSet<String>),
    PodApplied(PodRecord),
    PodDeleted(String),
    /// UIDs of every labelled pod after a (re-)list.
    PodsListed(HashSet<String>),
}

/// What is kept of a PodGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub min_member: i32,
    pub status: GroupStatus,
}

impl GroupRecord {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What is kept of a labelled pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub uid: String,
    /// `namespace/name` of the group its label names.
    pub group: String,
    pub scheduler_name: String,
    pub member: MemberSummary,
}

pub fn group_record(group: &PodGroup) -> Option<GroupRecord> {
    Some(GroupRecord {
        namespace: group.namespace()?,
        name: group.metadata.name.clone()?,
        resource_version: group.resource_version(),
        min_member: group.spec.min_member.unwrap_or(0),
        status: group.status.as_ref().map(core_status).unwrap_or_default(),
    })
}

pub fn core_status(status: &PodGroupStatus) -> GroupStatus {
    let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    GroupStatus {
        phase: status.phase.as_deref().and_then(GroupPhase::parse),
        occupied_by: status.occupied_by.clone().filter(|o| !o.is_empty()),
        scheduled: count(status.scheduled),
        running: count(status.running),
        succeeded: count(status.succeeded),
        failed: count(status.failed),
        schedule_start_time: status.schedule_start_time.as_ref().map(|t| t.0),
    }
}

pub fn pod_record(pod: &Pod) -> Option<PodRecord> {
    let group = pod.labels().get(POD_GROUP_LABEL)?;
    let spec = pod.spec.as_ref();
    Some(PodRecord {
        uid: pod.metadata.uid.clone()?,
        group: format!("{}/{group}", pod.namespace()?),
        scheduler_name: spec.and_then(|s| s.scheduler_name.clone()).unwrap_or_else(|| "default-scheduler".into()),
        member: MemberSummary {
            name: pod.name_any(),
            bound: spec.and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()),
            phase: MemberPhase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
            owners: pod.owner_references().iter().map(|o| o.name.clone()).collect(),
        },
    })
}

/// The merge patch that sets `status` to `status`, every field spelled out
/// (null removes one), guarded by the resourceVersion it was computed from.
pub fn status_patch(status: &GroupStatus, resource_version: Option<&str>) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {
            "phase": status.phase.map(GroupPhase::as_str),
            "occupiedBy": status.occupied_by,
            "scheduled": status.scheduled,
            "running": status.running,
            "succeeded": status.succeeded,
            "failed": status.failed,
            "scheduleStartTime": status.schedule_start_time.map(Time),
        }
    })
}

async fn watch_groups(api: Api<PodGroup>, tx: mpsc::Sender<Input>) {
    let on_apply = |group: PodGroup| match group_record(&group) {
        Some(record) => Applied::Event(record.key(), Input::GroupApplied(record)),
        None => Applied::Ignored,
    };
    let on_delete = |group: PodGroup| Some(Input::GroupDeleted(format!("{}/{}", group.namespace()?, group.name_any())));
    pump(api, watcher::Config::default(), None, tx, on_apply, on_delete, Input::GroupsListed).await;
}

async fn watch_members(api: Api<Pod>, tx: mpsc::Sender<Input>) {
    let on_apply = |pod: Pod| match pod_record(&pod) {
        Some(record) => Applied::Event(record.uid.clone(), Input::PodApplied(record)),
        None => Applied::Ignored,
    };
    let on_delete = |pod: Pod| pod.metadata.uid.map(Input::PodDeleted);
    // Every pod that names a group, whatever its phase.
    let config = watcher::Config::default().labels(POD_GROUP_LABEL);
    pump(api, config, None, tx, on_apply, on_delete, Input::PodsListed).await;
}

/// A status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub group: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub status: GroupStatus,
}

/// How a write ended: the group as the API server now holds it, or why not.
pub type WriteResult = Result<GroupRecord, StatusError>;

/// The groups, their members and which groups are due a look. No I/O: the
/// task around it feeds it inputs and carries out the writes it plans.
#[derive(Debug)]
pub struct Tracker {
    scheduler_names: Arc<HashSet<String>>,
    groups: HashMap<String, GroupRecord>,
    pods: HashMap<String, PodRecord>,
    /// Group key -> UIDs of the pods naming it.
    members: HashMap<String, BTreeSet<String>>,
    /// Groups due a look, and when.
    due: HashMap<String, Instant>,
    /// Groups with a write in flight, and whether they changed meanwhile.
    writing: HashMap<String, bool>,
    groups_listed: bool,
    pods_listed: bool,
}

impl Tracker {
    pub fn new(scheduler_names: Arc<HashSet<String>>) -> Self {
        Self {
            scheduler_names,
            groups: HashMap::new(),
            pods: HashMap::new(),
            members: HashMap::new(),
            due: HashMap::new(),
            writing: HashMap::new(),
            groups_listed: false,
            pods_listed: false,
        }
    }

    /// Marks a group for a look `delay` from now, unless it is already due
    /// sooner; a group being written is looked at again once the write ends.
    fn mark(&mut self, group: &str, now: Instant, delay: Duration) {
        if let Some(changed) = self.writing.get_mut(group) {
            *changed = true;
            return;
        }
        let at = now + delay;
        self.due.entry(group.to_string()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }

    fn mark_all(&mut self, now: Instant) {
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            self.mark(&key, now, DEBOUNCE);
        }
    }

    fn remove_pod(&mut self, uid: &str, now: Instant) {
        if let Some(old) = self.pods.remove(uid) {
            if let Some(uids) = self.members.get_mut(&old.group) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.members.remove(&old.group);
                }
            }
            self.mark(&old.group, now, DEBOUNCE);
        }
    }

    pub fn apply(&mut self, input: Input, now: Instant) {
        match input {
            Input::GroupApplied(record) => {
                let key = record.key();
                self.groups.insert(key.clone(), record);
                self.mark(&key, now, DEBOUNCE);
            }
            Input::GroupDeleted(key) => {
                self.groups.remove(&key);
                self.due.remove(&key);
            }
            Input::GroupsListed(keys) => {
                self.groups.retain(|k, _| keys.contains(k));
                self.due.retain(|k, _| keys.contains(k));
                self.groups_listed = true;
                self.mark_all(now);
            }
            Input::PodApplied(record) => {
                if self.pods.get(&record.uid).is_some_and(|old| old.group != record.group) {
                    self.remove_pod(&record.uid, now);
                }
                self.members.entry(record.group.clone()).or_default().insert(record.uid.clone());
                self.mark(&record.group, now, DEBOUNCE);
                self.pods.insert(record.uid.clone(), record);
            }
            Input::PodDeleted(uid) => self.remove_pod(&uid, now),
            Input::PodsListed(uids) => {
                let gone: Vec<String> = self.pods.keys().filter(|u| !uids.contains(*u)).cloned().collect();
                for uid in gone {
                    self.remove_pod(&uid, now);
                }
                self.pods_listed = true;
                self.mark_all(now);
            }
        }
    }

    /// When the next group is due; none until both watches have listed, so
    /// that no group is judged on half its pods.
    pub fn next_due(&self) -> Option<Instant> {
        if !(self.groups_listed && self.pods_listed) {
            return None;
        }
        self.due.values().min().copied()
    }

    /// The writes due by `now`, each group's status worked out at `clock`.
    /// The groups returned count as being written until [`Tracker::finish`].
    pub fn take_due(&mut self, now: Instant, clock: Timestamp) -> Vec<Write> {
        if self.next_due().is_none() {
            return vec![];
        }
        let ready: Vec<String> = self.due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        let mut writes = vec![];
        for key in ready {
            self.due.remove(&key);
            if let Some(write) = self.plan(&key, clock) {
                self.writing.insert(key, false);
                writes.push(write);
            }
        }
        writes
    }

    /// The write a group needs, if phalanx keeps its status and it changed.
    pub fn plan(&self, key: &str, clock: Timestamp) -> Option<Write> {
        let group = self.groups.get(key)?;
        let members: Vec<&PodRecord> =
            self.members.get(key).into_iter().flatten().filter_map(|uid| self.pods.get(uid)).collect();
        let ours = if members.is_empty() {
            group.status.phase.is_none()
        } else {
            members.iter().any(|p| self.scheduler_names.contains(&p.scheduler_name))
        };
        if !ours {
            return None;
        }
        let summaries: Vec<MemberSummary> = members.into_iter().map(|p| p.member.clone()).collect();
        let view = GroupView { namespace: &group.namespace, min_member: group.min_member, members: &summaries };
        let status = next_status(&group.status, view, clock);
        (status != group.status).then(|| Write {
            group: key.to_string(),
            namespace: group.namespace.clone(),
            name: group.name.clone(),
            resource_version: group.resource_version.clone(),
            status,
        })
    }

    /// Records how a write ended: the group as written, or a later retry.
    pub fn finish(&mut self, group: &str, result: WriteResult, now: Instant) {
        let changed = self.writing.remove(group).unwrap_or(false);
        match result {
            Ok(record) => {
                if self.groups.contains_key(group) {
                    self.groups.insert(group.to_string(), record);
                }
                if changed {
                    self.mark(group, now, DEBOUNCE);
                }
            }
            Err(StatusError::Gone { .. }) => {}
            Err(error) => {
                if matches!(error, StatusError::Conflict { .. } | StatusError::NotLeading { .. }) {
                    debug!(%error, "will look again");
                } else {
                    warn!(%error, "will try again");
                }
                self.mark(group, now, if changed { DEBOUNCE } else { RETRY });
            }
        }
    }
}

#[derive(Clone)]
struct Writer {
    client: Client,
    limiter: Arc<RateLimiter>,
    leadership: Leadership,
}

impl Writer {
    async fn write(&self, write: &Write) -> WriteResult {
        self.limiter.acquire().await;
        if !self.leadership.is_leading() {
            return Err(StatusError::NotLeading { group: write.group.clone() });
        }
        let patch = status_patch(&write.status, write.resource_version.as_deref());
        let api: Api<PodGroup> = Api::namespaced(self.client.clone(), &write.namespace);
        let group = write.group.clone();
        let written =
            api.patch_status(&write.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|source| {
                match &source {
                    kube::Error::Api(status) if status.code == 409 => StatusError::Conflict { group },
                    kube::Error::Api(status) if status.code == 404 => StatusError::Gone { group },
                    _ => StatusError::Write { group, source },
                }
            })?;
        group_record(&written).ok_or_else(|| StatusError::Gone { group: write.group.clone() })
    }
}

async fn run(mut tracker: Tracker, mut inputs: mpsc::Receiver<Input>, writer: Writer) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_WRITES));
    let (done_tx, mut done) = mpsc::unbounded_channel::<(String, WriteResult)>();
    let mut leadership = writer.leadership.clone();
    loop {
        // A standby writes nothing: what falls due waits for its term.
        let wake = tracker.next_due().filter(|_| leadership.is_leading());
        tokio::select! {
            _ = leadership.changed() => {
                if leadership.is_leading() {
                    // The previous leader may have left statuses behind.
                    tracker.mark_all(Instant::now());
                }
            }
            input = inputs.recv() => match input {
                Some(input) => tracker.apply(input, Instant::now()),
                None => return,
            },
            Some((group, result)) = done.recv() => tracker.finish(&group, result, Instant::now()),
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                for write in tracker.take_due(Instant::now(), Timestamp::now()) {
                    debug!(group = %write.group, status = ?write.status, "writing PodGroup status");
                    let (writer, slots, done_tx) = (writer.clone(), slots.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let Ok(_permit) = slots.acquire_owned().await else { return };
                        let result = writer.write(&write).await;
                        let _ = done_tx.send((write.group, result));
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "phalanx";

    fn tracker() -> Tracker {
        Tracker::new(Arc::new([OURS.to_string()].into()))
    }

    fn group(name: &str, min: i32, phase: Option<GroupPhase>) -> GroupRecord {
        GroupRecord {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: Some("1".into()),
            min_member: min,
            status: GroupStatus { phase, ..Default::default() },
        }
    }

    fn pod(uid: &str, group: &str, scheduler: &str, bound: bool, phase: MemberPhase) -> PodRecord {
        PodRecord {
            uid: uid.into(),
            group: format!("ns/{group}"),
            scheduler_name: scheduler.into(),
            member: MemberSummary { name: uid.into(), bound, phase, owners: vec![] },
        }
    }

    fn clock() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    /// A tracker that has seen both lists, with the given objects.
    fn listed(groups: Vec<GroupRecord>, pods: Vec<PodRecord>, now: Instant) -> Tracker {
        let mut t = tracker();
        let group_keys = groups.iter().map(GroupRecord::key).collect();
        let uids = pods.iter().map(|p| p.uid.clone()).collect();
        for g in groups {
            t.apply(Input::GroupApplied(g), now);
        }
        for p in pods {
            t.apply(Input::PodApplied(p), now);
        }
        t.apply(Input::GroupsListed(group_keys), now);
        t.apply(Input::PodsListed(uids), now);
        t
    }

    fn phases(writes: &[Write]) -> Vec<(String, Option<GroupPhase>)> {
        writes.iter().map(|w| (w.group.clone(), w.status.phase)).collect()
    }

    #[test]
    fn nothing_is_written_before_both_watches_have_listed() {
        let now = Instant::now();
        let mut t = tracker();
        t.apply(Input::GroupApplied(group("g", 2, None)), now);
        t.apply(Input::GroupsListed(["ns/g".to_string()].into()), now);
        assert_eq!(t.next_due(), None, "pods not listed yet");
        assert!(t.take_due(now + DEBOUNCE, clock()).is_empty());
        t.apply(Input::PodsListed(HashSet::new()), now);
        assert_eq!(t.next_due(), Some(now + DEBOUNCE));
        assert_eq!(phases(&t.take_due(now + DEBOUNCE, clock())), [("ns/g".into(), Some(GroupPhase::Pending))]);
    }

    #[test]
    fn changes_are_gathered_for_the_debounce_interval() {
        let now = Instant::now();
        let mut t = listed(vec![group("g", 2, Some(GroupPhase::Pending))], vec![], now);
        assert!(t.take_due(now + DEBOUNCE, clock()).is_empty(), "an empty group with a phase is left alone");
        let later = now + Duration::from_secs(1);
        t.apply(Input::PodApplied(pod("a", "g", OURS, false, MemberPhase::Pending)), later);
        t.apply(
            Input::PodApplied(pod("b", "g", OURS, false, MemberPhase::Pending)),
            later + Duration::from_millis(100),
        );
        assert_eq!(t.next_due(), Some(later + DEBOUNCE), "due from the first change");
        assert!(t.take_due(later + DEBOUNCE - Duration::from_millis(1), clock()).is_empty());
        let writes = t.take_due(later + DEBOUNCE, clock());
        assert_eq!(phases(&writes), [("ns/g".into(), Some(GroupPhase::PreScheduling))]);
        assert_eq!(writes[0].resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn an_unchanged_status_is_not_written() {
        let now = Instant::now();
        let g = group("g", 1, Some(GroupPhase::PreScheduling));
        let mut t = listed(vec![g], vec![pod("a", "g", OURS, false, MemberPhase::Pending)], now);
        assert!(t.take_due(now + DEBOUNCE, clock()).is_empty());
        assert_eq!(t.next_due(), None, "nothing left due");
    }

    #[test]
    fn groups_of_other_schedulers_are_left_alone() {
        let now = Instant::now();
        let pods = vec![pod("a", "theirs", "default-scheduler", true, MemberPhase::Running)];
        let mut t = listed(vec![group("theirs", 1, None)], pods, now);
        assert!(t.take_due(now + DEBOUNCE, clock()).is_empty());
        // One member of ours is enough to make it ours.
        t.apply(Input::PodApplied(pod("b", "theirs", OURS, false, MemberPhase::Pending)), now);
        let writes = t.take_due(now + DEBOUNCE, clock());
        assert_eq!(phases(&writes), [("ns/theirs".into(), Some(GroupPhase::Running))]);
    }

    #[test]
    fn a_write_in_flight_is_followed_by_another_look_if_the_group_changed() {
        let now = Instant::now();
        let pods = vec![pod("a", "g", OURS, true, MemberPhase::Running)];
        let mut t = listed(vec![group("g", 1, None)], pods, now);
        let writes = t.take_due(now + DEBOUNCE, clock());
        assert_eq!(phases(&writes), [("ns/g".into(), Some(GroupPhase::Running))]);
        // The pod finishes while the write is in flight: no second write yet.
        t.apply(Input::PodApplied(pod("a", "g", OURS, true, MemberPhase::Succeeded)), now + DEBOUNCE);
        assert_eq!(t.next_due(), None);
        let mut written = group("g", 1, None);
        written.resource_version = Some("2".into());
        written.status = writes[0].status.clone();
        let later = now + DEBOUNCE * 2;
        t.finish("ns/g", Ok(written), later);
        let next = t.take_due(later + DEBOUNCE, clock());
        assert_eq!(phases(&next), [("ns/g".into(), Some(GroupPhase::Finished))]);
        assert_eq!(next[0].resource_version.as_deref(), Some("2"), "from the written object");
    }

    #[test]
    fn a_refused_write_is_tried_again_later() {
        let now = Instant::now();
        let mut t = listed(vec![group("g", 1, None)], vec![], now);
        let writes = t.take_due(now + DEBOUNCE, clock());
        assert_eq!(writes.len(), 1);
        t.finish("ns/g", Err(StatusError::Conflict { group: "ns/g".into() }), now + DEBOUNCE);
        assert_eq!(t.next_due(), Some(now + DEBOUNCE + RETRY));
        // A group that is gone is dropped.
        let writes = t.take_due(now + DEBOUNCE + RETRY, clock());
        assert_eq!(writes.len(), 1);
        t.finish("ns/g", Err(StatusError::Gone { group: "ns/g".into() }), now);
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn a_relist_drops_what_is_gone_and_looks_at_every_group() {
        let now = Instant::now();
        let pods =
            vec![pod("a", "g", OURS, true, MemberPhase::Running), pod("b", "g", OURS, true, MemberPhase::Running)];
        let mut g = group("g", 2, Some(GroupPhase::Running));
        g.status.scheduled = 2;
        g.status.running = 2;
        g.status.schedule_start_time = Some(clock());
        let mut t = listed(vec![g, group("old", 1, None)], pods, now);
        assert_eq!(phases(&t.take_due(now + DEBOUNCE, clock())), [("ns/old".into(), Some(GroupPhase::Pending))]);
        t.finish("ns/old", Err(StatusError::Gone { group: "ns/old".into() }), now);
        // Pod b went away while the watch was down; so did the old group.
        t.apply(Input::GroupsListed(["ns/g".to_string()].into()), now);
        t.apply(Input::PodsListed(["a".to_string()].into()), now);
        let writes = t.take_due(now + DEBOUNCE, clock());
        assert_eq!(phases(&writes), [("ns/g".into(), Some(GroupPhase::Pending))]);
        assert_eq!(writes[0].status.running, 1);
    }

    #[test]
    fn a_pod_moved_to_another_group_counts_there_only() {
        let now = Instant::now();
        let mut t = listed(
            vec![group("one", 1, None), group("two", 1, None)],
            vec![pod("a", "one", OURS, false, MemberPhase::Pending)],
            now,
        );
        t.apply(Input::PodApplied(pod("a", "two", OURS, false, MemberPhase::Pending)), now);
        let mut writes = phases(&t.take_due(now + DEBOUNCE, clock()));
        writes.sort();
        assert_eq!(
            writes,
            [("ns/one".into(), Some(GroupPhase::Pending)), ("ns/two".into(), Some(GroupPhase::PreScheduling))]
        );
    }

    #[test]
    fn the_patch_spells_out_every_field() {
        let status = GroupStatus {
            phase: Some(GroupPhase::Scheduling),
            scheduled: 1,
            schedule_start_time: Some(clock()),
            ..Default::default()
        };
        let patch = status_patch(&status, Some("42"));
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "42"},
                "status": {
                    "phase": "Scheduling", "occupiedBy": null, "scheduled": 1, "running": 0,
                    "succeeded": 0, "failed": 0, "scheduleStartTime": "2023-11-14T22:13:20Z"
                }
            })
        );
    }

    #[test]
    fn objects_translate() {
        let group: PodGroup = serde_json::from_value(json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "g", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"minMember": 3},
            "status": {"phase": "Running", "running": 3, "scheduled": 3, "occupiedBy": "",
                       "scheduleStartTime": "2023-11-14T22:13:20Z"}
        }))
        .unwrap();
        let record = group_record(&group).unwrap();
        assert_eq!(
            (record.key(), record.min_member, record.resource_version.as_deref()),
            ("ns/g".into(), 3, Some("7"))
        );
        assert_eq!(
            record.status,
            GroupStatus {
                phase: Some(GroupPhase::Running),
                scheduled: 3,
                running: 3,
                schedule_start_time: Some(clock()),
                ..Default::default()
            }
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "w-0", "namespace": "ns", "uid": "u1",
                         "labels": {POD_GROUP_LABEL: "g"},
                         "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "job", "uid": "j"}]},
            "spec": {"schedulerName": OURS, "nodeName": "n1", "containers": []},
            "status": {"phase": "Succeeded"}
        }))
        .unwrap();
        assert_eq!(
            pod_record(&pod).unwrap(),
            PodRecord {
                uid: "u1".into(),
                group: "ns/g".into(),
                scheduler_name: OURS.into(),
                member: MemberSummary {
                    name: "w-0".into(),
                    bound: true,
                    phase: MemberPhase::Succeeded,
                    owners: vec!["job".into()]
                },
            }
        );
    }
}
