//! Planning: topology x catalogue x request -> the ordered launches (chosen recipe first,
//! then the fallback chain), with the reasons.
//!
//! OWNER: recipe helper. CONTRACT: `Plan` and its fields are used by `supervise` and `host`;
//! extend, do not rename or remove.
//!
//! Pure: the caller detects the GPUs, loads the recipes, reads the model's config.json and the
//! environment; `plan` only decides. When no recipe fits, general recipes and then generated
//! defaults serve, checked for tensor-parallel validity and memory fit when config.json is
//! known.

use crate::engine::{self, CommandInput};
use crate::gpu::{Gpu, Topology};
use crate::launch::{Launch, SelectedGpu};
use crate::model::config::{self, ModelFacts};
use crate::recipe::select::{self, Assessed, Host, Request, Verdict};
use crate::recipe::{LoadedRecipe, Metadata, Recipe};
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
}

/// Launcher words per engine (AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND), read by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launchers {
    pub vllm: Option<String>,
    pub sglang: Option<String>,
}

/// Everything `plan` decides on.
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
    pub gpu_count: u32,
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No usable GPU at all.
    #[error("{0}")]
    NoGpu(String),
    /// Nothing fits; the message says what would.
    #[error("{0}")]
    NoFit(String),
    /// `--recipe ID` names no recipe on the search path.
    #[error("{0}")]
    UnknownRecipe(String),
    /// The engine command could not be built (bad user args).
    #[error("{0}")]
    Command(String),
}

/// GPUs of the same product and gfx as the first one: the ones a single engine may span.
pub fn usable_gpus(t: &Topology) -> Vec<&Gpu> {
    match t.gpus.first() {
        Some(first) => t
            .gpus
            .iter()
            .filter(|g| g.product == first.product && g.gfx == first.gfx)
            .collect(),
        None => Vec::new(),
    }
}

/// The first `n` usable GPUs, preferring a set that shares an xGMI hive (or is fully linked
/// by `Topology::xgmi`), so tensor-parallel traffic stays on xGMI.
pub fn pick_gpus<'a>(usable: &[&'a Gpu], xgmi: &[(u32, u32)], n: usize) -> Vec<&'a Gpu> {
    if n == 0 || usable.len() < n {
        return usable.iter().take(n).copied().collect();
    }
    // 1. Same non-zero hive id.
    let mut hives: Vec<u64> = Vec::new();
    for g in usable {
        if g.hive_id != 0 && !hives.contains(&g.hive_id) {
            hives.push(g.hive_id);
        }
    }
    for h in hives {
        let members: Vec<&Gpu> = usable.iter().filter(|g| g.hive_id == h).copied().collect();
        if members.len() >= n {
            return members.into_iter().take(n).collect();
        }
    }
    // 2. A greedy clique over direct links.
    if !xgmi.is_empty() && n > 1 {
        let linked = |a: u32, b: u32| xgmi.iter().any(|&(x, y)| (x, y) == (a.min(b), a.max(b)));
        for start in 0..usable.len() {
            let mut set = vec![usable[start]];
            for g in &usable[start + 1..] {
                if set.len() < n && set.iter().all(|s| linked(s.index, g.index)) {
                    set.push(g);
                }
            }
            if set.len() == n {
                return set;
            }
        }
    }
    usable.iter().take(n).copied().collect()
}

fn kv_bytes(args: &IndexMap<String, Value>) -> u64 {
    match args.get("kv-cache-dtype").and_then(Value::as_str) {
        Some(s) if s.starts_with("fp8") => 1,
        _ => 2,
    }
}

fn arg_u64(args: &IndexMap<String, Value>, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| {
        args.get(*k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    })
}

fn arg_f64(args: &IndexMap<String, Value>, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| {
        args.get(*k).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    })
}

