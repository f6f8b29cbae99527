//! Why an engine attempt ended, from its exit status and the tail of its log (pure).
//!
//! Texts are stable substrings of the messages vLLM and SGLang print for each failure (the
//! table test quotes them as the engines print them).
//!
//! Precedence: a fixed priority over classes (the order of [`RULES`]), not line order,
//! because the engines print the root cause first and generic wrappers after it, and one
//! failure often prints several matching texts. Within the winning class the last
//! matching line is the evidence (the most recent attempt in the tail).
//! Priority, highest first: port_in_use, bad_args, gpu_busy, max_model_len, kv_cache,
//! oom, tp_invalid, dtype_or_quant, gated, offline, model_not_found, engine_died, unknown.
//! The Hugging Face classes come last because a real hub failure stops the start before
//! any GPU work (so nothing else matches), while hub *warnings* ("Failed to resolve
//! 'huggingface.co'" before falling back to the local cache) can precede a different real
//! failure. Among them gated beats offline beats model_not_found, because vLLM wraps both
//! in "Invalid repository ID or local directory specified".
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
//!   `bad_args` (the recipe's args are wrong for the model) regardless of exit code, like
//!   vLLM's "max_num_batched_tokens (X) must be greater than or equal to max_num_seqs (Y)".
//!   "Pipeline parallelism is not supported for this model" counts as `tp_invalid` (the
//!   parallel layout cannot work; pick another).
//! - engine_died is the engine core dying after start-up, seen from the API server: vLLM
//!   0.32 logs "[shutdown] MPClient: engine core exited unexpectedly" and
//!   `EngineDeadError: EngineCore encountered an issue`, then exits 0 (measured with a
//!   SIGKILL of the `VLLM::EngineCore` process of the CPU build). It ranks last: a root
//!   cause printed before it names the real class.
//! - Generic wrappers ("Engine core initialization failed", "EngineCore failed to start",
//!   "WorkerProc failed to start", "Received sigquit from a child process", "Initialization
//!   failed") are never evidence: the root cause is printed before them.

use super::{Classified, ExitKind, FailureClass};

struct Rule {
    class: FailureClass,
    needles: &'static [&'static str],
    /// Only when the process exited with code 2 (argparse errors).
    needs_exit_2: bool,
}

