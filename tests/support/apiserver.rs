//! A second API server on the local control plane's etcd, for one test's
//! scheduler: the test stops and starts it to cut phalanx off from the API
//! (and, since its watch cache starts over, to expire phalanx's watches with
//! 410 Gone), while the cluster's own API server, and every other test
//! sharing the cluster, carries on. Driven by `e2e/cluster apiserver`, so it
//! needs the local control plane (not any kubeconfig).

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

use super::{free_port, kubeconfig_path};

pub struct ExtraApiServer {
    name: String,
    /// Its kubeconfig (the cluster's admin credentials, its own port).
    pub kubeconfig: PathBuf,
}

impl ExtraApiServer {
    /// Starts one on a free port; returns once it is ready.
    pub async fn start(name: &str) -> Self {
        let out = cluster(&["apiserver", name, "start", &free_port().to_string()]).await;
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self { name: name.to_string(), kubeconfig }
    }

    pub async fn stop(&self) {
        cluster(&["apiserver", &self.name, "stop"]).await;
    }

    /// Starts it again on its port; returns once it is ready.
    pub async fn restart(&self) {
        cluster(&["apiserver", &self.name, "start"]).await;
    }
}

impl Drop for ExtraApiServer {
    fn drop(&mut self) {
        let _ = script().args(["apiserver", &self.name, "remove"]).status();
    }
}

/// `e2e/cluster` for the cluster whose kubeconfig the tests use (its state
/// directory is where that kubeconfig is).
fn script() -> std::process::Command {
    let mut command = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster"));
    if let Some(dir) = kubeconfig_path().parent() {
        command.env("PHALANX_CLUSTER_DIR", dir);
    }
    command
}

async fn cluster(args: &[&str]) -> Output {
    let out = Command::from(script()).args(args).output().await.expect("run e2e/cluster");
    assert!(out.status.success(), "e2e/cluster {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}
