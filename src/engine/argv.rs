//! The engine command line and environment for one attempt (pure).
//!
//! Rules (the command shape AMD's AIM containers generate from their profiles):
//! - argv: launcher words, then for vLLM `serve MODEL`, for SGLang `--model-path MODEL`,
//!   then the system flags `--host 127.0.0.1 --port P` + TP + `--served-model-name ID`,
//!   then the merged recipe/user args in recipe order (new user keys appended).
//! - Values: null / true -> bare flag; false -> omitted; list -> flag then each value
//!   (an empty list is omitted: argparse would reject a bare `nargs='+'` flag), except for
//!   an option whose value is JSON text (vLLM's `allowed-origins`), which gets the list as
//!   one JSON argument; map -> one compact JSON argument; number/string -> flag then value.
//! - Flags and values are checked against the table of the engine version that will run
//!   (`CommandInput::engine_version`, else the newest pinned table): an unknown or ambiguous
//!   flag, or a value of the wrong type or outside the choices, is an error naming the flag,
//!   its origin and the fix. With a version, the version rules (`version.rs`) are applied to
//!   the argv here and each change is a note; without one (serve, before its probe) the
//!   supervisor applies them once it knows the version.
//! - Env: `VLLM_*` / `SGLANG_*` / `SGL_*` names the engine's table does not list are notes
//!   ([`env_notes`]); the engine ignores them.
//! - Merge: user args over recipe args per logical flag (`tp`, `tensor_parallel_size`,
//!   `--tensor-parallel-size` are one flag; so are `enable-x` and `no-enable-x`).
//! - System values (model, host, port, served-model-name, tensor-parallel-size) always
//!   win: the same keys from recipe or user args are dropped, never duplicated. For TP the
//!   plan's value wins even over an explicit user value, because the plan also chose the
//!   GPUs (`ordinals`) to match it; a planner that wants to honour a user's TP must read it
//!   with [`requested_tensor_parallel`] before choosing the GPUs. One exception: in a
//!   multi-node group a TP (recipe or user) that is a multiple of this node's GPUs spans
//!   that many nodes and is run as given (`multinode::check_split`). [`build_with_notes`]
//!   reports every replaced value so `plan` can say so.
//! - A blank served-model-name falls back to the model.
//! - Env: recipe env, then HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES = the ordinals.
//!   ROCR_VISIBLE_DEVICES is never set and is removed from the recipe env: it filters GPUs
//!   before HIP does, so combined with our HIP ordinals it would pick the wrong devices.
//!   With no ordinals (no GPU restriction planned) neither variable is set by us.

use super::flags::{self, Logical, Resolved};
use super::table::{self, Table};
use super::{CommandError, CommandInput, EngineCommand};
use crate::types::Engine;
use indexmap::IndexMap;
use serde_json::Value;

/// Default launcher words per engine.
pub fn default_launcher(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Vllm => &["vllm"],
        Engine::Sglang => &["python3", "-m", "sglang.launch_server"],
    }
}

/// The launcher words: the override (whitespace-split) when set and non-blank, else the
/// engine default.
pub fn launcher_words(engine: Engine, launcher: Option<&str>) -> Vec<String> {
    match launcher {
        Some(l) if !l.trim().is_empty() => l.split_whitespace().map(str::to_string).collect(),
        _ => default_launcher(engine)
            .iter()
            .map(|w| (*w).to_string())
            .collect(),
    }
}

/// The flag name this crate renders for the TP size.
fn tp_flag(engine: Engine) -> &'static str {
    match engine {
        Engine::Vllm => "--tensor-parallel-size",
        Engine::Sglang => "--tp-size",
    }
}

/// The logical (table) name of the TP size.
pub(super) fn tp_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Vllm => "tensor-parallel-size",
        Engine::Sglang => "tp-size",
    }
}

/// Logical names the system sets itself; recipe/user values for them are dropped.
fn system_flags(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Vllm => &[
            "model",
            "host",
            "port",
            "served-model-name",
            "tensor-parallel-size",
        ],
        Engine::Sglang => &["model-path", "host", "port", "served-model-name", "tp-size"],
    }
}

