//! Keeps `status` of `scheduling.x-k8s.io` PodGroups up to date, as
//! scheduler-plugins' PodGroup controller does: the scheduler's part that
//! tracks groups and their member pods and says which status to write when.
//!
//! Two watches feed it: PodGroups, and every pod carrying the group label
//! (finished pods included, which the scheduler's pod watch leaves out). A
//! change to a group or to one of its pods marks the group; a marked group
//! is looked at once `DEBOUNCE` has passed since the first mark, so a burst
//! of pod updates costs one write. [`next_status`] says what the status
//! should be; it is written only when it differs from what the API server
//! holds, guarded by the resourceVersion it was computed from, so a stale
//! view is refused rather than written.
//!
//! Phalanx keeps the status of the groups whose pods name one of its
//! profiles (`spec.schedulerName`); a group with no pods yet is only given
//! its first phase (Pending). Groups of other schedulers are left alone.

mod phase;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use phase::{GroupPhase, GroupStatus, GroupView, MemberPhase, MemberSummary, next_status};

/// How long a group's changes are gathered before its status is worked out.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long after a refused or failed write the group is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// What the two watches report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupStatusInput {
    GroupApplied(GroupRecord),
    GroupDeleted(String),
    /// `namespace/name` of every group after a (re-)list.
    GroupsListed(HashSet<String>),
    MemberApplied(MemberRecord),
    MemberDeleted(String),
    /// UIDs of every labelled pod after a (re-)list.
    MembersListed(HashSet<String>),
}

/// What is kept of a PodGroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// What is kept of a pod carrying the group label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub uid: String,
    /// `namespace/name` of the group its label names.
    pub group: String,
    pub scheduler_name: String,
    pub member: MemberSummary,
}

/// A status to write, guarded by the resourceVersion it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusWrite {
    /// `namespace/name`.
    pub group: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub status: GroupStatus,
}

/// How a status write ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StatusResult {
    /// Written: the group as the API server now holds it.
    Written(GroupRecord),
    /// 409: the group changed since its status was worked out.
    Conflict,
    /// 404: the group is gone.
    Gone,
    /// Not sent, for the reason given (this replica no longer leads).
    NotSent(String),
    /// Anything else.
    Failed(String),
}

/// How the write of one group's status ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusOutcome {
    /// `namespace/name`.
    pub group: String,
    pub result: StatusResult,
}

/// Which wall-clock time a driver's `Instant` is, for the timestamps a
/// status carries: the driver names one pair and the rest follows, so the
/// core never reads a clock (and a simulated one drives it alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WallClock {
    pub instant: Instant,
    pub timestamp: Timestamp,
}

impl WallClock {
    pub fn at(&self, now: Instant) -> Timestamp {
        let since = now.saturating_duration_since(self.instant);
        self.timestamp.checked_add(since).unwrap_or(self.timestamp)
    }
}

/// The groups, their members and which groups are due a look.
#[derive(Debug)]
pub(crate) struct StatusTracker {
    /// The profiles' scheduler names: the groups whose pods name one are ours.
    scheduler_names: HashSet<String>,
    clock: WallClock,
    groups: HashMap<String, GroupRecord>,
    members: HashMap<String, MemberRecord>,
    /// Group key -> UIDs of the pods naming it.
    member_uids: HashMap<String, BTreeSet<String>>,
    /// Groups due a look, and when.
    due: HashMap<String, Instant>,
    /// Groups with a write in flight, and whether they changed meanwhile.
    writing: HashMap<String, GroupChange>,
    groups_listed: bool,
    members_listed: bool,
}

/// Whether a group changed while its status was being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupChange {
    Unchanged,
    Changed,
}

impl StatusTracker {
    pub(crate) fn new(scheduler_names: HashSet<String>, clock: WallClock) -> Self {
        Self {
            scheduler_names,
            clock,
            groups: HashMap::new(),
            members: HashMap::new(),
            member_uids: HashMap::new(),
            due: HashMap::new(),
            writing: HashMap::new(),
            groups_listed: false,
            members_listed: false,
        }
    }

