//! What flags vLLM and SGLang accept, how spellings map onto one logical flag, and a
//! "did you mean" helper, so a typo in a recipe or AIM_ENGINE_ARGS fails before launch.
//!
//! The tables are the union over the engine versions we support (vLLM 0.9 … 0.33, SGLang
//! 0.5.x): a flag that only some versions accept is known here and gated per version in
//! `version.rs`. Sources: each version's `vllm serve --help` and SGLang's server arguments,
//! and the flags AMD's published AIM profiles use.

use crate::types::Engine;

/// vLLM `serve` flags (long names, dashes).
pub(super) const VLLM_FLAGS: &[&str] = &[
    // Frontend / API server.
    "host",
    "port",
    "uds",
    "uvicorn-log-level",
    "disable-uvicorn-access-log",
    "allow-credentials",
    "allowed-origins",
    "allowed-methods",
    "allowed-headers",
    "api-key",
    "lora-modules",
    "chat-template",
    "chat-template-content-format",
    "response-role",
    "ssl-keyfile",
    "ssl-certfile",
    "ssl-ca-certs",
    "enable-ssl-refresh",
    "ssl-cert-reqs",
    "root-path",
    "middleware",
    "return-tokens-as-token-ids",
    "disable-frontend-multiprocessing",
    "enable-request-id-headers",
    "enable-auto-tool-choice",
    "exclude-tools-when-tool-choice-none",
    "tool-call-parser",
    "tool-parser-plugin",
    "tool-server",
    "log-config-file",
    "max-log-len",
    "disable-fastapi-docs",
    "enable-prompt-tokens-details",
    "enable-server-load-tracking",
    "enable-force-include-usage",
    "enable-tokenizer-info-endpoint",
    "enable-log-outputs",
    "h11-max-incomplete-event-size",
    "h11-max-header-count",
    "log-error-stack",
    "headless",
    "api-server-count",
    "config",
    "enable-log-requests",
    "disable-log-requests",
    "disable-log-stats",
    // Model.
    "model",
    "runner",
    "convert",
    "task",
    "tokenizer",
    "tokenizer-mode",
    "trust-remote-code",
    "dtype",
    "seed",
    "hf-config-path",
    "allowed-local-media-path",
    "allowed-media-domains",
    "revision",
    "code-revision",
    "rope-scaling",
    "rope-theta",
    "tokenizer-revision",
    "max-model-len",
    "quantization",
    "enforce-eager",
    "max-seq-len-to-capture",
    "max-logprobs",
    "logprobs-mode",
    "disable-sliding-window",
    "disable-cascade-attn",
    "skip-tokenizer-init",
    "enable-prompt-embeds",
    "served-model-name",
    "config-format",
    "hf-token",
    "hf-overrides",
    "pooler-config",
    "override-pooler-config",
    "logits-processor-pattern",
    "generation-config",
    "override-generation-config",
    "enable-sleep-mode",
    "model-impl",
    "override-attention-dtype",
    "logits-processors",
    "io-processor-plugin",
    "override-neuron-config",
    // Load.
    "load-format",
    "download-dir",
    "safetensors-load-strategy",
    "model-loader-extra-config",
    "ignore-patterns",
    "use-tqdm-on-load",
    "pt-load-map-location",
    // Structured outputs / reasoning.
    "reasoning-parser",
    "enable-reasoning",
    "guided-decoding-backend",
    "guided-decoding-disable-fallback",
    "guided-decoding-disable-any-whitespace",
    "guided-decoding-disable-additional-properties",
    "structured-outputs-config",
    // Parallelism.
    "distributed-executor-backend",
    "pipeline-parallel-size",
    "tensor-parallel-size",
    "decode-context-parallel-size",
    "data-parallel-size",
    "data-parallel-rank",
    "data-parallel-start-rank",
    "data-parallel-size-local",
    "data-parallel-address",
    "data-parallel-rpc-port",
    "data-parallel-backend",
    "data-parallel-hybrid-lb",
    "data-parallel-external-lb",
    "enable-expert-parallel",
    "enable-dbo",
    "dbo-decode-token-threshold",
    "dbo-prefill-token-threshold",
    "enable-eplb",
    "eplb-config",
    "expert-placement-strategy",
    "num-redundant-experts",
    "max-parallel-loading-workers",
    "ray-workers-use-nsight",
    "disable-custom-all-reduce",
    "worker-cls",
    "worker-extension-cls",
    "enable-multimodal-encoder-data-parallel",
    "all2all-backend",
    "nnodes",
    "node-rank",
    "master-addr",
    "master-port",
    // Cache.
    "block-size",
    "gpu-memory-utilization",
    "kv-cache-memory-bytes",
    "swap-space",
    "kv-cache-dtype",
    "num-gpu-blocks-override",
    "enable-prefix-caching",
    "prefix-caching-hash-algo",
    "cpu-offload-gb",
    "calculate-kv-scales",
    "kv-sharing-fast-prefill",
    "mamba-cache-dtype",
    "mamba-ssm-cache-dtype",
    // Multimodal.
    "limit-mm-per-prompt",
    "media-io-kwargs",
    "mm-processor-kwargs",
    "mm-processor-cache-gb",
    "disable-mm-preprocessor-cache",
    "mm-encoder-tp-mode",
    "interleave-mm-strings",
    "skip-mm-profiling",
    // LoRA.
    "enable-lora",
    "enable-lora-bias",
    "max-loras",
    "max-lora-rank",
    "lora-extra-vocab-size",
    "lora-dtype",
    "max-cpu-loras",
    "fully-sharded-loras",
    "default-mm-loras",
    // Observability.
    "show-hidden-metrics-for-version",
    "otlp-traces-endpoint",
    "collect-detailed-traces",
    // Scheduler.
    "max-num-batched-tokens",
    "max-num-seqs",
    "max-num-partial-prefills",
    "max-long-partial-prefills",
    "long-prefill-token-threshold",
    "num-lookahead-slots",
    "scheduling-policy",
    "enable-chunked-prefill",
    "disable-chunked-mm-input",
    "scheduler-cls",
    "disable-hybrid-kv-cache-manager",
    "async-scheduling",
    "num-scheduler-steps",
    "multi-step-stream-outputs",
    "cuda-graph-sizes",
    "scheduler-delay-factor",
    "preemption-mode",
    // Compilation, speculative, kv transfer, misc.
    "compilation-config",
    "attention-backend",
    "kv-transfer-config",
    "kv-events-config",
    "additional-config",
    "speculative-config",
    "device",
    "disable-async-output-proc",
    "use-v2-block-manager",
    "tokenizer-pool-size",
    // Newer releases (0.12+), seen in published launch scripts.
    "attention-config",
    "max-cudagraph-capture-size",
    "cudagraph-capture-sizes",
    "kv-offloading-size",
    "kv-offloading-backend",
    "moe-backend",
    "mamba-cache-mode",
    "profiler-config",
    "stream-interval",
    "shutdown-timeout",
];

