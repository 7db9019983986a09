//! End to end: `kubectl apply -k deploy/` on the control plane, then phalanx
//! run with its ServiceAccounts' own tokens. The scheduler binds a gang with
//! its GPUs, keeps the PodGroup's status, reports an unschedulable pod,
//! preempts and holds its Lease without one Forbidden; the agent publishes
//! its own node's topology and is refused another node's; and neither
//! account may do what phalanx never needs.

mod support;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use phalanx_kube::api::gpu_topology::GPUTopology;
use phalanx_kube::api::pod_group::PodGroup;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{ENV_LABEL, TestEnv, eventually, fixture, kubeconfig_path, plain};
use tempfile::NamedTempFile;

const NAMESPACE: &str = "phalanx-system";
const SCHEDULER: &str = "phalanx-scheduler";
const AGENT: &str = "phalanx-agent";
const SETTLE: Duration = Duration::from_secs(60);
/// What is applied: phalanx itself, and its Grafana dashboard.
const KUSTOMIZATIONS: [&str; 2] = ["deploy", "deploy/grafana"];
const TOPOLOGY: &str = "pcie-a100-nvlink-bridge-pairs.txt";

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).to_string_lossy().into_owned()
}

fn kubectl(args: &[&str]) -> Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .expect("kubectl on PATH (deploy/ is applied with kubectl apply -k)")
}

fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// One object of a rendered kustomization.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    kind: String,
    name: String,
}

fn rendered(dir: &str) -> Vec<Object> {
    let yaml = kubectl_ok(&["kustomize", &repo(dir)]);
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| {
            let object = Value::deserialize(doc).unwrap_or_else(|e| panic!("{dir} renders bad YAML: {e}"));
            let field = |f: &str| object.pointer(f).and_then(Value::as_str).unwrap_or_default().to_string();
            Object { kind: field("/kind"), name: field("/metadata/name") }
        })
        .collect()
}

/// Applies both kustomizations once per test binary, as the README says,
/// and returns the objects they render.
fn deployed() -> &'static [Object] {
    static DEPLOYED: OnceLock<Vec<Object>> = OnceLock::new();
    DEPLOYED.get_or_init(|| {
        let mut objects = Vec::new();
        for dir in KUSTOMIZATIONS {
            let rendered = rendered(dir);
            let applied = kubectl_ok(&["apply", "-k", &repo(dir)]);
            let lines: Vec<&str> = applied.lines().collect();
            assert_eq!(lines.len(), rendered.len(), "one line per object of {dir}:\n{applied}");
            let accepted = [" created", " configured", " unchanged"];
            assert!(lines.iter().all(|l| accepted.iter().any(|a| l.ends_with(a))), "{dir}:\n{applied}");
            objects.extend(rendered);
        }
        objects
    })
}

/// A kubeconfig for the cluster under test (a file removed on drop) that
/// authenticates with a fresh token of a phalanx ServiceAccount, bound to
/// `pod` if given (as the kubelet's projected tokens are).
async fn account_kubeconfig(env: &TestEnv, account: &str, pod: Option<&Pod>) -> NamedTempFile {
    let mut request = json!({"spec": {"audiences": [], "expirationSeconds": 3600}});
    if let Some(pod) = pod {
        request["spec"]["boundObjectRef"] =
            json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()});
    }
    let request: TokenRequest = serde_json::from_value(request).unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), NAMESPACE);
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {account}: {e}"))
        .status
        .expect("token")
        .token;
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    let current = admin.current_context.clone().expect("current-context");
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the current context's cluster");
    let cluster = admin.clusters.iter().find(|c| c.name == cluster_name).expect("the cluster entry");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster_name, "user": account}}],
        "current-context": account,
    });
    let mut file = NamedTempFile::new().unwrap();
    file.write_all(serde_json::to_string_pretty(&config).unwrap().as_bytes()).unwrap();
    file
}

