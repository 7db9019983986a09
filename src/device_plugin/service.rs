//! The `v1beta1.DevicePlugin` gRPC service on a unix socket: a thin layer
//! that decodes the kubelet's calls, asks `NodeGpus`, and encodes the answer.
//! Served without generated code: a router on the method path hands each
//! call to tonic's codec machinery.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;
use tonic::server::Grpc;
use tonic_prost::ProstCodec;
use tracing::{info, warn};

use super::allocation::NodeGpus;
use super::api::{
    ALLOCATE_PATH, AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, DevicePluginOptions, Empty,
    LIST_AND_WATCH_PATH, ListAndWatchResponse, OPTIONS_PATH, PRE_START_PATH, PREFERRED_ALLOCATION_PATH,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
};

/// What the plugin tells the kubelet at registration and when asked.
pub const OPTIONS: DevicePluginOptions =
    DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true };

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

/// The connections arriving on a unix socket, as tonic's server takes them.
pub fn unix_incoming(listener: UnixListener) -> impl Stream<Item = std::io::Result<UnixStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| stream);
        Some((conn, listener))
    })
}

/// Serves the plugin on `listener` until `stop` turns true; the device
/// list streams end then too, so the kubelet's connection can close.
pub async fn serve(
    listener: UnixListener,
    gpus: Arc<NodeGpus>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let mut shutdown = stop.clone();
    let router = tower::service_fn(move |req: http::Request<Body>| {
        let (gpus, stop) = (gpus.clone(), stop.clone());
        async move { Ok::<_, Infallible>(route(req, gpus, stop).await) }
    });
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(router, unix_incoming(listener), async move {
            // An error means the sender is gone, which is a stop too.
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        })
        .await
}

async fn route(req: http::Request<Body>, gpus: Arc<NodeGpus>, stop: watch::Receiver<bool>) -> http::Response<Body> {
    match req.uri().path() {
        OPTIONS_PATH => unary(req, |_: Empty| Ok(OPTIONS)).await,
        LIST_AND_WATCH_PATH => list_and_watch(req, gpus, stop).await,
        PREFERRED_ALLOCATION_PATH => unary(req, move |r: PreferredAllocationRequest| preferred(&gpus, &r)).await,
        ALLOCATE_PATH => unary(req, move |r: AllocateRequest| allocate(&gpus, &r)).await,
        PRE_START_PATH => unary(req, |_: PreStartContainerRequest| Ok(PreStartContainerResponse {})).await,
        other => Status::unimplemented(format!("no method {other}")).into_http(),
    }
}

/// Answers one request-response call with `handler`.
pub(crate) async fn unary<Req, Resp>(
    req: http::Request<Body>,
    handler: impl Fn(Req) -> Result<Resp, Status> + Clone + Send + 'static,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let service = tower::service_fn(move |r: tonic::Request<Req>| {
        let answer = handler(r.into_inner()).map(tonic::Response::new);
        std::future::ready(answer)
    });
    Grpc::new(ProstCodec::<Resp, Req>::default()).unary(service, req).await
}

/// The device list, then nothing until the plugin stops: fake GPUs never
/// change health.
async fn list_and_watch(
    req: http::Request<Body>,
    gpus: Arc<NodeGpus>,
    stop: watch::Receiver<bool>,
) -> http::Response<Body> {
    let service = tower::service_fn(move |_: tonic::Request<Empty>| {
        let list = ListAndWatchResponse { devices: gpus.devices() };
        info!(devices = list.devices.len(), "kubelet watches the device list");
        let mut stop = stop.clone();
        let until_stopped = futures::stream::once(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .filter_map(|()| std::future::ready(None));
        let stream: DeviceStream = Box::pin(futures::stream::once(std::future::ready(Ok(list))).chain(until_stopped));
        std::future::ready(Ok::<_, Status>(tonic::Response::new(stream)))
    });
    Grpc::new(ProstCodec::<ListAndWatchResponse, Empty>::default()).server_streaming(service, req).await
}

fn preferred(gpus: &NodeGpus, request: &PreferredAllocationRequest) -> Result<PreferredAllocationResponse, Status> {
    let container_responses = request
        .container_requests
        .iter()
        .map(|r| {
            let device_ids = gpus.preferred(r).map_err(|e| invalid("GetPreferredAllocation", &e))?;
            info!(available = r.available_device_ids.len(), chosen = ?device_ids, "preferred allocation");
            Ok(ContainerPreferredAllocationResponse { device_ids })
        })
        .collect::<Result<_, Status>>()?;
    Ok(PreferredAllocationResponse { container_responses })
}

fn allocate(gpus: &NodeGpus, request: &AllocateRequest) -> Result<AllocateResponse, Status> {
    let container_responses = request
        .container_requests
        .iter()
        .map(|r| {
            info!(devices = ?r.devices_ids, "allocate");
            gpus.allocate(&r.devices_ids).map_err(|e| invalid("Allocate", &e))
        })
        .collect::<Result<_, Status>>()?;
    Ok(AllocateResponse { container_responses })
}

fn invalid(call: &str, error: &super::allocation::AllocationError) -> Status {
    warn!(call, %error, "refused");
    Status::invalid_argument(format!("{call}: {error}"))
}
