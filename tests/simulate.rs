//! `phalanx simulate`, run as a user runs it: the binary, its printed table
//! and the files it writes. No cluster needed; each run takes about a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn simulate(args: &[&str], out: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_phalanx"))
        .arg("simulate")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("phalanx runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Rows of a CSV file as maps from column to cell.
fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(String::from).collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{line}");
            header.iter().cloned().zip(cells.into_iter().map(String::from)).collect()
        })
        .collect()
}

fn num(row: &HashMap<String, String>, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column}: {:?}", row[column]))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_knavigator_burst_finishes_near_its_bound_with_no_gang_placed_partly() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = repo("e2e/fleets/h100-32.yaml");
    let output = simulate(&["--trace", "knavigator", "--fleet", fleet.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| lower bound | 270.0 s |"), "{stdout}");

    let jobs = rows(&dir.path().join("jobs.csv"));
    assert_eq!(jobs.len(), 53);
    for job in &jobs {
        assert_eq!(job["placed_together"], job["pods"], "a gang placed partly: {job:?}");
        assert!(!job["finished_s"].is_empty(), "unfinished: {job:?}");
        let quality = num(job, "quality");
        assert!((0.0..=1.0).contains(&quality), "{job:?}");
    }
    let makespan = jobs.iter().map(|j| num(j, "finished_s")).fold(0.0, f64::max);
    assert!(makespan >= 270.0, "below the lower bound: {makespan}");
    assert!(makespan <= 270.0 * 1.5, "far above the lower bound: {makespan}");
    assert!(stdout.contains(&format!("| makespan | {makespan:.1} s |")), "{stdout}");

    let series = rows(&dir.path().join("timeseries.csv"));
    assert!(series.len() >= 9, "at least one instant per wave of 32 pods");
    assert!(series.iter().all(|s| num(s, "allocated_gpus") <= 256.0), "over-committed");
    assert!(series.iter().any(|s| num(s, "allocated_gpus") == 256.0), "never full");
    assert_eq!(num(series.last().unwrap(), "allocated_gpus"), 0.0, "all done");

    let png = std::fs::read(dir.path().join("simulation.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let (width, height) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((width, height), (1200, 800));
}

#[test]
fn high_priority_jobs_preempt_low_priority_ones_which_run_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--trace",
        "synthetic",
        "--jobs",
        "60",
        "--sizes",
        "8:2,16:1",
        "--priorities",
        "0:3,1000:1",
        "--arrival-rate",
        "0.1",
        "--mean-duration",
        "600",
        "--duration-sigma",
        "0.3",
        "--nodes",
        "8",
        "--rack-size",
        "4",
        "--block-size",
        "8",
        "--seed",
        "3",
    ];
    let output = simulate(&args, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let jobs = rows(&dir.path().join("jobs.csv"));
    let evicted: Vec<_> = jobs.iter().filter(|j| num(j, "evictions") > 0.0).collect();
    assert!(!evicted.is_empty(), "no preemption:\n{stdout}");
    assert!(evicted.iter().all(|j| j["priority"] == "0"), "only low priority is preempted");
    assert!(jobs.iter().all(|j| !j["finished_s"].is_empty()), "evicted jobs ran again and finished");
    let line = stdout.lines().find(|l| l.starts_with("| preemptions")).expect("a preemption line");
    let preemptions: usize = line.split('|').nth(2).unwrap().split('/').next().unwrap().trim().parse().unwrap();
    assert!(preemptions > 0, "{line}");
    // A high-priority job waits less than low-priority jobs on average.
    let mean_wait = |priority: &str| {
        let waits: Vec<f64> = jobs.iter().filter(|j| j["priority"] == priority).map(|j| num(j, "queued_s")).collect();
        waits.iter().sum::<f64>() / waits.len() as f64
    };
    assert!(mean_wait("1000") < mean_wait("0"), "{} vs {}", mean_wait("1000"), mean_wait("0"));
}

#[test]
fn a_bad_trace_row_is_reported_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, "job_id,num_gpu,submit_time,duration\na,8,0,30\nb,8,soon,30\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_phalanx"))
        .args(["simulate", "--trace", trace.to_str().unwrap(), "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("trace.csv:3: submit_time: \"soon\" is not a number of seconds"), "{stderr}");
}
