//! Engine versions: parsing, the version probe argv, flag gating per version, and
//! rewriting the max-model-len flag (all pure).
//!
//! The flag tables (`table.rs`) say what the pinned versions accept; these rules hold what
//! changed before them, for the older versions a container may run: a flag a rule names is
//! accepted in recipes and engine args, and dropped or renamed (with a note) where the rule
//! applies to the version that runs. vLLM only (no SGLang rule is known):
//! | flag | versions | action |
//! |---|---|---|
//! | `--max-seq-len-to-capture` | >= 0.11 | drop (gone in 0.11, argparse exit 2) |
//! | `--disable-log-requests` | >= 0.12 | rename to `--no-enable-log-requests` (removed in 0.12) |
//! | `--enable-log-requests` | < 0.11 | drop (did not exist; 0.10 logs requests by default) |
//! | `--no-enable-log-requests` | < 0.11 | rename to `--disable-log-requests` |
//! | `--swap-space` | >= 0.18 | drop (removed in 0.18: vllm-project/vllm PR #36216; `EngineArgs` has it up to 0.17.1 and not from 0.18.0 on; the V1 engine never used it) |
//! | `--num-scheduler-steps` | >= 0.10 | drop (gone in 0.10) |
//! | `--kv-cache-memory-bytes` | < 0.11 | drop (new in 0.11) |
//! | `--shutdown-timeout` | < 0.18 | drop (added in 0.18, vllm-project/vllm PRs #34730/#36666) |
//! | `--attention-backend` | < 0.12 | drop (absent before 0.12: set env VLLM_ATTENTION_BACKEND instead) |
//!
//! Versions are compared on (major, minor, patch) only: `0.12.0rc1` gates like `0.12.0`,
//! because a release candidate already has the next release's argument parser.

use super::argv::launcher_words;
use super::flags::normalize;
use crate::types::Engine;

/// (major, minor, patch) of an engine version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

/// Parses "0.11.1", "v0.11.1", "0.11.1rc2.dev5+g1234.rocm700", "0.5.4.post1", "0.11".
/// Needs at least major.minor; anything after the numeric prefix is ignored.
pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim();
    let text = text.strip_prefix('v').unwrap_or(text);
    let prefix: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = prefix.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    Some(Version(major, minor, patch))
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Drop,
    Rename(&'static str),
}

struct Rule {
    flag: &'static str,
    /// How many value tokens follow the flag (0 for boolean flags).
    arity: usize,
    /// The rule applies when this returns true for the running version.
    applies: fn(Version) -> bool,
    action: Action,
    why: &'static str,
}

const VLLM_RULES: &[Rule] = &[
    Rule {
        flag: "max-seq-len-to-capture",
        arity: 1,
        applies: |v| v >= Version(0, 11, 0),
        action: Action::Drop,
        why: "removed in vLLM 0.11",
    },
    Rule {
        flag: "disable-log-requests",
        arity: 0,
        applies: |v| v >= Version(0, 12, 0),
        action: Action::Rename("no-enable-log-requests"),
        why: "removed in vLLM 0.12 in favour of --enable-log-requests",
    },
    Rule {
        flag: "enable-log-requests",
        arity: 0,
        applies: |v| v < Version(0, 11, 0),
        action: Action::Drop,
        why: "added in vLLM 0.11 (older versions log requests unless --disable-log-requests)",
    },
    Rule {
        flag: "no-enable-log-requests",
        arity: 0,
        applies: |v| v < Version(0, 11, 0),
        action: Action::Rename("disable-log-requests"),
        why: "added in vLLM 0.11; older versions spell it --disable-log-requests",
    },
    Rule {
        flag: "swap-space",
        arity: 1,
        applies: |v| v >= Version(0, 18, 0),
        action: Action::Drop,
        why: "removed in vLLM 0.18 (unused by the V1 engine)",
    },
    Rule {
        flag: "num-scheduler-steps",
        arity: 1,
        applies: |v| v >= Version(0, 10, 0),
        action: Action::Drop,
        why: "removed in vLLM 0.10",
    },
    Rule {
        flag: "kv-cache-memory-bytes",
        arity: 1,
        applies: |v| v < Version(0, 11, 0),
        action: Action::Drop,
        why: "added in vLLM 0.11",
    },
    Rule {
        flag: "shutdown-timeout",
        arity: 1,
        applies: |v| v < Version(0, 18, 0),
        action: Action::Drop,
        why: "added in vLLM 0.18 (older versions abort in-flight requests on SIGTERM)",
    },
    Rule {
        flag: "attention-backend",
        arity: 1,
        applies: |v| v < Version(0, 12, 0),
        action: Action::Drop,
        why: "no such flag before vLLM 0.12; set env VLLM_ATTENTION_BACKEND instead",
    },
];

