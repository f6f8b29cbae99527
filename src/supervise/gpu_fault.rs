//! The GPU fault judge (pure): from the health signals of the launch's GPUs at the start of
//! an attempt (the baseline) and now, whether one of them has failed in a way that a restart
//! on the same GPU does not fix.
//!
//! A fault is one of:
//! - a rising uncorrectable RAS count (`ras/<block>_err_count` `ue:` above its baseline, for a
//!   block the baseline had): the kernel saw data it could not correct (HBM, caches, links);
//! - a GPU reset: amdgpu keeps its reset counter internal (no sysfs file, only the
//!   `WEDGED=` uevent and the KFD SMI event stream tell), but at a reset it writes a device
//!   coredump, so a `devcoredump/` folder on the card's device that the baseline did not
//!   have is a reset during the attempt (the dump stays about five minutes and the kernel
//!   keeps one per device, so a reset while an older dump is still there, or on a kernel
//!   without `CONFIG_DEV_COREDUMP`, is seen only through what follows it: the engine's
//!   death, a RAS count);
//! - the GPU gone from sysfs (its render node and PCI device no longer found): it fell off
//!   the bus, or a failed reset unbound it.
//!
//! Counts that fall (a driver reload) and blocks the baseline could not read are not faults.

use crate::gpu::GpuSignals;
use crate::launch::SelectedGpu;

/// What went wrong with the GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    Uncorrectable {
        block: String,
        before: u64,
        now: u64,
    },
    Reset,
    Gone,
}

/// A failed GPU of the launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFault {
    pub ordinal: u32,
    pub pci: String,
    pub kind: FaultKind,
}

const WHAT_TO_CHECK: &str = "check the host's kernel log (`dmesg | grep -i amdgpu`: RAS, ECC, \
     page retirement, GPU reset lines), the GPU's RAS state (`amd-smi metric --ecc`, \
     `rocm-smi --showrasinfo all`, retired pages in `ras/gpu_vram_bad_pages`), and drain the \
     node until the GPU is checked; not restarted on this GPU";

impl GpuFault {
    /// The message for the operator: the GPU, what happened, what to check.
    pub fn message(&self) -> String {
        let gpu = format!("GPU {} ({})", self.ordinal, self.pci);
        let what = match &self.kind {
            FaultKind::Uncorrectable { block, before, now } => format!(
                "{gpu}: uncorrectable RAS errors in block `{block}` rose from {before} to {now} \
                 during this attempt"
            ),
            FaultKind::Reset => format!(
                "{gpu} was reset by the amdgpu driver during this attempt (a device coredump \
                 appeared in its sysfs `devcoredump/`)"
            ),
            FaultKind::Gone => format!(
                "{gpu} disappeared from sysfs during this attempt (fell off the bus or a failed \
                 reset)"
            ),
        };
        format!("gpu_fault: {what}; {WHAT_TO_CHECK}")
    }
}

/// The first fault of `gpus` (in launch order), comparing `now` with `baseline` (both in
/// the order of `gpus`; missing entries are no evidence).
pub fn judge(
    gpus: &[SelectedGpu],
    baseline: &[GpuSignals],
    now: &[GpuSignals],
) -> Option<GpuFault> {
    gpus.iter()
        .zip(baseline.iter().zip(now))
        .find_map(|(g, (b, n))| {
            let kind = fault_of(b, n)?;
            Some(GpuFault {
                ordinal: g.ordinal,
                pci: g.pci.clone(),
                kind,
            })
        })
}

