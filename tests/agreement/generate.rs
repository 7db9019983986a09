//! The seeded generator: small fleets with zones, racks, taints and cordons,
//! pods bound there already (some with host ports, anti-affinity and claims),
//! and probe pods that use every feature both schedulers filter on.

use phalanx::sim::synthetic::SplitMix64;

use super::model::*;

pub const APP: &str = "agreement.phalanx.dev/app";
pub const TIER: &str = "agreement.phalanx.dev/tier";
pub const VERSION: &str = "agreement.phalanx.dev/version";
pub const DEDICATED: &str = "agreement.phalanx.dev/dedicated";
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Draws from the simulator's seeded generator, the same on every machine.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64(seed))
    }

    /// In `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.0.below(high - low + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.0.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// The two namespaces of a run: probes live in `own`; `other` carries the
/// [`TEAM`] label that namespace selectors look for.
pub struct RunNamespaces {
    pub own: String,
    pub other: String,
}

const ZONES: [&str; 3] = ["z0", "z1", "z2"];
const APPS: [&str; 3] = ["web", "db", "cache"];

pub fn case(rng: &mut Rng, id: &str, namespaces: &RunNamespaces, probes: usize) -> Case {
    let nodes: Vec<NodeModel> = (0..rng.range(3, 6)).map(|i| node(rng, &format!("{id}-n{i}"))).collect();
    let bound_claims: Vec<BoundClaim> = (0..rng.range(0, 2))
        .map(|i| BoundClaim {
            name: format!("{id}-c{i}"),
            read_write_once_pod: rng.chance(0.4),
            volume_affinity: match rng.range(0, 2) {
                0 => None,
                1 => Some(Requirement {
                    key: HOSTNAME.into(),
                    operator: Operator::In(vec![rng.pick(&nodes).name.clone()]),
                }),
                _ => Some(Requirement { key: ZONE.into(), operator: Operator::In(vec![rng.pick(&ZONES).to_string()]) }),
            },
        })
        .collect();
    let mut bound = Vec::new();
    for i in 0..rng.range(0, 8) {
        let namespace = if rng.chance(0.7) { &namespaces.own } else { &namespaces.other };
        let mut pod = pod(rng, &format!("{id}-b{i}"), namespace);
        pod.node = Some(rng.pick(&nodes).name.clone());
        if rng.chance(0.25) {
            pod.host_ports.push(host_port(rng));
        }
        if rng.chance(0.25) {
            pod.anti_affinity.push(pod_term(rng, namespaces));
        }
        bound.push(pod);
    }
    // Read-write-once-pod claims are held by a bound pod half of the time.
    for claim in bound_claims.iter().filter(|c| c.read_write_once_pod) {
        if rng.chance(0.5)
            && let Some(holder) = bound.iter_mut().find(|p| p.namespace == namespaces.own)
        {
            holder.volumes.push(VolumeUse::Bound(claim.name.clone()));
        }
    }
    let probes = (0..probes).map(|i| probe(rng, &format!("{id}-p{i}"), namespaces, &nodes, &bound_claims)).collect();
    Case { id: id.to_string(), nodes, bound, bound_claims, probes }
}

fn node(rng: &mut Rng, name: &str) -> NodeModel {
    let mut labels = Labels::new();
    labels.insert(HOSTNAME.into(), name.into());
    if rng.chance(0.85) {
        labels.insert(ZONE.into(), rng.pick(&ZONES).to_string());
    }
    if rng.chance(0.6) {
        labels.insert(RACK.into(), format!("r{}", rng.range(0, 3)));
    }
    if rng.chance(0.5) {
        labels.insert(DISK.into(), rng.pick(&["ssd", "hdd"]).to_string());
    }
    let mut taints = Vec::new();
    if rng.chance(0.25) {
        taints.push(Taint {
            key: DEDICATED.into(),
            value: rng.pick(&["gpu", "infer"]).to_string(),
            effect: *rng.pick(&[Effect::NoSchedule, Effect::PreferNoSchedule, Effect::NoExecute]),
        });
    }
    // The node lifecycle controller taints cordoned nodes; the model says so
    // up front, so that both schedulers see the same node whenever they look.
    let unschedulable = rng.chance(0.1);
    if unschedulable {
        taints.push(Taint { key: UNSCHEDULABLE_TAINT.into(), value: String::new(), effect: Effect::NoSchedule });
    }
    NodeModel {
        name: name.into(),
        labels,
        taints,
        unschedulable,
        cpu_milli: rng.range(2, 6) * 1000,
        memory_mi: rng.range(4, 16) * 1024,
        max_pods: if rng.chance(0.1) { 2 } else { 110 },
    }
}

