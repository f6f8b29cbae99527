//! `aim-engine plan`, `dry-run`, `recipes`. OWNER: recipe helper.
//! CONTRACT: `resolve` is used by `serve` and `launch`; `plan_on` plans on a given topology
//! (the host side plans on the GPUs no other container holds).
//!
//! This is the IO shell around `plan::plan`: it validates the model id, reads the recipe
//! folders, the Hugging Face cache and the environment, and turns planning errors into exit
//! statuses (usage errors -> exit::USAGE, nothing fits -> exit::NO_FIT).

use crate::cli::{Format, GlobalArgs, PlanArgs, SelectArgs};
use crate::exit::{self, ExitError};
use crate::gpu::{self, Topology, VisibilityEnv};
use crate::model::{self, ModelRef, cache};
use crate::plan::{self, Launchers, Plan, PlanError, PlanInput, Planned, RecipeVerdict, Want};
use crate::recipe::load::{self, SearchPath};
use indexmap::IndexMap;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Detects, loads and selects: the plan `serve` and `launch` act on.
pub fn resolve(g: &GlobalArgs, select: &SelectArgs, public_port: u16) -> anyhow::Result<Plan> {
    let topology = detect(g)?;
    Ok(plan_on(&topology, g, select, public_port)?.plan)
}

/// Plans on an already-detected topology (e.g. a subset of the host's GPUs).
pub fn plan_on(
    topology: &Topology,
    g: &GlobalArgs,
    select: &SelectArgs,
    public_port: u16,
) -> anyhow::Result<Planned> {
    let model_text = select.model.as_deref().ok_or_else(|| {
        ExitError::new(
            exit::USAGE,
            "no model given: pass MODEL (e.g. `Qwen/Qwen3-32B`) or set AIM_MODEL_ID",
        )
    })?;
    let model_ref = validated_model(model_text)?;
    let want = want_of(select);
    let user_args = parse_engine_args(select.engine_args.as_deref())?;
    let sp = search_path(g);
    let recipes = load::load_for_model(&sp, model_ref.hub_id())
        .map_err(|e| ExitError::new(exit::USAGE, format!("bad recipe: {e}")))?;
    let (facts, _) = cache::read_facts(&model_ref, &cache::process_env);
    let launchers = Launchers {
        vllm: env_nonempty("AIM_VLLM_COMMAND"),
        sglang: env_nonempty("AIM_SGLANG_COMMAND"),
    };
    let engine_port = match select.engine_port {
        Some(p) => p,
        None => public_port.checked_add(1).ok_or_else(|| {
            ExitError::new(
                exit::USAGE,
                "the public port is 65535, so the engine port (public + 1) does not exist; set --engine-port",
            )
        })?,
    };
    if engine_port == public_port {
        return Err(ExitError::new(
            exit::USAGE,
            format!("the engine port and the public port are both {public_port}; pick another --engine-port"),
        )
        .into());
    }
    // `hf://org/name` (AIM's spelling) is served, matched and loaded as `org/name`.
    let checkpoint = model_ref.name();
    let input = PlanInput {
        topology,
        model: &checkpoint,
        checkpoint: &checkpoint,
        facts: &facts,
        recipes: &recipes,
        want: &want,
        user_args: &user_args,
        launchers: &launchers,
        engine_port,
    };
    plan::plan(&input).map_err(|e| {
        let code = match e {
            PlanError::NoGpu(_) | PlanError::NoFit(_) => exit::NO_FIT,
            PlanError::UnknownRecipe(_) | PlanError::Command(_) => exit::USAGE,
        };
        ExitError::new(code, e.to_string()).into()
    })
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// GPU detection under `--root` with our own visibility variables.
pub fn detect(g: &GlobalArgs) -> anyhow::Result<Topology> {
    gpu::detect(&g.root, &VisibilityEnv::from_process_env()).map_err(|e| {
        ExitError::new(
            e.exit_code(),
            format!("cannot use the GPUs under {}: {e}", g.root.display()),
        )
        .into()
    })
}

fn validated_model(text: &str) -> anyhow::Result<ModelRef> {
    let m = model::parse_model_id(text).map_err(|e| ExitError::new(exit::USAGE, e.to_string()))?;
    if let ModelRef::Local(p) = &m
        && !p.is_dir()
    {
        return Err(ExitError::new(
            exit::USAGE,
            format!(
                "invalid model `{text}`: no such local folder; give an existing absolute folder or a Hugging Face id like `Qwen/Qwen3-32B`"
            ),
        )
        .into());
    }
    Ok(m)
}

fn want_of(s: &SelectArgs) -> Want {
    Want {
        gpu_count: s.gpu_count.and_then(|c| c.get()),
        precision: s.precision.get(),
        engine: s.backend.get(),
        metric: s.metric.get(),
        recipe: s.recipe.clone().filter(|r| !r.trim().is_empty()),
        gpu_model: s
            .gpu_model
            .clone()
            .filter(|m| !m.trim().is_empty() && !m.eq_ignore_ascii_case("none")),
    }
}

/// `--engine-args` / AIM_ENGINE_ARGS: a JSON object of engine flags.
pub fn parse_engine_args(text: Option<&str>) -> anyhow::Result<IndexMap<String, Value>> {
    let Some(t) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(IndexMap::new());
    };
    let bad = |why: String| {
        ExitError::new(
            exit::USAGE,
            format!(
                "--engine-args / AIM_ENGINE_ARGS must be a JSON object of engine flags, e.g. '{{\"max-model-len\": 8192}}': {why}"
            ),
        )
    };
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(other) => Err(bad(format!("got {}", json_kind(&other))).into()),
        Err(e) => Err(bad(format!("not valid JSON ({e})")).into()),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn search_path(g: &GlobalArgs) -> SearchPath {
    let exe = std::env::current_exe().ok();
    SearchPath {
        extra: g.recipes_dir.clone(),
        builtin: load::builtin_dir(g.builtin_recipes.as_deref(), exe.as_deref()),
    }
}

/// `aim-engine plan`.
pub fn plan(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    let topology = detect(g)?;
    let p = plan_on(&topology, g, &a.select, a.port)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&p))?),
        Format::Text => print!("{}", plan_text(&p)),
    }
    Ok(exit::OK)
}