async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// `phalanx agent --once` for `node` with these credentials.
async fn agent_round(node: &str, kubeconfig: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_phalanx"))
        .args(["agent", "--node-name", node, "--topology-file", &fixture(TOPOLOGY), "--once", "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .await
        .expect("run phalanx agent")
}

#[tokio::test]
async fn every_object_of_deploy_is_accepted_and_its_workloads_make_pods() {
    let env = TestEnv::new("deploy").await;
    let gpu_node = env.add_pools("- {name: gpu, count: 1, gpus: 8}\n").await.remove(0);
    let objects = deployed();
    // Nothing here runs these pods (no default scheduler, no image): the
    // workloads go at the end, so that the DaemonSet does not put a pod on
    // every GPU node of the tests that follow.
    let _workloads = RemoveWorkloads;
    let mut listed = Vec::new();
    for dir in KUSTOMIZATIONS {
        for line in kubectl_ok(&["get", "-k", &repo(dir), "-o", "name"]).lines() {
            let (resource, name) = line.split_once('/').expect("resource/name");
            listed.push((resource.split('.').next().unwrap().to_string(), name.to_string()));
        }
    }
    for object in objects {
        assert!(listed.contains(&(object.kind.to_lowercase(), object.name.clone())), "{object:?} not in {listed:?}");
    }
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    for kind in ["CustomResourceDefinition", "ValidatingAdmissionPolicyBinding", "PodDisruptionBudget", "DaemonSet"] {
        assert!(kinds.contains(&kind), "deploy/ has a {kind}: {kinds:?}");
    }

    // The Deployment's two pods mount the ConfigMap generated from scheduler-config.yaml.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NAMESPACE);
    let scheduler_pods = eventually(SETTLE, "the scheduler Deployment's two pods", || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=scheduler")).await.ok()?;
        let live: Vec<Pod> = list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        (live.len() == 2).then_some(live)
    })
    .await;
    let spec = scheduler_pods[0].spec.clone().unwrap();
    let volume = spec.volumes.iter().flatten().find(|v| v.name == "config").expect("config volume");
    let config_map = volume.config_map.as_ref().map(|c| c.name.clone()).expect("a ConfigMap volume");
    let mounted = Api::<ConfigMap>::namespaced(env.client.clone(), NAMESPACE).get(&config_map).await.unwrap();
    let file = std::fs::read_to_string(repo("deploy/scheduler-config.yaml")).unwrap();
    assert_eq!(mounted.data.unwrap().get("scheduler-config.yaml"), Some(&file));

    // The DaemonSet covers the GPU node.
    eventually(SETTLE, "the agent DaemonSet's pod for the GPU node", || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=agent")).await.ok()?;
        let wanted = format!("\"{gpu_node}\"");
        let affinities = list.items.iter().filter_map(|p| serde_json::to_string(&p.spec.as_ref()?.affinity).ok());
        affinities.into_iter().any(|a| a.contains(&wanted)).then_some(())
    })
    .await;

    // The scheduler's pod passes the "restricted" Pod Security Standard.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let restricted = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    namespaces.patch(&env.name, &PatchParams::default(), &Patch::Merge(&restricted)).await.unwrap();
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), NAMESPACE).get(SCHEDULER).await.unwrap();
    let deployment = deployment.spec;
    assert_eq!(deployment.replicas, Some(2));
    let mut pod_spec = deployment.template.spec.unwrap();
    (pod_spec.service_account_name, pod_spec.service_account) = (None, None);
    pod_spec.automount_service_account_token = Some(false);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "restricted"}, "spec": pod_spec})).unwrap();
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    if let Err(e) = env.pods().create(&dry_run, &pod).await {
        panic!("the scheduler's pod is refused under the restricted Pod Security Standard: {e}");
    }
    env.teardown().await;
}

/// Deletes the scheduler Deployment and the agent DaemonSet on drop, even
/// when the test fails.
struct RemoveWorkloads;

