use super::*;
use crate::dra::claim::{ClaimConfig, ClaimKey, ConfigSource, DeviceConstraint, DeviceRequest, OpaqueConfig};
use crate::dra::device::QualifiedName;
use crate::dra::testing::{GPU_DRIVER, gpu_claim, gpu_device, h100_model, place};

struct Fixture {
    classes: HashMap<String, DeviceClass>,
    selectors: Selectors,
    devices: Vec<Device>,
    taken: HeldDevices,
}

impl Fixture {
    fn new() -> Self {
        let class = DeviceClass {
            name: GPU_DRIVER.into(),
            selectors: vec!["device.driver == 'gpu.nvidia.com'".into()],
            extended_resource_name: None,
            config: vec![],
        };
        let mut selectors = Selectors::default();
        selectors.compile(&class.selectors[0]).unwrap();
        Self {
            classes: HashMap::from([(class.name.clone(), class)]),
            selectors,
            devices: (0..8).map(|i| gpu_device(&format!("gpu-{i}"), i)).collect(),
            taken: HeldDevices::new(),
        }
    }

    fn take(&mut self, names: &[u32]) {
        for i in names {
            self.taken.insert(self.devices[*i as usize].id.clone(), 1);
        }
    }

    fn allocate(&self, claims: &[&DeviceClaim], with_topology: bool) -> Result<Vec<Vec<String>>, AllocationFailure> {
        let model = h100_model();
        let catalog = DeviceCatalog { classes: &self.classes, selectors: &self.selectors, verdicts: None };
        let node = NodeDevices {
            node: "n1",
            devices: &self.devices,
            taken: &self.taken,
            gpu_model: with_topology.then_some(&model),
            free_gpus: 0xff,
        };
        let allocations = allocate_claims(catalog, node, claims)?;
        assert!(allocations.iter().all(|a| a.node == "n1"));
        Ok(allocations.into_iter().map(|a| a.results.into_iter().map(|r| r.device.device).collect()).collect())
    }
}

#[test]
fn two_gpus_take_an_nvlink_pair_over_lower_numbered_loose_ones() {
    let mut fixture = Fixture::new();
    // Left free: 1, 3 (halves of broken pairs) and the pair 4-5; first-fit would take 1 and 3.
    fixture.take(&[0, 2, 6, 7]);
    let claim = gpu_claim("train-0-gpu", GPU_DRIVER, 2);
    assert_eq!(fixture.allocate(&[&claim], true).unwrap(), vec![vec!["gpu-4", "gpu-5"]]);
}

#[test]
fn four_gpus_stay_on_one_socket() {
    let mut fixture = Fixture::new();
    fixture.take(&[0]);
    let claim = gpu_claim("train-0-gpu", GPU_DRIVER, 4);
    assert_eq!(fixture.allocate(&[&claim], true).unwrap(), vec![vec!["gpu-4", "gpu-5", "gpu-6", "gpu-7"]]);
}

#[test]
fn a_pods_claims_do_not_share_devices() {
    let fixture = Fixture::new();
    let a = gpu_claim("a", GPU_DRIVER, 4);
    let b = gpu_claim("b", GPU_DRIVER, 4);
    let got = fixture.allocate(&[&a, &b], true).unwrap();
    let mut all: Vec<&String> = got.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 8);
}

#[test]
fn shortfall_names_claim_class_and_free_count() {
    let mut fixture = Fixture::new();
    fixture.take(&[0, 1, 2, 3, 4, 5]);
    let claim = gpu_claim("train-0-gpu", GPU_DRIVER, 4);
    let err = fixture.allocate(&[&claim], true).unwrap_err();
    assert_eq!(err.to_string(), "claim train-0-gpu needs 4 devices of class gpu.nvidia.com, 2 free");
    assert!(!err.is_bad_input());
}

#[test]
fn match_attribute_keeps_devices_on_one_pcie_root() {
    let mut fixture = Fixture::new();
    // Roots: 0-3 on one, 4-7 on another; three free on each.
    fixture.take(&[0, 4]);
    let mut claim = gpu_claim("train-0-gpu", GPU_DRIVER, 4);
    claim.constraints.push(DeviceConstraint {
        requests: vec![],
        kind: ConstraintKind::MatchAttribute("resource.kubernetes.io/pcieRoot".into()),
    });
    let err = fixture.allocate(&[&claim], false).unwrap_err();
    assert_eq!(err.to_string(), "claim train-0-gpu needs 4 devices of class gpu.nvidia.com on one pcieRoot, 3 free");
    let mut three = gpu_claim("c", GPU_DRIVER, 3);
    three.constraints = claim.constraints.clone();
    let got = fixture.allocate(&[&three], false).unwrap();
    assert_eq!(got, vec![vec!["gpu-1", "gpu-2", "gpu-3"]]);
}

