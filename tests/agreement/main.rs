//! Differential test against upstream kube-scheduler (the control plane's
//! version, run beside phalanx on the same API server): a seeded generator
//! makes small fleets (zones, racks, taints, cordons, pod limits), pods
//! bound there already (host ports, anti-affinity, read-write-once-pod
//! claims) and probe pods using every filter both schedulers share: node
//! selectors and affinity, tolerations, resources, host ports, inter-pod
//! affinity and anti-affinity (namespaces, namespace selectors), topology
//! spread (maxSkew, minDomains, matchLabelKeys, inclusion policies), bound
//! claims with node-affine volumes, unbound Immediate claims, claims that
//! wait for their first consumer (local volumes, provisioning with allowed
//! topologies).
//!
//! Each probe is tried by phalanx, then by kube-scheduler, on the same
//! fleet in the same state (the probe and its own storage are gone before
//! the other try). Probes are tried one by one against a fixed state rather
//! than as a sequence: placements differ by score, and a sequence would turn
//! those legitimate differences into feasibility differences later on.
//!
//! An independent checker (`checker.rs`, from the model alone) says which
//! nodes each probe fits. The test asserts that every placement of either
//! scheduler is on a node the checker allows, that neither gives up while
//! the checker finds a node, and that phalanx and kube-scheduler agree on
//! every probe's feasibility. It writes `target/agreement/report-seed-<seed>.md`.
//!
//! `PHALANX_AGREEMENT_CASES` (default 50, 4 probes each) and
//! `PHALANX_AGREEMENT_SEED` (default 1) scale and vary it; `e2e/agreement`
//! runs thousands of probes.

#[path = "../support/mod.rs"]
mod support;

mod checker;
mod generate;
mod model;
mod render;
mod trial;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use checker::{Rule, World};
use generate::{Rng, RunNamespaces};
use model::{Labels, TEAM};
use support::{ENV_LABEL, TestEnv};
use trial::{Decision, Pace, Trial};

const PROBES_PER_CASE: usize = 4;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}"))).unwrap_or(default)
}

/// One probe's outcome: what the checker allows and what each scheduler did.
struct Outcome {
    case: model::Case,
    probe: usize,
    verdicts: checker::Verdicts,
    phalanx: Decision,
    kube_scheduler: Decision,
}

impl Outcome {
    fn feasible(&self) -> bool {
        self.verdicts.values().any(Option::is_none)
    }

