//! What flags an engine version accepts and how spellings map onto one logical flag, from
//! that version's generated table (`table.rs`), plus "did you mean" and the value checks, so
//! a typo or a wrong value in a recipe or AIM_ENGINE_ARGS fails before launch.
//!
//! A key resolves as the engine's parser would: an exact spelling (the long name, any
//! `_`/`-` spelling, a short alias such as `tp` or `O`, the `no-` form of a boolean), then a
//! flag that a version rule in `version.rs` knows (one older versions had: it is dropped or
//! renamed for the version that runs, with a note), then, where the engine's parser takes
//! abbreviations, a prefix of exactly one long option. A prefix of several is refused as
//! ambiguous, as the engine would refuse it. vLLM's JSON options also take dotted keys
//! (`compilation-config.mode`).

use super::table::{Kind, Lookup, Opt, Table, ValueType};
use crate::types::Engine;
use serde_json::Value;

/// Spelling-normalised form of a flag: leading dashes stripped, `_` -> `-`.
pub fn normalize(flag: &str) -> String {
    flag.trim().trim_start_matches('-').replace('_', "-")
}

/// One logical setting: the long flag name and whether it was given in its `--no-` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub name: String,
    pub negated: bool,
}

/// What a key is in one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'t> {
    /// An option of the table (`opt`), or a dotted key into a JSON option or a flag only a
    /// version rule knows (`opt` None: its value is not checked here).
    Known {
        logical: Logical,
        opt: Option<&'t Opt>,
    },
    /// A prefix of these long options.
    Ambiguous(Vec<String>),
    Unknown,
}

/// Resolves `key` (any spelling, with or without dashes) in `table`.
pub fn resolve<'t>(table: &'t Table, key: &str) -> Resolved<'t> {
    let key = key.trim();
    if table.dotted_json_keys
        && let Some((prefix, field)) = key.split_once('.')
    {
        // Dotted key into a JSON-valued flag: the field keeps its own spelling (JSON field
        // names use underscores), only the flag part is normalised.
        let ok =
            !field.is_empty() && !field.starts_with('.') && !field.contains(char::is_whitespace);
        return match table.exact(prefix) {
            Some((i, false)) if ok && table.option(i).kind == Kind::Json => Resolved::Known {
                logical: Logical {
                    name: format!("{}.{field}", table.option(i).name),
                    negated: false,
                },
                opt: None,
            },
            _ => Resolved::Unknown,
        };
    }
    if let Some((index, negated)) = table.exact(key) {
        return known(table, index, negated);
    }
    let norm = normalize(key);
    if super::version::rule_knows(table.engine, &norm) {
        return Resolved::Known {
            logical: Logical {
                name: norm,
                negated: false,
            },
            opt: None,
        };
    }
    match table.lookup(key) {
        Lookup::Found { index, negated } => known(table, index, negated),
        Lookup::Ambiguous(names) => Resolved::Ambiguous(names),
        Lookup::Unknown => Resolved::Unknown,
    }
}

fn known(table: &Table, index: usize, negated: bool) -> Resolved<'_> {
    let opt = table.option(index);
    Resolved::Known {
        logical: Logical {
            name: opt.name.clone(),
            negated,
        },
        opt: Some(opt),
    }
}

/// The logical setting `flag` stands for in `table`, or `None` when it is unknown or
/// ambiguous there. `no-enable-prefix-caching` and `enable-prefix-caching` are one setting
/// (BooleanOptionalAction), so a user value for either replaces the recipe's.
pub fn logical_in(table: &Table, flag: &str) -> Option<Logical> {
    match resolve(table, flag) {
        Resolved::Known { logical, .. } => Some(logical),
        _ => None,
    }
}

/// [`logical_in`] the newest table of `engine`.
pub fn logical(engine: Engine, flag: &str) -> Option<Logical> {
    logical_in(super::table::newest(engine), flag)
}

/// Whether the newest pinned version of `engine` accepts `flag` (or a version rule knows it).
pub fn is_known(engine: Engine, flag: &str) -> bool {
    logical(engine, flag).is_some()
}

