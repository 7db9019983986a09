//! What a simulation reports: a summary table (markdown, so it pastes into
//! bench/results/), queueing delay by job size, and CSV files of every job
//! and of the cluster over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::driver::{Outcome, Sample};
use crate::workload::makespan_lower_bound;

/// Queueing delay of the jobs of one size range.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayRow {
    /// Job GPUs, as a range: "1", "2", "3-4", "5-8", ...
    pub sizes: String,
    pub jobs: usize,
    pub mean: Duration,
    pub p99: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub jobs: usize,
    pub pods: u64,
    pub finished: usize,
    /// First submission to last finish, when every job finished.
    pub makespan: Option<Duration>,
    /// No schedule is shorter: GPU time over GPUs, or the latest submission plus its run.
    pub lower_bound: Duration,
    /// Mean share of GPUs allocated, over the makespan (or the run).
    pub allocation: f64,
    pub stranded_mean: f64,
    pub stranded_max: u64,
    pub broken_nodes_mean: f64,
    /// Placement quality of gangs of more than one GPU: mean, worst, count.
    pub quality: Option<(f64, f64, usize)>,
    pub preemptions: usize,
    pub evicted_pods: usize,
    pub restarted_jobs: usize,
    /// Jobs whose first placement did not hold all their pods.
    pub partial_gangs: usize,
    pub delays: Vec<DelayRow>,
    pub all_delays: DelayRow,
    pub decisions: usize,
    pub decision_mean: Duration,
    pub decision_p99: Duration,
}

/// The p-th percentile by nearest rank of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(values: &[Duration]) -> Duration {
    if values.is_empty() { Duration::ZERO } else { values.iter().sum::<Duration>() / values.len() as u32 }
}

fn delay_row(sizes: String, mut delays: Vec<Duration>) -> DelayRow {
    delays.sort();
    DelayRow { sizes, jobs: delays.len(), mean: mean(&delays), p99: percentile(&delays, 0.99) }
}

/// Powers of two: 1, 2, 3-4, 5-8, 9-16, ... (with its upper end, to sort by).
fn size_range(gpus: u64) -> (u64, String) {
    let top = gpus.max(1).next_power_of_two();
    let bottom = top / 2 + 1;
    (top, if bottom >= top { top.to_string() } else { format!("{bottom}-{top}") })
}

/// Time-weighted mean of `value` over the samples, up to `end`.
fn time_mean(samples: &[Sample], end: Duration, value: impl Fn(&Sample) -> f64) -> f64 {
    let mut area = 0.0;
    for (i, s) in samples.iter().enumerate() {
        let until = samples.get(i + 1).map_or(end, |next| next.at).min(end);
        if until > s.at {
            area += value(s) * (until - s.at).as_secs_f64();
        }
    }
    let span = end.as_secs_f64();
    if span > 0.0 { area / span } else { 0.0 }
}

pub fn summarize(outcome: &Outcome) -> Summary {
    let jobs = &outcome.jobs;
    let first_submit = jobs.iter().map(|j| j.job.submit).min().unwrap_or_default();
    let finished = jobs.iter().filter(|j| j.finished.is_some()).count();
    let last_finish = jobs.iter().filter_map(|j| j.finished).max();
    let makespan = last_finish.filter(|_| finished == jobs.len()).map(|end| end - first_submit);
    let gangs: Vec<_> = jobs.iter().map(|j| j.job.as_gang()).collect();
    let total = u32::try_from(outcome.total_gpus).unwrap_or(u32::MAX).max(1);
    let latest = jobs.iter().map(|j| j.job.submit - first_submit + j.job.duration).max().unwrap_or_default();
    let lower_bound = makespan_lower_bound(&gangs, total).max(latest);
    let end = last_finish.or(outcome.samples.last().map(|s| s.at)).unwrap_or_default();
    let samples = &outcome.samples;
    let allocation = time_mean(samples, end, |s| s.allocated_gpus as f64) / outcome.total_gpus.max(1) as f64;
    let qualities: Vec<f64> = jobs.iter().filter(|j| j.job.gpus() > 1).filter_map(|j| j.quality()).collect();
    let quality = (!qualities.is_empty()).then(|| {
        let worst = qualities.iter().copied().fold(f64::INFINITY, f64::min);
        (qualities.iter().sum::<f64>() / qualities.len() as f64, worst, qualities.len())
    });
    let mut by_size: BTreeMap<u64, (String, Vec<Duration>)> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.started.is_some()) {
        let (top, label) = size_range(j.job.gpus());
        by_size.entry(top).or_insert_with(|| (label, vec![])).1.push(j.queued);
    }
    let all: Vec<Duration> = by_size.values().flat_map(|(_, d)| d.iter().copied()).collect();
    let mut decisions = outcome.decision_times.clone();
    decisions.sort();
    Summary {
        jobs: jobs.len(),
        pods: jobs.iter().map(|j| u64::from(j.job.pods)).sum(),
        finished,
        makespan,
        lower_bound,
        allocation,
        stranded_mean: time_mean(samples, end, |s| s.stranded_gpus as f64),
        stranded_max: samples.iter().map(|s| s.stranded_gpus).max().unwrap_or(0),
        broken_nodes_mean: time_mean(samples, end, |s| s.broken_nodes as f64),
        quality,
        preemptions: outcome.preemptions,
        evicted_pods: outcome.evicted_pods,
        restarted_jobs: jobs.iter().filter(|j| j.evictions > 0).count(),
        partial_gangs: jobs.iter().filter(|j| j.started.is_some() && j.placed_together < j.job.pods).count(),
        delays: by_size.into_values().map(|(label, d)| delay_row(label, d)).collect(),
        all_delays: delay_row("all".into(), all),
        decisions: decisions.len(),
        decision_mean: mean(&decisions),
        decision_p99: percentile(&decisions, 0.99),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Summary {
    /// Markdown tables: the run, then queueing delay by job size.
    pub fn table(&self, outcome: &Outcome) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| metric | value |\n|---|---|");
        let _ = writeln!(t, "| fleet | {} nodes, {} GPUs |", outcome.nodes, outcome.total_gpus);
        let _ = writeln!(t, "| jobs | {} ({} pods), {} finished |", self.jobs, self.pods, self.finished);
        match self.makespan {
            Some(m) => {
                let _ = writeln!(t, "| makespan | {} |", secs(m));
                let _ = writeln!(t, "| lower bound | {} |", secs(self.lower_bound));
                let ratio = m.as_secs_f64() / self.lower_bound.as_secs_f64().max(f64::MIN_POSITIVE);
                let _ = writeln!(t, "| makespan / lower bound | {ratio:.3} |");
            }
            None => {
                let _ = writeln!(t, "| makespan | not reached: {} jobs unfinished |", self.jobs - self.finished);
            }
        }
        let _ = writeln!(t, "| GPU allocation (time-weighted mean) | {:.1} % |", self.allocation * 100.0);
        let _ = writeln!(t, "| stranded GPUs (mean / max) | {:.1} / {} |", self.stranded_mean, self.stranded_max);
        let _ = writeln!(t, "| partly used nodes (mean) | {:.1} |", self.broken_nodes_mean);
        match self.quality {
            Some((mean, worst, n)) => {
                let _ =
                    writeln!(t, "| placement quality (mean / worst, {n} jobs of 2+ GPUs) | {mean:.3} / {worst:.3} |");
            }
            None => {
                let _ = writeln!(t, "| placement quality | no job of 2+ GPUs placed |");
            }
        }
        let _ = writeln!(
            t,
            "| preemptions (decisions / pods evicted / jobs restarted) | {} / {} / {} |",
            self.preemptions, self.evicted_pods, self.restarted_jobs
        );
        let _ = writeln!(t, "| gangs placed partly | {} |", self.partial_gangs);
        let _ = writeln!(
            t,
            "| decisions (count; wall time mean / p99) | {}; {:.2?} / {:.2?} |",
            self.decisions, self.decision_mean, self.decision_p99
        );
        let _ = writeln!(t, "\n| job GPUs | jobs | mean queueing delay | p99 queueing delay |\n|---|---|---|---|");
        for row in self.delays.iter().chain([&self.all_delays]) {
            let _ = writeln!(t, "| {} | {} | {} | {} |", row.sizes, row.jobs, secs(row.mean), secs(row.p99));
        }
        t
    }
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64())).unwrap_or_default()
}