    /// What is wrong with this outcome, if anything.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (who, decision) in [("phalanx", &self.phalanx), ("kube-scheduler", &self.kube_scheduler)] {
            match decision {
                Decision::Placed(node) => match self.verdicts.get(node) {
                    Some(None) => {}
                    Some(Some(rule)) => problems.push(format!("{who} placed it on {node}, which breaks {rule:?}")),
                    None => problems.push(format!("{who} placed it on {node}, outside the case's fleet")),
                },
                Decision::Unschedulable(message) if self.feasible() => problems
                    .push(format!("{who} found no node ({message}) where the checker allows {}", self.allowed())),
                Decision::Unschedulable(_) => {}
            }
        }
        if self.phalanx.placed() != self.kube_scheduler.placed() {
            problems.push("phalanx and kube-scheduler disagree on feasibility".into());
        }
        problems
    }

    /// The outcome with everything needed to see why, for the report.
    fn describe(&self) -> String {
        format!(
            "\n### {} probe {}\n\n- {}\n- phalanx: {:?}\n- kube-scheduler: {:?}\n- checker: {:?}\n- probe: {:?}\n- bound pods: {:?}\n- bound claims: {:?}\n- nodes: {:?}\n",
            self.case.id,
            self.probe,
            self.problems().join("\n- "),
            self.phalanx,
            self.kube_scheduler,
            self.verdicts,
            self.case.probes[self.probe],
            self.case.bound,
            self.case.bound_claims,
            self.case.nodes,
        )
    }

    fn allowed(&self) -> String {
        let nodes: Vec<&str> = self.verdicts.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| n.as_str()).collect();
        nodes.join(", ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phalanx_agrees_with_kube_scheduler_on_which_pods_fit() {
    let cases = setting("PHALANX_AGREEMENT_CASES", 50);
    let seed = setting("PHALANX_AGREEMENT_SEED", 1);
    let mut env = TestEnv::new("agree").await;
    let other = format!("{}-b", env.name);
    let other_labels: Labels = [(ENV_LABEL.to_string(), env.name.clone()), (TEAM.to_string(), "b".to_string())].into();
    trial::create_namespace(&env.client, &other, &other_labels).await;
    let namespace_labels: BTreeMap<String, Labels> =
        [(env.name.clone(), [(ENV_LABEL.to_string(), env.name.clone())].into()), (other.clone(), other_labels)].into();
    env.start_scheduler().await;
    let mut trial = Trial::start(&env, &other).await;
    let namespaces = RunNamespaces { own: env.name.clone(), other: other.clone() };

    let began = Instant::now();
    let mut outcomes = Vec::new();
    // Cases run again patiently after a problem (see `Pace`).
    let mut rerun = 0;
    let mut rng = Rng::new(seed);
    for i in 0..cases {
        let case = generate::case(&mut rng, &format!("s{seed}c{i}"), &namespaces, PROBES_PER_CASE);
        let world = World { case: &case, namespace_labels: &namespace_labels };
        let judge = |decisions: Vec<(Decision, Decision)>| -> Vec<Outcome> {
            let probes = decisions.into_iter().enumerate();
            probes
                .map(|(probe, (phalanx, kube_scheduler))| {
                    let verdicts = checker::verdicts(&world, &case.probes[probe]);
                    Outcome { case: case.clone(), probe, verdicts, phalanx, kube_scheduler }
                })
                .collect()
        };
        let mut judged = judge(trial.run_case(&case, Pace::Quick).await);
        if judged.iter().any(|o| !o.problems().is_empty()) {
            rerun += 1;
            judged = judge(trial.run_case(&case, Pace::Patient).await);
        }
        for troubled in judged.iter().filter(|o| !o.problems().is_empty()) {
            eprintln!("[agreement] problem:\n{}", troubled.describe());
        }
        outcomes.extend(judged);
        if (i + 1) % 10 == 0 || i + 1 == cases {
            let troubled = outcomes.iter().filter(|o| !o.problems().is_empty()).count();
            eprintln!(
                "[agreement] {}/{cases} cases, {} probes, {troubled} with problems, {:.0}s",
                i + 1,
                outcomes.len(),
                began.elapsed().as_secs_f64()
            );
        }
    }
    let phases = trial.phases.clone();
    trial.stop().await;
    env.teardown().await;

    let report = report(seed, &outcomes, rerun, &phases, began.elapsed());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agreement");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("report-seed-{seed}.md"));
    std::fs::write(&path, &report).unwrap();
    eprintln!("{report}\n[agreement] report: {}", path.display());

    let troubled: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems().is_empty()).collect();
    assert!(
        troubled.is_empty(),
        "{} of {} probes have problems; see {}",
        troubled.len(),
        outcomes.len(),
        path.display()
    );
    // The generator must have exercised every rule, and both outcomes.
    let feasible = outcomes.iter().filter(|o| o.feasible()).count();
    assert!(feasible > 0 && feasible < outcomes.len(), "{feasible} of {} probes feasible", outcomes.len());
    let rules = rejections_by_rule(&outcomes);
    for rule in Rule::ALL {
        assert!(rules.get(&rule).is_some_and(|n| *n > 0), "no probe was kept off a node by {rule:?}: {rules:?}");
    }
}

/// For each rule, on how many (probe, node) pairs it was the first one broken.
fn rejections_by_rule(outcomes: &[Outcome]) -> BTreeMap<Rule, usize> {
    let mut counts = BTreeMap::new();
    for rule in outcomes.iter().flat_map(|o| o.verdicts.values().flatten()) {
        *counts.entry(*rule).or_default() += 1;
    }
    counts
}

