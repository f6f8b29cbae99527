//! The IO shell around the pure planner: validates the model id, reads the recipe folders,
//! the Hugging Face cache and the environment, detects the GPUs, and hands the planner a
//! `PlanInput`. `serve`, `plan`, `dry-run`, `recipes` and `launch` all plan through here.
//!
//! Failures are `ResolveError`s; each says which exit status it ends the process with (usage
//! errors -> exit::USAGE, nothing fits -> exit::NO_FIT).

pub use super::aim::user_engine_args;
use super::aim::{
    aim_of, aim_profile_id, checkpoint_text, general_off, general_off_note, mark_general_off,
    served_name_of,
};
use super::{Launchers, Plan, PlanError, PlanInput, Planned, RecipeVerdict, Want};
use crate::download::{self, DownloadError};
use crate::engine::EngineVersions;
use crate::exit::{self, ExitError};
use crate::gpu::{self, GpuError, Topology, VisibilityEnv};
use crate::model::{self, HubWeights, ModelFacts, ModelIdError, ModelRef, cache};
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
    /// `--revision`: the Hub branch, tag or commit to serve (None: the engine's default).
    pub revision: Option<String>,
    /// `--size-from-hub`: size a model the cache lacks from the Hub's file listing.
    pub size_from_hub: bool,
    /// AIM_ID (AIM's per-model images): the model whose recipe folder is read and whose
    /// name clients use; also the checkpoint when `model` is not given (`model`, from MODEL
    /// or AIM_MODEL_ID, is then the checkpoint served instead).
    pub aim_id: Option<String>,
    /// AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false: general recipes are used only when asked for
    /// by `--recipe`.
    pub no_general_fallback: bool,
    /// Engine flags after `--` (`-- --max-model-len 8192 --enforce-eager`), merged over
    /// `engine_args`.
    pub engine_flags: Vec<String>,
    /// AIM_CUSTOM_MODEL_NAME / `--served-model-name`: the name clients use.
    pub served_name: Option<String>,
    /// The multi-node group this node is in (`group::from_env`), None for one node.
    pub group: Option<crate::group::Group>,
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
    Revision(download::RevisionError),
    #[error(
        "--revision / AIM_MODEL_REVISION `{revision}` is for a Hugging Face id; {} is a local folder, which has no revisions: unset it",
        folder.display()
    )]
    RevisionOfFolder { revision: String, folder: PathBuf },
    #[error(
        "--revision / AIM_MODEL_REVISION `{revision}` and --engine-args' revision {engine_args} disagree; give the revision once"
    )]
    RevisionsDisagree {
        revision: String,
        engine_args: Value,
    },
    #[error(
        "engine flags after `--`: {0}; write them as the engine takes them, e.g. `-- --max-model-len 8192 --enforce-eager`"
    )]
    EngineFlags(String),
    #[error(
        "AIM_ID `{0}` must be a Hugging Face id (`org/name`): it names the model's recipe folder"
    )]
    AimId(String),
    #[error(
        "--served-model-name / AIM_CUSTOM_MODEL_NAME `{0}` cannot start with `-` (the engine would read it as a flag)"
    )]
    ServedName(String),
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
            ResolveError::Plan(
                PlanError::NoGpu(_) | PlanError::NoFit { .. } | PlanError::NeedsGroup { .. },
            ) => exit::NO_FIT,
            ResolveError::Plan(PlanError::UnknownRecipe { .. } | PlanError::Command { .. })
            | ResolveError::NoModel
            | ResolveError::ModelId(_)
            | ResolveError::NoLocalFolder(_)
            | ResolveError::EngineArgs(_)
            | ResolveError::EngineFlags(_)
            | ResolveError::AimId(_)
            | ResolveError::ServedName(_)
            | ResolveError::Revision(_)
            | ResolveError::RevisionOfFolder { .. }
            | ResolveError::RevisionsDisagree { .. }
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

/// Where the model's size may come from when the cache does not hold the model.
#[derive(Debug, Clone, Copy)]
pub enum HubSizing<'a> {
    /// Ask the Hub when `--size-from-hub` / AIM_SIZE_FROM_HUB is set (this thread waits
    /// for the listing).
    FromArgs,
    /// Already asked (`serve` does it before planning): these weights, or none.
    Given(Option<&'a HubWeights>),
}