/// Whether a version rule of `engine` names the (normalised) flag.
pub fn rule_knows(engine: Engine, flag: &str) -> bool {
    let rules: &[Rule] = match engine {
        Engine::Vllm => VLLM_RULES,
        Engine::Sglang => &[],
    };
    rules.iter().any(|r| r.flag == flag)
}

/// If `token` is `--flag` or `--flag=value` (any `_`/`-` spelling), the normalised flag
/// name and the `=value` tail.
fn flag_of(token: &str) -> Option<(String, Option<&str>)> {
    let rest = token.strip_prefix("--")?;
    if rest.is_empty() {
        return None;
    }
    match rest.split_once('=') {
        Some((name, value)) => Some((normalize(name), Some(value))),
        None => Some((normalize(rest), None)),
    }
}

/// Index one past the flag at `i` and its values: `arity` following tokens (none for the
/// `--flag=value` form), stopping early at the next `--` token so a flag rendered bare by
/// mistake does not swallow its neighbour.
fn end_of_values(argv: &[String], i: usize, has_inline_value: bool, arity: usize) -> usize {
    if has_inline_value {
        return i + 1;
    }
    let mut j = i + 1;
    while j < argv.len() && j <= i + arity && !argv[j].starts_with("--") {
        j += 1;
    }
    j
}

pub fn gate(engine: Engine, version: &str, argv: Vec<String>) -> (Vec<String>, Vec<String>) {
    let rules: &[Rule] = match engine {
        Engine::Vllm => VLLM_RULES,
        Engine::Sglang => &[],
    };
    if rules.is_empty() {
        return (argv, Vec::new());
    }
    let Some(parsed) = parse_version(version) else {
        return (
            argv,
            vec![format!(
                "could not parse {engine} version `{version}`; flags passed unchanged"
            )],
        );
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut notes = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let token = &argv[i];
        let rule = flag_of(token).and_then(|(name, inline)| {
            rules
                .iter()
                .find(|r| r.flag == name && (r.applies)(parsed))
                .map(|r| (r, inline.map(str::to_string)))
        });
        let Some((rule, inline)) = rule else {
            out.push(token.clone());
            i += 1;
            continue;
        };
        match rule.action {
            Action::Drop => {
                let end = end_of_values(&argv, i, inline.is_some(), rule.arity);
                notes.push(format!(
                    "dropped `{}` for {engine} {version}: {}",
                    argv[i..end].join(" "),
                    rule.why
                ));
                i = end;
            }
            Action::Rename(to) => {
                let renamed = match &inline {
                    Some(v) => format!("--{to}={v}"),
                    None => format!("--{to}"),
                };
                notes.push(format!(
                    "renamed `{token}` to `{renamed}` for {engine} {version}: {}",
                    rule.why
                ));
                out.push(renamed);
                i += 1;
            }
        }
    }
    (out, notes)
}

/// The flag that caps the context length.
pub fn max_len_flag(engine: Engine) -> &'static str {
    match engine {
        Engine::Vllm => "max-model-len",
        Engine::Sglang => "context-length",
    }
}