fn opt_f64(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// One line per job.
pub fn write_jobs_csv(outcome: &Outcome, path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "job,namespace,priority,pods,gpus_per_pod,gpus,submit_s,started_s,finished_s,queued_s,evictions,\
         placed_together,score_gbps,best_gbps,quality"
    )?;
    for r in &outcome.jobs {
        let j = &r.job;
        writeln!(
            out,
            "{},{},{},{},{},{},{:.3},{},{},{:.3},{},{},{},{},{}",
            j.name,
            j.namespace,
            j.priority,
            j.pods,
            j.gpus_per_pod,
            j.gpus(),
            j.submit.as_secs_f64(),
            opt_secs(r.started),
            opt_secs(r.finished),
            r.queued.as_secs_f64(),
            r.evictions,
            r.placed_together,
            opt_f64(r.score.filter(|s| s.is_finite())),
            opt_f64(r.best.filter(|s| s.is_finite())),
            opt_f64(r.quality()),
        )?;
    }
    out.flush()
}

/// One line per instant the simulation stopped at.
pub fn write_series_csv(outcome: &Outcome, path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "t_s,allocated_gpus,allocation,pending_jobs,pending_pods,running_jobs,stranded_gpus,broken_nodes")?;
    let total = outcome.total_gpus.max(1) as f64;
    for s in &outcome.samples {
        writeln!(
            out,
            "{:.3},{},{:.4},{},{},{},{},{}",
            s.at.as_secs_f64(),
            s.allocated_gpus,
            s.allocated_gpus as f64 / total,
            s.pending_jobs,
            s.pending_pods,
            s.running_jobs,
            s.stranded_gpus,
            s.broken_nodes
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_power_of_two_ranges() {
        let labels: Vec<String> = [1, 2, 3, 4, 5, 8, 9, 256].iter().map(|g| size_range(*g).1).collect();
        assert_eq!(labels, ["1", "2", "3-4", "3-4", "5-8", "5-8", "9-16", "129-256"]);
    }

    #[test]
    fn percentiles_by_nearest_rank_and_time_weighted_means() {
        let d: Vec<Duration> = (1..=200).map(Duration::from_secs).collect();
        assert_eq!(percentile(&d, 0.99), Duration::from_secs(198));
        assert_eq!(percentile(&d[..1], 0.99), Duration::from_secs(1));
        let sample = |at, gpus| Sample {
            at: Duration::from_secs(at),
            allocated_gpus: gpus,
            pending_jobs: 0,
            pending_pods: 0,
            running_jobs: 0,
            stranded_gpus: 0,
            broken_nodes: 0,
        };
        let samples = [sample(0, 8), sample(10, 0), sample(30, 4)];
        let mean = time_mean(&samples, Duration::from_secs(40), |s| s.allocated_gpus as f64);
        assert_eq!(mean, (8.0 * 10.0 + 4.0 * 10.0) / 40.0);
    }
}