/// Detects, loads and selects: the plan `serve` acts on. `hub`: the weights from the Hub's
/// listing `serve` read, used when the model is not in the cache.
pub fn resolve(
    g: &Sources,
    select: &Request,
    public_port: u16,
    hub: Option<&HubWeights>,
) -> Result<Plan, ResolveError> {
    let topology = detect(g)?;
    let p = plan_sized(
        &topology,
        g,
        select,
        public_port,
        HubSizing::Given(hub),
        &EngineVersions::default(),
    )?;
    Ok(p.plan)
}

/// Plans on an already-detected topology (e.g. the subset of the host's GPUs that no other
/// container holds), sizing from the Hub when `--size-from-hub` asks for it.
pub fn plan_on(
    topology: &Topology,
    g: &Sources,
    select: &Request,
    public_port: u16,
) -> Result<Planned, ResolveError> {
    plan_sized(
        topology,
        g,
        select,
        public_port,
        HubSizing::FromArgs,
        &EngineVersions::default(),
    )
}

/// [`plan_on`] for given engine versions (`plan`/`dry-run --engine-version`): their tables
/// check the args and their version rules apply, with notes in the reasons.
pub fn plan_for(
    topology: &Topology,
    g: &Sources,
    select: &Request,
    public_port: u16,
    versions: &EngineVersions,
) -> Result<Planned, ResolveError> {
    plan_sized(
        topology,
        g,
        select,
        public_port,
        HubSizing::FromArgs,
        versions,
    )
}

/// The Hub id to size from the Hub's listing: MODEL when it is a Hub id whose config.json
/// no cache holds. None for a local folder, a cached model or an invalid id (the planner
/// says what is wrong with that).
pub fn uncached_hub_repo(select: &Request) -> Option<String> {
    let m = model::parse_model_id(select.model.as_deref()?).ok()?;
    let ModelRef::Hub(repo) = &m else {
        return None;
    };
    let rev = revision_of(select).ok()?;
    cache::read_facts_at(&m, rev.as_deref().unwrap_or("main"), &cache::process_env)
        .1
        .is_none()
        .then(|| repo.clone())
}

/// `--revision` / AIM_MODEL_REVISION, checked and trimmed; None when unset or blank.
pub fn revision_of(select: &Request) -> Result<Option<String>, ResolveError> {
    check_revision(select).map_err(ResolveError::Revision)
}

fn check_revision(select: &Request) -> Result<Option<String>, download::RevisionError> {
    match select.revision.as_deref().filter(|r| !r.trim().is_empty()) {
        None => Ok(None),
        Some(r) => download::check_revision("--revision / AIM_MODEL_REVISION", r).map(Some),
    }
}

