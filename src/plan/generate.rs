//! Generated defaults when no recipe fits: conservative flags, sized to the model.

use super::fit::{context_for, dtype_arg};
use super::{LaunchSource, NoFit, PlanInput};
use crate::gpu::Gpu;
use crate::model::config::{self, Fit, TpError};
use crate::recipe::{Metadata, Recipe};
use crate::types::{Engine, Metric, Precision, RecipeType};
use indexmap::IndexMap;
use serde_json::Value;

/// The GPUs a plan is made for: the usable ones, their product and gfx, the smallest VRAM.
pub(super) struct OnGpus<'a> {
    pub usable: Vec<&'a Gpu>,
    pub product: String,
    pub gfx: String,
    pub vram: Option<u64>,
}

impl OnGpus<'_> {
    pub fn count(&self) -> u32 {
        self.usable.len() as u32
    }
}

/// vLLM's memory fraction in generated defaults, and the KV cache's bytes per element.
const UTIL: f64 = 0.9;
const KV_BYTES: u64 = 2;

fn is_instinct(gfx: &str) -> bool {
    gfx.starts_with("gfx94") || gfx.starts_with("gfx95") || gfx.starts_with("gfx90a")
}

/// Generated defaults for `input` on `on`; `preferred` is the (GPU count, precision) the
/// model's size suggests where the user left them open.
pub(super) fn generate(
    input: &PlanInput<'_>,
    on: &OnGpus<'_>,
    preferred: (u32, Precision),
    reasons: &mut Vec<String>,
) -> Result<LaunchSource, NoFit> {
    let want = input.want;
    let engine = want.engine.unwrap_or(Engine::Vllm);
    let precision = want.precision.unwrap_or(preferred.1);
    let mut args = precision_args(input, &on.product, precision)?;
    let cfg = input.facts.config.as_ref();
    let valid = |tp: u32| cfg.map(|c| c.tp_check(tp)).unwrap_or(Ok(()));
    let mut tp = tensor_parallel(input, on.count(), preferred.0, &valid)?;
    if let (Some(vram), Some(_)) = (on.vram, input.facts.weight_bytes) {
        if cfg.is_none() {
            let from = match input.facts.source {
                crate::model::SizeSource::Hub { .. } => "the Hub's file listing",
                crate::model::SizeSource::Index => "the safetensors index",
                _ => "the name",
            };
            reasons.push(format!(
                "no config.json in the Hugging Face cache: memory checked for the weights only (size from {from}), tensor-parallel validity not checked"
            ));
        }
        let sizing = Sizing {
            input,
            on,
            vram,
            engine,
            valid: &valid,
        };
        tp = sizing.fit(tp, &mut args, reasons)?;
    } else {
        reasons.push(
            "the model's size is unknown: tensor-parallel validity and memory fit were not checked"
                .into(),
        );
    }
    if let Some(c) = cfg
        && valid(tp).is_ok()
    {
        reasons.push(format!(
            "tensor-parallel size {tp} divides the model's {} attention heads",
            c.num_attention_heads
        ));
    }
    let mut env = IndexMap::new();
    if is_instinct(&on.gfx) {
        match engine {
            Engine::Vllm => env.insert("VLLM_ROCM_USE_AITER".into(), "1".into()),
            Engine::Sglang => env.insert("SGLANG_USE_AITER".into(), "1".into()),
        };
    }
    if engine == Engine::Vllm {
        args.insert("gpu-memory-utilization".into(), Value::from(UTIL));
    }
    let metadata = Metadata {
        engine,
        gpu: on.product.clone(),
        gpu_count: tp,
        nodes: 1,
        precision,
        metric: want.metric.unwrap_or(Metric::Latency),
        kind: RecipeType::General,
        manual_selection_only: false,
    };
    let id = format!("generated/{}", crate::recipe::canonical_stem(&metadata));
    Ok(LaunchSource {
        id,
        path: None,
        checkpoint: input.checkpoint.to_string(),
        recipe: Recipe {
            aim_id: None,
            model_id: None,
            metadata,
            engine_args: args,
            env_vars: env,
        },
    })
}

