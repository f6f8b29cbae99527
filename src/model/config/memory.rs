//! The memory side of sizing: the GPU count and precision to aim for when the user gave
//! none, and whether weights, KV cache and overhead fit a launch's GPUs.

use super::{GIB, ModelFacts, SizeSource, fmt_params};
use crate::types::Precision;

/// The GPU count and precision to aim for when the user gave none, and why.
///
/// The original design's rule, by parameter count: up to ~10B -> 1 GPU fp16 (7-8B), up to
/// ~20B -> 2 GPUs bf16 (13-14B), up to ~48B -> 4 GPUs bf16 (32-34B), larger -> 8 GPUs bf16
/// (70-72B). When the weights would not fit at that count on these GPUs (`vram_per_gpu`), the
/// count doubles. Unknown size: the largest power of two of usable GPUs. A pre-quantized
/// checkpoint prefers its own precision. Always capped at the usable GPUs (at least 1).
pub fn preferred(
    facts: &ModelFacts,
    usable: u32,
    vram_per_gpu: Option<u64>,
) -> (u32, Precision, String) {
    let usable = usable.max(1);
    let (mut count, mut precision, mut why) = match facts.params {
        Some(p) => {
            let b = p / 1e9;
            let (c, prec) = if b <= 10.5 {
                (1, Precision::Fp16)
            } else if b <= 20.0 {
                (2, Precision::Bf16)
            } else if b <= 48.0 {
                (4, Precision::Bf16)
            } else {
                (8, Precision::Bf16)
            };
            (
                c,
                prec,
                format!(
                    "a {}-parameter model runs best on {c} GPU(s) in {prec}",
                    fmt_params(p)
                ),
            )
        }
        None => {
            let c = 1u32 << (31 - usable.leading_zeros());
            (
                c,
                Precision::Bf16,
                format!("the model's size is unknown, so all {c} usable GPU(s) in bf16"),
            )
        }
    };
    if let (Some(w), Some(vram)) = (facts.weight_bytes, vram_per_gpu)
        && vram > 0
    {
        // Leave a quarter of each GPU for the KV cache, activations and graphs.
        while (w as f64 / f64::from(count)) > vram as f64 * 0.75 && count < 8 {
            count *= 2;
            why = format!(
                "{:.0} GiB of weights need {count} GPUs of {:.0} GiB",
                w as f64 / GIB,
                vram as f64 / GIB
            );
        }
    }
    if let Some(cp) = facts.checkpoint_precision
        && !matches!(cp, Precision::Bf16 | Precision::Fp16 | Precision::Fp32)
    {
        precision = cp;
        why.push_str(&format!(" (the checkpoint is {cp})"));
    }
    if count > usable {
        why.push_str(&format!(", capped at the {usable} usable GPU(s)"));
        count = usable;
    }
    (count, precision, why)
}

/// Whether the model's weights cannot fit one node: more than three quarters of the VRAM
/// of all `usable` GPUs (the same quarter left for KV cache and graphs as [`preferred`]).
/// False when the weights' size or the VRAM is unknown: only what is known to be too big
/// for one node makes multi-node recipes eligible without a group.
pub fn beyond_one_node(facts: &ModelFacts, usable: u32, vram_per_gpu: Option<u64>) -> bool {
    match (facts.weight_bytes, vram_per_gpu) {
        (Some(w), Some(vram)) if vram > 0 && usable > 0 => {
            w as f64 > vram as f64 * f64::from(usable) * 0.75
        }
        _ => false,
    }
}

/// Memory estimate for one launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub weights_per_gpu: u64,
    pub kv_per_gpu: u64,
    pub budget_per_gpu: u64,
    /// The context length the estimate used.
    pub context: u64,
    /// Whether the KV cache was estimated (needs config.json).
    pub kv_known: bool,
    /// The weights are the Hub listing's (the model is not in the cache).
    pub weights_from_hub: bool,
}

/// Fixed per-GPU allowance for activations, graphs and the runtime: vLLM needs about
/// 2-6 GiB per GPU for these with dense models at default batch sizes.
pub const OVERHEAD_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Whether weights/TP + overhead + KV for `context` tokens fit in `util` of each GPU.
/// Without config.json the KV part is unknown: the weights alone are checked.
pub fn fit(
    facts: &ModelFacts,
    tp: u32,
    vram_per_gpu: u64,
    context: u64,
    util: f64,
    kv_bytes: u64,
) -> Result<Fit, Fit> {
    let weights_per_gpu = facts.weight_bytes.unwrap_or(0) / u64::from(tp.max(1));
    let kv_per_gpu = facts
        .config
        .as_ref()
        .map(|c| {
            c.kv_bytes_per_token_per_gpu(tp, kv_bytes)
                .saturating_mul(context)
        })
        .unwrap_or(0);
    let budget_per_gpu = (vram_per_gpu as f64 * util) as u64;
    let f = Fit {
        weights_per_gpu,
        kv_per_gpu,
        budget_per_gpu,
        context,
        kv_known: facts.config.is_some(),
        weights_from_hub: matches!(facts.source, SizeSource::Hub { .. }),
    };
    if weights_per_gpu
        .saturating_add(OVERHEAD_BYTES)
        .saturating_add(kv_per_gpu)
        <= budget_per_gpu
    {
        Ok(f)
    } else {
        Err(f)
    }
}

/// The longest context (a multiple of 1024, at least 2048) that fits, if any.
pub fn max_context_that_fits(
    facts: &ModelFacts,
    tp: u32,
    vram_per_gpu: u64,
    util: f64,
    kv_bytes: u64,
) -> Option<u64> {
    let c = facts.config.as_ref()?;
    let per_token = c.kv_bytes_per_token_per_gpu(tp, kv_bytes).max(1);
    let weights = facts.weight_bytes.unwrap_or(0) / u64::from(tp.max(1));
    let budget = (vram_per_gpu as f64 * util) as u64;
    let free = budget.checked_sub(weights.saturating_add(OVERHEAD_BYTES))?;
    let tokens = (free / per_token) / 1024 * 1024;
    (tokens >= 2048).then_some(tokens)
}

impl Fit {
    pub fn describe(&self) -> String {
        let kv = if self.kv_known {
            format!(
                "{:.1} GiB KV cache for {} tokens",
                self.kv_per_gpu as f64 / GIB,
                self.context
            )
        } else {
            "KV cache (not estimated without config.json)".to_string()
        };
        format!(
            "{:.1} GiB weights{} + {kv} + {:.0} GiB overhead per GPU vs {:.1} GiB usable",
            self.weights_per_gpu as f64 / GIB,
            if self.weights_from_hub {
                " (from the Hub's file listing)"
            } else {
                ""
            },
            OVERHEAD_BYTES as f64 / GIB,
            self.budget_per_gpu as f64 / GIB
        )
    }
}
