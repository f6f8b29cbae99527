//! `aim-engine gpus [--format text|json]`: the detected GPUs and why any KFD node was left
//! out.
//!
//! JSON shape: `{"gpus":[{index, kfd_node, gpu_id, pci, render_minor, gfx, device_id,
//! product, vram_bytes, vram_used_bytes, compute_units, numa_node, physical_index,
//! partition}], "excluded":[{kfd_node, reason}]}`; `device_id` is a hex string ("0x74a1"),
//! `partition` null or `{mode, index}`, `vram_used_bytes` / `numa_node` null when unknown.

use crate::cli::{Format, FormatArgs, GlobalArgs};
use crate::exit::ExitError;
use crate::gpu::{self, Topology, VisibilityEnv, detect::human_bytes};

pub fn run(g: &GlobalArgs, a: &FormatArgs) -> anyhow::Result<u8> {
    let topo = gpu::detect(&g.root, &VisibilityEnv::from_process_env())
        .map_err(|e| ExitError::new(e.exit_code(), e.to_string()))?;
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&topo)? + "\n",
        Format::Text => render_text(&topo),
    };
    print!("{out}");
    Ok(crate::exit::OK)
}

/// The human-readable table: one line per GPU, then the xGMI summary and the excluded
/// nodes with their reasons.
pub fn render_text(t: &Topology) -> String {
    let mut rows: Vec<[String; 12]> = vec![
        [
            "IDX",
            "KFD",
            "PCI",
            "RENDER",
            "GFX",
            "PRODUCT",
            "VRAM",
            "USED",
            "CUS",
            "NUMA",
            "CARD",
            "PARTITION",
        ]
        .map(String::from),
    ];
    for g in &t.gpus {
        rows.push([
            g.index.to_string(),
            g.kfd_node.to_string(),
            g.pci.clone(),
            format!("renderD{}", g.render_minor),
            g.gfx.clone(),
            g.product.clone(),
            human_bytes(g.vram_bytes),
            g.vram_used_bytes.map_or("-".into(), human_bytes),
            g.compute_units.to_string(),
            g.numa_node.map_or("-".into(), |n| n.to_string()),
            g.physical_index.to_string(),
            g.partition
                .as_ref()
                .map_or("-".into(), |p| format!("{} #{}", p.mode, p.index)),
        ]);
    }
    let mut widths = [0usize; 12];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    if t.gpus.is_empty() {
        out.push_str("No usable GPU.\n");
    } else {
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let cards = t
            .gpus
            .iter()
            .map(|g| g.physical_index)
            .max()
            .map_or(0, |m| m + 1);
        out.push_str(&format!(
            "\n{} GPU(s) on {} physical card(s); {} direct xGMI link(s)",
            t.gpus.len(),
            cards,
            t.xgmi.len()
        ));
        let n = t.gpus.len();
        if n > 1 && t.xgmi.len() == n * (n - 1) / 2 {
            out.push_str(" (all GPUs fully connected)");
        }
        out.push('\n');
    }
    if !t.excluded.is_empty() {
        out.push_str("\nExcluded KFD nodes:\n");
        for e in &t.excluded {
            out.push_str(&format!("  node {}: {}\n", e.kfd_node, e.reason));
        }
    }
    out
}
