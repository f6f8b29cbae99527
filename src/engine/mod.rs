//! Engine command lines (pure), engine flag knowledge, version gating, and failure
//! classification from exit status and log text.
//!
//! Everything here is pure (no IO). Files:
//! - `argv.rs`: [`build_command`]: argv/env rendering, recipe/user/system merge rules.
//! - `flags.rs`: the flags each engine accepts, spelling normalisation, "did you mean".
//! - `version.rs`: version parsing, [`version_probe`], [`gate_for_version`],
//!   [`with_max_model_len`].
//! - `classify.rs`: [`classify`]: failure class from exit status and log tail.
//!
//! Expected use by the supervisor: `build_command` -> run [`version_probe`] (if any) ->
//! [`parse_version_output`] -> [`gate_for_version`] (log the notes) -> spawn; on exit
//! [`classify`], and on `max_model_len` retry with [`with_max_model_len`].

mod argv;
mod classify;
mod flags;
mod version;

pub use argv::{
    build_with_notes as build_command_with_notes, default_launcher, launcher_words,
    requested_tensor_parallel,
};
pub use classify::rejected_user_arg;
pub use flags::{edit_distance, suggest as suggest_flag};
pub use version::{Version, max_len_flag, parse_version};

use crate::types::Engine;
use indexmap::IndexMap;
use serde::Serialize;

/// Inputs for one engine command line.
#[derive(Debug, Clone)]
pub struct CommandInput<'a> {
    pub engine: Engine,
    /// Checkpoint to serve: a Hugging Face id or a local path.
    pub model: &'a str,
    pub served_model_name: &'a str,
    /// More names the engine answers to (vLLM takes several; SGLang only the first).
    pub served_aliases: &'a [String],
    /// Loopback port for the engine.
    pub port: u16,
    pub tensor_parallel: u32,
    pub recipe_args: &'a IndexMap<String, serde_json::Value>,
    /// `--engine-args` / AIM_ENGINE_ARGS, merged over the recipe's.
    pub user_args: &'a IndexMap<String, serde_json::Value>,
    pub recipe_env: &'a IndexMap<String, String>,
    /// HIP ordinals handed to the engine.
    pub ordinals: &'a [u32],
    /// AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND (whitespace-split launcher words), if set.
    pub launcher: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineCommand {
    pub argv: Vec<String>,
    pub env: IndexMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A recipe or user arg names a flag the engine does not accept in any supported version.
    #[error(
        "unknown {engine} flag `{flag}` in the {origin} engine args{}; fix or remove it (flags are written without leading dashes, e.g. `max-model-len: 8192`)",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownFlag {
        engine: Engine,
        flag: String,
        /// `"recipe"` or `"user"` (`--engine-args` / AIM_ENGINE_ARGS).
        origin: &'static str,
        suggestion: Option<String>,
    },
    /// `api-key` in the engine args: the engine would refuse our own readiness checks.
    #[error(
        "`api-key` in the {origin} engine args: the engine would answer 401 to aim-engine's own readiness checks; set the key with --api-key / AIM_API_KEY instead (aim-engine checks it at the public port)"
    )]
    ApiKeyArg {
        /// `"recipe"` or `"user"` (`--engine-args` / AIM_ENGINE_ARGS).
        origin: &'static str,
    },
    #[error("no model to serve: the model id/path is empty")]
    EmptyModel,
    #[error("tensor parallel size 0 is invalid; it must be at least 1")]
    ZeroTensorParallel,
}

/// The argv and env for one engine attempt; see `argv.rs` for the rendering and merge rules.
pub fn build_command(input: &CommandInput<'_>) -> Result<EngineCommand, CommandError> {
    argv::build(input)
}

/// Why an engine attempt ended, from its exit and its log tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Oom,
    KvCache,
    MaxModelLen,
    TpInvalid,
    DtypeOrQuant,
    BadArgs,
    GpuBusy,
    PortInUse,
    ModelNotFound,
    Gated,
    Offline,
    /// The engine core died after start-up and the API server gave up (vLLM prints
    /// `EngineDeadError` and exits 0). A runtime crash: restarted like `Unknown`.
    EngineDied,
    Unknown,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Oom => "oom",
            FailureClass::KvCache => "kv_cache",
            FailureClass::MaxModelLen => "max_model_len",
            FailureClass::TpInvalid => "tp_invalid",
            FailureClass::DtypeOrQuant => "dtype_or_quant",
            FailureClass::BadArgs => "bad_args",
            FailureClass::GpuBusy => "gpu_busy",
            FailureClass::PortInUse => "port_in_use",
            FailureClass::ModelNotFound => "model_not_found",
            FailureClass::Gated => "gated",
            FailureClass::Offline => "offline",
            FailureClass::EngineDied => "engine_died",
            FailureClass::Unknown => "unknown",
        }
    }
}

