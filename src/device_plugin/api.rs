//! The kubelet's device plugin API (`deviceplugin/v1beta1`): the messages,
//! written by hand from `k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto`
//! with prost's derive (no protoc, no build script), and the gRPC method paths.
//! Fields we never send or read (CDI devices, mounts' SELinux options) are
//! left out; protobuf skips unknown fields.

use std::collections::HashMap;

/// The API version sent at registration.
pub const VERSION: &str = "v1beta1";

/// Where the kubelet keeps its registration socket and the plugins' sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// The kubelet's registration socket, inside the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// What a device's `health` says when it can be allocated.
pub const HEALTHY: &str = "Healthy";

pub const REGISTER_PATH: &str = "/v1beta1.Registration/Register";
pub const OPTIONS_PATH: &str = "/v1beta1.DevicePlugin/GetDevicePluginOptions";
pub const LIST_AND_WATCH_PATH: &str = "/v1beta1.DevicePlugin/ListAndWatch";
pub const PREFERRED_ALLOCATION_PATH: &str = "/v1beta1.DevicePlugin/GetPreferredAllocation";
pub const ALLOCATE_PATH: &str = "/v1beta1.DevicePlugin/Allocate";
pub const PRE_START_PATH: &str = "/v1beta1.DevicePlugin/PreStartContainer";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DevicePluginOptions {
    #[prost(bool, tag = "1")]
    pub pre_start_required: bool,
    #[prost(bool, tag = "2")]
    pub get_preferred_allocation_available: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    #[prost(string, tag = "1")]
    pub version: String,
    /// The plugin's socket, a file name inside the plugin directory.
    #[prost(string, tag = "2")]
    pub endpoint: String,
    #[prost(string, tag = "3")]
    pub resource_name: String,
    #[prost(message, optional, tag = "4")]
    pub options: Option<DevicePluginOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListAndWatchResponse {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub health: String,
    #[prost(message, optional, tag = "3")]
    pub topology: Option<TopologyInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TopologyInfo {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NumaNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NumaNode {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PreferredAllocationRequest {
    #[prost(message, repeated, tag = "1")]
    pub container_requests: Vec<ContainerPreferredAllocationRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPreferredAllocationRequest {
    #[prost(string, repeated, tag = "1")]
    pub available_device_ids: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub must_include_device_ids: Vec<String>,
    #[prost(int32, tag = "3")]
    pub allocation_size: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PreferredAllocationResponse {
    #[prost(message, repeated, tag = "1")]
    pub container_responses: Vec<ContainerPreferredAllocationResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPreferredAllocationResponse {
    #[prost(string, repeated, tag = "1")]
    pub device_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateRequest {
    #[prost(message, repeated, tag = "1")]
    pub container_requests: Vec<ContainerAllocateRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAllocateRequest {
    #[prost(string, repeated, tag = "1")]
    pub devices_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateResponse {
    #[prost(message, repeated, tag = "1")]
    pub container_responses: Vec<ContainerAllocateResponse>,
}

/// What the kubelet adds to a container for its devices. Fake GPUs have no
/// device nodes or driver files, so only environment variables are set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAllocateResponse {
    #[prost(map = "string, string", tag = "1")]
    pub envs: HashMap<String, String>,
    #[prost(map = "string, string", tag = "4")]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PreStartContainerRequest {
    #[prost(string, repeated, tag = "1")]
    pub devices_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PreStartContainerResponse {}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn messages_use_the_kubelet_field_numbers() {
        // ContainerPreferredAllocationRequest { available_deviceIDs: ["a"] (1),
        // must_include_deviceIDs: ["b"] (2), allocation_size: 2 (3) }: key
        // bytes are tag << 3 | wire type.
        let bytes = [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 2];
        let decoded = ContainerPreferredAllocationRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.available_device_ids, ["a"]);
        assert_eq!(decoded.must_include_device_ids, ["b"]);
        assert_eq!(decoded.allocation_size, 2);
        // RegisterRequest: version (1), endpoint (2), resource_name (3),
        // options (4) holding get_preferred_allocation_available (2).
        let request = RegisterRequest {
            version: "v".into(),
            endpoint: "e".into(),
            resource_name: "r".into(),
            options: Some(DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }),
        };
        assert_eq!(request.encode_to_vec(), [0x0a, 1, b'v', 0x12, 1, b'e', 0x1a, 1, b'r', 0x22, 2, 0x10, 1]);
        // Device { ID (1), health (2), topology (3) { nodes (1) { ID (1) } } }.
        let device = Device {
            id: "g".into(),
            health: "H".into(),
            topology: Some(TopologyInfo { nodes: vec![NumaNode { id: 1 }] }),
        };
        assert_eq!(device.encode_to_vec(), [0x0a, 1, b'g', 0x12, 1, b'H', 0x1a, 4, 0x0a, 2, 0x08, 1]);
    }
}
