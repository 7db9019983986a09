//! Workloads for end-to-end runs and the simulator: jobs described once, so a
//! test on the real control plane and a simulated run replay the same thing.
//!
//! Pure data and arithmetic; no Kubernetes types.

use std::time::Duration;

/// One gang: `pods` identical pods that must be placed together, each asking
/// `gpus_per_pod` GPUs and running for `run_for` once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangJob {
    pub name: String,
    pub pods: u32,
    pub gpus_per_pod: u32,
    pub run_for: Duration,
}

impl GangJob {
    /// GPUs the whole gang holds while it runs.
    pub fn gpus(&self) -> u64 {
        u64::from(self.pods) * u64::from(self.gpus_per_pod)
    }
}

/// NVIDIA knavigator's gang-scheduling benchmark
/// (`resources/benchmarks/gang-scheduling/workflows/run-test.yaml`), made for
/// 32 nodes of 8 GPUs: 53 jobs, 288 pods of one whole node (8 GPUs) each, 30 s
/// each, in submission order. Under optimal scheduling it keeps the cluster
/// full. Jobs are named `job1` .. `job53`.
pub fn knavigator_gang_burst() -> Vec<GangJob> {
    // (how many jobs, pods per job), in the benchmark's order.
    const BURST: [(u32, u32); 15] = [
        (1, 32),
        (2, 16),
        (3, 10),
        (1, 2),
        (4, 8),
        (5, 6),
        (2, 1),
        (6, 5),
        (1, 2),
        (7, 4),
        (1, 2),
        (2, 1),
        (8, 4),
        (9, 3),
        (1, 5),
    ];
    BURST
        .iter()
        .flat_map(|&(jobs, pods)| std::iter::repeat_n(pods, jobs as usize))
        .enumerate()
        .map(|(i, pods)| GangJob {
            name: format!("job{}", i + 1),
            pods,
            gpus_per_pod: 8,
            run_for: Duration::from_secs(30),
        })
        .collect()
}

/// No schedule finishes sooner than the GPU-time of all jobs spread over all
/// GPUs, nor sooner than its longest job runs.
pub fn makespan_lower_bound(jobs: &[GangJob], total_gpus: u32) -> Duration {
    assert!(total_gpus > 0, "a fleet with no GPUs has no makespan");
    let gpu_nanos: u128 = jobs.iter().map(|j| u128::from(j.gpus()) * j.run_for.as_nanos()).sum();
    let spread = gpu_nanos.div_ceil(u128::from(total_gpus));
    let spread = Duration::from_nanos(u64::try_from(spread).unwrap_or(u64::MAX));
    let longest = jobs.iter().map(|j| j.run_for).max().unwrap_or_default();
    spread.max(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knavigator_burst_is_53_jobs_of_288_whole_node_pods() {
        let jobs = knavigator_gang_burst();
        assert_eq!(jobs.len(), 53);
        assert_eq!(jobs.iter().map(|j| j.pods).sum::<u32>(), 288);
        assert!(jobs.iter().all(|j| j.gpus_per_pod == 8 && j.run_for == Duration::from_secs(30)));
        assert_eq!((jobs[0].name.as_str(), jobs[0].pods), ("job1", 32));
        assert_eq!((jobs[52].name.as_str(), jobs[52].pods), ("job53", 5));
        let sizes: Vec<u32> = jobs.iter().map(|j| j.pods).collect();
        assert_eq!(&sizes[..7], &[32, 16, 16, 10, 10, 10, 2]);
    }

    #[test]
    fn its_lower_bound_on_32_nodes_of_8_gpus_is_270_seconds() {
        assert_eq!(makespan_lower_bound(&knavigator_gang_burst(), 32 * 8), Duration::from_secs(270));
    }

    #[test]
    fn the_lower_bound_is_never_below_the_longest_job() {
        let one = GangJob { name: "a".into(), pods: 1, gpus_per_pod: 1, run_for: Duration::from_secs(30) };
        assert_eq!(makespan_lower_bound(&[one], 256), Duration::from_secs(30));
        assert_eq!(makespan_lower_bound(&[], 8), Duration::ZERO);
    }
}
