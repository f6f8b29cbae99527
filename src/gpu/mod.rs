//! GPU detection from the kernel alone: KFD topology and DRM in sysfs, read under a root
//! prefix so a fixture tree can stand in for a machine.
//!
//! Layout: `parse` (pure: KFD/DRM text, gfx decode, iGPU rule, visibility lists),
//! `products` (PCI device id -> product), `reader` (the file-access seam), `detect` (the IO
//! shell); `signals` (pure: the health files) and `sample` (their reads). The algorithm: KFD
//! nodes in numeric order, CPU nodes and nodes this container may not use
//! (EPERM, missing render node) dropped, the rest are the ROCr devices in order.

pub mod detect;
pub mod parse;
pub mod products;
pub mod reader;
pub mod sample;
pub mod signals;

/// The fixture-tree builder shared with the integration tests and the bench.
#[cfg(test)]
#[path = "../../tests/fixtures/builder/mod.rs"]
mod builder;

pub use detect::detect_with;
pub use reader::{FsReader, ScenarioReader, SysReader};
pub use signals::{GpuSignals, RasCount};

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
    /// The HIP ordinal of this GPU: its position in the device list HIP enumerates in a
    /// process that has our ROCR_VISIBLE_DEVICES (passed through unchanged to the engine) and
    /// no HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES. That list is the KFD GPU nodes this
    /// container can open (numeric node order; integrated GPUs count too, since the runtime
    /// sees them), filtered and reordered by ROCR_VISIBLE_DEVICES. The supervisor puts these
    /// numbers into the child's HIP_VISIBLE_DEVICES=CUDA_VISIBLE_DEVICES. Our own
    /// HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES only remove GPUs from `gpus`; they do not
    /// renumber them. `gpus` is sorted by this field.
    pub index: u32,
    pub kfd_node: u32,
    pub gpu_id: u32,
    /// PCI address of the physical card.
    pub pci: String,
    pub render_minor: u32,
    /// Compiler target decoded from `gfx_target_version` (`gfx942`).
    pub gfx: String,
    /// PCI device id; JSON writes it as a lower-case hex string, `"0x74a1"`.
    #[serde(serialize_with = "hex_device_id")]
    pub device_id: u32,
    /// Product family from the device id (`MI300X`), or `unknown (0x1234)`.
    pub product: String,
    /// VRAM of this node from its KFD memory banks (per partition in partition modes).
    pub vram_bytes: u64,
    /// DRM `mem_info_vram_used` of the whole physical card, where the card has it.
    pub vram_used_bytes: Option<u64>,
    /// CUs of this node (of this partition in partition modes).
    pub compute_units: u32,
    /// NUMA node of the PCI card; None when the kernel reports -1 or nothing.
    pub numa_node: Option<i32>,
    /// Index of the physical card this GPU belongs to (partitions share it): cards numbered
    /// 0.. in order of their first GPU in `gpus`.
    pub physical_index: u32,
    /// Compute partition (mode other than SPX) of the card and this node's index in it.
    pub partition: Option<Partition>,
    #[serde(skip)]
    pub hive_id: u64,
    #[serde(skip)]
    pub unique_id: u64,
}

impl Gpu {
    /// Whole MI300X number `index` (SPX, 192 GiB, 304 CUs, NUMA 0, no hive) laid out as on the
    /// 8-GPU fixture: for tests and benches that need a topology without a sysfs tree. Change
    /// fields with struct update syntax (`Gpu { hive_id: 1, ..Gpu::mi300x(0) }`).
    #[doc(hidden)]
    pub fn mi300x(index: u32) -> Gpu {
        Gpu {
            index,
            kfd_node: index + 2,
            gpu_id: 1000 + index,
            pci: format!("0000:{:02x}:00.0", index + 5),
            render_minor: 128 + 8 * index,
            gfx: "gfx942".into(),
            device_id: 0x74a1,
            product: "MI300X".into(),
            vram_bytes: 192 << 30,
            vram_used_bytes: None,
            compute_units: 304,
            numa_node: Some(0),
            physical_index: index,
            partition: None,
            hive_id: 0,
            unique_id: 77 + u64::from(index),
        }
    }
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

fn hex_device_id<S: serde::Serializer>(id: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{id:04x}"))
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no AMD GPU driver: /sys/module/amdgpu and the KFD topology \
         (/sys/class/kfd/kfd/topology) are missing; load the amdgpu kernel module on the host \
         (modprobe amdgpu, or install the ROCm amdgpu driver)"
    )]
    NoDriver,
    #[error(
        "the amdgpu module is loaded but there is no KFD topology \
         (/sys/class/kfd/kfd/topology): the kernel was built without HSA_AMD (KFD) or the GPU \
         failed to initialise (see dmesg)"
    )]
    NoTopology,
    #[error(
        "/dev/kfd does not exist: the container was started without the AMD GPU devices; run \
         it with `--device /dev/kfd --device /dev/dri --group-add video --group-add render` \
         (Kubernetes: request amd.com/gpu)"
    )]
    NoKfdDevice,
    #[error(
        "/dev/kfd cannot be opened read-write ({source}): add the user to the render group \
         (and video; docker: --group-add video --group-add render)"
    )]
    KfdPermission { source: std::io::Error },
    #[error("{0}")]
    Visibility(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl GpuError {
    /// The exit status a command should end with for this error: no usable GPU is NO_FIT,
    /// a bad visibility variable is USAGE.
    pub fn exit_code(&self) -> u8 {
        match self {
            GpuError::NoDriver
            | GpuError::NoTopology
            | GpuError::NoKfdDevice
            | GpuError::KfdPermission { .. } => crate::exit::NO_FIT,
            GpuError::Visibility(_) => crate::exit::USAGE,
            GpuError::Io { .. } => crate::exit::FAILURE,
        }
    }
}

/// Reads the topology under `root` (`/` on a real machine): the GPUs this process may use,
/// in HIP order, and every KFD node left out with the reason.
pub fn detect(root: &Path, vis: &VisibilityEnv) -> Result<Topology, GpuError> {
    detect_with(&FsReader::new(root), vis)
}

/// How busy each card is (`gpu_busy_percent`), by render minor.
pub fn read_busy_percent(root: &Path, render_minors: &[u32]) -> Vec<Option<u32>> {
    detect::read_busy_percent_with(&FsReader::new(root), render_minors)
}

/// The health signals (`gpu::signals`) of the cards behind these render minors: busy, VRAM
/// used, hwmon temperatures and power, RAS counts, reset dumps.
pub fn read_signals(root: &Path, render_minors: &[u32]) -> Vec<GpuSignals> {
    sample::read_signals_with(&FsReader::new(root), render_minors)
}

/// Current DRM `mem_info_vram_used` of the cards behind these render minors (None where the
/// card has no such file). Used by the supervisor's VRAM-release wait. For a partition's
/// render node the value is that of its whole physical card.
pub fn read_vram_used(root: &Path, render_minors: &[u32]) -> Vec<Option<u64>> {
    detect::read_vram_used_with(&FsReader::new(root), render_minors)
}
