//! The model as API objects (JSON), as a user would write them.

use serde_json::{Value, json};

use super::model::*;

/// Marks every object of the test, so that the end of the run finds them.
pub const OWNER: &str = "agreement.phalanx.dev/run";
/// The node label probes are pinned to: the fleet of the case being run.
pub const CASE: &str = "agreement.phalanx.dev/case";
const KWOK: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// Provisions nothing: a claim of its class waits with the node chosen.
pub const PROVISIONER: &str = "provisions-nothing.agreement.phalanx.dev";

pub fn node(node: &NodeModel, case: &str, run: &str) -> Value {
    let mut labels = node.labels.clone();
    labels.insert(CASE.into(), case.into());
    labels.insert(OWNER.into(), run.into());
    let taints: Vec<Value> =
        node.taints.iter().map(|t| json!({"key": t.key, "value": t.value, "effect": effect(t.effect)})).collect();
    let resources = json!({"cpu": format!("{}m", node.cpu_milli), "memory": format!("{}Mi", node.memory_mi), "pods": node.max_pods.to_string()});
    json!({
        "metadata": {"name": node.name, "labels": labels, "annotations": {KWOK.0: KWOK.1}},
        "spec": {"taints": taints, "unschedulable": node.unschedulable},
        "status": {"capacity": resources, "allocatable": resources}
    })
}

fn effect(effect: Effect) -> &'static str {
    match effect {
        Effect::NoSchedule => "NoSchedule",
        Effect::PreferNoSchedule => "PreferNoSchedule",
        Effect::NoExecute => "NoExecute",
    }
}

fn requirement(r: &Requirement) -> Value {
    match &r.operator {
        Operator::In(values) => json!({"key": r.key, "operator": "In", "values": values}),
        Operator::NotIn(values) => json!({"key": r.key, "operator": "NotIn", "values": values}),
        Operator::Exists => json!({"key": r.key, "operator": "Exists"}),
        Operator::DoesNotExist => json!({"key": r.key, "operator": "DoesNotExist"}),
    }
}

fn label_selector(requirements: &Requirements) -> Value {
    json!({"matchExpressions": requirements.iter().map(requirement).collect::<Vec<_>>()})
}

fn node_selector_terms(terms: &[Requirements]) -> Value {
    json!({"nodeSelectorTerms": terms.iter().map(|t| json!({"matchExpressions": t.iter().map(requirement).collect::<Vec<_>>()})).collect::<Vec<_>>()})
}

fn pod_term(term: &PodTerm) -> Value {
    let mut value = json!({"labelSelector": label_selector(&term.selector), "topologyKey": term.topology_key});
    match &term.namespaces {
        Namespaces::Own => {}
        Namespaces::Listed(names) => value["namespaces"] = json!(names),
        Namespaces::Selected(labels) => value["namespaceSelector"] = json!({"matchLabels": labels}),
    }
    value
}

fn policy(policy: InclusionPolicy) -> &'static str {
    match policy {
        InclusionPolicy::Honor => "Honor",
        InclusionPolicy::Ignore => "Ignore",
    }
}

fn spread(s: &Spread) -> Value {
    let mut value = json!({
        "maxSkew": s.max_skew,
        "topologyKey": s.topology_key,
        "whenUnsatisfiable": if s.required { "DoNotSchedule" } else { "ScheduleAnyway" },
        "labelSelector": label_selector(&s.selector),
    });
    if !s.match_label_keys.is_empty() {
        value["matchLabelKeys"] = json!(s.match_label_keys);
    }
    if let Some(min) = s.min_domains {
        value["minDomains"] = json!(min);
    }
    for (field, p) in [("nodeAffinityPolicy", s.node_affinity_policy), ("nodeTaintsPolicy", s.node_taints_policy)] {
        if let Some(p) = p {
            value[field] = json!(policy(p));
        }
    }
    value
}

fn toleration(t: &Toleration) -> Value {
    let mut value = json!({});
    if let Some(key) = &t.key {
        value["key"] = json!(key);
    }
    match &t.value {
        Some(v) => {
            value["operator"] = json!("Equal");
            value["value"] = json!(v);
        }
        None => value["operator"] = json!("Exists"),
    }
    if let Some(e) = t.effect {
        value["effect"] = json!(effect(e));
    }
    value
}

