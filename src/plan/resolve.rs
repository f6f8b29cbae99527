//! The IO shell around the pure planner: validates the model id, reads the recipe folders,
//! the Hugging Face cache and the environment, detects the GPUs, and hands the planner a
//! `PlanInput`. `serve`, `plan`, `dry-run`, `recipes` and `launch` all plan through here.
//!
//! Failures are `ResolveError`s; each says which exit status it ends the process with (usage
//! errors -> exit::USAGE, nothing fits -> exit::NO_FIT).

use super::{Launchers, Plan, PlanError, PlanInput, Planned, RecipeVerdict, Want};
use crate::exit::{self, ExitError};
use crate::gpu::{self, GpuError, Topology, VisibilityEnv};
use crate::model::{self, ModelIdError, ModelRef, cache};
use crate::recipe::RecipeError;
use crate::recipe::load::{self, SearchPath};
use crate::types::{Choice, Engine, Metric, Precision};
use indexmap::IndexMap;
use serde_json::Value;
use std::path::PathBuf;

/// Where the GPUs and the recipes are read from (the library's form of the global flags).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Filesystem root under which /sys and /dev are read.
    pub root: PathBuf,
    /// Extra recipe folders, searched before the built-in one.
    pub recipes_dir: Vec<PathBuf>,
    /// The built-in recipe folder, when not the default.
    pub builtin_recipes: Option<PathBuf>,
}

/// What to serve and the user's constraints on how (the library's form of the selection
/// flags of `serve`, `plan`, `dry-run`, `recipes` and `launch`).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Hugging Face model id (`org/name`) or an absolute path to a local model folder.
    pub model: Option<String>,
    /// Number of GPUs (tensor-parallel size).
    pub gpu_count: Option<Choice<u32>>,
    pub precision: Choice<Precision>,
    pub backend: Choice<Engine>,
    pub metric: Choice<Metric>,
    /// Use exactly this recipe id.
    pub recipe: Option<String>,
    /// Pretend the GPUs are this product when matching recipes.
    pub gpu_model: Option<String>,
    /// JSON object of engine flags merged over the recipe's.
    pub engine_args: Option<String>,
    /// Loopback port the engine listens on (default: the public port + 1).
    pub engine_port: Option<u16>,
}

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
pub fn resolve(g: &Sources, select: &Request, public_port: u16) -> Result<Plan, ResolveError> {
    let topology = detect(g)?;
    Ok(plan_on(&topology, g, select, public_port)?.plan)
}

/// Plans on an already-detected topology (e.g. the subset of the host's GPUs that no other
/// container holds).
pub fn plan_on(
    topology: &Topology,
    g: &Sources,
    select: &Request,
    public_port: u16,
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
    g: &Sources,
    select: &Request,
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

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// GPU detection under `--root` with our own visibility variables.
pub fn detect(g: &Sources) -> Result<Topology, ResolveError> {
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

fn want_of(s: &Request) -> Want {
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

fn search_path(g: &Sources) -> SearchPath {
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

    fn global() -> Sources {
        Sources {
            root: "/nonexistent".into(),
            recipes_dir: vec![],
            builtin_recipes: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/recipes").into()),
        }
    }

    fn select(model: &str) -> Request {
        Request {
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