/// The closest long spelling in `table` to `flag`, if one is close enough to be a typo.
pub fn suggest_in(table: &Table, flag: &str) -> Option<String> {
    let norm = normalize(flag);
    // A third of the length (at least 2 edits) keeps "tensor-paralel-size" but not
    // unrelated words.
    let limit = (norm.chars().count() / 3).max(2);
    table
        .long_spellings()
        .map(|c| (edit_distance(&norm, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c.to_string())
}

/// [`suggest_in`] the newest table of `engine`.
pub fn suggest(engine: Engine, flag: &str) -> Option<String> {
    suggest_in(super::table::newest(engine), flag)
}

/// Whether `value` is one the option takes, as the generator measured its type and choices;
/// the reason when it is not. The recipe value forms are those of `argv.rs` (null/true: the
/// bare flag; false: omitted; list: several values; map: one JSON argument).
pub fn check_value(opt: &Opt, value: &Value) -> Result<(), ValueError> {
    unfit(opt, value).map_err(|reason| ValueError {
        flag: opt.name.clone(),
        reason,
    })
}

/// Why a value does not suit an option, as the engine's parser would refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{flag}` {reason}")]
pub struct ValueError {
    /// The option's long name, without dashes.
    pub flag: String,
    pub reason: Unfit,
}

/// What is wrong with a value (the text follows the option's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    #[error(
        "is a switch and takes no value, but got `{0}`; write `null` or `true` to set it, `false` to leave it out"
    )]
    Switch(Value),
    #[error("takes one JSON object (a YAML/JSON map), but got `{0}`")]
    NotAnObject(Value),
    #[error(
        "takes JSON, but `{0}` is not JSON (write a YAML/JSON map or list, or quote the text as a JSON string)"
    )]
    NotJson(String),
    #[error("needs a value (JSON)")]
    NoJson,
    #[error("needs a value (it is not a switch)")]
    NoValue,
    #[error("takes one value, but got `{0}`")]
    NotOneValue(Value),
    #[error("takes a list of plain values, but got the element `{0}`")]
    ListElement(Value),
    #[error("needs at least one value")]
    NoValues,
    #[error("takes a list of values, but got `{0}`")]
    NotAList(Value),
    /// `want`: "an integer", "a number", ...
    #[error("takes {want}, but got `{got}`")]
    WrongType { want: &'static str, got: String },
    #[error("takes one of {}, but got `{got}`", choices.join(", "))]
    NotAChoice { choices: Vec<String>, got: String },
}

fn unfit(opt: &Opt, value: &Value) -> Result<(), Unfit> {
    match opt.kind {
        Kind::Flag | Kind::BoolOptional => match value {
            Value::Null | Value::Bool(_) => Ok(()),
            other => Err(Unfit::Switch(other.clone())),
        },
        Kind::Json if opt.value_type == ValueType::JsonObject => match value {
            Value::Object(_) | Value::Bool(false) => Ok(()),
            Value::String(s) if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object()) => {
                Ok(())
            }
            other => Err(Unfit::NotAnObject(other.clone())),
        },
        Kind::Json => match value {
            Value::Bool(false) | Value::Object(_) | Value::Array(_) | Value::Number(_) => Ok(()),
            Value::String(s) if serde_json::from_str::<Value>(s).is_ok() => Ok(()),
            Value::String(s) => Err(Unfit::NotJson(s.clone())),
            Value::Null | Value::Bool(true) => Err(Unfit::NoJson),
        },
        Kind::Value => match value {
            Value::Bool(false) => Ok(()),
            Value::Null | Value::Bool(true) => Err(Unfit::NoValue),
            Value::Array(_) | Value::Object(_) => Err(Unfit::NotOneValue(value.clone())),
            scalar => check_scalar(opt, scalar),
        },
        Kind::List => match value {
            Value::Bool(false) => Ok(()),
            Value::Array(items) => items.iter().try_for_each(|v| match v {
                Value::Array(_) | Value::Object(_) | Value::Null => {
                    Err(Unfit::ListElement(v.clone()))
                }
                scalar => check_scalar(opt, scalar),
            }),
            Value::Null | Value::Bool(true) => Err(Unfit::NoValues),
            Value::Object(_) => Err(Unfit::NotAList(value.clone())),
            scalar => check_scalar(opt, scalar),
        },
    }
}

