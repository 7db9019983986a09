//! GPU discovery through NVML, the library behind `nvidia-smi`.
//!
//! `nvml-wrapper` opens `libnvidia-ml.so.1` only when `discover` runs, so the
//! agent builds, starts and tests on machines without a driver; there
//! `discover` returns `NvmlError::Load`.
//!
//! The NVML calls are kept thin: they collect per-device records and per-pair
//! facts, and the pure functions below (`pair_link`, `assemble`, ...) turn
//! those into a `GpuTopology`, so the rules are tested without a GPU.

use std::ffi::c_uint;
use std::fs;
use std::path::Path;

use nvml_wrapper::enum_wrappers::device::{P2pCapabilitiesIndex, P2pStatus, TopologyLevel};
use nvml_wrapper::enum_wrappers::nv_link::IntDeviceType;
use nvml_wrapper::error::{NvmlError as RawError, nvml_try};
use nvml_wrapper::{Device, Nvml};

use phalanx_core::topology::model::{GpuDevice, GpuTopology, Link, TopologyError};

/// NVML's upper bound on NVLinks per GPU (`NVML_NVLINK_MAX_LINKS`: 18 on H100).
const MAX_NVLINKS: u32 = 18;

/// CPU mask words asked of `nvmlDeviceGetCpuAffinity`: 64 x 64 bits covers
/// 4096 CPUs, more than any current host.
const AFFINITY_WORDS: usize = 64;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    /// No NVIDIA driver on this host, or not mounted into the container.
    #[error("cannot load the NVML library (libnvidia-ml.so.1): {0}")]
    Load(RawError),
    /// The library loaded but would not initialise (driver not loaded, no
    /// permission on /dev/nvidia*, ...).
    #[error("NVML would not initialise: {0}")]
    Init(RawError),
    #[error("NVML {call} failed: {source}")]
    Call { call: &'static str, source: RawError },
    #[error("NVML {call} failed for GPU {gpu}: {source}")]
    DeviceCall { call: &'static str, gpu: u32, source: RawError },
    #[error("NVML reported an inconsistent topology: {0}")]
    Topology(#[from] TopologyError),
}

/// How far apart two GPUs are on PCIe, as `nvidia-smi topo -m` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcieLevel {
    Pix,
    Pxb,
    Phb,
    Node,
    Sys,
}

impl From<TopologyLevel> for PcieLevel {
    fn from(level: TopologyLevel) -> Self {
        match level {
            // Internal: two GPUs on one board (K80), which nvidia-smi shows as PIX.
            TopologyLevel::Internal | TopologyLevel::Single => PcieLevel::Pix,
            TopologyLevel::Multiple => PcieLevel::Pxb,
            TopologyLevel::HostBridge => PcieLevel::Phb,
            TopologyLevel::Node => PcieLevel::Node,
            TopologyLevel::System => PcieLevel::Sys,
        }
    }
}

impl From<PcieLevel> for Link {
    fn from(level: PcieLevel) -> Self {
        match level {
            PcieLevel::Pix => Link::Pix,
            PcieLevel::Pxb => Link::Pxb,
            PcieLevel::Phb => Link::Phb,
            PcieLevel::Node => Link::Node,
            PcieLevel::Sys => Link::Sys,
        }
    }
}

/// What NVML says about one pair of GPUs, from the first one's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairFacts {
    /// Active NVLinks whose far end is the peer GPU itself.
    pub nvlinks_to_peer: u8,
    /// Active NVLinks into NVSwitches that both GPUs have (the smaller of the
    /// two counts: traffic between them is limited by the thinner side).
    pub nvswitch_links: u8,
    /// Whether NVML reports peer-to-peer over NVLink as OK for the pair.
    pub p2p_nvlink: bool,
    pub pcie: PcieLevel,
}

/// The link `nvidia-smi topo -m` would print for a pair.
pub fn pair_link(facts: &PairFacts) -> Link {
    if facts.nvlinks_to_peer > 0 {
        return Link::NvLink(facts.nvlinks_to_peer);
    }
    // Through an NVSwitch the far end of every link is the switch, so the
    // pair's bandwidth is the GPU's whole NVLink width, provided the fabric
    // actually routes between them (fabric manager up, same partition).
    if facts.nvswitch_links > 0 && facts.p2p_nvlink {
        return Link::NvLink(facts.nvswitch_links);
    }
    facts.pcie.into()
}

