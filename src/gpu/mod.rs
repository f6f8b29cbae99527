//! GPU detection from the kernel alone: KFD topology and DRM in sysfs, read under a root
//! prefix so a fixture tree can stand in for a machine.
//!
//! OWNER: gpu helper. CONTRACT: the pub items below are used by `plan`, `supervise` and
//! `host`; extend them, do not rename or remove them.

use serde::Serialize;
use std::path::Path;

/// A compute partition of a physical card (MI300-class SPX/DPX/QPX/CPX).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub mode: String,
    pub index: u32,
}

/// One usable GPU (a whole card, an MI250X GCD, or one compute partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// The HIP ordinal the engine will see.
    pub index: u32,
    pub kfd_node: u32,
    pub gpu_id: u32,
    /// PCI address of the physical card.
    pub pci: String,
    pub render_minor: u32,
    pub gfx: String,
    pub device_id: u32,
    pub product: String,
    pub vram_bytes: u64,
    pub vram_used_bytes: Option<u64>,
    pub compute_units: u32,
    pub numa_node: Option<i32>,
    /// Index of the physical card this GPU belongs to (partitions share it).
    pub physical_index: u32,
    pub partition: Option<Partition>,
    #[serde(skip)]
    pub hive_id: u64,
    #[serde(skip)]
    pub unique_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub kfd_node: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub gpus: Vec<Gpu>,
    pub excluded: Vec<Excluded>,
    /// Pairs of `Gpu::index` joined by a direct xGMI link (each pair once, smaller first).
    #[serde(skip)]
    pub xgmi: Vec<(u32, u32)>,
}

/// HIP_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES of our own environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisibilityEnv {
    pub hip: Option<String>,
    pub rocr: Option<String>,
    pub cuda: Option<String>,
}

impl VisibilityEnv {
    pub fn from_process_env() -> Self {
        VisibilityEnv {
            hip: std::env::var("HIP_VISIBLE_DEVICES").ok(),
            rocr: std::env::var("ROCR_VISIBLE_DEVICES").ok(),
            cuda: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("not implemented yet")]
    NotImplemented,
}

/// Reads the topology under `root`.
pub fn detect(_root: &Path, _vis: &VisibilityEnv) -> Result<Topology, GpuError> {
    Err(GpuError::NotImplemented)
}

/// Current DRM `mem_info_vram_used` of the cards behind these render minors (None where the
/// card has no such file). Used by the supervisor's VRAM-release wait.
pub fn read_vram_used(_root: &Path, render_minors: &[u32]) -> Vec<Option<u64>> {
    vec![None; render_minors.len()]
}