impl Drop for RemoveWorkloads {
    fn drop(&mut self) {
        for (kind, name) in [("deployment", SCHEDULER), ("daemonset", AGENT)] {
            let _ = kubectl(&["delete", "-n", NAMESPACE, kind, name, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// deploy/scheduler-config.yaml for this env: its scheduler name and, so
/// that runs side by side do not contend, a Lease of its own. Returns the
/// text and whether leader election is on.
fn scheduler_config(env: &TestEnv) -> (String, bool) {
    let text = std::fs::read_to_string(repo("deploy/scheduler-config.yaml")).unwrap();
    let mut config: Value = serde_yaml_ng::from_str(&text).unwrap();
    config["profiles"][0]["schedulerName"] = json!(env.scheduler_name);
    config["leaderElection"]["resourceName"] = json!(env.name);
    config["leaderElection"]["resourceNamespace"] = json!(NAMESPACE);
    let elect = config["leaderElection"]["leaderElect"] == json!(true);
    (serde_json::to_string_pretty(&config).unwrap(), elect)
}

async fn priority_class(env: &TestEnv, name: &str, value: i32) -> String {
    let name = format!("{}-{name}", env.name);
    let class = json!({"metadata": {"name": name, "labels": {ENV_LABEL: env.name}}, "value": value});
    let api: Api<PriorityClass> = Api::all(env.client.clone());
    api.create(&PostParams::default(), &serde_json::from_value(class).unwrap()).await.unwrap();
    name
}

fn pod_with_priority(env: &TestEnv, name: &str, gpus: u32, class: &str) -> Pod {
    let mut pod = env.pod(name, gpus);
    pod.spec.as_mut().unwrap().priority_class_name = Some(class.to_string());
    pod
}

fn reasons(events: &[k8s_openapi::api::events::v1::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

#[tokio::test]
async fn the_scheduler_account_is_enough_for_everything_phalanx_run_does() {
    let mut env = TestEnv::new("rbac-run").await;
    env.add_pools("- {name: gpu, count: 2, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}\n").await;
    deployed();
    let low = priority_class(&env, "low", 10).await;
    let high = priority_class(&env, "high", 1000).await;
    let kubeconfig = account_kubeconfig(&env, SCHEDULER, None).await;
    env.scheduler_kubeconfig = kubeconfig.path().to_path_buf();
    let (config, leader_election) = scheduler_config(&env);
    // Ready only once every watch has listed: each read is allowed.
    env.start_scheduler_with(&config).await;
    // A refused call shows as a wait that times out: say which call it was.
    let run = AssertUnwindSafe(exercise_the_scheduler(&env, &low, &high, leader_election)).catch_unwind().await;
    let refused = refusals(&env.log());
    if let Err(panic) = run {
        eprintln!("the scheduler's refusals:\n{refused}");
        std::panic::resume_unwind(panic);
    }
    assert!(refused.is_empty(), "the scheduler was refused:\n{refused}");
    for class in [low, high] {
        let _ = Api::<PriorityClass>::all(env.client.clone()).delete(&class, &DeleteParams::default()).await;
    }
    let (client, lease) = (env.client.clone(), env.name.clone());
    env.teardown().await;
    let _ = Api::<Lease>::namespaced(client, NAMESPACE).delete(&lease, &DeleteParams::default()).await;
}

/// The log lines that tell of a call the RBAC refused. Other refusals (an
/// Event for another test's object in a namespace being deleted) are not
/// about the account.
fn refusals(log: &str) -> String {
    let log = plain(log);
    log.lines()
        .filter(|l| l.to_lowercase().contains("forbidden") && l.contains("cannot "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Binds a PodGroup gang with its GPUs and sees its status kept, reports an
/// unschedulable pod, preempts the gang, and holds the Lease (when leader
/// election is on).
async fn exercise_the_scheduler(env: &TestEnv, low: &str, high: &str, leader_election: bool) {
    // A PodGroup gang binds whole, each pod with its GPUs recorded; the group's status follows.
    let group: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "train", "namespace": env.name}, "spec": {"minMember": 2}
    }))
    .unwrap();
    let groups: Api<PodGroup> = Api::namespaced(env.client.clone(), &env.name);
    groups.create(&PostParams::default(), &group).await.unwrap();
    for i in 0..2 {
        let mut pod = pod_with_priority(env, &format!("train-{i}"), 8, low);
        pod.metadata.labels = Some([("scheduling.x-k8s.io/pod-group".to_string(), "train".to_string())].into());
        env.create(&pod).await;
    }
    for i in 0..2 {
        let name = format!("train-{i}");
        env.wait_bound(&name, SETTLE).await;
        assert_eq!(env.recorded_gpus(&name).await, (0..8).collect::<Vec<u32>>());
    }
    let status = eventually(SETTLE, "PodGroup train's status: 2 scheduled", || async {
        let status = groups.get("train").await.ok()?.status?;
        (status.scheduled == Some(2)).then_some(status)
    })
    .await;
    assert!(matches!(status.phase.as_deref(), Some("Scheduled" | "Running")), "{status:?}");
    eventually(SETTLE, "a Scheduled Event for train-0", || async {
        reasons(&env.events_for("train-0").await).contains(&"Scheduled".to_string()).then_some(())
    })
    .await;

    // A pod no node can hold: PodScheduled=False and a FailedScheduling Event.
    env.create(&pod_with_priority(env, "too-big", 16, high)).await;
    let condition = env.wait_unschedulable("too-big", SETTLE).await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    eventually(SETTLE, "a FailedScheduling Event for too-big", || async {
        reasons(&env.events_for("too-big").await).contains(&"FailedScheduling".to_string()).then_some(())
    })
    .await;
    env.pods().delete("too-big", &DeleteParams::default()).await.unwrap();

    // On the full fleet, a higher-priority pod evicts the gang (whole) and binds.
    env.create(&pod_with_priority(env, "urgent", 8, high)).await;
    env.wait_bound("urgent", SETTLE).await;
    let pods = env.pods();
    eventually(SETTLE, "both members of the gang evicted", || async {
        let list = pods.list(&ListParams::default().labels("scheduling.x-k8s.io/pod-group=train")).await.ok()?;
        list.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    eventually(SETTLE, "a Preempted Event for the gang", || async {
        reasons(&env.events_for("train-0").await).contains(&"Preempted".to_string()).then_some(())
    })
    .await;

    if leader_election {
        let leases: Api<Lease> = Api::namespaced(env.client.clone(), NAMESPACE);
        let lease = leases.get(&env.name).await.expect("the scheduler's Lease");
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        assert!(!holder.is_empty(), "the Lease has a holder");
    }
}

#[tokio::test]
async fn the_agent_writes_its_own_nodes_topology_and_no_other() {
    let env = TestEnv::new("rbac-agent").await;
    let nodes = env.add_pools("- {name: a100, count: 2, gpus: 8, gpuProduct: NVIDIA-A100-PCIE-40GB}\n").await;
    let (own, other) = (&nodes[0], &nodes[1]);
    deployed();
    // A pod of the agent's account on `own`, as the DaemonSet would put there;
    // a token bound to it names the node.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("agent-{}", env.name), "namespace": NAMESPACE, "labels": {ENV_LABEL: env.name}},
        "spec": {
            "nodeName": own, "serviceAccountName": AGENT, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "agent", "image": "phalanx"}]
        }
    }))
    .unwrap();
    let agent_pods: Api<Pod> = Api::namespaced(env.client.clone(), NAMESPACE);
    let pod = agent_pods.create(&PostParams::default(), &pod).await.unwrap();
    let bound = account_kubeconfig(&env, AGENT, Some(&pod)).await;
    let agent: Api<GPUTopology> = Api::all(client_from(bound.path()).await);

    let published = agent_round(own, bound.path()).await;
    assert!(published.status.success(), "own node: {}", String::from_utf8_lossy(&published.stderr));
    let topology = Api::<GPUTopology>::all(env.client.clone()).get(own).await.expect("the agent's GPUTopology");
    assert_eq!(topology.owner_references()[0].name, *own, "owned by its Node");
    let own_status = json!({"status": {"podDevices": []}});
    agent.patch_status(own, &PatchParams::default(), &Patch::Merge(&own_status)).await.expect("its own status");

    // Another node's: refused, whether it exists yet or not, spec or status.
    let denied_create = eventually(Duration::from_secs(15), "the admission policy in force", || async {
        let object = GPUTopology::new(other, topology.spec.clone());
        let params = PatchParams::apply("phalanx-agent").dry_run();
        match agent.patch(other, &params, &Patch::Apply(&object)).await {
            Err(kube::Error::Api(e)) if e.code == 403 => Some(e.message),
            _ => None,
        }
    })
    .await;
    assert!(denied_create.contains(&format!("may write only GPUTopology {own}, not {other}")), "{denied_create}");
    let refused = agent_round(other, bound.path()).await;
    assert!(!refused.status.success(), "the agent published another node's topology");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("may write only GPUTopology"));
    assert!(Api::<GPUTopology>::all(env.client.clone()).get_opt(other).await.unwrap().is_none());
    support::phalanx(&["agent", "--node-name", other, "--topology-file", &fixture(TOPOLOGY), "--once"]).await;
    let status = agent.patch_status(other, &PatchParams::default(), &Patch::Merge(&own_status)).await;
    assert!(matches!(status, Err(kube::Error::Api(ref e)) if e.code == 403), "{status:?}");
    let delete = agent.delete(own, &DeleteParams::default()).await;
    assert!(matches!(delete, Err(kube::Error::Api(ref e)) if e.code == 403), "the agent may not delete: {delete:?}");

    // A token not bound to a pod names no node: it writes nothing.
    let unbound = account_kubeconfig(&env, AGENT, None).await;
    let plain_token = Api::<GPUTopology>::all(client_from(unbound.path()).await);
    let status = plain_token.patch_status(own, &PatchParams::default(), &Patch::Merge(&own_status)).await;
    match status {
        Err(kube::Error::Api(e)) => assert!(e.message.contains("token bound to a pod"), "{}", e.message),
        other => panic!("an unbound token wrote a GPUTopology: {other:?}"),
    }
    agent_pods.delete(&pod.name_any(), &DeleteParams::default()).await.unwrap();
    env.teardown().await;
}

/// What a ServiceAccount of phalanx-system may do, as `kubectl auth can-i`
/// asks it: `verb resource[.group][/subresource]` in `namespace` ("" for
/// cluster-scoped resources).
async fn can(client: &Client, account: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let (resource, subresource) = resource.split_once('/').map_or((resource, ""), |(r, s)| (r, s));
    let (resource, group) = resource.split_once('.').map_or((resource, ""), |(r, g)| (r, g));
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": format!("system:serviceaccount:{NAMESPACE}:{account}"),
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NAMESPACE}"), "system:authenticated"],
        "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": namespace
        }
    }}))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review).await.unwrap().status.expect("status").allowed
}

