//! The IO shell around the pure planner: validates the model id, reads the recipe folders,
//! the Hugging Face cache and the environment, detects the GPUs, and hands the planner a
//! `PlanInput`. `serve`, `plan`, `dry-run`, `recipes` and `launch` all plan through here.
//!
//! Failures are `ResolveError`s; each says which exit status it ends the process with (usage
//! errors -> exit::USAGE, nothing fits -> exit::NO_FIT).

use super::{Launchers, Plan, PlanError, PlanInput, Planned, RecipeVerdict, Want};
use crate::cli::{GlobalArgs, SelectArgs};
use crate::engine::EngineVersions;
use crate::exit::{self, ExitError};
use crate::gpu::{self, GpuError, Topology, VisibilityEnv};
use crate::model::{self, ModelIdError, ModelRef, cache};
use crate::recipe::RecipeError;
use crate::recipe::load::{self, SearchPath};
use crate::types::Engine;
use indexmap::IndexMap;
use serde_json::Value;
use std::path::PathBuf;

/// Why no plan could be made for a request on this machine.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no model given: pass MODEL (e.g. `Qwen/Qwen3-32B`) or set AIM_MODEL_ID")]
    NoModel,
    #[error(transparent)]
    ModelId(#[from] ModelIdError),
    #[error(
        "invalid model `{0}`: no such local folder; give an existing absolute folder or a Hugging Face id like `Qwen/Qwen3-32B`"
    )]
    NoLocalFolder(String),
    #[error(
        "--engine-args / AIM_ENGINE_ARGS must be a JSON object of engine flags, e.g. '{{\"max-model-len\": 8192}}': {0}"
    )]
    EngineArgs(EngineArgsError),
    #[error("bad recipe: {0}")]
    Recipe(#[from] RecipeError),
    #[error(
        "the public port is 65535, so the engine port (public + 1) does not exist; set --engine-port"
    )]
    NoEnginePort,
    #[error("the engine port and the public port are both {0}; pick another --engine-port")]
    SamePorts(u16),
    #[error("cannot use the GPUs under {}: {source}", root.display())]
    Gpus { root: PathBuf, source: GpuError },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What is wrong with `--engine-args`.
#[derive(Debug, thiserror::Error)]
pub enum EngineArgsError {
    #[error("got {0}")]
    NotAnObject(&'static str),
    #[error("not valid JSON ({0})")]
    NotJson(serde_json::Error),
}

impl ResolveError {
    /// The exit status this failure ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ResolveError::Gpus { source, .. } => source.exit_code(),
            ResolveError::Plan(PlanError::NoGpu(_) | PlanError::NoFit { .. }) => exit::NO_FIT,
            ResolveError::Plan(PlanError::UnknownRecipe { .. } | PlanError::Command { .. })
            | ResolveError::NoModel
            | ResolveError::ModelId(_)
            | ResolveError::NoLocalFolder(_)
            | ResolveError::EngineArgs(_)
            | ResolveError::Recipe(_)
            | ResolveError::NoEnginePort
            | ResolveError::SamePorts(_) => exit::USAGE,
        }
    }
}

impl From<ResolveError> for ExitError {
    fn from(e: ResolveError) -> Self {
        ExitError::new(e.exit_code(), e.to_string())
    }
}

/// Detects, loads and selects: the plan `serve` acts on.
pub fn resolve(
    g: &GlobalArgs,
    select: &SelectArgs,
    public_port: u16,
) -> Result<Plan, ResolveError> {
    let topology = detect(g)?;
    Ok(plan_on(&topology, g, select, public_port)?.plan)
}

/// Plans on an already-detected topology (e.g. the subset of the host's GPUs that no other
/// container holds).
pub fn plan_on(
    topology: &Topology,
    g: &GlobalArgs,
    select: &SelectArgs,
    public_port: u16,
) -> Result<Planned, ResolveError> {
    plan_for(topology, g, select, public_port, &EngineVersions::default())
}

