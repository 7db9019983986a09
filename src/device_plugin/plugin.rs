//! The plugin's life with one kubelet: listen on its socket in the plugin
//! directory, register, and start over when the kubelet restarts (a
//! starting kubelet deletes every plugin socket and recreates its own), until
//! told to stop.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::allocation::NodeGpus;
use super::api::KUBELET_SOCKET;
use super::registration::register;
use super::service::serve;

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("cannot listen on {}: {source}", socket.display())]
    Listen { socket: PathBuf, source: std::io::Error },
    #[error("the device plugin server on {} failed: {source}", socket.display())]
    Serve { socket: PathBuf, source: tonic::transport::Error },
}

pub struct PluginConfig {
    /// The kubelet's device plugin directory (it holds `kubelet.sock`).
    pub dir: PathBuf,
    /// The plugin's socket: a file name in `dir`.
    pub endpoint: String,
    pub resource: String,
    /// How often to check that the kubelet is still the one registered with.
    pub poll: Duration,
}

/// Why one registered session ended.
enum SessionEnd {
    Shutdown,
    KubeletRestarted,
}

/// Serves and registers `gpus` until `shutdown` resolves; re-registers
/// after each kubelet restart. Removes its socket on the way out.
pub async fn run(
    config: &PluginConfig,
    gpus: Arc<NodeGpus>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    tokio::pin!(shutdown);
    let socket = config.dir.join(&config.endpoint);
    loop {
        let end = session(config, &socket, gpus.clone(), &mut shutdown).await;
        // The kubelet may already have removed it; either way it must go.
        let _ = std::fs::remove_file(&socket);
        match end? {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::KubeletRestarted => info!("the kubelet restarted; registering again"),
        }
    }
}

async fn session(
    config: &PluginConfig,
    socket: &Path,
    gpus: Arc<NodeGpus>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<SessionEnd, PluginError> {
    let listen_error = |source| PluginError::Listen { socket: socket.to_path_buf(), source };
    // A socket left by an earlier run of the plugin would make bind fail.
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(listen_error(e)),
        _ => {}
    }
    let listener = UnixListener::bind(socket).map_err(listen_error)?;
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(listener, gpus, stopped));
    let kubelet_socket = config.dir.join(KUBELET_SOCKET);
    let registered = tokio::select! {
        kubelet = register_when_ready(config, &kubelet_socket, socket) => Some(kubelet),
        () = &mut *shutdown => None,
    };
    let end = match registered {
        None => SessionEnd::Shutdown,
        Some(kubelet) => tokio::select! {
            () = kubelet_restart(config.poll, &kubelet_socket, kubelet, socket) => SessionEnd::KubeletRestarted,
            () = &mut *shutdown => SessionEnd::Shutdown,
        },
    };
    let _ = stop.send(true);
    // The task is never aborted, so a join error is its panic: pass it on.
    let served = server.await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
    served.map_err(|source| PluginError::Serve { socket: socket.to_path_buf(), source })?;
    Ok(end)
}