const ANY: &str = "team-a";

/// Everything `phalanx run` calls.
const SCHEDULER_MAY: &[(&str, &str, &str)] = &[
    ("list", "pods", ANY),
    ("watch", "pods", ANY),
    ("get", "pods", ANY),
    ("patch", "pods/status", ANY),
    ("create", "pods/binding", ANY),
    ("create", "pods/eviction", ANY),
    ("watch", "nodes", ""),
    ("watch", "resourcequotas", ANY),
    ("watch", "poddisruptionbudgets.policy", ANY),
    ("watch", "gputopologies.phalanx.dev", ""),
    ("watch", "podgroups.scheduling.x-k8s.io", ANY),
    ("patch", "podgroups.scheduling.x-k8s.io/status", ANY),
    ("watch", "elasticquotas.scheduling.x-k8s.io", ANY),
    ("watch", "podgroups.scheduling.k8s.io", ANY),
    ("watch", "pytorchjobs.kubeflow.org", ANY),
    ("watch", "jobsets.jobset.x-k8s.io", ANY),
    ("watch", "leaderworkersets.leaderworkerset.x-k8s.io", ANY),
    ("create", "events.events.k8s.io", ANY),
    ("get", "leases.coordination.k8s.io", NAMESPACE),
    ("create", "leases.coordination.k8s.io", NAMESPACE),
    ("update", "leases.coordination.k8s.io", NAMESPACE),
];