/// Why the options for sizing from the Hub's listing cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SizingError {
    #[error(transparent)]
    Revision(#[from] download::RevisionError),
    #[error(transparent)]
    Env(#[from] download::EnvError),
}

/// The download's options (HF_ENDPOINT, the token, the cache root) for reading `repo`'s
/// listing at `select`'s revision (main by default), with at most 3 tries: sizing is worth
/// a short wait, not a long one.
pub fn sizing_options(repo: &str, select: &Request) -> Result<download::Options, SizingError> {
    let rev = check_revision(select)?.unwrap_or_else(|| "main".into());
    let mut o = download::Options::from_env(repo, &rev, &cache::process_env)?;
    o.tries = o.tries.min(3);
    Ok(o)
}

/// The weights from a sizing answer; why there are none goes to the log, and the model is
/// then sized from its name.
pub fn sized(repo: &str, got: Result<Option<HubWeights>, DownloadError>) -> Option<HubWeights> {
    match got {
        Ok(Some(w)) => {
            tracing::info!(
                "{repo} is not in the cache: sized from the Hub's listing, {} {} file(s) of {} bytes",
                w.files,
                w.format,
                w.bytes
            );
            Some(w)
        }
        Ok(None) => {
            tracing::warn!(
                "the Hub lists no safetensors, .bin or .pt weights for {repo}: it is sized from its name"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "cannot size {repo} from the Hub's listing ({e}): it is sized from its name"
            );
            None
        }
    }
}

/// `--size-from-hub` for the commands that plan without serving: asks the Hub for the
/// weights of `select`'s model when the cache does not hold it (the request runs on a
/// thread of its own; this one waits).
fn hub_weights_from_args(select: &Request) -> Option<HubWeights> {
    if !select.size_from_hub {
        return None;
    }
    let repo = uncached_hub_repo(select)?;
    if download::offline(&cache::process_env) {
        tracing::warn!(
            "--size-from-hub / AIM_SIZE_FROM_HUB: HF_HUB_OFFLINE is set, so the Hub is not asked; {repo} is sized from its name"
        );
        return None;
    }
    let opts = match sizing_options(&repo, select) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(
                "cannot size {repo} from the Hub's listing ({e}): it is sized from its name"
            );
            return None;
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let got = match download::hub_weights_on_thread(opts, move |got| {
        let _ = tx.send(got);
    }) {
        Ok(t) => {
            let got = rx.recv().ok();
            let _ = t.join();
            got
        }
        Err(e) => {
            tracing::warn!("cannot start the thread that asks the Hub for {repo}'s sizes: {e}");
            None
        }
    }?;
    sized(&repo, got)
}

/// The model's facts: the cache's, else (not cached) the Hub listing's weights when there
/// are any, else its name.
fn facts_of(
    model_ref: &ModelRef,
    revision: Option<&str>,
    select: &Request,
    hub: HubSizing<'_>,
) -> ModelFacts {
    let (facts, found) =
        cache::read_facts_at(model_ref, revision.unwrap_or("main"), &cache::process_env);
    if found.is_some() || !matches!(model_ref, ModelRef::Hub(_)) {
        return facts;
    }
    let w = match hub {
        HubSizing::Given(w) => w.cloned(),
        HubSizing::FromArgs => hub_weights_from_args(select),
    };
    match w {
        Some(w) => facts.with_hub_weights(&w),
        None => facts,
    }
}

/// [`plan_on`] with the Hub's sizes as `hub` says.
pub fn plan_sized(
    topology: &Topology,
    g: &Sources,
    select: &Request,
    public_port: u16,
    hub: HubSizing<'_>,
    versions: &EngineVersions,
) -> Result<Planned, ResolveError> {
    let aim = aim_of(select)?;
    let model_ref = validated_model(checkpoint_text(select)?)?;
    let want = want_of(select);
    let (mut user_args, mut notes) = user_engine_args(select)?;
    let revision = revision_of(select)?;
    if let Some(r) = &revision {
        with_revision(&model_ref, r, &mut user_args)?;
    }
    let checkpoint = model_ref.name();
    // AIM_ID's folder; MODEL's own when there is no AIM_ID.
    let asked = aim
        .as_ref()
        .map_or_else(|| checkpoint.clone(), ModelRef::name);
    let folder = aim.as_ref().map_or(model_ref.hub_id(), ModelRef::hub_id);
    let mut recipes = load::load_for_model(&search_path(g), folder)?;
    if asked != checkpoint {
        // MODEL / AIM_MODEL_ID overrides the checkpoint of AIM_ID's recipes.
        for r in recipes
            .iter_mut()
            .filter(|r| r.recipe.for_model().is_some())
        {
            r.recipe.model_id = Some(checkpoint.clone());
        }
        notes.push(format!(
            "recipes of AIM_ID {asked}, serving the checkpoint {checkpoint} (MODEL / AIM_MODEL_ID)"
        ));
    }
    let general_off = general_off(select, &mut recipes);
    let facts = facts_of(&model_ref, revision.as_deref(), select, hub);
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
    let input = PlanInput {
        topology,
        model: &asked,
        checkpoint: &checkpoint,
        facts: &facts,
        recipes: &recipes,
        want: &want,
        user_args: &user_args,
        launchers: &launchers,
        engine_port,
    };
    let mut p = super::decide(&input)?;
    let custom = served_name_of(select)?;
    super::names::serve_under_all_names(&mut p, custom.as_deref());
    mark_general_off(&mut p.verdicts, &general_off);
    if !general_off.is_empty() {
        notes.push(general_off_note(general_off.len()));
    }
    let at = p.plan.reasons.len().min(1);
    p.plan.reasons.splice(at..at, notes);
    Ok(p)
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
    let aim = aim_of(select)?;
    Ok(match checkpoint_text(select).ok() {
        Some(text) => {
            let m = validated_model(text)?;
            let folder = aim.as_ref().map_or(m.hub_id(), ModelRef::hub_id);
            let mut recipes = load::load_for_model(&sp, folder)?;
            let off = general_off(select, &mut recipes);
            let revision = revision_of(select)?;
            let facts = facts_of(&m, revision.as_deref(), select, HubSizing::FromArgs);
            let name = aim.as_ref().map_or_else(|| m.name(), ModelRef::name);
            let mut rows = super::assess_all(topology, Some(&name), Some(&facts), &recipes, &want);
            mark_general_off(&mut rows, &off);
            (rows, Some(name))
        }
        None => {
            let mut recipes = load::load_all(&sp)?;
            let off = general_off(select, &mut recipes);
            let mut rows = super::assess_all(topology, None, None, &recipes, &want);
            mark_general_off(&mut rows, &off);
            (rows, None)
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

/// `--revision R` becomes the engine's `--revision R` (vLLM and SGLang both take it), for a
/// Hub id only; the same revision in `--engine-args` is fine, another one is an error.
fn with_revision(
    model: &ModelRef,
    revision: &str,
    user_args: &mut IndexMap<String, Value>,
) -> Result<(), ResolveError> {
    if let ModelRef::Local(p) = model {
        return Err(ResolveError::RevisionOfFolder {
            revision: revision.to_string(),
            folder: p.clone(),
        });
    }
    match user_args.get("revision") {
        Some(Value::String(v)) if v == revision => Ok(()),
        Some(other) => Err(ResolveError::RevisionsDisagree {
            revision: revision.to_string(),
            engine_args: other.clone(),
        }),
        None => {
            user_args.insert("revision".into(), Value::String(revision.into()));
            Ok(())
        }
    }
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
        recipe: s
            .recipe
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .map(aim_profile_id),
        gpu_model: s
            .gpu_model
            .clone()
            .filter(|m| !m.trim().is_empty() && !m.eq_ignore_ascii_case("none")),
        group: s.group.clone(),
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
            ..Request::default()
        }
    }

    /// `--revision R`: the engine gets `--revision R`; a local folder, a revision that is
    /// not a safe name, or another revision in --engine-args are usage errors naming it.
    #[test]
    fn revision_goes_to_the_engine() {
        let t = Topology {
            gpus: (0..2).map(gpu::Gpu::mi300x).collect(),
            ..Default::default()
        };
        let with = |model: &str, rev: &str, args: Option<&str>| {
            let mut s = select(model);
            s.revision = Some(rev.into());
            s.engine_args = args.map(str::to_string);
            plan_on(&t, &global(), &s, 8100)
        };
        let p = with("Qwen/Qwen3-32B", " v2 ", None).unwrap();
        let argv = &p.plan.launches[0].argv;
        let at = argv
            .iter()
            .position(|a| a == "--revision")
            .expect("--revision");
        assert_eq!(argv[at + 1], "v2", "{argv:?}");
        assert!(with("Qwen/Qwen3-32B", "v2", Some(r#"{"revision":"v2"}"#)).is_ok());
        let none = plan_on(&t, &global(), &select("Qwen/Qwen3-32B"), 8100).unwrap();
        assert!(!none.plan.launches[0].argv.iter().any(|a| a == "--revision"));
        for (model, rev, args, words) in [
            (
                "Qwen/Qwen3-32B",
                "../x",
                None,
                "`../x` is not a branch, tag or commit",
            ),
            (
                "Qwen/Qwen3-32B",
                "v2",
                Some(r#"{"revision":"v3"}"#),
                "disagree",
            ),
            (
                concat!(env!("CARGO_MANIFEST_DIR"), "/recipes"),
                "v2",
                None,
                "is a local folder, which has no revisions",
            ),
        ] {
            let e = with(model, rev, args).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{e}");
            assert!(e.to_string().contains(words), "{e}");
            assert!(
                e.to_string().contains("--revision / AIM_MODEL_REVISION"),
                "{e}"
            );
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
        // The optimized 1-GPU recipe ranks first (type before GPU count), on the first free GPU.
        assert_eq!(l.recipe_id, "vllm-mi300x-bf16-tp1-latency");
        assert_eq!(
            l.gpus.iter().map(|g| g.ordinal).collect::<Vec<_>>(),
            vec![5]
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
