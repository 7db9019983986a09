//! Persistent volumes: a node must reach every bound volume of the pod, and
//! have an available volume (or a class that provisions there) for every
//! claim that waits for its first consumer, as kube-scheduler's
//! VolumeBinding decides. Volumes chosen for gang members placed earlier
//! in the pass are assumed, so no two members take the same one.

use crate::framework::{ClusterFilterPlugin, PreparedFilter, Rejection};
use crate::node::NodeSpec;
use crate::pod::PodInfo;
use crate::snapshot::ClusterSnapshot;
use crate::volume::{VolumeInventory, VolumeMisfit};

pub struct VolumeBinding;

impl VolumeBinding {
    pub const NAME: &'static str = "VolumeBinding";
}

struct PreparedVolumes<'a> {
    pod: &'a PodInfo,
    volumes: &'a VolumeInventory,
    /// What fails on every node alike (a missing claim, an unbound
    /// immediate one).
    everywhere: Option<VolumeMisfit>,
}

impl ClusterFilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare<'a>(&self, pod: &'a PodInfo, snapshot: &'a ClusterSnapshot) -> Option<Box<dyn PreparedFilter + 'a>> {
        if pod.volume_claims.is_empty() {
            return None;
        }
        let volumes = snapshot.volumes();
        let everywhere = volumes.check_claims(pod).err();
        Some(Box::new(PreparedVolumes { pod, volumes, everywhere }))
    }

    fn reads_pods(&self) -> bool {
        false
    }
}

impl PreparedFilter for PreparedVolumes<'_> {
    fn filter(&self, node: &NodeSpec) -> Result<(), Rejection> {
        if let Some(misfit) = &self.everywhere {
            return Err(Rejection::because(misfit.to_string()));
        }
        self.volumes.fit(self.pod, node).map(|_| ()).map_err(|misfit| Rejection::because(misfit.to_string()))
    }
}
