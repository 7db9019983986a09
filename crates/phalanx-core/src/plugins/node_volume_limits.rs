//! Attach limits: a node whose CSINode limits a driver's volumes takes a
//! pod only if the pod's new volumes of that driver, with those attached
//! there already (used by its pods, gang members placed earlier in the
//! pass included, or named by its VolumeAttachments), stay within the
//! limit, as kube-scheduler's NodeVolumeLimits decides. A volume already
//! attached costs nothing more. Evicting pods frees their volumes, so the
//! verdict reads pods and preemption may help.

use std::collections::{BTreeSet, HashMap};

use crate::framework::{ClusterFilterPlugin, PreparedFilter, Rejection};
use crate::node::NodeSpec;
use crate::pod::PodInfo;
use crate::snapshot::ClusterSnapshot;
use crate::volume::{AttachedVolume, VolumeClaimKey, VolumeInventory};

pub struct NodeVolumeLimits;

impl NodeVolumeLimits {
    pub const NAME: &'static str = "NodeVolumeLimits";
}

/// kube-scheduler's reason, word for word.
pub const MAX_VOLUME_COUNT_EXCEEDED: &str = "node(s) exceed max volume count";

struct PreparedLimits<'a> {
    volumes: &'a VolumeInventory,
    /// The pod's volumes of drivers some node limits.
    wanted: BTreeSet<AttachedVolume>,
    /// Those drivers' volumes that placed pods use, by node.
    in_use: HashMap<&'a str, BTreeSet<AttachedVolume>>,
}

fn claim_volumes<'a>(
    volumes: &'a VolumeInventory,
    namespace: &'a str,
    claims: &'a [String],
) -> impl Iterator<Item = AttachedVolume> + 'a {
    claims.iter().filter_map(move |name| {
        volumes.attached_volume(&VolumeClaimKey { namespace: namespace.to_string(), name: name.clone() })
    })
}

impl ClusterFilterPlugin for NodeVolumeLimits {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>> {
        if pod.volume_claims.is_empty() {
            return None;
        }
        let volumes = snapshot.volumes();
        let wanted: BTreeSet<AttachedVolume> = claim_volumes(volumes, &pod.key.namespace, &pod.volume_claims)
            .filter(|v| volumes.limits_driver(&v.driver))
            .collect();
        if wanted.is_empty() {
            return None;
        }
        let drivers: BTreeSet<&str> = wanted.iter().map(|v| v.driver.as_str()).collect();
        let mut in_use: HashMap<&str, BTreeSet<AttachedVolume>> = HashMap::new();
        for (uid, placed) in snapshot.placements() {
            if uid == pod.uid || placed.volume_claims.is_empty() {
                continue;
            }
            let used = claim_volumes(volumes, &placed.key.namespace, &placed.volume_claims)
                .filter(|v| drivers.contains(v.driver.as_str()));
            in_use.entry(placed.node.as_str()).or_default().extend(used);
        }
        Some(Box::new(PreparedLimits { volumes, wanted, in_use }))
    }
}

