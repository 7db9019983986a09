//! What the soak writes at the end: a Markdown report (faults injected and
//! recovery times, invariants and their violations, what became of every
//! pod) and a PNG timeline (faults, queue length, GPUs allocated,
//! violations), next to the event log.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use phalanx::sim::plot::{Panel, PlotError, Series, draw_panels, load_font, steps};
use plotters::style::RGBColor;

use crate::checker::{
    Checker, GANG_GRACE, Invariant, PDB_GRACE, QUOTA_GRACE, RECOVERY_BOUND, STABLE, STALE_GRACE, STUCK_BOUND, Sample,
};
use crate::event_log::EventLog;
use crate::faults::{FaultKind, Record};

pub struct RunFacts {
    pub seed: u64,
    pub minutes: f64,
    pub nodes: usize,
    pub jobs: usize,
    pub pods: usize,
    pub event_log: String,
}

/// p50, p99 and max of `values` (nearest rank).
fn percentiles(values: &mut [Duration]) -> Option<(Duration, Duration, Duration)> {
    values.sort_unstable();
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    (!values.is_empty()).then(|| (rank(0.50), rank(0.99), values[values.len() - 1]))
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

pub fn markdown(
    facts: &RunFacts,
    checker: &Checker,
    faults: &[Record],
    fates: &BTreeMap<&'static str, usize>,
) -> String {
    let mut out = String::new();
    let verdict = if checker.violations.is_empty() { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "# Chaos soak, seed {}: {verdict}\n", facts.seed);
    let _ = writeln!(
        out,
        "{:.0} minutes, {} kwok GPU nodes ({} GPUs), {} jobs ({} pods) submitted, {} faults injected, {} violations.\n\
         Replay: `e2e/soak --seed {} --minutes {}`; event log: `{}`.\n",
        facts.minutes,
        facts.nodes,
        checker.total_gpus,
        facts.jobs,
        facts.pods,
        faults.iter().filter(|f| f.skipped.is_none()).count(),
        checker.violations.len(),
        facts.seed,
        facts.minutes,
        facts.event_log
    );
    let _ = writeln!(out, "## Faults and recovery\n");
    let _ = writeln!(
        out,
        "Recovery: from the fault's end until the scheduler is settled (one leader; its queue and quota usage agree \
         with the cluster; the head of the queue truly cannot fit). Bound: {} s.\n",
        RECOVERY_BOUND.as_secs()
    );
    let _ = writeln!(out, "| fault | injected | skipped (no target) | recovery p50 (s) | p99 (s) | max (s) |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for kind in FaultKind::ALL {
        let of_kind: Vec<&Record> = faults.iter().filter(|f| f.kind == kind).collect();
        let injected = of_kind.iter().filter(|f| f.skipped.is_none()).count();
        let skipped = of_kind.len() - injected;
        let mut recoveries: Vec<Duration> = of_kind.iter().filter_map(|f| f.recovery).collect();
        let (p50, p99, max) = percentiles(&mut recoveries)
            .map_or(("-".into(), "-".into(), "-".into()), |(a, b, c)| (secs(a), secs(b), secs(c)));
        let _ = writeln!(out, "| {} | {injected} | {skipped} | {p50} | {p99} | {max} |", kind.as_str());
    }
    let mut all: Vec<Duration> = faults.iter().filter_map(|f| f.recovery).collect();
    if let Some((p50, p99, max)) = percentiles(&mut all) {
        let _ = writeln!(out, "| **all** | {} | | {} | {} | {} |", all.len(), secs(p50), secs(p99), secs(max));
    }
    let _ = writeln!(out, "\n## Invariants (checked every second)\n");
    let _ = writeln!(out, "| invariant | violations |");
    let _ = writeln!(out, "|---|---:|");
    for invariant in Invariant::ALL {
        let n = checker.violations.iter().filter(|v| v.invariant == invariant).count();
        let _ = writeln!(out, "| {} | {n} |", invariant.as_str());
    }
    let _ = writeln!(
        out,
        "\nGrace times: gang below minMember {} s; quota change {} s; budget created {} s; capacity counts as free \
         for a waiting gang after {} s; settled at least every {} s without faults.\n",
        GANG_GRACE.as_secs(),
        QUOTA_GRACE.as_secs(),
        PDB_GRACE.as_secs(),
        STABLE.as_secs(),
        STUCK_BOUND.as_secs()
    );
    if !checker.refused_stale_binds.is_empty() {
        let _ = writeln!(
            out,
            "Late binds over-committing a node, refused as the kubelet's admission would (pods bound within {} s \
             of an outage of phalanx, its API server or etcd; the Binding API has no fencing): {}.\n",
            STALE_GRACE.as_secs(),
            checker.refused_stale_binds.join(", ")
        );
    }
    if !checker.violations.is_empty() {
        let _ = writeln!(out, "## Violations\n");
        for v in &checker.violations {
            let _ = writeln!(out, "- t={:.1}s {}: {}", v.t, v.invariant.as_str(), v.message);
        }
        let _ = writeln!(out);
    }
    if !checker.final_metrics.is_empty() {
        let _ = writeln!(out, "## The leader's counters at the end\n\n```");
        for line in &checker.final_metrics {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "```\n");
    }
    let _ = writeln!(out, "## Every pod at the end\n");
    let _ = writeln!(out, "| fate | pods |");
    let _ = writeln!(out, "|---|---:|");
    for (fate, n) in fates {
        let _ = writeln!(out, "| {fate} | {n} |");
    }
    out
}

const FAULT_RED: RGBColor = RGBColor(200, 0, 0);

/// `log`: the event log, whose clock the samples use.
pub fn timeline(
    samples: &[Sample],
    faults: &[Record],
    log: &EventLog,
    total_gpus: i64,
    path: &Path,
) -> Result<(), PlotError> {
    let text = load_font(None);
    let end = samples.last().map_or(1.0, |s| s.t);
    let at = |s: &Sample| s.t;
    let marks: Vec<(f64, RGBColor)> =
        faults.iter().filter(|f| f.skipped.is_none()).map(|f| (log.at(f.started), FAULT_RED)).collect();
    let longest = samples.iter().map(|s| s.pending_pods).max().unwrap_or(1).max(1) as f64;
    let most_violations = samples.iter().map(|s| s.violations).max().unwrap_or(0).max(1) as f64;
    let most_faults = samples.iter().map(|s| s.faults_active).max().unwrap_or(0).max(1) as f64;
    let panels = [
        Panel {
            title: "GPUs allocated (red lines: faults injected)".into(),
            y_desc: "GPUs".into(),
            y_max: total_gpus.max(1) as f64 * 1.05,
            series: vec![Series {
                name: "allocated".into(),
                points: steps(samples, at, |s| s.allocated_gpus as f64),
                color: RGBColor(0, 0, 200),
            }],
            marks: marks.clone(),
        },
        Panel {
            title: "Queue length".into(),
            y_desc: "pods".into(),
            y_max: longest * 1.05,
            series: vec![
                Series {
                    name: "pending in the cluster".into(),
                    points: steps(samples, at, |s| s.pending_pods as f64),
                    color: RGBColor(0, 130, 0),
                },
                Series {
                    name: "in the leader's queue".into(),
                    points: steps(
                        &samples.iter().filter(|s| s.queued_pods.is_some()).cloned().collect::<Vec<_>>(),
                        at,
                        |s| s.queued_pods.unwrap_or(0.0),
                    ),
                    color: RGBColor(230, 140, 0),
                },
            ],
            marks: Vec::new(),
        },
        Panel {
            title: "Faults active and invariant violations".into(),
            y_desc: "count".into(),
            y_max: most_violations.max(most_faults) * 1.1,
            series: vec![
                Series {
                    name: "faults active".into(),
                    points: steps(samples, at, |s| s.faults_active as f64),
                    color: FAULT_RED,
                },
                Series {
                    name: "violations (total)".into(),
                    points: steps(samples, at, |s| s.violations as f64),
                    color: RGBColor(0, 0, 0),
                },
            ],
            marks,
        },
    ];
    draw_panels(&panels, end, path, text)
}
