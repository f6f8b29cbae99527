//! Command-line parsing that mimics vLLM's and SGLang's argparse front ends. The flags are the
//! ones aim-engine's generated tables hold (read from the pinned engines' own parsers), with
//! the same abbreviation rule (a unique prefix of a long option counts; several is
//! "ambiguous option"); anything else fails the way argparse fails (exit 2 and
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

/// The flag tables aim-engine generates from the real parsers (`src/engine/tables/`): the fake
/// accepts exactly what the pinned engine's parser accepts, plus the older flags of `vllm_has`.
const VLLM_TABLE: &str = include_str!("../../../src/engine/tables/vllm-0.32.0.json");
const SGLANG_TABLE: &str = include_str!("../../../src/engine/tables/sglang-0.5.23.json");

/// One engine's parser, as the fake needs it.
struct Table {
    /// argparse `allow_abbrev`: a unique prefix of a long option counts as that option.
    allow_abbrev: bool,
    /// vLLM: `--json-option.key value` sets one key of a JSON option.
    dotted: bool,
    /// Every spelling (`--name`, `--no-name`, aliases) → canonical `--name` and arity.
    spellings: Vec<(String, String, Arity)>,
    /// Canonical names of the JSON-valued options.
    json: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RawTable {
    allow_abbrev: bool,
    #[serde(default)]
    dotted_json_keys: bool,
    options: Vec<RawOpt>,
}

#[derive(serde::Deserialize)]
struct RawOpt {
    name: String,
    kind: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    no_form: Option<String>,
}

fn load(text: &str) -> Table {
    let raw: RawTable = match serde_json::from_str(text) {
        Ok(t) => t,
        // The tables are checked in and tested; a broken one is a build defect.
        Err(e) => panic!("fake-engine: a bundled flag table does not parse: {e}"),
    };
    let mut t = Table {
        allow_abbrev: raw.allow_abbrev,
        dotted: raw.dotted_json_keys,
        spellings: Vec::new(),
        json: Vec::new(),
    };
    for o in raw.options {
        let arity = match o.kind.as_str() {
            "flag" | "bool_optional" => Arity::Bare,
            "list" => Arity::Many,
            _ => Arity::One,
        };
        let long = format!("--{}", o.name);
        if o.kind == "json" {
            t.json.push(long.clone());
        }
        if let Some(no) = o.no_form {
            t.spellings
                .push((format!("--{no}"), format!("--{no}"), Arity::Bare));
        }
        for a in o.aliases {
            t.spellings.push((a, long.clone(), arity));
        }
        t.spellings.push((long.clone(), long, arity));
    }
    t
}

fn table(mode: Mode) -> &'static Table {
    static VLLM: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    static SGLANG: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    match mode {
        Mode::Vllm => VLLM.get_or_init(|| load(VLLM_TABLE)),
        Mode::Sglang => SGLANG.get_or_init(|| load(SGLANG_TABLE)),
    }
}