/// The context a fit check assumes: the recipe's own max length, else the model's, capped at 32k.
fn context_for(args: &IndexMap<String, Value>, facts: &ModelFacts) -> u64 {
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
fn general_check(facts: &ModelFacts, r: &Recipe, vram: Option<u64>) -> Option<(Verdict, String)> {
    let tp = r.metadata.gpu_count;
    if let Some(cfg) = facts.config.as_ref()
        && let Err(e) = cfg.tp_check(tp)
    {
        return Some((Verdict::TpInvalid, e));
    }
    let vram = vram?;
    facts.weight_bytes?;
    let util = arg_f64(
        &r.engine_args,
        &["gpu-memory-utilization", "mem-fraction-static"],
    )
    .unwrap_or(0.9);
    let ctx = context_for(&r.engine_args, facts);
    match config::fit(facts, tp, vram, ctx, util, kv_bytes(&r.engine_args)) {
        Ok(_) => None,
        Err(f) => Some((Verdict::DoesNotFit, f.describe())),
    }
}

fn verdict_rows(recipes: &[LoadedRecipe], assessed: &[Assessed]) -> Vec<RecipeVerdict> {
    assessed
        .iter()
        .map(|a| {
            let r = &recipes[a.index];
            let m = &r.recipe.metadata;
            RecipeVerdict {
                id: r.id.clone(),
                path: r.path.clone(),
                model: r.recipe.for_model().map(str::to_string),
                engine: m.engine,
                gpu: m.gpu.clone(),
                gpu_count: m.gpu_count,
                precision: m.precision,
                metric: m.metric,
                kind: m.kind,
                manual_selection_only: m.manual_selection_only,
                priority: r.origin.priority,
                verdict: a.verdict,
                detail: a.detail.clone(),
            }
        })
        .collect()
}

/// Verdicts of every recipe for this host and request, without choosing (`recipes`).
pub fn assess_all(
    topology: &Topology,
    model: Option<&str>,
    facts: Option<&ModelFacts>,
    recipes: &[LoadedRecipe],
    want: &Want,
) -> Vec<RecipeVerdict> {
    let usable = usable_gpus(topology);
    let vram = usable.iter().map(|g| g.vram_bytes).filter(|v| *v > 0).min();
    let (pc, pp) = match facts {
        Some(f) => {
            let (c, p, _) = config::preferred(f, usable.len() as u32, vram);
            (c, Some(p))
        }
        None => (1, None),
    };
    let req = request(model, want, pc, pp);
    let host = host_of(&usable, want);
    let check = |r: &LoadedRecipe| facts.and_then(|f| general_check(f, &r.recipe, vram));
    let s = select::select(recipes, &req, &host, Some(&check));
    verdict_rows(recipes, &s.assessed)
}

fn request(model: Option<&str>, want: &Want, pc: u32, pp: Option<Precision>) -> Request {
    Request {
        model: model.map(str::to_string),
        gpu_count: want.gpu_count,
        precision: want.precision,
        engine: want.engine,
        metric: want.metric,
        recipe: want.recipe.clone(),
        preferred_gpu_count: pc,
        preferred_precision: pp,
    }
}

fn host_of(usable: &[&Gpu], want: &Want) -> Host {
    Host {
        usable_gpus: usable.len() as u32,
        product: want
            .gpu_model
            .clone()
            .filter(|p| !p.trim().is_empty())
            .or_else(|| usable.first().map(|g| g.product.clone())),
        gfx: usable.first().map(|g| g.gfx.clone()),
    }
}

fn dtype_arg(p: Precision) -> Option<&'static str> {
    match p {
        Precision::Bf16 => Some("bfloat16"),
        Precision::Fp16 => Some("float16"),
        Precision::Fp32 => Some("float32"),
        _ => None,
    }
}

fn is_instinct(gfx: &str) -> bool {
    gfx.starts_with("gfx94") || gfx.starts_with("gfx95") || gfx.starts_with("gfx90a")
}

