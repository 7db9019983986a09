//! The two `phalanx run` replicas under test, electing a leader through a
//! Lease: started, killed, frozen and thawed, restarted (as a Deployment
//! would), and asked for their metrics.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const SCHEDULER_NAME: &str = "phalanx";
pub const LEASE_NAMESPACE: &str = "soak-system";

/// Short lease times, so that a takeover (and the soak's recovery bound)
/// takes seconds: the standby may take over 6 s after the last renewal.
const LEADER_ELECTION: &str = "leaderElection: {leaderElect: true, leaseDuration: 6s, renewDeadline: 4s, retryPeriod: 1s, resourceNamespace: soak-system, resourceName: phalanx}";

/// The configuration both replicas run: the shipped profile's defaults,
/// preemption on, budgets respected.
pub fn config_text() -> String {
    format!(
        "apiVersion: phalanx.dev/v1alpha1\nkind: SchedulerConfiguration\nclientConnection: {{qps: 100, burst: 200}}\n{LEADER_ELECTION}\npodInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 10\npreemption: {{enabled: true, allowPodDisruptionBudgetViolation: false}}\nprofiles:\n- schedulerName: {SCHEDULER_NAME}\n"
    )
}

/// The longest a pod waits in backoff (podMaxBackoffSeconds above).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct Replica {
    identity: String,
    child: Option<Child>,
    port: u16,
}

pub struct Replicas {
    binary: PathBuf,
    config: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    replicas: Mutex<Vec<Replica>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("starting {binary} for {identity}: {source}")]
    Spawn { binary: String, identity: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Config { path: String, source: std::io::Error },
}

impl Replicas {
    /// Starts `count` replicas of `binary` against `kubeconfig`, logging into `dir`.
    pub fn start(binary: &Path, kubeconfig: &Path, dir: &Path, count: usize) -> Result<Self, ReplicaError> {
        let config = dir.join("phalanx-config.yaml");
        std::fs::write(&config, config_text())
            .map_err(|source| ReplicaError::Config { path: config.display().to_string(), source })?;
        let this = Self {
            binary: binary.to_path_buf(),
            config,
            kubeconfig: kubeconfig.to_path_buf(),
            dir: dir.to_path_buf(),
            replicas: Mutex::new(Vec::new()),
        };
        for i in 1..=count {
            // A restart within the run appends to its replica's log; a new run starts it afresh.
            let _ = std::fs::remove_file(this.dir.join(format!("replica-{i}.log")));
            let replica = this.spawn(&format!("replica-{i}"))?;
            this.lock().push(replica);
        }
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, identity: &str) -> Result<Replica, ReplicaError> {
        let port = free_port();
        let log_path = self.dir.join(format!("{identity}.log"));
        let spawn_err = |source| ReplicaError::Spawn {
            binary: self.binary.display().to_string(),
            identity: identity.to_string(),
            source,
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(spawn_err)?;
        let child = Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(&self.config)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--http-address", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info,kube=warn,phalanx::shell::reporter=debug,phalanx::shell::binder=debug")
            .env("HOSTNAME", identity)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        Ok(Replica { identity: identity.to_string(), child: Some(child), port })
    }

    /// Identity and metrics port of every replica running now.
    pub fn ports(&self) -> Vec<(String, u16)> {
        self.lock().iter().filter(|r| r.child.is_some()).map(|r| (r.identity.clone(), r.port)).collect()
    }

    /// The replica that says it leads (`phalanx_leader 1`), with its metrics text.
    pub async fn leader(&self) -> Option<(String, u16, String)> {
        for (identity, port) in self.ports() {
            if let Some(text) = metrics(port).await
                && metric(&text, "phalanx_leader") == Some(1.0)
            {
                return Some((identity, port, text));
            }
        }
        None
    }

    /// SIGKILLs the replica; [`Replicas::restart`] starts it again.
    pub fn kill(&self, identity: &str) {
        if let Some(r) = self.lock().iter_mut().find(|r| r.identity == identity)
            && let Some(mut child) = r.child.take()
        {
            let _ = child.start_kill();
        }
    }

    pub fn restart(&self, identity: &str) -> Result<(), ReplicaError> {
        let replica = self.spawn(identity)?;
        let mut all = self.lock();
        all.retain(|r| r.identity != identity);
        all.push(replica);
        Ok(())
    }

    /// Sends `STOP` or `CONT` to the replica's process.
    pub fn signal(&self, identity: &str, signal: &str) {
        let pid = self.lock().iter().find(|r| r.identity == identity).and_then(|r| r.child.as_ref()?.id());
        if let Some(pid) = pid {
            let _ = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
        }
    }

    /// Replicas whose process exited on its own (not killed by a fault).
    pub fn exited(&self) -> Vec<String> {
        self.lock()
            .iter_mut()
            .filter_map(|r| {
                let status = r.child.as_mut()?.try_wait().ok()??;
                Some(format!("{} exited: {status}", r.identity))
            })
            .collect()
    }

    /// Stops every replica (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub async fn stop_all(&self) {
        let children: Vec<Child> = self.lock().iter_mut().filter_map(|r| r.child.take()).collect();
        for mut child in children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// The replica's `/metrics` text; `None` when it does not answer within a
/// second (stopped, frozen, starting).
pub async fn metrics(port: u16) -> Option<String> {
    get(port, "/metrics").await
}

/// A bare HTTP/1.0 GET of `path` from a replica: the body of a 200 answer
/// within a second.
pub async fn get(port: u16, path: &str) -> Option<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.split_whitespace().nth(1).filter(|code| *code == "200").map(|_| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), fetch).await.ok().flatten()
}

/// The value of one series (`name{labels}` exactly as exposed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