/// A pod: bound ones name their node (and tolerate every taint, so that no
/// eviction changes the case under the probes); probes name a scheduler,
/// are pinned to the case's nodes, and use `claims` (the names of their
/// claims, in the order of `volumes`).
pub fn pod(pod: &PodModel, run: &str, case: &str, placement: Placement, claims: &[String]) -> Value {
    let mut labels = pod.labels.clone();
    labels.insert(OWNER.into(), run.into());
    let ports: Vec<Value> = pod
        .host_ports
        .iter()
        .map(|p| {
            let mut port = json!({"containerPort": p.port, "hostPort": p.port, "protocol": p.protocol});
            if let Some(ip) = p.host_ip {
                port["hostIP"] = json!(ip);
            }
            port
        })
        .collect();
    let mut spec = json!({
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "main", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": format!("{}m", pod.cpu_milli), "memory": format!("{}Mi", pod.memory_mi)}},
            "ports": ports,
        }],
        "tolerations": pod.tolerations.iter().map(toleration).collect::<Vec<_>>(),
    });
    let mut node_selector = pod.node_selector.clone();
    match placement {
        Placement::Bound => {
            spec["nodeName"] = json!(pod.node.as_ref().expect("a bound pod has a node"));
            spec["tolerations"] = json!([{"operator": "Exists"}]);
        }
        Placement::Scheduler(name) => {
            spec["schedulerName"] = json!(name);
            node_selector.insert(CASE.into(), case.into());
        }
    }
    spec["nodeSelector"] = json!(node_selector);
    let mut affinity = json!({});
    if !pod.node_terms.is_empty() {
        affinity["nodeAffinity"] =
            json!({"requiredDuringSchedulingIgnoredDuringExecution": node_selector_terms(&pod.node_terms)});
    }
    for (field, terms) in [("podAffinity", &pod.affinity), ("podAntiAffinity", &pod.anti_affinity)] {
        if !terms.is_empty() {
            affinity[field] = json!({"requiredDuringSchedulingIgnoredDuringExecution": terms.iter().map(pod_term).collect::<Vec<_>>()});
        }
    }
    spec["affinity"] = affinity;
    if !pod.spread.is_empty() {
        spec["topologySpreadConstraints"] = json!(pod.spread.iter().map(spread).collect::<Vec<_>>());
    }
    if !claims.is_empty() {
        spec["volumes"] = json!(
            claims
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
                .collect::<Vec<_>>()
        );
    }
    json!({"metadata": {"name": pod.name, "namespace": pod.namespace, "labels": labels}, "spec": spec})
}

#[derive(Clone, Copy)]
pub enum Placement<'a> {
    /// Bound already, to the model's node.
    Bound,
    /// For this scheduler to place.
    Scheduler(&'a str),
}

/// Storage objects, in the order they must be created.
#[derive(Default)]
pub struct Storage {
    pub classes: Vec<Value>,
    /// CSIDrivers, and the CSIStorageCapacities they publish.
    pub drivers: Vec<Value>,
    pub capacities: Vec<Value>,
    pub volumes: Vec<Value>,
    pub claims: Vec<Value>,
}

fn class(name: &str, run: &str, provisioner: &str, binding: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {OWNER: run}}, "provisioner": provisioner, "volumeBindingMode": binding})
}

fn claim(name: &str, run: &str, class: &str, access: &str, gib: u32, volume: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": [access], "storageClassName": class, "resources": {"requests": {"storage": format!("{gib}Gi")}}});
    if let Some(volume) = volume {
        spec["volumeName"] = json!(volume);
    }
    json!({"metadata": {"name": name, "labels": {OWNER: run}}, "spec": spec})
}

fn volume(
    name: &str,
    run: &str,
    class: &str,
    access: &str,
    gib: u32,
    affinity: Option<&Requirement>,
    claim_ref: Option<Value>,
) -> Value {
    let mut spec = json!({
        "capacity": {"storage": format!("{gib}Gi")},
        "accessModes": [access],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": class,
        "local": {"path": "/mnt/disks/agreement"},
    });
    match affinity {
        Some(r) => spec["nodeAffinity"] = json!({"required": node_selector_terms(&[vec![r.clone()]])}),
        // A local volume must name its nodes; one that may go anywhere is a host path.
        None => {
            spec.as_object_mut().expect("an object").remove("local");
            spec["hostPath"] = json!({"path": "/mnt/disks/agreement"});
        }
    }
    if let Some(claim_ref) = claim_ref {
        spec["claimRef"] = claim_ref;
    }
    json!({"metadata": {"name": name, "labels": {OWNER: run}}, "spec": spec})
}