/// [`plan_on`] for given engine versions (`plan`/`dry-run --engine-version`): their tables
/// check the args and their version rules apply, with notes in the reasons.
pub fn plan_for(
    topology: &Topology,
    g: &GlobalArgs,
    select: &SelectArgs,
    public_port: u16,
    versions: &EngineVersions,
) -> Result<Planned, ResolveError> {
    let model_text = select.model.as_deref().ok_or(ResolveError::NoModel)?;
    let model_ref = validated_model(model_text)?;
    let want = want_of(select);
    let user_args = parse_engine_args(select.engine_args.as_deref())?;
    let recipes = load::load_for_model(&search_path(g), model_ref.hub_id())?;
    let (facts, _) = cache::read_facts(&model_ref, &cache::process_env);
    let launchers = Launchers {
        vllm: env_nonempty("AIM_VLLM_COMMAND"),
        sglang: env_nonempty("AIM_SGLANG_COMMAND"),
        versions: versions.clone(),
    };
    let engine_port = match select.engine_port {
        Some(p) => p,
        None => public_port
            .checked_add(1)
            .ok_or(ResolveError::NoEnginePort)?,
    };
    if engine_port == public_port {
        return Err(ResolveError::SamePorts(public_port));
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
    Ok(super::decide(&input)?)
}

/// Every recipe's verdict on this host (`recipes [MODEL]`), with the served model name when
/// a model was given.
pub fn verdicts_on(
    topology: &Topology,
    g: &GlobalArgs,
    select: &SelectArgs,
) -> Result<(Vec<RecipeVerdict>, Option<String>), ResolveError> {
    let sp = search_path(g);
    let want = want_of(select);
    Ok(match select.model.as_deref() {
        Some(text) => {
            let m = validated_model(text)?;
            let recipes = load::load_for_model(&sp, m.hub_id())?;
            let (facts, _) = cache::read_facts(&m, &cache::process_env);
            let name = m.name();
            (
                super::assess_all(topology, Some(&name), Some(&facts), &recipes, &want),
                Some(name),
            )
        }
        None => {
            let recipes = load::load_all(&sp)?;
            (
                super::assess_all(topology, None, None, &recipes, &want),
                None,
            )
        }
    })
}

/// Where the engine version a plan is for came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// `--engine-version` / AIM_ENGINE_VERSION.
    Given,
    /// The installed engine's own report (its version probe).
    Installed,
    /// Neither: the newest pinned flag table.
    NewestTable,
}

impl std::fmt::Display for VersionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VersionSource::Given => "--engine-version / AIM_ENGINE_VERSION",
            VersionSource::Installed => "reported by the installed engine",
            VersionSource::NewestTable => {
                "no engine installed here: the newest pinned table; --engine-version or AIM_ENGINE_VERSION to change"
            }
        })
    }
}

/// Runs the engine's version probe (at most [`PROBE_TIMEOUT`]); `None` when there is no
/// probe for its launcher, it is not installed, or it says nothing that parses.
pub fn installed_version(engine: Engine) -> Option<String> {
    let var = match engine {
        Engine::Vllm => "AIM_VLLM_COMMAND",
        Engine::Sglang => "AIM_SGLANG_COMMAND",
    };
    let argv = crate::engine::version_probe(engine, env_nonempty(var).as_deref())?;
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let until = std::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut text).ok()?;
    crate::engine::parse_version_output(&text)
}

/// How long `plan` waits for an engine to report its version.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// GPU detection under `--root` with our own visibility variables.
pub fn detect(g: &GlobalArgs) -> Result<Topology, ResolveError> {
    gpu::detect(&g.root, &VisibilityEnv::from_process_env()).map_err(|source| ResolveError::Gpus {
        root: g.root.clone(),
        source,
    })
}

fn validated_model(text: &str) -> Result<ModelRef, ResolveError> {
    let m = model::parse_model_id(text)?;
    if let ModelRef::Local(p) = &m
        && !p.is_dir()
    {
        return Err(ResolveError::NoLocalFolder(text.to_string()));
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
pub fn parse_engine_args(text: Option<&str>) -> Result<IndexMap<String, Value>, ResolveError> {
    let Some(t) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(IndexMap::new());
    };
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(other) => Err(EngineArgsError::NotAnObject(json_kind(&other))),
        Err(e) => Err(EngineArgsError::NotJson(e)),
    }
    .map_err(ResolveError::EngineArgs)
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
            assert_eq!(e.exit_code(), exit::USAGE);
            assert!(e.to_string().contains(words), "{e}");
            assert!(
                e.to_string()
                    .starts_with("--engine-args / AIM_ENGINE_ARGS must be a JSON object"),
                "{e}"
            );
        }
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
        assert!(matches!(e, ResolveError::ModelId(_)), "{e:?}");
        assert_eq!(e.exit_code(), exit::USAGE);
        let mut four = select("Qwen/Qwen3-32B");
        four.gpu_count = Some(crate::types::Choice::Is(4));
        let e = plan_on(&t, &global(), &four, 8100).unwrap_err();
        assert_eq!(e.exit_code(), exit::NO_FIT);
        let e = plan_on(&t, &global(), &select("Qwen/Qwen3-32B"), 65535).unwrap_err();
        assert!(matches!(e, ResolveError::NoEnginePort), "{e:?}");
        assert_eq!(e.exit_code(), exit::USAGE);
        let mut same = select("Qwen/Qwen3-32B");
        same.engine_port = Some(8100);
        let e = plan_on(&t, &global(), &same, 8100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the engine port and the public port are both 8100; pick another --engine-port"
        );
        let mut none = select("x");
        none.model = None;
        let e = plan_on(&t, &global(), &none, 8100).unwrap_err();
        assert_eq!(ExitError::from(e).code, exit::USAGE);
    }
}
