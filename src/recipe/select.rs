//! Recipe selection (pure): every recipe gets a verdict for this request on this host; the
//! compatible ones are ranked, the first wins and the rest form the fallback chain.
//!
//! Filter (constraints, never ranks): shadowed id, model, engine, metric, precision, GPU
//! product/gfx, GPU count (a recipe may use fewer GPUs than usable, never more; an explicit
//! GPU_COUNT must match), node count, manual-only, and the caller's fit check of
//! model-agnostic recipes. Node count: in a group of N nodes (`Request::nodes`) only recipes
//! that span exactly N are compatible; outside one, a recipe that spans several nodes is
//! considered only when the model does not fit one node (`Request::beyond_one_node`).
//! Rank ([`Rule`], in this order; the first key that differs decides): rule 1 is the
//! explicit `--recipe` (handled by the planner), then 2 the user's recipe folders before the
//! built-in one (search-path priority), 3 type (optimized, preview, unoptimized, general),
//! 4 metric (latency before throughput when the user left it open), 5 precision (the
//! preferred one, then 16-bit, fp8, 4/8-bit, fp32), 6 GPU count (closest to the preferred
//! count, on a tie more GPUs), 7 vLLM before SGLang, 8 the id (so the order is total).

use super::LoadedRecipe;
use crate::types::{Engine, Metric, Precision, RecipeType};
use serde::Serialize;
use std::collections::HashSet;

/// What the user asked for, with `auto` already turned into `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The model (`org/name` or a local path); None lists recipes of every model.
    pub model: Option<String>,
    pub gpu_count: Option<u32>,
    pub precision: Option<Precision>,
    pub engine: Option<Engine>,
    pub metric: Option<Metric>,
    /// `--recipe ID`: this recipe and no other (manual-only allowed).
    pub recipe: Option<String>,
    /// GPU count to aim for when the user gave none (from the model's size).
    pub preferred_gpu_count: u32,
    /// Precision to prefer when the user gave none.
    pub preferred_precision: Option<Precision>,
    /// The node count of the group this node is in (AIM_NNODES, LeaderWorkerSet's group
    /// size); None outside a group. Asking for nodes is asking for a multi-node recipe.
    pub nodes: Option<u32>,
    /// The model's weights do not fit this node's GPUs: multi-node recipes are considered
    /// even when no group was given (the plan then says which group to start).
    pub beyond_one_node: bool,
}

/// The GPUs as selection sees them: how many one engine may span, their product and gfx.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardware {
    pub usable_gpus: u32,
    /// Marketing name used to match `metadata.gpu` (or the `--gpu-model` override).
    pub product: Option<String>,
    pub gfx: Option<String>,
}

/// Why a recipe is (not) usable here. The text forms are the ones `recipes` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Compatible,
    /// A recipe with the same id earlier on the search path wins.
    Shadowed,
    ModelMismatch,
    EngineMismatch,
    MetricMismatch,
    PrecisionMismatch,
    GpuMismatch,
    TooManyGpus,
    GpuCountMismatch,
    /// Spans another number of nodes than the group has.
    NodeCountMismatch,
    /// Spans several nodes, and the model fits one and no group was given.
    MultiNode,
    ManualOnly,
    /// General or generated: the tensor-parallel size does not divide the model.
    TpInvalid,
    /// General or generated: the weights and KV cache do not fit in the GPUs' memory.
    DoesNotFit,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Compatible => "compatible",
            Verdict::Shadowed => "shadowed",
            Verdict::ModelMismatch => "model_mismatch",
            Verdict::EngineMismatch => "engine_mismatch",
            Verdict::MetricMismatch => "metric_mismatch",
            Verdict::PrecisionMismatch => "precision_mismatch",
            Verdict::GpuMismatch => "gpu_mismatch",
            Verdict::TooManyGpus => "too_many_gpus",
            Verdict::GpuCountMismatch => "gpu_count_mismatch",
            Verdict::NodeCountMismatch => "node_count_mismatch",
            Verdict::MultiNode => "multi_node",
            Verdict::ManualOnly => "manual_only",
            Verdict::TpInvalid => "tp_invalid",
            Verdict::DoesNotFit => "does_not_fit",
        }
    }
}