fn report(seed: u64, outcomes: &[Outcome], rerun: usize, phases: &trial::Phases, took: Duration) -> String {
    let both_placed = outcomes.iter().filter(|o| o.phalanx.placed() && o.kube_scheduler.placed()).count();
    let neither = outcomes.iter().filter(|o| !o.phalanx.placed() && !o.kube_scheduler.placed()).count();
    let agreeing = both_placed + neither;
    let same_node = outcomes.iter().filter(|o| o.phalanx.placed() && o.phalanx == o.kube_scheduler).count();
    let mut text = format!(
        "# phalanx and kube-scheduler: which pods fit\n\n\
         Seed {seed}, {} cases, {} probes, {:.0} s; {rerun} cases run again patiently after a problem.\n\n\
         | | probes |\n|---|---:|\n\
         | both placed | {both_placed} (on the same node: {same_node}) |\n\
         | neither placed | {neither} |\n\
         | **agreement on feasibility** | **{agreeing} / {} ({:.1} %)** |\n\n\
         The checker's first broken rule, over (probe, node) pairs:\n\n| rule | pairs |\n|---|---:|\n",
        outcomes.len() / PROBES_PER_CASE,
        outcomes.len(),
        took.as_secs_f64(),
        outcomes.len(),
        100.0 * agreeing as f64 / outcomes.len().max(1) as f64,
    );
    for (rule, count) in rejections_by_rule(outcomes) {
        text += &format!("| {rule:?} | {count} |\n");
    }
    let tries = f64::from(phases.probes.max(1));
    text += &format!(
        "\nMean time from creating a probe to seeing its outcome (polled every 20 ms): \
         phalanx {:.0} ms, kube-scheduler {:.0} ms. Setting cases up took {:.0} s, removing them {:.0} s.\n",
        phases.decide_phalanx.as_secs_f64() * 1000.0 / tries,
        phases.decide_kube_scheduler.as_secs_f64() * 1000.0 / tries,
        phases.set_up.as_secs_f64(),
        phases.tear_down.as_secs_f64(),
    );
    let troubled: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems().is_empty()).collect();
    text += &format!("\n## Problems: {}\n", troubled.len());
    for o in troubled {
        text += &o.describe();
    }
    text
}

/// The generator's balance, from the checker alone (no cluster): probes
/// that fit and probes that do not both abound, and every rule keeps some
/// probe off some node, so that agreement means something.
#[test]
fn generated_probes_are_balanced_between_fitting_and_not() {
    let namespaces = RunNamespaces { own: "own".into(), other: "other".into() };
    let namespace_labels: BTreeMap<String, Labels> =
        [("own".to_string(), Labels::new()), ("other".to_string(), [(TEAM.to_string(), "b".to_string())].into())]
            .into();
    let mut rng = Rng::new(1);
    let (mut probes, mut feasible, mut one_node, mut capacity) = (0, 0, 0, 0);
    let mut rules = BTreeMap::new();
    for i in 0..500 {
        let case = generate::case(&mut rng, &format!("c{i}"), &namespaces, PROBES_PER_CASE);
        let world = World { case: &case, namespace_labels: &namespace_labels };
        for probe in &case.probes {
            let verdicts = checker::verdicts(&world, probe);
            probes += 1;
            let published = |v: &model::VolumeUse| matches!(v, model::VolumeUse::Provisioned { capacity: Some(_), .. });
            capacity += usize::from(probe.volumes.iter().any(published));
            let fits = verdicts.values().filter(|v| v.is_none()).count();
            feasible += usize::from(fits > 0);
            one_node += usize::from(fits == 1);
            for rule in verdicts.values().flatten() {
                *rules.entry(*rule).or_insert(0) += 1;
            }
        }
    }
    eprintln!("{feasible} of {probes} probes fit somewhere, {one_node} on one node only; {rules:?}");
    assert!(capacity * 50 >= probes, "{capacity} of {probes} probes use published storage capacity");
    let share = feasible as f64 / probes as f64;
    assert!((0.4..=0.7).contains(&share), "{feasible} of {probes} probes fit");
    assert!(one_node * 10 >= probes, "{one_node} of {probes} probes fit exactly one node");
    for rule in Rule::ALL {
        assert!(rules.get(&rule).is_some_and(|n| *n >= 20), "{rule:?} keeps too few probes off nodes: {rules:?}");
    }
}
