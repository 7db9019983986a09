//! Upstream kube-scheduler beside phalanx on the test's API server: the
//! control plane's own build (`e2e/build-control-plane.sh` builds and
//! caches it), one profile of the defaults under a name of the env's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{TestEnv, eventually, kubeconfig_path};

pub struct KubeScheduler {
    /// The profile's scheduler name.
    pub name: String,
    pub log: PathBuf,
    process: Child,
}

impl KubeScheduler {
    /// Starts it and returns once its caches are synced.
    pub async fn start(env: &TestEnv) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-kube-scheduler", env.name));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("kube-scheduler-{}", env.name);
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
                 clientConnection: {{kubeconfig: {}, qps: 100, burst: 200}}\n\
                 leaderElection: {{leaderElect: false}}\nprofiles:\n- schedulerName: {name}\n",
                kubeconfig_path().display()
            ),
        )
        .unwrap();
        let log = dir.join("kube-scheduler.log");
        let process = Command::new(control_plane_binary("kube-scheduler").await)
            .arg("--config")
            .arg(&config)
            .args(["--secure-port=0", "--v=3"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start kube-scheduler");
        let log_path = log.clone();
        eventually(Duration::from_secs(60), "kube-scheduler's caches synced", || {
            let log_path = log_path.clone();
            async move { std::fs::read_to_string(&log_path).ok()?.contains("Handlers synced").then_some(()) }
        })
        .await;
        Self { name, log, process }
    }

    pub async fn stop(mut self) {
        let _ = self.process.kill().await;
    }
}

/// A binary of the control plane's build (`e2e/build-control-plane.sh`
/// prints its cached directory; `e2e/cluster up` built it already).
async fn control_plane_binary(name: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/build-control-plane.sh");
    let out = Command::new(&script).output().await.expect("run e2e/build-control-plane.sh");
    assert!(out.status.success(), "e2e/build-control-plane.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(name)
}