/// One recipe's verdict, with the detail in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessed {
    /// Index into the recipe slice given to `select`.
    pub index: usize,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Indices of compatible recipes, best first.
    pub ranked: Vec<usize>,
    /// One entry per recipe, in input order.
    pub assessed: Vec<Assessed>,
}

/// A check the caller adds for model-agnostic recipes (tensor-parallel validity, memory fit).
pub type ExtraCheck<'a> = &'a dyn Fn(&LoadedRecipe) -> Option<(Verdict, String)>;

/// Normalises a GPU name for comparison: "AMD Instinct MI300X" -> "MI300X".
pub fn normalize_gpu(name: &str) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_uppercase()
        })
        .collect();
    words.retain(|w| {
        !matches!(
            w.as_str(),
            "AMD" | "INSTINCT" | "RADEON" | "GRAPHICS" | "OAM"
        )
    });
    words.concat()
}

/// Whether a recipe tuned for `recipe_gpu` suits a host of `product` / `gfx`.
pub fn gpu_matches(recipe_gpu: &str, product: Option<&str>, gfx: Option<&str>) -> bool {
    let want = normalize_gpu(recipe_gpu);
    if want.is_empty() {
        return false;
    }
    if let Some(g) = gfx
        && want.eq_ignore_ascii_case(&normalize_gpu(g))
    {
        return true;
    }
    match product {
        Some(p) => {
            let have = normalize_gpu(p);
            // "RX7900" (AIM's family name) covers "RX7900XTX"; Instinct names must be exact.
            have == want
                || (want.starts_with("RX")
                    && want.ends_with(|c: char| c.is_ascii_digit())
                    && have.starts_with(&want))
        }
        None => false,
    }
}

