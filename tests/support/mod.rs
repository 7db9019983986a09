//! Harness for the end-to-end suite. Runs against any kubeconfig (the local
//! control plane from `e2e/cluster`, or a kind cluster): set
//! `PHALANX_E2E_KUBECONFIG`, else `KUBECONFIG` is used.
//!
//! Each test gets a `TestEnv`: its own namespace, its own fake nodes
//! (labelled with the env's name, so tests can run side by side), and its
//! own `phalanx run` process with a scheduler name nobody else uses.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod apiserver;
pub mod dra;
pub mod invariants;
pub mod kube_scheduler;
pub mod priorities;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodCondition, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use phalanx::fleet::{FleetSpec, ready_and_untainted};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const ENV_LABEL: &str = "e2e.phalanx.dev/env";

pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("PHALANX_E2E_KUBECONFIG")
        .or_else(|| std::env::var_os("KUBECONFIG"))
        .map(PathBuf::from)
        .expect("set PHALANX_E2E_KUBECONFIG (or KUBECONFIG) to a cluster; `e2e/cluster up` prints one")
}

pub async fn client() -> Client {
    Client::try_from(config().await).expect("client")
}

pub async fn config() -> kube::Config {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig")
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(200), limit, what, check).await
}

/// Polls `check` every `interval` until it returns `Some`, or panics after `limit`.
pub async fn eventually_every<T, F, Fut>(interval: Duration, limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

pub struct TestEnv {
    pub client: Client,
    /// Namespace, node label value and scheduler name suffix.
    pub name: String,
    pub scheduler_name: String,
    scheduler: Option<Child>,
    pub http_port: u16,
    /// The kubeconfig `phalanx run` is given: the cluster's, unless a test
    /// points it at an API server of its own ([`ExtraApiServer`]).
    pub scheduler_kubeconfig: PathBuf,
    workdir: PathBuf,
    torn_down: bool,
}

impl TestEnv {
    /// A fresh namespace; no nodes and no scheduler yet.
    pub async fn new(test: &str) -> Self {
        let client = client().await;
        let name = format!("e2e-{test}-{:06x}", random() & 0xff_ffff);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {ENV_LABEL: name}}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        // Pods are refused until the namespace's default ServiceAccount exists.
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        eventually(Duration::from_secs(30), "the default ServiceAccount", || async {
            sa.get_opt("default").await.ok().flatten()
        })
        .await;
        let workdir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&workdir).unwrap();
        Self {
            client,
            scheduler_name: format!("phalanx-{name}"),
            name,
            scheduler: None,
            http_port: 0,
            scheduler_kubeconfig: kubeconfig_path(),
            workdir,
            torn_down: false,
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Adds fake nodes from fleet-file pools (YAML list under `pools:`); see
    /// [`TestEnv::add_fleet`].
    pub async fn add_pools(&self, pools_yaml: &str) -> Vec<String> {
        let text = format!("apiVersion: phalanx.dev/v1alpha1\nkind: Fleet\npools:\n{pools_yaml}");
        let fleet = FleetSpec::parse(&text).unwrap_or_else(|(f, m)| panic!("test fleet: {f}: {m}"));
        self.add_fleet(fleet).await
    }

    /// Adds the fake nodes of a fleet file (`e2e/fleets/...`, relative to the
    /// repository); see [`TestEnv::add_fleet`].
    pub async fn add_fleet_file(&self, path: &str) -> Vec<String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
        self.add_fleet(FleetSpec::load(&path).unwrap_or_else(|e| panic!("{e}"))).await
    }

    /// Adds a fleet's fake nodes. Pool names and topology domain values are
    /// prefixed with the env's name (so two envs never share a rack), and
    /// every node gets the env's label. Returns once kwok reports them all
    /// Ready.
    pub async fn add_fleet(&self, mut fleet: FleetSpec) -> Vec<String> {
        for pool in &mut fleet.pools {
            pool.name = format!("{}-{}", self.name, pool.name);
            pool.labels.insert(ENV_LABEL.into(), self.name.clone());
            for level in &mut pool.domains {
                level.prefix = format!("{}-{}", self.name, level.prefix);
            }
        }
        let api = self.nodes();
        let names: Vec<String> = fleet.nodes().iter().map(|n| n.name_any()).collect();
        futures::stream::iter(fleet.nodes())
            .map(|n| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &n).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("create nodes");
        let selector = format!("{ENV_LABEL}={}", self.name);
        let wanted = names.len();
        eventually(Duration::from_secs(60), "nodes Ready and untainted", || {
            let api = api.clone();
            let selector = selector.clone();
            async move {
                let list = api.list(&ListParams::default().labels(&selector)).await.ok()?;
                let ready = list.items.iter().filter(|n| ready_and_untainted(n)).count();
                (ready >= wanted).then_some(())
            }
        })
        .await;
        names
    }

    /// Starts `phalanx run` with a configuration naming this env's scheduler.
    pub async fn start_scheduler(&mut self) {
        let text = self.config_text();
        self.start_scheduler_with(&text).await;
    }

    /// Starts `phalanx run` with this configuration text; the log of an
    /// earlier run of this env is kept (appended to).
    pub async fn start_scheduler_with(&mut self, config_text: &str) {
        let replica = self.start_replica(config_text, "phalanx").await;
        self.http_port = replica.http_port;
        self.scheduler = Some(replica.process);
    }

    /// Starts a `phalanx run` of its own, named `identity` (its `HOSTNAME`,
    /// which leader election uses) and logging to `<identity>.log`; returns
    /// once it is ready.
    pub async fn start_replica(&self, config_text: &str, identity: &str) -> Replica {
        let replica = self.spawn_replica(config_text, identity);
        let http_port = replica.http_port;
        eventually(Duration::from_secs(30), "phalanx /readyz", || async move {
            http_get(http_port, "/readyz").await.filter(|(code, _)| *code == 200)
        })
        .await;
        replica
    }

    /// Like [`TestEnv::start_replica`], without waiting for it to be ready.
    pub fn spawn_replica(&self, config_text: &str, identity: &str) -> Replica {
        let config = self.workdir.join(format!("{identity}-config.yaml"));
        std::fs::write(&config, config_text).unwrap();
        let log_path = self.workdir.join(format!("{identity}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let http_port = free_port();
        let process = Command::new(env!("CARGO_BIN_EXE_phalanx"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&self.scheduler_kubeconfig)
            .args(["--http-address", &format!("127.0.0.1:{http_port}")])
            .env("RUST_LOG", "info,phalanx=debug,kube=warn")
            .env("HOSTNAME", identity)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start phalanx");
        Replica { process, http_port, log_path }
    }

    pub fn config_text(&self) -> String {
        self.config_with_client(100, 200)
    }

    /// The configuration with these client rate limits.
    pub fn config_with_client(&self, qps: u32, burst: u32) -> String {
        format!(
            "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {{qps: {qps}, burst: {burst}}}\nprofiles:\n- schedulerName: {}\n",
            self.scheduler_name
        )
    }

    pub fn scheduler(&mut self) -> &mut Child {
        self.scheduler.as_mut().expect("scheduler started")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.workdir.join("phalanx.log")).unwrap_or_default()
    }

    /// A pod for this env's scheduler, pinned to this env's nodes.
    pub fn pod(&self, name: &str, gpus: u32) -> Pod {
        self.pod_for(name, gpus, &self.scheduler_name)
    }

    pub fn pod_for(&self, name: &str, gpus: u32, scheduler: &str) -> Pod {
        let resources = if gpus > 0 {
            json!({"limits": {"nvidia.com/gpu": gpus.to_string()}, "requests": {"cpu": "1", "memory": "1Gi"}})
        } else {
            json!({"requests": {"cpu": "1", "memory": "1Gi"}})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "schedulerName": scheduler,
                "nodeSelector": {ENV_LABEL: self.name},
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "train", "image": "pytorch/pytorch", "resources": resources}]
            }
        }))
        .unwrap()
    }

    pub async fn create(&self, pod: &Pod) -> Pod {
        self.pods().create(&PostParams::default(), pod).await.expect("create pod")
    }

    pub async fn wait_bound(&self, name: &str, limit: Duration) -> String {
        let pods = self.pods();
        eventually(limit, &format!("pod {name} bound"), || {
            let pods = pods.clone();
            async move { pods.get(name).await.ok()?.spec?.node_name }
        })
        .await
    }

    /// Waits for the `PodScheduled=False` condition and returns it.
    pub async fn wait_unschedulable(&self, name: &str, limit: Duration) -> PodCondition {
        let pods = self.pods();
        eventually(limit, &format!("pod {name} PodScheduled=False"), || {
            let pods = pods.clone();
            async move {
                let conditions = pods.get(name).await.ok()?.status?.conditions?;
                conditions.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")
            }
        })
        .await
    }

    /// A pod bound straight to `node` (as another scheduler would), holding
    /// the GPUs named in its `phalanx.dev/gpus` annotation.
    pub async fn bind_foreign(&self, name: &str, node: &str, gpus: &[u32]) {
        let mut pod = self.pod_for(name, gpus.len() as u32, "another-scheduler");
        let value = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        pod.metadata.annotations = Some([("phalanx.dev/gpus".to_string(), value)].into());
        let created = self.create(&pod).await;
        let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.name, "uid": created.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        }))
        .unwrap();
        self.pods()
            .create_subresource::<_, kube::core::Status>("binding", name, &PostParams::default(), &binding)
            .await
            .expect("bind foreign pod");
    }

    /// The GPU indices phalanx recorded on a pod.
    pub async fn recorded_gpus(&self, name: &str) -> Vec<u32> {
        let pod = self.pods().get(name).await.expect("pod");
        let text = pod.metadata.annotations.and_then(|a| a.get("phalanx.dev/gpus").cloned()).unwrap_or_default();
        text.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("index")).collect()
    }

    /// Events about one object of this namespace, newest last.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.name);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    /// Removes the env's pods, nodes and namespace, and stops its scheduler.
    pub async fn teardown(mut self) {
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill().await;
        }
        let selector = format!("{ENV_LABEL}={}", self.name);
        let _ =
            self.nodes().delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector)).await;
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()).await;
    }
}

