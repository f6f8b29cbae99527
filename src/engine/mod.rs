//! Engine command lines (pure), engine flag knowledge, version gating, and failure
//! classification from exit status and log text.
//!
//! Everything here is pure (no IO). Files:
//! - `argv.rs`: [`build_command`]: argv/env rendering, recipe/user/system merge rules.
//! - `table.rs`: the flag tables of the pinned engine versions (`tables/*.json`, generated
//!   from the real parsers by `tests/real-engine/gen-flags.sh`), parsed once.
//! - `flags.rs`: resolving a key in a table (spellings, aliases, prefixes, `no-` forms),
//!   "did you mean", value checks against type and choices.
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
pub mod multinode;
mod table;
mod trailing;
mod version;

pub use argv::{
    build_with_notes as build_command_with_notes, default_launcher, launcher_words,
    requested_tensor_parallel,
};
pub use classify::rejected_user_arg;
pub use flags::{edit_distance, suggest as suggest_flag};
pub use table::versions as pinned_versions;
pub use version::{Version, max_len_flag, parse_version};

use crate::types::Engine;
use indexmap::IndexMap;
use serde::Serialize;

/// The engine versions a plan is for (`--engine-version` / AIM_ENGINE_VERSION): one per
/// engine, `None` for "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineVersions {
    pub vllm: Option<String>,
    pub sglang: Option<String>,
}

/// What is wrong with an `--engine-version` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineVersionsError {
    /// What the `Engine` parser says of the name before `=`.
    #[error("{0}")]
    Engine(String),
    #[error(
        "engine version `{0}` does not parse; write it like `0.32.0`, or per engine `vllm=0.32.0,sglang=0.5.23`"
    )]
    Version(String),
}

impl EngineVersions {
    /// Parses `0.32.0` (every engine), `vllm=0.32.0`, or `vllm=0.32.0,sglang=0.5.23`.
    pub fn parse(text: &str) -> Result<Self, EngineVersionsError> {
        let mut out = EngineVersions::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (engines, version) = match part.split_once('=') {
                Some((e, v)) => (
                    vec![e.parse::<Engine>().map_err(EngineVersionsError::Engine)?],
                    v.trim(),
                ),
                None => (Engine::ALL.to_vec(), part),
            };
            if parse_version(version).is_none() {
                return Err(EngineVersionsError::Version(version.to_string()));
            }
            for e in engines {
                *out.slot(e) = Some(version.to_string());
            }
        }
        Ok(out)
    }

    pub fn set(&mut self, engine: Engine, version: String) {
        *self.slot(engine) = Some(version);
    }

    fn slot(&mut self, engine: Engine) -> &mut Option<String> {
        match engine {
            Engine::Vllm => &mut self.vllm,
            Engine::Sglang => &mut self.sglang,
        }
    }

    pub fn get(&self, engine: Engine) -> Option<&str> {
        match engine {
            Engine::Vllm => self.vllm.as_deref(),
            Engine::Sglang => self.sglang.as_deref(),
        }
    }

    /// Every engine's version filled in: the given one, else the newest pinned table's.
    pub fn or_newest(&self) -> Self {
        let pick = |e: Engine| {
            self.get(e)
                .map(str::to_string)
                .or_else(|| table::versions(e).last().map(|v| (*v).to_string()))
        };
        EngineVersions {
            vllm: pick(Engine::Vllm),
            sglang: pick(Engine::Sglang),
        }
    }

    /// How `plan` says which version it planned for, e.g. `vllm 0.32.0 (--engine-version)`;
    /// `source` says where the version came from.
    pub fn describe(&self, engine: Engine, source: &str) -> String {
        let v = self.get(engine).unwrap_or("?");
        let table = table::for_version(engine, v);
        if table.version == v {
            format!("{engine} {v} ({source})")
        } else {
            format!(
                "{engine} {v} ({source}; flags checked against the {} table plus the version rules)",
                table.version
            )
        }
    }
}

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
    /// The engine version that will run, when known: its table checks the args and its
    /// version rules are applied (with notes). `None`: the newest table, no rules (the
    /// supervisor applies them after its version probe).
    pub engine_version: Option<&'a str>,
    /// This node's place in a multi-node group: its multi-node flags are added
    /// (`multinode::args`). None on one node.
    pub group: Option<&'a crate::group::Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineCommand {
    pub argv: Vec<String>,
    pub env: IndexMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A recipe or user arg names a flag the engine version does not accept.
    #[error(
        "unknown {engine} {version} flag `{flag}` in the {origin} engine args{}; fix or remove it (flags are written without leading dashes, e.g. `max-model-len: 8192`)",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownFlag {
        engine: Engine,
        /// The version of the table it was checked against.
        version: String,
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
    /// A prefix of several flags: the engine's parser refuses it as ambiguous.
    #[error(
        "ambiguous {engine} {version} flag `{flag}` in the {origin} engine args: it is the start of {}; write the one you mean in full",
        candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
    )]
    AmbiguousFlag {
        engine: Engine,
        version: String,
        flag: String,
        origin: &'static str,
        candidates: Vec<String>,
    },
    /// A value the engine's parser would refuse (type, choices, a value for a switch).
    #[error("bad value for {engine} {version} flag `{flag}` in the {origin} engine args: {why}")]
    BadValue {
        engine: Engine,
        version: String,
        flag: String,
        origin: &'static str,
        why: Box<flags::ValueError>,
    },
    /// A launch over several nodes whose parallel sizes do not span them: each node runs
    /// tensor parallel over its own GPUs (or over several nodes, when the recipe sets it to a
    /// multiple of the GPUs per node), and the sizes that cross nodes must make up the rest of
    /// the node count, or the engine would split the world over the nodes otherwise.
    #[error("{engine} over {nodes} nodes: {spans} spans {got} node(s), not {nodes}; {fix}")]
    NodeSplit {
        engine: Engine,
        nodes: u32,
        /// The sizes as given, `pipeline-parallel-size 1 x data-parallel-size 1`.
        spans: String,
        got: u64,
        /// What to set: each size that alone would span the nodes.
        fix: String,
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

/// Warnings for `VLLM_*` / `SGLANG_*` env names that `engine` at `version` (else its newest
/// pinned version) does not read; `origin` names where they come from (`user env`).
pub fn env_notes(
    engine: Engine,
    version: Option<&str>,
    origin: &str,
    names: &[String],
) -> Vec<String> {
    let table = match version {
        Some(v) => table::for_version(engine, v),
        None => table::newest(engine),
    };
    argv::env_notes(table, origin, names.iter().map(String::as_str))
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

/// Whether `flag` (without leading dashes, e.g. `tensor-parallel-size`) is a flag the newest
/// pinned version of `engine` accepts, or one a version rule knows. Underscores/dashes and
/// leading dashes are normalised; short aliases (`tp`), `no-` forms of boolean flags and
/// unique prefixes (where the engine's parser takes them) count.
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

pub use trailing::{TrailingError, parse_trailing_flags};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine_args key of AMD's AIM profiles (vLLM 0.11.1 images): accepted by the
    /// newest table or known to a version rule.
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
            "cuda-graph-max-bs-decode",
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
            // Ambiguous in SGLang 0.5.23 (-decode / -prefill), as its parser says.
            (Engine::Sglang, "cuda_graph_max_bs"),
        ] {
            assert!(!is_known_flag(engine, flag), "{engine} {flag}");
        }
    }
}
