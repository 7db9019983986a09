//! `phalanx explain NAMESPACE/NAME` end to end: three gangs wait for three
//! reasons (no room, over quota, too few members); the scheduler's
//! `/explain` endpoint, the CLI asking it, and the CLI working from the
//! cluster's objects alone all give the specific numbers and reasons, in
//! the same words.

mod support;

use std::time::Duration;

use kube::api::{Api, PostParams};
use phalanx_kube::api::elastic_quota::ElasticQuota;
use phalanx_kube::api::pod_group::PodGroup;
use serde_json::json;
use support::{TestEnv, ensure_crds, eventually, http_get, phalanx};

const WAIT: Duration = Duration::from_secs(30);
const BLOCK: &str = "network.topology.nvidia.com/block";

async fn gang(env: &TestEnv, name: &str, min_member: u32, pods: u32, gpus: u32) {
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": env.name}, "spec": {"minMember": min_member},
    }))
    .unwrap();
    Api::<PodGroup>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &group).await.unwrap();
    for i in 0..pods {
        let mut pod = env.pod(&format!("{name}-{i}"), gpus);
        pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), name.to_string())].into());
        env.create(&pod).await;
    }
}

/// Holds exist only in a running scheduler (they come from its attempts):
/// the lines naming them are left out when comparing with the CLI's own view.
fn without_holds(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("  held for it:") && !l.contains("nodes are held for"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn explain_gives_the_numbers_and_reasons_alike_from_the_scheduler_and_from_the_cluster() {
    ensure_crds(&support::client().await).await;
    let mut env = TestEnv::new("explain").await;
    let ns = env.name.clone();
    let pool = format!(
        "- {{name: a, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, labels: {{{BLOCK}: {ns}-rack}}}}\n"
    );
    let nodes = env.add_pools(&pool).await;
    // Another scheduler's pod takes half of the first node.
    env.bind_foreign("tenant", &nodes[0], &[0, 1, 2, 3]).await;
    let quota: ElasticQuota = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "ElasticQuota",
        "metadata": {"name": "gpus", "namespace": ns},
        "spec": {"min": {"nvidia.com/gpu": 20}, "max": {"nvidia.com/gpu": 20}},
    }))
    .unwrap();
    Api::<ElasticQuota>::namespaced(env.client.clone(), &ns).create(&PostParams::default(), &quota).await.unwrap();
    env.start_scheduler().await;
    // 16 GPUs wanted, 12 free, and only one node with 8 free together.
    gang(&env, "big", 2, 2, 8).await;
    // 24 GPUs wanted: 4 used + 24 is beyond the quota's 20.
    gang(&env, "capped", 3, 3, 8).await;
    // One member of three.
    gang(&env, "half", 3, 1, 1).await;

    let config = std::env::temp_dir().join(format!("{ns}-explain-config.yaml"));
    std::fs::write(&config, env.config_text()).unwrap();
    let config = config.to_string_lossy().into_owned();
    let url = format!("http://127.0.0.1:{}", env.http_port);
    let port = env.http_port;
    let cases = [
        (
            "big",
            vec![
                format!("PodGroup {ns}/big: waiting for room, priority 0"),
                "Members: minMember 2; 2 pending, 0 placed".to_string(),
                "needs 2 pods placed together (16 GPUs); 1 of them found room".to_string(),
                format!("best block {ns}-rack has 8 of the 16 GPUs needed free; 1 of its 2 nodes hold other pods"),
                "2 Insufficient nvidia.com/gpu".to_string(),
                "of 3 pending gangs".to_string(),
                "1 running pods (4 GPUs) on nodes it could use have its priority (0)".to_string(),
            ],
        ),
        (
            // A member's name explains its gang.
            "capped-1",
            vec![
                format!("PodGroup {ns}/capped: waiting for quota"),
                "Members: minMember 3; 3 pending, 0 placed".to_string(),
                format!(
                    "ElasticQuota {ns}/gpus nvidia.com/gpu: used 4, min 20, max 20; this gang's pending pods need 24"
                ),
                format!("exceeded: {ns}: 4 of 20 GPUs used, gang needs 24"),
            ],
        ),
        (
            "podgroup/half",
            vec![
                format!("PodGroup {ns}/half: waiting for its members"),
                "Members: minMember 3; 1 pending, 0 placed".to_string(),
                "1 of 3 members created".to_string(),
            ],
        ),
    ];
    // Until the scheduler has seen every pod, what it says changes.
    for (target, expected) in &cases {
        let path = format!("/explain/{ns}/{target}");
        eventually(WAIT, &format!("{path} explained with {expected:?}"), || {
            let path = path.clone();
            async move {
                let (code, body) = http_get(port, &path).await?;
                (code == 200 && expected.iter().all(|line| body.contains(line.as_str()))).then_some(())
            }
        })
        .await;
    }
    for (target, _) in &cases {
        let (_, from_scheduler) = http_get(port, &format!("/explain/{ns}/{target}")).await.expect("an answer");
        let target = format!("{ns}/{target}");
        let asked = phalanx(&["explain", &target, "--scheduler", &url]).await;
        assert_eq!(String::from_utf8_lossy(&asked.stdout), from_scheduler, "the CLI prints the endpoint's answer");
        let listed = phalanx(&["explain", &target, "--config", &config]).await;
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert_eq!(without_holds(&listed), without_holds(&from_scheduler), "the cluster's objects tell the same");
    }

    let (code, body) = http_get(port, &format!("/explain/{ns}/big?format=json")).await.expect("json answer");
    assert_eq!(code, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(value["outcome"], "no-room", "{body}");
    assert_eq!(value["capacity"]["gpus_needed"], 16, "{body}");
    assert_eq!(value["capacity"]["best_domain"]["free_gpus"], 8, "{body}");
    let (code, body) = http_get(port, &format!("/explain/{ns}/nothing")).await.expect("an answer");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(&format!("no pending or placed pod, PodGroup or PyTorchJob {ns}/nothing")), "{body}");
    let (code, _) = http_get(port, "/explain/no-namespace").await.expect("an answer");
    assert_eq!(code, 400);
    std::fs::remove_file(&config).ok();
    env.teardown().await;
}