fn pod(rng: &mut Rng, name: &str, namespace: &str) -> PodModel {
    let mut labels = Labels::new();
    if rng.chance(0.85) {
        labels.insert(APP.into(), rng.pick(&APPS).to_string());
    }
    if rng.chance(0.4) {
        labels.insert(TIER.into(), rng.pick(&["a", "b"]).to_string());
    }
    if rng.chance(0.5) {
        labels.insert(VERSION.into(), rng.pick(&["v1", "v2"]).to_string());
    }
    PodModel {
        name: name.into(),
        namespace: namespace.into(),
        labels,
        node: None,
        cpu_milli: rng.range(0, 8) * 250,
        memory_mi: rng.range(0, 8) * 512,
        host_ports: Vec::new(),
        node_selector: Labels::new(),
        node_terms: Vec::new(),
        tolerations: Vec::new(),
        affinity: Vec::new(),
        anti_affinity: Vec::new(),
        spread: Vec::new(),
        volumes: Vec::new(),
    }
}

fn host_port(rng: &mut Rng) -> HostPort {
    HostPort {
        port: *rng.pick(&[8080, 9090]),
        protocol: if rng.chance(0.5) { "TCP" } else { "UDP" },
        host_ip: if rng.chance(0.3) { Some(*rng.pick(&["127.0.0.1", "127.0.0.2"])) } else { None },
    }
}

fn app_selector(rng: &mut Rng) -> Requirements {
    let mut selector = vec![Requirement { key: APP.into(), operator: Operator::In(vec![rng.pick(&APPS).to_string()]) }];
    match rng.range(0, 5) {
        0 => selector.push(Requirement { key: TIER.into(), operator: Operator::Exists }),
        1 => selector.push(Requirement { key: TIER.into(), operator: Operator::NotIn(vec!["b".into()]) }),
        2 => selector[0].operator = Operator::In(vec![APPS[0].into(), APPS[1].into()]),
        _ => {}
    }
    selector
}

fn pod_term(rng: &mut Rng, namespaces: &RunNamespaces) -> PodTerm {
    let scope = match rng.range(0, 5) {
        0 => Namespaces::Listed(vec![namespaces.other.clone()]),
        1 => Namespaces::Listed(vec![namespaces.own.clone(), namespaces.other.clone()]),
        2 => Namespaces::Selected([(TEAM.to_string(), "b".to_string())].into()),
        _ => Namespaces::Own,
    };
    PodTerm {
        selector: app_selector(rng),
        namespaces: scope,
        topology_key: rng.pick(&[HOSTNAME, HOSTNAME, ZONE, RACK]).to_string(),
    }
}

