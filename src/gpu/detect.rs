//! The IO shell of GPU detection: walks KFD topology nodes and the DRM card behind each
//! node's render minor through a [`SysReader`], and hands the text to `parse`.
//!
//! Reads are kept to what is needed (a few files per node, a few per physical card) and go
//! straight to `sys/class/drm/renderD<minor>` instead of scanning `card*`: detection runs on
//! every start and for every `plan`.

use super::parse::{self, DrmMemory, NodeProps, Visibility};
use super::reader::SysReader;
use super::{Excluded, Gpu, GpuError, Partition, Topology, VisibilityEnv, products};
use std::collections::HashMap;
use std::io;

/// The real location of the topology (`sys/class/kfd/kfd` is a symlink to it).
pub const KFD_TOPOLOGY: &str = "sys/devices/virtual/kfd/kfd/topology";
const KFD_TOPOLOGY_CLASS: &str = "sys/class/kfd/kfd/topology";
const AMDGPU_MODULE: &str = "sys/module/amdgpu";
const DEV_KFD: &str = "dev/kfd";
/// Upper bound on mem_banks / io_links probed per node (a CPX host has 64 io_links).
const MAX_SUBOBJECTS: u32 = 1024;

/// How many numbered sub-objects (`mem_banks/<i>`, `io_links/<i>`) to read: the node's own
/// count when it gives one, else up to the first missing one (bounded).
fn subobjects(count: Option<u32>) -> u32 {
    count.map_or(MAX_SUBOBJECTS, |n| n.min(MAX_SUBOBJECTS))
}

fn is_eperm(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM) || e.kind() == io::ErrorKind::PermissionDenied
}

const NOT_ASSIGNED: &str = "not assigned to this container: its KFD files are unreadable \
                            (EPERM from the GPU device cgroup)";

/// A KFD GPU node that ROCr would enumerate (readable, render node present).
struct Candidate {
    node: u32,
    gpu_id: u32,
    props: NodeProps,
    vram_kfd: u64,
    render_minor: u32,
    /// Index into `cards`.
    card: usize,
}

/// DRM/PCI facts of one physical card, read once per card.
#[derive(Debug, Clone, Default)]
struct Card {
    pci: String,
    /// The card's PCI device directory (relative).
    dir: String,
    mode: Option<String>,
    numa: Option<i32>,
    vram_used: Option<u64>,
    mem: DrmMemory,
}

/// Where the PCI device directory of the card behind a render node is, and its address.
fn locate_card(r: &dyn SysReader, minor: u32, p: &NodeProps) -> (String, String) {
    let link = format!("sys/class/drm/renderD{minor}");
    if let Ok(target) = r.read_link(&link) {
        // `../../devices/pci0000:42/0000:42:01.1/0000:47:00.0/drm/renderD144`: the device is
        // the component before `drm`. Normalise lexically instead of canonicalize().
        let target = target.to_string_lossy();
        let mut parts: Vec<&str> = vec!["sys", "class", "drm"];
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        if parts.len() >= 3 && parts[parts.len() - 2] == "drm" {
            let dev = parts[parts.len() - 3];
            if parse::is_pci_address(dev) {
                return (dev.to_string(), parts[..parts.len() - 2].join("/"));
            }
        }
        // A partition's platform device (`amdgpu_xcp.N`): the card is the PCI function 0 of
        // the node's location.
        let pci = parse::pci_address(p.domain, p.location_id & !7);
        let dir = format!("sys/bus/pci/devices/{pci}");
        return (pci, dir);
    }
    let pci = parse::pci_address(p.domain, p.location_id);
    let dir = format!("sys/bus/pci/devices/{pci}");
    if p.location_id & 7 != 0 && !r.exists(&dir) {
        let pci0 = parse::pci_address(p.domain, p.location_id & !7);
        let dir0 = format!("sys/bus/pci/devices/{pci0}");
        return (pci0, dir0);
    }
    (pci, dir)
}

fn read_u64(r: &dyn SysReader, path: &str) -> Option<u64> {
    r.read(path).ok().as_deref().and_then(parse::sysfs_u64)
}

fn read_card(r: &dyn SysReader, pci: String, dir: &str) -> Card {
    let f = |name: &str| format!("{dir}/{name}");
    // Only discrete boards have these; then the iGPU rule needs no memory totals.
    let discrete_marker = r.exists(&f("mem_info_vram_vendor")) || r.exists(&f("board_info"));
    let (vram_total, gtt_total) = if discrete_marker {
        (None, None)
    } else {
        (
            read_u64(r, &f("mem_info_vram_total")),
            read_u64(r, &f("mem_info_gtt_total")),
        )
    };
    Card {
        mode: r
            .read(&f("current_compute_partition"))
            .ok()
            .as_deref()
            .and_then(parse::compute_partition_mode),
        numa: r
            .read(&f("numa_node"))
            .ok()
            .as_deref()
            .and_then(parse::numa_node),
        vram_used: read_u64(r, &f("mem_info_vram_used")),
        mem: DrmMemory {
            vram_total,
            gtt_total,
            discrete_marker,
        },
        dir: dir.to_string(),
        pci,
    }
}