/// The `plan --format json` document (stable names; see the README).
pub fn plan_json(p: &Planned) -> Value {
    let l = &p.plan.launches[0];
    let s = &p.sources[0];
    let m = &s.recipe.metadata;
    json!({
        "model": p.plan.model,
        "gpus": {
            "usable": p.plan.usable_gpus,
            "selected": l.gpus.iter().map(|g| g.ordinal).collect::<Vec<_>>(),
            "product": p.plan.product,
            "gfx": p.plan.gfx,
        },
        "recipe": {
            "id": s.id,
            "path": s.path.as_ref().map(|p| p.display().to_string()),
            "engine": m.engine,
            "gpu_count": m.gpu_count,
            "precision": m.precision,
            "metric": m.metric,
            "type": m.kind,
        },
        "reasons": p.plan.reasons,
        "fallbacks": p.sources[1..].iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "command": { "argv": l.argv, "env": l.env },
    })
}

/// Quotes a word for a POSIX shell when it needs it (display only; nothing runs a shell).
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

fn plan_text(p: &Planned) -> String {
    let mut o = String::new();
    let l = &p.plan.launches[0];
    let s = &p.sources[0];
    let m = &s.recipe.metadata;
    let _ = writeln!(o, "Plan for {}", p.plan.model);
    let _ = writeln!(
        o,
        "  GPUs:    {} usable {} ({}); this plan uses {}",
        p.plan.usable_gpus,
        p.plan.product.as_deref().unwrap_or("?"),
        p.plan.gfx.as_deref().unwrap_or("?"),
        l.gpus
            .iter()
            .map(|g| g.ordinal.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        o,
        "  Recipe:  {} ({}, {}, {} GPU(s), {}, {})",
        s.id, m.kind, m.engine, m.gpu_count, m.precision, m.metric
    );
    if let Some(path) = &s.path {
        let _ = writeln!(o, "           {}", path.display());
    }
    let _ = writeln!(o, "Why:");
    for r in &p.plan.reasons {
        let _ = writeln!(o, "  - {r}");
    }
    if p.sources.len() > 1 {
        let _ = writeln!(
            o,
            "Fallbacks, in order (used when a failure says this recipe cannot work):"
        );
        for (i, (s, l)) in p.sources.iter().zip(&p.plan.launches).enumerate().skip(1) {
            let m = &s.recipe.metadata;
            let _ = writeln!(
                o,
                "  {i}. {} ({}, {} GPU(s) [{}], {}, {})",
                s.id,
                m.engine,
                m.gpu_count,
                l.gpus
                    .iter()
                    .map(|g| g.ordinal.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                m.precision,
                m.metric
            );
        }
    }
    let _ = writeln!(o, "Command (engine on 127.0.0.1:{}):", l.engine_port);
    for (k, v) in &l.env {
        let _ = writeln!(o, "  {k}={}", shell_quote(v));
    }
    let argv: Vec<String> = l.argv.iter().map(|w| shell_quote(w)).collect();
    let _ = writeln!(o, "  {}", argv.join(" "));
    o
}

/// `aim-engine dry-run`: the AIM operator's JSON shape (text: a shell script for humans).
pub fn dry_run(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    let topology = detect(g)?;
    let p = plan_on(&topology, g, &a.select, a.port)?;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&dry_run_json(&p, &a.select)?)?
        ),
        Format::Text => {
            let l = &p.plan.launches[0];
            println!(
                "#!/bin/sh\n# aim-engine dry-run: recipe {}\nset -e",
                p.sources[0].id
            );
            for (k, v) in &l.env {
                println!("export {k}={}", shell_quote(v));
            }
            let argv: Vec<String> = l.argv.iter().map(|w| shell_quote(w)).collect();
            println!("exec {}", argv.join(" "));
        }
    }
    Ok(exit::OK)
}

