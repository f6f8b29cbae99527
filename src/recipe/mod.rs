//! Recipes: the YAML schema (a strict superset of AMD AIM profile files), parsing with
//! file/line/column errors, and selection with a verdict for every recipe.
//!
//! Parsing and selection are pure; `load` holds the only file access.
//!
//! A recipe id is the file stem (`vllm-mi300x-bf16-tp4-latency`) for a model's own recipes
//! and `general/<stem>` for model-agnostic ones. The first occurrence of an id along the search
//! path wins, so a `--recipes-dir` file overrides a built-in one of the same id.

pub mod load;
pub mod select;

use crate::types::{Engine, Metric, Precision, RecipeType};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// `metadata:` of a recipe (AIM's `ProfileMetadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub engine: Engine,
    /// Product family the args were tuned on (`MI300X`), or a gfx target (`gfx942`).
    pub gpu: String,
    /// GPUs on each node (the whole launch on one node).
    pub gpu_count: u32,
    /// How many nodes the launch spans (1 when absent, as in AMD AIM's profiles); a recipe
    /// of more than one runs as a group: one engine process per node, `gpu_count` GPUs each.
    #[serde(default = "one_node", skip_serializing_if = "is_one_node")]
    pub nodes: u32,
    pub precision: Precision,
    pub metric: Metric,
    #[serde(rename = "type")]
    pub kind: RecipeType,
    #[serde(default)]
    pub manual_selection_only: bool,
}

fn one_node() -> u32 {
    1
}

fn is_one_node(n: &u32) -> bool {
    *n == 1
}

/// The most nodes a recipe may span (LeaderWorkerSet groups of 2 to 8 nodes are the use).
pub const MAX_NODES: u32 = 64;

impl Metadata {
    /// GPUs of the whole launch, over all its nodes.
    pub fn total_gpus(&self) -> u32 {
        self.gpu_count.saturating_mul(self.nodes)
    }
}

/// One recipe file. Unknown keys anywhere except inside `engine_args` are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The model the recipe is for (AIM's `aim_id`); absent in general recipes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aim_id: Option<String>,
    /// The checkpoint to serve; may differ from `aim_id` (e.g. a pre-quantized FP8 variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    pub metadata: Metadata,
    /// flag -> value; null = bare flag; false = omitted; map = one JSON argument.
    #[serde(default)]
    pub engine_args: IndexMap<String, serde_json::Value>,
    #[serde(default)]
    pub env_vars: IndexMap<String, String>,
}

impl Recipe {
    /// The model this recipe is meant for: `aim_id`, else `model_id`; None for general ones.
    pub fn for_model(&self) -> Option<&str> {
        self.aim_id.as_deref().or(self.model_id.as_deref())
    }
}

/// Where a recipe was found; lower `priority` is searched first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// 0.. for `--recipes-dir` entries in order, then the built-in folder.
    pub priority: usize,
    pub builtin: bool,
}

/// A parsed recipe with its id and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRecipe {
    pub id: String,
    pub path: PathBuf,
    pub origin: Origin,
    pub recipe: Recipe,
}

impl LoadedRecipe {
    pub fn kind(&self) -> RecipeType {
        self.recipe.metadata.kind
    }
    pub fn is_general(&self) -> bool {
        self.recipe.for_model().is_none() || self.recipe.metadata.kind == RecipeType::General
    }
}

/// A recipe file that could not be read or parsed. Line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RecipeError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Parses one recipe file's text. Pure: `path` is only used in the error.
pub fn parse(text: &str, path: &std::path::Path) -> Result<Recipe, RecipeError> {
    let opts = serde_saphyr::options! { with_snippet: false };
    let recipe: Recipe = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
        let loc = e.location();
        RecipeError {
            path: path.to_path_buf(),
            line: loc.map(|l| l.line()).filter(|l| *l > 0),
            column: loc.map(|l| l.column()).filter(|c| *c > 0),
            message: strip_location(&e.to_string()),
        }
    })?;
    check(&recipe).map_err(|(key, message)| {
        let at = key.and_then(|k| key_position(text, k));
        RecipeError {
            path: path.to_path_buf(),
            line: at.map(|(l, _)| l),
            column: at.map(|(_, c)| c),
            message,
        }
    })?;
    Ok(recipe)
}

