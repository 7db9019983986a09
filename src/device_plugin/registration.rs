//! Registering with the kubelet: one `v1beta1.Registration/Register` call on
//! its socket, naming the plugin's own socket and resource.

use std::path::{Path, PathBuf};

use http::uri::PathAndQuery;
use thiserror::Error;
use tonic_prost::ProstCodec;

use super::api::{Empty, REGISTER_PATH, RegisterRequest, VERSION};
use super::service::OPTIONS;
use crate::agent::pod_resources::{causes, connect};

#[derive(Debug, Error)]
pub enum RegistrationError {
    #[error("cannot connect to the kubelet's registration socket {}: {}", socket.display(), causes(source))]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("the kubelet refused to register {resource}: {:?}: {}", status.code(), status.message())]
    Refused {
        resource: String,
        #[source]
        status: Box<tonic::Status>,
    },
}

/// Asks the kubelet at `kubelet_socket` to use the plugin listening on
/// `endpoint` (a file name in the same directory) for `resource`.
pub async fn register(kubelet_socket: &Path, endpoint: &str, resource: &str) -> Result<(), RegistrationError> {
    let connect_error = |source| RegistrationError::Connect { socket: kubelet_socket.to_path_buf(), source };
    let channel = connect(kubelet_socket).await.map_err(connect_error)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(connect_error)?;
    let request = RegisterRequest {
        version: VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(OPTIONS),
    };
    grpc.unary::<_, Empty, _>(
        tonic::Request::new(request),
        PathAndQuery::from_static(REGISTER_PATH),
        ProstCodec::default(),
    )
    .await
    .map_err(|status| RegistrationError::Refused { resource: resource.to_string(), status: Box::new(status) })?;
    Ok(())
}