/// Registers, retrying while the kubelet is not there or refuses; returns
/// the identity (inode) of the kubelet socket it registered through.
async fn register_when_ready(config: &PluginConfig, kubelet_socket: &Path, socket: &Path) -> u64 {
    let mut delay = Duration::from_millis(200);
    loop {
        // Read before the call: a socket recreated in between is then seen as a restart.
        let kubelet = std::fs::metadata(kubelet_socket).map(|m| m.ino());
        match (kubelet, register(kubelet_socket, &config.endpoint, &config.resource).await) {
            (Ok(inode), Ok(())) => {
                info!(resource = %config.resource, endpoint = %socket.display(), "registered with the kubelet");
                return inode;
            }
            (_, Err(error)) => warn!(%error, retry_in = ?delay, "registration failed"),
            (Err(error), Ok(())) => warn!(%error, "registered, but the kubelet socket is gone; again"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Resolves when the kubelet has restarted since registration: its socket
/// is another file, or ours was deleted.
async fn kubelet_restart(poll: Duration, kubelet_socket: &Path, registered_with: u64, socket: &Path) {
    loop {
        tokio::time::sleep(poll).await;
        let kubelet_now = std::fs::metadata(kubelet_socket).map(|m| m.ino()).ok();
        if kubelet_now != Some(registered_with) || !socket.exists() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use futures::StreamExt;
    use http::uri::PathAndQuery;
    use tokio::sync::mpsc;
    use tonic::body::Body;
    use tonic_prost::ProstCodec;

    use super::*;
    use crate::agent::discovery::{fixture_gpu_uuid, read_topology_file};
    use crate::agent::pod_resources::connect;
    use crate::device_plugin::allocation::{GPU_INDICES_ENV, VISIBLE_DEVICES_ENV};
    use crate::device_plugin::api::*;
    use crate::device_plugin::service::{unary, unix_incoming};
    use phalanx_core::topology::graph::LinkBandwidth;

    const NODE: &str = "kind-worker";

    fn gpus(fixture: &str) -> Arc<NodeGpus> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvidia-smi-topo").join(fixture);
        Arc::new(NodeGpus::new(read_topology_file(&path, NODE).unwrap(), &LinkBandwidth::default()).unwrap())
    }

    /// A kubelet's registration socket at `dir/kubelet.sock` that passes on
    /// every RegisterRequest; the task ends (the socket stays) when aborted.
    fn fake_kubelet(dir: &Path, registered: mpsc::UnboundedSender<RegisterRequest>) -> tokio::task::JoinHandle<()> {
        let socket = dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let registered = registered.clone();
            async move {
                assert_eq!(req.uri().path(), REGISTER_PATH);
                let answer = unary(req, move |r: RegisterRequest| {
                    registered.send(r).unwrap();
                    Ok(Empty {})
                });
                Ok::<_, std::convert::Infallible>(answer.await)
            }
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder().serve_with_incoming(service, unix_incoming(listener)).await.unwrap();
        })
    }

    /// The kubelet's side of a call to the plugin.
    async fn call<Req, Resp>(socket: &Path, path: &'static str, request: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(connect(socket).await.unwrap());
        grpc.ready().await.unwrap();
        let codec = ProstCodec::<Req, Resp>::default();
        grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec).await.map(|r| r.into_inner())
    }

    fn config(dir: &Path) -> PluginConfig {
        PluginConfig {
            dir: dir.to_path_buf(),
            endpoint: "fake-gpu.sock".into(),
            resource: "nvidia.com/gpu".into(),
            poll: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn the_plugin_registers_serves_the_kubelet_and_registers_again_after_a_kubelet_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (registered, mut registrations) = mpsc::unbounded_channel();
        let kubelet = fake_kubelet(dir.path(), registered.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config(dir.path());
        let gpus = gpus("pcie-8x-rtx4090-two-sockets.txt");
        let plugin = tokio::spawn(async move {
            run(&config, gpus, async move {
                let _ = stopped.await;
            })
            .await
        });

        let request = registrations.recv().await.unwrap();
        assert_eq!(
            (request.version.as_str(), request.endpoint.as_str(), request.resource_name.as_str()),
            (VERSION, "fake-gpu.sock", "nvidia.com/gpu")
        );
        assert_eq!(
            request.options,
            Some(DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true })
        );
        let socket = dir.path().join("fake-gpu.sock");

        // ListAndWatch: the fixture's GPUs by UUID, in index order.
        let mut grpc = tonic::client::Grpc::new(connect(&socket).await.unwrap());
        grpc.ready().await.unwrap();
        let codec = ProstCodec::<Empty, ListAndWatchResponse>::default();
        let response = grpc
            .server_streaming(tonic::Request::new(Empty {}), PathAndQuery::from_static(LIST_AND_WATCH_PATH), codec)
            .await
            .unwrap();
        let mut devices = response.into_inner();
        let first = devices.next().await.unwrap().unwrap();
        let ids: Vec<String> = first.devices.iter().map(|d| d.id.clone()).collect();
        let expected: Vec<String> = (0..8).map(|i| fixture_gpu_uuid(NODE, i)).collect();
        assert_eq!(ids, expected);

        // GetPreferredAllocation: with GPU 0 taken, four GPUs on the other socket.
        let preferred: PreferredAllocationResponse = call(
            &socket,
            PREFERRED_ALLOCATION_PATH,
            PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_ids: expected[1..].to_vec(),
                    must_include_device_ids: vec![],
                    allocation_size: 4,
                }],
            },
        )
        .await
        .unwrap();
        assert_eq!(preferred.container_responses[0].device_ids, expected[4..].to_vec());

        // Allocate: the container's environment names its GPUs.
        let allocated: AllocateResponse = call(
            &socket,
            ALLOCATE_PATH,
            AllocateRequest {
                container_requests: vec![ContainerAllocateRequest { devices_ids: expected[4..6].to_vec() }],
            },
        )
        .await
        .unwrap();
        let envs: &HashMap<String, String> = &allocated.container_responses[0].envs;
        assert_eq!(envs[VISIBLE_DEVICES_ENV], expected[4..6].join(","));
        assert_eq!(envs[GPU_INDICES_ENV], "4,5");
        // An id that is no GPU of the node is refused, naming it.
        let refused = call::<_, AllocateResponse>(
            &socket,
            ALLOCATE_PATH,
            AllocateRequest {
                container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["GPU-x".into()] }],
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("GPU-x"), "{}", refused.message());

        // A restarting kubelet removes the plugins' sockets and makes its own anew.
        kubelet.abort();
        std::fs::remove_file(&socket).unwrap();
        let _kubelet = fake_kubelet(dir.path(), registered);
        let again = tokio::time::timeout(Duration::from_secs(10), registrations.recv()).await.unwrap().unwrap();
        assert_eq!(again.endpoint, "fake-gpu.sock");
        let options: DevicePluginOptions = call(&socket, OPTIONS_PATH, Empty {}).await.unwrap();
        assert!(options.get_preferred_allocation_available);

        // Stopping ends the open device stream and removes the socket.
        stop.send(()).unwrap();
        plugin.await.unwrap().unwrap();
        assert!(!socket.exists());
    }
}
