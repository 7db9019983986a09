//! The DRA objects the DRA suites share: NVIDIA's GPU DeviceClass, and a
//! node's devices published as its driver would.

use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::TestEnv;

pub const DRIVER: &str = "gpu.nvidia.com";

/// The driver parameters the class passes on with every allocation from it.
pub fn class_parameters() -> serde_json::Value {
    json!({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing"}})
}

/// The class every test shares (cluster-scoped: applied by each, the same).
pub async fn ensure_gpu_class(env: &TestEnv) {
    let class = json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRIVER},
        "spec": {"selectors": [{"cel": {"expression": format!("device.driver == '{DRIVER}'")}}],
            "config": [{"opaque": {"driver": DRIVER, "parameters": class_parameters()}}]},
    });
    let params = PatchParams::apply("phalanx-e2e").force();
    Api::<DeviceClass>::all(env.client.clone())
        .patch(DRIVER, &params, &Patch::Apply(class))
        .await
        .expect("DeviceClass");
}

/// Publishes `devices` as the node's one ResourceSlice of the GPU driver
/// (owned by the node, so it goes with it), named `<node>-gpu.nvidia.com`.
pub async fn publish_slice(env: &TestEnv, node: &str, devices: Vec<serde_json::Value>) {
    let owner = env.nodes().get(node).await.expect("node");
    let slice: ResourceSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{node}-{DRIVER}"), "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": node, "uid": owner.meta().uid,
        }]},
        "spec": {"driver": DRIVER, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": devices},
    }))
    .unwrap();
    Api::<ResourceSlice>::all(env.client.clone()).create(&PostParams::default(), &slice).await.expect("slice");
}