fn same_model(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn assess(
    r: &LoadedRecipe,
    req: &Request,
    host: &Hardware,
    seen: &mut HashSet<String>,
    extra: Option<ExtraCheck<'_>>,
) -> (Verdict, String) {
    let m = &r.recipe.metadata;
    if !seen.insert(r.id.clone()) {
        return (
            Verdict::Shadowed,
            "a recipe with the same id earlier on the search path wins".into(),
        );
    }
    if let (Some(model), Some(for_model)) = (req.model.as_deref(), r.recipe.for_model())
        && !r.is_general()
        && !same_model(model, for_model)
    {
        return (
            Verdict::ModelMismatch,
            format!("for {for_model}, not {model}"),
        );
    }
    if let Some(e) = req.engine
        && e != m.engine
    {
        return (
            Verdict::EngineMismatch,
            format!("runs {}, {e} was asked for", m.engine),
        );
    }
    if let Some(x) = req.metric
        && x != m.metric
    {
        return (
            Verdict::MetricMismatch,
            format!("tuned for {}, {x} was asked for", m.metric),
        );
    }
    if let Some(p) = req.precision
        && p != m.precision
    {
        return (
            Verdict::PrecisionMismatch,
            format!("{}, {p} was asked for", m.precision),
        );
    }
    if !gpu_matches(&m.gpu, host.product.as_deref(), host.gfx.as_deref()) {
        let have = host
            .product
            .as_deref()
            .or(host.gfx.as_deref())
            .unwrap_or("no GPU");
        return (
            Verdict::GpuMismatch,
            format!("tuned for {}, this host has {have}", m.gpu),
        );
    }
    if m.gpu_count > host.usable_gpus {
        return (
            Verdict::TooManyGpus,
            format!("needs {} GPUs, {} usable", m.gpu_count, host.usable_gpus),
        );
    }
    if let Some(n) = req.gpu_count
        && n != m.gpu_count
    {
        return (
            Verdict::GpuCountMismatch,
            format!("uses {} GPUs, {n} were asked for", m.gpu_count),
        );
    }
    let picked = req.recipe.as_deref() == Some(r.id.as_str());
    if let Some(v) = node_verdict(m.nodes, req, picked) {
        return v;
    }
    if m.manual_selection_only && !picked {
        return (
            Verdict::ManualOnly,
            "only used when asked for by --recipe".into(),
        );
    }
    if r.is_general()
        && let Some(check) = extra
        && let Some(v) = check(r)
    {
        return v;
    }
    (Verdict::Compatible, String::new())
}

/// The node-count filter: in a group only its own count; outside one a multi-node recipe
/// only when the model does not fit one node or the recipe was asked for by id.
fn node_verdict(nodes: u32, req: &Request, picked: bool) -> Option<(Verdict, String)> {
    match req.nodes {
        Some(n) if n != nodes => Some((
            Verdict::NodeCountMismatch,
            format!("spans {nodes} node(s), this group has {n}"),
        )),
        Some(_) => None,
        None if nodes > 1 && !req.beyond_one_node && !picked => Some((
            Verdict::MultiNode,
            format!(
                "spans {nodes} nodes: used when the model does not fit one node, or in a group of {nodes} (AIM_NNODES, LeaderWorkerSet)"
            ),
        )),
        None => None,
    }
}

fn type_rank(t: RecipeType) -> u8 {
    match t {
        RecipeType::Optimized => 0,
        RecipeType::Preview => 1,
        RecipeType::Unoptimized => 2,
        RecipeType::General => 3,
    }
}

/// How close a precision is to the preferred one (0 best). Without a preference, 16-bit
/// first, then the smaller formats, fp32 last.
pub fn precision_rank(p: Precision, preferred: Option<Precision>) -> u8 {
    if Some(p) == preferred {
        return 0;
    }
    match p {
        Precision::Bf16 | Precision::Fp16 => 1,
        Precision::Fp8 => 2,
        Precision::Fp4 | Precision::Int8 | Precision::Int4 => 3,
        Precision::Fp32 => 4,
    }
}

/// Assesses every recipe and ranks the compatible ones.
pub fn select(
    recipes: &[LoadedRecipe],
    req: &Request,
    host: &Hardware,
    extra: Option<ExtraCheck<'_>>,
) -> Selection {
    let mut seen = HashSet::new();
    let assessed: Vec<Assessed> = recipes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let (verdict, detail) = assess(r, req, host, &mut seen, extra);
            Assessed {
                index,
                verdict,
                detail,
            }
        })
        .collect();
    let mut ranked: Vec<usize> = assessed
        .iter()
        .filter(|a| a.verdict == Verdict::Compatible)
        .map(|a| a.index)
        .collect();
    ranked.sort_by(|&a, &b| rank_key(&recipes[a], req).cmp(&rank_key(&recipes[b], req)));
    Selection { ranked, assessed }
}

/// One rule of the rank order, numbered as README's "Recipes" section numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// 1: `--recipe` / AIM_PROFILE_ID (the planner's, not a sort key).
    Explicit,
    /// 2: the user's recipe folders (`--recipes-dir`, in the order given) before the built-in.
    Folder,
    /// 3: optimized, preview, unoptimized, general.
    Type,
    /// 4: latency before throughput when the metric is open.
    Metric,
    /// 5: the preferred precision, then 16-bit, fp8, 4/8-bit, fp32.
    Precision,
    /// 6: the GPU count closest to the preferred one, on a tie more GPUs.
    GpuCount,
    /// 7: vLLM before SGLang when the engine is open.
    Engine,
    /// 8: the id, so the order is total.
    Id,
}

impl Rule {
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// The rule in a few words, for the plan's reasons.
    pub fn words(self) -> &'static str {
        match self {
            Rule::Explicit => "asked for by --recipe",
            Rule::Folder => "the user's recipe folders before the built-in ones",
            Rule::Type => "type: optimized, then preview, unoptimized, general",
            Rule::Metric => "metric: latency before throughput",
            Rule::Precision => "precision: the preferred one first",
            Rule::GpuCount => "GPU count: closest to the preferred count",
            Rule::Engine => "engine: vLLM before SGLang",
            Rule::Id => "id order",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule {}, {}", self.number(), self.words())
    }
}