/// serde-saphyr appends " at line L column C" to its messages; we print our own prefix.
fn strip_location(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Line and column (1-based) of the value of the first `key:` in a recipe's text, block
/// (`key: v`) or flow (`{key: v}`) style; None when the text does not spell it plainly.
fn key_position(text: &str, key: &str) -> Option<(u64, u64)> {
    let pattern = format!("{key}:");
    text.lines().enumerate().find_map(|(i, line)| {
        let at = line.match_indices(&pattern).find(|(at, _)| {
            let before = line[..*at].chars().next_back();
            before.is_none_or(|c| c == ' ' || c == '{' || c == ',')
        })?;
        let value = at.0 + pattern.len();
        let skip = line[value..].len() - line[value..].trim_start().len();
        Some((i as u64 + 1, (value + skip) as u64 + 1))
    })
}

/// A failed field check: the key it is about (to point at its line), and the message.
type CheckError = (Option<&'static str>, String);

/// Checks serde cannot express: values the schema allows but no engine could use.
fn check(r: &Recipe) -> Result<(), CheckError> {
    check_metadata(&r.metadata)?;
    check_args(r).map_err(|m| (None, m))
}

fn check_metadata(m: &Metadata) -> Result<(), CheckError> {
    if m.gpu_count == 0 || m.gpu_count > 64 {
        return Err((
            Some("gpu_count"),
            format!(
                "metadata.gpu_count must be between 1 and 64, not {}",
                m.gpu_count
            ),
        ));
    }
    if m.nodes == 0 || m.nodes > MAX_NODES {
        return Err((
            Some("nodes"),
            format!(
                "metadata.nodes must be between 1 and {MAX_NODES} (the nodes the launch spans; leave it out for one), not {}",
                m.nodes
            ),
        ));
    }
    if m.gpu.trim().is_empty() {
        return Err((
            Some("gpu"),
            "metadata.gpu must name a GPU (e.g. MI300X) or a gfx target".into(),
        ));
    }
    Ok(())
}

fn check_args(r: &Recipe) -> Result<(), String> {
    for key in r.engine_args.keys() {
        let k = key.trim_start_matches('-');
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("engine_args key `{key}` is not a flag name"));
        }
    }
    for (k, v) in &r.engine_args {
        if let serde_json::Value::Array(items) = v
            && items.iter().any(|i| i.is_object() || i.is_array())
        {
            return Err(format!(
                "engine_args.{k}: a list may hold only scalars (strings, numbers, booleans)"
            ));
        }
    }
    for k in r.env_vars.keys() {
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "env_vars key `{k}` is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
            ));
        }
    }
    Ok(())
}