/// Node directory names, numeric ones only, sorted numerically.
fn node_ids(names: Vec<String>) -> Vec<u32> {
    let mut ids: Vec<u32> = names.iter().filter_map(|n| n.parse().ok()).collect();
    ids.sort_unstable();
    ids
}

/// What reading one node gave.
enum NodeRead {
    Gpu(Box<Candidate>),
    Excluded(String),
}

fn read_node(
    r: &dyn SysReader,
    topo: &str,
    node: u32,
    cards: &mut Vec<Card>,
    card_index: &mut HashMap<(u32, u32), usize>,
) -> NodeRead {
    let dir = format!("{topo}/nodes/{node}");
    let gpu_id = match r.read(&format!("{dir}/gpu_id")) {
        Ok(t) => t.trim().parse::<u32>().ok(),
        Err(e) if is_eperm(&e) => return NodeRead::Excluded(NOT_ASSIGNED.into()),
        Err(_) => None,
    };
    let text = match r.read(&format!("{dir}/properties")) {
        Ok(t) => t,
        Err(e) if is_eperm(&e) => return NodeRead::Excluded(NOT_ASSIGNED.into()),
        Err(e) => {
            return NodeRead::Excluded(format!(
                "its KFD properties file could not be read ({e}); the topology may have \
                 changed during detection"
            ));
        }
    };
    let props = NodeProps::parse(&text);
    if props.is_cpu(gpu_id) {
        return NodeRead::Excluded(format!(
            "CPU node ({} cores), not a GPU",
            props.cpu_cores_count
        ));
    }
    let Some(gpu_id) = gpu_id else {
        return NodeRead::Excluded("its KFD gpu_id file is missing or unreadable".into());
    };
    let Some(render_minor) = props.drm_render_minor else {
        return NodeRead::Excluded(
            "its KFD properties have no drm_render_minor, so it has no render node".into(),
        );
    };
    // One access(2) tells both "absent" (ENOENT) and "not allowed" (EACCES).
    let dev = format!("dev/dri/renderD{render_minor}");
    match r.access_rw(&dev) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return NodeRead::Excluded(format!(
                "not assigned to this container: /{dev} does not exist (pass --device \
                 /dev/dri or --device /{dev})"
            ));
        }
        Err(e) => {
            return NodeRead::Excluded(format!(
                "/{dev} cannot be opened read-write ({e}): add the user to the render and \
                 video groups (docker: --group-add video --group-add render)"
            ));
        }
    }
    // VRAM: the node's own banks (per partition in partition modes). Banks are numbered
    // 0..mem_banks_count; without the count, probing until the first missing one is cheaper
    // than listing the directory.
    let mut vram_kfd = 0u64;
    for b in 0..subobjects(props.mem_banks_count) {
        match r.read(&format!("{dir}/mem_banks/{b}/properties")) {
            Ok(t) => vram_kfd += parse::mem_bank_vram(&t),
            Err(e) if is_eperm(&e) => return NodeRead::Excluded(NOT_ASSIGNED.into()),
            Err(_) => break,
        }
    }
    if vram_kfd == 0 {
        // Kernels before ~2019 printed the VRAM size in local_mem_size.
        vram_kfd = props.local_mem_size;
    }
    let key = props.card_key();
    let card = match card_index.get(&key) {
        Some(&i) => i,
        None => {
            let (pci, card_dir) = locate_card(r, render_minor, &props);
            cards.push(read_card(r, pci, &card_dir));
            card_index.insert(key, cards.len() - 1);
            cards.len() - 1
        }
    };
    NodeRead::Gpu(Box::new(Candidate {
        node,
        gpu_id,
        props,
        vram_kfd,
        render_minor,
        card,
    }))
}

/// Detection over a reader (see [`super::detect`]).
pub fn detect_with(r: &dyn SysReader, vis: &VisibilityEnv) -> Result<Topology, GpuError> {
    let (topo, names) = open_topology(r)?;
    let Nodes {
        cards,
        candidates,
        mut excluded,
    } = read_nodes(r, topo, names);

    // Candidates are what ROCr enumerates, in KFD order: ROCr device i = candidates[i]
    // (iGPUs included: the runtime sees them even though we do not serve on them).
    let uuids: Vec<u64> = candidates.iter().map(|c| c.props.unique_id).collect();
    let visibility = parse::apply_visibility(
        &uuids,
        vis.rocr.as_deref(),
        vis.hip.as_deref(),
        vis.cuda.as_deref(),
    )
    .map_err(GpuError::Visibility)?;

    let mut gpus: Vec<Gpu> = Vec::new();
    let mut gpu_cards: Vec<usize> = Vec::new();
    for (c, v) in candidates.iter().zip(&visibility) {
        let card = &cards[c.card];
        let gfx = parse::gfx_name(c.props.gfx_target_version);
        let index = match served(card, &gfx, v, vis) {
            Served::As(index) => index,
            Served::Not(reason) => {
                excluded.push(Excluded {
                    kfd_node: c.node,
                    reason,
                });
                continue;
            }
        };
        gpus.push(to_gpu(r, c, card, index, gfx));
        gpu_cards.push(c.card);
    }
    let gpus = number_physical(gpus, &gpu_cards);
    excluded.sort_by_key(|e| e.kfd_node);

    let links: HashMap<u32, Option<u32>> = candidates
        .iter()
        .map(|c| (c.node, c.props.io_links_count))
        .collect();
    let xgmi = xgmi_pairs(r, topo, &gpus, &links);
    Ok(Topology {
        gpus,
        excluded,
        xgmi,
    })
}