fn fault_of(b: &GpuSignals, n: &GpuSignals) -> Option<FaultKind> {
    if b.present && !n.present {
        return Some(FaultKind::Gone);
    }
    if !b.reset_dump && n.reset_dump {
        return Some(FaultKind::Reset);
    }
    n.ras.iter().find_map(|(block, c)| {
        let before = b.ras.iter().find(|(bb, _)| bb == block)?.1.ue;
        (c.ue > before).then(|| FaultKind::Uncorrectable {
            block: block.clone(),
            before,
            now: c.ue,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::RasCount;

    fn gpu(ordinal: u32) -> SelectedGpu {
        SelectedGpu {
            ordinal,
            product: "MI300X".into(),
            pci: format!("0000:{:02x}:00.0", 5 + ordinal),
            render_minor: 128 + 8 * ordinal,
        }
    }

    fn sig(ras: &[(&str, u64)]) -> GpuSignals {
        GpuSignals {
            present: true,
            ras: ras
                .iter()
                .map(|(b, ue)| {
                    (
                        b.to_string(),
                        RasCount {
                            ue: *ue,
                            ce: 0,
                            de: None,
                        },
                    )
                })
                .collect(),
            ..GpuSignals::default()
        }
    }

    #[test]
    fn judge_table() {
        let gone = GpuSignals::default();
        let reset = GpuSignals {
            reset_dump: true,
            ..sig(&[("umc", 0)])
        };
        let ce_de = GpuSignals {
            ras: vec![(
                "umc".into(),
                RasCount {
                    ue: 0,
                    ce: 5,
                    de: Some(2),
                },
            )],
            ..sig(&[])
        };
        let ue = |block: &str, before, now| FaultKind::Uncorrectable {
            block: block.into(),
            before,
            now,
        };
        type Case<'a> = (&'a str, GpuSignals, GpuSignals, Option<FaultKind>);
        let cases: Vec<Case> = vec![
            ("unchanged", sig(&[("umc", 0)]), sig(&[("umc", 0)]), None),
            (
                "correctable and deferred only",
                sig(&[("umc", 0)]),
                ce_de.clone(),
                None,
            ),
            (
                "ue rises",
                sig(&[("gfx", 0), ("umc", 1)]),
                sig(&[("gfx", 0), ("umc", 3)]),
                Some(ue("umc", 1, 3)),
            ),
            (
                "ue falls (driver reload)",
                sig(&[("umc", 4)]),
                sig(&[("umc", 0)]),
                None,
            ),
            (
                "a block the baseline could not read",
                sig(&[]),
                sig(&[("umc", 9)]),
                None,
            ),
            (
                "a reset dump appears",
                sig(&[("umc", 0)]),
                reset.clone(),
                Some(FaultKind::Reset),
            ),
            (
                "a reset dump from before the attempt",
                reset.clone(),
                reset.clone(),
                None,
            ),
            (
                "the GPU is gone",
                sig(&[("umc", 0)]),
                gone.clone(),
                Some(FaultKind::Gone),
            ),
            (
                "never there (no sysfs for it)",
                gone.clone(),
                gone.clone(),
                None,
            ),
        ];
        for (name, b, n, want) in cases {
            let got = judge(&[gpu(0)], &[b], &[n]).map(|f| f.kind);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_first_failed_gpu_is_named_with_its_pci_address() {
        let gpus = [gpu(0), gpu(1)];
        let base = [sig(&[("umc", 0)]), sig(&[("umc", 0)])];
        let now = [sig(&[("umc", 0)]), sig(&[("umc", 2)])];
        let f = judge(&gpus, &base, &now).expect("a fault");
        assert_eq!((f.ordinal, f.pci.as_str()), (1, "0000:06:00.0"));
        let msg = f.message();
        for part in [
            "gpu_fault: GPU 1 (0000:06:00.0)",
            "block `umc` rose from 0 to 2",
            "dmesg | grep -i amdgpu",
            "drain the node",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
        // Fewer readings than GPUs: no evidence, no fault.
        assert_eq!(judge(&gpus, &base[..1], &now[..1]), None);
        assert!(FaultKind::Reset != FaultKind::Gone);
        let reset = GpuFault {
            kind: FaultKind::Reset,
            ..f.clone()
        };
        assert!(reset.message().contains("was reset by the amdgpu driver"));
    }
}