/// The case's bound claims and their volumes (pre-bound to each other, so
/// that the PV controller binds them at once).
pub fn bound_storage(case: &Case, namespace: &str, run: &str) -> Storage {
    let class_name = format!("{}-bound", case.id);
    let mut storage = Storage {
        classes: vec![class(&class_name, run, "kubernetes.io/no-provisioner", "Immediate")],
        ..Default::default()
    };
    for c in &case.bound_claims {
        let access = if c.read_write_once_pod { "ReadWriteOncePod" } else { "ReadWriteOnce" };
        let volume_name = format!("{}-pv", c.name);
        let claim_ref = json!({"namespace": namespace, "name": c.name});
        storage.volumes.push(volume(
            &volume_name,
            run,
            &class_name,
            access,
            1,
            c.volume_affinity.as_ref(),
            Some(claim_ref),
        ));
        storage.claims.push(claim(&c.name, run, &class_name, access, 1, Some(&volume_name)));
    }
    storage
}

/// The storage one probe brings for one scheduler's try (`tag` keeps the
/// two tries apart: a volume one try bound never serves the other), and
/// the names of the probe's claims.
pub fn probe_storage(probe: &PodModel, tag: &str, run: &str) -> (Storage, Vec<String>) {
    let mut storage = Storage::default();
    let mut names = Vec::new();
    for (i, use_) in probe.volumes.iter().enumerate() {
        let name = format!("{}-{tag}-{i}", probe.name);
        match use_ {
            VolumeUse::Bound(claim) => {
                names.push(claim.clone());
                continue;
            }
            VolumeUse::UnboundImmediate => {
                storage.classes.push(class(&name, run, "kubernetes.io/no-provisioner", "Immediate"));
                storage.claims.push(claim(&name, run, &name, "ReadWriteOnce", 1, None));
            }
            VolumeUse::LocalVolumes { request_gi, volumes } => {
                storage.classes.push(class(&name, run, "kubernetes.io/no-provisioner", "WaitForFirstConsumer"));
                for (j, local) in volumes.iter().enumerate() {
                    let on_node =
                        Requirement { key: HOSTNAME.into(), operator: Operator::In(vec![local.node.clone()]) };
                    storage.volumes.push(volume(
                        &format!("{name}-{j}"),
                        run,
                        &name,
                        "ReadWriteOnce",
                        local.size_gi,
                        Some(&on_node),
                        None,
                    ));
                }
                storage.claims.push(claim(&name, run, &name, "ReadWriteOnce", *request_gi, None));
            }
            VolumeUse::Provisioned { request_gi, allowed_zones, capacity } => {
                // A driver of its own when it publishes capacity, so that
                // the other try's CSIDriver is never in the way.
                let driver = format!("{name}.{PROVISIONER}");
                let provisioner = if capacity.is_some() { driver.as_str() } else { PROVISIONER };
                let mut provisioned = class(&name, run, provisioner, "WaitForFirstConsumer");
                if let Some(zones) = allowed_zones {
                    provisioned["allowedTopologies"] =
                        json!([{"matchLabelExpressions": [{"key": ZONE, "values": zones}]}]);
                }
                storage.classes.push(provisioned);
                if let Some(rooms) = capacity {
                    storage.drivers.push(json!({"metadata": {"name": driver, "labels": {OWNER: run}}, "spec": {"storageCapacity": true}}));
                    for (j, room) in rooms.iter().enumerate() {
                        let mut capacity = json!({
                            "metadata": {"name": format!("{name}-{j}"), "labels": {OWNER: run}},
                            "storageClassName": name,
                            "nodeTopology": {"matchLabels": {ZONE: room.zone}},
                            "capacity": format!("{}Gi", room.capacity_gi),
                        });
                        if let Some(largest) = room.maximum_volume_gi {
                            capacity["maximumVolumeSize"] = json!(format!("{largest}Gi"));
                        }
                        storage.capacities.push(capacity);
                    }
                }
                storage.claims.push(claim(&name, run, &name, "ReadWriteOnce", *request_gi, None));
            }
        }
        names.push(name);
    }
    (storage, names)
}
