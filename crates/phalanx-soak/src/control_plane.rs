//! The soak's own control plane, through `e2e/cluster` (with its state
//! directory in `PHALANX_CLUSTER_DIR`, set by `e2e/soak`): the API server
//! phalanx talks to, stopped and started; etcd restarted.

use std::path::{Path, PathBuf};

use tokio::process::Command;

pub const PHALANX_APISERVER: &str = "phalanx";

#[derive(Debug, thiserror::Error)]
#[error("e2e/cluster {args}: {message}")]
pub struct ControlPlaneError {
    pub args: String,
    pub message: String,
}

pub struct ControlPlane {
    script: PathBuf,
}

impl ControlPlane {
    pub fn new(script: &Path) -> Self {
        Self { script: script.to_path_buf() }
    }

    async fn run(&self, args: &[&str]) -> Result<String, ControlPlaneError> {
        let fail = |message: String| ControlPlaneError { args: args.join(" "), message };
        let out = Command::new(&self.script).args(args).output().await.map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts phalanx's API server on `port`; returns its kubeconfig.
    pub async fn start_phalanx_apiserver(&self, port: u16) -> Result<PathBuf, ControlPlaneError> {
        self.run(&["apiserver", PHALANX_APISERVER, "start", &port.to_string()]).await.map(PathBuf::from)
    }

    pub async fn stop_phalanx_apiserver(&self) -> Result<(), ControlPlaneError> {
        self.run(&["apiserver", PHALANX_APISERVER, "stop"]).await.map(|_| ())
    }

    /// Starts it again on its port; returns once it is ready. Undoing a
    /// fault must not be lost to another one (`e2e/cluster` refuses while
    /// etcd restarts): retried for two minutes.
    pub async fn restart_phalanx_apiserver(&self) -> Result<(), ControlPlaneError> {
        let began = std::time::Instant::now();
        loop {
            match self.run(&["apiserver", PHALANX_APISERVER, "start"]).await {
                Err(e) if began.elapsed() < std::time::Duration::from_secs(120) => {
                    tracing::warn!(error = %e, "restarting phalanx's API server; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }

    pub async fn restart_etcd(&self, down_seconds: u64) -> Result<(), ControlPlaneError> {
        self.run(&["etcd", "restart", &down_seconds.to_string()]).await.map(|_| ())
    }
}