/// Builds the topology from per-device records and a function giving the
/// facts for GPUs `i < j` (positions in `gpus`). Each pair is asked once and
/// mirrored, so the matrix is symmetric even if the two sides would disagree.
pub fn assemble<E>(
    gpus: Vec<GpuDevice>,
    mut facts: impl FnMut(usize, usize) -> Result<PairFacts, E>,
) -> Result<GpuTopology, E> {
    let n = gpus.len();
    let mut links = vec![vec![Link::Own; n]; n];
    let pairs = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
    for (i, j) in pairs {
        let link = pair_link(&facts(i, j)?);
        links[i][j] = link;
        links[j][i] = link;
    }
    Ok(GpuTopology { gpus, links, nics: Vec::new() })
}

/// The facts for GPUs `a` and `b`, from their NVLink surveys; `p2p_nvlink`
/// is asked only when both reach NVSwitches, the one case it decides.
pub fn pair_facts<E>(
    a: &NvLinkSurvey,
    b: &NvLinkSurvey,
    b_bus_id: &str,
    p2p_nvlink: impl FnOnce() -> Result<bool, E>,
    pcie: PcieLevel,
) -> Result<PairFacts, E> {
    let nvswitch_links = a.switch_links.min(b.switch_links);
    let p2p_nvlink = nvswitch_links > 0 && p2p_nvlink()?;
    Ok(PairFacts { nvlinks_to_peer: a.links_to(b_bus_id), nvswitch_links, p2p_nvlink, pcie })
}

/// Where one GPU's active NVLinks go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvLinkSurvey {
    /// The PCI bus id (normalised) at the far end of each link to a GPU, once
    /// per link, so a peer reached by two links appears twice.
    pub gpu_ends: Vec<String>,
    pub switch_links: u8,
}

/// What is at the far end of one NVLink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEnd {
    Gpu(String),
    Switch,
    /// An IBM POWER NPU or something NVML cannot name: not a path to a GPU.
    Other,
}

impl NvLinkSurvey {
    pub fn record(&mut self, end: RemoteEnd) {
        match end {
            RemoteEnd::Gpu(bus_id) => self.gpu_ends.push(bus_id),
            RemoteEnd::Switch => self.switch_links = self.switch_links.saturating_add(1),
            RemoteEnd::Other => {}
        }
    }

    /// Active links from this GPU straight to the GPU at `bus_id`.
    pub fn links_to(&self, bus_id: &str) -> u8 {
        let n = self.gpu_ends.iter().filter(|end| *end == bus_id).count();
        u8::try_from(n).unwrap_or(u8::MAX)
    }
}

/// Puts a PCI address in the form sysfs uses (`0000:07:00.0`): NVML prints
/// an eight-digit domain (`00000000:07:00.0`), nvidia-smi upper case.
pub fn normalize_bus_id(bus_id: &str) -> String {
    let bus_id = bus_id.trim().to_ascii_lowercase();
    match bus_id.split_once(':') {
        Some((domain, rest)) => match u32::from_str_radix(domain, 16) {
            Ok(domain) => format!("{domain:04x}:{rest}"),
            Err(_) => bus_id,
        },
        None => bus_id,
    }
}

