//! The scheduling queue of gangs: highest priority first, then oldest. A
//! gang's priority is its highest member's and its age its oldest member's;
//! a pod without a gang is a gang of one. A gang that found no placement
//! waits as *unschedulable* until the cluster changes in a way that may help
//! (a node added or freed), then goes through a backoff that doubles with each
//! failed attempt. A gang that cannot be tried yet (too few members, a missing
//! or invalid PodGroup) *waits* until its members or its object change.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::gang::GangId;
use super::pod::PodInfo;

/// Unschedulable gangs are retried at least this often even if no event
/// suggests they might fit (a safety net, as kube-scheduler has).
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl BackoffPolicy {
    /// Backoff after `attempts` failed attempts: initial, doubling, capped.
    pub fn after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// What a queue entry stands for: a gang's object, or one pod on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GangKey {
    Gang(GangId),
    /// A lone pod, by UID.
    Pod(String),
}

impl GangKey {
    pub fn of(pod: &PodInfo) -> Self {
        match &pod.job {
            Some(gang) => GangKey::Gang(gang.clone()),
            None => GangKey::Pod(pod.uid.clone()),
        }
    }

    pub fn gang(&self) -> Option<&GangId> {
        match self {
            GangKey::Gang(g) => Some(g),
            GangKey::Pod(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable,
    /// Cannot be tried until its members or its object change.
    Waiting,
    /// Popped for a decision; `changes_seen` is the cluster-change count then,
    /// so a change during the attempt is not missed.
    InFlight {
        changes_seen: u64,
    },
}

#[derive(Debug)]
struct Entry {
    /// Pending members by UID (name order keeps decisions reproducible).
    members: BTreeMap<String, PodInfo>,
    attempts: u32,
    last_attempt: Option<Instant>,
    /// When the current run of placement attempts began (for scheduleTimeoutSeconds).
    trying_since: Option<Instant>,
    state: State,
    /// Matches the heap item that currently represents this entry; older
    /// heap items are stale and skipped.
    ticket: u64,
    /// Order of arrival: breaks ties between gangs created in the same second
    /// (creation timestamps have whole seconds), so submission order holds.
    arrival: u64,
    /// The cluster-change count when the gang was last tried: a gang in
    /// backoff that has not been tried since the latest change may fit now.
    changes_at_attempt: u64,
}

impl Entry {
    fn priority(&self) -> i32 {
        self.members.values().map(|p| p.priority).max().unwrap_or(0)
    }

    fn created(&self) -> i64 {
        self.members.values().map(|p| p.created).min().unwrap_or(0)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    created: i64,
    arrival: u64,
    ticket: u64,
    key: GangKey,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.created.cmp(&self.created))
            .then_with(|| other.arrival.cmp(&self.arrival))
            .then_with(|| other.ticket.cmp(&self.ticket))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub waiting: usize,
    pub in_flight: usize,
}

#[derive(Debug)]
pub struct SchedulingQueue {
    policy: BackoffPolicy,
    entries: HashMap<GangKey, Entry>,
    /// Which entry each queued pod is a member of.
    member_of: HashMap<String, GangKey>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, GangKey)>>,
    unschedulable: HashSet<GangKey>,
    next_ticket: u64,
    cluster_changes: u64,
    lengths: QueueLengths,
}

impl QueueLengths {
    fn slot(&mut self, state: State) -> &mut usize {
        match state {
            State::Active => &mut self.active,
            State::Backoff(_) => &mut self.backoff,
            State::Unschedulable => &mut self.unschedulable,
            State::Waiting => &mut self.waiting,
            State::InFlight { .. } => &mut self.in_flight,
        }
    }
}

/// Moves an entry to `state`, keeping the per-state counts right.
fn set_state(lengths: &mut QueueLengths, entry: &mut Entry, state: State) {
    *lengths.slot(entry.state) -= 1;
    *lengths.slot(state) += 1;
    entry.state = state;
}

impl SchedulingQueue {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            member_of: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            next_ticket: 0,
            cluster_changes: 0,
            lengths: QueueLengths::default(),
        }
    }

    /// Whether the pod is queued.
    pub fn contains(&self, uid: &str) -> bool {
        self.member_of.contains_key(uid)
    }