/// Whether the system sets this logical flag itself: the system flags and the multi-node
/// ones (the group facts decide those).
fn is_system(engine: Engine, name: &str) -> bool {
    system_flags(engine).contains(&name) || super::multinode::flag_names(engine).contains(&name)
}

/// The table the input is checked against: its version's, else the newest.
fn table_of(input: &CommandInput<'_>) -> &'static Table {
    match input.engine_version {
        Some(v) => table::for_version(input.engine, v),
        None => table::newest(input.engine),
    }
}

/// Merges recipe then user args per logical flag. Errors on the first unknown or ambiguous
/// flag or bad value.
fn merge(
    table: &Table,
    recipe: &IndexMap<String, Value>,
    user: &IndexMap<String, Value>,
) -> Result<IndexMap<String, (Logical, Value)>, CommandError> {
    let engine = table.engine;
    let mut merged: IndexMap<String, (Logical, Value)> = IndexMap::new();
    for (source, args) in [("recipe", recipe), ("user", user)] {
        for (key, value) in args {
            let (logical, opt) = match flags::resolve(table, key) {
                Resolved::Known { logical, opt } => (logical, opt),
                Resolved::Ambiguous(candidates) => {
                    return Err(CommandError::AmbiguousFlag {
                        engine,
                        version: table.version.clone(),
                        flag: key.clone(),
                        origin: source,
                        candidates,
                    });
                }
                Resolved::Unknown => {
                    return Err(CommandError::UnknownFlag {
                        engine,
                        version: table.version.clone(),
                        flag: key.clone(),
                        origin: source,
                        suggestion: flags::suggest_in(table, key),
                    });
                }
            };
            // System flags are dropped whatever their value (with a note), so not checked.
            if let Some(opt) = opt
                && !is_system(engine, &logical.name)
                && let Err(why) = flags::check_value(opt, value)
            {
                return Err(CommandError::BadValue {
                    engine,
                    version: table.version.clone(),
                    flag: key.clone(),
                    origin: source,
                    why: Box::new(why),
                });
            }
            let value = match (opt.map(|o| o.kind), value) {
                // A list for a JSON-text option is one JSON argument, not several words.
                (Some(super::table::Kind::Json), Value::Array(_)) => {
                    Value::String(value.to_string())
                }
                _ => value.clone(),
            };
            if logical.name == "api-key" {
                return Err(CommandError::ApiKeyArg { origin: source });
            }
            // `insert` keeps the recipe's position when the user overrides a flag.
            merged.insert(logical.name.clone(), (logical, value));
        }
    }
    Ok(merged)
}

/// One note per `VLLM_*` / `SGLANG_*` / `SGL_*` name in `names` that the engine version of
/// `table` does not read (with the closest name it does read, if one is close), and per
/// name of the other engine. `origin` says where the names come from (`recipe env`).
pub fn env_notes<'n>(
    table: &Table,
    origin: &str,
    names: impl IntoIterator<Item = &'n str>,
) -> Vec<String> {
    let ours: &[&str] = match table.engine {
        Engine::Vllm => &["VLLM_"],
        Engine::Sglang => &["SGLANG_", "SGL_"],
    };
    let theirs: &[&str] = match table.engine {
        Engine::Vllm => &["SGLANG_", "SGL_"],
        Engine::Sglang => &["VLLM_"],
    };
    let mut notes = Vec::new();
    for name in names {
        if ours.iter().any(|p| name.starts_with(p)) {
            if table.knows_env(name) {
                continue;
            }
            let limit = (name.len() / 3).max(2);
            let close = table
                .env_names()
                .map(|c| (flags::edit_distance(name, c), c))
                .filter(|(d, _)| *d <= limit)
                .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            notes.push(format!(
                "warning: {origin} `{name}` is not a variable {} {} reads; it has no effect{}",
                table.engine,
                table.version,
                close
                    .map(|(_, c)| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default()
            ));
        } else if theirs.iter().any(|p| name.starts_with(p)) {
            notes.push(format!(
                "warning: {origin} `{name}` is a variable of the other engine; {} does not read it",
                table.engine
            ));
        }
    }
    notes
}

/// A scalar list element or flag value as one argv word.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        // Numbers, bools, nested values: their JSON text (compact).
        other => other.to_string(),
    }
}

