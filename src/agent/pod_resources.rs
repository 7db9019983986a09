//! Client for the kubelet's pod-resources API (`v1.PodResourcesLister`), which
//! says which device ids the device plugins handed to which pods.
//!
//! The messages are written by hand from
//! `k8s.io/kubelet/pkg/apis/podresources/v1/api.proto`, keeping only what we
//! read (protobuf skips unknown fields, so newer kubelets still decode); no
//! protoc or build script is needed.

pub use phalanx_kube::api::gpu_topology::PodDevices;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// Where the kubelet serves the API.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// The extended resource the NVIDIA device plugin registers.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

const LIST_PATH: &str = "/v1.PodResourcesLister/List";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubelet's own client allows 16 MiB; a busy node's answer can pass
/// tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListPodResourcesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
    #[prost(int64, repeated, tag = "3")]
    pub cpu_ids: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
    #[prost(message, optional, tag = "3")]
    pub topology: Option<TopologyInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TopologyInfo {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NumaNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NumaNode {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    #[error("cannot connect to the kubelet pod-resources socket {}: {}", socket.display(), causes(source))]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("kubelet pod-resources List on {} failed: {:?}: {}", socket.display(), status.code(), status.message())]
    List {
        socket: PathBuf,
        #[source]
        status: Box<tonic::Status>,
    },
}

/// Asks the kubelet at `socket` which pods hold which GPUs. Pods without
/// GPUs are left out.
pub async fn list_gpu_devices(socket: &Path) -> Result<Vec<PodDevices>, PodResourcesError> {
    let response = list(socket).await?;
    Ok(gpu_devices(&response))
}

async fn list(socket: &Path) -> Result<ListPodResourcesResponse, PodResourcesError> {
    let connect_error = |source| PodResourcesError::Connect { socket: socket.to_path_buf(), source };
    let channel = connect(socket).await.map_err(connect_error)?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready().await.map_err(connect_error)?;
    let response = grpc
        .unary(
            tonic::Request::new(ListPodResourcesRequest {}),
            PathAndQuery::from_static(LIST_PATH),
            ProstCodec::default(),
        )
        .await
        .map_err(|status| PodResourcesError::List { socket: socket.to_path_buf(), status: Box::new(status) })?;
    Ok(response.into_inner())
}

/// A channel to the unix socket at `socket`. The endpoint's URI only fills
/// the HTTP/2 `:authority`; the connector ignores it and dials the socket.
pub(crate) async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    });
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(connector)
        .await
}

/// Collects each pod's `nvidia.com/gpu` device ids across its containers, in
/// the kubelet's order. An id is listed once even if several containers
/// report it (the kubelet lets app containers reuse an init container's).
fn gpu_devices(response: &ListPodResourcesResponse) -> Vec<PodDevices> {
    response
        .pod_resources
        .iter()
        .filter_map(|pod| {
            let mut device_ids: Vec<String> = Vec::new();
            let ids = pod
                .containers
                .iter()
                .flat_map(|c| &c.devices)
                .filter(|d| d.resource_name == GPU_RESOURCE)
                .flat_map(|d| &d.device_ids);
            for id in ids {
                if !device_ids.contains(id) {
                    device_ids.push(id.clone());
                }
            }
            (!device_ids.is_empty()).then(|| PodDevices {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                device_ids,
            })
        })
        .collect()
}

