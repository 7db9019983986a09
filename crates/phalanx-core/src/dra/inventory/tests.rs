use super::*;
use crate::dra::claim::{PodClaim, PodClaimSource};
use crate::dra::testing::{GPU_DRIVER, gpu_claim, gpu_device};
use crate::testing::gpu_pod;

fn inventory() -> DeviceInventory {
    let mut inventory = DeviceInventory::default();
    let class = DeviceClass {
        name: GPU_DRIVER.into(),
        selectors: vec!["device.driver == 'gpu.nvidia.com'".into()],
        extended_resource_name: None,
    };
    inventory.apply_class(class).unwrap();
    inventory.apply_slice(DeviceSlice {
        name: "n1-gpus".into(),
        node: "n1".into(),
        driver: GPU_DRIVER.into(),
        pool: "node".into(),
        devices: (0..8).map(|i| gpu_device(&format!("gpu-{i}"), i)).collect(),
    });
    inventory
}

fn pod_with(name: &str, claims: &[&str]) -> PodInfo {
    let mut pod = gpu_pod(name, 0);
    pod.claims =
        claims.iter().map(|c| PodClaim { name: "gpu".into(), source: PodClaimSource::Claim(c.to_string()) }).collect();
    pod
}

#[test]
fn assumed_allocations_hold_devices_until_forgotten() {
    let mut inventory = inventory();
    inventory.apply_claim(gpu_claim("a", GPU_DRIVER, 6)).unwrap();
    inventory.apply_claim(gpu_claim("b", GPU_DRIVER, 4)).unwrap();
    let usage = NodeInfo::default();
    let writes = inventory.fit(&pod_with("p", &["a"]), "n1", &usage).unwrap();
    assert_eq!(writes[0].allocates, Allocates::New);
    inventory.assume("uid-p", &writes);
    let err = inventory.fit(&pod_with("q", &["b"]), "n1", &usage).unwrap_err();
    assert_eq!(err.to_string(), "claim b needs 4 devices of class gpu.nvidia.com, 2 free");
    inventory.forget("uid-p");
    assert!(inventory.fit(&pod_with("q", &["b"]), "n1", &usage).is_ok());
}

#[test]
fn a_claims_status_holds_its_devices_and_fixes_its_node() {
    let mut inventory = inventory();
    let mut claim = gpu_claim("a", GPU_DRIVER, 6);
    let usage = NodeInfo::default();
    inventory.apply_claim(claim.clone()).unwrap();
    let writes = inventory.fit(&pod_with("p", &["a"]), "n1", &usage).unwrap();
    claim.allocation = Some(writes[0].allocation.clone());
    claim.reserved_for = vec!["uid-p".into()];
    inventory.apply_claim(claim).unwrap();
    inventory.apply_claim(gpu_claim("b", GPU_DRIVER, 4)).unwrap();
    assert!(inventory.fit(&pod_with("q", &["b"]), "n1", &usage).is_err(), "six held by the status");
    // A second pod sharing the allocated claim goes to its node only.
    let shared = inventory.fit(&pod_with("r", &["a"]), "n1", &usage).unwrap();
    assert_eq!(shared[0].allocates, Allocates::Existing);
    let err = inventory.fit(&pod_with("r", &["a"]), "n2", &usage).unwrap_err();
    assert_eq!(err.to_string(), "claim a is allocated on node n1");
    inventory.delete_claim(&ClaimKey { namespace: "default".into(), name: "a".into() });
    assert!(inventory.fit(&pod_with("q", &["b"]), "n1", &usage).is_ok(), "freed with the claim");
}

#[test]
fn unresolved_claims_say_what_the_pod_waits_for() {
    let inventory = inventory();
    let mut pod = gpu_pod("p", 0);
    pod.claims = vec![PodClaim { name: "gpu".into(), source: PodClaimSource::PendingTemplate("gpu-4".into()) }];
    let err = inventory.fit(&pod, "n1", &NodeInfo::default()).unwrap_err();
    assert_eq!(err.to_string(), "waiting for the ResourceClaim of resourceClaims[gpu] to be made from template gpu-4");
    let err = inventory.fit(&pod_with("p", &["nope"]), "n1", &NodeInfo::default()).unwrap_err();
    assert_eq!(err.to_string(), "waiting for ResourceClaim default/nope, which does not exist yet");
}

#[test]
fn selectors_that_do_not_compile_are_reported() {
    let mut inventory = inventory();
    let mut claim = gpu_claim("a", GPU_DRIVER, 1);
    if let crate::dra::claim::RequestKind::Exactly(s) = &mut claim.requests[0].kind {
        s.selectors.push("device.driver ==".into());
    }
    assert!(matches!(inventory.apply_claim(claim), Err(SelectorError::Compile { .. })));
}

#[test]
fn selector_verdicts_follow_the_devices_published() {
    let mut inventory = inventory();
    let h100 = "device.attributes['gpu.nvidia.com'].productName == 'NVIDIA H100 80GB HBM3'".to_string();
    let class = DeviceClass { name: "h100".into(), selectors: vec![h100], extended_resource_name: None };
    inventory.apply_class(class).unwrap();
    inventory.apply_claim(gpu_claim("a", "h100", 8)).unwrap();
    let usage = NodeInfo::default();
    assert!(inventory.fit(&pod_with("p", &["a"]), "n1", &usage).is_ok());
    let mut devices: Vec<Device> = (0..8).map(|i| gpu_device(&format!("gpu-{i}"), i)).collect();
    for device in &mut devices[..4] {
        for (name, value) in device.attributes.iter_mut() {
            if name.name == "productName" {
                *value = crate::dra::device::AttributeValue::String("NVIDIA A100".into());
            }
        }
    }
    let slice = DeviceSlice {
        name: "n1-gpus".into(),
        node: "n1".into(),
        driver: GPU_DRIVER.into(),
        pool: "node".into(),
        devices,
    };
    inventory.apply_slice(slice);
    let err = inventory.fit(&pod_with("p", &["a"]), "n1", &usage).unwrap_err();
    assert_eq!(err.to_string(), "claim a needs 8 devices of class h100, 4 free");
}