/// Flags older vLLM versions had and the pinned table no longer has (the version rules of
/// `src/engine/version.rs`), with their arity; accepted where `vllm_has` says so.
const VLLM_OLD: &[(&str, Arity)] = &[
    ("swap-space", Arity::One),
    ("max-seq-len-to-capture", Arity::One),
    ("num-scheduler-steps", Arity::One),
    ("disable-log-requests", Arity::Bare),
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

/// Whether the long flag `name` exists in this vLLM version (the gating table in
/// `src/engine/version.rs`).
fn vllm_has(name: &str, version: (u32, u32)) -> bool {
    match name {
        "max-seq-len-to-capture" => version < (0, 11),
        "num-scheduler-steps" => version < (0, 10),
        "disable-log-requests" => version < (0, 12),
        "enable-log-requests" | "no-enable-log-requests" => version >= (0, 11),
        "swap-space" => version < (0, 18),
        "kv-cache-memory-bytes" => version >= (0, 11),
        "attention-backend" => version >= (0, 12),
        "shutdown-timeout" => version >= (0, 18),
        _ => true,
    }
}

/// What a flag on the command line is.
enum Found {
    Flag(String, Arity),
    Unknown,
    /// A prefix of several long options (argparse: "ambiguous option").
    Ambiguous(Vec<String>),
}

/// Looks a (normalised) flag up as the engine's parser would: an exact spelling, vLLM's
/// `-O3` and dotted JSON keys, the older flags of `vllm_has`, then a unique prefix.
fn lookup(mode: Mode, flag: &str, version: (u32, u32), extra: &[String]) -> Found {
    if extra.iter().any(|e| e == flag) {
        return Found::Flag(flag.to_string(), Arity::One);
    }
    if extra.iter().any(|e| e.strip_suffix('!') == Some(flag)) {
        return Found::Flag(flag.to_string(), Arity::Bare);
    }
    let t = table(mode);
    let gated =
        |name: &str| mode == Mode::Sglang || vllm_has(name.trim_start_matches('-'), version);
    if let Some((_, long, arity)) = t.spellings.iter().find(|(s, _, _)| s == flag) {
        return if gated(long) {
            Found::Flag(long.clone(), *arity)
        } else {
            Found::Unknown
        };
    }
    if mode == Mode::Vllm {
        // `-O3`: the short option with its value attached.
        if flag.len() > 2 && flag.starts_with("-O") && flag[2..].chars().all(|c| c.is_ascii_digit())
        {
            return Found::Flag(flag.to_string(), Arity::Bare);
        }
        if let Some(name) = flag.strip_prefix("--")
            && let Some((_, arity)) = VLLM_OLD.iter().find(|(n, _)| *n == name)
            && vllm_has(name, version)
        {
            return Found::Flag(flag.to_string(), *arity);
        }
    }
    if t.dotted
        && let Some((head, field)) = flag.split_once('.')
    {
        let long = t
            .spellings
            .iter()
            .find(|(s, _, _)| s == head)
            .map(|(_, l, _)| l.clone());
        return match long {
            Some(l) if t.json.contains(&l) && !field.is_empty() => {
                Found::Flag(flag.to_string(), Arity::One)
            }
            _ => Found::Unknown,
        };
    }
    if t.allow_abbrev && flag.starts_with("--") {
        let mut hits: Vec<(&str, &str, Arity)> = t
            .spellings
            .iter()
            .filter(|(s, l, _)| s.starts_with("--") && s.starts_with(flag) && gated(l))
            .map(|(s, l, a)| (s.as_str(), l.as_str(), *a))
            .collect();
        hits.sort_by(|a, b| a.0.cmp(b.0));
        match hits.as_slice() {
            [] => {}
            [(_, long, arity)] => return Found::Flag((*long).to_string(), *arity),
            many => {
                return Found::Ambiguous(many.iter().map(|(s, _, _)| (*s).to_string()).collect());
            }
        }
    }
    Found::Unknown
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

/// An argparse-style error (`usage: ...` and `<prog>: error: msg`) for checks made after
/// parsing (the multi-node group flags).
pub fn arg_error(mode: Mode, msg: &str) -> ArgError {
    err(mode, msg)
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
        let (name, arity) = match lookup(mode, &name, version, extra) {
            Found::Flag(name, arity) => (name, arity),
            Found::Ambiguous(candidates) => {
                return Err(err(
                    mode,
                    &format!(
                        "ambiguous option: {name} could match {}",
                        candidates.join(", ")
                    ),
                ));
            }
            Found::Unknown => {
                unknown.push(raw.clone());
                // argparse lists the values that followed an unknown flag as unrecognized too.
                while i < argv.len() && !argv[i].starts_with('-') {
                    unknown.push(argv[i].clone());
                    i += 1;
                }
                continue;
            }
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
    let tp_names: &[&str] = &["--tensor-parallel-size", "--tp-size"];
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
                "serve m -O3 -cc.cudagraph_mode=FULL --compilation-config.mode=3 --compilation-config.mode 3",
                "0.11.1",
            ),
            (
                "serve m --compilation-config {\"cudagraph_mode\":\"FULL\"}",
                "0.11.1",
            ),
            (
                "serve m -tp 8 -dp 2 -q fp8 --cudagraph-capture-sizes 1 2 4 --served-model-name a",
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
                "--model-path m --enable-torch-compile --disable-radix-cache --cuda-graph-bs-decode 1 2 --tp 2 --mem-fraction 0.8 --max-running 4",
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
            ("serve m -O.level 3", "0.11.1", "unrecognized arguments"),
            ("serve m --swap-space 4", "0.18.0", "--swap-space 4"),
            (
                "serve m --cuda-graph-sizes 8",
                "0.11.1",
                "--cuda-graph-sizes 8",
            ),
            (
                "--model-path m --cuda-graph-max-bs 8",
                "0.5.23",
                "ambiguous option: --cuda-graph-max-bs could match --cuda-graph-max-bs-decode, --cuda-graph-max-bs-prefill",
            ),
            ("serve m --dtype.x 1", "0.11.1", "--dtype.x 1"),
            (
                "--model-path m --mem-fraction-dynamic 0.8",
                "0.5.3",
                "--mem-fraction-dynamic 0.8",
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