/// vLLM flags that take one JSON object and therefore also accept dotted keys
/// (`--compilation-config.cudagraph_mode FULL`, `-O.level 3`).
const VLLM_JSON_FLAGS: &[&str] = &[
    "compilation-config",
    "speculative-config",
    "attention-config",
    "kv-transfer-config",
    "kv-events-config",
    "structured-outputs-config",
    "eplb-config",
    "profiler-config",
    "additional-config",
    "hf-overrides",
];

/// vLLM boolean flags that also accept a `--no-` form (argparse BooleanOptionalAction).
const VLLM_BOOL_FLAGS: &[&str] = &[
    "disable-uvicorn-access-log",
    "allow-credentials",
    "enable-ssl-refresh",
    "return-tokens-as-token-ids",
    "disable-frontend-multiprocessing",
    "enable-request-id-headers",
    "enable-auto-tool-choice",
    "exclude-tools-when-tool-choice-none",
    "disable-fastapi-docs",
    "enable-prompt-tokens-details",
    "enable-server-load-tracking",
    "enable-force-include-usage",
    "enable-tokenizer-info-endpoint",
    "enable-log-outputs",
    "log-error-stack",
    "enable-log-requests",
    "trust-remote-code",
    "enforce-eager",
    "disable-sliding-window",
    "disable-cascade-attn",
    "skip-tokenizer-init",
    "enable-prompt-embeds",
    "enable-sleep-mode",
    "use-tqdm-on-load",
    "enable-reasoning",
    "data-parallel-hybrid-lb",
    "data-parallel-external-lb",
    "enable-expert-parallel",
    "enable-dbo",
    "enable-eplb",
    "ray-workers-use-nsight",
    "disable-custom-all-reduce",
    "enable-multimodal-encoder-data-parallel",
    "enable-prefix-caching",
    "calculate-kv-scales",
    "kv-sharing-fast-prefill",
    "disable-mm-preprocessor-cache",
    "interleave-mm-strings",
    "skip-mm-profiling",
    "enable-lora",
    "enable-lora-bias",
    "fully-sharded-loras",
    "enable-chunked-prefill",
    "disable-chunked-mm-input",
    "disable-hybrid-kv-cache-manager",
    "async-scheduling",
    "disable-async-output-proc",
];