    /// Adds a pending pod to its gang's entry, or updates it. A waiting gang
    /// is tried at once when it gains a member; an unschedulable one gets
    /// another chance (after backoff) when a member's scheduling spec changed.
    pub fn upsert(&mut self, pod: PodInfo, now: Instant) {
        let key = GangKey::of(&pod);
        let uid = pod.uid.clone();
        if self.member_of.get(&uid).is_some_and(|k| *k != key) {
            // The pod moved to another gang (its labels changed).
            self.remove(&uid);
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            self.lengths.active += 1;
            let members = BTreeMap::from([(uid.clone(), pod)]);
            self.next_ticket += 1;
            let entry = Entry {
                members,
                attempts: 0,
                last_attempt: None,
                trying_since: None,
                state: State::Active,
                ticket: 0,
                arrival: self.next_ticket,
                changes_at_attempt: 0,
            };
            self.entries.insert(key.clone(), entry);
            self.member_of.insert(uid, key.clone());
            self.push_active(&key);
            return;
        };
        self.member_of.insert(uid.clone(), key.clone());
        let rank_before = (entry.priority(), entry.created());
        let differs = entry.members.get(&uid).is_none_or(|old| old.scheduling_spec_differs(&pod));
        entry.members.insert(uid, pod);
        let reorder = (entry.priority(), entry.created()) != rank_before;
        match entry.state {
            State::Waiting if differs => self.push_active(&key),
            State::Unschedulable if differs => self.leave_unschedulable(&key, now),
            State::Active if reorder => self.push_active(&key),
            _ => {}
        }
    }

    /// Takes a pod out of its gang's entry; the entry goes when it is empty.
    pub fn remove(&mut self, uid: &str) -> Option<PodInfo> {
        let key = self.member_of.remove(uid)?;
        let entry = self.entries.get_mut(&key)?;
        let pod = entry.members.remove(uid);
        if entry.members.is_empty() {
            let entry = self.entries.remove(&key).expect("present");
            *self.lengths.slot(entry.state) -= 1;
            self.unschedulable.remove(&key);
        }
        pod
    }

    /// The next gang to decide on, if any is ready. Gangs of higher priority
    /// that back off but have not been tried since the cluster last changed
    /// go first: otherwise a lower-priority gang whose backoff ends sooner
    /// takes the room that freed for them.
    pub fn pop(&mut self, now: Instant) -> Option<GangKey> {
        self.flush_backoff(now);
        let next = self.peek_active()?;
        for key in self.owed_a_try_above(next) {
            self.push_active(&key);
        }
        let item = self.active.pop().expect("peeked");
        let entry = self.entries.get_mut(&item.key).expect("a live heap item has an entry");
        set_state(&mut self.lengths, entry, State::InFlight { changes_seen: self.cluster_changes });
        entry.attempts += 1;
        entry.last_attempt = Some(now);
        entry.changes_at_attempt = self.cluster_changes;
        entry.trying_since.get_or_insert(now);
        Some(item.key)
    }

    /// The priority of the next active gang, dropping stale heap items.
    fn peek_active(&mut self) -> Option<i32> {
        while let Some(item) = self.active.peek() {
            let live = self.entries.get(&item.key).is_some_and(|e| e.state == State::Active && e.ticket == item.ticket);
            if live {
                return Some(item.priority);
            }
            self.active.pop();
        }
        None
    }

