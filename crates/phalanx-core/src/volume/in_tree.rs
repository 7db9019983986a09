//! In-tree volume plugins whose volumes count as their CSI driver's (CSI
//! migration). kube-scheduler's NodeVolumeLimits translates exactly these
//! five, on nodes that have a CSINode: a PersistentVolume of the plugin
//! counts as the driver's volume, and a class provisioning through the
//! plugin makes the driver's volumes.

/// The in-tree plugin names and the CSI drivers their volumes migrated to.
const MIGRATED: [(&str, &str); 5] = [
    ("kubernetes.io/aws-ebs", "ebs.csi.aws.com"),
    ("kubernetes.io/gce-pd", "pd.csi.storage.gke.io"),
    ("kubernetes.io/azure-disk", "disk.csi.azure.com"),
    ("kubernetes.io/cinder", "cinder.csi.openstack.org"),
    ("kubernetes.io/portworx-volume", "pxd.portworx.com"),
];

/// The CSI driver a provisioner's volumes count as: the driver an in-tree
/// plugin migrated to, else the provisioner itself.
pub fn counted_driver(provisioner: &str) -> &str {
    migrated_driver(provisioner).unwrap_or(provisioner)
}

/// The CSI driver an in-tree plugin's volumes migrated to.
pub fn migrated_driver(plugin: &str) -> Option<&'static str> {
    MIGRATED.iter().find(|(p, _)| *p == plugin).map(|(_, driver)| *driver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrated_plugins_count_as_their_drivers_and_others_as_themselves() {
        assert_eq!(counted_driver("kubernetes.io/aws-ebs"), "ebs.csi.aws.com");
        assert_eq!(counted_driver("ebs.csi.aws.com"), "ebs.csi.aws.com");
        // vSphere is not translated by kube-scheduler 1.37's NodeVolumeLimits.
        assert_eq!(counted_driver("kubernetes.io/vsphere-volume"), "kubernetes.io/vsphere-volume");
        assert_eq!(migrated_driver("kubernetes.io/gce-pd"), Some("pd.csi.storage.gke.io"));
        assert_eq!(migrated_driver("kubernetes.io/azure-file"), None);
    }
}
