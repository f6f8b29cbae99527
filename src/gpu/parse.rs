//! Pure parsing of the text the kernel prints in KFD and DRM sysfs files, and the pure
//! decisions made on it (gfx name, PCI address, iGPU rule, visibility lists). No IO here:
//! `detect` feeds these functions the strings it read.

/// `key value` lines of a KFD `properties` file. Unknown keys, missing keys, any order and
/// non-integer values (a cache's `sibling_map`) are tolerated: key sets differ between kernel
/// versions, so nothing is required here; callers decide what a missing key means.
#[derive(Debug, Clone, Default)]
pub struct Props<'a> {
    pairs: Vec<(&'a str, u64)>,
}

impl<'a> Props<'a> {
    pub fn parse(text: &'a str) -> Self {
        let pairs = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split_ascii_whitespace();
                let key = it.next()?;
                let value = it.next()?.parse::<u64>().ok()?;
                Some((key, value))
            })
            .collect();
        Props { pairs }
    }

    /// The value of `key` (the last one wins if a key were repeated).
    pub fn get(&self, key: &str) -> Option<u64> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| u32::try_from(v).ok())
    }
}

/// The facts of one KFD topology node (`nodes/N/properties`) that detection uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeProps {
    pub cpu_cores_count: u32,
    pub simd_count: u32,
    /// Absent on very old kernels; then the CU count falls back to the gfx family's value.
    pub simd_per_cu: Option<u32>,
    /// 0 (or absent: pre-2019 kernels) means "no GPU compiler target".
    pub gfx_target_version: u32,
    pub vendor_id: u32,
    pub device_id: u32,
    /// `(bus << 8) | devfn`, OR the partition index in partition modes.
    pub location_id: u32,
    pub domain: u32,
    pub drm_render_minor: Option<u32>,
    pub hive_id: u64,
    pub unique_id: u64,
    pub num_xcc: u32,
    /// Old kernels put the VRAM size here; current ones print 0.
    pub local_mem_size: u64,
    /// How many `mem_banks/<i>` and `io_links/<i>` entries the node has, when the kernel says
    /// (it always has since 2014; absent means "probe until the first missing one").
    pub mem_banks_count: Option<u32>,
    pub io_links_count: Option<u32>,
}

impl NodeProps {
    pub fn parse(text: &str) -> Self {
        let p = Props::parse(text);
        NodeProps {
            cpu_cores_count: p.get_u32("cpu_cores_count").unwrap_or(0),
            simd_count: p.get_u32("simd_count").unwrap_or(0),
            simd_per_cu: p.get_u32("simd_per_cu").filter(|&v| v > 0),
            gfx_target_version: p.get_u32("gfx_target_version").unwrap_or(0),
            vendor_id: p.get_u32("vendor_id").unwrap_or(0),
            device_id: p.get_u32("device_id").unwrap_or(0),
            location_id: p.get_u32("location_id").unwrap_or(0),
            domain: p.get_u32("domain").unwrap_or(0),
            drm_render_minor: p.get_u32("drm_render_minor").filter(|&m| m > 0),
            hive_id: p.get("hive_id").unwrap_or(0),
            unique_id: p.get("unique_id").unwrap_or(0),
            // libhsakmt: num_xcc absent -> 1.
            num_xcc: p.get_u32("num_xcc").filter(|&v| v > 0).unwrap_or(1),
            local_mem_size: p.get("local_mem_size").unwrap_or(0),
            mem_banks_count: p.get_u32("mem_banks_count"),
            io_links_count: p.get_u32("io_links_count"),
        }
    }

    /// A CPU (NUMA) node rather than a GPU: any of the three GPU markers is zero.
    pub fn is_cpu(&self, gpu_id: Option<u32>) -> bool {
        gpu_id == Some(0) || self.simd_count == 0 || self.gfx_target_version == 0
    }