fn dry_run_json(p: &Planned, select: &SelectArgs) -> anyhow::Result<Value> {
    let s = &p.sources[0];
    let mut args = s.recipe.engine_args.clone();
    for (k, v) in parse_engine_args(select.engine_args.as_deref())? {
        args.insert(k, v);
    }
    let filename = match &s.path {
        Some(path) => path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        None => format!("{}.yaml", s.id),
    };
    let source = if s.checkpoint.starts_with('/') {
        s.checkpoint.clone()
    } else {
        format!("hf://{}", s.checkpoint)
    };
    let size_gb = p
        .weight_bytes
        .map(|b| (b as f64 / 1e9 * 10.0).round() / 10.0);
    Ok(json!([{
        "filename": filename,
        "profile": {
            "model": s.checkpoint,
            "metadata": s.recipe.metadata,
            "engine_args": args,
            "env_vars": s.recipe.env_vars,
        },
        "models": [{ "name": s.checkpoint, "source": source, "size_gb": size_gb }],
    }]))
}

/// `aim-engine recipes [MODEL]`: every recipe with its verdict on this host.
pub fn recipes(g: &GlobalArgs, a: &PlanArgs) -> anyhow::Result<u8> {
    // A host without GPUs still gets the list (everything is then gpu_mismatch).
    let topology = detect(g).unwrap_or_default();
    let sp = search_path(g);
    let want = want_of(&a.select);
    let (rows, model) = match a.select.model.as_deref() {
        Some(text) => {
            let m = validated_model(text)?;
            let recipes = load::load_for_model(&sp, m.hub_id())
                .map_err(|e| ExitError::new(exit::USAGE, format!("bad recipe: {e}")))?;
            let (facts, _) = cache::read_facts(&m, &cache::process_env);
            let name = m.name();
            (
                plan::assess_all(&topology, Some(&name), Some(&facts), &recipes, &want),
                Some(name),
            )
        }
        None => {
            let recipes = load::load_all(&sp)
                .map_err(|e| ExitError::new(exit::USAGE, format!("bad recipe: {e}")))?;
            (
                plan::assess_all(&topology, None, None, &recipes, &want),
                None,
            )
        }
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => print!("{}", recipes_text(&rows, model.as_deref(), &topology)),
    }
    Ok(exit::OK)
}

