//! What the harness measures, from its own clock: when each create was
//! answered, and when its watch first saw each pod bound. From those, one
//! run's pods/s and gangs/s, the time from a gang's last member created to
//! its last member bound, and whether any gang was ever partly bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::time::Instant;

use crate::workload::Workload;

#[derive(Default)]
struct Times {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
}

pub struct Recorder {
    times: Mutex<Times>,
}

impl Recorder {
    pub fn new() -> Self {
        Self { times: Mutex::new(Times::default()) }
    }

    pub fn created(&self, pod: &str, at: Instant) {
        self.times.lock().expect("recorder").created.insert(pod.to_string(), at);
    }

    fn bound(&self, pod: &str, at: Instant) {
        self.times.lock().expect("recorder").bound.entry(pod.to_string()).or_insert(at);
    }

    /// (pods created, pods bound) so far.
    pub fn counts(&self) -> (usize, usize) {
        let t = self.times.lock().expect("recorder");
        (t.created.len(), t.bound.len())
    }

    /// Records the first moment each pod of `namespace` is seen with a node.
    pub async fn watch(&self, pods: Api<Pod>) {
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("pod watch: {e}");
                    continue;
                }
            };
            if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                self.bound(pod.metadata.name.as_deref().unwrap_or_default(), Instant::now());
            }
        }
    }

    pub fn result(&self, workload: &Workload, partial_after: Duration, ended: Instant) -> RunResult {
        let t = self.times.lock().expect("recorder");
        let first_created = t.created.values().min().copied().unwrap_or(ended);
        let last_bound = t.bound.values().max().copied().unwrap_or(ended);
        let span = last_bound.saturating_duration_since(first_created).as_secs_f64().max(1e-3);
        let mut latencies = Vec::new();
        let (mut complete, mut partial) = (0, 0);
        let mut widest_spread = Duration::ZERO;
        for gang in 0..workload.gangs {
            let members: Vec<String> = (0..workload.gang_size).map(|m| Workload::pod_name(gang, m)).collect();
            let binds: Vec<Instant> = members.iter().filter_map(|m| t.bound.get(m).copied()).collect();
            let Some(first_bind) = binds.iter().min().copied() else { continue };
            // A gang is partly bound from its first member's bind until its
            // last's, or until the end of the run if some member never bound.
            let whole = binds.len() == members.len();
            let last_bind = if whole { binds.iter().max().copied().unwrap_or(first_bind) } else { ended };
            let spread = last_bind.saturating_duration_since(first_bind);
            widest_spread = widest_spread.max(spread);
            if spread > partial_after || !whole {
                partial += 1;
            }
            if whole {
                complete += 1;
                let last_created = members.iter().filter_map(|m| t.created.get(m)).max().copied().unwrap_or(first_bind);
                latencies.push(last_bind.saturating_duration_since(last_created));
            }
        }
        latencies.sort();
        RunResult {
            pods_bound: t.bound.keys().filter(|p| t.created.contains_key(*p)).count(),
            pods: workload.pods(),
            gangs_complete: complete,
            pods_per_second: t.bound.len() as f64 / span,
            gangs_per_second: complete as f64 / span,
            latency_p50: percentile(&latencies, 0.50),
            latency_p99: percentile(&latencies, 0.99),
            partial_gangs: partial,
            widest_spread,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub pods: usize,
    pub pods_bound: usize,
    pub gangs_complete: usize,
    /// Pods bound per second, from the first create to the last bind.
    pub pods_per_second: f64,
    pub gangs_per_second: f64,
    /// From a gang's (or pod's) last member created to its last member bound.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    /// Gangs with some but not all members bound for longer than the grace.
    pub partial_gangs: usize,
    /// The longest time between a gang's first and last member bound.
    pub widest_spread: Duration,
}
