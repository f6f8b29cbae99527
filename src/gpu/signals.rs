//! GPU health signals the kernel exposes in sysfs, as plain data, and the pure parsers of
//! their files. The reads are in `gpu::sample` (through the `SysReader` seam).
//!
//! The files (amdgpu, on the card's PCI device directory):
//! - `gpu_busy_percent`, `mem_info_vram_used`: one decimal number.
//! - `hwmon/hwmon<N>/temp<i>_input`: millidegrees Celsius; `temp<i>_label` names the sensor
//!   (`edge`, `junction`, `mem`). temp1 is edge, temp2 junction (hotspot), temp3 memory. On
//!   multi-AID parts (MI300X/MI300A GC 9.4.3, MI325X 9.4.4, MI355X 9.5.0) the kernel hides
//!   temp1 (no edge sensor), so only junction and mem appear there.
//! - `hwmon/hwmon<N>/power1_average` (average) or `power1_input` (instantaneous): microwatts.
//! - `ras/<block>_err_count`: `ue: N` and `ce: N` lines (uncorrectable, correctable); the
//!   `umc` block (HBM) also has `de: N` (deferred) on current kernels.
//! - `devcoredump/`: appears (for about five minutes, with `CONFIG_DEV_COREDUMP`) when amdgpu
//!   has reset the GPU; the kernel log says "AMDGPU device coredump file has been created".
//!   amdgpu keeps its reset counter internal (no sysfs file); see `supervise::gpu_fault`.

use serde::Serialize;

/// One RAS block's error counts (`ras/<block>_err_count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RasCount {
    /// Uncorrectable errors.
    pub ue: u64,
    /// Correctable errors.
    pub ce: u64,
    /// Deferred errors (UMC only, where the kernel prints them).
    pub de: Option<u64>,
}

/// What was read of one GPU (by render minor). Every field is None / empty where the kernel
/// does not expose it or the read failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuSignals {
    pub render_minor: u32,
    pub busy_percent: Option<u32>,
    pub vram_used_bytes: Option<u64>,
    /// (sensor, °C): `edge`, `junction`, `mem`, in sensor order.
    pub temperatures: Vec<(String, f64)>,
    pub power_watts: Option<f64>,
    /// (block, counts), sorted by block name (`gfx`, `mmhub`, `umc`, `xgmi_wafl`, ...).
    pub ras: Vec<(String, RasCount)>,
    /// The card's PCI device directory was found (false: the GPU is gone from sysfs).
    pub present: bool,
    /// A `devcoredump` of the card exists (amdgpu made one at a GPU reset).
    pub reset_dump: bool,
}

impl GpuSignals {
    /// Uncorrectable errors over all blocks.
    pub fn ue_total(&self) -> u64 {
        self.ras.iter().map(|(_, c)| c.ue).sum()
    }

    /// The uncorrectable count of `block`, 0 when it has none.
    pub fn ue_of(&self, block: &str) -> u64 {
        self.ras
            .iter()
            .find(|(b, _)| b == block)
            .map_or(0, |(_, c)| c.ue)
    }
}

/// Parses a RAS `*_err_count` file: `ue: N` and `ce: N` lines, `de: N` where present. Other
/// lines are ignored; None without both `ue` and `ce` (the kernel's "Query currently
/// inaccessible" while RAS is busy, for one).
pub fn parse_ras_count(text: &str) -> Option<RasCount> {
    let (mut ue, mut ce, mut de) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(n) = value.trim().parse::<u64>() else {
            continue;
        };
        match key.trim() {
            "ue" => ue = Some(n),
            "ce" => ce = Some(n),
            "de" => de = Some(n),
            _ => {}
        }
    }
    Some(RasCount {
        ue: ue?,
        ce: ce?,
        de,
    })
}