const RULES: &[Rule] = &[
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
            "ambiguous option",
        ],
        needs_exit_2: true,
    },
    Rule {
        class: FailureClass::BadArgs,
        needles: &[
            "consider setting `trust_remote_code=True`",
            "must be greater than or equal to max_num_seqs",
        ],
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
            "Pipeline parallelism is not supported for this model",
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
        class: FailureClass::EngineDied,
        needles: &[
            "EngineDeadError",
            "engine core exited unexpectedly",
            "died unexpectedly, shutting down client",
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

/// For a `bad_args` failure: the user's flag (from `--engine-args`) that the engine's error
/// line names, and that line. Such an error stops the supervisor at once: every recipe in
/// the fallback chain gets the same user args, so none of them can help.
///
/// A flag is named when the line has `--flag` (argparse: `argument --kv-cache-dtype:
/// invalid choice`) or the flag as a word in either spelling (pydantic:
/// `max_num_batched_tokens (16) must be greater than or equal to max_num_seqs (64)`).
pub fn rejected_user_arg<'a>(
    class: FailureClass,
    log_tail: &'a [String],
    user_flags: &[String],
) -> Option<(String, &'a str)> {
    if class != FailureClass::BadArgs {
        return None;
    }
    let flags: Vec<String> = user_flags
        .iter()
        .map(|f| f.trim_start_matches('-').replace('_', "-"))
        .filter(|f| !f.is_empty())
        .collect();
    log_tail.iter().rev().find_map(|line| {
        let flag = flags.iter().find(|f| {
            let under = f.replace('-', "_");
            has_word(line, &format!("--{f}")) || has_word(line, f) || has_word(line, &under)
        })?;
        Some((flag.clone(), line.trim()))
    })
}

/// `word` occurs in `line` with no letter, digit, `_` or `-` right before or after it.
fn has_word(line: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    /// Real texts as vLLM and SGLang print them (with the process prefixes the engines add).
    #[test]
    fn classification_table() {
        let table: &[(ExitKind, &str, FailureClass, Option<u64>)] = &[
            (
                ExitKind::Code(1),
                "(EngineCore_0 pid=77) torch.OutOfMemoryError: HIP out of memory. Tried to allocate 12.95 GiB. GPU 0 has a total capacity of 127.00 GiB of which 18.55 GiB is free.\nRuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_0': 1}",
                Oom,
                None,
            ),
            (
                ExitKind::Code(1),
                "(EngineCore_0 pid=77) ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
                KvCache,
                None,
            ),
            (
                ExitKind::Signal(9),
                "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. Current value: self.server_args.mem_fraction_static=0.8\nReceived sigquit from a child process. It usually means the child failed.",
                KvCache,
                None,
            ),
            (
                ExitKind::Code(1),
                "(EngineCore_0 pid=77) ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, which is larger than the available KV cache memory (9.87 GiB). Based on the available memory, the estimated maximum model length is 80784. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                MaxModelLen,
                Some(80784),
            ),
            (
                ExitKind::Code(1),
                "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (21504). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                MaxModelLen,
                Some(21504),
            ),
            (
                ExitKind::Code(1),
                "ValueError: User-specified max_model_len (65536) is greater than the derived max_model_len (max_position_embeddings=40960 or model_max_length=None in model's config.json). To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.",
                MaxModelLen,
                Some(40960),
            ),
            (
                ExitKind::Code(1),
                "ValueError: User-specified context_length (65536) is greater than the derived context_length (40960). To allow overriding this maximum, set the env var SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1",
                MaxModelLen,
                Some(40960),
            ),
            (
                ExitKind::Code(1),
                "ValueError: Total number of attention heads (64) must be divisible by tensor parallel size (3).",
                TpInvalid,
                None,
            ),
            (
                ExitKind::Code(1),
                "(Worker_TP0 pid=9) ValueError: The output_size of gate's and up's weight = 192 is not divisible by weight quantization block_n = 128.",
                TpInvalid,
                None,
            ),
            (
                ExitKind::Signal(9),
                "Scheduler hit an exception: Traceback\nAssertionError: 7 is not divisible by 2",
                TpInvalid,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError: awq_marlin quantization is currently not supported in rocm.",
                DtypeOrQuant,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your Radeon GPU has compute capability 7.0.",
                DtypeOrQuant,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError: Model architectures ['FooForCausalLM'] are not supported for now. Supported architectures: dict_keys([...])",
                DtypeOrQuant,
                None,
            ),
            (
                ExitKind::Code(2),
                "usage: vllm serve [model_tag] [options]\nvllm serve: error: unrecognized arguments: --max-seq-len-to-capture 32768",
                BadArgs,
                None,
            ),
            (
                ExitKind::Code(2),
                "launch_server.py: error: argument --kv-cache-dtype: invalid choice: 'fp8' (choose from 'auto', 'fp8_e5m2', 'fp8_e4m3')",
                BadArgs,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError: Failed to load the model config. If the model is a custom model not yet available in the HuggingFace transformers library, consider setting `trust_remote_code=True` in LLM or using the `--trust-remote-code` flag in the CLI.",
                BadArgs,
                None,
            ),
            (
                ExitKind::Code(1),
                "(EngineCore_0 pid=5) ValueError: Free memory on device (20.1/191.5 GiB) on startup is less than desired GPU memory utilization (0.9, 172.4 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
                GpuBusy,
                None,
            ),
            (
                ExitKind::Code(1),
                "OSError: [Errno 98] Address already in use",
                PortInUse,
                None,
            ),
            (
                ExitKind::Code(1),
                "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. Repository Not Found for url: https://huggingface.co/api/models/nobody/nothing\nThe above exception was the direct cause of the following exception:\nValueError: Invalid repository ID or local directory specified: 'nobody/nothing'.",
                ModelNotFound,
                None,
            ),
            (
                ExitKind::Code(1),
                "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B/resolve/main/config.json. Access to model meta-llama/Llama-3.1-8B is restricted.\nThe above exception was the direct cause of the following exception:\nValueError: Invalid repository ID or local directory specified: 'meta-llama/Llama-3.1-8B'.",
                Gated,
                None,
            ),
            (
                ExitKind::Code(1),
                "huggingface_hub.errors.OfflineModeIsEnabled: Cannot reach https://huggingface.co/api/models/Qwen/Qwen3-8B: offline mode is enabled. To disable it, please unset the `HF_HUB_OFFLINE` environment variable.\nValueError: Invalid repository ID or local directory specified: 'Qwen/Qwen3-8B'.",
                Offline,
                None,
            ),
            (
                ExitKind::Code(1),
                "requests.exceptions.ConnectionError: (MaxRetryError(\"HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded with url: /api/models (Caused by NameResolutionError(\"Failed to resolve 'huggingface.co'\"))\"))",
                Offline,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError: max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512).",
                BadArgs,
                None,
            ),
            (
                ExitKind::Code(1),
                "NotImplementedError: Pipeline parallelism is not supported for this model. Supported models implement the `SupportsPP` interface.",
                TpInvalid,
                None,
            ),
            (
                ExitKind::Code(2),
                "launch_server.py: error: ambiguous option: --tp could match --tp-size, --tp-threads",
                BadArgs,
                None,
            ),
            (
                ExitKind::Code(1),
                "huggingface_hub.errors.HfHubHTTPError: 403 Forbidden: Please enable access to public gated repositories in your fine-grained token settings to view this repository.. Make sure your token has the correct permissions.",
                Gated,
                None,
            ),
            (
                ExitKind::Code(1),
                "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the disk cache and outgoing traffic has been disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' to False.",
                Offline,
                None,
            ),
            (
                ExitKind::Code(1),
                "ValueError:  The selected backend, ROCM_AITER_MLA,does not support block size 16.(currently only supports block size 1)",
                DtypeOrQuant,
                None,
            ),
            (
                ExitKind::Code(1),
                "Capture cuda graph failed: HIP error\nPossible solutions:\n1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)",
                Oom,
                None,
            ),
            (
                ExitKind::Signal(9),
                "Rank 0 scheduler is dead. Please check if there are relevant logs.\nExit code: -9\nReceived sigquit from a child process. It usually means the child failed.",
                Unknown,
                None,
            ),
            // A hub warning before the real failure does not hide it.
            (
                ExitKind::Code(1),
                "WARNING Couldn't connect to the Hub: Failed to resolve 'huggingface.co'. Will try to load from local cache.\n(EngineCore_0 pid=7) torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1 GiB",
                Oom,
                None,
            ),
            // vLLM 0.32 after a SIGKILL of its EngineCore process (CPU build, measured).
            (
                ExitKind::Code(0),
                "(APIServer pid=1313) WARNING 12-03 09:13:39 [core_client.py:817] [shutdown] MPClient: engine core exited unexpectedly; starting cleanup\n(APIServer pid=1313) ERROR 12-03 09:13:39 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.\nINFO:     Finished server process [1313]",
                EngineDied,
                None,
            ),
            // A root cause before the engine's death wins.
            (
                ExitKind::Code(0),
                "(EngineCore_0 pid=7) torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1 GiB\nvllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
                Oom,
                None,
            ),
            // Tricky rows.
            (ExitKind::Code(0), "", Unknown, None),
            (
                ExitKind::Signal(9),
                "INFO Loading weights took 12.3 seconds",
                Unknown,
                None,
            ),
            (
                ExitKind::Code(137),
                "Initialization failed. warmup error: Traceback",
                Unknown,
                None,
            ),
            // argparse texts without exit 2 do not make bad_args.
            (
                ExitKind::Code(1),
                "error: unrecognized arguments: --foo",
                Unknown,
                None,
            ),
            // Priority: OOM beats the generic divisibility text printed later.
            (
                ExitKind::Code(1),
                "HIP out of memory. Tried to allocate 2 GiB\nAssertionError: 3 is not divisible by 2",
                Oom,
                None,
            ),
        ];
        for (exit, text, class, len) in table {
            let got = classify(*exit, &lines(text));
            assert_eq!(got.class, *class, "{text}");
            assert_eq!(got.suggested_max_model_len, *len, "{text}");
            if *class == Unknown {
                assert_eq!(got.evidence, None);
            } else {
                let evidence = got.evidence.expect("evidence");
                assert!(text.contains(&evidence), "{evidence}");
            }
        }
    }

    #[test]
    fn a_bad_arg_is_the_users_when_the_engine_names_one_of_their_flags() {
        let pydantic = "  Value error, max_num_batched_tokens (16) must be greater than or equal to max_num_seqs (64). [type=value_error]";
        let argparse = "vllm serve: error: argument --kv-cache-dtype: invalid choice: 'fp7'";
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(FailureClass, &str, &[&str], Option<&str>)] = &[
            (
                BadArgs,
                pydantic,
                &["max-num-batched-tokens"],
                Some("max-num-batched-tokens"),
            ),
            (BadArgs, pydantic, &["max_num_seqs"], Some("max-num-seqs")),
            (
                BadArgs,
                argparse,
                &["kv-cache-dtype"],
                Some("kv-cache-dtype"),
            ),
            (
                BadArgs,
                argparse,
                &["--kv_cache_dtype"],
                Some("kv-cache-dtype"),
            ),
            // The recipe's flag, not the user's: fall back as before.
            (BadArgs, pydantic, &["max-model-len"], None),
            // A word inside another word is not the flag.
            (BadArgs, pydantic, &["max-num"], None),
            (BadArgs, argparse, &["kv-cache"], None),
            // Only bad_args.
            (Oom, pydantic, &["max-num-seqs"], None),
            (BadArgs, pydantic, &[], None),
        ];
        for (class, line, user, want) in cases {
            let tail = lines(line);
            let got = rejected_user_arg(*class, &tail, &flags(user));
            assert_eq!(
                got.as_ref().map(|(f, _)| f.as_str()),
                *want,
                "{line} / {user:?}"
            );
            if let Some((_, evidence)) = got {
                assert_eq!(evidence, line.trim());
            }
        }
    }

    #[test]
    fn evidence_is_the_last_matching_line() {
        let tail = lines(
            "(Worker_TP0) torch.OutOfMemoryError: HIP out of memory. GPU 0\n(Worker_TP1) torch.OutOfMemoryError: HIP out of memory. GPU 1\nEngine core initialization failed.",
        );
        let got = classify(ExitKind::Code(1), &tail);
        assert_eq!(got.class, Oom);
        assert_eq!(
            got.evidence.as_deref(),
            Some("(Worker_TP1) torch.OutOfMemoryError: HIP out of memory. GPU 1")
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary log text never panics, and the evidence is always one of the lines.
        #[test]
        fn classify_total(code in any::<i32>(), tail in proptest::collection::vec(".{0,80}", 0..6)) {
            let got = classify(ExitKind::Code(code), &tail);
            if let Some(evidence) = &got.evidence {
                prop_assert!(tail.iter().any(|l| l.trim() == evidence));
            } else {
                prop_assert_eq!(got.class, FailureClass::Unknown);
            }
        }
    }
}
