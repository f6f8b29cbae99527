//! Why an engine attempt ended, from its exit status and the tail of its log (pure).
//!
//! Texts are the stable substrings from engines.md §1.6 (vLLM), §3.3 (SGLang) and §6.5.
//!
//! Precedence: a fixed priority over classes (the order of [`RULES`]), not line order,
//! because the engines print the root cause first and generic wrappers after it, and one
//! failure often prints several matching texts (vLLM wraps a gated-repo error in "Invalid
//! repository ID …", so `gated` must beat `model_not_found`). Within the winning class
//! the last matching line is the evidence (the most recent attempt in the tail).
//! Priority, highest first: gated, offline, model_not_found, port_in_use, bad_args,
//! gpu_busy, max_model_len, kv_cache, oom, tp_invalid, dtype_or_quant, unknown.
//!
//! Other decisions:
//! - bad_args needs exit code 2 (argparse) as well as its text.
//! - An exit with no matching text is `unknown`, whatever the status: exit 0 (vLLM exits 0
//!   when its engine core dies after start-up) and SIGKILL / 137 alike. SIGKILL is not
//!   taken as the OOM killer because SGLang SIGKILLs itself after any scheduler failure,
//!   and the supervisor's own kills are known to the supervisor, not to us.
//! - "unsupported architecture", "does not support block size" and missing
//!   `--trust-remote-code` are recipe/model mismatches: the first two are reported as
//!   `dtype_or_quant` (this recipe cannot serve this model; try the next), the last as
//!   `bad_args` (the recipe's args are wrong for the model) regardless of exit code.

use super::{Classified, ExitKind, FailureClass};

struct Rule {
    class: FailureClass,
    needles: &'static [&'static str],
    /// Only when the process exited with code 2 (argparse errors).
    needs_exit_2: bool,
}

const RULES: &[Rule] = &[
    Rule {
        class: FailureClass::Gated,
        needles: &[
            "Cannot access gated repo",
            "GatedRepoError",
            "Make sure your token has the correct permissions",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::Offline,
        needles: &[
            "offline mode is enabled",
            "OfflineModeIsEnabled",
            "outgoing traffic has been disabled",
            "LocalEntryNotFoundError",
            "Failed to resolve",
            "NameResolutionError",
            "Max retries exceeded",
            "Please check your connection",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::ModelNotFound,
        needles: &[
            "Repository Not Found",
            "RepositoryNotFoundError",
            "Invalid repository ID or local directory specified",
            "Could not detect config format",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::PortInUse,
        needles: &["Address already in use"],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::BadArgs,
        needles: &[
            "unrecognized arguments",
            "invalid choice",
            "error: argument",
            "the following arguments are required",
        ],
        needs_exit_2: true,
    },
    Rule {
        class: FailureClass::BadArgs,
        needles: &["consider setting `trust_remote_code=True`"],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::GpuBusy,
        needles: &["is less than desired GPU memory utilization"],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::MaxModelLen,
        needles: &[
            "KV cache is needed, which is larger than the available KV cache memory",
            "larger than the maximum number of tokens that can be stored in KV cache",
            "User-specified max_model_len",
            "is greater than the derived context_length",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::KvCache,
        needles: &[
            "No available memory for the cache blocks",
            "Not enough memory. Please try to increase --mem-fraction-static",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::Oom,
        needles: &[
            "HIP out of memory",
            "CUDA out of memory",
            "OutOfMemoryError",
            "Capture cuda graph failed",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::TpInvalid,
        needles: &[
            "must be divisible by tensor parallel size",
            "is not divisible by weight quantization block_",
            "is not divisible by",
            "invalid device ordinal",
        ],
        needs_exit_2: false,
    },
    Rule {
        class: FailureClass::DtypeOrQuant,
        needles: &[
            "quantization is currently not supported in rocm",
            "is not supported for the current GPU",
            "is not supported for quantization method",
            "does not match the quantization method",
            "Unknown quantization method",
            "Bfloat16 is only supported on GPUs",
            "does not support float16",
            "quantization is supported only on AMD Instinct",
            "are not supported for now. Supported architectures",
            "does not support block size",
        ],
        needs_exit_2: false,
    },
];

/// The first run of digits after `marker` in `line` (skipping e.g. `max_position_embeddings=`).
fn number_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    // Stay inside the parenthesis / sentence that follows the marker.
    let rest = rest.split([')', '.']).next().unwrap_or(rest);
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The length the engine says would fit, from a `max_model_len` line.
fn suggested_len(line: &str) -> Option<u64> {
    const MARKERS: &[&str] = &[
        // vLLM V1: "... the estimated maximum model length is 80784."
        "estimated maximum model length is",
        // vLLM V0: "... stored in KV cache (Y)."
        "stored in KV cache (",
        // vLLM: "derived max_model_len (max_position_embeddings=Y or ...)"
        "derived max_model_len (",
        // SGLang: "derived context_length (Y)"
        "derived context_length (",
    ];
    MARKERS.iter().find_map(|m| number_after(line, m))
}

pub fn classify(exit: ExitKind, log_tail: &[String]) -> Classified {
    let exit_2 = exit == ExitKind::Code(2);
    for rule in RULES {
        if rule.needs_exit_2 && !exit_2 {
            continue;
        }
        let hit = log_tail
            .iter()
            .rev()
            .find(|line| rule.needles.iter().any(|n| line.contains(n)));
        if let Some(line) = hit {
            let suggested_max_model_len = if rule.class == FailureClass::MaxModelLen {
                // The last line that carries a number, which may differ from the evidence
                // line when the engine prints the number on a continuation line.
                log_tail.iter().rev().find_map(|l| suggested_len(l))
            } else {
                None
            };
            return Classified {
                class: rule.class,
                suggested_max_model_len,
                evidence: Some(line.trim().to_string()),
            };
        }
    }
    Classified {
        class: FailureClass::Unknown,
        suggested_max_model_len: None,
        evidence: None,
    }
}