const SCHEDULER_MUST_NOT: &[(&str, &str, &str)] = &[
    ("create", "pods", ANY),
    ("update", "pods", ANY),
    ("patch", "pods", ANY),
    ("delete", "pods", ANY),
    ("deletecollection", "pods", ANY),
    ("update", "pods/status", ANY),
    ("create", "pods/exec", ANY),
    ("get", "pods/log", ANY),
    ("get", "secrets", ANY),
    ("list", "secrets", NAMESPACE),
    ("get", "configmaps", NAMESPACE),
    ("create", "serviceaccounts/token", NAMESPACE),
    ("update", "nodes", ""),
    ("patch", "nodes", ""),
    ("patch", "nodes/status", ""),
    ("delete", "nodes", ""),
    ("create", "podgroups.scheduling.x-k8s.io", ANY),
    ("patch", "podgroups.scheduling.x-k8s.io", ANY),
    ("delete", "podgroups.scheduling.x-k8s.io", ANY),
    ("patch", "elasticquotas.scheduling.x-k8s.io/status", ANY),
    ("patch", "gputopologies.phalanx.dev", ""),
    ("patch", "pytorchjobs.kubeflow.org", ANY),
    ("patch", "jobsets.jobset.x-k8s.io", ANY),
    ("create", "events", ANY),
    ("delete", "events.events.k8s.io", ANY),
    ("list", "priorityclasses.scheduling.k8s.io", ""),
    ("create", "leases.coordination.k8s.io", "kube-system"),
    ("update", "leases.coordination.k8s.io", "kube-node-lease"),
    ("delete", "leases.coordination.k8s.io", NAMESPACE),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
];

