//! What the harness meant to happen, shared by the generator, the fault
//! injector and the checker: the jobs submitted (their size, priority,
//! budget) and the moments the harness itself changed something the
//! scheduler must catch up with (a deletion, a foreign binding, a quota).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Every pod the generator creates carries its job's name here.
pub const JOB_LABEL: &str = "soak.phalanx.dev/job";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Mid,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Mid, Priority::High];

    pub fn class(self) -> &'static str {
        match self {
            Self::Low => "soak-low",
            Self::Mid => "soak-mid",
            Self::High => "soak-high",
        }
    }

    pub fn value(self) -> i32 {
        match self {
            Self::Low => 100,
            Self::Mid => 1000,
            Self::High => 10000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    PodGroup,
    PyTorchJob,
    LonePod,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PodGroup => "podgroup",
            Self::PyTorchJob => "pytorchjob",
            Self::LonePod => "pod",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub namespace: String,
    pub name: String,
    pub kind: JobKind,
    /// Pods, all needed at once (minMember).
    pub size: u32,
    pub gpus_per_pod: u32,
    pub priority: Priority,
    pub created: Instant,
    /// When the generator deleted it (or cleaned it up, finished).
    pub deleted: Option<Instant>,
    /// Since when a PodDisruptionBudget forbids evicting any of its pods.
    pub protected_since: Option<Instant>,
    /// When the API server created that budget, if it came after the pods.
    pub budget_created: Option<jiff::Timestamp>,
    pub pods: Vec<String>,
}

impl Job {
    pub fn gpus(&self) -> i64 {
        i64::from(self.size) * i64::from(self.gpus_per_pod)
    }
}

#[derive(Default)]
pub struct Book {
    pub jobs: BTreeMap<String, Job>,
    /// Pods bound by another client, by node: when.
    pub foreign_binds: BTreeMap<String, Instant>,
    /// ElasticQuota max changed by a fault, by namespace: when.
    pub quota_changed: BTreeMap<String, Instant>,
    /// The same, on the wall clock the API server stamps objects with
    /// (one machine, one clock).
    pub quota_changed_at: BTreeMap<String, jiff::Timestamp>,
}

impl Book {
    pub fn note_quota_change(&mut self, namespace: &str) {
        self.quota_changed.insert(namespace.to_string(), Instant::now());
        self.quota_changed_at.insert(namespace.to_string(), jiff::Timestamp::now());
    }
}

#[derive(Default)]
pub struct Ledger(Mutex<Book>);

impl Ledger {
    pub fn lock(&self) -> MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