/// A `phalanx run` started by [`TestEnv::start_replica`]; killed when dropped.
pub struct Replica {
    pub process: Child,
    pub http_port: u16,
    pub log_path: PathBuf,
}

impl Replica {
    pub fn log(&self) -> String {
        plain(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// The value of one sample of its `/metrics` (`name{labels}` as exposed), if present.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = http_get(self.http_port, "/metrics").await?;
        body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.process.id().expect("replica running").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

/// Installs the CRDs phalanx ships that the cluster lacks (a control plane
/// started before a CRD was added to `deploy/crds/`), and waits until the API
/// server serves them.
/// Creates a namespaced object of any kind, given as JSON, in the env's namespace.
pub async fn create_object<K>(env: &TestEnv, body: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(body).expect("a valid object");
    Api::<K>::namespaced(env.client.clone(), &env.name).create(&PostParams::default(), &object).await.expect("create")
}

pub async fn ensure_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, yaml) in phalanx_kube::api::crd_manifests() {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("installing {file}: {e}"),
        }
        let spec = &crd.spec;
        let version = spec.versions.iter().find(|v| v.served).map(|v| v.name.clone()).unwrap_or_default();
        let group_version = format!("{}/{version}", spec.group);
        let plural = spec.names.plural.clone();
        eventually(Duration::from_secs(30), &format!("{plural}.{} served", spec.group), || {
            let (client, group_version, plural) = (client.clone(), group_version.clone(), plural.clone());
            async move {
                let list = client.list_api_group_resources(&group_version).await.ok()?;
                list.resources.iter().any(|r| r.name == plural).then_some(())
            }
        })
        .await;
    }
}

/// The scheduler's log without terminal colours, for matching `key=value` fields.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `phalanx` with arguments (the agent, explain) and returns its output.
pub async fn phalanx(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_phalanx"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .output()
        .await
        .expect("run phalanx");
    assert!(out.status.success(), "phalanx {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/nvidia-smi-topo/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Randomly seeded by the standard library; enough to keep test names apart.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A bare HTTP/1.0 GET against 127.0.0.1: status code and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}