/// vLLM short spellings -> long name (argparse aliases in `vllm serve`).
const VLLM_ALIASES: &[(&str, &str)] = &[
    ("tp", "tensor-parallel-size"),
    ("pp", "pipeline-parallel-size"),
    ("dp", "data-parallel-size"),
    ("dpl", "data-parallel-size-local"),
    ("dpa", "data-parallel-address"),
    ("dpp", "data-parallel-rpc-port"),
    ("dpb", "data-parallel-backend"),
    ("dcp", "decode-context-parallel-size"),
    ("q", "quantization"),
    ("O", "compilation-config"),
    ("cc", "compilation-config"),
    ("asc", "api-server-count"),
    ("model-tag", "model"),
];

/// SGLang `launch_server` flags (0.5.x).
pub(super) const SGLANG_FLAGS: &[&str] = &[
    "model-path",
    "tokenizer-path",
    "tokenizer-mode",
    "tokenizer-worker-num",
    "skip-tokenizer-init",
    "load-format",
    "model-loader-extra-config",
    "trust-remote-code",
    "context-length",
    "is-embedding",
    "enable-multimodal",
    "revision",
    "model-impl",
    "host",
    "port",
    "skip-server-warmup",
    "warmups",
    "nccl-port",
    "dtype",
    "quantization",
    "quantization-param-path",
    "kv-cache-dtype",
    "mem-fraction-static",
    "max-running-requests",
    "max-queued-requests",
    "max-total-tokens",
    "chunked-prefill-size",
    "max-prefill-tokens",
    "schedule-policy",
    "schedule-conservativeness",
    "page-size",
    "hybrid-kvcache-ratio",
    "swa-full-tokens-ratio",
    "disable-hybrid-swa-memory",
    "device",
    "tensor-parallel-size",
    "pipeline-parallel-size",
    "max-micro-batch-size",
    "stream-interval",
    "stream-output",
    "random-seed",
    "constrained-json-whitespace-pattern",
    "watchdog-timeout",
    "dist-timeout",
    "download-dir",
    "base-gpu-id",
    "gpu-id-step",
    "sleep-on-idle",
    "log-level",
    "log-level-http",
    "log-requests",
    "log-requests-level",
    "crash-dump-folder",
    "show-time-cost",
    "enable-metrics",
    "enable-metrics-for-all-schedulers",
    "bucket-time-to-first-token",
    "bucket-inter-token-latency",
    "bucket-e2e-request-latency",
    "collect-tokens-histogram",
    "decode-log-interval",
    "enable-request-time-stats-logging",
    "kv-events-config",
    "api-key",
    "served-model-name",
    "weight-version",
    "chat-template",
    "completion-template",
    "file-storage-path",
    "enable-cache-report",
    "reasoning-parser",
    "tool-call-parser",
    "tool-server",
    "data-parallel-size",
    "load-balance-method",
    "dist-init-addr",
    "nnodes",
    "node-rank",
    "json-model-override-args",
    "preferred-sampling-params",
    "enable-lora",
    "max-lora-rank",
    "lora-target-modules",
    "lora-paths",
    "max-loras-per-batch",
    "lora-backend",
    "attention-backend",
    "prefill-attention-backend",
    "decode-attention-backend",
    "sampling-backend",
    "grammar-backend",
    "mm-attention-backend",
    "speculative-algorithm",
    "speculative-draft-model-path",
    "speculative-num-steps",
    "speculative-eagle-topk",
    "speculative-num-draft-tokens",
    "expert-parallel-size",
    "enable-ep-moe",
    "moe-a2a-backend",
    "moe-runner-backend",
    "enable-eplb",
    "ep-num-redundant-experts",
    "enable-double-sparsity",
    "disable-radix-cache",
    "cuda-graph-max-bs",
    "cuda-graph-bs",
    "disable-cuda-graph",
    "disable-cuda-graph-padding",
    "enable-profile-cuda-graph",
    "enable-nccl-nvls",
    "enable-symm-mem",
    "disable-outlines-disk-cache",
    "disable-custom-all-reduce",
    "enable-mscclpp",
    "disable-overlap-schedule",
    "enable-mixed-chunk",
    "enable-dp-attention",
    "enable-dp-lm-head",
    "enable-two-batch-overlap",
    "enable-torch-compile",
    "torch-compile-max-bs",
    "torchao-config",
    "enable-nan-detection",
    "enable-p2p-check",
    "triton-attention-reduce-in-fp32",
    "triton-attention-num-kv-splits",
    "num-continuous-decode-steps",
    "delete-ckpt-after-loading",
    "enable-memory-saver",
    "allow-auto-truncate",
    "enable-custom-logit-processor",
    "flashinfer-mla-disable-ragged",
    "disable-shared-experts-fusion",
    "disable-chunked-prefix-cache",
    "disable-fast-image-processor",
    "enable-return-hidden-states",
    "enable-deterministic-inference",
    "disaggregation-mode",
    "disaggregation-transfer-backend",
    "disaggregation-bootstrap-port",
    "enable-hierarchical-cache",
    "hicache-ratio",
    "hicache-size",
    "enable-tokenizer-batch-encode",
    "keep-mm-feature-on-device",
    "config",
    "moe-dense-tp-size",
    "deepep-mode",
    "enable-deepep-moe",
    "ep-dispatch-algorithm",
    "init-expert-location",
    "enable-priority-scheduling",
    "disable-tokenizer-batch-decode",
    "num-reserved-decode-tokens",
    "hicache-storage-backend",
    "hicache-write-policy",
    "hicache-io-backend",
    "hicache-mem-layout",
    "enable-lmcache",
    "mamba-ssm-dtype",
    "max-mamba-cache-size",
    "speculative-draft-model-revision",
    "speculative-accept-threshold-single",
    "speculative-token-map",
    "enable-flashinfer-allreduce-fusion",
    "enable-single-batch-overlap",
    "enable-fp32-lm-head",
    "cpu-offload-gb",
    "offload-group-size",
    "offload-num-in-group",
    "offload-prefetch-step",
    "offload-mode",
    "enable-trace",
    "otlp-traces-endpoint",
    "sampling-defaults",
    "enable-cudagraph-gc",
];

