//! Why planning failed, as data: each variant keeps what the message is made of, and
//! `Display` renders the message (with what to do) at the edge.

use crate::engine::CommandError;
use crate::model::config::{Fit, TpError};
use crate::recipe::select::Verdict;
use crate::types::{Engine, Metric, Precision};
use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// No usable GPU at all.
    #[error("{0}")]
    NoGpu(NoGpu),
    /// Nothing fits; `hint` says what would.
    #[error("{why}; {hint}")]
    NoFit { why: Box<NoFit>, hint: Suggestion },
    /// `--recipe ID` names no recipe on the search path.
    #[error(
        "no recipe `{id}` for {model} on the search path{}",
        if close.is_empty() {
            String::from("; `aim-engine recipes MODEL` lists them")
        } else {
            format!("; did you mean: {}", close.join(", "))
        }
    )]
    UnknownRecipe {
        id: String,
        model: String,
        /// Recipe ids close to `id`.
        close: Vec<String>,
    },
    /// The chosen recipe spans several nodes and this process is in no group.
    #[error(
        "recipe {recipe} spans {nodes} nodes ({total} GPUs; the model does not fit one node): run it as a group of {nodes}, one aim-engine per node, each told its place: AIM_NNODES={nodes}, AIM_NODE_RANK (0 on the leader) and AIM_LEADER_ADDR (or as a LeaderWorkerSet of size {nodes}, whose variables say the same; see deploy/kubernetes)"
    )]
    NeedsGroup {
        recipe: String,
        nodes: u32,
        total: u32,
    },
    /// The engine command could not be built (bad user args).
    #[error("recipe {recipe}: cannot build the engine command: {source}")]
    Command {
        recipe: String,
        source: CommandError,
    },
}

/// Why there is no usable GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGpu {
    /// No AMD GPU at all.
    NoneFound,
    /// Every GPU was left out: (KFD node, why).
    AllExcluded(Vec<(u32, String)>),
}

impl fmt::Display for NoGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoGpu::NoneFound => f.write_str(
                "no AMD GPU was found (is /dev/kfd passed to the container, e.g. `--device /dev/kfd --device /dev/dri`?)",
            ),
            NoGpu::AllExcluded(ex) => {
                let ex: Vec<String> = ex
                    .iter()
                    .map(|(node, reason)| format!("node {node}: {reason}"))
                    .collect();
                write!(f, "no usable AMD GPU ({})", ex.join("; "))
            }
        }
    }
}

/// Why nothing fits this host.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoFit {
    #[error("{asked} GPUs were asked for but only {usable} {product} GPU(s) are usable")]
    TooFewGpus {
        asked: u32,
        usable: u32,
        product: String,
    },
    /// `--recipe ID` names a recipe that cannot run here.
    #[error("recipe `{id}` cannot run here: {} ({detail})", verdict.as_str())]
    RecipeCannotRun {
        id: String,
        verdict: Verdict,
        detail: String,
    },
    /// Generated defaults cannot give this precision from this checkpoint.
    #[error(
        "no recipe for {model} offers {precision} on {product}, and {precision} cannot be generated from a {} checkpoint; \
         ask for --precision bf16 (or fp8), or use a pre-quantized {precision} checkpoint",
        checkpoint.map(|c| c.as_str()).unwrap_or("16-bit")
    )]
    Precision {
        model: String,
        precision: Precision,
        product: String,
        checkpoint: Option<Precision>,
    },
    /// The model cannot be split over the GPU count asked for.
    #[error(
        "{model} cannot be split over {gpus} GPUs: {why}; valid GPU counts here: {}",
        counts_text(valid)
    )]
    CannotSplit {
        model: String,
        gpus: u32,
        why: TpError,
        valid: Vec<u32>,
    },
    /// The model cannot be split over any count of the usable GPUs.
    #[error("{model} cannot be split over any of the {usable} usable GPUs ({why})")]
    CannotSplitAny {
        model: String,
        usable: u32,
        why: String,
    },
    /// The weights (and KV cache) do not fit even with a shorter context.
    #[error(
        "{model} does not fit on {gpus} {product} GPU(s): {}; it needs at least {min_gpus} such GPUs ({usable} usable){}",
        fit.describe(),
        try_count.map(|n| format!("; try GPU_COUNT {n}")).unwrap_or_default()
    )]
    DoesNotFit {
        model: String,
        gpus: u32,
        product: String,
        fit: Fit,
        min_gpus: u64,
        usable: u32,
        /// The GPU count to try instead, when the user asked for one.
        try_count: Option<u64>,
    },
}

fn counts_text(valid: &[u32]) -> String {
    if valid.is_empty() {
        "none".into()
    } else {
        valid
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What would fit instead: the plan with the user's count/precision/engine/metric
/// constraints dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suggestion {
    Recipe {
        id: String,
        model: String,
        gpu_count: u32,
        precision: Precision,
        engine: Engine,
        metric: Metric,
    },
    Generated {
        model: String,
        gpu_count: u32,
        precision: Precision,
    },
    Nothing,
}

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Suggestion::Recipe {
                id,
                model,
                gpu_count,
                precision,
                engine,
                metric,
            } => write!(
                f,
                "what would fit: recipe {id} ({gpu_count} GPU(s), {precision}, {engine}, {metric}): `aim-engine plan {model} {gpu_count} --precision {precision} --backend {engine}`"
            ),
            Suggestion::Generated {
                model,
                gpu_count,
                precision,
            } => write!(
                f,
                "what would fit: generated defaults on {gpu_count} GPU(s) in {precision}: `aim-engine plan {model} {gpu_count} --precision {precision}`"
            ),
            Suggestion::Nothing => f.write_str("no other GPU count or precision fits either"),
        }
    }
}