    /// Compute units of this node (of this partition, in partition modes).
    pub fn compute_units(&self) -> u32 {
        // RDNA (gfx10+) has 2 SIMDs per CU, GCN/CDNA 4; only used when the key is missing.
        let per_cu = self
            .simd_per_cu
            .unwrap_or(if self.gfx_target_version >= 100_000 {
                2
            } else {
                4
            });
        self.simd_count / per_cu
    }

    /// Key of the physical card: all compute partitions of one device share the PCI domain
    /// and `location_id >> 3` (the partition index sits in the PCI-function bits).
    pub fn card_key(&self) -> (u32, u32) {
        (self.domain, self.location_id >> 3)
    }
}

/// `gfx_target_version` (major*10000 + minor*100 + stepping, decimal) to the compiler target
/// name: minor and stepping are printed as hex digits (90010 -> gfx90a, 90402 -> gfx942).
pub fn gfx_name(version: u32) -> String {
    let major = version / 10_000;
    let minor = (version / 100) % 100;
    let stepping = version % 100;
    format!("gfx{major}{minor:x}{stepping:x}")
}

/// PCI address `dddd:bb:dd.f` from KFD's `domain` and `location_id`.
pub fn pci_address(domain: u32, location_id: u32) -> String {
    let bus = (location_id >> 8) & 0xff;
    let dev = (location_id >> 3) & 0x1f;
    let func = location_id & 7;
    format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}")
}

/// Whether `name` looks like a PCI address `dddd:bb:dd.f` (the basename of a PCI device
/// directory), as opposed to a platform device such as `amdgpu_xcp.14`.
pub fn is_pci_address(name: &str) -> bool {
    let mut parts = name.split([':', '.']);
    let ok = |s: Option<&str>, len: std::ops::RangeInclusive<usize>| {
        s.is_some_and(|s| len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    ok(parts.next(), 4..=8)
        && ok(parts.next(), 2..=2)
        && ok(parts.next(), 2..=2)
        && ok(parts.next(), 1..=1)
        && parts.next().is_none()
}

/// One `mem_banks/M/properties`: the bytes it adds to the node's VRAM. Heap types 1
/// (FRAME_BUFFER_PUBLIC) and 2 (FRAME_BUFFER_PRIVATE) are VRAM; 0 is system memory.
pub fn mem_bank_vram(text: &str) -> u64 {
    let p = Props::parse(text);
    match p.get("heap_type") {
        Some(1) | Some(2) => p.get("size_in_bytes").unwrap_or(0),
        _ => 0,
    }
}

/// HSA_IOLINKTYPE_XGMI.
pub const IOLINK_TYPE_XGMI: u64 = 11;

/// One `io_links/M/properties`: `Some(node_to)` when it is an xGMI link.
pub fn xgmi_link_target(text: &str) -> Option<u32> {
    let p = Props::parse(text);
    if p.get("type")? != IOLINK_TYPE_XGMI {
        return None;
    }
    p.get_u32("node_to")
}

/// A DRM/PCI sysfs integer: `0x`-prefixed hex (`vendor`, `device`) or decimal
/// (`mem_info_*`, `numa_node`), surrounded by whitespace.
pub fn sysfs_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// `numa_node` of a PCI device; -1 (no NUMA information) becomes None.
pub fn numa_node(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|&n| n >= 0)
}

/// `current_compute_partition` (`SPX`, `DPX`, `TPX`, `QPX`, `CPX`), upper-cased; None when
/// empty.
pub fn compute_partition_mode(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_ascii_uppercase())
}

/// DRM memory facts of a card used by the iGPU rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrmMemory {
    pub vram_total: Option<u64>,
    pub gtt_total: Option<u64>,
    /// `mem_info_vram_vendor` or `board_info` exists: only discrete boards have them.
    pub discrete_marker: bool,
}

const GIB: u64 = 1 << 30;