pub fn set_max_model_len(engine: Engine, argv: &[String], len: u64) -> Vec<String> {
    let flag = max_len_flag(engine);
    let mut out = Vec::with_capacity(argv.len() + 2);
    let mut placed = false;
    let mut i = 0;
    while i < argv.len() {
        match flag_of(&argv[i]) {
            Some((name, inline)) if name == flag => {
                // Replace the first occurrence in place; drop any later duplicates.
                if !placed {
                    out.push(format!("--{flag}"));
                    out.push(len.to_string());
                    placed = true;
                }
                i = end_of_values(argv, i, inline.is_some(), 1);
            }
            _ => {
                out.push(argv[i].clone());
                i += 1;
            }
        }
    }
    if !placed {
        out.push(format!("--{flag}"));
        out.push(len.to_string());
    }
    out
}

/// True for `python`, `python3`, `python3.12` (also as the last path component).
fn is_python(word: &str) -> bool {
    let base = basename(word);
    base.strip_prefix("python")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// `python3` next to the launcher executable (`/opt/venv/bin/vllm` -> `/opt/venv/bin/python3`),
/// or plain `python3` when the launcher was found on PATH.
fn sibling_python(word: &str) -> String {
    match word.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/python3"),
        None => "python3".to_string(),
    }
}

/// The argv that prints the installed engine version, or `None` when the launcher is not
/// the real engine. Rule: the launcher counts as the real engine when its first word is
/// the engine's own executable (`vllm`, `sglang`, any directory) or a Python interpreter
/// running `-m <engine package>…`; the probe then uses that interpreter (or the `python3`
/// beside the executable). Anything else (e.g. AIM_VLLM_COMMAND pointing at a fake engine)
/// gets no probe, and flags are not gated.
pub fn probe(engine: Engine, launcher: Option<&str>) -> Option<Vec<String>> {
    let words = launcher_words(engine, launcher);
    let package = match engine {
        Engine::Vllm => "vllm",
        Engine::Sglang => "sglang",
    };
    let first = words.first()?;
    let interpreter = if basename(first) == package {
        sibling_python(first)
    } else if is_python(first)
        && words.get(1).is_some_and(|w| w == "-m")
        && words
            .get(2)
            .is_some_and(|m| m == package || m.starts_with(&format!("{package}.")))
    {
        first.clone()
    } else {
        return None;
    };
    Some(vec![
        interpreter,
        "-c".to_string(),
        format!("import importlib.metadata as m; print(m.version('{package}'))"),
    ])
}