/// Appends `--flag [values]` for one merged entry, following the value rules above.
fn render(out: &mut Vec<String>, logical: &Logical, value: &Value) {
    let flag = if logical.negated {
        format!("--no-{}", logical.name)
    } else {
        format!("--{}", logical.name)
    };
    match value {
        Value::Null | Value::Bool(true) => out.push(flag),
        Value::Bool(false) => {}
        Value::Array(items) if items.is_empty() => {}
        Value::Array(items) => {
            out.push(flag);
            out.extend(items.iter().map(scalar));
        }
        Value::Object(_) => {
            out.push(flag);
            out.push(value.to_string());
        }
        Value::Number(_) | Value::String(_) => {
            out.push(flag);
            out.push(scalar(value));
        }
    }
}

/// The TP size an args map asks for (any spelling), if it names one as an integer.
pub fn requested_tensor_parallel(engine: Engine, args: &IndexMap<String, Value>) -> Option<u32> {
    args.iter()
        .filter(|(k, _)| flags::logical(engine, k).is_some_and(|l| l.name == tp_name(engine)))
        .filter_map(|(_, v)| match v {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .next_back()
}

/// The served name; a blank one falls back to the model (what the engines do by default).
fn served_name<'a>(input: &CommandInput<'a>) -> &'a str {
    if input.served_model_name.trim().is_empty() {
        input.model
    } else {
        input.served_model_name
    }
}

/// The TP size the command runs: this node's GPUs, or in a group the args' multiple of them
/// (`multinode::tensor_parallel_of`, the rule `check_split` applies to the merged args).
fn tensor_parallel_run(input: &CommandInput<'_>) -> u32 {
    let nodes = input.group.map_or(1, |g| g.nnodes);
    super::multinode::tensor_parallel_of(
        input.engine,
        input.tensor_parallel,
        nodes,
        &[input.recipe_args, input.user_args],
    )
}

/// The value the system uses for a system flag, for notes.
fn system_value(name: &str, input: &CommandInput<'_>) -> String {
    match name {
        "host" => "127.0.0.1".to_string(),
        "port" => input.port.to_string(),
        "served-model-name" => served_name(input).to_string(),
        "tensor-parallel-size" | "tp-size" => tensor_parallel_run(input).to_string(),
        other if super::multinode::flag_names(input.engine).contains(&other) => {
            super::multinode::system_value(other, input.group)
                .unwrap_or_else(|| "(one node: left out)".to_string())
        }
        // model / model-path
        _ => input.model.to_string(),
    }
}

/// Like [`build`], plus notes for `plan` to show: one per recipe/user arg replaced by a system
/// value (e.g. a user `tensor-parallel-size: 4` when the plan runs TP 2), one per flag the
/// version rules dropped or renamed, one per deprecated flag, one per unknown env name.
pub fn build_with_notes(
    input: &CommandInput<'_>,
) -> Result<(EngineCommand, Vec<String>), CommandError> {
    let (command, mut gate_notes) = build_gated(input)?;
    let engine = input.engine;
    let table = table_of(input);
    let mut notes = Vec::new();
    for (origin, args) in [("recipe", input.recipe_args), ("user", input.user_args)] {
        for (key, value) in args {
            if let Resolved::Known { opt: Some(opt), .. } = flags::resolve(table, key)
                && opt.deprecated
            {
                notes.push(format!(
                    "warning: {origin} arg `{key}` is deprecated in {engine} {}",
                    table.version
                ));
            }
            let Some(logical) = flags::logical_in(table, key) else {
                continue;
            };
            if !is_system(engine, &logical.name) {
                continue;
            }
            let given = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let used = system_value(&logical.name, input);
            if given != used {
                notes.push(format!(
                    "{origin} arg `{key}: {given}` replaced by the system value `{used}`"
                ));
            }
        }
    }
    let tp = tensor_parallel_run(input);
    if let Some(group) = input.group
        && tp > input.tensor_parallel
    {
        notes.push(format!(
            "tensor parallel {tp} spans {} of the group's {} nodes ({} GPUs each)",
            tp / input.tensor_parallel.max(1),
            group.nnodes,
            input.tensor_parallel
        ));
    }
    notes.append(&mut gate_notes);
    notes.extend(env_notes(
        table,
        "recipe env",
        input.recipe_env.keys().map(String::as_str),
    ));
    Ok((command, notes))
}