    /// Marks a group for a look `delay` from now, unless it is already due
    /// sooner; a group being written is looked at again once the write ends.
    fn mark(&mut self, group: &str, now: Instant, delay: Duration) {
        if let Some(change) = self.writing.get_mut(group) {
            *change = GroupChange::Changed;
            return;
        }
        let at = now + delay;
        self.due.entry(group.to_string()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }

    /// Every group gets a look (after a re-list, or when this replica starts
    /// to lead: the previous leader may have left statuses behind).
    pub(crate) fn mark_all(&mut self, now: Instant) {
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            self.mark(&key, now, DEBOUNCE);
        }
    }

    fn remove_member(&mut self, uid: &str, now: Instant) {
        if let Some(old) = self.members.remove(uid) {
            if let Some(uids) = self.member_uids.get_mut(&old.group) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.member_uids.remove(&old.group);
                }
            }
            self.mark(&old.group, now, DEBOUNCE);
        }
    }

    pub(crate) fn apply(&mut self, input: GroupStatusInput, now: Instant) {
        match input {
            GroupStatusInput::GroupApplied(record) => {
                let key = record.key();
                self.groups.insert(key.clone(), record);
                self.mark(&key, now, DEBOUNCE);
            }
            GroupStatusInput::GroupDeleted(key) => {
                self.groups.remove(&key);
                self.due.remove(&key);
            }
            GroupStatusInput::GroupsListed(keys) => {
                self.groups.retain(|k, _| keys.contains(k));
                self.due.retain(|k, _| keys.contains(k));
                self.groups_listed = true;
                self.mark_all(now);
            }
            GroupStatusInput::MemberApplied(record) => {
                if self.members.get(&record.uid).is_some_and(|old| old.group != record.group) {
                    self.remove_member(&record.uid, now);
                }
                self.member_uids.entry(record.group.clone()).or_default().insert(record.uid.clone());
                self.mark(&record.group, now, DEBOUNCE);
                self.members.insert(record.uid.clone(), record);
            }
            GroupStatusInput::MemberDeleted(uid) => self.remove_member(&uid, now),
            GroupStatusInput::MembersListed(uids) => {
                let gone: Vec<String> = self.members.keys().filter(|u| !uids.contains(*u)).cloned().collect();
                for uid in gone {
                    self.remove_member(&uid, now);
                }
                self.members_listed = true;
                self.mark_all(now);
            }
        }
    }

    /// When the next group is due; none until both watches have listed, so
    /// that no group is judged on half its pods.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if !(self.groups_listed && self.members_listed) {
            return None;
        }
        self.due.values().min().copied()
    }

    /// The writes due by `now`. The groups returned count as being written
    /// until [`StatusTracker::finish`].
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<StatusWrite> {
        if self.next_due().is_none_or(|due| due > now) {
            return vec![];
        }
        let mut ready: Vec<String> = self.due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        // In a stable order, so that every driver writes alike.
        ready.sort();
        let mut writes = vec![];
        for key in ready {
            self.due.remove(&key);
            if let Some(write) = self.plan(&key, now) {
                self.writing.insert(key, GroupChange::Unchanged);
                writes.push(write);
            }
        }
        writes
    }

    /// The write a group needs, if phalanx keeps its status and it changed.
    fn plan(&self, key: &str, now: Instant) -> Option<StatusWrite> {
        let group = self.groups.get(key)?;
        let members: Vec<&MemberRecord> =
            self.member_uids.get(key).into_iter().flatten().filter_map(|uid| self.members.get(uid)).collect();
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
        let status = next_status(&group.status, view, self.clock.at(now));
        (status != group.status).then(|| StatusWrite {
            group: key.to_string(),
            namespace: group.namespace.clone(),
            name: group.name.clone(),
            resource_version: group.resource_version.clone(),
            status,
        })
    }

    /// Records how a write ended: the group as written, or a later look.
    pub(crate) fn finish(&mut self, outcome: StatusOutcome, now: Instant) {
        let group = outcome.group;
        let change = self.writing.remove(&group).unwrap_or(GroupChange::Unchanged);
        let again = match outcome.result {
            StatusResult::Written(record) => {
                if self.groups.contains_key(&group) {
                    self.groups.insert(group.clone(), record);
                }
                (change == GroupChange::Changed).then_some(DEBOUNCE)
            }
            StatusResult::Gone => None,
            StatusResult::Conflict | StatusResult::NotSent(_) | StatusResult::Failed(_) => {
                Some(if change == GroupChange::Changed { DEBOUNCE } else { RETRY })
            }
        };
        if let Some(delay) = again {
            self.mark(&group, now, delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "phalanx";

    fn clock() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn tracker(now: Instant) -> StatusTracker {
        StatusTracker::new([OURS.to_string()].into(), WallClock { instant: now, timestamp: clock() })
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

    fn pod(uid: &str, group: &str, scheduler: &str, bound: bool, phase: MemberPhase) -> MemberRecord {
        MemberRecord {
            uid: uid.into(),
            group: format!("ns/{group}"),
            scheduler_name: scheduler.into(),
            member: MemberSummary { name: uid.into(), bound, phase, owners: vec![] },
        }
    }

    fn outcome(group: &str, result: StatusResult) -> StatusOutcome {
        StatusOutcome { group: group.into(), result }
    }

    /// A tracker that has seen both lists, with the given objects.
    fn listed(groups: Vec<GroupRecord>, pods: Vec<MemberRecord>, now: Instant) -> StatusTracker {
        let mut t = tracker(now);
        let group_keys = groups.iter().map(GroupRecord::key).collect();
        let uids = pods.iter().map(|p| p.uid.clone()).collect();
        for g in groups {
            t.apply(GroupStatusInput::GroupApplied(g), now);
        }
        for p in pods {
            t.apply(GroupStatusInput::MemberApplied(p), now);
        }
        t.apply(GroupStatusInput::GroupsListed(group_keys), now);
        t.apply(GroupStatusInput::MembersListed(uids), now);
        t
    }

    fn phases(writes: &[StatusWrite]) -> Vec<(String, Option<GroupPhase>)> {
        writes.iter().map(|w| (w.group.clone(), w.status.phase)).collect()
    }

    #[test]
    fn nothing_is_written_before_both_watches_have_listed() {
        let now = Instant::now();
        let mut t = tracker(now);
        t.apply(GroupStatusInput::GroupApplied(group("g", 2, None)), now);
        t.apply(GroupStatusInput::GroupsListed(["ns/g".to_string()].into()), now);
        assert_eq!(t.next_due(), None, "pods not listed yet");
        assert!(t.take_due(now + DEBOUNCE).is_empty());
        t.apply(GroupStatusInput::MembersListed(HashSet::new()), now);
        assert_eq!(t.next_due(), Some(now + DEBOUNCE));
        assert_eq!(phases(&t.take_due(now + DEBOUNCE)), [("ns/g".into(), Some(GroupPhase::Pending))]);
    }

    #[test]
    fn changes_are_gathered_for_the_debounce_interval() {
        let now = Instant::now();
        let mut t = listed(vec![group("g", 2, Some(GroupPhase::Pending))], vec![], now);
        assert!(t.take_due(now + DEBOUNCE).is_empty(), "an empty group with a phase is left alone");
        let later = now + Duration::from_secs(1);
        t.apply(GroupStatusInput::MemberApplied(pod("a", "g", OURS, false, MemberPhase::Pending)), later);
        t.apply(
            GroupStatusInput::MemberApplied(pod("b", "g", OURS, false, MemberPhase::Pending)),
            later + Duration::from_millis(100),
        );
        assert_eq!(t.next_due(), Some(later + DEBOUNCE), "due from the first change");
        assert!(t.take_due(later + DEBOUNCE - Duration::from_millis(1)).is_empty());
        let writes = t.take_due(later + DEBOUNCE);
        assert_eq!(phases(&writes), [("ns/g".into(), Some(GroupPhase::PreScheduling))]);
        assert_eq!(writes[0].resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn an_unchanged_status_is_not_written() {
        let now = Instant::now();
        let g = group("g", 1, Some(GroupPhase::PreScheduling));
        let mut t = listed(vec![g], vec![pod("a", "g", OURS, false, MemberPhase::Pending)], now);
        assert!(t.take_due(now + DEBOUNCE).is_empty());
        assert_eq!(t.next_due(), None, "nothing left due");
    }

    #[test]
    fn groups_of_other_schedulers_are_left_alone() {
        let now = Instant::now();
        let pods = vec![pod("a", "theirs", "default-scheduler", true, MemberPhase::Running)];
        let mut t = listed(vec![group("theirs", 1, None)], pods, now);
        assert!(t.take_due(now + DEBOUNCE).is_empty());
        // One member of ours is enough to make it ours.
        t.apply(GroupStatusInput::MemberApplied(pod("b", "theirs", OURS, false, MemberPhase::Pending)), now);
        let writes = t.take_due(now + DEBOUNCE);
        assert_eq!(phases(&writes), [("ns/theirs".into(), Some(GroupPhase::Running))]);
    }

    #[test]
    fn the_schedule_start_time_is_the_wall_time_of_the_look() {
        let now = Instant::now();
        let mut t = listed(vec![group("g", 1, None)], vec![pod("a", "g", OURS, true, MemberPhase::Pending)], now);
        let writes = t.take_due(now + Duration::from_secs(3));
        assert_eq!(writes[0].status.schedule_start_time, Some(Timestamp::from_second(1_700_000_003).unwrap()));
    }

    #[test]
    fn a_write_in_flight_is_followed_by_another_look_if_the_group_changed() {
        let now = Instant::now();
        let pods = vec![pod("a", "g", OURS, true, MemberPhase::Running)];
        let mut t = listed(vec![group("g", 1, None)], pods, now);
        let writes = t.take_due(now + DEBOUNCE);
        assert_eq!(phases(&writes), [("ns/g".into(), Some(GroupPhase::Running))]);
        // The pod finishes while the write is in flight: no second write yet.
        t.apply(GroupStatusInput::MemberApplied(pod("a", "g", OURS, true, MemberPhase::Succeeded)), now + DEBOUNCE);
        assert_eq!(t.next_due(), None);
        let mut written = group("g", 1, None);
        written.resource_version = Some("2".into());
        written.status = writes[0].status.clone();
        let later = now + DEBOUNCE * 2;
        t.finish(outcome("ns/g", StatusResult::Written(written)), later);
        let next = t.take_due(later + DEBOUNCE);
        assert_eq!(phases(&next), [("ns/g".into(), Some(GroupPhase::Finished))]);
        assert_eq!(next[0].resource_version.as_deref(), Some("2"), "from the written object");
    }

    #[test]
    fn a_refused_write_is_tried_again_later() {
        let now = Instant::now();
        let mut t = listed(vec![group("g", 1, None)], vec![], now);
        let writes = t.take_due(now + DEBOUNCE);
        assert_eq!(writes.len(), 1);
        t.finish(outcome("ns/g", StatusResult::Conflict), now + DEBOUNCE);
        assert_eq!(t.next_due(), Some(now + DEBOUNCE + RETRY));
        // A group that is gone is dropped.
        let writes = t.take_due(now + DEBOUNCE + RETRY);
        assert_eq!(writes.len(), 1);
        t.finish(outcome("ns/g", StatusResult::Gone), now);
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
        assert_eq!(phases(&t.take_due(now + DEBOUNCE)), [("ns/old".into(), Some(GroupPhase::Pending))]);
        t.finish(outcome("ns/old", StatusResult::Gone), now);
        // Pod b went away while the watch was down; so did the old group.
        t.apply(GroupStatusInput::GroupsListed(["ns/g".to_string()].into()), now);
        t.apply(GroupStatusInput::MembersListed(["a".to_string()].into()), now);
        let writes = t.take_due(now + DEBOUNCE);
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
        t.apply(GroupStatusInput::MemberApplied(pod("a", "two", OURS, false, MemberPhase::Pending)), now);
        let writes = phases(&t.take_due(now + DEBOUNCE));
        assert_eq!(
            writes,
            [("ns/one".into(), Some(GroupPhase::Pending)), ("ns/two".into(), Some(GroupPhase::PreScheduling))]
        );
    }
}
