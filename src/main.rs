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
        }
    })
}