/// Where the KFD topology is (the real path, else the class symlink) and its node names,
/// once `/dev/kfd` is there and can be opened read-write.
fn open_topology(r: &dyn SysReader) -> Result<(&'static str, Vec<String>), GpuError> {
    let (topo, names) = match r.read_dir(&format!("{KFD_TOPOLOGY}/nodes")) {
        Ok(n) => (KFD_TOPOLOGY, n),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match r.read_dir(&format!("{KFD_TOPOLOGY_CLASS}/nodes")) {
                Ok(n) => (KFD_TOPOLOGY_CLASS, n),
                Err(_) if !r.exists(AMDGPU_MODULE) => return Err(GpuError::NoDriver),
                Err(_) => return Err(GpuError::NoTopology),
            }
        }
        Err(e) => {
            return Err(GpuError::Io {
                path: format!("/{KFD_TOPOLOGY}/nodes"),
                source: e,
            });
        }
    };
    if !r.exists(DEV_KFD) {
        return Err(GpuError::NoKfdDevice);
    }
    if let Err(e) = r.access_rw(DEV_KFD) {
        return Err(GpuError::KfdPermission { source: e });
    }
    Ok((topo, names))
}

/// What reading every KFD node gave: the physical cards, the GPU nodes ROCr would enumerate
/// (in KFD order) and the nodes left out, with why.
struct Nodes {
    cards: Vec<Card>,
    candidates: Vec<Candidate>,
    excluded: Vec<Excluded>,
}

fn read_nodes(r: &dyn SysReader, topo: &str, names: Vec<String>) -> Nodes {
    let mut cards: Vec<Card> = Vec::new();
    let mut card_index: HashMap<(u32, u32), usize> = HashMap::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut excluded: Vec<Excluded> = Vec::new();
    for node in node_ids(names) {
        match read_node(r, topo, node, &mut cards, &mut card_index) {
            NodeRead::Gpu(c) => candidates.push(*c),
            NodeRead::Excluded(reason) => excluded.push(Excluded {
                kfd_node: node,
                reason,
            }),
        }
    }
    Nodes {
        cards,
        candidates,
        excluded,
    }
}

/// Whether a candidate is served.
enum Served {
    /// Under this HIP index.
    As(u32),
    /// Not, for this reason (an `Excluded` one).
    Not(String),
}

/// The HIP index a candidate is served under, or why it is not served: an integrated GPU,
/// or hidden by a visibility variable.
fn served(card: &Card, gfx: &str, v: &Visibility, vis: &VisibilityEnv) -> Served {
    if parse::is_integrated(&card.mem) {
        return Served::Not(format!(
            "integrated GPU ({gfx}, {} VRAM carve-out, {} GTT): not used for serving",
            human_bytes(card.mem.vram_total.unwrap_or(0)),
            human_bytes(card.mem.gtt_total.unwrap_or(0)),
        ));
    }
    match v {
        Visibility::Visible { index } => Served::As(*index),
        Visibility::HiddenByRocr => Served::Not(format!(
            "hidden by ROCR_VISIBLE_DEVICES={:?}",
            vis.rocr.as_deref().unwrap_or("")
        )),
        Visibility::HiddenByHip { index, var } => {
            let value = if *var == "CUDA_VISIBLE_DEVICES" {
                vis.cuda.as_deref()
            } else {
                vis.hip.as_deref()
            };
            Served::Not(format!(
                "hidden by {var}={:?} (its HIP ordinal would be {index})",
                value.unwrap_or("")
            ))
        }
    }
}

/// A served candidate as a [`Gpu`] (its `physical_index` is set later, in HIP order).
fn to_gpu(r: &dyn SysReader, c: &Candidate, card: &Card, index: u32, gfx: String) -> Gpu {
    let partition = match card.mode.as_deref() {
        None | Some("SPX") => None,
        Some(mode) => Some(Partition {
            mode: mode.to_string(),
            index: c.props.location_id & 7,
        }),
    };
    let vram_bytes = if c.vram_kfd > 0 {
        c.vram_kfd
    } else if partition.is_none() {
        // No KFD bank (odd kernel): the card's DRM total, which is per card.
        card.mem
            .vram_total
            .or_else(|| read_u64(r, &format!("{}/mem_info_vram_total", card.dir)))
            .unwrap_or(0)
    } else {
        0
    };
    Gpu {
        index,
        kfd_node: c.node,
        gpu_id: c.gpu_id,
        pci: card.pci.clone(),
        render_minor: c.render_minor,
        gfx,
        device_id: c.props.device_id,
        product: products::product_or_unknown(c.props.device_id),
        vram_bytes,
        vram_used_bytes: card.vram_used,
        compute_units: c.props.compute_units(),
        numa_node: card.numa,
        physical_index: 0,
        partition,
        hive_id: c.props.hive_id,
        unique_id: c.props.unique_id,
    }
}

