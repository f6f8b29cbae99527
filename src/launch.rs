//! The contract between planning and supervision: one fully resolved way to start the engine.
//!
//! `plan` produces an ordered list of `Launch`es (the chosen recipe first, then the fallback
//! chain); `supervise` only ever starts what is in that list. Nothing here does IO.

use crate::types::{Engine, Precision};
use indexmap::IndexMap;
use serde::Serialize;

/// One GPU handed to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedGpu {
    /// The HIP ordinal as this process sees it (what goes into HIP_VISIBLE_DEVICES).
    pub ordinal: u32,
    /// Marketing name, e.g. "MI300X".
    pub product: String,
    /// PCI address of the physical card, e.g. "0000:05:00.0".
    pub pci: String,
    /// N of /dev/dri/renderDN.
    pub render_minor: u32,
}

/// Everything needed to start (and restart) one engine attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Launch {
    /// Recipe id (file stem, or `generated/...` for generated defaults).
    pub recipe_id: String,
    pub engine: Engine,
    pub precision: Precision,
    /// GPUs on this node (the engine's tensor-parallel size).
    pub gpu_count: u32,
    /// Nodes the launch spans (1: this node alone). With more, `group` is this node's place.
    pub nodes: u32,
    /// This node's role in its group; None on one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::group::Role>,
    /// The group facts the multi-node flags were made from; None on one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::Group>,
    pub gpus: Vec<SelectedGpu>,
    /// The model name clients use (`--served-model-name`); validation asks for it.
    pub served_model_name: String,
    /// Full argv; argv[0] is the launcher (resolved through PATH at spawn time).
    pub argv: Vec<String>,
    /// The recipe's env plus visibility variables; the supervisor adds the pass-through set.
    pub env: IndexMap<String, String>,
    /// Loopback port the engine listens on.
    pub engine_port: u16,
    /// The flags the user gave in `--engine-args` (as spelled there): an engine error that
    /// names one of them is the user's to fix, not a reason to try another recipe.
    #[serde(skip)]
    pub user_flags: Vec<String>,
}