fn probe(
    rng: &mut Rng,
    name: &str,
    namespaces: &RunNamespaces,
    nodes: &[NodeModel],
    bound_claims: &[BoundClaim],
) -> PodModel {
    let mut pod = pod(rng, name, &namespaces.own);
    if rng.chance(0.2) {
        let (key, value) = if rng.chance(0.5) { (DISK, "ssd") } else { (ZONE, *rng.pick(&ZONES)) };
        pod.node_selector.insert(key.into(), value.into());
    }
    if rng.chance(0.3) {
        pod.node_terms = (0..rng.range(1, 2))
            .map(|_| {
                let operator = match rng.range(0, 3) {
                    0 => Operator::In(vec![rng.pick(&ZONES).to_string(), rng.pick(&ZONES).to_string()]),
                    1 => Operator::NotIn(vec![rng.pick(&ZONES).to_string()]),
                    2 => Operator::Exists,
                    _ => Operator::DoesNotExist,
                };
                vec![Requirement { key: rng.pick(&[ZONE, RACK]).to_string(), operator }]
            })
            .collect();
    }
    if rng.chance(0.35) {
        pod.tolerations.push(match rng.range(0, 3) {
            0 => Toleration { key: Some(DEDICATED.into()), value: None, effect: None },
            1 => {
                Toleration { key: Some(DEDICATED.into()), value: Some("gpu".into()), effect: Some(Effect::NoSchedule) }
            }
            2 => Toleration { key: Some(DEDICATED.into()), value: Some("infer".into()), effect: None },
            _ => Toleration { key: Some(UNSCHEDULABLE_TAINT.into()), value: None, effect: Some(Effect::NoSchedule) },
        });
    }
    if rng.chance(0.3) {
        pod.host_ports.push(host_port(rng));
    }
    if rng.chance(0.3) {
        let terms = if rng.chance(0.2) { 2 } else { 1 };
        pod.affinity = (0..terms).map(|_| pod_term(rng, namespaces)).collect();
    }
    if rng.chance(0.3) {
        pod.anti_affinity.push(pod_term(rng, namespaces));
    }
    if rng.chance(0.4) {
        pod.spread = (0..rng.range(1, 2)).map(|_| spread(rng)).collect();
        pod.spread.dedup_by(|a, b| a.topology_key == b.topology_key && a.required == b.required);
    }
    if rng.chance(0.4) {
        pod.volumes.push(volume_use(rng, nodes, bound_claims));
    }
    pod
}

fn spread(rng: &mut Rng) -> Spread {
    // Ignoring node affinity counts nodes outside this case's fleet, so only
    // the keys this test's nodes alone carry are spread over that way.
    let topology_key = rng.pick(&[HOSTNAME, ZONE, ZONE, RACK]).to_string();
    let node_affinity_policy = match rng.range(0, 2) {
        0 if topology_key != HOSTNAME => Some(InclusionPolicy::Ignore),
        1 => Some(InclusionPolicy::Honor),
        _ => None,
    };
    let mut spread = Spread {
        max_skew: rng.range(1, 2) as u32,
        topology_key,
        selector: app_selector(rng),
        match_label_keys: if rng.chance(0.2) { vec![VERSION.into()] } else { Vec::new() },
        min_domains: None,
        node_affinity_policy,
        node_taints_policy: match rng.range(0, 2) {
            0 => Some(InclusionPolicy::Honor),
            1 => Some(InclusionPolicy::Ignore),
            _ => None,
        },
        required: rng.chance(0.8),
    };
    // The API allows minDomains only where the constraint filters.
    if spread.required && rng.chance(0.25) {
        spread.min_domains = Some(rng.range(2, 4) as u32);
    }
    spread
}

fn volume_use(rng: &mut Rng, nodes: &[NodeModel], bound_claims: &[BoundClaim]) -> VolumeUse {
    match rng.range(0, 9) {
        0..=2 if !bound_claims.is_empty() => VolumeUse::Bound(rng.pick(bound_claims).name.clone()),
        3 => VolumeUse::UnboundImmediate,
        0..=6 => VolumeUse::LocalVolumes {
            request_gi: rng.range(1, 4) as u32,
            volumes: (0..rng.range(0, 3))
                .map(|_| LocalVolume { node: rng.pick(nodes).name.clone(), size_gi: rng.range(1, 4) as u32 })
                .collect(),
        },
        _ => VolumeUse::Provisioned {
            request_gi: rng.range(1, 3) as u32,
            allowed_zones: rng.chance(0.5).then(|| vec![rng.pick(&ZONES).to_string()]),
            capacity: rng.chance(0.5).then(|| {
                (0..rng.range(0, 2))
                    .map(|_| ZoneRoom {
                        zone: rng.pick(&ZONES).to_string(),
                        capacity_gi: rng.range(0, 4) as u32,
                        maximum_volume_gi: rng.chance(0.3).then(|| rng.range(1, 3) as u32),
                    })
                    .collect()
            }),
        },
    }
}