pub fn build(input: &CommandInput<'_>) -> Result<EngineCommand, CommandError> {
    build_gated(input).map(|(command, _)| command)
}

/// The command, with the version rules applied when the input names a version, and the notes
/// of those rules.
fn build_gated(input: &CommandInput<'_>) -> Result<(EngineCommand, Vec<String>), CommandError> {
    let mut command = build_ungated(input)?;
    let Some(version) = input.engine_version else {
        return Ok((command, Vec::new()));
    };
    let (argv, notes) = super::version::gate(input.engine, version, command.argv);
    command.argv = argv;
    Ok((command, notes))
}

fn build_ungated(input: &CommandInput<'_>) -> Result<EngineCommand, CommandError> {
    let engine = input.engine;
    if input.model.trim().is_empty() {
        return Err(CommandError::EmptyModel);
    }
    if input.tensor_parallel == 0 {
        return Err(CommandError::ZeroTensorParallel);
    }
    let merged = merge(table_of(input), input.recipe_args, input.user_args)?;
    let tensor_parallel = match input.group {
        Some(group) => {
            super::multinode::check_split(engine, group.nnodes, input.tensor_parallel, |name| {
                merged.get(name).and_then(|(_, v)| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
            })?
        }
        None => input.tensor_parallel,
    };

    let mut argv = launcher_words(engine, input.launcher);
    match engine {
        Engine::Vllm => {
            argv.push("serve".into());
            argv.push(input.model.into());
        }
        Engine::Sglang => {
            argv.push("--model-path".into());
            argv.push(input.model.into());
        }
    }
    argv.extend([
        "--host".to_string(),
        "127.0.0.1".to_string(),
        "--port".to_string(),
        input.port.to_string(),
        tp_flag(engine).to_string(),
        tensor_parallel.to_string(),
        "--served-model-name".to_string(),
        served_name(input).to_string(),
    ]);
    if engine == Engine::Vllm {
        argv.extend(input.served_aliases.iter().cloned());
    }
    if let Some(group) = input.group {
        argv.extend(super::multinode::args(engine, group));
    }
    for (name, (logical, value)) in &merged {
        if is_system(engine, name) {
            continue;
        }
        render(&mut argv, logical, value);
    }

    let mut env: IndexMap<String, String> = input
        .recipe_env
        .iter()
        .filter(|(k, _)| k.as_str() != "ROCR_VISIBLE_DEVICES")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !input.ordinals.is_empty() {
        let list = input
            .ordinals
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Remove first so our values come last, after the recipe's env, in a stable order.
        env.shift_remove("HIP_VISIBLE_DEVICES");
        env.shift_remove("CUDA_VISIBLE_DEVICES");
        env.insert("HIP_VISIBLE_DEVICES".into(), list.clone());
        env.insert("CUDA_VISIBLE_DEVICES".into(), list);
    }
    Ok(EngineCommand { argv, env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::build_command;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(pairs: &[(&str, Value)]) -> IndexMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    }

    struct Case {
        engine: Engine,
        recipe: IndexMap<String, Value>,
        user: IndexMap<String, Value>,
        env: IndexMap<String, String>,
        ordinals: Vec<u32>,
        launcher: Option<&'static str>,
    }

    impl Case {
        fn new(engine: Engine) -> Self {
            Case {
                engine,
                recipe: IndexMap::new(),
                user: IndexMap::new(),
                env: IndexMap::new(),
                ordinals: vec![0, 1],
                launcher: None,
            }
        }
        fn build(&self) -> Result<EngineCommand, CommandError> {
            build_command(&CommandInput {
                engine: self.engine,
                model: "Qwen/Qwen3-32B",
                served_model_name: "qwen3",
                served_aliases: &[],
                port: 8001,
                tensor_parallel: 2,
                recipe_args: &self.recipe,
                user_args: &self.user,
                recipe_env: &self.env,
                ordinals: &self.ordinals,
                launcher: self.launcher,
                engine_version: None,
                group: None,
            })
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const VLLM_HEAD: &str = "vllm serve Qwen/Qwen3-32B --host 127.0.0.1 --port 8001 \
        --tensor-parallel-size 2 --served-model-name qwen3";
    const SGLANG_HEAD: &str = "python3 -m sglang.launch_server --model-path Qwen/Qwen3-32B \
        --host 127.0.0.1 --port 8001 --tp-size 2 --served-model-name qwen3";

    #[test]
    fn base_argv_per_engine() {
        let v = Case::new(Engine::Vllm).build().expect("vllm");
        assert_eq!(v.argv, words(VLLM_HEAD));
        let s = Case::new(Engine::Sglang).build().expect("sglang");
        assert_eq!(s.argv, words(SGLANG_HEAD));
    }

    #[test]
    fn value_kinds_render() {
        // (key, value, rendered tail after the system flags)
        let table: Vec<(&str, Value, Vec<&str>)> = vec![
            ("enforce-eager", Value::Null, vec!["--enforce-eager"]),
            ("enforce-eager", json!(true), vec!["--enforce-eager"]),
            ("enforce-eager", json!(false), vec![]),
            (
                "max-model-len",
                json!(32768),
                vec!["--max-model-len", "32768"],
            ),
            (
                "gpu-memory-utilization",
                json!(0.95),
                vec!["--gpu-memory-utilization", "0.95"],
            ),
            ("dtype", json!("float16"), vec!["--dtype", "float16"]),
            // vLLM's allowed-origins is JSON text (json.loads): a list is one argument.
            (
                "allowed-origins",
                json!(["a", 1, "b"]),
                vec!["--allowed-origins", r#"["a",1,"b"]"#],
            ),
            (
                "middleware",
                json!(["a.B", "c.D"]),
                vec!["--middleware", "a.B", "c.D"],
            ),
            ("middleware", json!([]), vec![]),
            (
                "compilation-config",
                json!({"cudagraph_mode": "FULL_AND_PIECEWISE", "mode": 3}),
                vec![
                    "--compilation-config",
                    r#"{"cudagraph_mode":"FULL_AND_PIECEWISE","mode":3}"#,
                ],
            ),
            (
                "distributed_executor_backend",
                json!("mp"),
                vec!["--distributed-executor-backend", "mp"],
            ),
            (
                "no-enable-prefix-caching",
                Value::Null,
                vec!["--no-enable-prefix-caching"],
            ),
            ("-q", json!("fp8"), vec!["--quantization", "fp8"]),
            // In vLLM 0.32.0 `-O3` is `--optimization-level 3`.
            ("O", json!(3), vec!["--optimization-level", "3"]),
            (
                "compilation_config.cudagraph_mode",
                json!("FULL"),
                vec!["--compilation-config.cudagraph_mode", "FULL"],
            ),
        ];
        for (key, value, tail) in table {
            let mut case = Case::new(Engine::Vllm);
            case.recipe = map(&[(key, value.clone())]);
            let got = case.build().expect("builds");
            let mut want = words(VLLM_HEAD);
            want.extend(tail.iter().map(|s| (*s).to_string()));
            assert_eq!(got.argv, want, "{key}: {value}");
        }
    }

    #[test]
    fn user_args_merge_over_recipe() {
        let mut case = Case::new(Engine::Vllm);
        case.recipe = map(&[
            ("max-model-len", json!(32768)),
            ("no-enable-prefix-caching", Value::Null),
            ("enforce-eager", Value::Null),
            ("dtype", json!("float16")),
        ]);
        case.user = map(&[
            // Different spelling, same flag: replaces in the recipe's position.
            ("max_model_len", json!(8192)),
            // The positive form of the same setting replaces the `no-` form.
            ("enable-prefix-caching", Value::Null),
            // A user false removes the recipe's flag.
            ("enforce_eager", json!(false)),
            ("seed", json!(7)),
        ]);
        let got = case.build().expect("builds");
        let mut want = words(VLLM_HEAD);
        want.extend(words(
            "--max-model-len 8192 --enable-prefix-caching --dtype float16 --seed 7",
        ));
        assert_eq!(got.argv, want);
    }

    #[test]
    fn system_values_win_over_recipe_and_user() {
        for engine in [Engine::Vllm, Engine::Sglang] {
            let mut case = Case::new(engine);
            let model_key = if engine == Engine::Vllm {
                "model"
            } else {
                "model-path"
            };
            case.recipe = map(&[
                (model_key, json!("other/model")),
                ("port", json!(9999)),
                ("host", json!("0.0.0.0")),
                ("tensor-parallel-size", json!(8)),
                ("dtype", json!("bfloat16")),
            ]);
            case.user = map(&[
                ("served_model_name", json!(["x", "y"])),
                ("tp", json!(4)),
                ("port", json!(1)),
            ]);
            let got = case.build().expect("builds");
            let mut want = words(if engine == Engine::Vllm {
                VLLM_HEAD
            } else {
                SGLANG_HEAD
            });
            want.extend(words("--dtype bfloat16"));
            assert_eq!(got.argv, want, "{engine}");
        }
    }

    #[test]
    fn notes_name_replaced_system_args() {
        let mut case = Case::new(Engine::Vllm);
        case.recipe = map(&[("port", json!(8000)), ("tensor-parallel-size", json!(2))]);
        case.user = map(&[("tp", json!(4))]);
        let (command, notes) = build_with_notes(&CommandInput {
            engine: Engine::Vllm,
            model: "m",
            served_model_name: "m",
            served_aliases: &[],
            port: 8001,
            tensor_parallel: 2,
            recipe_args: &case.recipe,
            user_args: &case.user,
            recipe_env: &case.env,
            ordinals: &[0, 1],
            launcher: None,
            engine_version: None,
            group: None,
        })
        .expect("builds");
        assert!(command.argv.contains(&"8001".to_string()));
        assert_eq!(
            notes,
            vec![
                "recipe arg `port: 8000` replaced by the system value `8001`",
                "user arg `tp: 4` replaced by the system value `2`",
            ]
        );
    }

    #[test]
    fn requested_tp_reads_any_spelling() {
        for (engine, key, value, want) in [
            (Engine::Vllm, "tensor_parallel_size", json!(4), Some(4)),
            (Engine::Vllm, "tp", json!("8"), Some(8)),
            (Engine::Sglang, "tp-size", json!(2), Some(2)),
            (Engine::Vllm, "dtype", json!("half"), None),
        ] {
            assert_eq!(
                requested_tensor_parallel(engine, &map(&[(key, value)])),
                want,
                "{key}"
            );
        }
    }

    #[test]
    fn env_recipe_then_visible_devices() {
        let mut case = Case::new(Engine::Vllm);
        case.ordinals = vec![4, 5, 6, 7];
        case.env = [
            ("HIP_VISIBLE_DEVICES", "0"),
            ("VLLM_ROCM_USE_AITER", "1"),
            ("ROCR_VISIBLE_DEVICES", "3"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        let got = case.build().expect("builds");
        let env: Vec<(&str, &str)> = got
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("VLLM_ROCM_USE_AITER", "1"),
                ("HIP_VISIBLE_DEVICES", "4,5,6,7"),
                ("CUDA_VISIBLE_DEVICES", "4,5,6,7"),
            ]
        );
        case.ordinals.clear();
        let got = case.build().expect("builds");
        assert!(!got.env.contains_key("CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn no_trust_remote_code_unless_asked() {
        let plain = Case::new(Engine::Vllm).build().expect("builds");
        assert!(!plain.argv.iter().any(|a| a.contains("trust-remote-code")));
        let mut case = Case::new(Engine::Vllm);
        case.recipe = map(&[("trust-remote-code", Value::Null)]);
        let asked = case.build().expect("builds");
        assert_eq!(
            asked.argv.last().map(String::as_str),
            Some("--trust-remote-code")
        );
    }

    #[test]
    fn launcher_override() {
        let mut case = Case::new(Engine::Vllm);
        case.launcher = Some("  /opt/fake-engine  --mode vllm ");
        let got = case.build().expect("builds");
        assert_eq!(
            &got.argv[..4],
            &words("/opt/fake-engine --mode vllm serve")[..]
        );
        let mut case = Case::new(Engine::Sglang);
        case.launcher = Some("fake");
        let got = case.build().expect("builds");
        assert_eq!(
            &got.argv[..3],
            &words("fake --model-path Qwen/Qwen3-32B")[..]
        );
        case.launcher = Some("   ");
        let got = case.build().expect("builds");
        assert_eq!(got.argv, words(SGLANG_HEAD));
    }

    #[test]
    fn unknown_flags_are_rejected_with_suggestion() {
        let mut case = Case::new(Engine::Vllm);
        case.user = map(&[("gpu-memory-utilisation", json!(0.9))]);
        let err = case.build().expect_err("typo");
        assert_eq!(
            err,
            CommandError::UnknownFlag {
                engine: Engine::Vllm,
                version: "0.32.0".into(),
                flag: "gpu-memory-utilisation".into(),
                origin: "user",
                suggestion: Some("gpu-memory-utilization".into()),
            }
        );
        assert!(
            err.to_string()
                .contains("did you mean `gpu-memory-utilization`")
        );
        // A vLLM-only flag in an SGLang recipe.
        let mut case = Case::new(Engine::Sglang);
        case.recipe = map(&[("gpu-memory-utilization", json!(0.9))]);
        assert!(matches!(
            case.build(),
            Err(CommandError::UnknownFlag {
                origin: "recipe",
                ..
            })
        ));
    }

    #[test]
    fn blank_served_name_falls_back_to_model() {
        let recipe = IndexMap::new();
        let env = IndexMap::new();
        let input = CommandInput {
            engine: Engine::Vllm,
            model: "/models/qwen",
            served_model_name: "",
            served_aliases: &[],
            port: 1,
            tensor_parallel: 1,
            recipe_args: &recipe,
            user_args: &recipe,
            recipe_env: &env,
            ordinals: &[0],
            launcher: None,
            engine_version: None,
            group: None,
        };
        let got = build_command(&input).expect("builds");
        assert_eq!(
            got.argv,
            words(
                "vllm serve /models/qwen --host 127.0.0.1 --port 1 --tensor-parallel-size 1 --served-model-name /models/qwen"
            )
        );
    }

    #[test]
    fn served_aliases_follow_the_name_on_vllm_only() {
        let (none, env) = (IndexMap::new(), IndexMap::new());
        let aliases = vec!["/models/qwen".to_string()];
        for (engine, want) in [
            (
                Engine::Vllm,
                "vllm serve /models/qwen --host 127.0.0.1 --port 1 --tensor-parallel-size 1 --served-model-name qwen /models/qwen",
            ),
            (
                Engine::Sglang,
                "python3 -m sglang.launch_server --model-path /models/qwen --host 127.0.0.1 --port 1 --tp-size 1 --served-model-name qwen",
            ),
        ] {
            let input = CommandInput {
                engine,
                model: "/models/qwen",
                served_model_name: "qwen",
                served_aliases: &aliases,
                port: 1,
                tensor_parallel: 1,
                recipe_args: &none,
                user_args: &none,
                recipe_env: &env,
                ordinals: &[0],
                launcher: None,
                engine_version: None,
                group: None,
            };
            assert_eq!(build_command(&input).expect("builds").argv, words(want));
        }
    }

    /// A known key with a value of the kind it takes: switches get null/true/false, plain
    /// string options any scalar, list options a list, JSON options a map.
    fn arg_strategy(engine: Engine) -> impl Strategy<Value = (String, Value)> {
        let opts: Vec<(String, table::Kind)> = table::newest(engine)
            .options
            .iter()
            // `api-key` is known but refused (`CommandError::ApiKeyArg`).
            .filter(|o| {
                o.name != "api-key"
                    && o.choices.is_none()
                    && matches!(
                        o.value_type,
                        table::ValueType::Str | table::ValueType::None | table::ValueType::Json
                    )
            })
            .map(|o| (o.name.clone(), o.kind))
            .collect();
        (
            proptest::sample::select(opts),
            any::<bool>(),
            any::<u8>(),
            "[a-z0-9]([a-z0-9 _.-]{0,7})?",
        )
            .prop_map(|((name, kind), under, n, text)| {
                let value = match kind {
                    table::Kind::Flag | table::Kind::BoolOptional => match n % 3 {
                        0 => Value::Null,
                        1 => json!(true),
                        _ => json!(false),
                    },
                    table::Kind::Value if n % 2 == 0 => json!(n),
                    table::Kind::Value => Value::String(text),
                    table::Kind::List => json!([text, n]),
                    table::Kind::Json => json!({ "k": n }),
                };
                let key = if under { name.replace('-', "_") } else { name };
                (key, value)
            })
    }

    proptest! {
        /// Any known keys with any values: builds, the head is fixed, every flag after it
        /// is known and appears once.
        #[test]
        fn any_known_args_build_cleanly(
            sglang in any::<bool>(),
            recipe in proptest::collection::vec(arg_strategy(Engine::Vllm), 0..8),
            srecipe in proptest::collection::vec(arg_strategy(Engine::Sglang), 0..8),
            user in proptest::collection::vec(arg_strategy(Engine::Vllm), 0..4),
        ) {
            let (engine, recipe, user) = if sglang {
                (Engine::Sglang, srecipe, Vec::new())
            } else {
                (Engine::Vllm, recipe, user)
            };
            let mut case = Case::new(engine);
            case.recipe = recipe.into_iter().collect();
            case.user = user.into_iter().collect();
            let got = case.build().expect("known flags build");
            let head = words(if sglang { SGLANG_HEAD } else { VLLM_HEAD });
            prop_assert_eq!(&got.argv[..head.len()], &head[..]);
            let mut seen = std::collections::HashSet::new();
            for token in got.argv.iter().skip(head.len()) {
                // JSON objects and list values never start with `--`.
                if let Some(flag) = token.strip_prefix("--") {
                    let logical = flags::logical(engine, flag);
                    prop_assert!(logical.is_some(), "unknown {}", flag);
                    let name = logical.map(|l| l.name).unwrap_or_default();
                    prop_assert!(seen.insert(name.clone()), "duplicate {}", name);
                    prop_assert!(!system_flags(engine).contains(&name.as_str()));
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let recipe = IndexMap::new();
        let env = IndexMap::new();
        let base = CommandInput {
            engine: Engine::Vllm,
            model: " ",
            served_model_name: "x",
            served_aliases: &[],
            port: 1,
            tensor_parallel: 1,
            recipe_args: &recipe,
            user_args: &recipe,
            recipe_env: &env,
            ordinals: &[],
            launcher: None,
            engine_version: None,
            group: None,
        };
        assert_eq!(build_command(&base), Err(CommandError::EmptyModel));
        let zero = CommandInput {
            model: "m",
            tensor_parallel: 0,
            ..base
        };
        assert_eq!(build_command(&zero), Err(CommandError::ZeroTensorParallel));
    }
}