/// Ollama's current iGPU rule: DRM VRAM <= 4 GiB and GTT >= 8 GiB and GTT >= 4 x VRAM,
/// unless the card has `mem_info_vram_vendor` or `board_info` (only discrete boards do).
/// The KFD memory bank is not used: recent kernels report an APU's GTT there.
pub fn is_integrated(m: &DrmMemory) -> bool {
    if m.discrete_marker {
        return false;
    }
    match (m.vram_total, m.gtt_total) {
        (Some(vram), Some(gtt)) => {
            vram <= 4 * GIB && gtt >= 8 * GIB && gtt >= vram.saturating_mul(4)
        }
        _ => false,
    }
}

/// One entry of a `*_VISIBLE_DEVICES` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef {
    /// An ordinal into the list the layer below exposes.
    Index(usize),
    /// `GPU-<16 hex digits>`: the device's `unique_id`.
    Uuid(u64),
}

/// Parses a comma-separated visibility list such as `0,2` or `GPU-d802d560d4ba851d,1`.
/// An empty value means "no device visible" (as CUDA does); duplicates are an error.
pub fn parse_visible_list(var: &str, value: &str) -> Result<Vec<DeviceRef>, String> {
    let mut out = Vec::new();
    if value.trim().is_empty() {
        return Ok(out);
    }
    for raw in value.split(',') {
        let item = raw.trim();
        let parsed = if let Some(hex) = item
            .strip_prefix("GPU-")
            .or_else(|| item.strip_prefix("gpu-"))
        {
            u64::from_str_radix(hex, 16).ok().map(DeviceRef::Uuid)
        } else {
            item.parse::<usize>().ok().map(DeviceRef::Index)
        };
        let Some(r) = parsed else {
            return Err(format!(
                "{var}={value:?}: {item:?} is neither a device index nor GPU-<16 hex digits>"
            ));
        };
        if out.contains(&r) {
            return Err(format!("{var}={value:?}: {item:?} is listed twice"));
        }
        out.push(r);
    }
    Ok(out)
}

/// Where a runtime-visible device ends up after our own visibility variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Usable; `index` is its ordinal in the list HIP enumerates under ROCR_VISIBLE_DEVICES
    /// (before HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES are applied).
    Visible { index: u32 },
    /// Not listed in ROCR_VISIBLE_DEVICES.
    HiddenByRocr,
    /// Listed by ROCR (or ROCR unset) but not by HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES
    /// (the variable named).
    HiddenByHip { index: u32, var: &'static str },
}

