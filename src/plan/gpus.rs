//! Which GPUs one engine may span, and which of them a launch takes.

use crate::gpu::{Gpu, Topology};

/// GPUs of the same product and gfx as the first one: the ones a single engine may span.
pub fn usable_gpus(t: &Topology) -> Vec<&Gpu> {
    match t.gpus.first() {
        Some(first) => t
            .gpus
            .iter()
            .filter(|g| g.product == first.product && g.gfx == first.gfx)
            .collect(),
        None => Vec::new(),
    }
}

/// The first `n` usable GPUs, preferring a set that shares an xGMI hive (or is fully linked
/// by `Topology::xgmi`), so tensor-parallel traffic stays on xGMI.
pub fn pick_gpus<'a>(usable: &[&'a Gpu], xgmi: &[(u32, u32)], n: usize) -> Vec<&'a Gpu> {
    if n == 0 || usable.len() < n {
        return usable.iter().take(n).copied().collect();
    }
    // 1. Same non-zero hive id.
    let mut hives: Vec<u64> = Vec::new();
    for g in usable {
        if g.hive_id != 0 && !hives.contains(&g.hive_id) {
            hives.push(g.hive_id);
        }
    }
    for h in hives {
        let members: Vec<&Gpu> = usable.iter().filter(|g| g.hive_id == h).copied().collect();
        if members.len() >= n {
            return members.into_iter().take(n).collect();
        }
    }
    // 2. A greedy clique over direct links.
    if !xgmi.is_empty() && n > 1 {
        let linked = |a: u32, b: u32| xgmi.iter().any(|&(x, y)| (x, y) == (a.min(b), a.max(b)));
        for start in 0..usable.len() {
            let mut set = vec![usable[start]];
            for g in &usable[start + 1..] {
                if set.len() < n && set.iter().all(|s| linked(s.index, g.index)) {
                    set.push(g);
                }
            }
            if set.len() == n {
                return set;
            }
        }
    }
    usable.iter().take(n).copied().collect()
}

/// The smallest VRAM among these GPUs (0 = unknown is left out).
pub(super) fn min_vram(usable: &[&Gpu]) -> Option<u64> {
    usable.iter().map(|g| g.vram_bytes).filter(|v| *v > 0).min()
}