/// The GPUs in HIP order, physical cards numbered by first appearance in it
/// (`gpu_cards[i]` is the card of `gpus[i]`).
fn number_physical(gpus: Vec<Gpu>, gpu_cards: &[usize]) -> Vec<Gpu> {
    let mut order: Vec<usize> = (0..gpus.len()).collect();
    order.sort_by_key(|&i| gpus[i].index);
    let mut physical: HashMap<usize, u32> = HashMap::new();
    let mut sorted = Vec::with_capacity(gpus.len());
    let mut slots: Vec<Option<Gpu>> = gpus.into_iter().map(Some).collect();
    for i in order {
        let next = physical.len() as u32;
        let phys = *physical.entry(gpu_cards[i]).or_insert(next);
        if let Some(mut g) = slots[i].take() {
            g.physical_index = phys;
            sorted.push(g);
        }
    }
    sorted
}

/// Pairs of GPU indices joined by a direct xGMI io_link (type 11). Links to CPU nodes
/// (xGMI-attached CPUs) and to GPUs not in the list are ignored.
fn xgmi_pairs(
    r: &dyn SysReader,
    topo: &str,
    gpus: &[Gpu],
    links: &HashMap<u32, Option<u32>>,
) -> Vec<(u32, u32)> {
    let by_node: HashMap<u32, u32> = gpus.iter().map(|g| (g.kfd_node, g.index)).collect();
    let mut pairs = Vec::new();
    for g in gpus {
        let count = links.get(&g.kfd_node).copied().flatten();
        for l in 0..subobjects(count) {
            let path = format!("{topo}/nodes/{}/io_links/{l}/properties", g.kfd_node);
            let Ok(text) = r.read(&path) else {
                break;
            };
            if let Some(&other) = parse::xgmi_link_target(&text).and_then(|to| by_node.get(&to))
                && other != g.index
            {
                pairs.push((g.index.min(other), g.index.max(other)));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// `123.4 GiB` style sizes for messages and the text table.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// See [`super::read_vram_used`].
pub fn read_vram_used_with(r: &dyn SysReader, render_minors: &[u32]) -> Vec<Option<u64>> {
    render_minors
        .iter()
        .map(|&m| {
            let direct = read_u64(
                r,
                &format!("sys/class/drm/renderD{m}/device/mem_info_vram_used"),
            );
            if direct.is_some() {
                return direct;
            }
            // A partition's render node sits on a platform device without mem_info files:
            // find its KFD node to get the card's PCI address.
            let props = find_node_by_minor(r, m)?;
            let (_, dir) = locate_card(r, m, &props);
            read_u64(r, &format!("{dir}/mem_info_vram_used"))
        })
        .collect()
}

/// `gpu_busy_percent` of each render minor (the card's, for a partition's render node), None
/// where the kernel does not expose it.
pub fn read_busy_percent_with(r: &dyn SysReader, render_minors: &[u32]) -> Vec<Option<u32>> {
    render_minors
        .iter()
        .map(|&m| {
            let direct = read_u64(
                r,
                &format!("sys/class/drm/renderD{m}/device/gpu_busy_percent"),
            );
            let v = match direct {
                Some(v) => Some(v),
                None => {
                    let props = find_node_by_minor(r, m)?;
                    let (_, dir) = locate_card(r, m, &props);
                    read_u64(r, &format!("{dir}/gpu_busy_percent"))
                }
            };
            v.and_then(|v| u32::try_from(v).ok())
        })
        .collect()
}

/// The PCI device directory (relative) of the card behind render node `minor`: the render
/// node's own `device` when it is the PCI function (it has a `vendor` file), else (a
/// partition's `amdgpu_xcp.N` platform device) the card found through its KFD node. None
/// when neither exists: no such GPU, or it is gone.
pub(super) fn card_dir(r: &dyn SysReader, minor: u32) -> Option<String> {
    let direct = format!("sys/class/drm/renderD{minor}/device");
    if r.exists(&format!("{direct}/vendor")) {
        return Some(direct);
    }
    let props = find_node_by_minor(r, minor)?;
    let (_, dir) = locate_card(r, minor, &props);
    r.exists(&dir).then_some(dir)
}

fn find_node_by_minor(r: &dyn SysReader, minor: u32) -> Option<NodeProps> {
    let names = r.read_dir(&format!("{KFD_TOPOLOGY}/nodes")).ok()?;
    node_ids(names).into_iter().find_map(|n| {
        let text = r
            .read(&format!("{KFD_TOPOLOGY}/nodes/{n}/properties"))
            .ok()?;
        let p = NodeProps::parse(&text);
        (p.drm_render_minor == Some(minor)).then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{FsReader, ScenarioReader};
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sysfs")
            .join(name)
    }

    fn json(path: PathBuf) -> serde_json::Value {
        let text = std::fs::read_to_string(&path).expect("fixture json");
        serde_json::from_str(&text).expect("valid json")
    }

    /// Every fact the fixture's expected.json states about its GPUs.
    fn assert_matches_expected(name: &str, topo: &Topology) {
        let exp = json(fixture(name).join("expected.json"));
        let want: Vec<&serde_json::Value> = exp["gpus"]
            .as_array()
            .expect("gpus")
            .iter()
            .filter(|g| g["integrated"] != serde_json::Value::Bool(true))
            .collect();
        assert_eq!(topo.gpus.len(), want.len(), "{name}: {topo:#?}");
        for (g, w) in topo.gpus.iter().zip(want) {
            assert_eq!(
                u64::from(g.kfd_node),
                w["kfd_node"].as_u64().expect("kfd_node")
            );
            assert_eq!(g.pci, w["bdf"].as_str().expect("bdf"));
            assert_eq!(
                u64::from(g.render_minor),
                w["render_minor"].as_u64().expect("minor")
            );
            assert_eq!(g.gfx, w["gfx"].as_str().expect("gfx"));
            assert_eq!(
                format!("0x{:04x}", g.device_id),
                w["device_id"].as_str().expect("id")
            );
            assert_eq!(g.vram_bytes, w["vram_bytes"].as_u64().expect("vram"));
            assert_eq!(u64::from(g.compute_units), w["cu"].as_u64().expect("cu"));
            if let Some(numa) = w["numa"].as_i64() {
                assert_eq!(g.numa_node.map(i64::from), Some(numa));
            }
        }
        let cpus: Vec<u32> = exp["cpu_nodes"]
            .as_array()
            .expect("cpu_nodes")
            .iter()
            .map(|v| v.as_u64().expect("node") as u32)
            .collect();
        for c in &cpus {
            let e = topo
                .excluded
                .iter()
                .find(|e| e.kfd_node == *c)
                .expect("cpu excluded");
            assert!(e.reason.contains("CPU node"), "{}", e.reason);
        }
        let physical = topo
            .gpus
            .iter()
            .map(|g| g.physical_index)
            .max()
            .map_or(0, |m| m + 1);
        let integrated = exp["gpus"]
            .as_array()
            .expect("gpus")
            .iter()
            .filter(|g| g["integrated"] == serde_json::Value::Bool(true))
            .count() as u32;
        assert_eq!(
            u64::from(physical + integrated),
            exp["physical_gpus"].as_u64().expect("n")
        );
        assert_eq!(
            !topo.xgmi.is_empty(),
            exp["xgmi_hive"].as_bool().expect("xgmi_hive")
        );
    }

    #[test]
    fn mi300x_spx_fixture_matches_expected() {
        let root = fixture("mi300x-8gpu-spx");
        let topo = detect_with(&FsReader::new(&root), &VisibilityEnv::default()).expect("detect");
        assert_matches_expected("mi300x-8gpu-spx", &topo);
        let idx: Vec<u32> = topo.gpus.iter().map(|g| g.index).collect();
        assert_eq!(
            idx,
            (0..8).collect::<Vec<_>>(),
            "HIP ordinal i = KFD node i+2"
        );
        assert!(
            topo.gpus
                .iter()
                .all(|g| g.product == "MI300X" && g.partition.is_none())
        );
        assert_eq!(topo.gpus[0].gpu_id, 28851);
        assert_eq!(topo.gpus[0].vram_used_bytes, Some(297771008));
        // One hive of 8 fully connected GPUs: 28 pairs.
        assert_eq!(topo.xgmi.len(), 28);
        assert_eq!(topo.excluded.len(), 2);
    }

    #[test]
    fn rx7900_fixture_excludes_the_igpu() {
        let root = fixture("rx7900xtx-raphael-igpu");
        let topo = detect_with(&FsReader::new(&root), &VisibilityEnv::default()).expect("detect");
        assert_matches_expected("rx7900xtx-raphael-igpu", &topo);
        assert_eq!(topo.gpus[0].index, 0);
        let igpu = topo
            .excluded
            .iter()
            .find(|e| e.kfd_node == 2)
            .expect("igpu listed");
        assert!(
            igpu.reason.contains("integrated GPU (gfx1036"),
            "{}",
            igpu.reason
        );
    }

    #[test]
    fn container_one_gpu_scenario() {
        let root = fixture("mi300x-8gpu-spx");
        let sc = json(root.join("scenarios/container-one-gpu.json"));
        let list = |k: &str| -> std::collections::HashSet<String> {
            sc[k]
                .as_array()
                .expect(k)
                .iter()
                .map(|v| v.as_str().expect("str").trim_start_matches('/').to_string())
                .collect()
        };
        let mut r = ScenarioReader::new(FsReader::new(&root));
        r.eperm = list("eperm_on_read");
        r.dev_present = Some(list("dev_present"));
        let topo = detect_with(&r, &VisibilityEnv::default()).expect("detect");
        let exp = &sc["expected"];
        assert_eq!(
            topo.gpus.len() as u64,
            exp["visible_gpus"].as_u64().expect("n")
        );
        let g = &topo.gpus[0];
        assert_eq!(g.index, 0);
        assert_eq!(
            u64::from(g.kfd_node),
            exp["hip_ordinal_0_kfd_node"].as_u64().expect("k")
        );
        assert_eq!(g.pci, exp["bdf"].as_str().expect("bdf"));
        assert_eq!(g.vram_bytes, exp["vram_bytes"].as_u64().expect("vram"));
        let not_assigned: Vec<u32> = topo
            .excluded
            .iter()
            .filter(|e| e.reason.contains("EPERM"))
            .map(|e| e.kfd_node)
            .collect();
        assert_eq!(not_assigned, vec![2, 3, 5, 6, 7, 8, 9]);
        assert!(topo.xgmi.is_empty());
    }
}

/// Detection over trees from the fixture builder: layouts the committed fixtures lack.
#[cfg(test)]
mod built {
    use super::*;
    use crate::gpu::builder::{self, Card, Host, Xgmi};
    use crate::gpu::{FsReader, ScenarioReader};
    use std::path::Path;

    fn tree(h: &Host) -> (tempfile::TempDir, Vec<builder::Node>) {
        let dir = builder::scratch_dir().expect("tempdir");
        let nodes = builder::build(dir.path(), h).expect("build tree");
        (dir, nodes)
    }

    fn run(root: &Path) -> Topology {
        detect_with(&FsReader::new(root), &VisibilityEnv::default()).expect("detect")
    }

    #[test]
    fn mi300x_cpx_64_partitions_grouped_by_card() {
        let (dir, nodes) = tree(&Host::mi300x_8(true));
        assert_eq!(nodes.len(), 64);
        let t = run(dir.path());
        assert_eq!(t.gpus.len(), 64);
        let buses = ["05", "27", "47", "65", "85", "a7", "c7", "e5"];
        for (i, g) in t.gpus.iter().enumerate() {
            let (card, part) = (i / 8, (i % 8) as u32);
            assert_eq!(g.index, i as u32);
            assert_eq!(g.kfd_node, 2 + i as u32);
            assert_eq!(g.physical_index, card as u32);
            assert_eq!(
                g.pci,
                format!("0000:{}:00.0", buses[card]),
                "all partitions: the card"
            );
            assert_eq!(g.render_minor, 128 + 8 * card as u32 + part);
            assert_eq!(
                g.partition,
                Some(Partition {
                    mode: "CPX".into(),
                    index: part
                })
            );
            assert_eq!(g.vram_bytes, 206141652992 / 8, "per-partition KFD bank");
            assert_eq!(g.compute_units, 38);
            assert_eq!(g.vram_used_bytes, Some(297771008), "card-wide DRM value");
        }
        assert_eq!(t.xgmi.len(), 64 * 63 / 2);
    }

    #[test]
    fn mi300x_cpx_63_nodes_counts_nodes_not_cards_times_partitions() {
        let (dir, nodes) = tree(&Host::mi300x_cpx_63());
        assert_eq!(nodes.len(), 63);
        let t = run(dir.path());
        assert_eq!(t.gpus.len(), 63);
        let last_card: Vec<u32> = t
            .gpus
            .iter()
            .filter(|g| g.physical_index == 7)
            .map(|g| g.partition.as_ref().map_or(99, |p| p.index))
            .collect();
        assert_eq!(last_card, (0..7).collect::<Vec<_>>());
        assert_eq!(t.gpus.last().map(|g| g.kfd_node), Some(64));
    }

    #[test]
    fn mi250x_gcds_are_separate_gpus_in_kfd_order() {
        let h = Host::mi250x_4();
        let (dir, _) = tree(&h);
        let t = run(dir.path());
        assert_eq!(t.gpus.len(), 8);
        let pcis: Vec<&str> = t.gpus.iter().map(|g| g.pci.as_str()).collect();
        // HIP order = KFD order (probe order), not PCI bus order.
        assert_eq!(
            pcis,
            [
                "0000:d1:00.0",
                "0000:d6:00.0",
                "0000:c9:00.0",
                "0000:cc:00.0",
                "0000:d9:00.0",
                "0000:dc:00.0",
                "0000:c1:00.0",
                "0000:c6:00.0"
            ]
        );
        let numa: Vec<Option<i32>> = t.gpus.iter().map(|g| g.numa_node).collect();
        assert_eq!(numa, [0, 0, 1, 1, 2, 2, 3, 3].map(Some));
        for (i, g) in t.gpus.iter().enumerate() {
            assert_eq!(g.index, i as u32);
            assert_eq!(g.physical_index, i as u32, "each GCD is its own PCI device");
            assert_eq!(g.gfx, "gfx90a");
            assert_eq!(g.product, "MI250X");
            assert_eq!(g.compute_units, 110);
            assert_eq!(g.vram_bytes, 68702699520);
            assert!(g.partition.is_none());
        }
        // xGMI edges were given between cards (PCI order); translate to HIP indices.
        let hip_of_card = |c: usize| {
            t.gpus
                .iter()
                .position(|g| g.pci == h.cards[c].pci())
                .expect("card present") as u32
        };
        let Xgmi::Cards(pairs) = &h.xgmi else {
            unreachable!("mi250x_4 has card edges")
        };
        let mut want: Vec<(u32, u32)> = pairs
            .iter()
            .map(|&(a, b)| {
                let (x, y) = (hip_of_card(a), hip_of_card(b));
                (x.min(y), x.max(y))
            })
            .collect();
        want.sort_unstable();
        assert_eq!(t.xgmi, want);
    }

    /// The node's `io_links_count` / `mem_banks_count` bound the reads; without them detection
    /// probes until the first missing entry and finds the same links and VRAM.
    #[test]
    fn sub_object_counts_bound_the_reads_and_their_absence_probes() {
        let h = Host::new(vec![
            Card::mi300x(0x05, false, 0),
            Card::mi300x(0x27, false, 1),
            Card::mi300x(0x45, false, 2),
        ]);
        let (dir, nodes) = tree(&h);
        let root = dir.path();
        let full = run(root);
        assert_eq!(full.xgmi, vec![(0, 1), (0, 2), (1, 2)]);
        let props = |n: &builder::Node| {
            root.join(format!("{}/nodes/{}/properties", builder::KFD, n.kfd_node))
        };
        // No counts: the same topology, found by probing.
        for n in &nodes {
            let text = std::fs::read_to_string(props(n)).expect("read");
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("io_links_count") && !l.starts_with("mem_banks_count"))
                .collect();
            std::fs::write(props(n), kept.join("\n")).expect("write");
        }
        let probed = run(root);
        assert_eq!(probed.xgmi, full.xgmi);
        let vram = |t: &Topology| t.gpus.iter().map(|g| g.vram_bytes).collect::<Vec<_>>();
        assert_eq!(vram(&probed), vram(&full));
        // A count of 0 is trusted: no link is read, so no xGMI pair although the files exist.
        for n in &nodes {
            let text = std::fs::read_to_string(props(n)).expect("read");
            std::fs::write(props(n), format!("{text}\nio_links_count 0\n")).expect("write");
        }
        assert!(run(root).xgmi.is_empty());
    }

    #[test]
    fn missing_extra_and_reordered_keys_and_missing_files() {
        let mut h = Host::new(vec![
            Card::mi300x(0x05, false, 0),
            Card::mi300x(0x27, false, 1),
        ]);
        h.xgmi = Xgmi::None;
        let (dir, nodes) = tree(&h);
        let root = dir.path();
        // Node 2: keys reversed, unknown keys added, optional keys dropped.
        let p2 = root.join(format!("{}/nodes/2/properties", builder::KFD));
        let text = builder::gpu_properties(&h.cards[0], 0, nodes[0].render_minor, 1);
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                ![
                    "num_xcc",
                    "hive_id",
                    "local_mem_size",
                    "simd_per_cu",
                    "unique_id",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect();
        lines.reverse();
        lines.insert(3, "capability2 1");
        lines.insert(5, "sibling_map 1,0,0");
        std::fs::write(&p2, lines.join("\n")).expect("rewrite");
        // Node 3: no mem_banks, no io_links; its card lost numa_node and the partition file.
        let n3 = root.join(format!("{}/nodes/3", builder::KFD));
        std::fs::remove_dir_all(n3.join("mem_banks")).expect("rm");
        std::fs::remove_dir_all(n3.join("io_links")).expect("rm");
        let card = root.join("sys/devices/pci0000:27/0000:27:00.0");
        std::fs::remove_file(card.join("numa_node")).expect("rm");
        std::fs::remove_file(card.join("current_compute_partition")).expect("rm");
        // An extra non-numeric entry in nodes/ is ignored.
        std::fs::create_dir_all(root.join(format!("{}/nodes/README", builder::KFD))).expect("mk");

        let t = run(root);
        assert_eq!(t.gpus.len(), 2, "{t:#?}");
        let (a, b) = (&t.gpus[0], &t.gpus[1]);
        assert_eq!(
            (a.kfd_node, a.gfx.as_str(), a.compute_units),
            (2, "gfx942", 304)
        );
        assert_eq!(a.vram_bytes, 206141652992);
        assert_eq!(
            b.vram_bytes, 206141652992,
            "no KFD bank: the card's DRM total"
        );
        assert_eq!(b.numa_node, None);
        assert!(b.partition.is_none());
        assert!(t.xgmi.is_empty());
    }

    #[test]
    fn nodes_are_sorted_numerically_not_by_name() {
        // 12 GPU nodes: "10" and "11" sort before "2" as strings.
        let cards: Vec<Card> = (0..12)
            .map(|i| Card::mi300x(0x10 + i, false, i.into()))
            .collect();
        let mut h = Host::new(cards);
        h.xgmi = Xgmi::None;
        let (dir, _) = tree(&h);
        let t = run(dir.path());
        let nodes: Vec<u32> = t.gpus.iter().map(|g| g.kfd_node).collect();
        assert_eq!(nodes, (2..14).collect::<Vec<_>>());
        let idx: Vec<u32> = t.gpus.iter().map(|g| g.index).collect();
        assert_eq!(idx, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn container_given_one_cpx_partition_finds_its_card() {
        let (dir, _) = tree(&Host::mi300x_8(true));
        let mut r = ScenarioReader::new(FsReader::new(dir.path()));
        // Partition 3 of card 2 (0000:47:00.0): renderD147 on an amdgpu_xcp platform device.
        r.dev_present = Some(["dev/kfd", "dev/dri/renderD147"].map(String::from).into());
        let t = detect_with(&r, &VisibilityEnv::default()).expect("detect");
        assert_eq!(t.gpus.len(), 1);
        let g = &t.gpus[0];
        assert_eq!((g.index, g.kfd_node, g.render_minor), (0, 2 + 19, 147));
        assert_eq!(g.pci, "0000:47:00.0");
        assert_eq!(g.partition.as_ref().map(|p| p.index), Some(3));
        assert_eq!(g.vram_used_bytes, Some(297771008));
        assert_eq!(t.excluded.len(), 2 + 63);
    }

    #[test]
    fn errors_for_missing_kfd_device_driver_and_topology() {
        let mut h = Host::mi300x_8(false);
        h.dev_kfd = false;
        let (dir, _) = tree(&h);
        let err = detect_with(&FsReader::new(dir.path()), &VisibilityEnv::default())
            .expect_err("no /dev/kfd");
        assert!(matches!(err, GpuError::NoKfdDevice));
        let msg = err.to_string();
        assert!(msg.contains("--device /dev/kfd --device /dev/dri"), "{msg}");
        assert!(
            msg.contains("--group-add video --group-add render"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), crate::exit::NO_FIT);

        h.dev_kfd = true;
        h.kfd_topology = false;
        let (dir, _) = tree(&h);
        let err = detect_with(&FsReader::new(dir.path()), &VisibilityEnv::default())
            .expect_err("no topology");
        assert!(matches!(err, GpuError::NoTopology), "{err}");
        h.amdgpu_module = false;
        let (dir, _) = tree(&h);
        let err = detect_with(&FsReader::new(dir.path()), &VisibilityEnv::default())
            .expect_err("no driver");
        assert!(matches!(err, GpuError::NoDriver), "{err}");
        assert_eq!(err.exit_code(), crate::exit::NO_FIT);
    }

    #[test]
    fn permission_denied_on_device_nodes() {
        let (dir, _) = tree(&Host::mi300x_8(false));
        let mut r = ScenarioReader::new(FsReader::new(dir.path()));
        r.eacces.insert("dev/kfd".into());
        let err = detect_with(&r, &VisibilityEnv::default()).expect_err("EACCES");
        assert!(err.to_string().contains("render group"), "{err}");
        r.eacces = ["dev/dri/renderD136".to_string()].into();
        let t = detect_with(&r, &VisibilityEnv::default()).expect("detect");
        assert_eq!(t.gpus.len(), 7);
        let e = t
            .excluded
            .iter()
            .find(|e| e.kfd_node == 3)
            .expect("node 3 excluded");
        assert!(e.reason.contains("--group-add render"), "{}", e.reason);
        // The node is not one ROCr can open, so the next GPU takes ordinal 1.
        assert_eq!(t.gpus[1].kfd_node, 4);
        assert_eq!(t.gpus[1].index, 1);
    }

    #[test]
    fn visibility_env_filters_and_keeps_rocr_ordinals() {
        let (dir, _) = tree(&Host::mi300x_8(false));
        let r = FsReader::new(dir.path());
        let env = |rocr: Option<&str>, hip: Option<&str>, cuda: Option<&str>| VisibilityEnv {
            rocr: rocr.map(String::from),
            hip: hip.map(String::from),
            cuda: cuda.map(String::from),
        };
        let t = detect_with(&r, &env(None, Some("2,5"), None)).expect("hip");
        let got: Vec<(u32, u32)> = t.gpus.iter().map(|g| (g.index, g.kfd_node)).collect();
        assert_eq!(got, [(2, 4), (5, 7)]);
        assert!(
            t.excluded
                .iter()
                .any(|e| e.reason.contains("HIP_VISIBLE_DEVICES"))
        );

        // ROCR by UUID of card 6 (unique_id = base + 6), then HIP index 0 into that.
        let uuid = format!("GPU-{:016x}", 0x1000_0000_0000_0006u64);
        let t = detect_with(&r, &env(Some(&uuid), Some("0"), Some("0"))).expect("rocr");
        let got: Vec<(u32, u32)> = t.gpus.iter().map(|g| (g.index, g.kfd_node)).collect();
        assert_eq!(got, [(0, 8)]);

        let err = detect_with(&r, &env(None, Some("0,1"), Some("0"))).expect_err("mismatch");
        assert!(err.to_string().contains("Inconsistent"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn read_vram_used_for_pci_and_partition_render_nodes() {
        let mut h = Host::mi300x_8(true);
        h.xgmi = Xgmi::None;
        h.cards[1].drm_vram_used = 777;
        let (dir, _) = tree(&h);
        let got = crate::gpu::read_vram_used(dir.path(), &[128, 137, 250]);
        assert_eq!(got, vec![Some(297771008), Some(777), None]);
    }
}