#[test]
fn match_attribute_across_requests_backs_off_to_a_root_with_room_for_both() {
    let mut fixture = Fixture::new();
    // Root 0 has one free device, root 1 has three.
    fixture.take(&[0, 1, 2, 4]);
    let mut claim = gpu_claim("pair", GPU_DRIVER, 1);
    let mut second = claim.requests[0].clone();
    second.name = "more".into();
    if let RequestKind::Exactly(s) = &mut second.kind {
        s.mode = AllocationMode::ExactCount(2);
    }
    claim.requests.push(second);
    claim.constraints.push(DeviceConstraint {
        requests: vec!["gpus".into(), "more".into()],
        kind: ConstraintKind::MatchAttribute("resource.kubernetes.io/pcieRoot".into()),
    });
    let got = fixture.allocate(&[&claim], false).unwrap();
    assert_eq!(got, vec![vec!["gpu-5", "gpu-6", "gpu-7"]]);
}

#[test]
fn distinct_attribute_and_selectors() {
    let mut fixture = Fixture::new();
    for (i, device) in fixture.devices.iter_mut().enumerate() {
        place(device, 0, (i % 2) as u32);
    }
    let mut claim = gpu_claim("spread", GPU_DRIVER, 2);
    claim.constraints.push(DeviceConstraint {
        requests: vec![],
        kind: ConstraintKind::DistinctAttribute("resource.kubernetes.io/numaNode".into()),
    });
    let got = fixture.allocate(&[&claim], false).unwrap();
    assert_eq!(got, vec![vec!["gpu-0", "gpu-1"]]);

    let selector = "device.attributes['gpu.nvidia.com'].uuid in ['GPU-6', 'GPU-7']".to_string();
    fixture.selectors.compile(&selector).unwrap();
    let mut picky = gpu_claim("picky", GPU_DRIVER, 2);
    if let RequestKind::Exactly(s) = &mut picky.requests[0].kind {
        s.selectors.push(selector);
    }
    assert_eq!(fixture.allocate(&[&picky], true).unwrap(), vec![vec!["gpu-6", "gpu-7"]]);
}

#[test]
fn all_mode_and_first_available() {
    let mut fixture = Fixture::new();
    let mut all = gpu_claim("all", GPU_DRIVER, 0);
    if let RequestKind::Exactly(s) = &mut all.requests[0].kind {
        s.mode = AllocationMode::All;
    }
    assert_eq!(fixture.allocate(&[&all], true).unwrap()[0].len(), 8);
    fixture.take(&[3]);
    let err = fixture.allocate(&[&all], true).unwrap_err();
    assert!(err.to_string().contains("needs all devices"), "{err}");

    let selection =
        |n| DeviceSelection { device_class: GPU_DRIVER.into(), selectors: vec![], mode: AllocationMode::ExactCount(n) };
    let flexible = DeviceClaim {
        requests: vec![DeviceRequest {
            name: "gpus".into(),
            kind: RequestKind::FirstAvailable(vec![("eight".into(), selection(8)), ("four".into(), selection(4))]),
        }],
        ..gpu_claim("flexible", GPU_DRIVER, 0)
    };
    let catalog = DeviceCatalog { classes: &fixture.classes, selectors: &fixture.selectors, verdicts: None };
    let node =
        NodeDevices { node: "n1", devices: &fixture.devices, taken: &fixture.taken, gpu_model: None, free_gpus: 0 };
    let allocation = allocate_claims(catalog, node, &[&flexible]).unwrap();
    assert_eq!(allocation[0].results.len(), 4);
    assert!(allocation[0].results.iter().all(|r| r.request == "gpus/four"));
}

#[test]
fn bad_input_is_told_apart_from_shortfall() {
    let fixture = Fixture::new();
    let claim = gpu_claim("c", "no-such-class", 1);
    let err = fixture.allocate(&[&claim], true).unwrap_err();
    assert_eq!(err.to_string(), "claim c: request gpus names DeviceClass no-such-class, which does not exist");
    assert!(err.is_bad_input());
    let mut broken = gpu_claim("d", GPU_DRIVER, 1);
    broken.key = ClaimKey { namespace: "default".into(), name: "d".into() };
    if let RequestKind::Exactly(s) = &mut broken.requests[0].kind {
        s.selectors.push("device.attributes['gpu.nvidia.com'].missing > 1".into());
    }
    let err = fixture.allocate(&[&broken], true).unwrap_err();
    assert!(matches!(err, AllocationFailure::Selector { .. }), "{err}");
}

