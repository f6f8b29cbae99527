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

/// vLLM 0.11 flags (plus the few that newer or older versions add, gated by version below).
const VLLM_FLAGS: &[(&str, Arity)] = &[
    ("--model", Arity::One),
    ("--host", Arity::One),
    ("--port", Arity::One),
    ("--uds", Arity::One),
    ("--tensor-parallel-size", Arity::One),
    ("-tp", Arity::One),
    ("--pipeline-parallel-size", Arity::One),
    ("-pp", Arity::One),
    ("--data-parallel-size", Arity::One),
    ("-dp", Arity::One),
    ("--data-parallel-size-local", Arity::One),
    ("--data-parallel-address", Arity::One),
    ("--data-parallel-rpc-port", Arity::One),
    ("--data-parallel-backend", Arity::One),
    ("--enable-expert-parallel", Arity::Bare),
    ("--no-enable-expert-parallel", Arity::Bare),
    ("--dtype", Arity::One),
    ("--quantization", Arity::One),
    ("-q", Arity::One),
    ("--kv-cache-dtype", Arity::One),
    ("--max-model-len", Arity::One),
    ("--max-num-seqs", Arity::One),
    ("--max-num-batched-tokens", Arity::One),
    ("--gpu-memory-utilization", Arity::One),
    ("--kv-cache-memory-bytes", Arity::One),
    ("--served-model-name", Arity::Many),
    ("--trust-remote-code", Arity::Bare),
    ("--no-trust-remote-code", Arity::Bare),
    ("--download-dir", Arity::One),
    ("--load-format", Arity::One),
    ("--tokenizer", Arity::One),
    ("--revision", Arity::One),
    ("--seed", Arity::One),
    ("--enable-chunked-prefill", Arity::Bare),
    ("--no-enable-chunked-prefill", Arity::Bare),
    ("--enable-prefix-caching", Arity::Bare),
    ("--no-enable-prefix-caching", Arity::Bare),
    ("--block-size", Arity::One),
    ("--enforce-eager", Arity::Bare),
    ("--swap-space", Arity::One),
    ("--distributed-executor-backend", Arity::One),
    ("--api-key", Arity::Many),
    ("--enable-log-requests", Arity::Bare),
    ("--disable-log-requests", Arity::Bare),
    ("--disable-log-stats", Arity::Bare),
    ("--disable-uvicorn-access-log", Arity::Bare),
    ("--uvicorn-log-level", Arity::One),
    ("--compilation-config", Arity::One),
    ("-O", Arity::One),
    ("--async-scheduling", Arity::Bare),
    ("--attention-backend", Arity::One),
    ("--headless", Arity::Bare),
    ("--api-server-count", Arity::One),
    ("-asc", Arity::One),
    ("--config", Arity::One),
    ("--max-seq-len-to-capture", Arity::One),
    ("--chat-template", Arity::One),
    ("--generation-config", Arity::One),
    ("--enable-auto-tool-choice", Arity::Bare),
    ("--tool-call-parser", Arity::One),
    ("--reasoning-parser", Arity::One),
    ("--limit-mm-per-prompt", Arity::One),
    ("--hf-overrides", Arity::One),
    ("--speculative-config", Arity::One),
    ("--shutdown-timeout", Arity::One),
];

/// SGLang 0.5.x flags.
const SGLANG_FLAGS: &[(&str, Arity)] = &[
    ("--model-path", Arity::One),
    ("--model", Arity::One),
    ("--tokenizer-path", Arity::One),
    ("--host", Arity::One),
    ("--port", Arity::One),
    ("--tensor-parallel-size", Arity::One),
    ("--tp-size", Arity::One),
    ("--tp", Arity::One),
    ("--data-parallel-size", Arity::One),
    ("--dp-size", Arity::One),
    ("--dp", Arity::One),
    ("--enable-dp-attention", Arity::Bare),
    ("--ep-size", Arity::One),
    ("--enable-ep-moe", Arity::Bare),
    ("--dtype", Arity::One),
    ("--quantization", Arity::One),
    ("--kv-cache-dtype", Arity::One),
    ("--mem-fraction-static", Arity::One),
    ("--context-length", Arity::One),
    ("--trust-remote-code", Arity::Bare),
    ("--attention-backend", Arity::One),
    ("--served-model-name", Arity::One),
    ("--api-key", Arity::One),
    ("--download-dir", Arity::One),
    ("--load-format", Arity::One),
    ("--max-running-requests", Arity::One),
    ("--max-total-tokens", Arity::One),
    ("--chunked-prefill-size", Arity::One),
    ("--max-prefill-tokens", Arity::One),
    ("--cuda-graph-max-bs", Arity::One),
    ("--disable-cuda-graph", Arity::Bare),
    ("--disable-radix-cache", Arity::Bare),
    ("--num-continuous-decode-steps", Arity::One),
    ("--skip-server-warmup", Arity::Bare),
    ("--watchdog-timeout", Arity::One),
    ("--log-level", Arity::One),
    ("--enable-metrics", Arity::Bare),
    ("--random-seed", Arity::One),
    ("--chat-template", Arity::One),
    ("--tool-call-parser", Arity::One),
    ("--reasoning-parser", Arity::One),
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

/// Whether `flag` exists in this vLLM version (see engines.md §1.3).
fn vllm_has(flag: &str, version: (u32, u32)) -> bool {
    match flag {
        "--max-seq-len-to-capture" => version < (0, 11),
        "--disable-log-requests" => version < (0, 12),
        "--swap-space" => version < (0, 33),
        "--kv-cache-memory-bytes" => version >= (0, 11),
        "--attention-backend" => version >= (0, 12),
        "--shutdown-timeout" => version >= (0, 18),
        _ => true,
    }
}

fn lookup(mode: Mode, flag: &str, version: (u32, u32), extra: &[String]) -> Option<Arity> {
    if extra.iter().any(|e| e == flag) {
        return Some(Arity::One);
    }
    if extra.iter().any(|e| e.strip_suffix('!') == Some(flag)) {
        return Some(Arity::Bare);
    }
    let table = match mode {
        Mode::Vllm => VLLM_FLAGS,
        Mode::Sglang => SGLANG_FLAGS,
    };
    let arity = table.iter().find(|(f, _)| *f == flag).map(|(_, a)| *a)?;
    if mode == Mode::Vllm && !vllm_has(flag, version) {
        return None;
    }
    Some(arity)
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
            Some((n, v)) if raw.starts_with("--") => (normalise(n), Some(v.to_string())),
            _ => (normalise(raw), None),
        };
        let Some(arity) = lookup(mode, &name, version, extra) else {
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
        Mode::Sglang => match last(&["--model-path", "--model"]) {
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
    let tp_names: &[&str] = match mode {
        Mode::Vllm => &["--tensor-parallel-size", "-tp"],
        Mode::Sglang => &["--tensor-parallel-size", "--tp-size", "--tp"],
    };
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
    fn extra_flags_extend_the_table() {
        let argv = v("serve m --new-thing 3 --new-bool");
        let (mode, rest) = detect(&argv);
        let extra = vec!["--new-thing".to_string(), "--new-bool!".to_string()];
        assert!(parse(mode, rest, "0.11.1", &extra).is_ok());
        assert!(parse(mode, rest, "0.11.1", &[]).is_err());
    }
}