/// How the engine process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub class: FailureClass,
    /// For `max_model_len`: the length the engine said would fit.
    pub suggested_max_model_len: Option<u64>,
    /// The log line that decided it, if any.
    pub evidence: Option<String>,
}

/// Classifies a finished attempt; precedence and rules are documented in `classify.rs`.
pub fn classify(exit: ExitKind, log_tail: &[String]) -> Classified {
    classify::classify(exit, log_tail)
}

/// Drops or renames flags the given engine version no longer accepts. Returns the new argv
/// and one note per change.
/// The table of rules is in `version.rs`; an unparseable version changes nothing (one note).
pub fn gate_for_version(
    engine: Engine,
    version: &str,
    argv: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    version::gate(engine, version, argv)
}

/// The argv with `--max-model-len` (vLLM) / `--context-length` (SGLang) set to `len`.
/// Replaces the first occurrence in place (any spelling, `--flag=v` too), drops later
/// duplicates, or appends the flag when absent.
pub fn with_max_model_len(engine: Engine, argv: &[String], len: u64) -> Vec<String> {
    version::set_max_model_len(engine, argv, len)
}

/// Whether `flag` (without leading dashes, e.g. `tensor-parallel-size`) is a flag `engine`
/// accepts in the versions we support. Used to check every recipe in the catalogue.
/// Underscores/dashes and leading dashes are normalised; short aliases (`tp`) and vLLM
/// `no-` forms of boolean flags count.
pub fn is_known_flag(engine: Engine, flag: &str) -> bool {
    flags::is_known(engine, flag)
}

/// The argv the supervisor runs to learn the installed engine version, or `None` when the
/// launcher is overridden to something that is not the real engine (then flags are not
/// gated). See `version.rs` for the rule.
pub fn version_probe(engine: Engine, launcher: Option<&str>) -> Option<Vec<String>> {
    version::probe(engine, launcher)
}

/// The version string in the probe's output (`"0.11.1rc2.dev5+g1234.rocm700"`), if any.
pub fn parse_version_output(output: &str) -> Option<String> {
    version::parse_output(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine_args key of AMD's published AIM profiles (vLLM 0.11.1 images).
    #[test]
    fn aim_profile_flags_are_known() {
        for flag in [
            "async-scheduling",
            "disable-uvicorn-access-log",
            "distributed_executor_backend",
            "dtype",
            "gpu-memory-utilization",
            "max-model-len",
            "max-num-batched-tokens",
            "max-num-seqs",
            "max-seq-len-to-capture",
            "no-enable-log-requests",
            "no-enable-prefix-caching",
            "no-trust-remote-code",
            "reasoning-parser",
            "swap-space",
            "tensor-parallel-size",
            "no-enable-chunked-prefill",
            "compilation-config",
            "enable-auto-tool-choice",
            "enable-log-requests",
            "no-async-scheduling",
            "tool-call-parser",
            "disable-log-requests",
        ] {
            assert!(is_known_flag(Engine::Vllm, flag), "vllm {flag}");
            assert!(
                is_known_flag(Engine::Vllm, &flag.replace('-', "_")),
                "vllm {flag} with underscores"
            );
        }
        for flag in [
            "mem-fraction-static",
            "context-length",
            "tp-size",
            "tp",
            "attention-backend",
            "chunked-prefill-size",
            "disable-radix-cache",
            "cuda_graph_max_bs",
            "trust-remote-code",
            "enable-dp-attention",
        ] {
            assert!(is_known_flag(Engine::Sglang, flag), "sglang {flag}");
        }
        for (engine, flag) in [
            (Engine::Vllm, "mem-fraction-static"),
            (Engine::Vllm, "tensor-paralel-size"),
            (Engine::Sglang, "gpu-memory-utilization"),
            (Engine::Sglang, "no-enable-prefix-caching"),
            (Engine::Vllm, ""),
        ] {
            assert!(!is_known_flag(engine, flag), "{engine} {flag}");
        }
    }
}