/// The block of a RAS file name: `umc_err_count` -> `umc`. None for the other files of the
/// `ras` folder (`features`, `gpu_vram_bad_pages`).
pub fn ras_block(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix("_err_count")
        .filter(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
}

/// A hwmon `temp<i>_input` (millidegrees Celsius) in °C.
pub fn millidegrees(text: &str) -> Option<f64> {
    text.trim().parse::<i64>().ok().map(|m| m as f64 / 1000.0)
}

/// A hwmon `power1_*` (microwatts) in watts.
pub fn microwatts(text: &str) -> Option<f64> {
    text.trim().parse::<u64>().ok().map(|u| u as f64 / 1e6)
}

/// The name of hwmon temperature sensor `index` (1-based): its `temp<i>_label` when the
/// kernel gives one (lower-cased), else amdgpu's fixed meaning of the index.
pub fn temp_sensor(index: u32, label: Option<&str>) -> Option<String> {
    let label = label
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
    if let Some(l) = label {
        return Some(l.to_ascii_lowercase());
    }
    match index {
        1 => Some("edge".into()),
        2 => Some("junction".into()),
        3 => Some("mem".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ras_counts_with_and_without_deferred() {
        assert_eq!(
            parse_ras_count("ue: 0\nce: 12\n"),
            Some(RasCount {
                ue: 0,
                ce: 12,
                de: None
            })
        );
        assert_eq!(
            parse_ras_count("ue: 3\nce: 0\nde: 7\n"),
            Some(RasCount {
                ue: 3,
                ce: 0,
                de: Some(7)
            })
        );
        // Order, spacing and unknown lines do not matter.
        assert_eq!(
            parse_ras_count("ce:5\nfoo: bar\n ue : 1 \n"),
            Some(RasCount {
                ue: 1,
                ce: 5,
                de: None
            })
        );
        assert_eq!(parse_ras_count("Query currently inaccessible\n"), None);
        assert_eq!(parse_ras_count("ue: 1\n"), None);
        assert_eq!(parse_ras_count("ue: -1\nce: 0\n"), None);
        assert_eq!(parse_ras_count(""), None);
    }

    #[test]
    fn ras_block_names() {
        assert_eq!(ras_block("umc_err_count"), Some("umc"));
        assert_eq!(ras_block("xgmi_wafl_err_count"), Some("xgmi_wafl"));
        assert_eq!(ras_block("features"), None);
        assert_eq!(ras_block("gpu_vram_bad_pages"), None);
        assert_eq!(ras_block("_err_count"), None);
        assert_eq!(ras_block("a b_err_count"), None);
    }

    #[test]
    fn hwmon_units() {
        assert_eq!(millidegrees("45000\n"), Some(45.0));
        assert_eq!(millidegrees("-2500"), Some(-2.5));
        assert_eq!(millidegrees("hot"), None);
        assert_eq!(microwatts("750000000\n"), Some(750.0));
        assert_eq!(microwatts("132500000"), Some(132.5));
        assert_eq!(microwatts(""), None);
    }

    #[test]
    fn temperature_sensor_names() {
        assert_eq!(temp_sensor(1, None).as_deref(), Some("edge"));
        assert_eq!(temp_sensor(2, None).as_deref(), Some("junction"));
        assert_eq!(temp_sensor(3, None).as_deref(), Some("mem"));
        assert_eq!(temp_sensor(4, None), None);
        assert_eq!(
            temp_sensor(2, Some("junction\n")).as_deref(),
            Some("junction")
        );
        assert_eq!(temp_sensor(1, Some("Edge")).as_deref(), Some("edge"));
        // A label that is no metric label value falls back to the index.
        assert_eq!(temp_sensor(3, Some("m\"em")).as_deref(), Some("mem"));
    }

    #[test]
    fn totals_and_per_block() {
        let s = GpuSignals {
            ras: vec![
                (
                    "gfx".into(),
                    RasCount {
                        ue: 1,
                        ce: 2,
                        de: None,
                    },
                ),
                (
                    "umc".into(),
                    RasCount {
                        ue: 4,
                        ce: 0,
                        de: Some(1),
                    },
                ),
            ],
            ..GpuSignals::default()
        };
        assert_eq!(s.ue_total(), 5);
        assert_eq!(s.ue_of("umc"), 4);
        assert_eq!(s.ue_of("sdma"), 0);
    }
}