/// The engine arguments that give `precision`, or why it cannot be generated.
fn precision_args(
    input: &PlanInput<'_>,
    product: &str,
    precision: Precision,
) -> Result<IndexMap<String, Value>, NoFit> {
    let checkpoint_p = input.facts.checkpoint_precision;
    let mut args: IndexMap<String, Value> = IndexMap::new();
    match precision {
        Precision::Bf16 | Precision::Fp16 | Precision::Fp32 => {
            if let Some(d) = dtype_arg(precision) {
                args.insert("dtype".into(), Value::from(d));
            }
        }
        Precision::Fp8 if checkpoint_p == Some(Precision::Fp8) => {}
        Precision::Fp8 => {
            // Online FP8 quantization of a 16-bit checkpoint works on ROCm in both engines.
            args.insert("quantization".into(), Value::from("fp8"));
        }
        p if checkpoint_p == Some(p) => {}
        p => {
            return Err(NoFit::Precision {
                model: input.model.to_string(),
                precision: p,
                product: product.to_string(),
                checkpoint: checkpoint_p,
            });
        }
    }
    Ok(args)
}

/// Tensor-parallel size: the user's, else the preferred one, moved to a valid size.
fn tensor_parallel(
    input: &PlanInput<'_>,
    n_usable: u32,
    preferred_count: u32,
    valid: &dyn Fn(u32) -> Result<(), TpError>,
) -> Result<u32, NoFit> {
    if let Some(n) = input.want.gpu_count {
        if let Err(e) = valid(n) {
            return Err(NoFit::CannotSplit {
                model: input.model.to_string(),
                gpus: n,
                why: e,
                valid: (1..=n_usable).filter(|t| valid(*t).is_ok()).collect(),
            });
        }
        return Ok(n);
    }
    let mut cands: Vec<u32> = (1..=n_usable).filter(|t| valid(*t).is_ok()).collect();
    cands.sort_by_key(|t| (t.abs_diff(preferred_count), std::cmp::Reverse(*t)));
    match cands.first() {
        Some(t) => Ok(*t),
        None => Err(NoFit::CannotSplitAny {
            model: input.model.to_string(),
            usable: n_usable,
            why: valid(n_usable)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        }),
    }
}

/// The memory check of generated defaults on GPUs of `vram` bytes each.
struct Sizing<'a> {
    input: &'a PlanInput<'a>,
    on: &'a OnGpus<'a>,
    vram: u64,
    engine: Engine,
    valid: &'a dyn Fn(u32) -> Result<(), TpError>,
}

impl Sizing<'_> {
    /// The tensor-parallel size the model fits on, starting at `tp`: the context is limited
    /// when that makes it fit, more GPUs are tried when the user left the count open.
    fn fit(
        &self,
        mut tp: u32,
        args: &mut IndexMap<String, Value>,
        reasons: &mut Vec<String>,
    ) -> Result<u32, NoFit> {
        let facts = self.input.facts;
        let ctx = context_for(args, facts);
        loop {
            let f = match config::fit(facts, tp, self.vram, ctx, UTIL, KV_BYTES) {
                Ok(f) => {
                    reasons.push(format!(
                        "memory check on {tp} GPU(s): fits ({})",
                        f.describe()
                    ));
                    return Ok(tp);
                }
                Err(f) => f,
            };
            if let Some(shorter) =
                config::max_context_that_fits(facts, tp, self.vram, UTIL, KV_BYTES)
            {
                let key = if self.engine == Engine::Vllm {
                    "max-model-len"
                } else {
                    "context-length"
                };
                args.insert(key.into(), Value::from(shorter));
                reasons.push(format!(
                    "memory check on {tp} GPU(s): {ctx} tokens of context do not fit ({}); context limited to {shorter} tokens",
                    f.describe()
                ));
                return Ok(tp);
            }
            // Try more GPUs when the user left the count open.
            let next = (tp + 1..=self.on.count()).find(|t| (self.valid)(*t).is_ok());
            match (self.input.want.gpu_count, next) {
                (None, Some(t)) => {
                    reasons.push(format!(
                        "memory check on {tp} GPU(s): does not fit ({}); trying {t}",
                        f.describe()
                    ));
                    tp = t;
                }
                _ => return Err(self.does_not_fit(tp, &f)),
            }
        }
    }

    fn does_not_fit(&self, tp: u32, f: &Fit) -> NoFit {
        let n_usable = self.on.count();
        let need = self.input.facts.weight_bytes.unwrap_or(0) as f64;
        let per = (self.vram as f64 * UTIL) - config::OVERHEAD_BYTES as f64;
        let min_gpus = if per > 0.0 {
            (need / per).ceil() as u64
        } else {
            0
        };
        let try_count = (self.input.want.gpu_count.is_some() && min_gpus <= u64::from(n_usable))
            .then(|| min_gpus.next_power_of_two().min(u64::from(n_usable)));
        NoFit::DoesNotFit {
            model: self.input.model.to_string(),
            gpus: tp,
            product: self.on.product.clone(),
            fit: f.clone(),
            min_gpus,
            usable: n_usable,
            try_count,
        }
    }
}