fn recipes_text(rows: &[RecipeVerdict], model: Option<&str>, t: &Topology) -> String {
    let mut o = String::new();
    let usable = plan::usable_gpus(t);
    let host = match usable.first() {
        Some(g) => format!("{} x {} ({})", usable.len(), g.product, g.gfx),
        None => "no usable GPU".into(),
    };
    let _ = writeln!(
        o,
        "{} recipe(s){} on this host: {host}",
        rows.len(),
        model.map(|m| format!(" for {m}")).unwrap_or_default()
    );
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        o,
        "{:<w$}  {:<7} {:<7} {:>4} {:<5} {:<10} {:<11} VERDICT",
        "ID", "ENGINE", "GPU", "N", "PREC", "METRIC", "TYPE"
    );
    for r in rows {
        let detail = if r.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.detail)
        };
        let _ = writeln!(
            o,
            "{:<w$}  {:<7} {:<7} {:>4} {:<5} {:<10} {:<11} {}{detail}",
            r.id,
            r.engine.as_str(),
            r.gpu,
            r.gpu_count,
            r.precision.as_str(),
            r.metric.as_str(),
            r.kind.as_str(),
            r.verdict.as_str()
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_args_must_be_an_object() {
        let ok =
            parse_engine_args(Some(r#"{"max-model-len": 8192, "enforce-eager": null}"#)).unwrap();
        assert_eq!(
            ok.keys().collect::<Vec<_>>(),
            vec!["max-model-len", "enforce-eager"]
        );
        assert!(parse_engine_args(None).unwrap().is_empty());
        assert!(parse_engine_args(Some("  ")).unwrap().is_empty());
        for (bad, words) in [
            ("[1,2]", "an array"),
            ("\"x\"", "a string"),
            ("{oops", "not valid JSON"),
        ] {
            let e = parse_engine_args(Some(bad)).unwrap_err();
            assert_eq!(exit::code_of(&e), exit::USAGE);
            assert!(e.to_string().contains(words), "{e}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--port"), "--port");
        assert_eq!(shell_quote(r#"{"a": 1}"#), r#"'{"a": 1}'"#);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    fn global() -> GlobalArgs {
        GlobalArgs {
            root: "/nonexistent".into(),
            recipes_dir: vec![],
            builtin_recipes: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/recipes").into()),
            log_format: crate::cli::LogFormat::Text,
            log_level: "info".into(),
            log_buffer: crate::logging::DEFAULT_CAPACITY,
        }
    }

    fn select(model: &str) -> SelectArgs {
        SelectArgs {
            model: Some(model.into()),
            gpu_count: None,
            precision: crate::types::Choice::Auto,
            backend: crate::types::Choice::Auto,
            metric: crate::types::Choice::Auto,
            recipe: None,
            gpu_model: None,
            engine_args: None,
            engine_port: None,
        }
    }

    /// The host side plans on the GPUs no other container holds: a subset of the host's.
    #[test]
    fn plan_on_a_subset_of_gpus() {
        let gpus: Vec<gpu::Gpu> = [5u32, 6]
            .iter()
            .map(|&i| gpu::Gpu {
                pci: format!("0000:{i:02x}:00.0"),
                numa_node: Some(1),
                ..gpu::Gpu::mi300x(i)
            })
            .collect();
        let t = Topology {
            gpus,
            ..Default::default()
        };
        let p = plan_on(&t, &global(), &select("Qwen/Qwen3-32B"), 8100).unwrap();
        let l = &p.plan.launches[0];
        assert_eq!(l.recipe_id, "vllm-mi300x-bf16-tp2-latency");
        assert_eq!(
            l.gpus.iter().map(|g| g.ordinal).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(l.engine_port, 8101);
        assert!(p.plan.launches.iter().all(|l| l.gpu_count <= 2));
        // Usage errors carry exit::USAGE, nothing-fits carries exit::NO_FIT.
        let e = plan_on(&t, &global(), &select("bad id"), 8100).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::USAGE);
        let mut four = select("Qwen/Qwen3-32B");
        four.gpu_count = Some(crate::types::Choice::Is(4));
        let e = plan_on(&t, &global(), &four, 8100).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::NO_FIT);
        let e = plan_on(&t, &global(), &select("Qwen/Qwen3-32B"), 65535).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::USAGE);
    }
}
