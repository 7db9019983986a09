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
        config: vec![],
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
    let class =
        DeviceClass { name: "h100".into(), selectors: vec![h100], extended_resource_name: None, config: vec![] };
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

#[test]
fn devices_held_only_for_pods_taken_out_are_free_until_put_back() {
    let mut inventory = inventory();
    let usage = NodeInfo::default();
    // "a" (6 devices) is held for pod v alone, "s" (2) is shared by v and w.
    for (name, count, pods) in [("a", 6, vec!["uid-v"]), ("s", 2, vec!["uid-v", "uid-w"])] {
        let mut claim = gpu_claim(name, GPU_DRIVER, count);
        inventory.apply_claim(claim.clone()).unwrap();
        let writes = inventory.fit(&pod_with(name, &[name]), "n1", &usage).unwrap();
        claim.allocation = Some(writes[0].allocation.clone());
        claim.reserved_for = pods.into_iter().map(String::from).collect();
        inventory.apply_claim(claim).unwrap();
    }
    inventory.apply_claim(gpu_claim("b", GPU_DRIVER, 6)).unwrap();
    inventory.apply_claim(gpu_claim("c", GPU_DRIVER, 8)).unwrap();
    let (six, eight) = (pod_with("q", &["b"]), pod_with("r", &["c"]));
    assert!(inventory.fit(&six, "n1", &usage).is_err());
    assert_eq!(inventory.gpus_held_for("uid-v"), 8, "a shared claim counts for each of its pods");
    assert_eq!(inventory.gpus_held_for("uid-w"), 2);

    inventory.take_out("uid-v");
    assert!(inventory.fit(&six, "n1", &usage).is_ok(), "a's devices are free");
    assert!(inventory.fit(&eight, "n1", &usage).is_err(), "w still holds the shared claim");
    inventory.take_out("uid-w");
    assert!(inventory.fit(&eight, "n1", &usage).is_ok());
    inventory.put_back("uid-w");
    inventory.put_back("uid-v");
    assert!(inventory.fit(&six, "n1", &usage).is_err(), "held again once put back");

    // The controller manager drops v from the claims: nothing is held for it any more.
    assert!(inventory.holds_devices_for("uid-v"));
    let mut a = inventory.claim(&ClaimKey { namespace: "default".into(), name: "a".into() }).unwrap().clone();
    a.reserved_for.clear();
    inventory.apply_claim(a).unwrap();
    let mut s = inventory.claim(&ClaimKey { namespace: "default".into(), name: "s".into() }).unwrap().clone();
    s.reserved_for.retain(|p| p != "uid-v");
    inventory.apply_claim(s).unwrap();
    assert!(!inventory.holds_devices_for("uid-v"));
    assert!(inventory.holds_devices_for("uid-w"));
}

#[test]
fn a_refused_reservation_is_worked_out_again_from_the_claim_as_it_is_now() {
    let mut inventory = inventory();
    let mut claim = gpu_claim("shared", GPU_DRIVER, 2);
    inventory.apply_claim(claim.clone()).unwrap();
    // Two pods share the claim in one pass: the first allocates it, the second only reserves.
    let first = inventory.fit(&pod_with("a", &["shared"]), "n1", &NodeInfo::default()).unwrap().remove(0);
    inventory.assume("uid-a", std::slice::from_ref(&first));
    let second = inventory.fit(&pod_with("b", &["shared"]), "n1", &NodeInfo::default()).unwrap().remove(0);
    assert_eq!((first.allocates, second.allocates), (Allocates::New, Allocates::Existing));

    assert_eq!(second.rebase(&claim, "uid-b"), Rebased::NotAllocatedYet, "the first write has not landed");
    claim.allocation = Some(first.allocation.clone());
    claim.reserved_for = vec!["uid-a".into()];
    claim.resource_version = Some("2".into());
    let Rebased::Retry(again) = second.rebase(&claim, "uid-b") else { panic!("a retry") };
    assert_eq!(
        (again.resource_version.as_deref(), again.reserved_for.as_slice()),
        (Some("2"), &["uid-a".to_string()][..])
    );
    claim.reserved_for.push("uid-b".into());
    assert_eq!(second.rebase(&claim, "uid-b"), Rebased::Reserved);
    claim.allocation.as_mut().unwrap().node = "n2".into();
    assert_eq!(second.rebase(&claim, "uid-b"), Rebased::AllocatedOtherwise);
}
