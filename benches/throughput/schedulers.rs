//! The schedulers under test, each started as its own process with the same
//! client QPS and burst: phalanx (`phalanx run` with deploy/scheduler-config.yaml's
//! profile), upstream kube-scheduler and scheduler-plugins' Coscheduling
//! (built by e2e/build-peers.sh, configured from e2e/peers/).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::workload::GangApi;

/// What binds the benchmark's pods: one of the schedulers, or the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// Not a scheduler: binds pods as they come (see `ceiling`).
    Ceiling,
    Phalanx,
    KubeScheduler,
    Coscheduling,
}

impl Contender {
    pub fn label(self) -> &'static str {
        match self {
            Contender::Ceiling => "bind ceiling",
            Contender::Phalanx => "phalanx",
            Contender::KubeScheduler => "kube-scheduler",
            Contender::Coscheduling => "coscheduling",
        }
    }

    pub fn scheduler_name(self) -> &'static str {
        match self {
            Contender::Ceiling => crate::ceiling::SCHEDULER_NAME,
            Contender::Phalanx => "bench-phalanx",
            Contender::KubeScheduler => "bench-kube-scheduler",
            Contender::Coscheduling => "bench-coscheduling",
        }
    }

    pub fn gang_api(self) -> GangApi {
        match self {
            Contender::KubeScheduler => GangApi::Upstream,
            _ => GangApi::SchedulerPlugins,
        }
    }
}

/// Where the processes find what they need.
pub struct Setup {
    pub kubeconfig: PathBuf,
    pub qps: u32,
    pub burst: u32,
    /// e2e/build-peers.sh's output directory.
    pub peers: Option<PathBuf>,
    pub workdir: PathBuf,
}

/// Starts a scheduler process (none for the ceiling); it is killed when the
/// returned handle is dropped.
pub fn start(scheduler: Contender, setup: &Setup) -> Option<Child> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (program, args, config) = match scheduler {
        Contender::Ceiling => return None,
        Contender::Phalanx => (
            phalanx_binary(),
            vec!["run".to_string(), "--http-address".into(), "127.0.0.1:0".into()],
            phalanx_config(repo, setup),
        ),
        Contender::KubeScheduler | Contender::Coscheduling => {
            let (binary, file, gates) = if scheduler == Contender::KubeScheduler {
                ("kube-scheduler", "kube-scheduler.yaml", vec!["--feature-gates=GenericWorkload=true"])
            } else {
                ("coscheduling-scheduler", "coscheduling.yaml", vec![])
            };
            let peers = setup.peers.as_ref().expect("peers are started only with --peers");
            let template = std::fs::read_to_string(repo.join("e2e/peers").join(file)).expect("peer config");
            let mut args = vec!["--secure-port=0".to_string(), "--v=1".into()];
            args.extend(gates.into_iter().map(String::from));
            (peers.join(binary), args, fill(&template, scheduler, setup))
        }
    };
    let config_path = setup.workdir.join(format!("{}.yaml", scheduler.scheduler_name()));
    std::fs::write(&config_path, config).expect("writing a scheduler config");
    let log = std::fs::File::create(setup.workdir.join(format!("{}.log", scheduler.scheduler_name()))).expect("log");
    let mut command = Command::new(&program);
    command.args(&args).arg("--config").arg(&config_path);
    if scheduler == Contender::Phalanx {
        command.arg("--kubeconfig").arg(&setup.kubeconfig).env("RUST_LOG", "warn");
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    Some(child)
}

fn fill(template: &str, scheduler: Contender, setup: &Setup) -> String {
    template
        .replace("${KUBECONFIG}", &setup.kubeconfig.display().to_string())
        .replace("${QPS}", &setup.qps.to_string())
        .replace("${BURST}", &setup.burst.to_string())
        .replace("${SCHEDULER_NAME}", scheduler.scheduler_name())
}

/// deploy/scheduler-config.yaml with the benchmark's scheduler name and client
/// limits, without leader election.
fn phalanx_config(repo: &Path, setup: &Setup) -> String {
    let text =
        std::fs::read_to_string(repo.join("deploy/scheduler-config.yaml")).expect("deploy/scheduler-config.yaml");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("scheduler config");
    config["clientConnection"]["qps"] = setup.qps.into();
    config["clientConnection"]["burst"] = setup.burst.into();
    config["profiles"][0]["schedulerName"] = Contender::Phalanx.scheduler_name().into();
    // One instance, as the peers run (their configs turn it off too).
    config["leaderElection"]["leaderElect"] = false.into();
    serde_yaml_ng::to_string(&config).expect("scheduler config")
}

/// `PHALANX_BIN` if set (as for e2e/cluster), else the binary cargo built
/// with this benchmark (release under `cargo bench`).
pub fn phalanx_binary() -> PathBuf {
    std::env::var_os("PHALANX_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_phalanx")), PathBuf::from)
}
