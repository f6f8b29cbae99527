//! Command-line parsing that mimics vLLM's and SGLang's argparse front ends: the flags the
//! supervisor emits are accepted, anything else fails the way argparse fails (exit 2 and
//! `<prog>: error: unrecognized arguments: ...`), so supervisor tests see the real failure mode.

/// Which engine the fake impersonates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Vllm,
    Sglang,
}

/// How many values a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    Bare,
    One,
    /// argparse `nargs='+'`: one or more values up to the next flag.
    Many,
}

/// The parsed, effective command line.
#[derive(Clone, Debug)]
pub struct Args {
    pub mode: Mode,
    pub model: String,
    pub host: String,
    pub port: u16,
    pub tp: u32,
    pub served_names: Vec<String>,
    pub api_keys: Vec<String>,
    /// Normalised flags as given (for the "non-default args" log line).
    pub given: Vec<(String, Vec<String>)>,
}

/// An argparse-style failure: the text to print on stderr; the exit code is always 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

/// vLLM `serve` flags taking one value (long names without dashes). The union over vLLM
/// 0.9 … 0.33; version-specific ones are gated in `vllm_has`. From each version's `vllm serve --help`.
const VLLM_VALUE: &[&str] = &[
    "model",
    "host",
    "port",
    "uds",
    "uvicorn-log-level",
    "allowed-origins",
    "allowed-methods",
    "allowed-headers",
    "chat-template",
    "chat-template-content-format",
    "response-role",
    "ssl-keyfile",
    "ssl-certfile",
    "ssl-ca-certs",
    "ssl-cert-reqs",
    "root-path",
    "middleware",
    "tool-call-parser",
    "tool-parser-plugin",
    "tool-server",
    "log-config-file",
    "max-log-len",
    "h11-max-incomplete-event-size",
    "h11-max-header-count",
    "api-server-count",
    "config",
    "runner",
    "convert",
    "task",
    "tokenizer",
    "tokenizer-mode",
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
    "max-seq-len-to-capture",
    "max-logprobs",
    "logprobs-mode",
    "config-format",
    "hf-token",
    "hf-overrides",
    "pooler-config",
    "override-pooler-config",
    "logits-processor-pattern",
    "generation-config",
    "override-generation-config",
    "model-impl",
    "override-attention-dtype",
    "logits-processors",
    "io-processor-plugin",
    "override-neuron-config",
    "load-format",
    "download-dir",
    "safetensors-load-strategy",
    "model-loader-extra-config",
    "ignore-patterns",
    "pt-load-map-location",
    "reasoning-parser",
    "guided-decoding-backend",
    "structured-outputs-config",
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
    "dbo-decode-token-threshold",
    "dbo-prefill-token-threshold",
    "eplb-config",
    "expert-placement-strategy",
    "num-redundant-experts",
    "max-parallel-loading-workers",
    "worker-cls",
    "worker-extension-cls",
    "all2all-backend",
    "nnodes",
    "node-rank",
    "master-addr",
    "master-port",
    "block-size",
    "gpu-memory-utilization",
    "kv-cache-memory-bytes",
    "swap-space",
    "kv-cache-dtype",
    "num-gpu-blocks-override",
    "prefix-caching-hash-algo",
    "cpu-offload-gb",
    "mamba-cache-dtype",
    "mamba-ssm-cache-dtype",
    "limit-mm-per-prompt",
    "media-io-kwargs",
    "mm-processor-kwargs",
    "mm-processor-cache-gb",
    "mm-encoder-tp-mode",
    "max-loras",
    "max-lora-rank",
    "lora-extra-vocab-size",
    "lora-dtype",
    "max-cpu-loras",
    "default-mm-loras",
    "show-hidden-metrics-for-version",
    "otlp-traces-endpoint",
    "collect-detailed-traces",
    "max-num-batched-tokens",
    "max-num-seqs",
    "max-num-partial-prefills",
    "max-long-partial-prefills",
    "long-prefill-token-threshold",
    "num-lookahead-slots",
    "scheduling-policy",
    "scheduler-cls",
    "num-scheduler-steps",
    "scheduler-delay-factor",
    "preemption-mode",
    "compilation-config",
    "attention-backend",
    "kv-transfer-config",
    "kv-events-config",
    "additional-config",
    "speculative-config",
    "device",
    "tokenizer-pool-size",
    "attention-config",
    "max-cudagraph-capture-size",
    "kv-offloading-size",
    "kv-offloading-backend",
    "moe-backend",
    "mamba-cache-mode",
    "profiler-config",
    "stream-interval",
    "shutdown-timeout",
];