/// The sort key of a compatible recipe: one field per [`Rule`] from 2 on, in order.
type RankKey = (
    usize,
    u8,
    bool,
    u8,
    (u32, std::cmp::Reverse<u32>),
    bool,
    String,
);

fn rank_key(r: &LoadedRecipe, req: &Request) -> RankKey {
    let m = &r.recipe.metadata;
    let preferred = req.gpu_count.unwrap_or(req.preferred_gpu_count);
    (
        r.origin.priority,
        type_rank(m.kind),
        m.metric != Metric::Latency,
        precision_rank(m.precision, req.precision.or(req.preferred_precision)),
        // On a tie in distance, more GPUs (more memory headroom) first.
        (
            m.gpu_count.abs_diff(preferred),
            std::cmp::Reverse(m.gpu_count),
        ),
        m.engine != Engine::Vllm,
        r.id.clone(),
    )
}

/// The rule by which `winner` ranks before `other` (both compatible with `req`): the first
/// key that differs. `Rule::Id` when only the ids differ.
pub fn deciding_rule(winner: &LoadedRecipe, other: &LoadedRecipe, req: &Request) -> Rule {
    let (a, b) = (rank_key(winner, req), rank_key(other, req));
    if a.0 != b.0 {
        Rule::Folder
    } else if a.1 != b.1 {
        Rule::Type
    } else if a.2 != b.2 {
        Rule::Metric
    } else if a.3 != b.3 {
        Rule::Precision
    } else if a.4 != b.4 {
        Rule::GpuCount
    } else if a.5 != b.5 {
        Rule::Engine
    } else {
        Rule::Id
    }
}

