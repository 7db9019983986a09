use super::*;

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[test]
fn slice_devices_keep_typed_attributes_and_capacity() {
    let slice: ResourceSlice = from_json(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "n1-gpu"},
        "spec": {"driver": "gpu.nvidia.com", "nodeName": "n1", "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0",
                "attributes": {"uuid": {"string": "GPU-0"}, "resource.kubernetes.io/numaNode": {"int": 1},
                               "driverVersion": {"version": "580.65.6"}},
                "capacity": {"memory": {"value": "80Gi"}}}]}
    }));
    let translated = device_slice(&slice).unwrap().unwrap();
    assert_eq!(translated.node, "n1");
    let device = &translated.devices[0];
    assert_eq!(device.id.to_string(), "gpu.nvidia.com/n1/gpu-0");
    assert_eq!(device.text_attribute("uuid"), Some("GPU-0"));
    assert_eq!(device.attribute("resource.kubernetes.io/numaNode"), Some(&AttributeValue::Int(1)));
    assert_eq!(device.attribute("driverVersion"), Some(&AttributeValue::Version("580.65.6".into())));
    assert_eq!(device.capacity.values().next(), Some(&(80 << 30)));
}

#[test]
fn bad_slices_name_the_field() {
    let slice: ResourceSlice = from_json(json!({
        "metadata": {"name": "s"},
        "spec": {"driver": "d", "nodeName": "n1", "pool": {"name": "p", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "a"}, {"name": "a"}]}
    }));
    let err = device_slice(&slice).unwrap_err();
    assert_eq!(err.to_string(), "ResourceSlice s: spec.devices[1].name: device \"a\" appears twice");
    let slice: ResourceSlice = from_json(json!({
        "metadata": {"name": "s"},
        "spec": {"driver": "d", "nodeName": "n1", "pool": {"name": "p", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "a", "attributes": {"x": {}}}]}
    }));
    assert_eq!(device_slice(&slice).unwrap_err().field, "spec.devices[0].attributes[x]");
}

#[test]
fn claims_read_requests_constraints_and_allocation() {
    let claim: ResourceClaim = from_json(json!({
        "metadata": {"name": "train-0-gpu", "namespace": "team", "uid": "u1", "resourceVersion": "7"},
        "spec": {"devices": {
            "requests": [
                {"name": "gpus", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 4,
                    "selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]}},
                {"name": "nic", "firstAvailable": [{"name": "fast", "deviceClassName": "nic", "allocationMode": "All"}]}
            ],
            "constraints": [{"requests": ["gpus"], "matchAttribute": "resource.kubernetes.io/pcieRoot"}],
            "config": [{"requests": ["gpus"], "opaque": {"driver": "gpu.nvidia.com", "parameters": {"kind": "GpuConfig"}}}]
        }},
        "status": {
            "allocation": {"devices": {"results": [{"request": "gpus", "driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-0"}],
                    "config": [{"source": "FromClaim", "requests": ["gpus"],
                        "opaque": {"driver": "gpu.nvidia.com", "parameters": {"kind": "GpuConfig"}}}]},
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}},
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "pod-uid"}]
        }
    }));
    let c = device_claim(&claim).unwrap();
    assert_eq!(c.key.to_string(), "team/train-0-gpu");
    let RequestKind::Exactly(gpus) = &c.requests[0].kind else { panic!("exactly") };
    assert_eq!(gpus.mode, AllocationMode::ExactCount(4));
    assert_eq!(gpus.selectors.len(), 1);
    let RequestKind::FirstAvailable(subs) = &c.requests[1].kind else { panic!("firstAvailable") };
    assert_eq!(subs[0].1.mode, AllocationMode::All);
    assert_eq!(c.constraints[0].kind, ConstraintKind::MatchAttribute("resource.kubernetes.io/pcieRoot".into()));
    let allocation = c.allocation.unwrap();
    assert_eq!(allocation.node, "n1");
    assert_eq!(allocation.results[0].device.device, "gpu-0");
    assert_eq!(c.reserved_for, vec!["pod-uid"]);
    let opaque = OpaqueConfig { driver: "gpu.nvidia.com".into(), parameters: r#"{"kind":"GpuConfig"}"#.into() };
    assert_eq!(c.config, vec![ClaimConfig { requests: vec!["gpus".into()], opaque: opaque.clone() }]);
    assert_eq!(
        allocation.config,
        vec![AllocatedConfig { source: ConfigSource::FromClaim, requests: vec!["gpus".into()], opaque }]
    );

    let bad: ResourceClaim = from_json(json!({
        "metadata": {"name": "x", "namespace": "team"},
        "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {"deviceClassName": "c", "count": 0}}]}}
    }));
    let err = device_claim(&bad).unwrap_err();
    assert_eq!(err.field, "spec.devices.requests[0].exactly.count");
}

