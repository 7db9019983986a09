//! The scheduling queue: pods waiting for a decision, highest priority first,
//! then oldest. A pod that found no node waits as *unschedulable* until the
//! cluster changes in a way that may help (a node added or freed), then goes
//! through a backoff that doubles with each failed attempt.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::pod::PodInfo;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable,
    /// Popped for a decision; `changes_seen` is the cluster-change count then,
    /// so a change during the attempt is not missed.
    InFlight {
        changes_seen: u64,
    },
}

#[derive(Debug)]
struct Entry {
    pod: PodInfo,
    attempts: u32,
    last_attempt: Option<Instant>,
    state: State,
    /// Matches the heap item that currently represents this entry; older
    /// heap items are stale and skipped.
    ticket: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    created: i64,
    ticket: u64,
    uid: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.created.cmp(&self.created))
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
    pub in_flight: usize,
}

#[derive(Debug)]
pub struct SchedulingQueue {
    policy: BackoffPolicy,
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
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
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            next_ticket: 0,
            cluster_changes: 0,
            lengths: QueueLengths::default(),
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// Adds a new pending pod, or updates a queued one. An unschedulable pod
    /// whose scheduling spec changed gets another chance.
    pub fn upsert(&mut self, pod: PodInfo, now: Instant) {
        let uid = pod.uid.clone();
        let Some(entry) = self.entries.get_mut(&uid) else {
            self.lengths.active += 1;
            self.entries
                .insert(uid.clone(), Entry { pod, attempts: 0, last_attempt: None, state: State::Active, ticket: 0 });
            self.push_active(&uid);
            return;
        };
        let differs = entry.pod.scheduling_spec_differs(&pod);
        let reorder = entry.pod.priority != pod.priority;
        entry.pod = pod;
        match entry.state {
            State::Unschedulable if differs => self.leave_unschedulable(&uid, now),
            State::Active if reorder => self.push_active(&uid),
            _ => {}
        }
    }

    pub fn remove(&mut self, uid: &str) -> Option<PodInfo> {
        self.unschedulable.remove(uid);
        let entry = self.entries.remove(uid)?;
        *self.lengths.slot(entry.state) -= 1;
        Some(entry.pod)
    }