/// Applies ROCR_VISIBLE_DEVICES, then HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES, to the
/// devices ROCr enumerates (`uuids[i]` = `unique_id` of ROCr device i, KFD order).
///
/// ROCR filters (and reorders) first: indices or `GPU-<uuid>` into the ROCr list; the kept
/// devices are renumbered 0.. in the order listed. HIP and CUDA index into that list (they
/// must agree if both are set, as vLLM requires). Out-of-range entries are errors rather
/// than silently dropped: a supervisor must not guess which GPUs were meant.
pub fn apply_visibility(
    uuids: &[u64],
    rocr: Option<&str>,
    hip: Option<&str>,
    cuda: Option<&str>,
) -> Result<Vec<Visibility>, String> {
    // Devices after ROCR: positions into `uuids`, in ROCR's order.
    let after_rocr: Vec<usize> = match rocr {
        None => (0..uuids.len()).collect(),
        Some(value) => rocr_order(uuids, value)?,
    };

    let hip = hip.map(str::trim);
    let cuda = cuda.map(str::trim);
    let (var, list) = match (hip, cuda) {
        (Some(h), Some(c)) if h != c => {
            return Err(format!(
                "Inconsistent GPU visibility env vars: HIP_VISIBLE_DEVICES={h:?} but \
                 CUDA_VISIBLE_DEVICES={c:?}; set only one of them or give both the same value"
            ));
        }
        (Some(h), _) => ("HIP_VISIBLE_DEVICES", Some(h)),
        (None, Some(c)) => ("CUDA_VISIBLE_DEVICES", Some(c)),
        (None, None) => ("HIP_VISIBLE_DEVICES", None),
    };
    let allowed: Option<Vec<usize>> = match list {
        None => None,
        Some(value) => {
            let mut allowed = Vec::new();
            for r in parse_visible_list(var, value)? {
                let pos = match r {
                    DeviceRef::Index(i) if i < after_rocr.len() => i,
                    DeviceRef::Index(i) => {
                        return Err(format!(
                            "{var}={value:?}: index {i} is out of range: {} GPU(s) are \
                             visible{} (indices 0..{})",
                            after_rocr.len(),
                            if rocr.is_some() {
                                " after ROCR_VISIBLE_DEVICES"
                            } else {
                                ""
                            },
                            after_rocr.len().saturating_sub(1)
                        ));
                    }
                    DeviceRef::Uuid(u) => after_rocr
                        .iter()
                        .position(|&d| u != 0 && uuids[d] == u)
                        .ok_or_else(|| {
                            format!("{var}={value:?}: no visible GPU has UUID GPU-{u:016x}")
                        })?,
                };
                if !allowed.contains(&pos) {
                    allowed.push(pos);
                }
            }
            Some(allowed)
        }
    };

    let mut out = vec![Visibility::HiddenByRocr; uuids.len()];
    for (ordinal, &dev) in after_rocr.iter().enumerate() {
        let index = ordinal as u32;
        out[dev] = match &allowed {
            Some(a) if !a.contains(&ordinal) => Visibility::HiddenByHip { index, var },
            _ => Visibility::Visible { index },
        };
    }
    Ok(out)
}