/// SGLang alternative spellings -> the long name in `SGLANG_FLAGS`. `tp`/`dp` work in
/// SGLang through argparse prefix abbreviation; the docs use `--tp 8`.
const SGLANG_ALIASES: &[(&str, &str)] = &[
    ("model", "model-path"),
    ("tp-size", "tensor-parallel-size"),
    ("tp", "tensor-parallel-size"),
    ("pp-size", "pipeline-parallel-size"),
    ("dp-size", "data-parallel-size"),
    ("dp", "data-parallel-size"),
    ("ep-size", "expert-parallel-size"),
    ("ep", "expert-parallel-size"),
];

/// Spelling-normalised form of a flag: leading dashes stripped, `_` -> `-`.
pub fn normalize(flag: &str) -> String {
    flag.trim().trim_start_matches('-').replace('_', "-")
}

/// The long name a (normalised) flag stands for, resolving short aliases.
pub fn resolve_alias(engine: Engine, flag: &str) -> String {
    let aliases = match engine {
        Engine::Vllm => VLLM_ALIASES,
        Engine::Sglang => SGLANG_ALIASES,
    };
    aliases
        .iter()
        .find(|(short, _)| *short == flag)
        .map_or_else(|| flag.to_string(), |(_, long)| (*long).to_string())
}

fn flag_table(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Vllm => VLLM_FLAGS,
        Engine::Sglang => SGLANG_FLAGS,
    }
}

/// One logical setting: the long flag name and whether it was given in its `--no-` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub name: String,
    pub negated: bool,
}

/// Maps any accepted spelling to its logical setting, or `None` when `engine` does not
/// know the flag. `no-enable-prefix-caching` and `enable-prefix-caching` are one setting
/// (vLLM BooleanOptionalAction), so a user value for either replaces the recipe's.
pub fn logical(engine: Engine, flag: &str) -> Option<Logical> {
    if engine == Engine::Vllm
        && let Some((prefix, field)) = flag.trim().split_once('.')
    {
        // Dotted key into a JSON-valued flag: the field keeps its own spelling (JSON field
        // names use underscores), only the flag part is normalised.
        let long = resolve_alias(engine, &normalize(prefix));
        let ok = VLLM_JSON_FLAGS.contains(&long.as_str())
            && !field.is_empty()
            && !field.starts_with('.')
            && !field.contains(char::is_whitespace);
        return ok.then(|| Logical {
            name: format!("{long}.{field}"),
            negated: false,
        });
    }
    let norm = normalize(flag);
    // Short aliases are case-sensitive (`-O`), so resolve before anything else.
    let long = resolve_alias(engine, &norm);
    if flag_table(engine).contains(&long.as_str()) {
        return Some(Logical {
            name: long,
            negated: false,
        });
    }
    if engine == Engine::Vllm
        && let Some(rest) = long.strip_prefix("no-")
        && VLLM_BOOL_FLAGS.contains(&rest)
    {
        return Some(Logical {
            name: rest.to_string(),
            negated: true,
        });
    }
    None
}