impl PreparedFilter for PreparedLimits<'_> {
    fn filter(&self, node: &NodeSpec) -> Result<(), Rejection> {
        let Some(limits) = self.volumes.attach_limits(&node.name) else { return Ok(()) };
        let mut attached = self.in_use.get(node.name.as_str()).cloned().unwrap_or_default();
        attached.extend(self.volumes.attachments_on(&node.name));
        for (driver, limit) in limits {
            let of_driver = |v: &&AttachedVolume| v.driver == *driver;
            let new = self.wanted.iter().filter(of_driver).filter(|v| !attached.contains(*v)).count();
            if new > 0 && attached.iter().filter(of_driver).count() + new > *limit as usize {
                return Err(Rejection::because(MAX_VOLUME_COUNT_EXCEEDED));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use super::*;
    use crate::gang::{GangId, GangKind};
    use crate::gang_placement::{GangRequest, place_gang};
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};
    use crate::volume::{
        AccessMode, AttachedSource, BindingMode, CsiNode, PersistentVolume, StorageClass, VolumeAttachment,
        VolumeClaim, VolumeObject, VolumeObjectKey, VolumePhase,
    };

    const DRIVER: &str = "ebs.csi.aws.com";

    fn limit(node: &str, count: u32) -> VolumeObject {
        VolumeObject::CsiNode(CsiNode { node: node.into(), attach_limits: BTreeMap::from([(DRIVER.into(), count)]) })
    }

    fn claim(name: &str, volume: Option<&str>) -> VolumeObject {
        VolumeObject::Claim(VolumeClaim {
            key: VolumeClaimKey { namespace: "default".into(), name: name.into() },
            uid: format!("pvc-{name}"),
            resource_version: None,
            storage_class: "ebs".into(),
            volume_name: volume.map(str::to_string),
            request_bytes: 1 << 30,
            access_modes: BTreeSet::from([AccessMode::ReadWriteMany]),
            volume_mode: Default::default(),
            selector: None,
            selected_node: None,
            deleting: false,
        })
    }

    /// A CSI volume of the driver, and a claim `name` bound to it.
    fn bound(s: &mut ClusterSnapshot, name: &str) {
        s.volumes_mut().apply(VolumeObject::Volume(PersistentVolume {
            name: format!("pv-{name}"),
            resource_version: None,
            storage_class: "ebs".into(),
            capacity_bytes: 1 << 30,
            access_modes: BTreeSet::from([AccessMode::ReadWriteMany]),
            volume_mode: Default::default(),
            node_affinity: vec![],
            claim_ref: None,
            csi: Some(AttachedVolume { driver: DRIVER.into(), handle: format!("vol-{name}") }),
            phase: VolumePhase::Bound,
            labels: BTreeMap::new(),
            deleting: false,
        }));
        s.volumes_mut().apply(claim(name, Some(&format!("pv-{name}"))));
    }

    fn cluster(nodes: &[&str]) -> ClusterSnapshot {
        let mut s = ClusterSnapshot::new();
        for n in nodes {
            s.upsert_node(gpu_node(n, 8));
        }
        s.volumes_mut().apply(VolumeObject::Class(StorageClass {
            name: "ebs".into(),
            provisioner: DRIVER.into(),
            binding_mode: BindingMode::WaitForFirstConsumer,
            allowed_topologies: vec![],
        }));
        s
    }

    fn user(name: &str, claims: &[&str]) -> PodInfo {
        let mut pod = gpu_pod(name, 1);
        pod.volume_claims = claims.iter().map(|c| c.to_string()).collect();
        pod
    }

    /// Places one pod alone: the node, or the whole message.
    fn place(s: &mut ClusterSnapshot, pod: &PodInfo) -> Result<String, String> {
        let request = GangRequest { gang: None, members: vec![pod], required: 1, within: None };
        place_gang(&profile_with_defaults(), &request, s, &HashSet::new())
            .map(|p| p.members[0].node.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_node_takes_new_volumes_up_to_its_limit_and_a_shared_one_costs_nothing() {
        let mut s = cluster(&["n1"]);
        s.volumes_mut().apply(limit("n1", 2));
        for name in ["a", "b", "c"] {
            bound(&mut s, name);
        }
        assert_eq!(place(&mut s, &user("p1", &["a", "b"])), Ok("n1".into()));
        assert_eq!(
            place(&mut s, &user("p2", &["c"])),
            Err(format!("0/1 nodes are available: 1 {MAX_VOLUME_COUNT_EXCEEDED}.")),
            "a third volume of the driver"
        );
        assert_eq!(place(&mut s, &user("p3", &["a"])), Ok("n1".into()), "the same volume again");
        s.volumes_mut().apply(limit("n1", 3));
        assert_eq!(place(&mut s, &user("p2", &["c"])), Ok("n1".into()), "the limit raised");
    }

    #[test]
    fn volume_attachments_and_unprovisioned_claims_count_too() {
        let mut s = cluster(&["n1"]);
        s.volumes_mut().apply(limit("n1", 1));
        bound(&mut s, "a");
        bound(&mut s, "other");
        let attached = VolumeAttachment {
            name: "va-1".into(),
            node: "n1".into(),
            driver: DRIVER.into(),
            source: AttachedSource::Volume("pv-other".into()),
        };
        s.volumes_mut().apply(VolumeObject::Attachment(attached));
        assert!(place(&mut s, &user("p1", &["a"])).is_err(), "the attached volume fills the node");
        assert_eq!(place(&mut s, &user("p2", &["other"])), Ok("n1".into()), "the attached volume itself fits");
        s.volumes_mut().delete(&VolumeObjectKey::Attachment("va-1".into()));
        s.forget("uid-p2");
        s.volumes_mut().apply(claim("fresh", None));
        assert_eq!(place(&mut s, &user("p3", &["fresh"])), Ok("n1".into()), "a volume to provision");
        assert!(place(&mut s, &user("p1", &["a"])).is_err(), "the claim being provisioned counts");
    }

    #[test]
    fn a_class_of_an_in_tree_plugin_provisions_volumes_of_its_migrated_driver() {
        let mut s = cluster(&["n1"]);
        s.volumes_mut().apply(limit("n1", 1));
        s.volumes_mut().apply(VolumeObject::Class(StorageClass {
            name: "ebs".into(),
            provisioner: "kubernetes.io/aws-ebs".into(),
            binding_mode: BindingMode::WaitForFirstConsumer,
            allowed_topologies: vec![],
        }));
        s.volumes_mut().apply(claim("first", None));
        s.volumes_mut().apply(claim("second", None));
        assert_eq!(place(&mut s, &user("p1", &["first"])), Ok("n1".into()));
        assert!(place(&mut s, &user("p2", &["second"])).is_err(), "both count against ebs.csi.aws.com");
    }

    #[test]
    fn members_placed_earlier_in_the_pass_count_so_a_gang_spreads_over_nodes_with_room() {
        let mut s = cluster(&["n1", "n2"]);
        for n in ["n1", "n2"] {
            s.volumes_mut().apply(limit(n, 1));
        }
        bound(&mut s, "a");
        bound(&mut s, "b");
        let id = GangId::new(GangKind::PodGroup, "default", "g");
        let members: Vec<PodInfo> = [("g-0", "a"), ("g-1", "b")]
            .iter()
            .map(|(n, c)| PodInfo { job: Some(id.clone()), ..user(n, &[c]) })
            .collect();
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 2, within: None };
        let placed = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap();
        let nodes: BTreeSet<&str> = placed.members.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, BTreeSet::from(["n1", "n2"]), "one volume per node");
    }
}
