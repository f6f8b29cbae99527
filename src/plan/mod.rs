//! Planning: topology x catalogue x request -> the ordered launches (chosen recipe first,
//! then the fallback chain), with the reasons.
//!
//! The pure planner decides and does no IO: the caller detects the GPUs, loads the recipes,
//! reads the model's config.json and the environment. When no recipe fits, general recipes
//! and then generated defaults serve, checked for tensor-parallel validity and memory fit
//! when config.json is known. `Plan` and its fields are what `supervise` and `host` act on.
//!
//! - `gpus`: which GPUs one engine may span and which of them a launch takes.
//! - `fit`: the memory and tensor-parallel checks of a model-agnostic recipe.
//! - `assess`: every recipe's verdict for this host and request.
//! - `generate`: generated defaults when no recipe fits.
//! - `choose`: the decision (`decide`), the launches and the "what would fit" hint.
//! - `error`: why planning failed, as data (`PlanError`).
//! - `aim`: what AIM's containers ask of planning (AIM_ID, the general fallback switch, the
//!   custom served name, AIM's custom profile ids, the engine flags after `--`).
//! - `names`: the names a launch is served under (AIM's model id + aim id, the custom name).
//! - `resolve`: the IO shell that gathers a `PlanInput` from the machine and the request.

mod aim;
mod assess;
mod choose;
mod error;
mod fit;
mod generate;
mod gpus;
mod names;
pub mod resolve;
#[cfg(test)]
mod tests;

pub use assess::assess_all;
pub use choose::decide;
pub use error::{NoFit, NoGpu, PlanError, Suggestion};
pub use gpus::{pick_gpus, usable_gpus};
pub use resolve::{Request, Sources};

use crate::gpu::Topology;
use crate::launch::Launch;
use crate::model::config::ModelFacts;
use crate::recipe::select::Verdict;
use crate::recipe::{LoadedRecipe, Recipe};
use crate::types::{Engine, Metric, Precision, RecipeType};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The model id as the user gave it.
    pub model: String,
    /// Chosen launch first, then the fallback chain in order. Never empty.
    pub launches: Vec<Launch>,
    /// Plain-words reasons why launches[0] won.
    pub reasons: Vec<String>,
    pub usable_gpus: u32,
    pub product: Option<String>,
    pub gfx: Option<String>,
}

/// What the user asked for (`auto` = None).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Want {
    pub gpu_count: Option<u32>,
    pub precision: Option<Precision>,
    pub engine: Option<Engine>,
    pub metric: Option<Metric>,
    /// `--recipe ID`.
    pub recipe: Option<String>,
    /// `--gpu-model`: match recipes as if the GPUs were this product.
    pub gpu_model: Option<String>,
    /// The group this node is part of (`group::Group`), None for one node: only recipes that
    /// span its node count are compatible, and the launch is this node's rank of it.
    pub group: Option<crate::group::Group>,
}

/// Launcher words per engine (AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND), read by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launchers {
    pub vllm: Option<String>,
    pub sglang: Option<String>,
    /// The engine versions to plan for (`plan`/`dry-run`); none: the newest flag tables, and
    /// the version rules are left to the supervisor's probe (`serve`).
    pub versions: crate::engine::EngineVersions,
}

/// Everything `decide` decides on.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub topology: &'a Topology,
    /// The model as the user gave it (also the served model name).
    pub model: &'a str,
    /// The hub id or local path the engine should load when a recipe names no checkpoint.
    pub checkpoint: &'a str,
    pub facts: &'a ModelFacts,
    pub recipes: &'a [LoadedRecipe],
    pub want: &'a Want,
    /// `--engine-args` / AIM_ENGINE_ARGS, already parsed.
    pub user_args: &'a IndexMap<String, Value>,
    pub launchers: &'a Launchers,
    pub engine_port: u16,
}

/// One recipe's verdict, for `recipes` and `plan`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecipeVerdict {
    pub id: String,
    pub path: PathBuf,
    pub model: Option<String>,
    pub engine: Engine,
    pub gpu: String,
    /// GPUs on each node.
    pub gpu_count: u32,
    /// Nodes the recipe spans.
    pub nodes: u32,
    pub precision: Precision,
    pub metric: Metric,
    #[serde(rename = "type")]
    pub kind: RecipeType,
    pub manual_selection_only: bool,
    pub priority: usize,
    pub verdict: Verdict,
    pub detail: String,
}

/// The recipe behind one launch (parallel to `Plan::launches`).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSource {
    pub id: String,
    /// None for generated defaults.
    pub path: Option<PathBuf>,
    pub recipe: Recipe,
    /// The checkpoint the engine loads.
    pub checkpoint: String,
}

/// The plan plus what `plan`/`dry-run`/`recipes` show about how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub plan: Plan,
    pub sources: Vec<LaunchSource>,
    pub verdicts: Vec<RecipeVerdict>,
    pub preferred_gpu_count: u32,
    pub preferred_precision: Precision,
    /// Weight bytes of the model, when known (exact from the safetensors index, else estimated).
    pub weight_bytes: Option<u64>,
}
