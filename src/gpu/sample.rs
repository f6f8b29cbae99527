//! The IO shell of `gpu::signals`: reads the health files of the cards behind some render
//! minors through a [`SysReader`] and hands the text to the parsers. A file that is missing
//! or unreadable leaves its field empty; nothing here fails.
//!
//! Cost per GPU: the card's directory (one `exists`, or the KFD nodes for a partition's
//! render node), two DRM files, one hwmon listing and up to eight hwmon files, one `ras`
//! listing and its `*_err_count` files (about ten on MI300X), one `exists` for a
//! devcoredump. The supervisor reads them once per hang sample.

use super::detect::card_dir;
use super::parse;
use super::reader::SysReader;
use super::signals::{self, GpuSignals, RasCount};

/// Highest hwmon temperature index read (amdgpu has temp1..temp3).
const MAX_TEMPS: u32 = 3;

/// The signals of each render minor, in the order given.
pub fn read_signals_with(r: &dyn SysReader, render_minors: &[u32]) -> Vec<GpuSignals> {
    render_minors
        .iter()
        .map(|&m| match card_dir(r, m) {
            Some(dir) => read_card(r, m, &dir),
            None => GpuSignals {
                render_minor: m,
                ..GpuSignals::default()
            },
        })
        .collect()
}

fn read_card(r: &dyn SysReader, minor: u32, dir: &str) -> GpuSignals {
    let num = |name: &str| {
        r.read(&format!("{dir}/{name}"))
            .ok()
            .as_deref()
            .and_then(parse::sysfs_u64)
    };
    let (temperatures, power_watts) = match hwmon_dir(r, dir) {
        Some(h) => (temperatures(r, &h), power(r, &h)),
        None => (Vec::new(), None),
    };
    GpuSignals {
        render_minor: minor,
        busy_percent: num("gpu_busy_percent").and_then(|v| u32::try_from(v).ok()),
        vram_used_bytes: num("mem_info_vram_used"),
        temperatures,
        power_watts,
        ras: ras_counts(r, dir),
        present: true,
        reset_dump: r.exists(&format!("{dir}/devcoredump")),
    }
}

/// The card's hwmon directory: the lowest-numbered `hwmon/hwmon<N>` (amdgpu registers one).
fn hwmon_dir(r: &dyn SysReader, dir: &str) -> Option<String> {
    let names = r.read_dir(&format!("{dir}/hwmon")).ok()?;
    let n = names
        .iter()
        .filter_map(|n| n.strip_prefix("hwmon")?.parse::<u32>().ok())
        .min()?;
    Some(format!("{dir}/hwmon/hwmon{n}"))
}

fn temperatures(r: &dyn SysReader, hwmon: &str) -> Vec<(String, f64)> {
    (1..=MAX_TEMPS)
        .filter_map(|i| {
            let text = r.read(&format!("{hwmon}/temp{i}_input")).ok()?;
            let c = signals::millidegrees(&text)?;
            let label = r.read(&format!("{hwmon}/temp{i}_label")).ok();
            Some((signals::temp_sensor(i, label.as_deref())?, c))
        })
        .collect()
}

/// `power1_average`, else `power1_input` (kernels and parts have one or the other).
fn power(r: &dyn SysReader, hwmon: &str) -> Option<f64> {
    ["power1_average", "power1_input"]
        .iter()
        .find_map(|f| signals::microwatts(&r.read(&format!("{hwmon}/{f}")).ok()?))
}

fn ras_counts(r: &dyn SysReader, dir: &str) -> Vec<(String, RasCount)> {
    let Ok(names) = r.read_dir(&format!("{dir}/ras")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, RasCount)> = names
        .iter()
        .filter_map(|name| {
            let block = signals::ras_block(name)?;
            let text = r.read(&format!("{dir}/ras/{name}")).ok()?;
            Some((block.to_string(), signals::parse_ras_count(&text)?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::FsReader;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/mi300x-8gpu-spx")
    }

    /// The MI300X fixture's health files (GPUs 0 and 1 have them, see SOURCES.md).
    #[test]
    fn reads_the_mi300x_fixture() {
        let got = read_signals_with(&FsReader::new(&fixture()), &[128, 136, 144, 250]);
        let g0 = &got[0];
        assert!(g0.present);
        assert_eq!(g0.busy_percent, Some(0));
        assert_eq!(g0.vram_used_bytes, Some(297771008));
        assert_eq!(
            g0.temperatures,
            vec![("junction".to_string(), 38.0), ("mem".to_string(), 33.0)]
        );
        assert_eq!(g0.power_watts, Some(132.0));
        let blocks: Vec<&str> = g0.ras.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(blocks, ["gfx", "hdp", "mmhub", "sdma", "umc", "xgmi_wafl"]);
        assert_eq!(
            g0.ras[4].1,
            RasCount {
                ue: 0,
                ce: 0,
                de: Some(0)
            }
        );
        assert!(!g0.reset_dump);
        // GPU 1: power1_average and a correctable UMC count.
        assert_eq!(got[1].power_watts, Some(140.5));
        assert_eq!(
            got[1].ras.iter().find(|(b, _)| b == "umc").map(|c| c.1.ce),
            Some(3)
        );
        // GPU 2 has the DRM files but no hwmon or ras folder.
        assert!(got[2].present);
        assert!(got[2].temperatures.is_empty() && got[2].ras.is_empty());
        assert_eq!(got[2].power_watts, None);
        // No such render node.
        assert!(!got[3].present);
        assert_eq!(got[3].busy_percent, None);
    }

    #[test]
    fn a_partition_render_node_reads_its_card() {
        use crate::gpu::builder::{self, Host, Xgmi};
        let mut h = Host::mi300x_8(true);
        h.xgmi = Xgmi::None;
        let dir = builder::scratch_dir().expect("tempdir");
        builder::build(dir.path(), &h).expect("build tree");
        let got = read_signals_with(&FsReader::new(dir.path()), &[137]);
        assert!(got[0].present, "{got:?}");
        assert_eq!(got[0].vram_used_bytes, Some(297771008));
    }
}
