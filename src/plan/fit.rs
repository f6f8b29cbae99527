//! The memory and tensor-parallel checks of a model-agnostic recipe, and the engine
//! arguments they read.

use crate::model::config::{self, ModelFacts};
use crate::recipe::Recipe;
use crate::recipe::select::Verdict;
use crate::types::Precision;
use indexmap::IndexMap;
use serde_json::Value;

pub(super) fn kv_bytes(args: &IndexMap<String, Value>) -> u64 {
    match args.get("kv-cache-dtype").and_then(Value::as_str) {
        Some(s) if s.starts_with("fp8") => 1,
        _ => 2,
    }
}

pub(super) fn arg_u64(args: &IndexMap<String, Value>, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| {
        args.get(*k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    })
}

pub(super) fn arg_f64(args: &IndexMap<String, Value>, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| {
        args.get(*k).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    })
}

/// The context a fit check assumes: the recipe's own max length, else the model's, capped at 32k.
pub(super) fn context_for(args: &IndexMap<String, Value>, facts: &ModelFacts) -> u64 {
    arg_u64(args, &["max-model-len", "context-length"]).unwrap_or_else(|| {
        facts
            .config
            .as_ref()
            .and_then(|c| c.max_position_embeddings)
            .unwrap_or(32768)
            .min(32768)
    })
}

/// Tensor-parallel validity (needs config.json) and memory fit (weights from the index,
/// config.json or the name; the KV cache only with config.json) of a model-agnostic recipe.
pub(super) fn general_check(
    facts: &ModelFacts,
    r: &Recipe,
    vram: Option<u64>,
) -> Option<(Verdict, String)> {
    // Over several nodes: the tensor parallel the group runs (a recipe's multiple of the GPUs
    // per node spans nodes), and the weights and KV cache spread over every GPU of it.
    let m = &r.metadata;
    let tp = crate::engine::multinode::tensor_parallel_of(
        m.engine,
        m.gpu_count,
        m.nodes,
        &[&r.engine_args],
    );
    if let Some(cfg) = facts.config.as_ref()
        && let Err(e) = cfg.tp_check(tp)
    {
        return Some((Verdict::TpInvalid, e.to_string()));
    }
    let world = m.total_gpus().max(tp);
    let vram = vram?;
    facts.weight_bytes?;
    let util = arg_f64(
        &r.engine_args,
        &["gpu-memory-utilization", "mem-fraction-static"],
    )
    .unwrap_or(0.9);
    let ctx = context_for(&r.engine_args, facts);
    match config::fit(facts, world, vram, ctx, util, kv_bytes(&r.engine_args)) {
        Ok(_) => None,
        Err(f) => Some((Verdict::DoesNotFit, f.describe())),
    }
}

pub(super) fn dtype_arg(p: Precision) -> Option<&'static str> {
    match p {
        Precision::Bf16 => Some("bfloat16"),
        Precision::Fp16 => Some("float16"),
        Precision::Fp32 => Some("float32"),
        _ => None,
    }
}
