//! End-to-end: phalanx keeps a PodGroup's status as scheduler-plugins'
//! PodGroup controller does, against a real API server with kwok as the
//! kubelet. Every status the API server holds is recorded through a watch,
//! so the test sees the whole path, not only where it ends.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use phalanx_kube::api::pod_group::{PodGroup, PodGroupStatus};
use serde_json::json;
use support::{TestEnv, eventually};
use tokio::task::JoinHandle;

const SETTLE: Duration = Duration::from_secs(60);
const NODES: &str = "- {name: small, count: 2, gpus: 2}\n";
const GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// The order a healthy group moves in.
const ORDER: [&str; 6] = ["Pending", "PreScheduling", "Scheduling", "Scheduled", "Running", "Finished"];

/// Every status of one PodGroup the watch delivered, oldest first.
struct StatusLog {
    seen: Arc<Mutex<Vec<PodGroupStatus>>>,
    task: JoinHandle<()>,
}

impl StatusLog {
    fn start(api: Api<PodGroup>, name: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
            while let Ok(Some(group)) = stream.try_next().await {
                let status = group.status.unwrap_or_default();
                let mut log = log.lock().unwrap();
                if log.last() != Some(&status) {
                    log.push(status);
                }
            }
        });
        Self { seen, task }
    }

    /// Waits for a status in `phase` and returns it.
    async fn wait_for(&self, phase: &str) -> PodGroupStatus {
        eventually(SETTLE, &format!("PodGroup phase {phase} (seen: {:?})", self.phases()), || async {
            self.seen.lock().unwrap().iter().find(|s| s.phase.as_deref() == Some(phase)).cloned()
        })
        .await
    }

    /// The phases seen, each once, in the order first seen.
    fn phases(&self) -> Vec<String> {
        let mut phases: Vec<String> = vec![];
        for phase in self.seen.lock().unwrap().iter().filter_map(|s| s.phase.clone()) {
            if phases.last() != Some(&phase) {
                phases.push(phase);
            }
        }
        phases
    }

    fn last(&self) -> PodGroupStatus {
        self.seen.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An env with nodes and a scheduler, a ConfigMap `trainer` standing in for
/// the job that owns the pods, and a PodGroup `gang` with minMember 2 whose
/// statuses are being recorded.
async fn gang_of_two(test: &str) -> (TestEnv, ConfigMap, StatusLog) {
    let mut env = TestEnv::new(test).await;
    env.add_pools(NODES).await;
    env.start_scheduler().await;
    let owners: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.name);
    let job: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "trainer"}})).unwrap();
    let job = owners.create(&PostParams::default(), &job).await.expect("create owner");
    let groups: Api<PodGroup> = Api::namespaced(env.client.clone(), &env.name);
    let log = StatusLog::start(groups.clone(), "gang");
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "gang", "namespace": env.name},
        "spec": {"minMember": 2}
    }))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.expect("create PodGroup");
    (env, job, log)
}

/// A member of `group` owned by `owner`; kwok finishes it after `run_for`
/// if given; `gated` holds it back from scheduling until ungated.
fn member(env: &TestEnv, name: &str, group: &str, owner: &ConfigMap, run_for: Option<&str>, gated: bool) -> Pod {
    let mut pod = env.pod(name, 0);
    pod.metadata.labels = Some([(GROUP_LABEL.to_string(), group.to_string())].into());
    if let Some(run_for) = run_for {
        pod.metadata.annotations = Some([("e2e.phalanx.dev/run-for".to_string(), run_for.to_string())].into());
    }
    pod.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid
        }))
        .unwrap(),
    ]);
    if gated {
        pod.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![serde_json::from_value(json!({"name": "e2e.phalanx.dev/hold"})).unwrap()]);
    }
    pod
}

fn counts(s: &PodGroupStatus) -> [i32; 4] {
    [s.scheduled, s.running, s.succeeded, s.failed].map(|n| n.unwrap_or(0))
}

/// The phases were seen in the order the machine moves in, never back.
fn assert_in_order(phases: &[String]) {
    let ranks: Vec<usize> = phases
        .iter()
        .map(|p| ORDER.iter().position(|o| o == p).unwrap_or_else(|| panic!("unexpected phase {p} in {phases:?}")))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "phases out of order: {phases:?}");
}

#[tokio::test]
async fn a_pod_group_moves_from_pending_to_finished() {
    let (env, job, log) = gang_of_two("pg-finish").await;

    let pending = log.wait_for("Pending").await;
    assert_eq!(counts(&pending), [0; 4]);

    // Both members exist but are held back: the group is complete, nothing bound.
    env.create(&member(&env, "worker-0", "gang", &job, Some("3s"), true)).await;
    env.create(&member(&env, "worker-1", "gang", &job, Some("3s"), true)).await;
    let pre = log.wait_for("PreScheduling").await;
    assert_eq!(counts(&pre), [0; 4]);
    assert_eq!(pre.occupied_by, Some(format!("{}/trainer", env.name)));
    assert_eq!(pre.schedule_start_time, None, "nothing bound yet");

    // Let them go: phalanx binds them, kwok runs them for 3s, they succeed.
    for name in ["worker-0", "worker-1"] {
        let ungate = json!({"spec": {"schedulingGates": null}});
        env.pods().patch(name, &PatchParams::default(), &Patch::Merge(&ungate)).await.expect("ungate");
    }
    let running = log.wait_for("Running").await;
    assert_eq!(running.scheduled, Some(2));
    assert!(running.running.unwrap_or(0) + running.succeeded.unwrap_or(0) >= 2, "{running:?}");
    assert!(running.schedule_start_time.is_some(), "set when the first member was bound");

    let finished = log.wait_for("Finished").await;
    assert_eq!(counts(&finished), [2, 0, 2, 0], "{finished:?}");
    assert_eq!(finished.schedule_start_time, running.schedule_start_time, "kept once set");
    assert_eq!(finished.occupied_by, pre.occupied_by);
    let phases = log.phases();
    assert_in_order(&phases);
    assert_eq!(phases.first().map(String::as_str), Some("Pending"));
    env.teardown().await;
}

#[tokio::test]
async fn a_pod_group_with_a_failed_member_ends_failed_and_stays_so() {
    let (env, job, log) = gang_of_two("pg-fail").await;
    env.create(&member(&env, "worker-0", "gang", &job, None, false)).await;
    env.create(&member(&env, "worker-1", "gang", &job, None, false)).await;
    eventually(SETTLE, "both members running", || async {
        (counts(&log.last()) == [2, 2, 0, 0] && log.last().phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    // kwok has no stage that fails a pod, so the test plays the kubelet here.
    let pods = env.pods();
    let set_phase = |phase: &str| json!({"status": {"phase": phase}});
    pods.patch_status("worker-1", &PatchParams::default(), &Patch::Merge(&set_phase("Failed"))).await.expect("fail");
    let failed = log.wait_for("Failed").await;
    assert_eq!(counts(&failed), [2, 1, 0, 1], "{failed:?}");

    // Failed is final: the other member finishing later changes nothing.
    pods.patch_status("worker-0", &PatchParams::default(), &Patch::Merge(&set_phase("Succeeded")))
        .await
        .expect("succeed");
    eventually(SETTLE, "worker-0 Succeeded", || async {
        (pods.get("worker-0").await.ok()?.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.last(), failed, "a Failed group is not rewritten");
    let phases = log.phases();
    assert_eq!(phases.last().map(String::as_str), Some("Failed"), "{phases:?}");
    env.teardown().await;
}
