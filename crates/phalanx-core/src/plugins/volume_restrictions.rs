//! ReadWriteOncePod: a claim with that access mode serves one pod in the
//! whole cluster. A pod whose such claim another pod already uses (placed,
//! being bound, or a gang member placed earlier in the pass) fits no node,
//! as kube-scheduler's VolumeRestrictions decides. Evicting that pod makes
//! room, so the verdict reads pods and preemption may help.

use crate::framework::{ClusterFilterPlugin, PreparedFilter, Rejection};
use crate::node::NodeSpec;
use crate::pod::PodInfo;
use crate::snapshot::ClusterSnapshot;
use crate::volume::{AccessMode, VolumeClaimKey};

pub struct VolumeRestrictions;

impl VolumeRestrictions {
    pub const NAME: &'static str = "VolumeRestrictions";
}

/// kube-scheduler's reason, word for word.
pub const READ_WRITE_ONCE_POD_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

/// Whether another pod holds one of the pod's ReadWriteOncePod claims: the
/// same on every node.
struct ClaimInUse;

impl ClusterFilterPlugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>> {
        let namespace = &pod.key.namespace;
        let exclusive: Vec<&String> = pod
            .volume_claims
            .iter()
            .filter(|name| {
                let key = VolumeClaimKey { namespace: namespace.clone(), name: name.to_string() };
                snapshot.volumes().claim(&key).is_some_and(|c| c.access_modes.contains(&AccessMode::ReadWriteOncePod))
            })
            .collect();
        if exclusive.is_empty() {
            return None;
        }
        let in_use = snapshot.placements().any(|(uid, p)| {
            uid != pod.uid && p.key.namespace == *namespace && p.volume_claims.iter().any(|c| exclusive.contains(&c))
        });
        in_use.then(|| Box::new(ClaimInUse) as Box<dyn PreparedFilter>)
    }
}

impl PreparedFilter for ClaimInUse {
    fn filter(&self, _node: &NodeSpec) -> Result<(), Rejection> {
        Err(Rejection::because(READ_WRITE_ONCE_POD_CONFLICT))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;
    use crate::gang::{GangId, GangKind};
    use crate::gang_placement::{GangRequest, place_gang};
    use crate::testing::{gpu_node, gpu_pod, profile_with_defaults};
    use crate::volume::{BindingMode, StorageClass, VolumeClaim, VolumeObject};

    fn exclusive_claim(name: &str) -> VolumeObject {
        VolumeObject::Claim(VolumeClaim {
            key: VolumeClaimKey { namespace: "default".into(), name: name.into() },
            uid: format!("pvc-{name}"),
            resource_version: None,
            storage_class: "local".into(),
            volume_name: None,
            request_bytes: 1 << 30,
            access_modes: BTreeSet::from([AccessMode::ReadWriteOncePod]),
            volume_mode: Default::default(),
            selector: None,
            selected_node: None,
            deleting: false,
        })
    }

    fn user(name: &str, claim: &str) -> PodInfo {
        let mut pod = gpu_pod(name, 1);
        pod.volume_claims = vec![claim.into()];
        pod
    }

    #[test]
    fn a_read_write_once_pod_claim_serves_one_pod_even_within_one_gang() {
        let mut s = ClusterSnapshot::new();
        for n in ["a", "b"] {
            s.upsert_node(gpu_node(n, 8));
        }
        s.volumes_mut().apply(VolumeObject::Class(StorageClass {
            name: "local".into(),
            provisioner: "example.com/local".into(),
            binding_mode: BindingMode::WaitForFirstConsumer,
            allowed_topologies: vec![],
        }));
        s.volumes_mut().apply(exclusive_claim("data"));
        let id = GangId::new(GangKind::PodGroup, "default", "g");
        let members: Vec<PodInfo> =
            ["g-0", "g-1"].iter().map(|n| PodInfo { job: Some(id.clone()), ..user(n, "data") }).collect();
        let request = GangRequest { gang: Some(&id), members: members.iter().collect(), required: 2, within: None };
        let err = place_gang(&profile_with_defaults(), &request, &mut s, &HashSet::new()).unwrap_err();
        assert_eq!(err.placeable, 1, "the first member takes the claim");
        assert!(err.to_string().contains(&format!("2 {READ_WRITE_ONCE_POD_CONFLICT}")), "{err}");

        let one = GangRequest { gang: Some(&id), members: vec![&members[0]], required: 1, within: None };
        place_gang(&profile_with_defaults(), &one, &mut s, &HashSet::new()).unwrap();
        let other = user("other", "data");
        let alone = GangRequest { gang: None, members: vec![&other], required: 1, within: None };
        let err = place_gang(&profile_with_defaults(), &alone, &mut s, &HashSet::new()).unwrap_err();
        assert_eq!(err.to_string(), format!("0/2 nodes are available: 2 {READ_WRITE_ONCE_POD_CONFLICT}."));
        let shared = user("shared", "scratch");
        let free = GangRequest { gang: None, members: vec![&shared], required: 1, within: None };
        assert!(place_gang(&profile_with_defaults(), &free, &mut s, &HashSet::new()).is_err(), "unknown claim waits");
    }
}