/// Renders a CPU bitmask (word 0 holds CPUs 0..63) as a Linux CPU list
/// ("0-19,40-59"), the form nvidia-smi prints; `None` for an empty mask.
pub fn cpu_list<W: Copy + Into<u64>>(words: &[W]) -> Option<String> {
    let bits = u64::from(u8::BITS) * std::mem::size_of::<W>() as u64;
    let set = words.iter().enumerate().flat_map(|(w, word)| {
        let word: u64 = (*word).into();
        (0..bits).filter(move |b| word >> b & 1 == 1).map(move |b| w as u64 * bits + b)
    });
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for cpu in set {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    if ranges.is_empty() {
        return None;
    }
    let parts: Vec<String> =
        ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    Some(parts.join(","))
}

/// The NUMA node the kernel assigns the PCI device at `bus_id` (normalised),
/// read from `<sys>/bus/pci/devices/<bus_id>/numa_node`; `None` on single-node
/// hosts (the kernel writes -1) or when the file is missing.
///
/// This is the CPU-side node, which is what CPU and NIC alignment need;
/// `nvmlDeviceGetNumaNodeId` instead names the node of the GPU's own memory
/// on coherent systems (Grace Hopper), hence sysfs.
pub fn sysfs_numa_node(sys: &Path, bus_id: &str) -> Option<u32> {
    let path = sys.join("bus/pci/devices").join(bus_id).join("numa_node");
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads this host's GPUs and their links through NVML.
pub fn discover() -> Result<GpuTopology, NvmlError> {
    let nvml = Nvml::init().map_err(init_error)?;
    let count = nvml.device_count().map_err(|source| NvmlError::Call { call: "nvmlDeviceGetCount", source })?;
    let probed = (0..count).map(|index| probe(&nvml, index)).collect::<Result<Vec<_>, _>>()?;
    let gpus = probed.iter().map(|p| p.record.clone()).collect();
    let topology = assemble(gpus, |i, j| nvml_pair_facts(&nvml, &probed, i, j))?;
    topology.validate()?;
    Ok(topology)
}

/// Sorts `Nvml::init` failures: a library that cannot be opened (or lacks
/// `nvmlInit`) means no driver here, anything else a driver that refused.
fn init_error(source: RawError) -> NvmlError {
    match source {
        RawError::LibloadingError(_) | RawError::FailedToLoadSymbol(_) => NvmlError::Load(source),
        other => NvmlError::Init(other),
    }
}

/// What `discover` learns about one GPU before looking at pairs.
struct Probed {
    record: GpuDevice,
    bus_id: String,
    nvlinks: NvLinkSurvey,
}

fn device_call(call: &'static str, gpu: u32) -> impl FnOnce(RawError) -> NvmlError {
    move |source| NvmlError::DeviceCall { call, gpu, source }
}

fn probe(nvml: &Nvml, index: u32) -> Result<Probed, NvmlError> {
    let device = nvml.device_by_index(index).map_err(device_call("nvmlDeviceGetHandleByIndex", index))?;
    let uuid = device.uuid().map_err(device_call("nvmlDeviceGetUUID", index))?;
    let pci = device.pci_info().map_err(device_call("nvmlDeviceGetPciInfo", index))?;
    let model = device.name().map_err(device_call("nvmlDeviceGetName", index))?;
    let bus_id = normalize_bus_id(&pci.bus_id);
    let record = GpuDevice {
        index,
        uuid: Some(uuid),
        pci_bus_id: Some(bus_id.clone()),
        numa_node: sysfs_numa_node(Path::new("/sys"), &bus_id),
        // Optional extras: some GPUs and platforms answer NotSupported, which
        // should not cost the node its whole topology.
        cpu_affinity: device.cpu_affinity(AFFINITY_WORDS).ok().and_then(|mask| cpu_list(&mask)),
        model: Some(model),
        memory_mib: device.memory_info().ok().map(|m| m.total / MIB),
    };
    let nvlinks = survey_nvlinks(&device, index)?;
    Ok(Probed { record, bus_id, nvlinks })
}

fn survey_nvlinks(device: &Device, index: u32) -> Result<NvLinkSurvey, NvmlError> {
    let mut survey = NvLinkSurvey::default();
    for link in 0..MAX_NVLINKS {
        match device.link_wrapper_for(link).is_active() {
            Ok(true) => survey.record(remote_end(device, link, index)?),
            Ok(false) => {}
            // PCIe-only GPUs answer NotSupported, and GPUs with fewer links
            // than the maximum InvalidArg for the rest: no link there.
            Err(RawError::NotSupported | RawError::InvalidArg) => {}
            Err(source) => return Err(device_call("nvmlDeviceGetNvLinkState", index)(source)),
        }
    }
    Ok(survey)
}

fn remote_end(device: &Device, link: u32, index: u32) -> Result<RemoteEnd, NvmlError> {
    match remote_device_type(device, link) {
        Some(IntDeviceType::Switch) => return Ok(RemoteEnd::Switch),
        Some(IntDeviceType::Ibmnpu) => return Ok(RemoteEnd::Other),
        // A GPU, or a driver that cannot say: the far end's PCI address
        // decides, since only a GPU of this node will match one.
        Some(IntDeviceType::Gpu | IntDeviceType::Unknown) | None => {}
    }
    let pci = device
        .link_wrapper_for(link)
        .remote_pci_info()
        .map_err(device_call("nvmlDeviceGetNvLinkRemotePciInfo", index))?;
    Ok(RemoteEnd::Gpu(normalize_bus_id(&pci.bus_id)))
}

/// `nvmlDeviceGetNvLinkRemoteDeviceType`, called directly: nvml-wrapper
/// 0.13's `NvLink::remote_device_type` passes NVML a pointer to a temporary
/// and so always returns `Unknown`. `None` when the driver lacks the call or
/// it fails.
fn remote_device_type(device: &Device, link: u32) -> Option<IntDeviceType> {
    let call = device.nvml().lib().nvmlDeviceGetNvLinkRemoteDeviceType.as_ref().ok()?;
    let mut raw: c_uint = IntDeviceType::Unknown.as_c();
    // SAFETY: `call` was resolved from the library `device` belongs to, which
    // stays loaded while `device` borrows its `Nvml`; the handle is valid for
    // that long too; `raw` is a live local that NVML writes one enum into.
    let code = unsafe { call(device.handle(), link, &mut raw) };
    nvml_try(code).ok()?;
    IntDeviceType::try_from(raw).ok()
}

fn nvml_pair_facts(nvml: &Nvml, probed: &[Probed], i: usize, j: usize) -> Result<PairFacts, NvmlError> {
    let (a, b) = (&probed[i], &probed[j]);
    let (ia, ib) = (a.record.index, b.record.index);
    pair_facts(&a.nvlinks, &b.nvlinks, &b.bus_id, || p2p_over_nvlink(nvml, ia, ib), pcie_level(nvml, ia, ib)?)
}

fn p2p_over_nvlink(nvml: &Nvml, a: u32, b: u32) -> Result<bool, NvmlError> {
    let (da, db) = (handle(nvml, a)?, handle(nvml, b)?);
    match da.p2p_status(&db, P2pCapabilitiesIndex::NvLink) {
        Ok(status) => Ok(status == P2pStatus::Ok),
        // Drivers too old to answer cannot confirm the route: count it out.
        Err(RawError::NotSupported) => Ok(false),
        Err(source) => Err(device_call("nvmlDeviceGetP2PStatus", a)(source)),
    }
}

fn pcie_level(nvml: &Nvml, a: u32, b: u32) -> Result<PcieLevel, NvmlError> {
    let (da, db) = (handle(nvml, a)?, handle(nvml, b)?);
    match da.topology_common_ancestor(db) {
        Ok(level) => Ok(level.into()),
        // Some VMs hide the PCIe tree; assume the farthest level rather than
        // a closeness nobody reported.
        Err(RawError::NotSupported) => Ok(PcieLevel::Sys),
        Err(source) => Err(device_call("nvmlDeviceGetTopologyCommonAncestor", a)(source)),
    }
}

/// A fresh handle: `Device` is not `Clone` and some calls consume one.
fn handle(nvml: &Nvml, index: u32) -> Result<Device<'_>, NvmlError> {
    nvml.device_by_index(index).map_err(device_call("nvmlDeviceGetHandleByIndex", index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(n: u32) -> Vec<GpuDevice> {
        (0..n).map(|index| GpuDevice { index, ..Default::default() }).collect()
    }

    fn bus(i: usize) -> String {
        format!("0000:{:02x}:00.0", 0x10 + i)
    }

    /// The GPU-to-GPU block of an `nvidia-smi topo -m` fixture.
    fn fixture_matrix(text: &str, n: usize) -> Vec<Vec<Link>> {
        text.lines()
            .filter(|line| line.starts_with("GPU"))
            .map(|line| line.split_whitespace().skip(1).take(n).map(|cell| cell.parse().unwrap()).collect())
            .collect()
    }

    /// Facts as `discover` derives them, from surveys and a PCIe function.
    fn facts_from(
        surveys: &[NvLinkSurvey],
        p2p: impl Fn(usize, usize) -> bool,
        pcie: impl Fn(usize, usize) -> PcieLevel,
    ) -> impl FnMut(usize, usize) -> Result<PairFacts, std::convert::Infallible> {
        move |i, j| {
            let p2p = || Ok(p2p(i, j));
            pair_facts(&surveys[i], &surveys[j], &bus(j), p2p, pcie(i, j))
        }
    }

    fn survey(ends: &[RemoteEnd]) -> NvLinkSurvey {
        let mut s = NvLinkSurvey::default();
        for end in ends {
            s.record(end.clone());
        }
        s
    }

    /// A GPU whose `n` active links all go into NVSwitches.
    fn switched(n: u8) -> NvLinkSurvey {
        let mut s = NvLinkSurvey::default();
        for _ in 0..n {
            s.record(RemoteEnd::Switch);
        }
        s
    }

    #[test]
    fn direct_nvlinks_win_over_everything() {
        let facts = PairFacts { nvlinks_to_peer: 2, nvswitch_links: 12, p2p_nvlink: true, pcie: PcieLevel::Sys };
        assert_eq!(pair_link(&facts), Link::NvLink(2));
    }

    #[test]
    fn nvswitch_counts_the_gpu_links_only_when_p2p_says_ok() {
        let mut facts = PairFacts { nvlinks_to_peer: 0, nvswitch_links: 18, p2p_nvlink: true, pcie: PcieLevel::Node };
        assert_eq!(pair_link(&facts), Link::NvLink(18));
        // Fabric manager down or another partition: only PCIe is left.
        facts.p2p_nvlink = false;
        assert_eq!(pair_link(&facts), Link::Node);
        // p2p alone, with no switch links, is not NVLink either.
        facts.p2p_nvlink = true;
        facts.nvswitch_links = 0;
        assert_eq!(pair_link(&facts), Link::Node);
    }

    #[test]
    fn p2p_is_asked_only_between_nvswitch_gpus() {
        let plain = NvLinkSurvey::default();
        let facts = pair_facts(&plain, &switched(12), &bus(1), || Err("asked"), PcieLevel::Phb);
        assert_eq!(pair_link(&facts.unwrap()), Link::Phb);
        let asked = pair_facts(&switched(12), &switched(12), &bus(1), || Err("asked"), PcieLevel::Phb);
        assert_eq!(asked, Err("asked"));
    }

    #[test]
    fn pcie_levels_map_like_nvidia_smi() {
        let cases = [
            (TopologyLevel::Internal, Link::Pix),
            (TopologyLevel::Single, Link::Pix),
            (TopologyLevel::Multiple, Link::Pxb),
            (TopologyLevel::HostBridge, Link::Phb),
            (TopologyLevel::Node, Link::Node),
            (TopologyLevel::System, Link::Sys),
        ];
        for (level, link) in cases {
            let facts = PairFacts { nvlinks_to_peer: 0, nvswitch_links: 0, p2p_nvlink: false, pcie: level.into() };
            assert_eq!(pair_link(&facts), link, "{level:?}");
        }
    }

    #[test]
    fn nvswitch_box_is_all_nv18() {
        // HGX H100: each GPU has 18 links, all into NVSwitches; two sockets.
        let surveys = vec![switched(18); 8];
        let socket = |i: usize| i / 4;
        let facts = facts_from(
            &surveys,
            |_, _| true,
            |i, j| {
                if socket(i) == socket(j) { PcieLevel::Node } else { PcieLevel::Sys }
            },
        );
        let topo = assemble(gpus(8), facts).unwrap();
        assert_eq!(topo.validate(), Ok(()));
        let expected = fixture_matrix(include_str!("../../tests/fixtures/nvidia-smi-topo/hgx-h100-nvswitch.txt"), 8);
        assert_eq!(topo.links, expected);
    }

    #[test]
    fn nvswitch_pair_uses_the_thinner_side() {
        // One GPU lost two links: the pair gets what that GPU still has,
        // the same number from both sides.
        let mut surveys = vec![switched(12); 2];
        surveys[1] = switched(10);
        let facts = facts_from(&surveys, |_, _| true, |_, _| PcieLevel::Sys);
        let topo = assemble(gpus(2), facts).unwrap();
        assert_eq!(topo.links[0][1], Link::NvLink(10));
        assert_eq!(topo.links[1][0], Link::NvLink(10));
    }

    /// DGX-1 V100 hybrid cube mesh: each GPU's six links, by peer.
    const DGX1_WIRING: [[usize; 6]; 8] = [
        [1, 2, 3, 3, 4, 4],
        [0, 2, 2, 3, 5, 5],
        [0, 1, 1, 3, 3, 6],
        [0, 0, 1, 2, 2, 7],
        [0, 0, 5, 6, 7, 7],
        [1, 1, 4, 6, 6, 7],
        [2, 4, 5, 5, 7, 7],
        [3, 4, 4, 5, 6, 6],
    ];

    #[test]
    fn hybrid_cube_mesh_counts_links_per_peer() {
        let surveys: Vec<NvLinkSurvey> =
            DGX1_WIRING.iter().map(|peers| survey(&peers.map(|p| RemoteEnd::Gpu(bus(p))))).collect();
        // No NVSwitch, so p2p must not matter; unlinked pairs cross sockets.
        let facts = facts_from(&surveys, |_, _| true, |_, _| PcieLevel::Sys);
        let topo = assemble(gpus(8), facts).unwrap();
        assert_eq!(topo.validate(), Ok(()));
        let expected =
            fixture_matrix(include_str!("../../tests/fixtures/nvidia-smi-topo/dgx1-v100-hybrid-cube-mesh.txt"), 8);
        assert_eq!(topo.links, expected);
    }

    #[test]
    fn nvlink_bridge_pairs_fall_back_to_pcie_between_pairs() {
        // 8x A100 PCIe, bridged in pairs with 12 links each.
        let surveys: Vec<NvLinkSurvey> = (0..8).map(|i| survey(&vec![RemoteEnd::Gpu(bus(i ^ 1)); 12])).collect();
        let socket = |i: usize| i / 4;
        let facts = facts_from(
            &surveys,
            |_, _| false,
            |i, j| {
                if socket(i) == socket(j) { PcieLevel::Node } else { PcieLevel::Sys }
            },
        );
        let topo = assemble(gpus(8), facts).unwrap();
        let expected =
            fixture_matrix(include_str!("../../tests/fixtures/nvidia-smi-topo/pcie-a100-nvlink-bridge-pairs.txt"), 8);
        assert_eq!(topo.links, expected);
    }

    #[test]
    fn pcie_box_is_pix_within_a_switch_and_sys_across_sockets() {
        let surveys = vec![NvLinkSurvey::default(); 8];
        let socket = |i: usize| i / 4;
        let facts = facts_from(
            &surveys,
            |_, _| true,
            |i, j| {
                if socket(i) == socket(j) { PcieLevel::Pix } else { PcieLevel::Sys }
            },
        );
        let topo = assemble(gpus(8), facts).unwrap();
        assert_eq!(topo.validate(), Ok(()));
        let expected =
            fixture_matrix(include_str!("../../tests/fixtures/nvidia-smi-topo/pcie-8x-rtx4090-two-sockets.txt"), 8);
        assert_eq!(topo.links, expected);
    }

    #[test]
    fn assemble_asks_each_pair_once_and_stops_at_the_first_error() {
        let mut asked = Vec::new();
        let topo = assemble(gpus(3), |i, j| {
            asked.push((i, j));
            Ok::<_, ()>(PairFacts { nvlinks_to_peer: 0, nvswitch_links: 0, p2p_nvlink: false, pcie: PcieLevel::Phb })
        })
        .unwrap();
        assert_eq!(asked, [(0, 1), (0, 2), (1, 2)]);
        assert_eq!(topo.links[2][2], Link::Own);
        assert_eq!(topo.links[2][0], Link::Phb);
        assert!(topo.nics.is_empty());

        let failed = assemble(gpus(3), |i, j| {
            if (i, j) == (0, 2) {
                Err("boom")
            } else {
                Ok(PairFacts { nvlinks_to_peer: 1, nvswitch_links: 0, p2p_nvlink: false, pcie: PcieLevel::Sys })
            }
        });
        assert_eq!(failed, Err("boom"));
    }

    #[test]
    fn assemble_handles_zero_and_one_gpu() {
        let none = assemble(Vec::new(), |_, _| -> Result<PairFacts, ()> { unreachable!() });
        assert_eq!(none.unwrap(), GpuTopology::default());
        let one = assemble(gpus(1), |_, _| -> Result<PairFacts, ()> { unreachable!() }).unwrap();
        assert_eq!(one.links, vec![vec![Link::Own]]);
    }

    #[test]
    fn survey_counts_gpu_ends_and_switch_links() {
        let s = survey(&[
            RemoteEnd::Gpu(bus(1)),
            RemoteEnd::Gpu(bus(1)),
            RemoteEnd::Gpu(bus(2)),
            RemoteEnd::Switch,
            RemoteEnd::Other,
        ]);
        assert_eq!(s.links_to(&bus(1)), 2);
        assert_eq!(s.links_to(&bus(2)), 1);
        assert_eq!(s.links_to(&bus(3)), 0);
        assert_eq!(s.switch_links, 1);
    }

    #[test]
    fn bus_ids_normalise_to_the_sysfs_form() {
        assert_eq!(normalize_bus_id("00000000:07:00.0"), "0000:07:00.0");
        assert_eq!(normalize_bus_id("00000001:AB:00.0"), "0001:ab:00.0");
        assert_eq!(normalize_bus_id("0000:07:00.0\n"), "0000:07:00.0");
        // Not a domain: left alone rather than guessed at.
        assert_eq!(normalize_bus_id("weird"), "weird");
        assert_eq!(normalize_bus_id("zz:07:00.0"), "zz:07:00.0");
    }

    #[test]
    fn cpu_masks_render_as_cpu_lists() {
        let two_sockets: u64 = 0xF_FFFF | (0xF_FFFF << 40);
        assert_eq!(cpu_list(&[two_sockets]).as_deref(), Some("0-19,40-59"));
        // A range running across a word boundary, and a lone CPU.
        assert_eq!(cpu_list(&[1u64 << 63, 0b1, 0b100]).as_deref(), Some("63-64,130"));
        assert_eq!(cpu_list(&[0u64, 0]), None);
        assert_eq!(cpu_list::<u64>(&[]), None);
        // 32-bit words (c_ulong elsewhere) count 32 CPUs a word.
        assert_eq!(cpu_list(&[0u32, 1]).as_deref(), Some("32"));
    }

    #[test]
    fn numa_node_comes_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let dev = |id: &str, text: &str| {
            let dir = sys.path().join("bus/pci/devices").join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("numa_node"), text).unwrap();
        };
        dev("0000:07:00.0", "1\n");
        dev("0000:08:00.0", "-1\n");
        assert_eq!(sysfs_numa_node(sys.path(), "0000:07:00.0"), Some(1));
        assert_eq!(sysfs_numa_node(sys.path(), "0000:08:00.0"), None);
        assert_eq!(sysfs_numa_node(sys.path(), "0000:09:00.0"), None);
    }

    #[test]
    fn discover_without_a_driver_is_a_clean_error() {
        // This machine has no NVIDIA driver; on one that has, discovery must
        // at least produce a valid topology.
        match std::panic::catch_unwind(discover).expect("discover panicked") {
            Ok(topology) => assert_eq!(topology.validate(), Ok(())),
            Err(err) => {
                assert!(matches!(err, NvmlError::Load(_) | NvmlError::Init(_)), "{err:?}");
                assert!(err.to_string().contains("NVML"), "{err}");
            }
        }
    }
}