    /// The next pod to decide on, if any is ready.
    pub fn pop(&mut self, now: Instant) -> Option<PodInfo> {
        self.flush_backoff(now);
        while let Some(item) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&item.uid) else {
                continue;
            };
            if entry.state != State::Active || entry.ticket != item.ticket {
                continue;
            }
            set_state(&mut self.lengths, entry, State::InFlight { changes_seen: self.cluster_changes });
            entry.attempts += 1;
            entry.last_attempt = Some(now);
            return Some(entry.pod.clone());
        }
        None
    }

    /// The attempt found no node. The pod waits for a cluster change, unless
    /// one already happened during the attempt.
    pub fn mark_unschedulable(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        match entry.state {
            State::InFlight { changes_seen } if changes_seen != self.cluster_changes => {
                self.send_to_backoff(uid, now);
            }
            _ => {
                set_state(&mut self.lengths, entry, State::Unschedulable);
                self.unschedulable.insert(uid.to_string());
            }
        }
    }

    /// The attempt failed for a reason other than fit (a failed bind): retry after backoff.
    pub fn retry_later(&mut self, uid: &str, now: Instant) {
        if self.entries.contains_key(uid) {
            self.send_to_backoff(uid, now);
        }
    }

    /// Something changed that may let waiting pods fit: wake them all.
    pub fn cluster_changed(&mut self, now: Instant) {
        self.cluster_changes += 1;
        for uid in std::mem::take(&mut self.unschedulable) {
            self.send_to_backoff(&uid, now);
        }
    }

    /// When the earliest pod in backoff becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn lengths(&self) -> QueueLengths {
        self.lengths
    }

    pub fn uids(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.keys().cloned()
    }

    pub fn attempts(&self, uid: &str) -> u32 {
        self.entries.get(uid).map_or(0, |e| e.attempts)
    }

    fn leave_unschedulable(&mut self, uid: &str, now: Instant) {
        self.unschedulable.remove(uid);
        self.send_to_backoff(uid, now);
    }

    fn send_to_backoff(&mut self, uid: &str, now: Instant) {
        let policy = self.policy;
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        let ready_at = entry.last_attempt.unwrap_or(now) + policy.after(entry.attempts);
        if ready_at <= now {
            self.push_active(uid);
        } else {
            self.next_ticket += 1;
            entry.ticket = self.next_ticket;
            set_state(&mut self.lengths, entry, State::Backoff(ready_at));
            self.backoff.push(Reverse((ready_at, entry.ticket, uid.to_string())));
        }
    }

    fn push_active(&mut self, uid: &str) {
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        self.next_ticket += 1;
        entry.ticket = self.next_ticket;
        set_state(&mut self.lengths, entry, State::Active);
        self.active.push(ActiveItem {
            priority: entry.pod.priority,
            created: entry.pod.created,
            ticket: entry.ticket,
            uid: uid.to_string(),
        });
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((at, ticket, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let (ticket, Reverse((_, _, uid))) = (*ticket, self.backoff.pop().expect("peeked"));
            if self.entries.get(&uid).is_some_and(|e| e.ticket == ticket && matches!(e.state, State::Backoff(_))) {
                self.push_active(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::resources::Resources;
    use crate::core::testing::test_pod;

    fn policy() -> BackoffPolicy {
        BackoffPolicy { initial: Duration::from_secs(1), max: Duration::from_secs(10) }
    }

    fn pod(name: &str, priority: i32, created: i64) -> PodInfo {
        let mut p = test_pod(name, Resources::new());
        p.priority = priority;
        p.created = created;
        p
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("late-low", 0, 5), now);
        q.upsert(pod("early-low", 0, 1), now);
        q.upsert(pod("high", 100, 9), now);
        let order: Vec<_> = std::iter::from_fn(|| q.pop(now)).map(|p| p.key.name).collect();
        assert_eq!(order, ["high", "early-low", "late-low"]);
    }

    #[test]
    fn unschedulable_waits_for_a_cluster_change_then_backs_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        let p = q.pop(t0).unwrap();
        q.mark_unschedulable(&p.uid, t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none(), "no change, no retry");
        q.cluster_changed(t0 + Duration::from_millis(200));
        assert!(q.pop(t0 + Duration::from_millis(500)).is_none(), "still in its 1s backoff");
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn a_change_during_the_attempt_is_not_lost() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        let p = q.pop(t0).unwrap();
        q.cluster_changed(t0);
        q.mark_unschedulable(&p.uid, t0);
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
        assert_eq!(q.pop(now).unwrap().priority, 10);
        assert!(q.pop(now).is_none(), "the pre-update heap item of a is stale");
        assert_eq!(q.lengths(), QueueLengths { in_flight: 1, ..Default::default() });
    }

    #[test]
    fn lengths_follow_every_move() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            q.upsert(pod(name, 0, i as i64), t0);
        }
        let a = q.pop(t0).unwrap();
        q.mark_unschedulable(&a.uid, t0);
        let b = q.pop(t0).unwrap();
        q.retry_later(&b.uid, t0);
        q.pop(t0).unwrap();
        assert_eq!(q.lengths(), QueueLengths { active: 1, backoff: 1, unschedulable: 1, in_flight: 1 });
        q.cluster_changed(t0);
        q.remove("uid-d");
        assert_eq!(q.lengths(), QueueLengths { active: 0, backoff: 2, unschedulable: 0, in_flight: 1 });
    }

    #[test]
    fn changed_spec_retries_an_unschedulable_pod() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(policy());
        q.upsert(pod("p", 0, 0), t0);
        q.pop(t0);
        q.mark_unschedulable("uid-p", t0);
        let mut changed = pod("p", 0, 0);
        changed.node_selector.insert("rack".into(), "r1".into());
        q.upsert(changed, t0 + Duration::from_secs(2));
        assert!(q.pop(t0 + Duration::from_secs(2)).is_some());
    }
}