/// ROCR_VISIBLE_DEVICES=`value` applied to the ROCr list (`uuids`): the kept positions, in
/// the order listed (duplicates once).
fn rocr_order(uuids: &[u64], value: &str) -> Result<Vec<usize>, String> {
    let mut kept = Vec::new();
    for r in parse_visible_list("ROCR_VISIBLE_DEVICES", value)? {
        match r {
            DeviceRef::Index(i) if i < uuids.len() => {
                if !kept.contains(&i) {
                    kept.push(i);
                }
            }
            DeviceRef::Index(i) => {
                return Err(format!(
                    "ROCR_VISIBLE_DEVICES={value:?}: index {i} is out of range: this \
                     container has {} usable GPU(s) (indices 0..{})",
                    uuids.len(),
                    uuids.len().saturating_sub(1)
                ));
            }
            DeviceRef::Uuid(u) => {
                // Partitions of one card share the UUID: it selects all of them.
                let hits: Vec<usize> = (0..uuids.len())
                    .filter(|&i| u != 0 && uuids[i] == u)
                    .collect();
                if hits.is_empty() {
                    return Err(format!(
                        "ROCR_VISIBLE_DEVICES={value:?}: no usable GPU has UUID \
                         GPU-{u:016x}"
                    ));
                }
                for i in hits {
                    if !kept.contains(&i) {
                        kept.push(i);
                    }
                }
            }
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfx_names_decode_minor_and_stepping_as_hex() {
        for (v, want) in [
            (90402, "gfx942"),
            (90010, "gfx90a"),
            (90500, "gfx950"),
            (110000, "gfx1100"),
            (100306, "gfx1036"),
            (120001, "gfx1201"),
            (90008, "gfx908"),
            (110001, "gfx1101"),
        ] {
            assert_eq!(gfx_name(v), want, "{v}");
        }
    }

    #[test]
    fn pci_address_from_location_id() {
        assert_eq!(pci_address(0, 18176), "0000:47:00.0");
        assert_eq!(pci_address(0, 1281), "0000:05:00.1");
        assert_eq!(pci_address(1, 2816), "0001:0b:00.0");
        assert_eq!(pci_address(0, 53504), "0000:d1:00.0");
        assert!(is_pci_address("0000:47:00.0"));
        assert!(is_pci_address("10000:e1:1f.7"));
        assert!(!is_pci_address("amdgpu_xcp.14"));
        assert!(!is_pci_address("0000:47:00"));
    }

    #[test]
    fn props_tolerate_missing_extra_reordered_and_non_integer_keys() {
        let text = "unique_id 42\nsibling_map 0,1,0\nfuture_key 7\n\
                    gfx_target_version 90010\nsimd_count 440\nbogus\n\nlocation_id 53504\n";
        let n = NodeProps::parse(text);
        assert_eq!(n.unique_id, 42);
        assert_eq!(n.gfx_target_version, 90010);
        assert_eq!(n.simd_count, 440);
        assert_eq!(n.location_id, 53504);
        assert_eq!(n.simd_per_cu, None);
        assert_eq!(n.compute_units(), 110, "simd_per_cu missing -> 4 on gfx9");
        assert_eq!(n.drm_render_minor, None);
        assert_eq!(n.num_xcc, 1, "num_xcc missing -> 1 like libhsakmt");
        assert!(!n.is_cpu(Some(7)));
    }

    #[test]
    fn cpu_nodes_are_recognised_by_any_zero_marker() {
        let gpu = "simd_count 1216\ngfx_target_version 90402\n";
        assert!(!NodeProps::parse(gpu).is_cpu(Some(28851)));
        assert!(NodeProps::parse(gpu).is_cpu(Some(0)));
        assert!(NodeProps::parse("simd_count 0\ngfx_target_version 90402\n").is_cpu(Some(1)));
        assert!(NodeProps::parse("simd_count 4\ngfx_target_version 0\n").is_cpu(Some(1)));
        assert!(NodeProps::parse("cpu_cores_count 96\n").is_cpu(None));
    }

    #[test]
    fn mem_banks_count_only_frame_buffer_heaps() {
        assert_eq!(mem_bank_vram("heap_type 1\nsize_in_bytes 100\n"), 100);
        assert_eq!(mem_bank_vram("size_in_bytes 200\nheap_type 2\n"), 200);
        assert_eq!(mem_bank_vram("heap_type 0\nsize_in_bytes 300\n"), 0);
        assert_eq!(mem_bank_vram("size_in_bytes 300\n"), 0);
    }

    #[test]
    fn xgmi_links_are_type_11() {
        assert_eq!(
            xgmi_link_target("type 11\nnode_from 2\nnode_to 3\n"),
            Some(3)
        );
        assert_eq!(xgmi_link_target("type 2\nnode_to 0\n"), None);
        assert_eq!(xgmi_link_target("node_to 0\n"), None);
    }

    #[test]
    fn sysfs_integers_hex_and_decimal() {
        assert_eq!(sysfs_u64("0x74a1\n"), Some(0x74a1));
        assert_eq!(sysfs_u64("206141652992\n"), Some(206141652992));
        assert_eq!(sysfs_u64(""), None);
        assert_eq!(numa_node("-1\n"), None);
        assert_eq!(numa_node("1\n"), Some(1));
        assert_eq!(compute_partition_mode("cpx\n").as_deref(), Some("CPX"));
        assert_eq!(compute_partition_mode("\n"), None);
    }

    #[test]
    fn igpu_rule_table() {
        let m = |vram, gtt, marker| DrmMemory {
            vram_total: Some(vram),
            gtt_total: Some(gtt),
            discrete_marker: marker,
        };
        // Raphael: 512 MiB carve-out, 15.3 GiB GTT.
        assert!(is_integrated(&m(536870912, 16377958400, false)));
        // Same numbers but the card has mem_info_vram_vendor: discrete.
        assert!(!is_integrated(&m(536870912, 16377958400, true)));
        // RX 7900 XTX.
        assert!(!is_integrated(&m(25753026560, 33243738112, false)));
        // Small VRAM but small GTT: not the APU pattern.
        assert!(!is_integrated(&m(2 * GIB, 6 * GIB, false)));
        // GTT >= 8 GiB but not 4x VRAM.
        assert!(!is_integrated(&m(4 * GIB, 12 * GIB, false)));
        assert!(is_integrated(&m(4 * GIB, 16 * GIB, false)));
        assert!(!is_integrated(&DrmMemory::default()));
    }

    fn vis(v: &[Visibility]) -> Vec<Option<u32>> {
        v.iter()
            .map(|x| match x {
                Visibility::Visible { index } => Some(*index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn visibility_table() {
        let uuids = [0xa, 0xb, 0xc, 0xd];
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Vec<Option<u32>>,
        );
        let cases: Vec<Case> = vec![
            (None, None, None, vec![Some(0), Some(1), Some(2), Some(3)]),
            // ROCR keeps 1 and 3 and renumbers them 0, 1.
            (Some("1,3"), None, None, vec![None, Some(0), None, Some(1)]),
            // ROCR reorders: device 3 becomes ordinal 0.
            (Some("3,1"), None, None, vec![None, Some(1), None, Some(0)]),
            // UUID form.
            (
                Some("GPU-000000000000000c"),
                None,
                None,
                vec![None, None, Some(0), None],
            ),
            // HIP indexes into what ROCR left: ordinal 1 = device 3; index is not renumbered.
            (
                Some("1,3"),
                Some("1"),
                None,
                vec![None, None, None, Some(1)],
            ),
            (None, None, Some("0,2"), vec![Some(0), None, Some(2), None]),
            (None, Some("2"), Some("2"), vec![None, None, Some(2), None]),
            (None, Some(""), None, vec![None, None, None, None]),
        ];
        for (rocr, hip, cuda, want) in cases {
            let got = apply_visibility(&uuids, rocr, hip, cuda).expect("valid");
            assert_eq!(vis(&got), want, "rocr={rocr:?} hip={hip:?} cuda={cuda:?}");
        }
    }

    #[test]
    fn visibility_errors_name_the_variable() {
        let uuids = [1, 2];
        for (rocr, hip, cuda, needle) in [
            (None, Some("0"), Some("1"), "Inconsistent GPU visibility"),
            (Some("5"), None, None, "ROCR_VISIBLE_DEVICES"),
            (Some("1"), Some("1"), None, "after ROCR_VISIBLE_DEVICES"),
            (None, Some("x"), None, "HIP_VISIBLE_DEVICES"),
            (None, None, Some("0,0"), "listed twice"),
            (Some("GPU-ff"), None, None, "no usable GPU has UUID"),
        ] {
            let err = apply_visibility(&uuids, rocr, hip, cuda).expect_err("must fail");
            assert!(err.contains(needle), "{err}");
        }
        // The HIP-only marker says which variable hid it.
        let got = apply_visibility(&uuids, None, None, Some("1")).expect("valid");
        assert_eq!(
            got[0],
            Visibility::HiddenByHip {
                index: 0,
                var: "CUDA_VISIBLE_DEVICES"
            }
        );
    }

    proptest::proptest! {
        /// Whatever a sysfs file or an env var holds, parsing returns instead of panicking.
        #[test]
        fn parsers_never_panic(s in ".{0,200}") {
            let n = NodeProps::parse(&s);
            let _ = n.compute_units();
            let _ = gfx_name(n.gfx_target_version);
            let _ = mem_bank_vram(&s);
            let _ = xgmi_link_target(&s);
            let _ = sysfs_u64(&s);
            let _ = is_pci_address(&s);
            let _ = parse_visible_list("X", &s);
            let _ = apply_visibility(&[1, 2, 3], Some(&s), Some(&s), None);
        }
    }
}
