//! Engine command lines (pure), engine flag knowledge, version gating, and failure
//! classification from exit status and log text.
//!
//! OWNER: engine helper. CONTRACT: the pub items below are used by `plan` and `supervise`;
//! extend them, do not rename or remove them.

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

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub fn build_command(_input: &CommandInput<'_>) -> Result<EngineCommand, CommandError> {
    Err(CommandError::NotImplemented)
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

pub fn classify(_exit: ExitKind, _log_tail: &[String]) -> Classified {
    Classified {
        class: FailureClass::Unknown,
        suggested_max_model_len: None,
        evidence: None,
    }
}

/// Drops or renames flags the given engine version no longer accepts. Returns the new argv
/// and one note per change.
pub fn gate_for_version(
    _engine: Engine,
    _version: &str,
    argv: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    (argv, Vec::new())
}

/// The argv with `--max-model-len` (vLLM) / `--context-length` (SGLang) set to `len`.
pub fn with_max_model_len(_engine: Engine, argv: &[String], _len: u64) -> Vec<String> {
    argv.to_vec()
}

/// Whether `flag` (without leading dashes, e.g. `tensor-parallel-size`) is a flag `engine`
/// accepts in the versions we support. Used to check every recipe in the catalogue.
pub fn is_known_flag(_engine: Engine, _flag: &str) -> bool {
    true
}