    /// Gangs in backoff, of priority above `priority`, not tried since the
    /// latest cluster change.
    fn owed_a_try_above(&self, priority: i32) -> Vec<GangKey> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Backoff(_))
                    && e.changes_at_attempt < self.cluster_changes
                    && e.priority() > priority
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The gang's pending members, in UID order.
    pub fn members(&self, key: &GangKey) -> impl Iterator<Item = &PodInfo> {
        self.entries.get(key).into_iter().flat_map(|e| e.members.values())
    }

    pub fn member_count(&self, key: &GangKey) -> usize {
        self.entries.get(key).map_or(0, |e| e.members.len())
    }

    /// The gang's priority (its highest member's) and age (its oldest member's).
    pub fn rank(&self, key: &GangKey) -> Option<(i32, i64)> {
        self.entries.get(key).map(|e| (e.priority(), e.created()))
    }

    /// Since when placements have been tried without success.
    pub fn trying_since(&self, key: &GangKey) -> Option<Instant> {
        self.entries.get(key).and_then(|e| e.trying_since)
    }

    /// Starts a new run of attempts (after a timeout was reported).
    pub fn restart_clock(&mut self, key: &GangKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.trying_since = None;
        }
    }

    /// The attempt found no placement. The gang waits for a cluster change,
    /// unless one already happened during the attempt.
    pub fn mark_unschedulable(&mut self, key: &GangKey, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match entry.state {
            State::InFlight { changes_seen } if changes_seen != self.cluster_changes => {
                self.send_to_backoff(key, now);
            }
            _ => {
                set_state(&mut self.lengths, entry, State::Unschedulable);
                self.unschedulable.insert(key.clone());
            }
        }
    }

    /// The gang cannot be tried until a member or its object changes.
    pub fn wait(&mut self, key: &GangKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.trying_since = None;
            set_state(&mut self.lengths, entry, State::Waiting);
        }
    }

    /// The gang's object changed: try a waiting or unschedulable gang again.
    pub fn wake(&mut self, key: &GangKey, now: Instant) {
        match self.entries.get(key).map(|e| e.state) {
            Some(State::Waiting) => self.push_active(key),
            Some(State::Unschedulable) => self.leave_unschedulable(key, now),
            _ => {}
        }
    }

    /// The attempt failed for a reason other than fit (a failed bind, a
    /// timeout): retry after backoff.
    pub fn retry_later(&mut self, key: &GangKey, now: Instant) {
        if self.entries.contains_key(key) {
            self.unschedulable.remove(key);
            self.send_to_backoff(key, now);
        }
    }

    /// Something changed that may let waiting gangs fit: wake them all.
    pub fn cluster_changed(&mut self, now: Instant) {
        self.cluster_changes += 1;
        for key in std::mem::take(&mut self.unschedulable) {
            self.send_to_backoff(&key, now);
        }
    }

    /// Tries an unschedulable or backing-off gang at once: for the gang at
    /// the head of the line when capacity may have freed, so held nodes do
    /// not sit idle through a backoff.
    pub fn retry_now(&mut self, key: &GangKey) {
        if matches!(self.entries.get(key).map(|e| e.state), Some(State::Unschedulable | State::Backoff(_))) {
            self.unschedulable.remove(key);
            self.push_active(key);
        }
    }

    /// The highest-ranked gang that found no placement and waits (unschedulable
    /// or backing off): the next gang at the head of the line.
    pub fn head_waiting(&self) -> Option<&GangKey> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable | State::Backoff(_)))
            .max_by_key(|(_, e)| (e.priority(), Reverse(e.created()), Reverse(e.arrival)))
            .map(|(k, _)| k)
    }

    /// When the earliest gang in backoff becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn lengths(&self) -> QueueLengths {
        self.lengths
    }

    /// How many pods are queued, in every state.
    pub fn pod_count(&self) -> usize {
        self.member_of.len()
    }

    /// UIDs of every queued pod.
    pub fn uids(&self) -> impl Iterator<Item = String> + '_ {
        self.member_of.keys().cloned()
    }

    /// Every queued gang.
    pub fn keys(&self) -> impl Iterator<Item = &GangKey> {
        self.entries.keys()
    }

    pub fn attempts(&self, key: &GangKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }

    fn leave_unschedulable(&mut self, key: &GangKey, now: Instant) {
        self.unschedulable.remove(key);
        self.send_to_backoff(key, now);
    }

    fn send_to_backoff(&mut self, key: &GangKey, now: Instant) {
        let policy = self.policy;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let ready_at = entry.last_attempt.unwrap_or(now) + policy.after(entry.attempts);
        if ready_at <= now {
            self.push_active(key);
        } else {
            self.next_ticket += 1;
            entry.ticket = self.next_ticket;
            set_state(&mut self.lengths, entry, State::Backoff(ready_at));
            self.backoff.push(Reverse((ready_at, entry.ticket, key.clone())));
        }
    }

    fn push_active(&mut self, key: &GangKey) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.next_ticket += 1;
        entry.ticket = self.next_ticket;
        set_state(&mut self.lengths, entry, State::Active);
        let (priority, created, arrival) = (entry.priority(), entry.created(), entry.arrival);
        self.active.push(ActiveItem { priority, created, arrival, ticket: entry.ticket, key: key.clone() });
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((at, ticket, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let (ticket, Reverse((_, _, key))) = (*ticket, self.backoff.pop().expect("peeked"));
            if self.entries.get(&key).is_some_and(|e| e.ticket == ticket && matches!(e.state, State::Backoff(_))) {
                self.push_active(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::GangKind;
    use crate::resources::Resources;
    use crate::testing::test_pod;

    fn policy() -> BackoffPolicy {
        BackoffPolicy { initial: Duration::from_secs(1), max: Duration::from_secs(10) }
    }

    fn pod(name: &str, priority: i32, created: i64) -> PodInfo {
        let mut p = test_pod(name, Resources::new());
        p.priority = priority;
        p.created = created;
        p
    }

    fn member(name: &str, gang: &str, priority: i32, created: i64) -> PodInfo {
        let mut p = pod(name, priority, created);
        p.job = Some(GangId::new(GangKind::PodGroup, "default", gang));
        p
    }

    fn lone(name: &str) -> GangKey {
        GangKey::Pod(format!("uid-{name}"))
    }

    fn name_of(q: &SchedulingQueue, key: &GangKey) -> String {
        match key {
            GangKey::Gang(g) => g.name.clone(),
            GangKey::Pod(_) => q.members(key).next().unwrap().key.name.clone(),
        }
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("late-low", 0, 5), now);
        q.upsert(pod("early-low", 0, 1), now);
        q.upsert(pod("high", 100, 9), now);
        let keys: Vec<_> = std::iter::from_fn(|| q.pop(now)).collect();
        let order: Vec<_> = keys.iter().map(|k| name_of(&q, k)).collect();
        assert_eq!(order, ["high", "early-low", "late-low"]);
    }

    #[test]
    fn a_gang_ranks_by_its_highest_member_and_its_oldest() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("solo", 50, 0), now);
        q.upsert(member("w0", "llm", 0, 3), now);
        q.upsert(member("w1", "llm", 100, 7), now);
        q.upsert(member("a", "old", 50, 8), now);
        q.upsert(member("b", "old", 0, -1), now);
        let keys: Vec<_> = std::iter::from_fn(|| q.pop(now)).collect();
        let order: Vec<_> = keys.iter().map(|k| name_of(&q, k)).collect();
        assert_eq!(order, ["llm", "old", "solo"]);
        assert_eq!(q.member_count(&GangKey::Gang(GangId::new(GangKind::PodGroup, "default", "llm"))), 2);
        assert_eq!(q.lengths().in_flight, 3);
    }

    #[test]
    fn gangs_created_in_the_same_second_keep_their_order_of_arrival() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        for name in ["zeta", "alpha", "mid"] {
            q.upsert(member(&format!("{name}-0"), name, 0, 7), now);
        }
        let keys: Vec<_> = std::iter::from_fn(|| q.pop(now)).collect();
        let order: Vec<_> = keys.iter().map(|k| name_of(&q, k)).collect();
        assert_eq!(order, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn the_head_gang_can_skip_its_backoff() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("big", 0, 0), t0);
        let key = q.pop(t0).unwrap();
        q.mark_unschedulable(&key, t0);
        q.cluster_changed(t0);
        assert!(q.pop(t0).is_none(), "backing off");
        assert_eq!(q.head_waiting(), Some(&key));
        q.retry_now(&key);
        assert_eq!(q.pop(t0), Some(key));
        assert_eq!(q.head_waiting(), None, "in flight");
    }

    #[test]
    fn a_higher_priority_gang_in_backoff_is_tried_before_a_lower_one_after_a_change() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(member("mid-0", "mid", 100, 0), t0);
        q.upsert(pod("low", 0, 0), t0);
        let mid = q.pop(t0).unwrap();
        // The Mid gang has failed more often, so its backoff is longer.
        for _ in 0..3 {
            q.mark_unschedulable(&mid, t0);
            q.cluster_changed(t0);
            q.retry_now(&mid);
            assert_eq!(q.pop(t0).as_ref(), Some(&mid));
        }
        let low = q.pop(t0).unwrap();
        q.mark_unschedulable(&mid, t0);
        q.mark_unschedulable(&low, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(q.pop(t1).is_none(), "both wait for a change");
        q.cluster_changed(t1);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(q.pop(t2).as_ref(), Some(&mid), "room freed: the Mid gang is tried first");
        q.mark_unschedulable(&mid, t2);
        assert_eq!(q.pop(t2).as_ref(), Some(&low), "then the Low one");
        q.mark_unschedulable(&low, t2);
        q.cluster_changed(t2);
        q.retry_now(&low);
        assert_eq!(q.pop(t2).as_ref(), Some(&mid), "after each change");
    }

    #[test]
    fn unschedulable_waits_for_a_cluster_change_then_backs_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        let p = q.pop(t0).unwrap();
        q.mark_unschedulable(&p, t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none(), "no change, no retry");
        q.cluster_changed(t0 + Duration::from_millis(200));
        assert!(q.pop(t0 + Duration::from_millis(500)).is_none(), "still in its 1s backoff");
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn a_waiting_gang_ignores_cluster_changes_and_wakes_on_a_new_member() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(member("w0", "llm", 0, 0), t0);
        let key = q.pop(t0).unwrap();
        assert_eq!(q.trying_since(&key), Some(t0));
        q.wait(&key);
        assert_eq!(q.trying_since(&key), None, "waiting for members is not trying");
        q.cluster_changed(t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none());
        q.upsert(member("w1", "llm", 0, 0), t0);
        assert_eq!(q.pop(t0), Some(key.clone()), "a new member is tried at once");
        q.wait(&key);
        q.wake(&key, t0);
        assert_eq!(q.pop(t0), Some(key));
    }

    #[test]
    fn a_change_during_the_attempt_is_not_lost() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        let p = q.pop(t0).unwrap();
        q.cluster_changed(t0);
        q.mark_unschedulable(&p, t0);
        assert!(q.pop(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let secs: Vec<u64> = (1..=6).map(|a| p.after(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn removed_and_updated_pods_leave_no_stale_entries() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("a", 0, 0), now);
        q.upsert(pod("b", 0, 1), now);
        q.upsert(pod("a", 10, 0), now);
        q.remove("uid-b");
        let first = q.pop(now).unwrap();
        assert_eq!(q.rank(&first), Some((10, 0)));
        assert!(q.pop(now).is_none(), "the pre-update heap item of a is stale");
        assert_eq!(q.lengths(), QueueLengths { in_flight: 1, ..Default::default() });
        q.upsert(member("w0", "g", 0, 0), now);
        q.upsert(member("w1", "g", 0, 0), now);
        q.remove("uid-w0");
        assert!(q.contains("uid-w1") && !q.contains("uid-w0"));
        q.remove("uid-w1");
        assert_eq!(q.keys().count(), 1, "the emptied gang is gone");
    }

    #[test]
    fn lengths_follow_every_move() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            q.upsert(pod(name, 0, i as i64), t0);
        }
        let a = q.pop(t0).unwrap();
        q.mark_unschedulable(&a, t0);
        let b = q.pop(t0).unwrap();
        q.retry_later(&b, t0);
        let c = q.pop(t0).unwrap();
        q.wait(&c);
        q.pop(t0).unwrap();
        assert_eq!(q.lengths(), QueueLengths { active: 1, backoff: 1, unschedulable: 1, waiting: 1, in_flight: 1 });
        q.cluster_changed(t0);
        q.remove("uid-e");
        assert_eq!(q.lengths(), QueueLengths { active: 0, backoff: 2, unschedulable: 0, waiting: 1, in_flight: 1 });
        assert_eq!(lone("c"), c);
    }

    #[test]
    fn changed_spec_retries_an_unschedulable_pod() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        q.pop(t0);
        q.mark_unschedulable(&lone("p"), t0);
        let mut changed = pod("p", 0, 0);
        changed.node_selector.insert("rack".into(), "r1".into());
        q.upsert(changed, t0 + Duration::from_secs(2));
        assert!(q.pop(t0 + Duration::from_secs(2)).is_some());
    }
}