/// Generated defaults when no recipe fits: conservative flags, sized to the model.
#[allow(clippy::too_many_arguments)]
fn generate(
    input: &PlanInput<'_>,
    usable: &[&Gpu],
    product: &str,
    gfx: &str,
    vram: Option<u64>,
    preferred_count: u32,
    preferred_precision: Precision,
    reasons: &mut Vec<String>,
) -> Result<LaunchSource, PlanError> {
    let want = input.want;
    let facts = input.facts;
    let n_usable = usable.len() as u32;
    let engine = want.engine.unwrap_or(Engine::Vllm);
    let precision = want.precision.unwrap_or(preferred_precision);
    let checkpoint_p = facts.checkpoint_precision;
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
            return Err(PlanError::NoFit(format!(
                "no recipe for {} offers {p} on {product}, and {p} cannot be generated from a {} checkpoint; \
                 ask for --precision bf16 (or fp8), or use a pre-quantized {p} checkpoint",
                input.model,
                checkpoint_p.map(|c| c.as_str()).unwrap_or("16-bit")
            )));
        }
    }
    // Tensor-parallel size: the user's, else the preferred one, moved to a valid size.
    let cfg = facts.config.as_ref();
    let valid = |tp: u32| cfg.map(|c| c.tp_check(tp)).unwrap_or(Ok(()));
    let mut tp = match want.gpu_count {
        Some(n) => {
            if let Err(e) = valid(n) {
                return Err(PlanError::NoFit(format!(
                    "{} cannot be split over {n} GPUs: {e}; valid GPU counts here: {}",
                    input.model,
                    valid_counts(&valid, n_usable)
                )));
            }
            n
        }
        None => {
            let mut cands: Vec<u32> = (1..=n_usable).filter(|t| valid(*t).is_ok()).collect();
            cands.sort_by_key(|t| (t.abs_diff(preferred_count), std::cmp::Reverse(*t)));
            match cands.first() {
                Some(t) => *t,
                None => {
                    return Err(PlanError::NoFit(format!(
                        "{} cannot be split over any of the {n_usable} usable GPUs ({})",
                        input.model,
                        valid(n_usable).err().unwrap_or_default()
                    )));
                }
            }
        }
    };
    let util = 0.9;
    let kvb = 2;
    if let (Some(vram), Some(_)) = (vram, facts.weight_bytes) {
        if cfg.is_none() {
            reasons.push(
                "no config.json in the Hugging Face cache: memory checked for the weights only (size from the name), tensor-parallel validity not checked".into(),
            );
        }
        let ctx = context_for(&args, facts);
        loop {
            match config::fit(facts, tp, vram, ctx, util, kvb) {
                Ok(f) => {
                    reasons.push(format!(
                        "memory check on {tp} GPU(s): fits ({})",
                        f.describe()
                    ));
                    break;
                }
                Err(f) => {
                    if let Some(shorter) = config::max_context_that_fits(facts, tp, vram, util, kvb)
                    {
                        let key = if engine == Engine::Vllm {
                            "max-model-len"
                        } else {
                            "context-length"
                        };
                        args.insert(key.into(), Value::from(shorter));
                        reasons.push(format!(
                            "memory check on {tp} GPU(s): {ctx} tokens of context do not fit ({}); context limited to {shorter} tokens",
                            f.describe()
                        ));
                        break;
                    }
                    // Try more GPUs when the user left the count open.
                    let next = (tp + 1..=n_usable).find(|t| valid(*t).is_ok());
                    match (want.gpu_count, next) {
                        (None, Some(t)) => {
                            reasons.push(format!(
                                "memory check on {tp} GPU(s): does not fit ({}); trying {t}",
                                f.describe()
                            ));
                            tp = t;
                        }
                        _ => {
                            let need = facts.weight_bytes.unwrap_or(0) as f64;
                            let per = (vram as f64 * util) - config::OVERHEAD_BYTES as f64;
                            let min_gpus = if per > 0.0 {
                                (need / per).ceil() as u64
                            } else {
                                0
                            };
                            return Err(PlanError::NoFit(format!(
                                "{} does not fit on {tp} {product} GPU(s): {}; it needs at least {min_gpus} such GPUs ({} usable){}",
                                input.model,
                                f.describe(),
                                n_usable,
                                if want.gpu_count.is_some() && min_gpus <= u64::from(n_usable) {
                                    format!(
                                        "; try GPU_COUNT {}",
                                        min_gpus.next_power_of_two().min(u64::from(n_usable))
                                    )
                                } else {
                                    String::new()
                                }
                            )));
                        }
                    }
                }
            }
        }
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
    if is_instinct(gfx) {
        match engine {
            Engine::Vllm => env.insert("VLLM_ROCM_USE_AITER".into(), "1".into()),
            Engine::Sglang => env.insert("SGLANG_USE_AITER".into(), "1".into()),
        };
    }
    if engine == Engine::Vllm {
        args.insert("gpu-memory-utilization".into(), Value::from(util));
    }
    let metadata = Metadata {
        engine,
        gpu: product.to_string(),
        gpu_count: tp,
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

fn valid_counts(valid: &dyn Fn(u32) -> Result<(), String>, usable: u32) -> String {
    let v: Vec<String> = (1..=usable)
        .filter(|t| valid(*t).is_ok())
        .map(|t| t.to_string())
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn source_of(r: &LoadedRecipe, checkpoint: &str) -> LaunchSource {
    LaunchSource {
        id: r.id.clone(),
        path: Some(r.path.clone()),
        recipe: r.recipe.clone(),
        checkpoint: r
            .recipe
            .model_id
            .clone()
            .unwrap_or_else(|| checkpoint.to_string()),
    }
}

fn build_launch(
    input: &PlanInput<'_>,
    usable: &[&Gpu],
    src: &LaunchSource,
) -> Result<Launch, PlanError> {
    let m = &src.recipe.metadata;
    let gpus = pick_gpus(usable, &input.topology.xgmi, m.gpu_count as usize);
    let ordinals: Vec<u32> = gpus.iter().map(|g| g.index).collect();
    let launcher = match m.engine {
        Engine::Vllm => input.launchers.vllm.as_deref(),
        Engine::Sglang => input.launchers.sglang.as_deref(),
    };
    let (served, aliases) = crate::model::served_names(input.model);
    let ci = CommandInput {
        engine: m.engine,
        model: &src.checkpoint,
        served_model_name: &served,
        served_aliases: &aliases,
        port: input.engine_port,
        tensor_parallel: m.gpu_count,
        recipe_args: &src.recipe.engine_args,
        user_args: input.user_args,
        recipe_env: &src.recipe.env_vars,
        ordinals: &ordinals,
        launcher,
    };
    let cmd = engine::build_command(&ci).map_err(|e| {
        PlanError::Command(format!(
            "recipe {}: cannot build the engine command: {e}",
            src.id
        ))
    })?;
    Ok(Launch {
        recipe_id: src.id.clone(),
        engine: m.engine,
        precision: m.precision,
        gpu_count: m.gpu_count,
        gpus: gpus
            .iter()
            .map(|g| SelectedGpu {
                ordinal: g.index,
                product: g.product.clone(),
                pci: g.pci.clone(),
                render_minor: g.render_minor,
            })
            .collect(),
        served_model_name: served.clone(),
        argv: cmd.argv,
        env: cmd.env,
        engine_port: input.engine_port,
        user_flags: input.user_args.keys().cloned().collect(),
    })
}

fn count_verdicts(rows: &[RecipeVerdict]) -> String {
    let mut counts: IndexMap<&str, usize> = IndexMap::new();
    for r in rows.iter().filter(|r| r.verdict != Verdict::Compatible) {
        *counts.entry(r.verdict.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_words(t: RecipeType) -> &'static str {
    match t {
        RecipeType::Optimized => "an optimized (benchmark-tuned)",
        RecipeType::Preview => "a preview",
        RecipeType::Unoptimized => "an unoptimized",
        RecipeType::General => "a general (model-agnostic)",
    }
}

/// Decides: the chosen launch, the fallback chain, the reasons.
pub fn plan(input: &PlanInput<'_>) -> Result<Planned, PlanError> {
    let usable = usable_gpus(input.topology);
    let Some(first) = usable.first() else {
        let why = if input.topology.excluded.is_empty() {
            "no AMD GPU was found (is /dev/kfd passed to the container, e.g. `--device /dev/kfd --device /dev/dri`?)".to_string()
        } else {
            let ex: Vec<String> = input
                .topology
                .excluded
                .iter()
                .map(|e| format!("node {}: {}", e.kfd_node, e.reason))
                .collect();
            format!("no usable AMD GPU ({})", ex.join("; "))
        };
        return Err(PlanError::NoGpu(why));
    };
    let product = first.product.clone();
    let gfx = first.gfx.clone();
    let n_usable = usable.len() as u32;
    let vram = usable.iter().map(|g| g.vram_bytes).filter(|v| *v > 0).min();
    let want = input.want;
    let (pref_count, pref_precision, pref_why) = config::preferred(input.facts, n_usable, vram);

    let mut reasons = vec![format!(
        "{n_usable} usable {product} GPU(s) ({gfx}{})",
        vram.map(|v| format!(", {:.0} GiB each", v as f64 / (1u64 << 30) as f64))
            .unwrap_or_default()
    )];
    let others = input.topology.gpus.len() - usable.len();
    if others > 0 {
        reasons.push(format!(
            "{others} other GPU(s) of a different product are left out: one engine spans GPUs of one kind"
        ));
    }
    if let Some(gm) = &want.gpu_model {
        reasons.push(format!(
            "recipes matched as if the GPUs were {gm} (--gpu-model)"
        ));
    }
    if let Some(n) = want.gpu_count
        && n > n_usable
    {
        return Err(PlanError::NoFit(format!(
            "{n} GPUs were asked for but only {n_usable} {product} GPU(s) are usable; {}",
            suggestion(input, &usable, n_usable)
        )));
    }
    reasons.push(format!("{}: {}", input.model, input.facts.describe()));
    match want.gpu_count {
        Some(n) => reasons.push(format!("{n} GPU(s) asked for")),
        None => reasons.push(format!(
            "preferred {pref_count} GPU(s) in {pref_precision}: {pref_why}"
        )),
    }

    let req = request(Some(input.model), want, pref_count, Some(pref_precision));
    let host = host_of(&usable, want);
    let check = |r: &LoadedRecipe| general_check(input.facts, &r.recipe, vram);
    let sel = select::select(input.recipes, &req, &host, Some(&check));
    let verdicts = verdict_rows(input.recipes, &sel.assessed);

    let mut sources: Vec<LaunchSource> = Vec::new();
    if let Some(id) = &want.recipe {
        let Some(a) = sel
            .assessed
            .iter()
            .find(|a| &input.recipes[a.index].id == id)
        else {
            let close = select::close_ids(id, input.recipes.iter().map(|r| r.id.as_str()));
            return Err(PlanError::UnknownRecipe(format!(
                "no recipe `{id}` for {} on the search path{}",
                input.model,
                if close.is_empty() {
                    String::from("; `aim-engine recipes MODEL` lists them")
                } else {
                    format!("; did you mean: {}", close.join(", "))
                }
            )));
        };
        if a.verdict != Verdict::Compatible {
            return Err(PlanError::NoFit(format!(
                "recipe `{id}` cannot run here: {} ({}); {}",
                a.verdict.as_str(),
                a.detail,
                suggestion(input, &usable, n_usable)
            )));
        }
        let r = &input.recipes[a.index];
        reasons.push(format!(
            "recipe {id} was asked for by --recipe (no fallbacks)"
        ));
        sources.push(source_of(r, input.checkpoint));
    } else if !sel.ranked.is_empty() {
        let r = &input.recipes[sel.ranked[0]];
        let m = &r.recipe.metadata;
        let mut why = format!(
            "chose {}: {} {} recipe for {} on {} GPU(s) in {}, tuned for {}",
            r.id,
            type_words(m.kind),
            m.engine,
            m.gpu,
            m.gpu_count,
            m.precision,
            m.metric
        );
        if want.gpu_count.is_none() {
            if m.gpu_count == pref_count {
                why.push_str(&format!("; its GPU count is the preferred {pref_count}"));
            } else {
                why.push_str(&format!(
                    "; no compatible recipe uses the preferred {pref_count} GPU(s), this is the closest"
                ));
            }
        }
        if !r.origin.builtin {
            why.push_str(&format!("; from {} (--recipes-dir)", r.path.display()));
        }
        reasons.push(why);
        for &i in &sel.ranked {
            sources.push(source_of(&input.recipes[i], input.checkpoint));
        }
        if sources.len() > 1 {
            reasons.push(format!(
                "{} more compatible recipe(s) form the fallback chain",
                sources.len() - 1
            ));
        }
    } else {
        if input.recipes.is_empty() {
            reasons.push(format!(
                "no recipe for {} or general recipe was found",
                input.model
            ));
        } else {
            reasons.push(format!(
                "none of the {} recipe(s) fits ({}): using generated defaults",
                input.recipes.len(),
                count_verdicts(&verdicts)
            ));
        }
        let g = generate(
            input,
            &usable,
            &product,
            &gfx,
            vram,
            pref_count,
            pref_precision,
            &mut reasons,
        )
        .map_err(|e| match e {
            PlanError::NoFit(m) => {
                PlanError::NoFit(format!("{m}; {}", suggestion(input, &usable, n_usable)))
            }
            other => other,
        })?;
        let m = &g.recipe.metadata;
        reasons.push(format!(
            "chose {}: generated {} defaults on {} GPU(s) in {}",
            g.id, m.engine, m.gpu_count, m.precision
        ));
        sources.push(g);
    }
    let rejected = count_verdicts(&verdicts);
    if !rejected.is_empty() {
        reasons.push(format!(
            "not usable here: {rejected} (see `aim-engine recipes`)"
        ));
    }

    let launches = sources
        .iter()
        .map(|s| build_launch(input, &usable, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Planned {
        plan: Plan {
            model: input.model.to_string(),
            launches,
            reasons,
            usable_gpus: n_usable,
            product: Some(product),
            gfx: Some(gfx),
        },
        sources,
        verdicts,
        preferred_gpu_count: pref_count,
        preferred_precision: pref_precision,
        weight_bytes: input.facts.weight_bytes,
    })
}

/// "what would fit": the plan with the user's count/precision/engine/metric constraints
/// dropped, in words.
fn suggestion(input: &PlanInput<'_>, usable: &[&Gpu], n_usable: u32) -> String {
    let relaxed = Want {
        gpu_model: input.want.gpu_model.clone(),
        ..Default::default()
    };
    let vram = usable.iter().map(|g| g.vram_bytes).filter(|v| *v > 0).min();
    let (pc, pp, _) = config::preferred(input.facts, n_usable, vram);
    let req = request(Some(input.model), &relaxed, pc, Some(pp));
    let host = host_of(usable, &relaxed);
    let check = |r: &LoadedRecipe| general_check(input.facts, &r.recipe, vram);
    let s = select::select(input.recipes, &req, &host, Some(&check));
    match s.ranked.first() {
        Some(&i) => {
            let r = &input.recipes[i];
            let m = &r.recipe.metadata;
            format!(
                "what would fit: recipe {} ({} GPU(s), {}, {}, {}): `aim-engine plan {} {} --precision {} --backend {}`",
                r.id,
                m.gpu_count,
                m.precision,
                m.engine,
                m.metric,
                input.model,
                m.gpu_count,
                m.precision,
                m.engine
            )
        }
        // Generated defaults only differ from what failed when the user constrained the plan.
        None if input.want.precision.is_some() || input.want.gpu_count.is_some() => format!(
            "what would fit: generated defaults on {} GPU(s) in {pp}: `aim-engine plan {} {} --precision {pp}`",
            pc.min(n_usable),
            input.model,
            pc.min(n_usable)
        ),
        None => "no other GPU count or precision fits either".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Gpu;

    pub(crate) fn gpu(index: u32, product: &str, gfx: &str, vram_gib: u64, hive: u64) -> Gpu {
        Gpu {
            index,
            kfd_node: index + 2,
            gpu_id: 1000 + index,
            pci: format!("0000:{:02x}:00.0", index + 5),
            render_minor: 128 + 8 * index,
            gfx: gfx.into(),
            device_id: 0x74a1,
            product: product.into(),
            vram_bytes: vram_gib << 30,
            vram_used_bytes: None,
            compute_units: 304,
            numa_node: Some(0),
            physical_index: index,
            partition: None,
            hive_id: hive,
            unique_id: index as u64,
        }
    }

    #[test]
    fn gpu_picking_prefers_hives_and_links() {
        // GPUs 0,1 in hive A; 2..5 in hive B: 4 GPUs come from hive B.
        let gs: Vec<Gpu> = (0..6)
            .map(|i| gpu(i, "MI300X", "gfx942", 192, if i < 2 { 7 } else { 9 }))
            .collect();
        let refs: Vec<&Gpu> = gs.iter().collect();
        let got: Vec<u32> = pick_gpus(&refs, &[], 4).iter().map(|g| g.index).collect();
        assert_eq!(got, vec![2, 3, 4, 5]);
        let got: Vec<u32> = pick_gpus(&refs, &[], 2).iter().map(|g| g.index).collect();
        assert_eq!(got, vec![0, 1]);
        // No hive ids: links decide; 0 is linked to nobody, 1-2-3 are a clique.
        let gs: Vec<Gpu> = (0..4).map(|i| gpu(i, "MI300X", "gfx942", 192, 0)).collect();
        let refs: Vec<&Gpu> = gs.iter().collect();
        let links = [(1, 2), (1, 3), (2, 3)];
        let got: Vec<u32> = pick_gpus(&refs, &links, 3)
            .iter()
            .map(|g| g.index)
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        // Nothing known: the first N.
        let got: Vec<u32> = pick_gpus(&refs, &[], 2).iter().map(|g| g.index).collect();
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn usable_is_the_first_product() {
        let t = Topology {
            gpus: vec![
                gpu(0, "RX 7900 XTX", "gfx1100", 24, 0),
                gpu(1, "Raphael", "gfx1036", 1, 0),
            ],
            ..Default::default()
        };
        assert_eq!(usable_gpus(&t).len(), 1);
    }

    use crate::model::config::{facts, tests::QWEN3_32B};
    use crate::recipe::{Origin, parse};
    use std::path::Path;

    fn recipe(id: &str, model: Option<&str>, meta: &str, priority: usize) -> LoadedRecipe {
        let head = model
            .map(|m| format!("aim_id: {m}\nmodel_id: {m}\n"))
            .unwrap_or_default();
        let text = format!("{head}metadata: {{{meta}}}\n");
        LoadedRecipe {
            id: id.into(),
            path: format!("/r/{id}.yaml").into(),
            origin: Origin {
                priority,
                builtin: priority > 0,
            },
            recipe: parse(&text, Path::new(id)).unwrap(),
        }
    }

    fn catalogue() -> Vec<LoadedRecipe> {
        let q = Some("Qwen/Qwen3-32B");
        vec![
            recipe(
                "vllm-mi300x-bf16-tp1-latency",
                q,
                "engine: vllm, gpu: MI300X, gpu_count: 1, precision: bf16, metric: latency, type: optimized",
                1,
            ),
            recipe(
                "vllm-mi300x-bf16-tp4-latency",
                q,
                "engine: vllm, gpu: MI300X, gpu_count: 4, precision: bf16, metric: latency, type: unoptimized",
                1,
            ),
            recipe(
                "vllm-mi355x-bf16-tp4-latency",
                q,
                "engine: vllm, gpu: MI355X, gpu_count: 4, precision: bf16, metric: latency, type: optimized",
                1,
            ),
            recipe(
                "general/vllm-mi300x-bf16-tp2-latency",
                None,
                "engine: vllm, gpu: MI300X, gpu_count: 2, precision: bf16, metric: latency, type: general",
                1,
            ),
            recipe(
                "general/vllm-mi300x-bf16-tp8-latency",
                None,
                "engine: vllm, gpu: MI300X, gpu_count: 8, precision: bf16, metric: latency, type: general",
                1,
            ),
        ]
    }

    fn mi300x(n: u32) -> Topology {
        Topology {
            gpus: (0..n).map(|i| gpu(i, "MI300X", "gfx942", 192, 0)).collect(),
            ..Default::default()
        }
    }

    struct Case {
        what: &'static str,
        model: &'static str,
        config: Option<&'static str>,
        topology: Topology,
        want: Want,
        recipes: Vec<LoadedRecipe>,
        /// Ok(chosen id, fallback ids, selected ordinals) or Err(words in the error)
        expect: Result<(&'static str, Vec<&'static str>, Vec<u32>), &'static str>,
    }

    fn run(c: &Case) -> Result<Planned, PlanError> {
        let f = facts(c.model, c.config, None);
        let args = IndexMap::new();
        let launchers = Launchers::default();
        plan(&PlanInput {
            topology: &c.topology,
            model: c.model,
            checkpoint: c.model,
            facts: &f,
            recipes: &c.recipes,
            want: &c.want,
            user_args: &args,
            launchers: &launchers,
            engine_port: 8001,
        })
    }

    #[test]
    fn planning_table() {
        let cases = vec![
            Case {
                what: "Qwen3-32B on 8 MI300X: 4 GPUs bf16 vLLM, the rest as fallbacks",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want::default(),
                recipes: catalogue(),
                expect: Ok((
                    "vllm-mi300x-bf16-tp4-latency",
                    vec![
                        "general/vllm-mi300x-bf16-tp2-latency",
                        "vllm-mi300x-bf16-tp1-latency",
                        "general/vllm-mi300x-bf16-tp8-latency",
                    ],
                    vec![0, 1, 2, 3],
                )),
            },
            Case {
                what: "one GPU: the tp1 recipe",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(1),
                want: Want::default(),
                recipes: catalogue(),
                expect: Ok(("vllm-mi300x-bf16-tp1-latency", vec![], vec![0])),
            },
            Case {
                what: "--recipe picks exactly that one",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want {
                    recipe: Some("general/vllm-mi300x-bf16-tp8-latency".into()),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Ok((
                    "general/vllm-mi300x-bf16-tp8-latency",
                    vec![],
                    (0..8).collect(),
                )),
            },
            Case {
                what: "--recipe unknown: close ids",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want {
                    recipe: Some("vllm-mi300x-bf16-tp4-latncy".into()),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Err("did you mean: vllm-mi300x-bf16-tp4-latency"),
            },
            Case {
                what: "--recipe for another GPU is still checked against the host",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want {
                    recipe: Some("vllm-mi355x-bf16-tp4-latency".into()),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Err("gpu_mismatch"),
            },
            Case {
                what: "--gpu-model MI355X matches the MI355X recipe",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want {
                    gpu_model: Some("MI355X".into()),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Ok(("vllm-mi355x-bf16-tp4-latency", vec![], vec![0, 1, 2, 3])),
            },
            Case {
                what: "more GPUs than usable",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: mi300x(8),
                want: Want {
                    gpu_count: Some(16),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Err("what would fit: recipe vllm-mi300x-bf16-tp4-latency"),
            },
            Case {
                what: "no GPU",
                model: "Qwen/Qwen3-32B",
                config: None,
                topology: Topology::default(),
                want: Want::default(),
                recipes: catalogue(),
                expect: Err("no AMD GPU"),
            },
            Case {
                what: "int4 cannot be generated from a bf16 checkpoint",
                model: "Qwen/Qwen3-32B",
                config: Some(QWEN3_32B),
                topology: mi300x(8),
                want: Want {
                    precision: Some(Precision::Int4),
                    ..Default::default()
                },
                recipes: catalogue(),
                expect: Err("int4 cannot be generated"),
            },
            Case {
                what: "no recipes at all: generated defaults sized from config.json",
                model: "org/Custom-32B",
                config: Some(QWEN3_32B),
                topology: mi300x(8),
                want: Want::default(),
                recipes: vec![],
                expect: Ok((
                    "generated/vllm-mi300x-bf16-tp4-latency",
                    vec![],
                    vec![0, 1, 2, 3],
                )),
            },
            Case {
                what: "generated with an invalid explicit count",
                model: "org/Custom-32B",
                config: Some(QWEN3_32B),
                topology: mi300x(8),
                want: Want {
                    gpu_count: Some(3),
                    ..Default::default()
                },
                recipes: vec![],
                expect: Err("not divisible by tensor-parallel size 3"),
            },
            Case {
                what: "does not fit on one 24 GiB card",
                model: "org/Custom-32B",
                config: Some(QWEN3_32B),
                topology: Topology {
                    gpus: vec![gpu(0, "Radeon RX 7900 XTX", "gfx1100", 24, 0)],
                    ..Default::default()
                },
                want: Want::default(),
                recipes: catalogue(),
                expect: Err("does not fit on 1"),
            },
        ];
        for c in &cases {
            match (run(c), &c.expect) {
                (Ok(p), Ok((id, fallbacks, ordinals))) => {
                    let ids: Vec<&str> = p.sources.iter().map(|s| s.id.as_str()).collect();
                    assert_eq!(ids[0], *id, "{}: {:?}", c.what, p.plan.reasons);
                    assert_eq!(&ids[1..], fallbacks.as_slice(), "{}", c.what);
                    let got: Vec<u32> = p.plan.launches[0].gpus.iter().map(|g| g.ordinal).collect();
                    assert_eq!(&got, ordinals, "{}", c.what);
                    // Launches and sources line up; every launch serves the asked model name.
                    assert_eq!(p.plan.launches.len(), p.sources.len());
                    for (l, s) in p.plan.launches.iter().zip(&p.sources) {
                        assert_eq!(l.recipe_id, s.id);
                        assert_eq!(l.served_model_name, crate::model::served_names(c.model).0);
                        assert_eq!(l.gpus.len() as u32, l.gpu_count);
                        assert_eq!(l.engine_port, 8001);
                    }
                    assert!(!p.plan.reasons.is_empty());
                }
                (Err(e), Err(words)) => {
                    assert!(
                        e.to_string().contains(words),
                        "{}: `{e}` should contain `{words}`",
                        c.what
                    )
                }
                (got, want) => panic!(
                    "{}: got {:?}, want {want:?}",
                    c.what,
                    got.map(|p| p.sources[0].id.clone())
                ),
            }
        }
    }

    #[test]
    fn generated_plan_limits_context_to_fit() {
        // 80 GiB GPUs: Qwen3-32B weights fit on one, 32k of KV cache does not.
        let c = Case {
            what: "context",
            model: "org/Custom-32B",
            config: Some(QWEN3_32B),
            topology: Topology {
                gpus: vec![gpu(0, "MI210", "gfx90a", 80, 0)],
                ..Default::default()
            },
            want: Want::default(),
            recipes: vec![],
            expect: Err(""),
        };
        let p = run(&c).unwrap();
        let args = &p.sources[0].recipe.engine_args;
        let len = args.get("max-model-len").and_then(Value::as_u64).unwrap();
        assert!((2048..32768).contains(&len), "{len}");
        assert!(
            p.plan.reasons.iter().any(|r| r.contains("context limited")),
            "{:?}",
            p.plan.reasons
        );
        assert!(
            p.plan
                .reasons
                .iter()
                .any(|r| r.contains("divides the model's 64 attention heads"))
        );
    }

    #[test]
    fn general_recipes_are_checked_against_the_model() {
        // A 12-head model cannot use TP 8; the general tp8 recipe gets tp_invalid.
        let cfg = QWEN3_32B.replace("\"num_attention_heads\":64", "\"num_attention_heads\":12");
        let f = facts("org/Odd-32B", Some(&cfg), None);
        let rows = assess_all(
            &mi300x(8),
            Some("org/Odd-32B"),
            Some(&f),
            &catalogue(),
            &Want::default(),
        );
        let v = |id: &str| rows.iter().find(|r| r.id == id).unwrap().verdict;
        assert_eq!(
            v("general/vllm-mi300x-bf16-tp8-latency"),
            Verdict::TpInvalid
        );
        assert_eq!(
            v("general/vllm-mi300x-bf16-tp2-latency"),
            Verdict::Compatible
        );
        assert_eq!(v("vllm-mi300x-bf16-tp4-latency"), Verdict::ModelMismatch);
    }
}
