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

/// A card with more than this share (percent) of its VRAM already in use is busy.
pub const BUSY_VRAM_PERCENT: u64 = 10;

/// Whether `g`'s card already has more than `BUSY_VRAM_PERCENT` of its VRAM in use (by
/// another process, a leftover engine). `vram_used_bytes` is card-wide, so it is compared
/// with the VRAM of every GPU of that card in `all` (the partitions of one card share it).
/// Unknown use is not busy.
pub fn is_busy(g: &Gpu, all: &[Gpu]) -> bool {
    let Some(used) = g.vram_used_bytes else {
        return false;
    };
    let card: u64 = all
        .iter()
        .filter(|o| o.physical_index == g.physical_index && o.pci == g.pci)
        .map(|o| o.vram_bytes)
        .sum::<u64>()
        .max(g.vram_bytes);
    card > 0 && u128::from(used) * 100 > u128::from(card) * u128::from(BUSY_VRAM_PERCENT)
}

/// `n` GPUs for one launch: free ones when enough are free (busy ones skipped), else the free
/// ones and then busy ones. The note says which busy GPUs were skipped or taken.
pub(super) fn pick_free_first<'a>(
    usable: &[&'a Gpu],
    t: &Topology,
    n: usize,
) -> (Vec<&'a Gpu>, Option<String>) {
    let (busy, free): (Vec<&Gpu>, Vec<&Gpu>) =
        usable.iter().copied().partition(|g| is_busy(g, &t.gpus));
    if busy.is_empty() {
        return (pick_gpus(usable, &t.xgmi, n), None);
    }
    let words = |gs: &[&Gpu]| {
        gs.iter()
            .map(|g| {
                let used = g.vram_used_bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64;
                format!("{} ({used:.0} GiB in use)", g.index)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if free.len() >= n {
        let mut got = pick_gpus(&free, &t.xgmi, n);
        got.sort_by_key(|g| g.index);
        let note = format!(
            "busy GPU(s) skipped, more than {BUSY_VRAM_PERCENT} % of their VRAM already in use: {}; \
             {} free GPU(s) are enough",
            words(&busy),
            free.len()
        );
        return (got, Some(note));
    }
    let mut order = free.clone();
    order.extend(busy.iter().copied());
    let mut got: Vec<&Gpu> = order.into_iter().take(n).collect();
    got.sort_by_key(|g| g.index);
    let taken: Vec<&Gpu> = got.iter().copied().filter(|g| busy.contains(g)).collect();
    let note = format!(
        "warning: only {} free GPU(s) for {n}: busy GPU(s) taken, more than {BUSY_VRAM_PERCENT} % \
         of their VRAM already in use: {}; the engine may run out of memory",
        free.len(),
        words(&taken)
    );
    (got, Some(note))
}