/// vLLM flags with argparse `nargs='+'`.
const VLLM_MANY: &[&str] = &[
    "served-model-name",
    "api-key",
    "lora-modules",
    "cuda-graph-sizes",
    "cudagraph-capture-sizes",
];

/// vLLM flags without a value; those marked in `VLLM_NO_FORM` also accept `--no-<name>`
/// (argparse BooleanOptionalAction).
const VLLM_BARE: &[&str] = &[
    "headless",
    "disable-log-requests",
    "disable-log-stats",
    "use-v2-block-manager",
    "guided-decoding-disable-fallback",
    "guided-decoding-disable-any-whitespace",
    "guided-decoding-disable-additional-properties",
    "multi-step-stream-outputs",
];

const VLLM_NO_FORM: &[&str] = &[
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

/// vLLM short spellings (single dash) → long name.
const VLLM_SHORT: &[(&str, &str)] = &[
    ("-tp", "tensor-parallel-size"),
    ("-pp", "pipeline-parallel-size"),
    ("-dp", "data-parallel-size"),
    ("-dpl", "data-parallel-size-local"),
    ("-dpa", "data-parallel-address"),
    ("-dpp", "data-parallel-rpc-port"),
    ("-dpb", "data-parallel-backend"),
    ("-dcp", "decode-context-parallel-size"),
    ("-q", "quantization"),
    ("-O", "compilation-config"),
    ("-cc", "compilation-config"),
    ("-asc", "api-server-count"),
];

/// vLLM flags holding one JSON object, which also take dotted keys (`-O.level 3`).
const VLLM_JSON: &[&str] = &[
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

/// SGLang flags taking one value (0.5.x); every `enable-*`/`disable-*` flag and those in
/// `SGLANG_BARE` take none, those in `SGLANG_MANY` one or more.
const SGLANG_VALUE: &[&str] = &[
    "model-path",
    "tokenizer-path",
    "tokenizer-mode",
    "tokenizer-worker-num",
    "load-format",
    "model-loader-extra-config",
    "context-length",
    "revision",
    "model-impl",
    "host",
    "port",
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
    "device",
    "tensor-parallel-size",
    "pipeline-parallel-size",
    "max-micro-batch-size",
    "stream-interval",
    "random-seed",
    "constrained-json-whitespace-pattern",
    "watchdog-timeout",
    "dist-timeout",
    "download-dir",
    "base-gpu-id",
    "gpu-id-step",
    "log-level",
    "log-level-http",
    "log-requests-level",
    "crash-dump-folder",
    "bucket-time-to-first-token",
    "bucket-inter-token-latency",
    "bucket-e2e-request-latency",
    "decode-log-interval",
    "kv-events-config",
    "api-key",
    "served-model-name",
    "weight-version",
    "chat-template",
    "completion-template",
    "file-storage-path",
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
    "max-lora-rank",
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
    "moe-a2a-backend",
    "moe-runner-backend",
    "ep-num-redundant-experts",
    "cuda-graph-max-bs",
    "torch-compile-max-bs",
    "torchao-config",
    "triton-attention-num-kv-splits",
    "num-continuous-decode-steps",
    "disaggregation-mode",
    "disaggregation-transfer-backend",
    "disaggregation-bootstrap-port",
    "hicache-ratio",
    "hicache-size",
    "config",
    "moe-dense-tp-size",
    "deepep-mode",
    "ep-dispatch-algorithm",
    "init-expert-location",
    "num-reserved-decode-tokens",
    "hicache-storage-backend",
    "hicache-write-policy",
    "hicache-io-backend",
    "hicache-mem-layout",
    "mamba-ssm-dtype",
    "max-mamba-cache-size",
    "speculative-draft-model-revision",
    "speculative-accept-threshold-single",
    "speculative-token-map",
    "cpu-offload-gb",
    "offload-group-size",
    "offload-num-in-group",
    "offload-prefetch-step",
    "offload-mode",
    "otlp-traces-endpoint",
    "sampling-defaults",
];

const SGLANG_MANY: &[&str] = &["cuda-graph-bs", "lora-paths", "lora-target-modules"];

const SGLANG_BARE: &[&str] = &[
    "skip-tokenizer-init",
    "trust-remote-code",
    "is-embedding",
    "skip-server-warmup",
    "stream-output",
    "sleep-on-idle",
    "log-requests",
    "show-time-cost",
    "collect-tokens-histogram",
    "delete-ckpt-after-loading",
    "allow-auto-truncate",
    "triton-attention-reduce-in-fp32",
    "flashinfer-mla-disable-ragged",
    "keep-mm-feature-on-device",
];

/// SGLang alternative spellings → long name (`--tp` works by argparse prefix abbreviation).
const SGLANG_SHORT: &[(&str, &str)] = &[
    ("--model", "model-path"),
    ("--tp-size", "tensor-parallel-size"),
    ("--tp", "tensor-parallel-size"),
    ("--pp-size", "pipeline-parallel-size"),
    ("--dp-size", "data-parallel-size"),
    ("--dp", "data-parallel-size"),
    ("--ep-size", "expert-parallel-size"),
    ("--ep", "expert-parallel-size"),
];

/// Parses `major.minor` out of a version string like `0.11.1`; unknown parts count as 0.
pub fn version_tuple(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| {
        p.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Whether the long flag `name` exists in this vLLM version.
fn vllm_has(name: &str, version: (u32, u32)) -> bool {
    match name {
        "max-seq-len-to-capture" => version < (0, 11),
        "num-scheduler-steps" => version < (0, 10),
        "disable-log-requests" => version < (0, 12),
        "enable-log-requests" | "no-enable-log-requests" => version >= (0, 11),
        "swap-space" => version < (0, 33),
        "kv-cache-memory-bytes" => version >= (0, 11),
        "attention-backend" => version >= (0, 12),
        "shutdown-timeout" => version >= (0, 18),
        _ => true,
    }
}

type Aliases = &'static [(&'static str, &'static str)];
type Names = &'static [&'static str];

/// Looks a (normalised) flag up; returns its canonical name and arity.
fn lookup(
    mode: Mode,
    flag: &str,
    version: (u32, u32),
    extra: &[String],
) -> Option<(String, Arity)> {
    if extra.iter().any(|e| e == flag) {
        return Some((flag.to_string(), Arity::One));
    }
    if extra.iter().any(|e| e.strip_suffix('!') == Some(flag)) {
        return Some((flag.to_string(), Arity::Bare));
    }
    let (short, value, many, bare): (Aliases, Names, Names, Names) = match mode {
        Mode::Vllm => (VLLM_SHORT, VLLM_VALUE, VLLM_MANY, VLLM_BARE),
        Mode::Sglang => (SGLANG_SHORT, SGLANG_VALUE, SGLANG_MANY, SGLANG_BARE),
    };
    if let Some((_, long)) = short.iter().find(|(s, _)| *s == flag) {
        return Some((
            format!("--{long}"),
            if many.contains(long) {
                Arity::Many
            } else {
                Arity::One
            },
        ));
    }
    if mode == Mode::Vllm {
        // `-O3` (optimisation level) and dotted JSON keys (`-O.level`, `--compilation-config.x`).
        if flag.len() > 2 && flag.starts_with("-O") && flag[2..].chars().all(|c| c.is_ascii_digit())
        {
            return Some((flag.to_string(), Arity::Bare));
        }
        if let Some((head, field)) = flag.split_once('.') {
            let long = short
                .iter()
                .find(|(s, _)| *s == head)
                .map(|(_, l)| (*l).to_string())
                .or_else(|| head.strip_prefix("--").map(str::to_string))?;
            return (VLLM_JSON.contains(&long.as_str()) && !field.is_empty())
                .then(|| (flag.to_string(), Arity::One));
        }
    }
    let name = flag.strip_prefix("--")?;
    if mode == Mode::Vllm && !vllm_has(name, version) {
        return None;
    }
    let arity = if value.contains(&name) {
        Arity::One
    } else if many.contains(&name) {
        Arity::Many
    } else if bare.contains(&name) {
        Arity::Bare
    } else {
        match mode {
            Mode::Vllm => {
                let base = name.strip_prefix("no-").unwrap_or(name);
                if !VLLM_NO_FORM.contains(&base) {
                    return None;
                }
                Arity::Bare
            }
            Mode::Sglang if name.starts_with("enable-") || name.starts_with("disable-") => {
                Arity::Bare
            }
            Mode::Sglang => return None,
        }
    };
    Some((flag.to_string(), arity))
}

/// `--foo_bar` and `--foo-bar` are the same flag in vLLM's FlexibleArgumentParser.
fn normalise(flag: &str) -> String {
    if let Some(rest) = flag.strip_prefix("--") {
        format!("--{}", rest.replace('_', "-"))
    } else {
        flag.to_string()
    }
}

/// The argparse program name used in error messages.
pub fn prog(mode: Mode) -> &'static str {
    match mode {
        Mode::Vllm => "vllm serve",
        Mode::Sglang => "launch_server.py",
    }
}

fn usage(mode: Mode) -> &'static str {
    match mode {
        Mode::Vllm => "usage: vllm serve [model_tag] [options]",
        Mode::Sglang => "usage: launch_server.py [-h] --model-path MODEL_PATH [options]",
    }
}

fn err(mode: Mode, msg: &str) -> ArgError {
    ArgError(format!("{}\n{}: error: {}", usage(mode), prog(mode), msg))
}

/// Decides the mode from argv (without argv\[0\]) and strips the mode prefix:
/// `serve ...` → vLLM; `-m sglang.launch_server ...` or any `--model-path` → SGLang;
/// `-m vllm.entrypoints.openai.api_server ...` → vLLM.
pub fn detect(argv: &[String]) -> (Mode, &[String]) {
    match argv {
        [first, rest @ ..] if first == "serve" => (Mode::Vllm, rest),
        [m, module, rest @ ..] if m == "-m" && module.starts_with("sglang") => (Mode::Sglang, rest),
        [m, module, rest @ ..] if m == "-m" && module.starts_with("vllm") => (Mode::Vllm, rest),
        _ if argv
            .iter()
            .any(|a| a == "--model-path" || a.starts_with("--model-path=")) =>
        {
            (Mode::Sglang, argv)
        }
        _ => (Mode::Vllm, argv),
    }
}

/// Parses the engine options. `version` gates version-specific vLLM flags; `extra` are flags
/// accepted in addition (from FAKE_EXTRA_FLAGS: `--name` takes a value, `--name!` is bare).
pub fn parse(
    mode: Mode,
    argv: &[String],
    version: &str,
    extra: &[String],
) -> Result<Args, ArgError> {
    let version = version_tuple(version);
    let mut given: Vec<(String, Vec<String>)> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let raw = &argv[i];
        i += 1;
        if !raw.starts_with('-') || raw == "-" {
            positional.push(raw.clone());
            continue;
        }
        let (name, inline) = match raw.split_once('=') {
            // `--flag=value`, and dotted JSON keys in either spelling (`-O.level=3`).
            Some((n, v)) if raw.starts_with("--") || n.contains('.') => {
                (normalise(n), Some(v.to_string()))
            }
            _ => (normalise(raw), None),
        };
        let Some((name, arity)) = lookup(mode, &name, version, extra) else {
            unknown.push(raw.clone());
            // argparse lists the values that followed an unknown flag as unrecognized too.
            while i < argv.len() && !argv[i].starts_with('-') {
                unknown.push(argv[i].clone());
                i += 1;
            }
            continue;
        };
        let mut values = Vec::new();
        match (arity, inline) {
            (Arity::Bare, Some(_)) => {
                return Err(err(
                    mode,
                    &format!("argument {name}: ignored explicit argument"),
                ));
            }
            (Arity::Bare, None) => {}
            (_, Some(v)) => values.push(v),
            (Arity::One, None) => {
                match argv.get(i) {
                    Some(v) if !v.starts_with("--") => values.push(v.clone()),
                    _ => {
                        return Err(err(
                            mode,
                            &format!("argument {name}: expected one argument"),
                        ));
                    }
                }
                i += 1;
            }
            (Arity::Many, None) => {
                while i < argv.len() && !argv[i].starts_with('-') {
                    values.push(argv[i].clone());
                    i += 1;
                }
                if values.is_empty() {
                    return Err(err(
                        mode,
                        &format!("argument {name}: expected at least one argument"),
                    ));
                }
            }
        }
        given.push((name, values));
    }
    // vLLM takes one positional model tag; anything more is unrecognized.
    let max_positional = usize::from(mode == Mode::Vllm);
    if positional.len() > max_positional {
        unknown.extend(positional.drain(max_positional..));
    }
    if !unknown.is_empty() {
        return Err(err(
            mode,
            &format!("unrecognized arguments: {}", unknown.join(" ")),
        ));
    }
    let last = |names: &[&str]| -> Option<String> {
        given
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .and_then(|(_, v)| v.first().cloned())
    };
    let all = |names: &[&str]| -> Vec<String> {
        given
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let model = match mode {
        Mode::Vllm => positional
            .first()
            .cloned()
            .or_else(|| last(&["--model"]))
            .unwrap_or_else(|| "Qwen/Qwen3-0.6B".to_string()),
        Mode::Sglang => match last(&["--model-path"]) {
            Some(m) => m,
            None => {
                return Err(err(
                    mode,
                    "the following arguments are required: --model-path",
                ));
            }
        },
    };
    let host = last(&["--host"]).unwrap_or_else(|| match mode {
        Mode::Vllm => "0.0.0.0".to_string(),
        Mode::Sglang => "127.0.0.1".to_string(),
    });
    let port_default = match mode {
        Mode::Vllm => 8000,
        Mode::Sglang => 30000,
    };
    let port = match last(&["--port"]) {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| err(mode, &format!("argument --port: invalid int value: '{p}'")))?,
        None => port_default,
    };
    let tp_names: &[&str] = &["--tensor-parallel-size"];
    let tp = match last(tp_names) {
        Some(t) => t.parse::<u32>().map_err(|_| {
            err(
                mode,
                &format!("argument {}: invalid int value: '{t}'", tp_names[0]),
            )
        })?,
        None => 1,
    };
    let mut served_names = all(&["--served-model-name"]);
    if served_names.is_empty() {
        served_names.push(model.clone());
    }
    let api_keys = all(&["--api-key"]);
    Ok(Args {
        mode,
        model,
        host,
        port,
        tp,
        served_names,
        api_keys,
        given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn vllm_command_line_parses() {
        let argv = v(
            "serve /m --host 127.0.0.1 --port 9001 --tensor-parallel-size 2 --served-model-name a b --enforce-eager --max_model_len=4096",
        );
        let (mode, rest) = detect(&argv);
        assert_eq!(mode, Mode::Vllm);
        let a = parse(mode, rest, "0.11.1", &[]).expect("parses");
        assert_eq!(
            (a.model.as_str(), a.host.as_str(), a.port, a.tp),
            ("/m", "127.0.0.1", 9001, 2)
        );
        assert_eq!(a.served_names, vec!["a", "b"]);
        assert!(
            a.given
                .iter()
                .any(|(n, v)| n == "--max-model-len" && v == &["4096"])
        );
    }

    #[test]
    fn sglang_command_line_parses() {
        for argv in [
            v("--model-path /m --host 0.0.0.0 --port 31000 --tp-size 4"),
            v("-m sglang.launch_server --model-path /m --host 0.0.0.0 --port 31000 --tp 4"),
        ] {
            let (mode, rest) = detect(&argv);
            assert_eq!(mode, Mode::Sglang);
            let a = parse(mode, rest, "0.5.3", &[]).expect("parses");
            assert_eq!((a.model.as_str(), a.port, a.tp), ("/m", 31000, 4));
            assert_eq!(a.served_names, vec!["/m"]);
        }
    }

    #[test]
    fn argparse_failures() {
        let table: &[(&str, &str, &str)] = &[
            (
                "serve m --foo",
                "0.11.1",
                "vllm serve: error: unrecognized arguments: --foo",
            ),
            (
                "serve m --foo bar --port 1",
                "0.11.1",
                "unrecognized arguments: --foo bar",
            ),
            (
                "serve m --max-seq-len-to-capture 8192",
                "0.11.1",
                "unrecognized arguments: --max-seq-len-to-capture 8192",
            ),
            (
                "serve m --disable-log-requests",
                "0.12.0",
                "unrecognized arguments: --disable-log-requests",
            ),
            (
                "serve m --swap-space 4",
                "0.33.0",
                "unrecognized arguments: --swap-space 4",
            ),
            (
                "serve m --port",
                "0.11.1",
                "argument --port: expected one argument",
            ),
            (
                "serve m --port x",
                "0.11.1",
                "argument --port: invalid int value: 'x'",
            ),
            ("serve m extra", "0.11.1", "unrecognized arguments: extra"),
            (
                "--model-path m --bogus",
                "0.5.3",
                "launch_server.py: error: unrecognized arguments: --bogus",
            ),
        ];
        for (line, version, want) in table {
            let argv = v(line);
            let (mode, rest) = detect(&argv);
            let e = parse(mode, rest, version, &[]).expect_err(line);
            assert!(e.0.contains(want), "{line}: {}", e.0);
            assert!(e.0.starts_with("usage: "), "{line}: {}", e.0);
        }
    }

    #[test]
    fn version_gated_flags_accepted_where_they_exist() {
        for (line, version) in [
            ("serve m --swap-space 4", "0.11.1"),
            ("serve m --disable-log-requests", "0.11.1"),
            ("serve m --max-seq-len-to-capture 8192", "0.10.2"),
            ("serve m --attention-backend ROCM_ATTN", "0.12.0"),
        ] {
            let argv = v(line);
            let (mode, rest) = detect(&argv);
            assert!(
                parse(mode, rest, version, &[]).is_ok(),
                "{line} on {version}"
            );
        }
    }

    #[test]
    fn real_spellings_are_accepted() {
        for (line, version) in [
            (
                "serve m --no-enable-prefix-caching --enable-prefix-caching --no-trust-remote-code",
                "0.11.1",
            ),
            (
                "serve m -O3 -O.level 3 -O.cudagraph_mode=FULL --compilation-config.level=2",
                "0.11.1",
            ),
            (
                "serve m --compilation-config {\"cudagraph_mode\":\"FULL\"}",
                "0.11.1",
            ),
            (
                "serve m -tp 8 -dp 2 -q fp8 --cuda-graph-sizes 1 2 4 --served-model-name a",
                "0.11.1",
            ),
            (
                "serve m --no-enable-log-requests --disable-uvicorn-access-log --reasoning-parser qwen3",
                "0.11.1",
            ),
            (
                "serve m --distributed_executor_backend mp --max_num_seqs 512",
                "0.11.1",
            ),
            (
                "--model-path m --enable-torch-compile --disable-radix-cache --cuda-graph-bs 1 2 --tp 2",
                "0.5.3",
            ),
            (
                "-m sglang.launch_server --model m --dp-size 2 --enable-dp-attention",
                "0.5.3",
            ),
        ] {
            let argv = v(line);
            let (mode, rest) = detect(&argv);
            if let Err(e) = parse(mode, rest, version, &[]) {
                panic!("{line}: {}", e.0);
            }
        }
    }

    #[test]
    fn wrong_spellings_are_rejected() {
        for (line, version, want) in [
            ("serve m --no-max-model-len", "0.11.1", "--no-max-model-len"),
            (
                "serve m --no-enable-log-requests",
                "0.10.2",
                "--no-enable-log-requests",
            ),
            (
                "serve m --num-scheduler-steps 8",
                "0.11.1",
                "--num-scheduler-steps 8",
            ),
            (
                "serve m -O.bad_flag_for_nothing",
                "0.11.1",
                "expected one argument",
            ),
            ("serve m --dtype.x 1", "0.11.1", "--dtype.x 1"),
            (
                "--model-path m --mem-fraction 0.8",
                "0.5.3",
                "--mem-fraction 0.8",
            ),
        ] {
            let argv = v(line);
            let (mode, rest) = detect(&argv);
            let e = parse(mode, rest, version, &[]).expect_err(line);
            assert!(e.0.contains(want), "{line}: {}", e.0);
        }
    }

    #[test]
    fn aliases_resolve_to_the_long_flag() {
        let argv = v("serve m -tp 4");
        let (mode, rest) = detect(&argv);
        assert_eq!(parse(mode, rest, "0.11.1", &[]).expect("parses").tp, 4);
        assert_eq!(
            detect(&v("--model m -tp 2")).0,
            Mode::Vllm,
            "--model alone is vLLM's spelling"
        );
        let argv = v("-m sglang.launch_server --model m --tp 2");
        let (mode, rest) = detect(&argv);
        assert_eq!(mode, Mode::Sglang);
        let a = parse(mode, rest, "0.5.3", &[]).expect("parses");
        assert_eq!((a.model.as_str(), a.tp), ("m", 2));
    }

    #[test]
    fn extra_flags_extend_the_table() {
        let argv = v("serve m --new-thing 3 --new-bool");
        let (mode, rest) = detect(&argv);
        let extra = vec!["--new-thing".to_string(), "--new-bool!".to_string()];
        assert!(parse(mode, rest, "0.11.1", &extra).is_ok());
        assert!(parse(mode, rest, "0.11.1", &[]).is_err());
    }
}