/// The canonical file stem of a recipe: `<engine>-<gpu>-<precision>-tp<N>-<metric>`, with
/// `-nodes<K>` after the GPU count for a recipe that spans K > 1 nodes.
pub fn canonical_stem(m: &Metadata) -> String {
    let nodes = if m.nodes > 1 {
        format!("-nodes{}", m.nodes)
    } else {
        String::new()
    };
    format!(
        "{}-{}-{}-tp{}{nodes}-{}",
        m.engine,
        m.gpu.to_ascii_lowercase(),
        m.precision,
        m.gpu_count,
        m.metric
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// AMD AIM's profiles/Qwen/Qwen3-32B/vllm-mi300x-fp16-tp1-latency.yaml, verbatim.
    const AIM_QWEN: &str = "aim_id: Qwen/Qwen3-32B
model_id: Qwen/Qwen3-32B
metadata:
  engine: vllm
  gpu: MI300X
  gpu_count: 1
  manual_selection_only: false
  metric: latency
  precision: fp16
  type: optimized
engine_args:
  async-scheduling: null
  disable-uvicorn-access-log: null
  distributed_executor_backend: mp
  dtype: float16
  gpu-memory-utilization: 0.9
  max-model-len: 32768
  max-num-batched-tokens: 1024
  max-num-seqs: 512
  max-seq-len-to-capture: 32768
  no-enable-log-requests: null
  no-enable-prefix-caching: null
  no-trust-remote-code: null
  reasoning-parser: qwen3
  swap-space: 64
  tensor-parallel-size: 1
env_vars:
  GPU_ARCHS: gfx942
  HSA_NO_SCRATCH_RECLAIM: '1'
  VLLM_ROCM_USE_AITER: '1'
  VLLM_ROCM_USE_AITER_RMSNORM: '1'
  VLLM_USE_AITER_TRITON_ROPE: '1'
";

    const AIM_GPT_OSS: &str = "aim_id: openai/gpt-oss-120b
model_id: openai/gpt-oss-120b
metadata:
  engine: vllm
  gpu: MI300X
  gpu_count: 1
  manual_selection_only: false
  metric: latency
  precision: fp4
  type: optimized
engine_args:
  compilation-config:
    cudagraph_mode: FULL_AND_PIECEWISE
  enable-auto-tool-choice: null
  enable-log-requests: false
  gpu-memory-utilization: 0.95
  tensor-parallel-size: 1
env_vars:
  VLLM_ROCM_QUICK_REDUCE_QUANTIZATION: INT4
";

    const AIM_GENERAL: &str = "metadata:
  engine: vllm
  gpu: MI300X
  gpu_count: 8
  manual_selection_only: false
  metric: latency
  precision: fp16
  type: general
engine_args:
  dtype: float16
  no-enable-chunked-prefill: null
  tensor-parallel-size: 8
env_vars:
  NCCL_MIN_NCHANNELS: '112'
";

    #[test]
    fn aim_profiles_load_unchanged() {
        let q = parse(AIM_QWEN, Path::new("q.yaml")).unwrap();
        assert_eq!(q.aim_id.as_deref(), Some("Qwen/Qwen3-32B"));
        assert_eq!(q.metadata.engine, Engine::Vllm);
        assert_eq!(q.metadata.precision, Precision::Fp16);
        assert_eq!(q.metadata.kind, RecipeType::Optimized);
        assert_eq!(q.engine_args["async-scheduling"], serde_json::Value::Null);
        assert_eq!(q.engine_args["max-model-len"], serde_json::json!(32768));
        assert_eq!(
            q.engine_args["gpu-memory-utilization"],
            serde_json::json!(0.9)
        );
        assert_eq!(q.env_vars["HSA_NO_SCRATCH_RECLAIM"], "1");
        // Order of engine_args is kept (it becomes argv order).
        let keys: Vec<&str> = q.engine_args.keys().map(String::as_str).collect();
        assert_eq!(keys[0], "async-scheduling");
        assert_eq!(keys[keys.len() - 1], "tensor-parallel-size");

        let g = parse(AIM_GPT_OSS, Path::new("g.yaml")).unwrap();
        assert_eq!(g.metadata.precision, Precision::Fp4);
        assert_eq!(
            g.engine_args["compilation-config"],
            serde_json::json!({"cudagraph_mode": "FULL_AND_PIECEWISE"})
        );
        assert_eq!(
            g.engine_args["enable-log-requests"],
            serde_json::json!(false)
        );

        let gen_ = parse(AIM_GENERAL, Path::new("general.yaml")).unwrap();
        assert_eq!(gen_.for_model(), None);
        assert_eq!(gen_.metadata.gpu_count, 8);
    }

    #[test]
    fn sglang_and_defaults() {
        let text = "model_id: deepseek-ai/DeepSeek-R1
metadata: {engine: sglang, gpu: MI355X, gpu_count: 8, precision: fp8, metric: throughput, type: preview}
";
        let r = parse(text, Path::new("x.yaml")).unwrap();
        assert_eq!(r.metadata.engine, Engine::Sglang);
        assert!(!r.metadata.manual_selection_only);
        assert!(r.engine_args.is_empty());
        assert_eq!(r.for_model(), Some("deepseek-ai/DeepSeek-R1"));
    }

    /// Each malformed file: (text, line, column, words the message must contain).
    #[test]
    fn errors_name_line_and_column() {
        type Row<'a> = (&'a str, Option<u64>, Option<u64>, &'a [&'a str]);
        let cases: &[Row] = &[
            // Unknown top-level key.
            (
                "model_id: a/b\nmetadata: {engine: vllm, gpu: MI300X, gpu_count: 1, precision: bf16, metric: latency, type: optimized}\nengine_argz: {}\n",
                Some(3),
                Some(1),
                &["engine_argz"],
            ),
            // Unknown metadata key.
            (
                "metadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: 1\n  precision: bf16\n  metric: latency\n  type: general\n  tuned_by: me\n",
                Some(8),
                Some(3),
                &["tuned_by"],
            ),
            // Wrong type: gpu_count a string.
            (
                "metadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: four\n  precision: bf16\n  metric: latency\n  type: general\n",
                Some(4),
                Some(14),
                &[],
            ),
            // Unknown enum value.
            (
                "metadata:\n  engine: tgi\n  gpu: MI300X\n  gpu_count: 1\n  precision: bf16\n  metric: latency\n  type: general\n",
                Some(2),
                Some(11),
                &["tgi"],
            ),
            // env var value must be a string.
            (
                "metadata: {engine: vllm, gpu: MI300X, gpu_count: 1, precision: bf16, metric: latency, type: general}\nenv_vars:\n  A: [1, 2]\n",
                Some(3),
                Some(6),
                &[],
            ),
            // Broken YAML.
            (
                "metadata:\n  engine: vllm\n  gpu: a: b\n",
                Some(3),
                None,
                &[],
            ),
        ];
        for (text, line, col, words) in cases {
            let err = parse(text, Path::new("r/x.yaml")).unwrap_err();
            assert_eq!(err.line, *line, "line for {text:?}: {err}");
            if col.is_some() {
                assert_eq!(err.column, *col, "column for {text:?}: {err}");
            }
            let shown = err.to_string();
            assert!(shown.starts_with("r/x.yaml:"), "{shown}");
            for w in *words {
                assert!(shown.contains(w), "`{shown}` should mention `{w}`");
            }
        }
    }

    #[test]
    fn semantic_checks() {
        let base = "metadata: {engine: vllm, gpu: MI300X, gpu_count: COUNT, precision: bf16, metric: latency, type: general}\n";
        let zero = base.replace("COUNT", "0");
        assert!(
            parse(&zero, Path::new("z.yaml"))
                .unwrap_err()
                .message
                .contains("gpu_count")
        );
        let bad_env = format!("{}env_vars:\n  'A B': '1'\n", base.replace("COUNT", "1"));
        assert!(
            parse(&bad_env, Path::new("e.yaml"))
                .unwrap_err()
                .message
                .contains("A B")
        );
    }

    #[test]
    fn canonical_stems() {
        let r = parse(AIM_QWEN, Path::new("q.yaml")).unwrap();
        assert_eq!(canonical_stem(&r.metadata), "vllm-mi300x-fp16-tp1-latency");
        let two = parse(
            &AIM_QWEN.replace("  gpu_count: 1\n", "  gpu_count: 8\n  nodes: 2\n"),
            Path::new("q.yaml"),
        )
        .unwrap();
        assert_eq!(
            canonical_stem(&two.metadata),
            "vllm-mi300x-fp16-tp8-nodes2-latency"
        );
    }

    /// `metadata.nodes`: absent is one node (AIM profiles have none), a count is kept, and a
    /// bad value is an error at its line and column.
    #[test]
    fn nodes_field() {
        let one = parse(AIM_QWEN, Path::new("q.yaml")).unwrap();
        assert_eq!((one.metadata.nodes, one.metadata.total_gpus()), (1, 1));
        let block = |n: &str| {
            AIM_QWEN.replace(
                "  gpu_count: 1\n",
                &format!("  gpu_count: 8\n  nodes: {n}\n"),
            )
        };
        let two = parse(&block("2"), Path::new("q.yaml")).unwrap();
        assert_eq!((two.metadata.nodes, two.metadata.total_gpus()), (2, 16));
        // (text, line, column, words)
        let flow = "metadata: {engine: vllm, gpu: MI300X, gpu_count: 8, nodes: 0, precision: bf16, metric: latency, type: general}\n";
        let cases: &[(String, u64, u64, &str)] = &[
            (block("0"), 7, 10, "between 1 and 64"),
            (block("65"), 7, 10, "not 65"),
            (block("two"), 7, 10, ""),
            (block("-1"), 7, 10, ""),
            (flow.to_string(), 1, 60, "metadata.nodes"),
        ];
        for (text, line, col, words) in cases {
            let err = parse(text, Path::new("r/n.yaml")).unwrap_err();
            assert_eq!(
                (err.line, err.column),
                (Some(*line), Some(*col)),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(words), "{err}");
        }
        // Written back only when it is not one, so AIM profiles round-trip unchanged.
        let yaml = serde_json::to_value(&one.metadata).unwrap();
        assert!(yaml.get("nodes").is_none());
        let yaml = serde_json::to_value(&two.metadata).unwrap();
        assert_eq!(yaml["nodes"], 2);
    }
}