#[test]
fn pod_claims_resolve_through_the_status() {
    let pod: Pod = from_json(json!({
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": [], "resourceClaims": [
            {"name": "gpu", "resourceClaimTemplateName": "gpu-template"},
            {"name": "shared", "resourceClaimName": "shared-claim"},
            {"name": "later", "resourceClaimTemplateName": "other"}
        ]},
        "status": {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "p-gpu-abcde"}]}
    }));
    let sources: Vec<PodClaimSource> = pod_claims(&pod).into_iter().map(|c| c.source).collect();
    assert_eq!(
        sources,
        vec![
            PodClaimSource::Claim("p-gpu-abcde".into()),
            PodClaimSource::Claim("shared-claim".into()),
            PodClaimSource::PendingTemplate("other".into()),
        ]
    );
}

#[test]
fn status_patch_allocates_on_the_node_and_reserves_for_the_pod() {
    let write = ClaimWrite {
        key: ClaimKey { namespace: "team".into(), name: "c".into() },
        uid: "u".into(),
        resource_version: Some("7".into()),
        allocation: ClaimAllocation {
            node: "n1".into(),
            results: vec![DeviceResult {
                request: "gpus".into(),
                device: DeviceId { driver: "gpu.nvidia.com".into(), pool: "n1".into(), device: "gpu-3".into() },
            }],
            config: vec![AllocatedConfig {
                source: ConfigSource::FromClass,
                requests: vec!["gpus".into()],
                opaque: OpaqueConfig {
                    driver: "gpu.nvidia.com".into(),
                    parameters: r#"{"sharing":{"strategy":"TimeSlicing"}}"#.into(),
                },
            }],
        },
        allocates: Allocates::New,
        reserved_for: vec![],
        finalizers: vec!["example.com/keep".into()],
    };
    let finalizer = claim_finalizer_patch(&write).unwrap();
    assert_eq!(
        finalizer,
        json!({"metadata": {"resourceVersion": "7", "finalizers": ["example.com/keep", DELETE_PROTECTION]}})
    );
    let patch = claim_status_patch(&write, Some("7"), ("p", "pod-uid")).unwrap();
    assert_eq!(patch[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"}));
    let status = &patch[1]["value"];
    assert_eq!(patch[1]["path"], "/status");
    assert_eq!(status["allocation"]["devices"]["results"][0]["device"], "gpu-3");
    assert_eq!(
        status["allocation"]["devices"]["config"],
        json!([{"source": "FromClass", "requests": ["gpus"],
            "opaque": {"driver": "gpu.nvidia.com", "parameters": {"sharing": {"strategy": "TimeSlicing"}}}}])
    );
    assert_eq!(status["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"][0], "n1");
    assert_eq!(status["reservedFor"], json!([{"resource": "pods", "name": "p", "uid": "pod-uid"}]));
    let shared = ClaimWrite { allocates: Allocates::Existing, reserved_for: vec!["other".into()], ..write };
    assert_eq!(claim_finalizer_patch(&shared), None, "nothing allocated: no finalizer");
    let patch = claim_status_patch(&shared, Some("7"), ("p", "pod-uid")).unwrap();
    assert_eq!(patch.as_array().unwrap().len(), 2);
    assert_eq!(patch[1]["path"], "/status/reservedFor/-");
    let again = ClaimWrite { reserved_for: vec!["pod-uid".into()], ..shared };
    assert_eq!(claim_status_patch(&again, Some("7"), ("p", "pod-uid")), None, "reserved already: nothing to write");
}