#[test]
fn an_allocation_passes_on_the_class_config_and_the_claim_config_of_its_requests() {
    let mut fixture = Fixture::new();
    let opaque = |text: &str| OpaqueConfig { driver: GPU_DRIVER.into(), parameters: text.into() };
    fixture.classes.get_mut(GPU_DRIVER).unwrap().config = vec![opaque(r#"{"sharing":"none"}"#)];
    let selection =
        |n| DeviceSelection { device_class: GPU_DRIVER.into(), selectors: vec![], mode: AllocationMode::ExactCount(n) };
    let claim = DeviceClaim {
        requests: vec![
            DeviceRequest { name: "a".into(), kind: RequestKind::Exactly(selection(2)) },
            DeviceRequest {
                name: "b".into(),
                kind: RequestKind::FirstAvailable(vec![("big".into(), selection(16)), ("small".into(), selection(1))]),
            },
        ],
        config: vec![
            ClaimConfig { requests: vec![], opaque: opaque("{}") },
            ClaimConfig { requests: vec!["b".into()], opaque: opaque(r#"{"for":"b"}"#) },
            ClaimConfig { requests: vec!["c".into()], opaque: opaque(r#"{"for":"c"}"#) },
        ],
        ..gpu_claim("mixed", GPU_DRIVER, 0)
    };
    let catalog = DeviceCatalog { classes: &fixture.classes, selectors: &fixture.selectors, verdicts: None };
    let node =
        NodeDevices { node: "n1", devices: &fixture.devices, taken: &fixture.taken, gpu_model: None, free_gpus: 0 };
    let config = allocate_claims(catalog, node, &[&claim]).unwrap().remove(0).config;
    let seen: Vec<(ConfigSource, Vec<&str>, &str)> = config
        .iter()
        .map(|c| (c.source, c.requests.iter().map(String::as_str).collect(), c.opaque.parameters.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            // The class's config once, for both requests drawn from it.
            (ConfigSource::FromClass, vec!["a", "b/small"], r#"{"sharing":"none"}"#),
            (ConfigSource::FromClaim, vec![], "{}"),
            (ConfigSource::FromClaim, vec!["b"], r#"{"for":"b"}"#),
        ]
    );
}

/// Fabric Manager partitions as NVIDIA's driver publishes them, sized 8, 4,
/// 2 and 1, with the pairs deliberately across NVLink pairs (0-2, 1-3, 4-6,
/// 5-7) so that the topology alone would choose otherwise.
fn partitioned(fixture: &mut Fixture) {
    for (i, device) in fixture.devices.iter_mut().enumerate() {
        let i = i as i64;
        for (size, id) in [(8, 0), (4, 1 + i / 4), (2, 10 + (i / 4) * 2 + i % 2), (1, 100 + i)] {
            device
                .attributes
                .insert(QualifiedName::parse(&format!("partition{size}"), GPU_DRIVER), AttributeValue::Int(id));
        }
    }
}

#[test]
fn a_claim_s_gpus_form_exactly_one_fabric_manager_partition_where_the_node_has_them() {
    let mut fixture = Fixture::new();
    // Without partitions, two GPUs take an NVLink pair.
    let claim = gpu_claim("pair", GPU_DRIVER, 2);
    assert_eq!(fixture.allocate(&[&claim], true).unwrap(), vec![vec!["gpu-0", "gpu-1"]]);
    partitioned(&mut fixture);
    let got = fixture.allocate(&[&claim], true).unwrap();
    assert!(
        [["gpu-0", "gpu-2"], ["gpu-1", "gpu-3"], ["gpu-4", "gpu-6"], ["gpu-5", "gpu-7"]].iter().any(|p| got[0] == p),
        "{got:?} is one size-2 partition"
    );
    // Four with GPU 5 taken: only the partition 0-3 is whole.
    fixture.take(&[5]);
    let four = gpu_claim("four", GPU_DRIVER, 4);
    assert_eq!(fixture.allocate(&[&four], true).unwrap(), vec![vec!["gpu-0", "gpu-1", "gpu-2", "gpu-3"]]);
    // No partition has three GPUs.
    let err = fixture.allocate(&[&gpu_claim("three", GPU_DRIVER, 3)], true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "claim three needs 3 devices of class gpu.nvidia.com forming one Fabric Manager partition, 0 free"
    );
    // Two requests of one GPU each must still make one pair.
    let mut split = gpu_claim("split", GPU_DRIVER, 1);
    let mut second = split.requests[0].clone();
    second.name = "more".into();
    split.requests.push(second);
    fixture.take(&[0, 1, 2, 3]);
    let got = fixture.allocate(&[&split], true).unwrap();
    assert!([["gpu-4", "gpu-6"], ["gpu-6", "gpu-4"]].iter().any(|p| got[0] == p), "{got:?} is the pair 4-6");
    // With 6 taken too, no pair is whole.
    fixture.take(&[6]);
    let err = fixture.allocate(&[&split], true).unwrap_err();
    assert!(err.to_string().contains("forming one Fabric Manager partition"), "{err}");
}