/// Everything `phalanx agent` calls (the admission policy then limits the
/// writes to its node's GPUTopology).
const AGENT_MAY: &[(&str, &str, &str)] = &[
    ("get", "nodes", ""),
    ("get", "gputopologies.phalanx.dev", ""),
    ("create", "gputopologies.phalanx.dev", ""),
    ("patch", "gputopologies.phalanx.dev", ""),
    ("patch", "gputopologies.phalanx.dev/status", ""),
];

const AGENT_MUST_NOT: &[(&str, &str, &str)] = &[
    ("list", "gputopologies.phalanx.dev", ""),
    ("update", "gputopologies.phalanx.dev", ""),
    ("delete", "gputopologies.phalanx.dev", ""),
    ("list", "nodes", ""),
    ("patch", "nodes", ""),
    ("get", "pods", ANY),
    ("create", "pods/binding", ANY),
    ("create", "pods/eviction", ANY),
    ("get", "secrets", NAMESPACE),
    ("create", "events.events.k8s.io", ANY),
    ("create", "leases.coordination.k8s.io", NAMESPACE),
];

#[tokio::test]
async fn each_account_may_do_what_phalanx_does_and_nothing_it_does_not() {
    let client = support::client().await;
    deployed();
    let mut wrong = Vec::new();
    for (account, may, must_not) in [(SCHEDULER, SCHEDULER_MAY, SCHEDULER_MUST_NOT), (AGENT, AGENT_MAY, AGENT_MUST_NOT)]
    {
        for (allowed, checks) in [(true, may), (false, must_not)] {
            for (verb, resource, namespace) in checks {
                if can(&client, account, verb, resource, namespace).await != allowed {
                    wrong.push(format!("{account}: {verb} {resource} in {namespace:?}: expected allowed={allowed}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
