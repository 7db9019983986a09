//! The `phalanx` command line: the edge where errors become messages.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "phalanx", version, about = "Gang- and topology-aware GPU scheduler for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler in the foreground.
    Run {
        /// Kubeconfig to use; default: clientConnection.kubeconfig, then in-cluster or $KUBECONFIG.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The scheduler configuration (see deploy/scheduler-config.yaml).
        #[arg(long)]
        config: PathBuf,
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "0.0.0.0:10351")]
        http_address: SocketAddr,
    },
    /// Publish this node's GPU topology (and the kubelet's GPU assignments).
    Agent {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The node this agent runs on (in a DaemonSet: from spec.nodeName).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Read a saved `nvidia-smi topo -m` output instead of asking the GPUs.
        #[arg(long)]
        topology_file: Option<PathBuf>,
        /// The kubelet's pod-resources socket.
        #[arg(long, default_value = "/var/lib/kubelet/pod-resources/kubelet.sock")]
        pod_resources_socket: PathBuf,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 60)]
        interval_seconds: u64,
        /// One round, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Offer fake GPUs (a saved `nvidia-smi topo -m` output) to this node's
    /// kubelet as a device plugin, and label the node as GPU Feature Discovery would.
    DevicePlugin(cli::device_plugin::DevicePluginArgs),
    /// Why a gang waits or where it runs: `NAMESPACE/NAME` (a pod, PodGroup or
    /// PyTorchJob; `NAMESPACE/KIND/NAME` when names collide). Or a node's GPU
    /// topology and who holds which GPU: `node/NAME`.
    Explain {
        target: String,
        /// A running scheduler's HTTP address (http://HOST:PORT); asked first.
        /// Without one, or if it does not answer, the explanation is computed
        /// from the cluster's objects.
        #[arg(long, env = "PHALANX_SCHEDULER")]
        scheduler: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Print the topology graph as Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
        /// Scheduler configuration for link bandwidths and topology levels.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions phalanx defines, or write them into a directory.
    Crds {
        #[arg(long)]
        write: Option<PathBuf>,
        /// The CRDs of other projects that the test control plane installs (e2e/crds/).
        #[arg(long)]
        test_only: bool,
    },
    /// Replay a trace of jobs against a fleet through the scheduler's core, on a simulated clock.
    Simulate(cli::simulate::SimulateArgs),
    /// Create (or update) the fake GPU nodes a fleet file describes.
    Fleet {
        /// The fleet file (see e2e/fleets/).
        file: PathBuf,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run { kubeconfig, config, http_address } => cli::run::run(kubeconfig, &config, http_address).await,
            Command::Fleet { file, kubeconfig } => cli::fleet::apply(kubeconfig, &file).await,
            Command::Agent { kubeconfig, node_name, topology_file, pod_resources_socket, interval_seconds, once } => {
                cli::agent::run(cli::agent::AgentOptions {
                    kubeconfig,
                    node_name,
                    topology_file,
                    pod_resources_socket,
                    interval: std::time::Duration::from_secs(interval_seconds),
                    once,
                })
                .await
            }
            Command::DevicePlugin(args) => cli::device_plugin::run(args).await,
            Command::Explain { target, kubeconfig, dot, config, scheduler, json } => {
                cli::explain::run(cli::explain::ExplainOptions { kubeconfig, target, dot, config, scheduler, json })
                    .await
            }
            // Simulated time: nothing awaits, nothing sleeps.
            Command::Simulate(args) => cli::simulate::run(args),
            Command::Crds { write, test_only } => {
                let manifests = if test_only {
                    phalanx_kube::api::test_crd_manifests()
                } else {
                    phalanx_kube::api::crd_manifests()
                };
                for (file, yaml) in manifests {
                    match &write {
                        Some(dir) => std::fs::write(dir.join(&file), yaml)?,
                        None => println!("---\n{yaml}"),
                    }
                }
                Ok(())
            }
        }
    })
}