fn check_scalar(opt: &Opt, value: &Value) -> Result<(), Unfit> {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let t = text.trim();
    let ok = match opt.value_type {
        ValueType::Int => t.parse::<i64>().is_ok(),
        ValueType::HumanInt => {
            t.parse::<i64>().is_ok()
                || t.strip_suffix(['k', 'K', 'm', 'M', 'g', 'G'])
                    .is_some_and(|n| n.parse::<f64>().is_ok_and(f64::is_finite))
        }
        ValueType::Float => t.parse::<f64>().is_ok_and(f64::is_finite),
        ValueType::Bool => matches!(
            t.to_ascii_lowercase().as_str(),
            "true" | "false" | "1" | "0" | "yes" | "no"
        ),
        ValueType::Json | ValueType::JsonObject => serde_json::from_str::<Value>(t).is_ok(),
        ValueType::Str | ValueType::None => true,
    };
    if !ok {
        let want = match opt.value_type {
            ValueType::Int => "an integer",
            ValueType::HumanInt => "an integer (or one like `32k`)",
            ValueType::Float => "a number",
            ValueType::Bool => "true or false",
            _ => "JSON",
        };
        return Err(Unfit::WrongType { want, got: text });
    }
    if let Some(choices) = &opt.choices
        && !choices.iter().any(|c| c == &text)
    {
        return Err(Unfit::NotAChoice {
            choices: choices.clone(),
            got: text,
        });
    }
    Ok(())
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
    use crate::engine::table::for_version;
    use serde_json::json;

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
            (Engine::Vllm, "-tp", "tensor-parallel-size", false),
            // In vLLM 0.32.0 `-O3` is `--optimization-level 3`.
            (Engine::Vllm, "O", "optimization-level", false),
            (Engine::Vllm, "cc", "compilation-config", false),
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
            // Gone in 0.32.0, known to a version rule (dropped with a note).
            (Engine::Vllm, "swap-space", "swap-space", false),
            (
                Engine::Vllm,
                "max_seq_len_to_capture",
                "max-seq-len-to-capture",
                false,
            ),
            (Engine::Sglang, "tp-size", "tp-size", false),
            (Engine::Sglang, "tensor-parallel-size", "tp-size", false),
            (Engine::Sglang, "model", "model-path", false),
            (
                Engine::Sglang,
                "mem_fraction_static",
                "mem-fraction-static",
                false,
            ),
            (
                Engine::Sglang,
                "cuda-graph-max-bs-decode",
                "cuda-graph-max-bs-decode",
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
    fn stale_and_ambiguous_flags_are_refused() {
        let v = for_version(Engine::Vllm, "0.32.0");
        // Accepted by older vLLMs, by no rule, and not by 0.32.0.
        for gone in [
            "rope-theta",
            "guided-decoding-backend",
            "preemption-mode",
            "task",
        ] {
            assert_eq!(resolve(v, gone), Resolved::Unknown, "{gone}");
        }
        assert!(matches!(resolve(v, "device"), Resolved::Ambiguous(_)));
        let s = for_version(Engine::Sglang, "0.5.23");
        let Resolved::Ambiguous(names) = resolve(s, "cuda-graph-max-bs") else {
            panic!("cuda-graph-max-bs is ambiguous in SGLang 0.5.23");
        };
        assert!(
            names.contains(&"cuda-graph-max-bs-prefill".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn no_form_only_for_boolean_flags() {
        assert!(!is_known(Engine::Vllm, "no-port"));
        assert!(!is_known(Engine::Vllm, "no-max-model-len"));
        assert!(!is_known(Engine::Sglang, "no-trust-remote-code"));
        // Dotted keys only into JSON-valued vLLM flags.
        assert!(is_known(Engine::Vllm, "compilation_config.mode"));
        assert!(!is_known(Engine::Vllm, "max-model-len.x"));
        assert!(!is_known(Engine::Vllm, "compilation-config."));
        assert!(!is_known(Engine::Sglang, "json-model-override-args.x"));
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
            (Engine::Sglang, "context-lenght", Some("context-length")),
            (Engine::Vllm, "banana", None),
        ] {
            assert_eq!(suggest(engine, typo).as_deref(), want, "{engine} {typo}");
        }
    }

    #[test]
    fn values_are_checked_against_type_and_choices() {
        let v = for_version(Engine::Vllm, "0.32.0");
        let s = for_version(Engine::Sglang, "0.5.23");
        let opt = |t: &'static Table, name: &str| t.by_name(name).expect(name);
        let ok: &[(&Table, &str, Value)] = &[
            (v, "max-model-len", json!(32768)),
            (v, "max-model-len", json!("32k")),
            (v, "max-num-seqs", json!("256")),
            (v, "gpu-memory-utilization", json!(0.9)),
            (v, "kv-cache-dtype", json!("fp8")),
            (v, "enforce-eager", Value::Null),
            (v, "enable-prefix-caching", json!(false)),
            (v, "compilation-config", json!({"mode": 3})),
            (v, "compilation-config", json!(r#"{"mode": 3}"#)),
            (s, "kv-cache-dtype", json!("fp8_e4m3")),
            (s, "mem-fraction-static", json!(0.8)),
            (s, "attention-backend", json!("aiter")),
        ];
        for (t, name, value) in ok {
            assert_eq!(check_value(opt(t, name), value), Ok(()), "{name}: {value}");
        }
        let bad: &[(&Table, &str, Value, &str)] = &[
            (v, "max-num-seqs", json!(1.5), "takes an integer"),
            (v, "max-num-seqs", json!("many"), "takes an integer"),
            (v, "gpu-memory-utilization", json!("most"), "takes a number"),
            (v, "kv-cache-dtype", json!("fp8_e4m3fn"), "takes one of"),
            (v, "enforce-eager", json!(1), "is a switch"),
            (v, "max-model-len", Value::Null, "needs a value"),
            (v, "max-model-len", json!([1, 2]), "takes one value"),
            // vLLM 0.32.0 refuses `--compilation-config 3`.
            (v, "compilation-config", json!(3), "one JSON object"),
            (s, "kv-cache-dtype", json!("fp8"), "takes one of"),
            (s, "attention-backend", json!("rocm"), "takes one of"),
        ];
        for (t, name, value, why) in bad {
            let err = check_value(opt(t, name), value)
                .expect_err(name)
                .to_string();
            assert!(
                err.contains(why) && err.contains(name),
                "{name}: {value}: {err}"
            );
        }
    }
}