/// Recipe ids similar to `wanted`, for "unknown recipe" errors: shared prefix or substring,
/// or a small edit distance.
pub fn close_ids<'a>(wanted: &str, ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let w = wanted.to_ascii_lowercase();
    let mut scored: Vec<(usize, String)> = ids
        .map(|id| {
            let l = id.to_ascii_lowercase();
            let d = if l.contains(&w) || w.contains(&l) {
                0
            } else {
                edit_distance(&w, &l)
            };
            (d, id.to_string())
        })
        .filter(|(d, _)| *d <= w.len().max(4) / 3 + 2)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(5).map(|(_, id)| id).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Metadata, Origin, Recipe};
    use std::path::PathBuf;

    /// A recipe from a compact spec: "id model engine gpu count precision metric type [manual]";
    /// a count of `8x2` is 8 GPUs on each of 2 nodes.
    fn r(spec: &str, priority: usize) -> LoadedRecipe {
        let f: Vec<&str> = spec.split_whitespace().collect();
        let model = (f[1] != "-").then(|| f[1].to_string());
        LoadedRecipe {
            id: f[0].to_string(),
            path: PathBuf::from(format!("{}.yaml", f[0])),
            origin: Origin {
                priority,
                builtin: priority > 0,
            },
            recipe: Recipe {
                aim_id: model.clone(),
                model_id: model,
                metadata: Metadata {
                    engine: f[2].parse().unwrap(),
                    gpu: f[3].to_string(),
                    gpu_count: f[4].split('x').next().unwrap().parse().unwrap(),
                    nodes: f[4].split('x').nth(1).map_or(1, |n| n.parse().unwrap()),
                    precision: f[5].parse().unwrap(),
                    metric: f[6].parse().unwrap(),
                    kind: f[7].parse().unwrap(),
                    manual_selection_only: f.get(8) == Some(&"manual"),
                },
                engine_args: Default::default(),
                env_vars: Default::default(),
            },
        }
    }

    fn catalogue() -> Vec<LoadedRecipe> {
        let q = "Qwen/Qwen3-32B";
        vec![
            r(
                &format!("vllm-mi300x-fp16-tp1-latency {q} vllm MI300X 1 fp16 latency optimized"),
                1,
            ),
            r(
                &format!("vllm-mi300x-bf16-tp1-latency {q} vllm MI300X 1 bf16 latency optimized"),
                1,
            ),
            r(
                &format!("vllm-mi300x-bf16-tp2-latency {q} vllm MI300X 2 bf16 latency optimized"),
                1,
            ),
            r(
                &format!("vllm-mi300x-bf16-tp4-latency {q} vllm MI300X 4 bf16 latency optimized"),
                1,
            ),
            r(
                &format!(
                    "vllm-mi300x-bf16-tp4-throughput {q} vllm MI300X 4 bf16 throughput optimized"
                ),
                1,
            ),
            r(
                &format!("sglang-mi300x-bf16-tp4-latency {q} sglang MI300X 4 bf16 latency preview"),
                1,
            ),
            r(
                &format!("vllm-mi300x-bf16-tp8-latency {q} vllm MI300X 8 bf16 latency unoptimized"),
                1,
            ),
            r(
                &format!("vllm-mi355x-bf16-tp4-latency {q} vllm MI355X 4 bf16 latency optimized"),
                1,
            ),
            r(
                &format!(
                    "vllm-mi300x-fp8-tp2-latency {q} vllm MI300X 2 fp8 latency optimized manual"
                ),
                1,
            ),
            r(
                "general/vllm-mi300x-bf16-tp4-latency - vllm MI300X 4 bf16 latency general",
                1,
            ),
        ]
    }

    fn host(n: u32, product: &str) -> Hardware {
        Hardware {
            usable_gpus: n,
            product: Some(product.into()),
            gfx: Some(
                if product.starts_with("MI355") {
                    "gfx950"
                } else {
                    "gfx942"
                }
                .into(),
            ),
        }
    }

    fn req(gpus: Option<u32>, pref: u32) -> Request {
        Request {
            model: Some("Qwen/Qwen3-32B".into()),
            gpu_count: gpus,
            preferred_gpu_count: pref,
            preferred_precision: Some(Precision::Bf16),
            ..Default::default()
        }
    }

    #[test]
    fn selection_table() {
        // (what, request edit, host, expected winner, expected (id, verdict) pairs)
        type Row = (
            &'static str,
            Request,
            Hardware,
            Option<&'static str>,
            Vec<(&'static str, Verdict)>,
        );
        let cases: Vec<Row> = vec![
            (
                "auto on 8 MI300X prefers 4 GPUs bf16 vllm latency",
                req(None, 4),
                host(8, "MI300X"),
                Some("vllm-mi300x-bf16-tp4-latency"),
                vec![
                    ("vllm-mi355x-bf16-tp4-latency", Verdict::GpuMismatch),
                    ("vllm-mi300x-fp8-tp2-latency", Verdict::ManualOnly),
                    ("vllm-mi300x-bf16-tp8-latency", Verdict::Compatible),
                ],
            ),
            (
                "one GPU",
                req(None, 1),
                host(1, "AMD Instinct MI300X"),
                Some("vllm-mi300x-bf16-tp1-latency"),
                vec![
                    ("vllm-mi300x-bf16-tp4-latency", Verdict::TooManyGpus),
                    ("vllm-mi300x-bf16-tp2-latency", Verdict::TooManyGpus),
                ],
            ),
            (
                "explicit count 2",
                req(Some(2), 4),
                host(8, "MI300X"),
                Some("vllm-mi300x-bf16-tp2-latency"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::GpuCountMismatch)],
            ),
            (
                "throughput",
                {
                    let mut q = req(None, 4);
                    q.metric = Some(Metric::Throughput);
                    q
                },
                host(8, "MI300X"),
                Some("vllm-mi300x-bf16-tp4-throughput"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::MetricMismatch)],
            ),
            (
                "sglang",
                {
                    let mut q = req(None, 4);
                    q.engine = Some(Engine::Sglang);
                    q
                },
                host(8, "MI300X"),
                Some("sglang-mi300x-bf16-tp4-latency"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::EngineMismatch)],
            ),
            (
                "fp16 asked",
                {
                    let mut q = req(None, 4);
                    q.precision = Some(Precision::Fp16);
                    q
                },
                host(8, "MI300X"),
                Some("vllm-mi300x-fp16-tp1-latency"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::PrecisionMismatch)],
            ),
            (
                "manual recipe by id",
                {
                    let mut q = req(None, 4);
                    q.recipe = Some("vllm-mi300x-fp8-tp2-latency".into());
                    q
                },
                host(8, "MI300X"),
                Some("vllm-mi300x-bf16-tp4-latency"),
                vec![("vllm-mi300x-fp8-tp2-latency", Verdict::Compatible)],
            ),
            (
                "MI355X host",
                req(None, 4),
                host(8, "MI355X"),
                Some("vllm-mi355x-bf16-tp4-latency"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::GpuMismatch)],
            ),
            (
                "no GPU",
                req(None, 1),
                Hardware::default(),
                None,
                vec![("vllm-mi300x-bf16-tp1-latency", Verdict::GpuMismatch)],
            ),
            (
                "other model: only general",
                {
                    let mut q = req(None, 4);
                    q.model = Some("meta-llama/Llama-3.1-8B-Instruct".into());
                    q
                },
                host(8, "MI300X"),
                Some("general/vllm-mi300x-bf16-tp4-latency"),
                vec![("vllm-mi300x-bf16-tp4-latency", Verdict::ModelMismatch)],
            ),
        ];
        let cat = catalogue();
        for (what, q, h, winner, verdicts) in cases {
            let s = select(&cat, &q, &h, None);
            let got = s.ranked.first().map(|&i| cat[i].id.as_str());
            assert_eq!(got, winner, "{what}");
            for (id, v) in verdicts {
                let i = cat.iter().position(|r| r.id == id).unwrap();
                assert_eq!(
                    s.assessed[i].verdict, v,
                    "{what}: {id}: {}",
                    s.assessed[i].detail
                );
            }
            // Every recipe has exactly one verdict, ranked == the compatible ones.
            assert_eq!(s.assessed.len(), cat.len());
            let compatible = s
                .assessed
                .iter()
                .filter(|a| a.verdict == Verdict::Compatible)
                .count();
            assert_eq!(s.ranked.len(), compatible, "{what}");
        }
    }

    #[test]
    fn fallback_order_follows_rank_rules() {
        let cat = catalogue();
        let s = select(&cat, &req(None, 4), &host(8, "MI300X"), None);
        let ids: Vec<&str> = s.ranked.iter().map(|&i| cat[i].id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                // type first (rule 3): optimized, then within it latency (rule 4), the
                // preferred bf16 (rule 5), then the GPU count closest to 4 (rule 6)
                "vllm-mi300x-bf16-tp4-latency",
                "vllm-mi300x-bf16-tp2-latency",
                "vllm-mi300x-bf16-tp1-latency",
                "vllm-mi300x-fp16-tp1-latency",
                "vllm-mi300x-bf16-tp4-throughput",
                // then preview, unoptimized, general, whatever their GPU count
                "sglang-mi300x-bf16-tp4-latency",
                "vllm-mi300x-bf16-tp8-latency",
                "general/vllm-mi300x-bf16-tp4-latency",
            ]
        );
    }

    /// Each row: a small catalogue, the preferred GPU count, the expected order and the rule
    /// by which the first ranks before the second.
    #[test]
    fn rank_rules_table() {
        let q = "Qwen/Qwen3-32B";
        type Row = (
            &'static str,
            Vec<LoadedRecipe>,
            u32,
            Vec<&'static str>,
            Rule,
        );
        let rows: Vec<Row> = vec![
            (
                "type before GPU count: optimized on 1 GPU beats unoptimized on the preferred 4",
                vec![
                    r(&format!("u4 {q} vllm MI300X 4 bf16 latency unoptimized"), 1),
                    r(&format!("o1 {q} vllm MI300X 1 bf16 latency optimized"), 1),
                ],
                4,
                vec!["o1", "u4"],
                Rule::Type,
            ),
            (
                "the user's folder before type: a user's general recipe beats a built-in optimized",
                vec![
                    r(&format!("o4 {q} vllm MI300X 4 bf16 latency optimized"), 1),
                    r("mine - vllm MI300X 8 bf16 latency general", 0),
                ],
                4,
                vec!["mine", "o4"],
                Rule::Folder,
            ),
            (
                "metric before precision and GPU count",
                vec![
                    r(
                        &format!("t4 {q} vllm MI300X 4 bf16 throughput optimized"),
                        1,
                    ),
                    r(&format!("l1 {q} vllm MI300X 1 fp8 latency optimized"), 1),
                ],
                4,
                vec!["l1", "t4"],
                Rule::Metric,
            ),
            (
                "precision before GPU count",
                vec![
                    r(&format!("f4 {q} vllm MI300X 4 fp8 latency optimized"), 1),
                    r(&format!("b1 {q} vllm MI300X 1 bf16 latency optimized"), 1),
                ],
                4,
                vec!["b1", "f4"],
                Rule::Precision,
            ),
            (
                "GPU count closeness, then more GPUs on a tie",
                vec![
                    r(&format!("a2 {q} vllm MI300X 2 bf16 latency optimized"), 1),
                    r(&format!("a8 {q} vllm MI300X 8 bf16 latency optimized"), 1),
                    r(&format!("a4 {q} vllm MI300X 4 bf16 latency optimized"), 1),
                    r(&format!("a6 {q} vllm MI300X 6 bf16 latency optimized"), 1),
                ],
                4,
                vec!["a4", "a6", "a2", "a8"],
                Rule::GpuCount,
            ),
            (
                "engine last but the id",
                vec![
                    r(&format!("s4 {q} sglang MI300X 4 bf16 latency optimized"), 1),
                    r(&format!("v4 {q} vllm MI300X 4 bf16 latency optimized"), 1),
                ],
                4,
                vec!["v4", "s4"],
                Rule::Engine,
            ),
        ];
        for (what, cat, pref, order, rule) in rows {
            let s = select(&cat, &req(None, pref), &host(8, "MI300X"), None);
            let ids: Vec<&str> = s.ranked.iter().map(|&i| cat[i].id.as_str()).collect();
            assert_eq!(ids, order, "{what}");
            let got = deciding_rule(&cat[s.ranked[0]], &cat[s.ranked[1]], &req(None, pref));
            assert_eq!(got, rule, "{what}");
        }
        assert_eq!(Rule::Type.number(), 3);
        assert_eq!(
            Rule::Folder.to_string(),
            "rule 2, the user's recipe folders before the built-in ones"
        );
    }

    #[test]
    fn search_priority_and_shadowing() {
        let mut cat = vec![r(
            "vllm-mi300x-bf16-tp4-latency Qwen/Qwen3-32B vllm MI300X 4 bf16 latency unoptimized",
            0,
        )];
        cat.extend(catalogue());
        let s = select(&cat, &req(None, 4), &host(8, "MI300X"), None);
        // The user's copy wins, the built-in one with the same id is shadowed.
        assert_eq!(s.ranked[0], 0);
        assert_eq!(s.assessed[4].verdict, Verdict::Shadowed);
    }

    #[test]
    fn extra_check_applies_to_general_only() {
        let cat = catalogue();
        let check = |r: &LoadedRecipe| Some((Verdict::DoesNotFit, format!("{} too small", r.id)));
        let mut q = req(None, 4);
        q.model = Some("x/Big-405B".into());
        let s = select(&cat, &q, &host(8, "MI300X"), Some(&check));
        let g = cat
            .iter()
            .position(|r| r.id.starts_with("general/"))
            .unwrap();
        assert_eq!(s.assessed[g].verdict, Verdict::DoesNotFit);
        assert!(s.ranked.is_empty());
    }

    #[test]
    fn gpu_names() {
        let cases = [
            ("MI300X", Some("MI300X"), None, true),
            ("MI300X", Some("AMD Instinct MI300X"), None, true),
            ("mi300x", Some("MI300X OAM"), None, true),
            ("MI300X", Some("MI325X"), Some("gfx942"), false),
            ("gfx942", Some("MI325X"), Some("gfx942"), true),
            ("RX7900", Some("Radeon RX 7900 XTX"), Some("gfx1100"), true),
            ("MI300X", None, None, false),
            ("MI300", Some("MI300X"), None, false),
        ];
        for (want, product, gfx, ok) in cases {
            assert_eq!(
                gpu_matches(want, product, gfx),
                ok,
                "{want} vs {product:?}/{gfx:?}"
            );
        }
    }

    #[test]
    fn close_ids_suggest() {
        let ids = [
            "vllm-mi300x-bf16-tp4-latency",
            "vllm-mi300x-bf16-tp8-latency",
            "general/x",
        ];
        let c = close_ids("vllm-mi300x-bf16-tp4-latncy", ids.iter().copied());
        assert_eq!(
            c.first().map(String::as_str),
            Some("vllm-mi300x-bf16-tp4-latency")
        );
        assert!(!c.contains(&"general/x".to_string()));
        assert!(
            close_ids("tp4", ids.iter().copied())
                .contains(&"vllm-mi300x-bf16-tp4-latency".to_string())
        );
    }

    /// The node-count rule: (what, group nodes, beyond one node, asked by id, expected
    /// verdict of the 2-node recipe, of the 1-node one, winner).
    #[test]
    fn node_count_rule_table() {
        let q = "Qwen/Qwen3-32B";
        let recipes = vec![
            r(&format!("one {q} vllm MI300X 8 bf16 latency optimized"), 1),
            r(
                &format!("two {q} vllm MI300X 8x2 bf16 latency optimized"),
                1,
            ),
        ];
        type Row = (
            &'static str,
            Option<u32>,
            bool,
            bool,
            Verdict,
            Verdict,
            Option<&'static str>,
        );
        let c = Verdict::Compatible;
        let rows: &[Row] = &[
            (
                "no group, fits one node",
                None,
                false,
                false,
                Verdict::MultiNode,
                c,
                Some("one"),
            ),
            (
                "no group, beyond one node",
                None,
                true,
                false,
                c,
                c,
                Some("one"),
            ),
            (
                "no group, asked by id",
                None,
                false,
                true,
                c,
                c,
                Some("two"),
            ),
            (
                "group of 2",
                Some(2),
                false,
                false,
                c,
                Verdict::NodeCountMismatch,
                Some("two"),
            ),
            (
                "group of 2, fits one",
                Some(2),
                true,
                false,
                c,
                Verdict::NodeCountMismatch,
                Some("two"),
            ),
            (
                "group of 3",
                Some(3),
                false,
                false,
                Verdict::NodeCountMismatch,
                Verdict::NodeCountMismatch,
                None,
            ),
            (
                "group of 1 is one node",
                Some(1),
                false,
                false,
                Verdict::NodeCountMismatch,
                c,
                Some("one"),
            ),
        ];
        for (what, nodes, beyond, by_id, two, one, winner) in rows {
            let mut want = req(None, 8);
            want.nodes = *nodes;
            want.beyond_one_node = *beyond;
            if *by_id {
                want.recipe = Some("two".into());
            }
            let s = select(&recipes, &want, &host(8, "MI300X"), None);
            let verdict = |i: usize| s.assessed[i].verdict;
            assert_eq!(
                (verdict(1), verdict(0)),
                (*two, *one),
                "{what}: {:?}",
                s.assessed
            );
            let first = s.ranked.first().map(|&i| recipes[i].id.as_str());
            let first = if *by_id {
                want.recipe.as_deref().filter(|_| verdict(1) == c)
            } else {
                first
            };
            assert_eq!(first, *winner, "{what}");
        }
        // The detail names the way to use the recipe.
        let s = select(&recipes, &req(None, 8), &host(8, "MI300X"), None);
        assert!(
            s.assessed[1].detail.contains("AIM_NNODES"),
            "{:?}",
            s.assessed[1]
        );
    }
}