/// Whether `engine` accepts `flag` in some supported version (spelling-normalised).
pub fn is_known(engine: Engine, flag: &str) -> bool {
    logical(engine, flag).is_some()
}

/// The closest known flag to `flag`, if one is close enough to be a plausible typo.
pub fn suggest(engine: Engine, flag: &str) -> Option<String> {
    let norm = normalize(flag);
    let negated_forms = match engine {
        Engine::Vllm => VLLM_BOOL_FLAGS,
        Engine::Sglang => &[],
    };
    let candidates = flag_table(engine)
        .iter()
        .map(|f| (*f).to_string())
        .chain(negated_forms.iter().map(|f| format!("no-{f}")));
    // A third of the length (at least 2 edits) keeps "tensor-paralel-size" but not
    // unrelated words.
    let limit = (norm.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(&norm, &c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars (two-row dynamic programming).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables are consistent: no duplicates, every `no-` base and alias target is a flag.
    #[test]
    fn tables_are_consistent() {
        for (name, table) in [("vllm", VLLM_FLAGS), ("sglang", SGLANG_FLAGS)] {
            let mut seen = std::collections::HashSet::new();
            for f in table {
                assert!(seen.insert(*f), "{name}: duplicate {f}");
                assert_eq!(normalize(f), *f, "{name}: {f} not normalised");
            }
        }
        for f in VLLM_BOOL_FLAGS.iter().chain(VLLM_JSON_FLAGS) {
            assert!(VLLM_FLAGS.contains(f), "{f} not in VLLM_FLAGS");
        }
        for (engine, aliases) in [
            (Engine::Vllm, VLLM_ALIASES),
            (Engine::Sglang, SGLANG_ALIASES),
        ] {
            for (short, long) in aliases {
                assert!(
                    flag_table(engine).contains(long),
                    "{engine}: alias {short} -> {long}"
                );
            }
        }
    }

    #[test]
    fn edit_distance_table() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("abc", "", 3),
            ("kitten", "sitting", 3),
            ("tensor-paralel-size", "tensor-parallel-size", 1),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} vs {b}");
        }
    }

    #[test]
    fn logical_resolves_spellings() {
        let cases = [
            (
                Engine::Vllm,
                "tensor_parallel_size",
                "tensor-parallel-size",
                false,
            ),
            (Engine::Vllm, "--tp", "tensor-parallel-size", false),
            (Engine::Vllm, "-O", "compilation-config", false),
            (
                Engine::Vllm,
                "no-enable-prefix-caching",
                "enable-prefix-caching",
                true,
            ),
            (
                Engine::Vllm,
                "no_async_scheduling",
                "async-scheduling",
                true,
            ),
            (Engine::Sglang, "tp-size", "tensor-parallel-size", false),
            (Engine::Sglang, "model", "model-path", false),
            (
                Engine::Sglang,
                "mem_fraction_static",
                "mem-fraction-static",
                false,
            ),
        ];
        for (engine, raw, name, negated) in cases {
            assert_eq!(
                logical(engine, raw),
                Some(Logical {
                    name: name.to_string(),
                    negated
                }),
                "{engine} {raw}"
            );
        }
    }

    #[test]
    fn no_form_only_for_boolean_flags() {
        assert!(!is_known(Engine::Vllm, "no-port"));
        assert!(!is_known(Engine::Vllm, "no-max-model-len"));
        assert!(!is_known(Engine::Sglang, "no-trust-remote-code"));
        // Dotted keys only into JSON-valued vLLM flags.
        assert!(!is_known(Engine::Vllm, "max-model-len.x"));
        assert!(!is_known(Engine::Vllm, "compilation-config."));
        assert!(!is_known(Engine::Sglang, "compilation-config.level"));
    }

    #[test]
    fn suggestions() {
        for (engine, typo, want) in [
            (
                Engine::Vllm,
                "tensor-paralel-size",
                Some("tensor-parallel-size"),
            ),
            (
                Engine::Vllm,
                "gpu_memory_utilisation",
                Some("gpu-memory-utilization"),
            ),
            (Engine::Vllm, "max-model-length", Some("max-model-len")),
            (
                Engine::Vllm,
                "no-enable-prefix-cache",
                Some("no-enable-prefix-caching"),
            ),
            (Engine::Sglang, "mem-fraction", None),
            (Engine::Sglang, "context-lenght", Some("context-length")),
            (Engine::Vllm, "banana", None),
        ] {
            assert_eq!(suggest(engine, typo).as_deref(), want, "{engine} {typo}");
        }
    }
}
