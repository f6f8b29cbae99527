//! Model sizing (pure): config.json fields, parameter count, weight bytes, KV cache per token,
//! tensor-parallel validity and memory fit; the size from the name when nothing else is known;
//! the preferred GPU count and precision (the original design's rule). The memory side (the
//! preferred count, the fit of one launch) is in `memory`.

use crate::types::Precision;
use serde_json::Value;

mod memory;
pub use memory::{Fit, OVERHEAD_BYTES, beyond_one_node, fit, max_context_that_fits, preferred};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The config.json fields sizing needs. Multimodal configs are read from `text_config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelConfig {
    pub model_type: Option<String>,
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub torch_dtype: Option<String>,
    pub max_position_embeddings: Option<u64>,
    /// Routed experts (`num_experts`, `num_local_experts`, `n_routed_experts`); 0 = dense.
    pub num_experts: u64,
    pub moe_intermediate_size: Option<u64>,
    pub shared_experts: u64,
    pub shared_expert_intermediate_size: Option<u64>,
    pub first_k_dense_replace: u64,
    /// `quantization_config.quant_method` (fp8, mxfp4, awq, gptq, compressed-tensors, quark...).
    pub quant_method: Option<String>,
    pub weight_block_size: Option<Vec<u64>>,
    /// Multi-head latent attention (DeepSeek): kv_lora_rank, qk_rope_head_dim, ...
    pub kv_lora_rank: Option<u64>,
    pub q_lora_rank: Option<u64>,
    pub qk_rope_head_dim: u64,
    pub qk_nope_head_dim: u64,
    pub v_head_dim: u64,
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Upper bounds on config.json sizes, far above any real model (the largest have hidden sizes
/// around 2^14, a few hundred layers and experts). They keep every later product (parameter
/// count, KV bytes) inside u64, so a corrupt or hostile config.json is an error naming the
/// field rather than an overflow.
const SIZE_LIMITS: &[(&str, u64)] = &[
    ("hidden_size", 1 << 17),
    ("num_hidden_layers", 1 << 10),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 12),
    ("intermediate_size", 1 << 19),
    ("moe_intermediate_size", 1 << 19),
    ("shared_expert_intermediate_size", 1 << 19),
    ("vocab_size", 1 << 22),
    ("num_experts", 1 << 11),
    ("num_local_experts", 1 << 11),
    ("n_routed_experts", 1 << 11),
    ("n_shared_experts", 1 << 6),
    ("first_k_dense_replace", 1 << 10),
    ("kv_lora_rank", 1 << 17),
    ("q_lora_rank", 1 << 17),
    ("qk_rope_head_dim", 1 << 12),
    ("qk_nope_head_dim", 1 << 12),
    ("v_head_dim", 1 << 12),
];

/// Why a config.json cannot be used for sizing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is not JSON: {0}")]
    NotJson(String),
    #[error("config.json has no numeric `{0}`")]
    Missing(&'static str),
    #[error("config.json has zero hidden_size or num_attention_heads")]
    Zero,
    #[error("config.json `{key}` = {value} is implausible (at most {limit}); is the file corrupt?")]
    Implausible {
        key: &'static str,
        value: u64,
        limit: u64,
    },
}

fn check_ranges(v: &Value) -> Result<(), ConfigError> {
    for &(key, limit) in SIZE_LIMITS {
        if let Some(value) = v.get(key).and_then(Value::as_u64)
            && value > limit
        {
            return Err(ConfigError::Implausible { key, value, limit });
        }
    }
    Ok(())
}

/// Parses config.json text. Errors say which field is missing.
pub fn parse_config(text: &str) -> Result<ModelConfig, ConfigError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| ConfigError::NotJson(e.to_string()))?;
    let v = match root.get("text_config") {
        Some(t) if t.get("hidden_size").is_some() => t,
        _ => &root,
    };
    let need = |k: &'static str| u(v, k).ok_or(ConfigError::Missing(k));
    check_ranges(v)?;
    let hidden_size = need("hidden_size")?;
    let num_attention_heads = need("num_attention_heads")?;
    if num_attention_heads == 0 || hidden_size == 0 {
        return Err(ConfigError::Zero);
    }
    let quant = root
        .get("quantization_config")
        .or_else(|| v.get("quantization_config"));
    Ok(ModelConfig {
        model_type: v
            .get("model_type")
            .or_else(|| root.get("model_type"))
            .and_then(Value::as_str)
            .map(str::to_string),
        hidden_size,
        num_hidden_layers: need("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads: u(v, "num_key_value_heads").unwrap_or(num_attention_heads),
        head_dim: u(v, "head_dim").unwrap_or(hidden_size / num_attention_heads),
        intermediate_size: u(v, "intermediate_size").unwrap_or(4 * hidden_size),
        vocab_size: u(v, "vocab_size").unwrap_or(0),
        tie_word_embeddings: v
            .get("tie_word_embeddings")
            .or_else(|| root.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        attention_bias: v
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(matches!(
                v.get("model_type").and_then(Value::as_str),
                Some("qwen2" | "qwen2_moe")
            )),
        torch_dtype: v
            .get("torch_dtype")
            .or_else(|| v.get("dtype"))
            .or_else(|| root.get("torch_dtype"))
            .and_then(Value::as_str)
            .map(str::to_string),
        max_position_embeddings: u(v, "max_position_embeddings"),
        num_experts: u(v, "num_experts")
            .or_else(|| u(v, "num_local_experts"))
            .or_else(|| u(v, "n_routed_experts"))
            .unwrap_or(0),
        moe_intermediate_size: u(v, "moe_intermediate_size"),
        shared_experts: u(v, "n_shared_experts").unwrap_or(0),
        shared_expert_intermediate_size: u(v, "shared_expert_intermediate_size"),
        first_k_dense_replace: u(v, "first_k_dense_replace").unwrap_or(0),
        quant_method: quant
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        weight_block_size: quant
            .and_then(|q| q.get("weight_block_size"))
            .and_then(|w| {
                w.as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
            }),
        kv_lora_rank: u(v, "kv_lora_rank"),
        q_lora_rank: u(v, "q_lora_rank"),
        qk_rope_head_dim: u(v, "qk_rope_head_dim").unwrap_or(0),
        qk_nope_head_dim: u(v, "qk_nope_head_dim").unwrap_or(0),
        v_head_dim: u(v, "v_head_dim").unwrap_or(0),
    })
}

impl ModelConfig {
    fn is_qwen3(&self) -> bool {
        matches!(self.model_type.as_deref(), Some("qwen3" | "qwen3_moe"))
    }

    /// Parameter count from the architecture: embeddings (and an untied LM head), q/k/v/o
    /// attention (with bias for Qwen2, q/k norms for Qwen3, or DeepSeek's MLA), two norms per
    /// layer, SwiGLU or MoE MLPs (router and shared experts included). Byte-exact against
    /// the safetensors index totals in the tests.
    pub fn param_count(&self) -> u64 {
        let h = self.hidden_size;
        let l = self.num_hidden_layers;
        let nh = self.num_attention_heads;
        let nkv = self.num_key_value_heads;
        let d = self.head_dim;
        let attn = if let Some(kr) = self.kv_lora_rank {
            let (dn, dr, dv) = (
                self.qk_nope_head_dim,
                self.qk_rope_head_dim,
                self.v_head_dim,
            );
            let q = match self.q_lora_rank {
                Some(qr) => h * qr + qr + qr * nh * (dn + dr),
                None => h * nh * (dn + dr),
            };
            q + h * (kr + dr) + kr + kr * nh * (dn + dv) + nh * dv * h
        } else {
            let mut a = h * (nh * d) + 2 * h * (nkv * d) + (nh * d) * h;
            if self.attention_bias {
                a += nh * d + 2 * nkv * d;
            }
            if self.is_qwen3() {
                a += 2 * d;
            }
            a
        };
        let norms = 2 * h;
        let dense = 3 * h * self.intermediate_size;
        let mlp_total = if self.num_experts > 0 {
            let e = self.num_experts;
            let im = self.moe_intermediate_size.unwrap_or(self.intermediate_size);
            let mut moe = e * 3 * h * im + h * e + self.shared_experts * 3 * h * im;
            if let Some(si) = self.shared_expert_intermediate_size {
                moe += 3 * h * si + h;
            }
            let dense_layers = self.first_k_dense_replace.min(l);
            dense_layers * dense + (l - dense_layers) * moe
        } else {
            l * dense
        };
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        l * (attn + norms) + mlp_total + embed + head + h
    }

    /// Bytes per weight of the checkpoint as stored (quantized checkpoints included).
    pub fn bytes_per_param(&self) -> f64 {
        match self.quant_method.as_deref() {
            Some("fp8") => 1.0,
            Some("mxfp4") => 0.53,
            Some("awq" | "gptq") => 0.56,
            _ => match self.torch_dtype.as_deref() {
                Some("float32") => 4.0,
                _ => 2.0,
            },
        }
    }

    /// The precision the checkpoint is stored in.
    pub fn checkpoint_precision(&self) -> Option<Precision> {
        match self.quant_method.as_deref() {
            Some("fp8") => return Some(Precision::Fp8),
            Some("mxfp4") => return Some(Precision::Fp4),
            Some("awq" | "gptq") => return Some(Precision::Int4),
            Some(_) => return None,
            None => {}
        }
        match self.torch_dtype.as_deref() {
            Some("bfloat16") => Some(Precision::Bf16),
            Some("float16") => Some(Precision::Fp16),
            Some("float32") => Some(Precision::Fp32),
            _ => None,
        }
    }

    /// KV cache bytes per token on each GPU at tensor-parallel size `tp`, as vLLM sizes its
    /// pages: 2 (K and V) x layers x max(1, kv_heads / tp) x head_dim x kv_bytes (KV heads are
    /// replicated when tp > kv_heads); MLA keeps one latent of kv_lora_rank +
    /// qk_rope_head_dim per layer, replicated on every rank.
    pub fn kv_bytes_per_token_per_gpu(&self, tp: u32, kv_bytes: u64) -> u64 {
        let l = self.num_hidden_layers;
        if let Some(kr) = self.kv_lora_rank {
            // MLA: one latent vector per token, replicated on every rank.
            return (l * (kr + self.qk_rope_head_dim)).saturating_mul(kv_bytes);
        }
        let heads = (self.num_key_value_heads / u64::from(tp.max(1))).max(1);
        (2 * l * heads * self.head_dim).saturating_mul(kv_bytes)
    }

    /// Whether the model can be split over `tp` GPUs, by vLLM's own rules: the attention
    /// heads divide evenly, the KV heads are split or replicated whole (not for MLA, which
    /// has `kv_lora_rank`), and FP8 block-quantized weights split on block boundaries.
    pub fn tp_check(&self, tp: u32) -> Result<(), TpError> {
        let t = u64::from(tp.max(1));
        if !self.num_attention_heads.is_multiple_of(t) {
            return Err(TpError::Heads {
                heads: self.num_attention_heads,
                tp,
            });
        }
        if self.kv_lora_rank.is_none()
            && t > self.num_key_value_heads
            && !t.is_multiple_of(self.num_key_value_heads)
        {
            return Err(TpError::KvHeads {
                kv_heads: self.num_key_value_heads,
                tp,
            });
        }
        if self.quant_method.as_deref() == Some("fp8")
            && let Some(block) = self
                .weight_block_size
                .as_ref()
                .and_then(|b| b.first().copied())
            && block > 0
        {
            let dims: Vec<(&str, u64)> = if self.num_experts > 0 {
                let mut v = vec![(
                    "moe_intermediate_size",
                    self.moe_intermediate_size.unwrap_or(self.intermediate_size),
                )];
                if self.first_k_dense_replace > 0 {
                    v.push(("intermediate_size", self.intermediate_size));
                }
                v
            } else {
                vec![("intermediate_size", self.intermediate_size)]
            };
            for (name, size) in dims {
                if !size.is_multiple_of(t) || !(size / t).is_multiple_of(block) {
                    return Err(TpError::Fp8Block {
                        name,
                        size,
                        tp,
                        block,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why a model cannot be split over a tensor-parallel size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpError {
    #[error("{heads} attention heads are not divisible by tensor-parallel size {tp}")]
    Heads { heads: u64, tp: u32 },
    #[error("tensor-parallel size {tp} is not a multiple of the {kv_heads} KV heads")]
    KvHeads { kv_heads: u64, tp: u32 },
    #[error(
        "FP8 block-quantized weights: {name} {size} / {tp} is not a multiple of the {block}-wide block"
    )]
    Fp8Block {
        name: &'static str,
        size: u64,
        tp: u32,
        block: u64,
    },
}

/// Where a model's size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSource {
    /// `model.safetensors.index.json` total_size (exact weight bytes).
    Index,
    /// Computed from config.json.
    Config,
    /// From the size in the model's name ("32B").
    Name,
    /// Weight bytes from the Hub's file listing (the model is not in the cache): the sum of
    /// the weight files a download would fetch (`files` of them).
    Hub {
        files: usize,
    },
    Unknown,
}

/// The weights of a model not in the cache, as the Hub's listing gives them: the files a
/// download would fetch (one format, the shards the index names) and their total size. The
/// IO shell (`download::hub_weights`) reads it; the planner only sees the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubWeights {
    /// Total bytes of the weight files.
    pub bytes: u64,
    pub files: usize,
    /// "safetensors", "bin" or "pt".
    pub format: &'static str,
}

/// Bytes per parameter of a checkpoint stored in `p` (bf16/fp16 when unknown).
fn bytes_per_param_of(p: Option<Precision>) -> f64 {
    match p {
        Some(Precision::Fp8 | Precision::Int8) => 1.0,
        Some(Precision::Fp4 | Precision::Int4) => 0.55,
        Some(Precision::Fp32) => 4.0,
        _ => 2.0,
    }
}

/// What is known about the model's size.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// Parameter count.
    pub params: Option<f64>,
    /// Weight bytes as stored (exact with an index, else estimated).
    pub weight_bytes: Option<u64>,
    pub config: Option<ModelConfig>,
    pub source: SizeSource,
    /// Precision the checkpoint is stored in, when known (config or name, e.g. "-FP8").
    pub checkpoint_precision: Option<Precision>,
}

impl ModelFacts {
    pub fn unknown() -> Self {
        ModelFacts {
            params: None,
            weight_bytes: None,
            config: None,
            source: SizeSource::Unknown,
            checkpoint_precision: None,
        }
    }

    /// The facts with the weight bytes from the Hub's listing: the weights replace an
    /// estimate (from config.json or the name), and without config.json the parameter count
    /// follows from them (2 bytes a parameter, 1 for an FP8/INT8 checkpoint). An exact
    /// safetensors index already in the cache wins and is kept.
    pub fn with_hub_weights(self, w: &HubWeights) -> ModelFacts {
        if self.source == SizeSource::Index || w.bytes == 0 {
            return self;
        }
        let params = match &self.config {
            Some(_) => self.params,
            None => Some(w.bytes as f64 / bytes_per_param_of(self.checkpoint_precision)),
        };
        ModelFacts {
            params,
            weight_bytes: Some(w.bytes),
            source: SizeSource::Hub { files: w.files },
            ..self
        }
    }

    /// "32.8B parameters (config.json)" and the like.
    pub fn describe(&self) -> String {
        if let SizeSource::Hub { files } = self.source {
            let weights = format!(
                "{} of weights in {files} file(s) (from the Hub's file listing; the model is not in the cache)",
                fmt_bytes(self.weight_bytes.unwrap_or(0))
            );
            return match (self.params, &self.config) {
                (Some(p), Some(_)) => {
                    format!("{} parameters (from config.json), {weights}", fmt_params(p))
                }
                (Some(p), None) => format!("{} parameters, {weights}", fmt_params(p)),
                (None, _) => weights,
            };
        }
        let src = match self.source {
            SizeSource::Index => "safetensors index",
            SizeSource::Config => "config.json",
            SizeSource::Name => "its name",
            SizeSource::Hub { .. } => "the Hub's file listing",
            SizeSource::Unknown => return "size unknown (no config.json in the Hugging Face cache and no size in the name)".into(),
        };
        let mut s = match self.params {
            Some(p) => format!("{} parameters", fmt_params(p)),
            None => "size".into(),
        };
        if let Some(b) = self.weight_bytes
            && self.source != SizeSource::Name
        {
            s.push_str(&format!(", {:.1} GiB of weights", b as f64 / GIB));
        }
        format!("{s} (from {src})")
    }
}

/// "61.0 GiB", "390.6 KiB": GiB with one decimal from 1 GiB up, else the nearest unit.
fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fmt_params(p: f64) -> String {
    let b = p / 1e9;
    if b < 0.1 {
        format!("{:.1}M", p / 1e6)
    } else if b >= 10.0 {
        format!("{b:.0}B")
    } else {
        format!("{b:.1}B")
    }
}

/// Parameter count from a name: "Qwen3-32B" -> 32e9, "Qwen3-235B-A22B" -> 235e9 (total, not
/// active), "Mixtral-8x7B" -> 56e9, "Qwen3-0.6B" -> 0.6e9. A few well-known names without a
/// size in them are known by heart.
pub fn params_from_name(name: &str) -> Option<f64> {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    for tok in base.split(['-', '_']) {
        let Some(num) = tok.strip_suffix('b') else {
            continue;
        };
        if let Some((n, per)) = num.split_once('x') {
            if let (Ok(n), Ok(per)) = (n.parse::<f64>(), per.parse::<f64>())
                && n > 0.0
                && per > 0.0
            {
                return Some(n * per * 1e9);
            }
            continue;
        }
        if num.starts_with(|c: char| c.is_ascii_digit())
            && let Ok(v) = num.parse::<f64>()
            && v > 0.0
        {
            return Some(v * 1e9);
        }
    }
    const KNOWN: &[(&str, f64)] = &[
        ("deepseek-r1", 671e9),
        ("deepseek-v3", 671e9),
        ("kimi-k2", 1000e9),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| base.starts_with(k))
        .map(|(_, p)| *p)
}

/// Precision implied by a name ("-FP8", "MXFP4", "gpt-oss").
pub fn precision_from_name(name: &str) -> Option<Precision> {
    let l = name.to_ascii_lowercase();
    if l.contains("mxfp4") || l.contains("gpt-oss") || l.contains("fp4") {
        Some(Precision::Fp4)
    } else if l.contains("fp8") {
        Some(Precision::Fp8)
    } else if l.contains("awq") || l.contains("gptq") || l.contains("int4") {
        Some(Precision::Int4)
    } else if l.contains("int8") || l.contains("w8a8") {
        Some(Precision::Int8)
    } else {
        None
    }
}

/// Everything known about a model from its name and, when present, config.json and the
/// safetensors index text.
pub fn facts(name: &str, config: Option<&str>, index: Option<&str>) -> ModelFacts {
    let cfg = config.and_then(|t| parse_config(t).ok());
    let total = index.and_then(|t| {
        serde_json::from_str::<Value>(t)
            .ok()?
            .get("metadata")?
            .get("total_size")?
            .as_u64()
    });
    let name_precision = precision_from_name(name);
    match (cfg, total) {
        (Some(c), total) => {
            let params = c.param_count() as f64;
            let weight = total.unwrap_or((params * c.bytes_per_param()) as u64);
            ModelFacts {
                params: Some(params),
                weight_bytes: Some(weight),
                checkpoint_precision: c.checkpoint_precision().or(name_precision),
                config: Some(c),
                source: if total.is_some() {
                    SizeSource::Index
                } else {
                    SizeSource::Config
                },
            }
        }
        (None, Some(total)) => ModelFacts {
            params: Some(total as f64 / 2.0),
            weight_bytes: Some(total),
            config: None,
            source: SizeSource::Index,
            checkpoint_precision: name_precision,
        },
        (None, None) => match params_from_name(name) {
            Some(p) => ModelFacts {
                params: Some(p),
                weight_bytes: Some((p * bytes_per_param_of(name_precision)) as u64),
                config: None,
                source: SizeSource::Name,
                checkpoint_precision: name_precision,
            },
            None => ModelFacts {
                checkpoint_precision: name_precision,
                ..ModelFacts::unknown()
            },
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const QWEN3_32B: &str = r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":5120,"intermediate_size":25600,"num_hidden_layers":64,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false,"torch_dtype":"bfloat16"}"#;
    pub const LLAMA_8B: &str = r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":131072,"tie_word_embeddings":false,"torch_dtype":"bfloat16"}"#;
    const LLAMA_70B: &str = r#"{"model_type":"llama","hidden_size":8192,"intermediate_size":28672,"num_hidden_layers":80,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,"vocab_size":128256,"max_position_embeddings":131072,"torch_dtype":"bfloat16"}"#;
    const QWEN3_235B: &str = r#"{"model_type":"qwen3_moe","hidden_size":4096,"intermediate_size":12288,"moe_intermediate_size":1536,"num_experts":128,"num_experts_per_tok":8,"decoder_sparse_step":1,"mlp_only_layers":[],"num_hidden_layers":94,"num_attention_heads":64,"num_key_value_heads":4,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"torch_dtype":"bfloat16"}"#;
    const DEEPSEEK_R1: &str = r#"{"model_type":"deepseek_v3","hidden_size":7168,"intermediate_size":18432,"moe_intermediate_size":2048,"n_routed_experts":256,"n_shared_experts":1,"num_experts_per_tok":8,"first_k_dense_replace":3,"moe_layer_freq":1,"num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,"q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"vocab_size":129280,"max_position_embeddings":163840,"quantization_config":{"quant_method":"fp8","fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128]},"torch_dtype":"bfloat16"}"#;

    #[test]
    fn config_errors_say_what_is_wrong() {
        assert!(matches!(
            parse_config("nope").unwrap_err(),
            ConfigError::NotJson(_)
        ));
        assert_eq!(
            parse_config(r#"{"hidden_size": 4096}"#).unwrap_err(),
            ConfigError::Missing("num_attention_heads")
        );
        assert_eq!(
            parse_config(r#"{"hidden_size": 0, "num_attention_heads": 32}"#).unwrap_err(),
            ConfigError::Zero
        );
        let e = parse_config(r#"{"hidden_size": 4096, "num_experts": 99999999}"#).unwrap_err();
        assert_eq!(
            e,
            ConfigError::Implausible {
                key: "num_experts",
                value: 99999999,
                limit: 2048
            }
        );
        assert_eq!(
            e.to_string(),
            "config.json `num_experts` = 99999999 is implausible (at most 2048); is the file corrupt?"
        );
    }

    #[test]
    fn param_counts_match_published_totals() {
        // Exact parameter counts: `metadata.total_size` of each model's
        // model.safetensors.index.json divided by 2 bytes per bf16 parameter.
        let cases = [
            (LLAMA_8B, 8_030_261_248u64),
            (LLAMA_70B, 70_553_706_496),
            (QWEN3_32B, 32_762_123_264),
            // 2,487,755,008 per layer x 94 + 1,244,659,712 (embeddings and LM head) + 4,096.
            (QWEN3_235B, 235_093_634_560),
        ];
        for (text, want) in cases {
            assert_eq!(parse_config(text).unwrap().param_count(), want);
        }
        // DeepSeek-R1: 671.03B without the MTP layer; allow the router-bias slack.
        let ds = parse_config(DEEPSEEK_R1).unwrap().param_count() as f64;
        assert!((ds / 671_026_419_200.0 - 1.0).abs() < 0.001, "{ds}");
    }

    #[test]
    fn kv_per_token() {
        let q = parse_config(QWEN3_32B).unwrap();
        assert_eq!(q.kv_bytes_per_token_per_gpu(1, 2), 262_144);
        assert_eq!(q.kv_bytes_per_token_per_gpu(8, 2), 32_768);
        let m = parse_config(QWEN3_235B).unwrap();
        // 4 KV heads over 8 ranks: each rank keeps one (replicated) head.
        assert_eq!(m.kv_bytes_per_token_per_gpu(8, 2), 2 * 94 * 128 * 2);
        let d = parse_config(DEEPSEEK_R1).unwrap();
        assert_eq!(d.kv_bytes_per_token_per_gpu(8, 2), 70_272);
    }

    #[test]
    fn tp_validity() {
        let q = parse_config(QWEN3_32B).unwrap();
        for (tp, ok) in [
            (1, true),
            (2, true),
            (4, true),
            (8, true),
            (3, false),
            (6, false),
        ] {
            assert_eq!(q.tp_check(tp).is_ok(), ok, "qwen3-32b tp{tp}");
        }
        // Qwen3-235B-A22B-FP8: moe_intermediate 1536 / TP must stay a multiple of 128.
        let mut fp8 = parse_config(QWEN3_235B).unwrap();
        fp8.quant_method = Some("fp8".into());
        fp8.weight_block_size = Some(vec![128, 128]);
        for (tp, ok) in [(1, true), (2, true), (4, true), (8, false)] {
            assert_eq!(fp8.tp_check(tp).is_ok(), ok, "235b fp8 tp{tp}");
        }
        let e = fp8.tp_check(8).unwrap_err();
        assert!(matches!(e, TpError::Fp8Block { tp: 8, .. }), "{e:?}");
        assert!(e.to_string().contains("block"), "{e}");
        let d = parse_config(DEEPSEEK_R1).unwrap();
        assert!(d.tp_check(8).is_ok());
        assert_eq!(d.checkpoint_precision(), Some(Precision::Fp8));
    }

    #[test]
    fn sizes_from_names() {
        let cases: &[(&str, Option<f64>)] = &[
            ("Qwen/Qwen3-32B", Some(32e9)),
            ("Qwen/Qwen3-0.6B", Some(0.6e9)),
            ("Qwen/Qwen3-235B-A22B", Some(235e9)),
            ("Qwen/Qwen3-235B-A22B-FP8", Some(235e9)),
            ("mistralai/Mixtral-8x7B-Instruct-v0.1", Some(56e9)),
            ("meta-llama/Llama-3.1-8B-Instruct", Some(8e9)),
            ("meta-llama/Llama-3.1-70B-Instruct", Some(70e9)),
            ("openai/gpt-oss-120b", Some(120e9)),
            ("deepseek-ai/DeepSeek-R1", Some(671e9)),
            ("deepseek-ai/DeepSeek-R1-0528", Some(671e9)),
            ("org/some-model", None),
            ("org/Qwen2.5-VL", None),
        ];
        for (name, want) in cases {
            let got = params_from_name(name);
            assert_eq!(got.map(|v| v.round()), want.map(|v| v.round()), "{name}");
        }
    }

    #[test]
    fn hub_weights_replace_a_guess_but_not_an_index() {
        let hub = |bytes| HubWeights {
            bytes,
            files: 3,
            format: "safetensors",
        };
        // The name says 7B (14 GB in bf16); the listing says 150 GiB: the listing wins and
        // the parameter count follows from it.
        let f = facts("org/Odd-7B", None, None).with_hub_weights(&hub(150 << 30));
        assert_eq!(f.source, SizeSource::Hub { files: 3 });
        assert_eq!(f.weight_bytes, Some(150 << 30));
        assert_eq!(f.params.map(|p| (p / 1e9).round()), Some(81.0));
        assert_eq!(
            f.describe(),
            "81B parameters, 150.0 GiB of weights in 3 file(s) (from the Hub's file listing; the model is not in the cache)"
        );
        // An FP8 checkpoint: one byte a parameter.
        let f = facts("org/Thing-FP8", None, None).with_hub_weights(&hub(8_000_000_000));
        assert_eq!(f.params, Some(8e9));
        // No size in the name: now there is one.
        let f = facts("org/mystery", None, None).with_hub_weights(&hub(400_000));
        assert_eq!(f.params, Some(200_000.0));
        assert!(
            f.describe()
                .starts_with("0.2M parameters, 390.6 KiB of weights"),
            "{}",
            f.describe()
        );
        // config.json keeps its parameter count; the weights are the listing's.
        let f = facts("Qwen/Qwen3-32B", Some(QWEN3_32B), None).with_hub_weights(&hub(70 << 30));
        assert_eq!(f.weight_bytes, Some(70 << 30));
        assert!(
            f.describe()
                .contains("parameters (from config.json), 70.0 GiB"),
            "{}",
            f.describe()
        );
        // An exact index in the cache is kept, and an empty listing changes nothing.
        let idx = r#"{"metadata":{"total_size":65524246528},"weight_map":{}}"#;
        let f = facts("Qwen/Qwen3-32B", None, Some(idx));
        assert_eq!(f.clone().with_hub_weights(&hub(1 << 30)), f);
        let f = facts("org/Odd-7B", None, None);
        assert_eq!(f.clone().with_hub_weights(&hub(0)), f);
    }

    #[test]
    fn preferred_rule_table() {
        let by_name = |n: &str| facts(n, None, None);
        let cases: &[(&str, u32, u32, Precision)] = &[
            ("meta-llama/Llama-3.1-8B-Instruct", 8, 1, Precision::Fp16),
            ("Qwen/Qwen3-8B", 8, 1, Precision::Fp16),
            ("org/Model-13B", 8, 2, Precision::Bf16),
            ("Qwen/Qwen3-14B", 8, 2, Precision::Bf16),
            ("Qwen/Qwen3-32B", 8, 4, Precision::Bf16),
            ("org/CodeLlama-34B", 8, 4, Precision::Bf16),
            ("meta-llama/Llama-3.1-70B-Instruct", 8, 8, Precision::Bf16),
            ("Qwen/Qwen2.5-72B-Instruct", 8, 8, Precision::Bf16),
            ("Qwen/Qwen3-32B", 2, 2, Precision::Bf16),
            ("meta-llama/Llama-3.1-70B-Instruct", 1, 1, Precision::Bf16),
            ("Qwen/Qwen3-235B-A22B-FP8", 8, 8, Precision::Fp8),
            ("org/unknown", 8, 8, Precision::Bf16),
            ("org/unknown", 6, 4, Precision::Bf16),
        ];
        for (name, usable, count, prec) in cases {
            let (c, p, why) = preferred(&by_name(name), *usable, None);
            assert_eq!((c, p), (*count, *prec), "{name} on {usable}: {why}");
        }
        // Memory-aware: 61 GiB of weights stay on 4 GPUs of 24 GiB but need 8 of 16 GiB.
        let f = facts("Qwen/Qwen3-32B", Some(QWEN3_32B), None);
        let (c, _, why) = preferred(&f, 8, Some(24 * 1024 * 1024 * 1024));
        assert_eq!(c, 4, "{why}");
        let (c, _, why) = preferred(&f, 8, Some(16 * 1024 * 1024 * 1024));
        assert_eq!(c, 8, "{why}");
    }

    #[test]
    fn facts_prefer_index_then_config_then_name() {
        let idx = r#"{"metadata":{"total_size":65524246528},"weight_map":{}}"#;
        let f = facts("Qwen/Qwen3-32B", Some(QWEN3_32B), Some(idx));
        assert_eq!(f.source, SizeSource::Index);
        assert_eq!(f.weight_bytes, Some(65_524_246_528));
        assert_eq!(f.checkpoint_precision, Some(Precision::Bf16));
        let f = facts("Qwen/Qwen3-32B", Some(QWEN3_32B), None);
        assert_eq!(f.source, SizeSource::Config);
        assert_eq!(f.weight_bytes, Some(65_524_246_528));
        let f = facts("Qwen/Qwen3-32B", None, None);
        assert_eq!(f.source, SizeSource::Name);
        let f = facts("Qwen/Qwen3-32B", Some("{not json"), None);
        assert_eq!(f.source, SizeSource::Name);
        assert!(facts("org/x", None, None).describe().contains("unknown"));
    }

    #[test]
    fn memory_fit() {
        let gib = 1024 * 1024 * 1024u64;
        let f = facts("Qwen/Qwen3-32B", Some(QWEN3_32B), None);
        // 61 GiB weights on one 192 GiB MI300X: fits with 32k context.
        assert!(fit(&f, 1, 192 * gib, 32768, 0.9, 2).is_ok());
        // On one 24 GiB card it does not, and no context makes it fit.
        let e = fit(&f, 1, 24 * gib, 32768, 0.9, 2).unwrap_err();
        assert!(e.describe().contains("GiB weights"));
        assert_eq!(max_context_that_fits(&f, 1, 24 * gib, 0.9, 2), None);
        // 80 GiB GPU: weights fit, 32k tokens of KV (8 GiB) do not; a shorter context does.
        let ctx = max_context_that_fits(&f, 1, 80 * gib, 0.9, 2).unwrap();
        assert!((2048..40960).contains(&ctx), "{ctx}");
        assert!(fit(&f, 1, 80 * gib, ctx, 0.9, 2).is_ok());
        assert!(fit(&f, 1, 80 * gib, ctx + 1024, 0.9, 2).is_err());
    }
}