/// The version printed by the probe: the last word on the output that parses as one.
pub fn parse_output(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        line.split_whitespace().rev().find_map(|word| {
            let word = word.trim_matches(|c: char| c == '"' || c == '\'' || c == ',');
            let starts_with_digit = word.chars().next().is_some_and(|c| c.is_ascii_digit());
            (starts_with_digit && parse_version(word).is_some()).then(|| word.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn version_parsing() {
        for (text, want) in [
            ("0.11.1", Some(Version(0, 11, 1))),
            ("v0.11.1", Some(Version(0, 11, 1))),
            ("0.11.1rc2.dev5+g1234.rocm700", Some(Version(0, 11, 1))),
            ("0.5.4.post1", Some(Version(0, 5, 4))),
            ("0.10.1.1", Some(Version(0, 10, 1))),
            ("0.12", Some(Version(0, 12, 0))),
            (" 0.33.0\n", Some(Version(0, 33, 0))),
            ("0.12.0rc1", Some(Version(0, 12, 0))),
            ("0", None),
            ("dev", None),
            ("", None),
        ] {
            assert_eq!(parse_version(text), want, "{text:?}");
        }
    }

    const AIM_QWEN: &str = "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
        --max-seq-len-to-capture 32768 --no-enable-log-requests --swap-space 64 --dtype float16";

    #[test]
    fn gating_table() {
        let table: &[(&str, &str, &str, usize)] = &[
            // 0.10: everything the AIM profile uses exists, except the 0.11 log flag.
            (
                "0.10.1.1",
                AIM_QWEN,
                "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
                 --max-seq-len-to-capture 32768 --disable-log-requests --swap-space 64 --dtype float16",
                1,
            ),
            (
                "0.11.1rc2.dev5+g1234.rocm700",
                AIM_QWEN,
                "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
                 --no-enable-log-requests --swap-space 64 --dtype float16",
                1,
            ),
            (
                "0.12.0",
                AIM_QWEN,
                "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
                 --no-enable-log-requests --swap-space 64 --dtype float16",
                1,
            ),
            (
                "0.17.1",
                "vllm serve m --swap-space 64 --seed 1",
                "vllm serve m --swap-space 64 --seed 1",
                0,
            ),
            (
                "0.18.0",
                AIM_QWEN,
                "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
                 --no-enable-log-requests --dtype float16",
                2,
            ),
            (
                "0.12.0",
                "vllm serve m --disable-log-requests --max_seq_len_to_capture=8192 --seed 1",
                "vllm serve m --no-enable-log-requests --seed 1",
                2,
            ),
            (
                "0.11.0",
                "vllm serve m --attention-backend ROCM_ATTN --kv-cache-memory-bytes 1000",
                "vllm serve m --kv-cache-memory-bytes 1000",
                1,
            ),
            (
                "0.10.0",
                "vllm serve m --enable-log-requests --num-scheduler-steps 10 --kv-cache-memory-bytes 1 --port 1",
                "vllm serve m --port 1",
                3,
            ),
            (
                "0.16.0",
                "vllm serve m --attention-backend ROCM_ATTN",
                "vllm serve m --attention-backend ROCM_ATTN",
                0,
            ),
            (
                "0.17.1",
                "vllm serve m --shutdown-timeout 30 --port 1",
                "vllm serve m --port 1",
                1,
            ),
            (
                "0.18.0",
                "vllm serve m --shutdown-timeout 30 --port 1",
                "vllm serve m --shutdown-timeout 30 --port 1",
                0,
            ),
        ];
        for (version, argv, want, n_notes) in table {
            let (got, notes) = gate(Engine::Vllm, version, words(argv));
            assert_eq!(got, words(want), "{version}: {argv}");
            assert_eq!(notes.len(), *n_notes, "{version}: {notes:?}");
        }
    }

    #[test]
    fn gating_notes_name_the_change() {
        let (_, notes) = gate(
            Engine::Vllm,
            "0.11.1",
            words("vllm serve m --max-seq-len-to-capture 32768"),
        );
        assert_eq!(
            notes,
            vec!["dropped `--max-seq-len-to-capture 32768` for vllm 0.11.1: removed in vLLM 0.11"]
        );
    }

    #[test]
    fn unparseable_version_changes_nothing() {
        let argv = words("vllm serve m --swap-space 4");
        let (got, notes) = gate(Engine::Vllm, "unknown", argv.clone());
        assert_eq!(got, argv);
        assert_eq!(notes.len(), 1);
        let (got, notes) = gate(Engine::Sglang, "0.5.3", argv.clone());
        assert_eq!((got, notes.len()), (argv, 0));
    }

    #[test]
    fn max_model_len_rewrite() {
        for (engine, argv, want) in [
            (
                Engine::Vllm,
                "vllm serve m --port 1",
                "vllm serve m --port 1 --max-model-len 4096",
            ),
            (
                Engine::Vllm,
                "vllm serve m --max-model-len 32k --port 1",
                "vllm serve m --max-model-len 4096 --port 1",
            ),
            (
                Engine::Vllm,
                "vllm serve m --max_model_len=32768 --port 1 --max-model-len 9",
                "vllm serve m --max-model-len 4096 --port 1",
            ),
            (
                Engine::Sglang,
                "python3 -m sglang.launch_server --context-length 32768 --tp-size 2",
                "python3 -m sglang.launch_server --context-length 4096 --tp-size 2",
            ),
            (
                Engine::Sglang,
                "python3 -m sglang.launch_server --tp-size 2",
                "python3 -m sglang.launch_server --tp-size 2 --context-length 4096",
            ),
        ] {
            assert_eq!(
                set_max_model_len(engine, &words(argv), 4096),
                words(want),
                "{argv}"
            );
        }
    }

    #[test]
    fn probe_rule() {
        let vllm = "import importlib.metadata as m; print(m.version('vllm'))";
        let sgl = "import importlib.metadata as m; print(m.version('sglang'))";
        for (engine, launcher, want) in [
            (Engine::Vllm, None, Some(("python3", vllm))),
            (Engine::Vllm, Some("vllm"), Some(("python3", vllm))),
            (
                Engine::Vllm,
                Some("/opt/venv/bin/vllm"),
                Some(("/opt/venv/bin/python3", vllm)),
            ),
            (
                Engine::Vllm,
                Some("python3.12 -m vllm.entrypoints.cli.main"),
                Some(("python3.12", vllm)),
            ),
            (Engine::Vllm, Some("/usr/local/bin/fake-engine"), None),
            (Engine::Vllm, Some("python3 /tests/fake_vllm.py"), None),
            (Engine::Vllm, Some("python3 -m vllmfake"), None),
            (Engine::Sglang, None, Some(("python3", sgl))),
            (
                Engine::Sglang,
                Some("/usr/bin/python -m sglang.launch_server"),
                Some(("/usr/bin/python", sgl)),
            ),
            (Engine::Sglang, Some("fake-engine --sglang"), None),
        ] {
            let got = probe(engine, launcher);
            let want =
                want.map(|(py, code)| vec![py.to_string(), "-c".to_string(), code.to_string()]);
            assert_eq!(got, want, "{engine} {launcher:?}");
        }
    }

    #[test]
    fn probe_output_parsing() {
        for (out, want) in [
            ("0.11.1\n", Some("0.11.1")),
            (
                "WARNING: something 1 2\n0.11.1rc2.dev5+g1234.rocm700\n",
                Some("0.11.1rc2.dev5+g1234.rocm700"),
            ),
            ("0.5.4.post1", Some("0.5.4.post1")),
            ("vllm 0.10.1", Some("0.10.1")),
            ("", None),
            (
                "Traceback ...\nPackageNotFoundError: No package metadata was found for vllm",
                None,
            ),
        ] {
            assert_eq!(parse_output(out).as_deref(), want, "{out:?}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Rewriting is idempotent and leaves exactly one length flag with the new value.
        #[test]
        fn max_model_len_idempotent(
            argv in proptest::collection::vec(prop_oneof![
                Just("--max-model-len".to_string()),
                Just("--max_model_len=7".to_string()),
                Just("--port".to_string()),
                "[a-z0-9]{1,4}",
            ], 0..10),
            len in any::<u64>(),
        ) {
            let once = set_max_model_len(Engine::Vllm, &argv, len);
            let twice = set_max_model_len(Engine::Vllm, &once, len);
            prop_assert_eq!(&once, &twice);
            let at: Vec<usize> = once.iter().enumerate()
                .filter(|(_, t)| t.starts_with("--max") ).map(|(i, _)| i).collect();
            prop_assert_eq!(at.len(), 1);
            prop_assert_eq!(once.get(at[0] + 1), Some(&len.to_string()));
        }

        /// Gating never panics and never grows the argv.
        #[test]
        fn gate_total(version in "[0-9.a-z+]{0,12}", argv in proptest::collection::vec(prop_oneof![
            Just("--swap-space".to_string()),
            Just("--disable-log-requests".to_string()),
            Just("--max-seq-len-to-capture=1".to_string()),
            "[a-z0-9-]{0,6}",
        ], 0..10)) {
            let (out, notes) = gate(Engine::Vllm, &version, argv.clone());
            prop_assert!(out.len() <= argv.len());
            prop_assert!(notes.len() <= argv.len() + 1);
        }
    }
}
