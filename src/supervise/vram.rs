//! Waiting for VRAM to come back before a relaunch.
//!
//! ROCm reclaims an engine's memory lazily (vLLM's own tests wait ~20 s and up to 240 s), and
//! a relaunch into memory still held fails with OOM or "free memory is less than desired".
//! So before any relaunch we poll DRM `mem_info_vram_used` of the launch's cards until each
//! is back within a tolerance of its level before the first launch.

use std::path::Path;
use std::time::{Duration, Instant};

/// Slack above the baseline that still counts as "released": ROCm keeps a little for itself.
pub const TOLERANCE_BYTES: u64 = 1 << 30;
/// Poll period.
pub const POLL: Duration = Duration::from_millis(100);

/// Per-card used VRAM before the first launch, by render minor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    pub by_minor: Vec<(u32, Option<u64>)>,
}

impl Baseline {
    pub fn read(root: &Path, minors: &[u32]) -> Self {
        let used = crate::gpu::read_vram_used(root, minors);
        Baseline {
            by_minor: minors.iter().copied().zip(used).collect(),
        }
    }

    pub fn of(&self, minor: u32) -> Option<u64> {
        self.by_minor
            .iter()
            .find(|(m, _)| *m == minor)
            .and_then(|(_, v)| *v)
    }
}

/// Cards still above `baseline + tolerance`: (minor, used, baseline). A card without a
/// reading now or then cannot be judged and does not hold the relaunch up.
pub fn still_held(
    baseline: &Baseline,
    minors: &[u32],
    now: &[Option<u64>],
    tolerance: u64,
) -> Vec<(u32, u64, u64)> {
    minors
        .iter()
        .zip(now)
        .filter_map(|(&m, &used)| {
            let used = used?;
            let base = baseline.of(m)?;
            (used > base.saturating_add(tolerance)).then_some((m, used, base))
        })
        .collect()
}

/// The cards whose VRAM use is still above the baseline after the wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", held_text(.0))]
pub struct StillHeld(pub Vec<(u32, u64, u64)>);

/// `renderD128: 1024 MiB used, 0 MiB before; ...` for (render minor, used now, used before).
fn held_text(held: &[(u32, u64, u64)]) -> String {
    held.iter()
        .map(|(m, u, b)| format!("renderD{m}: {} MiB used, {} MiB before", u >> 20, b >> 20))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls until released or `timeout`; Err says which cards still hold how much.
pub async fn wait_released(
    root: &Path,
    baseline: &Baseline,
    minors: &[u32],
    timeout: Duration,
) -> Result<Duration, StillHeld> {
    let start = Instant::now();
    let mut logged = false;
    loop {
        let now = crate::gpu::read_vram_used(root, minors);
        let held = still_held(baseline, minors, &now, TOLERANCE_BYTES);
        if held.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(StillHeld(held));
        }
        if !logged {
            tracing::info!(
                "waiting for VRAM to be released before the relaunch: {}",
                held_text(&held)
            );
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn still_held_says_which_card_holds_how_much() {
        let e = StillHeld(vec![(128, 3 << 30, 1 << 20), (136, 2 << 20, 0)]);
        assert_eq!(
            e.to_string(),
            "renderD128: 3072 MiB used, 1 MiB before; renderD136: 2 MiB used, 0 MiB before"
        );
    }

    #[test]
    fn held_cards() {
        const G: u64 = 1 << 30;
        let base = Baseline {
            by_minor: vec![(128, Some(G)), (129, Some(0)), (130, None)],
        };
        let minors = [128, 129, 130, 131];
        let cases: &[(&[Option<u64>], &[u32])] = &[
            (&[Some(G), Some(0), Some(50 * G), Some(50 * G)], &[]),
            (&[Some(2 * G), Some(G), None, None], &[]), // exactly at the tolerance
            (&[Some(2 * G + 1), Some(0), None, None], &[128]),
            (&[Some(100 * G), Some(90 * G), None, None], &[128, 129]),
            (&[None, None, None, None], &[]),
        ];
        for (now, want) in cases {
            let got: Vec<u32> = still_held(&base, &minors, now, G)
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(got, *want, "{now:?}");
        }
    }
}
