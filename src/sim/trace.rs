//! Traces: the jobs a simulation replays. A job is a gang of identical pods
//! submitted at one moment, running for a fixed time once all are placed.
//!
//! Three sources: the knavigator gang burst (`crate::workload`), the
//! synthetic generator (`super::synthetic`), and a CSV file with one job per
//! line, `job_id,num_gpu,submit_time,duration[,pods]` (seconds), into which
//! public traces (Tiresias, Alibaba PAI) convert with a line of scripting.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::workload::GangJob;

/// Namespace of jobs whose trace names none.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub namespace: String,
    /// When it is submitted, from the start of the trace.
    pub submit: Duration,
    /// How long it runs once all its pods are placed.
    pub duration: Duration,
    pub pods: u32,
    pub gpus_per_pod: u32,
    pub priority: i32,
}

impl Job {
    pub fn gpus(&self) -> u64 {
        u64::from(self.pods) * u64::from(self.gpus_per_pod)
    }

    /// The job as the makespan bound counts it.
    pub fn as_gang(&self) -> GangJob {
        GangJob { name: self.name.clone(), pods: self.pods, gpus_per_pod: self.gpus_per_pod, run_for: self.duration }
    }
}

/// A benchmark workload, every job submitted at the start, in its order.
pub fn from_gang_jobs(jobs: &[GangJob]) -> Vec<Job> {
    jobs.iter()
        .map(|j| Job {
            name: j.name.clone(),
            namespace: DEFAULT_NAMESPACE.into(),
            submit: Duration::ZERO,
            duration: j.run_for,
            pods: j.pods,
            gpus_per_pod: j.gpus_per_pod,
            priority: 0,
        })
        .collect()
}

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid { path: String, line: usize, field: &'static str, message: String },
    #[error("{path}: no jobs")]
    Empty { path: String },
}

const COLUMNS: [&str; 5] = ["job_id", "num_gpu", "submit_time", "duration", "pods"];

/// Reads a CSV trace. `max_gpus_per_pod`: without a `pods` column, a job
/// asking more GPUs than this is split into pods of this size (the GPUs of
/// one node), and must divide evenly.
pub fn read_csv(path: &Path, max_gpus_per_pod: u32) -> Result<Vec<Job>, TraceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read { path: shown.clone(), source })?;
    parse_csv(&text, &shown, max_gpus_per_pod)
}

/// Parses a CSV trace; `path` names it in errors. Blank lines, `#` comments
/// and a header line starting with `job_id` are skipped. Jobs are returned in
/// order of submission (file order among equals).
pub fn parse_csv(text: &str, path: &str, max_gpus_per_pod: u32) -> Result<Vec<Job>, TraceError> {
    let mut jobs = Vec::new();
    let mut names = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || (jobs.is_empty() && line.starts_with(COLUMNS[0])) {
            continue;
        }
        let bad = |field: &'static str, message: String| TraceError::Invalid {
            path: path.to_string(),
            line: i + 1,
            field,
            message,
        };
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(4..=5).contains(&cells.len()) {
            return Err(bad(
                "line",
                format!("has {} fields; expected {} (the last optional)", cells.len(), COLUMNS.join(",")),
            ));
        }
        let name = cells[0];
        if name.is_empty() {
            return Err(bad(COLUMNS[0], "is empty".into()));
        }
        if !names.insert(name) {
            return Err(bad(COLUMNS[0], format!("{name:?} names an earlier job too")));
        }
        let count = |field: &'static str, cell: &str| -> Result<u32, TraceError> {
            match cell.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(field, format!("{cell:?} is not a whole number of at least 1"))),
            }
        };
        let seconds = |field: &'static str, cell: &str| -> Result<Duration, TraceError> {
            cell.parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| bad(field, format!("{cell:?} is not a number of seconds of at least 0")))
        };
        let gpus = count(COLUMNS[1], cells[1])?;
        let submit = seconds(COLUMNS[2], cells[2])?;
        let duration = seconds(COLUMNS[3], cells[3])?;
        let pods = match cells.get(4) {
            Some(cell) => count(COLUMNS[4], cell)?,
            None => gpus.div_ceil(max_gpus_per_pod.max(1)),
        };
        if gpus % pods != 0 {
            let hint = if cells.len() == 5 { "" } else { "; give the pods column" };
            return Err(bad(COLUMNS[1], format!("{gpus} GPUs do not split evenly into {pods} pods{hint}")));
        }
        jobs.push(Job {
            name: name.to_string(),
            namespace: DEFAULT_NAMESPACE.into(),
            submit,
            duration,
            pods,
            gpus_per_pod: gpus / pods,
            priority: 0,
        });
    }
    if jobs.is_empty() {
        return Err(TraceError::Empty { path: path.to_string() });
    }
    jobs.sort_by_key(|j| j.submit);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::knavigator_gang_burst;

    #[test]
    fn a_csv_trace_parses_with_and_without_pods() {
        let text = "job_id,num_gpu,submit_time,duration,pods\n# a comment\n\nb,16,5,60\na,4,0.5,30.25,4\nc,1,5,1\n";
        let jobs = parse_csv(text, "t.csv", 8).unwrap();
        let got: Vec<(&str, u32, u32, f64, f64)> = jobs
            .iter()
            .map(|j| (j.name.as_str(), j.pods, j.gpus_per_pod, j.submit.as_secs_f64(), j.duration.as_secs_f64()))
            .collect();
        assert_eq!(got, [("a", 4, 1, 0.5, 30.25), ("b", 2, 8, 5.0, 60.0), ("c", 1, 1, 5.0, 1.0)]);
    }

    #[test]
    fn bad_rows_name_the_line_and_the_field() {
        let cases = [
            ("a,8,0\n", 1, "line"),
            ("job_id,num_gpu,submit_time,duration\na,8,0,10\nb,zero,0,10\n", 3, "num_gpu"),
            ("a,0,0,10\n", 1, "num_gpu"),
            ("a,8,-1,10\n", 1, "submit_time"),
            ("a,8,0,ten\n", 1, "duration"),
            ("a,8,0,10,3\n", 1, "num_gpu"),
            ("a,8,0,10,0\n", 1, "pods"),
            (",8,0,10\n", 1, "job_id"),
            ("a,9,0,10\n", 1, "num_gpu"),
            ("a,8,0,10\na,8,5,10\n", 2, "job_id"),
        ];
        for (text, line, field) in cases {
            match parse_csv(text, "t.csv", 8) {
                Err(TraceError::Invalid { line: l, field: f, ref message, .. }) => {
                    assert_eq!((l, f), (line, field), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let error = parse_csv("a,9,0,10\n", "t.csv", 8).unwrap_err().to_string();
        assert_eq!(error, "t.csv:1: num_gpu: 9 GPUs do not split evenly into 2 pods; give the pods column");
        assert!(matches!(parse_csv("# nothing\n", "t.csv", 8), Err(TraceError::Empty { .. })));
    }

    #[test]
    fn the_knavigator_burst_becomes_jobs_submitted_at_once() {
        let jobs = from_gang_jobs(&knavigator_gang_burst());
        assert_eq!(jobs.len(), 53);
        assert!(jobs.iter().all(|j| j.submit.is_zero() && j.gpus_per_pod == 8));
        assert_eq!(jobs.iter().map(Job::gpus).sum::<u64>(), 288 * 8);
    }
}