/// An error and its sources, joined: tonic's own message is only
/// "transport error", while the useful part ("No such file or directory")
/// sits at the bottom of the chain.
pub(crate) fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some layers print their source as their own message: say it once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::net::UnixListener;
    use tonic::Status;
    use tonic::body::Body;
    use tonic::server::Grpc;

    use super::*;

    fn devices(resource: &str, ids: &[&str]) -> ContainerDevices {
        ContainerDevices {
            resource_name: resource.to_string(),
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
            topology: Some(TopologyInfo { nodes: vec![NumaNode { id: 0 }] }),
        }
    }

    fn container(name: &str, devices: Vec<ContainerDevices>, cpu_ids: Vec<i64>) -> ContainerResources {
        ContainerResources { name: name.to_string(), devices, cpu_ids }
    }

    fn pod(namespace: &str, name: &str, containers: Vec<ContainerResources>) -> PodResources {
        PodResources { name: name.to_string(), namespace: namespace.to_string(), containers }
    }

    /// A trainer with GPUs in two containers, and a pod with CPUs and a NIC only.
    fn two_pods() -> ListPodResourcesResponse {
        ListPodResourcesResponse {
            pod_resources: vec![
                pod(
                    "ml",
                    "trainer-0",
                    vec![
                        container(
                            "worker",
                            vec![devices(GPU_RESOURCE, &["GPU-aaa", "GPU-bbb"]), devices("rdma/hca", &["mlx5_0"])],
                            vec![2, 3],
                        ),
                        container("sidecar", vec![devices(GPU_RESOURCE, &["GPU-ccc"])], vec![]),
                    ],
                ),
                pod("default", "web", vec![container("app", vec![devices("rdma/hca", &["mlx5_1"])], vec![0, 1])]),
            ],
        }
    }

    /// Serves `answer` for List on a unix socket, like the kubelet, and
    /// Unimplemented for any other method.
    async fn fake_kubelet(listener: UnixListener, answer: Result<ListPodResourcesResponse, Status>) {
        let incoming = crate::device_plugin::service::unix_incoming(listener);
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let answer = answer.clone();
            async move {
                if req.uri().path() != LIST_PATH {
                    return Ok::<_, Infallible>(Status::unimplemented(req.uri().path()).into_http());
                }
                let list = tower::service_fn(move |_: tonic::Request<ListPodResourcesRequest>| {
                    let answer = answer.clone();
                    async move { answer.map(tonic::Response::new) }
                });
                Ok(Grpc::new(ProstCodec::default()).unary(list, req).await)
            }
        });
        let served = tonic::transport::Server::builder().serve_with_incoming(service, incoming).await;
        if let Err(err) = served {
            panic!("fake kubelet stopped: {err}");
        }
    }

    /// Starts the fake kubelet in a fresh directory; keep the guard alive.
    fn start(answer: Result<ListPodResourcesResponse, Status>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(fake_kubelet(listener, answer));
        (dir, socket)
    }

    #[tokio::test]
    async fn lists_gpu_devices_from_a_kubelet() {
        let (_dir, socket) = start(Ok(two_pods()));
        let pods = list_gpu_devices(&socket).await.unwrap();
        assert_eq!(
            pods,
            vec![PodDevices {
                namespace: "ml".into(),
                name: "trainer-0".into(),
                device_ids: vec!["GPU-aaa".into(), "GPU-bbb".into(), "GPU-ccc".into()],
            }]
        );
    }

    #[tokio::test]
    async fn a_kubelet_with_no_pods_gives_an_empty_list() {
        let (_dir, socket) = start(Ok(ListPodResourcesResponse::default()));
        assert_eq!(list_gpu_devices(&socket).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let err = list_gpu_devices(&socket).await.unwrap_err();
        assert!(matches!(err, PodResourcesError::Connect { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("kubelet.sock"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    }

    #[tokio::test]
    async fn a_failing_kubelet_is_a_list_error_with_its_status() {
        let (_dir, socket) = start(Err(Status::permission_denied("not allowed")));
        let err = list_gpu_devices(&socket).await.unwrap_err();
        match &err {
            PodResourcesError::List { status, .. } => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied);
            }
            other => panic!("expected a List error, got {other:?}"),
        }
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[test]
    fn other_resources_and_duplicate_ids_are_left_out() {
        let response = ListPodResourcesResponse {
            pod_resources: vec![pod(
                "ml",
                "p",
                vec![
                    container("init", vec![devices(GPU_RESOURCE, &["GPU-1"])], vec![]),
                    container(
                        "main",
                        vec![devices(GPU_RESOURCE, &["GPU-1", "GPU-2"]), devices("nvidia.com/mig-1g.10gb", &["MIG-x"])],
                        vec![],
                    ),
                ],
            )],
        };
        let pods = gpu_devices(&response);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].device_ids, ["GPU-1", "GPU-2"]);
    }

    #[test]
    fn messages_use_the_kubelet_field_numbers() {
        use prost::Message;
        // Hand-encoded ContainerDevices { resource_name: "a" (1), device_ids: ["b"] (2),
        // topology: { nodes: [{ ID: 1 }] } (3) }: key bytes are tag << 3 | wire type.
        let bytes = [0x0a, 1, b'a', 0x12, 1, b'b', 0x1a, 4, 0x0a, 2, 0x08, 1];
        let decoded = ContainerDevices::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.resource_name, "a");
        assert_eq!(decoded.device_ids, ["b"]);
        assert_eq!(decoded.topology.unwrap().nodes[0].id, 1);
        // ContainerResources { name: "c" (1), cpu_ids: [5] packed (3), then
        // memory (4), a field we do not model: skipped, not an error.
        let bytes = [0x0a, 1, b'c', 0x1a, 1, 5, 0x22, 0];
        let decoded = ContainerResources::decode(&bytes[..]).unwrap();
        assert_eq!((decoded.name.as_str(), decoded.cpu_ids), ("c", vec![5]));
    }
}
