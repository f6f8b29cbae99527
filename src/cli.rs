//! The command line (clap). Every flag doubles as the environment variable shown, with the
//! AIM_* names of AMD's AIM containers so existing settings work unchanged.
//!
//! This layer only checks what the user typed; resolving it against the host happens in
//! `commands`.

use crate::types::{Choice, Engine, Metric, Precision, parse_duration};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

mod argv;
pub use argv::{env_named_error, with_default_command, with_default_subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aim-engine",
    version,
    about = "Runs the right vLLM/SGLang recipe on whatever AMD GPUs it finds, and keeps it serving",
    long_about = None,
    after_help = "A first argument that is not a subcommand means `serve`: `aim-engine Qwen/Qwen3-32B`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Filesystem root under which /sys and /dev are read (a fixture tree stands in for a machine).
    #[arg(
        long,
        env = "AIM_ROOT",
        default_value = "/",
        global = true,
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// Extra recipe folders, searched before the built-in one (repeatable; the env var takes a
    /// colon-separated list).
    #[arg(
        long = "recipes-dir",
        env = "AIM_RECIPES_DIR",
        value_delimiter = ':',
        global = true,
        value_name = "DIR"
    )]
    pub recipes_dir: Vec<PathBuf>,
    /// The built-in recipe folder (default: `recipes/` next to the binary's install prefix,
    /// `/opt/aim-engine/recipes` in the container, or the source tree's `recipes/`).
    #[arg(
        long = "builtin-recipes",
        env = "AIM_BUILTIN_RECIPES",
        global = true,
        value_name = "DIR",
        hide = true
    )]
    pub builtin_recipes: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long = "log-format",
        env = "AIM_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter: a level or `target=level` directives, e.g. `info` or
    /// `aim_engine=debug,hyper=warn`; AIM's Python level names (DEBUG, INFO, WARNING, ERROR, CRITICAL) work too. Default: the
    /// value of AIM_LOG_LEVEL_ROOT, else `info`.
    #[arg(long = "log-level", env = "AIM_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// AIM's level for the third-party loggers; used as --log-level when that is unset.
    #[arg(
        long = "log-level-root",
        env = "AIM_LOG_LEVEL_ROOT",
        global = true,
        hide = true
    )]
    pub log_level_root: Option<String>,
    /// Messages held for a slow stdout/stderr reader before new ones are dropped (counted).
    #[arg(
        long = "log-buffer",
        env = "AIM_LOG_BUFFER",
        default_value_t = crate::logging::DEFAULT_CAPACITY,
        global = true
    )]
    pub log_buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// For humans (`table`, AIM's `list-profiles --format table`, is the same).
    #[default]
    #[value(alias = "table")]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise one engine serving MODEL (the default command).
    Serve(Box<ServeArgs>),
    /// Detection + selection + the exact argv/env; nothing is started.
    Plan(PlanArgs),
    /// The plan in the JSON shape the AMD AIM Kubernetes operator reads.
    #[command(name = "dry-run")]
    DryRun(PlanArgs),
    /// Every recipe with its verdict for this host.
    #[command(visible_alias = "list-profiles")]
    Recipes(PlanArgs),
    /// Detected GPUs, and why any KFD node was left out.
    Gpus(FormatArgs),
    /// Exit 0 when the local supervisor reports ready, 1 otherwise (Docker HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
    /// Print the local supervisor's /status for humans.
    Status(StatusArgs),
    /// Fetch what an engine needs of a Hub model into the Hugging Face cache (resumable).
    #[command(visible_alias = "download-to-cache")]
    Download(DownloadArgs),
    /// Host side: start a container serving MODEL on free GPUs (Docker Engine API).
    Launch(LaunchArgs),
    /// Host side: list aim-engine containers.
    List(FormatArgs),
    /// Host side: stop (and remove) aim-engine containers.
    Stop(StopArgs),
}

impl Command {
    /// Names a first argument may take without meaning `serve MODEL`.
    pub const NAMES: &'static [&'static str] = &[
        "serve",
        "plan",
        "dry-run",
        "recipes",
        "list-profiles",
        "gpus",
        "healthcheck",
        "status",
        "download",
        "download-to-cache",
        "launch",
        "list",
        "stop",
        "help",
    ];
}

#[derive(Debug, Clone, Args)]
pub struct FormatArgs {
    #[arg(long, default_value = "text")]
    pub format: Format,
}

/// What to serve and the user's constraints on how.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Hugging Face model id (`org/name`) or an absolute path to a local model folder.
    #[arg(env = "AIM_MODEL_ID", value_name = "MODEL")]
    pub model: Option<String>,
    /// Number of GPUs (tensor-parallel size); `auto` picks from the model's size.
    #[arg(env = "AIM_GPU_COUNT", value_name = "GPU_COUNT", value_parser = parse_gpu_count)]
    pub gpu_count: Option<Choice<u32>>,
    /// Precision: auto, bf16, fp16, fp8, fp4, int8, int4.
    #[arg(long, env = "AIM_PRECISION", default_value = "auto", value_parser = parse_choice::<Precision>)]
    pub precision: Choice<Precision>,
    /// Engine: auto, vllm, sglang.
    #[arg(long, env = "AIM_ENGINE", default_value = "auto", value_parser = parse_choice::<Engine>)]
    pub backend: Choice<Engine>,
    /// What the recipe is tuned for: auto, latency, throughput.
    #[arg(long, env = "AIM_METRIC", default_value = "auto", value_parser = parse_choice::<Metric>)]
    pub metric: Choice<Metric>,
    /// Use exactly this recipe id (skips ranking; still checked against the host).
    #[arg(long = "recipe", env = "AIM_PROFILE_ID", value_name = "ID")]
    pub recipe: Option<String>,
    /// Pretend the GPUs are this product (e.g. MI300X) when matching recipes.
    #[arg(long = "gpu-model", env = "AIM_GPU_MODEL", value_name = "PRODUCT")]
    pub gpu_model: Option<String>,
    /// JSON object of engine flags merged over the recipe's (`{"max-model-len": 8192}`).
    #[arg(long = "engine-args", env = "AIM_ENGINE_ARGS", value_name = "JSON")]
    pub engine_args: Option<String>,
    /// Loopback port the engine listens on (default: the public port + 1).
    #[arg(long = "engine-port", env = "AIM_ENGINE_PORT", value_name = "PORT")]
    pub engine_port: Option<u16>,
    /// Branch, tag or commit of a Hub model: downloaded (`serve --download`), looked up in
    /// the cache, and passed to the engine as `--revision`. Default: the engine's (main).
    #[arg(long, env = "AIM_MODEL_REVISION", value_name = "REVISION")]
    pub revision: Option<String>,
    /// When the model is not in the cache, size it from the Hub's file listing (HF_ENDPOINT)
    /// instead of the size in its name. Asks the network; off by default (`serve --download`
    /// does it anyway).
    #[arg(long = "size-from-hub", env = "AIM_SIZE_FROM_HUB", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub size_from_hub: bool,
    /// The model whose recipe folder is read (AIM's per-model images set AIM_ID alone); also
    /// the model served when MODEL / AIM_MODEL_ID is not given, which otherwise is the
    /// checkpoint loaded with AIM_ID's recipes.
    #[arg(long = "aim-id", env = "AIM_ID", value_name = "ORG/MODEL")]
    pub aim_id: Option<String>,
    /// Whether general (model-agnostic) recipes may be chosen (AIM's base image: true, its
    /// per-model images: false). When false they run only when asked for by --recipe.
    #[arg(long = "allow-general-fallback", env = "AIM_ALLOW_GENERAL_PROFILE_FALLBACK", default_value = "true", value_name = "BOOL", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_general_fallback: bool,
    /// The name clients use for the model (default: MODEL, plus the checkpoint's id on vLLM
    /// when a recipe swaps it in).
    #[arg(
        long = "served-model-name",
        env = "AIM_CUSTOM_MODEL_NAME",
        value_name = "NAME"
    )]
    pub served_model_name: Option<String>,
    /// Nodes in the multi-node group this node is part of (default: LeaderWorkerSet's
    /// LWS_GROUP_SIZE; none: one node). Giving it asks for a recipe that spans that many.
    #[arg(long, env = "AIM_NNODES", value_name = "N")]
    pub nnodes: Option<String>,
    /// This node's index in its group, 0 on the leader (default: LWS_WORKER_INDEX).
    #[arg(long = "node-rank", env = "AIM_NODE_RANK", value_name = "RANK")]
    pub node_rank: Option<String>,
    /// The group leader's host name or IP address, as the other nodes reach it (default:
    /// LWS_LEADER_ADDRESS).
    #[arg(long = "leader-addr", env = "AIM_LEADER_ADDR", value_name = "HOST")]
    pub leader_addr: Option<String>,
    /// The engines' rendezvous port on the leader (default 29501).
    #[arg(long = "dist-port", env = "AIM_DIST_PORT", value_name = "PORT")]
    pub dist_port: Option<String>,
    /// Engine flags as the engine takes them, after `--`: `-- --max-model-len 8192
    /// --enforce-eager`. Checked like --engine-args, and they win over it.
    #[arg(last = true, value_name = "ENGINE_FLAGS", allow_hyphen_values = true)]
    pub engine_flags: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The public port the plan is for (the engine port defaults to this + 1).
    #[arg(long, env = "AIM_PORT", default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value = "text")]
    pub format: Format,
    /// The engine version to plan for: `0.32.0`, or per engine `vllm=0.32.0,sglang=0.5.23`.
    /// Flags are checked against its table and its version rules applied; default: the
    /// version the engine command reports when one is installed, else the newest pinned table.
    #[arg(
        long = "engine-version",
        env = "AIM_ENGINE_VERSION",
        value_name = "VERSION"
    )]
    pub engine_version: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Public port (health, status, metrics and the forwarded OpenAI API).
    #[arg(long, env = "AIM_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Address the public port binds.
    #[arg(long, env = "AIM_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Require `Authorization: Bearer KEY` on /v1/* (health and metrics stay open).
    #[arg(long = "api-key", env = "AIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Grace for the engine to exit after SIGTERM before its process group is killed.
    #[arg(long = "stop-timeout", env = "AIM_STOP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Deadline for an attempt to become ready.
    #[arg(long = "startup-timeout", env = "AIM_STARTUP_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// A group's leader's public port, where the workers report (default: --port).
    #[arg(long = "leader-port", env = "AIM_LEADER_PORT", value_name = "PORT")]
    pub leader_port: Option<u16>,
    /// How often a group's worker reports to its leader.
    #[arg(long = "group-interval", env = "AIM_GROUP_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub group_interval: Duration,
    /// A group node not heard from this long (a worker by its leader, the leader by a
    /// worker) is lost, and the group restarts as one.
    #[arg(long = "group-loss-timeout", env = "AIM_GROUP_LOSS_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub group_loss_timeout: Duration,
    /// How long a group's node waits, from its engine's start, for every other node to be
    /// heard from; the message names the ranks that did not come.
    #[arg(long = "group-join-timeout", env = "AIM_GROUP_JOIN_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub group_join_timeout: Duration,
    /// How often a loading engine's progress (phase, time so far, its last log line) is logged.
    #[arg(long = "progress-interval", env = "AIM_PROGRESS_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Interval of liveness probes once ready.
    #[arg(long = "liveness-interval", env = "AIM_LIVENESS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub liveness_interval: Duration,
    /// Consecutive failed liveness probes that mean "hung".
    #[arg(
        long = "liveness-failures",
        env = "AIM_LIVENESS_FAILURES",
        default_value_t = 3
    )]
    pub liveness_failures: u32,
    /// Timeout of one liveness probe.
    #[arg(long = "liveness-timeout", env = "AIM_LIVENESS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub liveness_timeout: Duration,
    /// A process of the engine stopped (SIGSTOP) this long means hung (0: off).
    #[arg(long = "hang-freeze-window", env = "AIM_HANG_FREEZE_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub hang_freeze_window: Duration,
    /// Requests in flight and nothing moving (bytes, tokens, log, CPU, GPU) this long means
    /// hung (0: off).
    #[arg(long = "hang-stall-window", env = "AIM_HANG_STALL_WINDOW", default_value = "300s", value_parser = parse_duration)]
    pub hang_stall_window: Duration,
    /// Loading with no new log line and no CPU time this long means hung (0: off).
    #[arg(long = "startup-stall-window", env = "AIM_STARTUP_STALL_WINDOW", default_value = "600s", value_parser = parse_duration)]
    pub startup_stall_window: Duration,
    /// How often the engine's progress is sampled.
    #[arg(long = "hang-sample-interval", env = "AIM_HANG_SAMPLE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub hang_sample_interval: Duration,
    /// When no request is in flight, a 1-token completion through the engine core this often
    /// (instead of the /health probe); --liveness-failures misses in a row mean hung.
    #[arg(long = "idle-probe-interval", env = "AIM_IDLE_PROBE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub idle_probe_interval: Duration,
    /// Longest wait for one idle probe's answer.
    #[arg(long = "idle-probe-timeout", env = "AIM_IDLE_PROBE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_probe_timeout: Duration,
    /// Restarts of the same recipe allowed within --restart-window before moving on.
    #[arg(
        long = "restart-budget",
        env = "AIM_RESTART_BUDGET",
        default_value_t = 5
    )]
    pub restart_budget: u32,
    #[arg(long = "restart-window", env = "AIM_RESTART_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub restart_window: Duration,
    /// First restart delay; doubles up to --backoff-max.
    #[arg(long = "backoff-initial", env = "AIM_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    #[arg(long = "backoff-max", env = "AIM_BACKOFF_MAX", default_value = "60s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// How long to wait for VRAM to be released before a relaunch.
    #[arg(long = "vram-wait-timeout", env = "AIM_VRAM_WAIT_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub vram_wait_timeout: Duration,
    /// Cap on concurrent connections to the public port.
    #[arg(
        long = "max-connections",
        env = "AIM_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,
    /// Fetch the model into the Hugging Face cache first, in its own phase (`downloading`),
    /// before the startup timeout starts; the engine then runs with HF_HUB_OFFLINE=1. On by
    /// default; `--download=false` or AIM_DOWNLOAD=0 leaves fetching to the engine.
    #[arg(
        long,
        env = "AIM_DOWNLOAD",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub download: bool,
    /// Longest wait for a request head on the public port; also closes idle keep-alive
    /// connections.
    #[arg(long = "header-read-timeout", env = "AIM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body (then 408).
    #[arg(long = "body-read-timeout", env = "AIM_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Longest wait for the engine's first byte of a forwarded response (head, then first body
    /// piece), from the end of the request body; then 504 and the request is cancelled (0: no
    /// limit). Long prompts prefill for minutes before their first token.
    #[arg(long = "request-first-byte-timeout", env = "AIM_REQUEST_FIRST_BYTE_TIMEOUT", default_value = "600s", value_parser = parse_duration)]
    pub request_first_byte_timeout: Duration,
    /// Longest pause between two pieces of a forwarded response once it began; then it is cut
    /// (SSE: after an error event) and the request cancelled (0: no limit).
    #[arg(long = "stream-gap-timeout", env = "AIM_STREAM_GAP_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub stream_gap_timeout: Duration,
    /// Connections one client address may hold on the public port (0: no cap).
    #[arg(
        long = "max-connections-per-peer",
        env = "AIM_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 1024
    )]
    pub max_connections_per_peer: usize,
    /// Connections kept for health and /status when the caps are reached.
    #[arg(
        long = "health-connections",
        env = "AIM_HEALTH_CONNECTIONS",
        default_value_t = 64
    )]
    pub health_connections: usize,
    /// Skip the one-token test inference before declaring ready.
    #[arg(
        long = "skip-test-inference",
        env = "AIM_SKIP_TEST_INFERENCE",
        default_value_t = false
    )]
    pub skip_test_inference: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Hugging Face model id (`org/name`, or AIM's `hf://org/name`); default: AIM_ID.
    #[arg(env = "AIM_MODEL_ID", value_name = "MODEL")]
    pub model: Option<String>,
    /// MODEL in AIM's `download-to-cache --model-id` spelling (wins over MODEL).
    #[arg(long = "model-id", value_name = "MODEL")]
    pub model_id: Option<String>,
    /// AIM's per-model images name their model in AIM_ID: fetched when no MODEL is given.
    #[arg(long = "aim-id", env = "AIM_ID", hide = true)]
    pub aim_id: Option<String>,
    /// Branch, tag or commit to fetch.
    #[arg(long, env = "AIM_MODEL_REVISION", default_value = "main")]
    pub revision: String,
    /// Files fetched at once.
    #[arg(long, env = "AIM_DOWNLOAD_PARALLEL", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: u16,
    /// How often progress is logged (a bar is drawn instead when stderr is a terminal).
    #[arg(long = "progress-interval", env = "AIM_DOWNLOAD_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// A file whose bytes stop coming for this long is resumed from where it stopped.
    #[arg(long = "stall-timeout", env = "AIM_DOWNLOAD_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Tries per request (connection errors, 5xx, stalls, 429) before giving up.
    #[arg(long, env = "AIM_DOWNLOAD_TRIES", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub tries: u32,
    /// First retry delay; doubles up to 30s. A 429 waits as its Retry-After says.
    #[arg(long = "retry-initial", env = "AIM_DOWNLOAD_RETRY_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub retry_initial: Duration,
}

impl DownloadArgs {
    /// The model to fetch: --model-id, else MODEL / AIM_MODEL_ID, else AIM_ID.
    pub fn model(&self) -> Option<&str> {
        [&self.model_id, &self.model, &self.aim_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|m| !m.trim().is_empty())
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    #[arg(long, env = "AIM_PORT", default_value_t = 8000)]
    pub port: u16,
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Also print the status for humans.
    #[arg(long)]
    pub verbose: bool,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[arg(long, env = "AIM_PORT", default_value_t = 8000)]
    pub port: u16,
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value = "text")]
    pub format: Format,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Image to run.
    #[arg(long, env = "AIM_IMAGE", default_value = "aim-engine:latest")]
    pub image: String,
    /// Host port to publish (default: the first free one from 8000).
    #[arg(long)]
    pub port: Option<u16>,
    /// Container name (default: aim-engine-<model>-<N>gpu-<precision>-<engine>).
    #[arg(long)]
    pub name: Option<String>,
    /// Return once the container is created and started.
    #[arg(long)]
    pub detach: bool,
    /// Print the container spec without touching Docker.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    #[arg(long, default_value = "text")]
    pub format: Format,
    /// Host Hugging Face cache to mount (default: $HF_HOME or ~/.cache/huggingface).
    #[arg(long = "hf-cache", env = "AIM_HOST_HF_CACHE")]
    pub hf_cache: Option<PathBuf>,
    /// How long to wait for the container to report ready.
    #[arg(long = "ready-timeout", default_value = "60m", value_parser = parse_duration)]
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Container names.
    pub names: Vec<String>,
    /// Stop every aim-engine container.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Seconds Docker waits after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 60)]
    pub timeout: u32,
    /// Keep the stopped container instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

impl GlobalArgs {
    /// The tracing filter: --log-level / AIM_LOG_LEVEL, else AIM_LOG_LEVEL_ROOT, else `info`,
    /// with AIM's Python level names mapped to tracing's ([`log_directive`]).
    pub fn log_filter(&self) -> String {
        let text = [&self.log_level, &self.log_level_root]
            .into_iter()
            .flatten()
            .map(|t| t.trim())
            .find(|t| !t.is_empty())
            .unwrap_or("info");
        log_directive(text)
    }
}

/// One level word in Python's spelling (AIM's `AIM_LOG_LEVEL=CRITICAL`, `WARNING`) as the
/// tracing level it means; anything else (`aim_engine=debug`, `warn`) is a directive and
/// stays as it is. Python's CRITICAL has no tracing level: `error` is the
/// closest that still shows a failure.
pub fn log_directive(text: &str) -> String {
    match text.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => "error".into(),
        "WARNING" | "WARN" => "warn".into(),
        "INFO" => "info".into(),
        "DEBUG" => "debug".into(),
        "NOTSET" | "TRACE" => "trace".into(),
        _ => text.trim().to_string(),
    }
}

fn parse_gpu_count(s: &str) -> Result<Choice<u32>, String> {
    let c: Choice<u32> = match s.trim() {
        t if t.is_empty() || t.eq_ignore_ascii_case("auto") => Choice::Auto,
        t => Choice::Is(
            t.parse::<u32>()
                .map_err(|_| format!("GPU_COUNT must be a number or `auto`, not `{s}`"))?,
        ),
    };
    if c == Choice::Is(0) {
        return Err("GPU_COUNT must be at least 1".into());
    }
    Ok(c)
}

fn parse_choice<T: std::str::FromStr<Err = String>>(s: &str) -> Result<Choice<T>, String> {
    s.parse()
}

/// The library's form of the global flags planning reads.
impl From<&GlobalArgs> for crate::plan::Sources {
    fn from(g: &GlobalArgs) -> Self {
        crate::plan::Sources {
            root: g.root.clone(),
            recipes_dir: g.recipes_dir.clone(),
            builtin_recipes: g.builtin_recipes.clone(),
        }
    }
}

/// The library's form of the selection flags.
impl From<&SelectArgs> for crate::plan::Request {
    fn from(s: &SelectArgs) -> Self {
        crate::plan::Request {
            // AIM_ID alone: it is also the model served.
            model: s
                .model
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| s.aim_id.clone()),
            gpu_count: s.gpu_count,
            precision: s.precision,
            backend: s.backend,
            metric: s.metric,
            recipe: s.recipe.clone(),
            gpu_model: s.gpu_model.clone(),
            engine_args: s.engine_args.clone(),
            engine_port: s.engine_port,
            revision: s.revision.clone(),
            size_from_hub: s.size_from_hub,
            aim_id: s.aim_id.clone(),
            no_general_fallback: !s.allow_general_fallback,
            engine_flags: s.engine_flags.clone(),
            served_name: s.served_model_name.clone(),
            // Resolved by `SelectArgs::group`, which can fail.
            group: None,
        }
    }
}

impl SelectArgs {
    /// The group facts: our flags (their AIM_* variables) first, then LeaderWorkerSet's
    /// variables from the environment.
    pub fn group(&self) -> Result<Option<crate::group::Group>, crate::group::GroupError> {
        use crate::group as g;
        let env = |name: &str| -> Option<String> {
            match name {
                g::AIM_NNODES => self.nnodes.clone(),
                g::AIM_NODE_RANK => self.node_rank.clone(),
                g::AIM_LEADER_ADDR => self.leader_addr.clone(),
                g::AIM_DIST_PORT => self.dist_port.clone(),
                other => std::env::var(other).ok(),
            }
        };
        g::from_env(&env)
    }

    /// The library's form of the selection flags, with the group facts.
    pub fn request(&self) -> Result<crate::plan::Request, crate::group::GroupError> {
        let mut r = crate::plan::Request::from(self);
        r.group = self.group()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn model_first_means_serve() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["aim-engine", "Qwen/Qwen3-32B"],
                &["aim-engine", "serve", "Qwen/Qwen3-32B"],
            ),
            (
                &["aim-engine", "Qwen/Qwen3-32B", "4"],
                &["aim-engine", "serve", "Qwen/Qwen3-32B", "4"],
            ),
            (
                &["aim-engine", "--root", "/x", "Qwen/Qwen3-32B"],
                &["aim-engine", "--root", "/x", "serve", "Qwen/Qwen3-32B"],
            ),
            (
                &["aim-engine", "--root=/x", "m/n"],
                &["aim-engine", "--root=/x", "serve", "m/n"],
            ),
            (
                &["aim-engine", "plan", "Qwen/Qwen3-32B"],
                &["aim-engine", "plan", "Qwen/Qwen3-32B"],
            ),
            (
                &["aim-engine", "--root", "/x", "gpus"],
                &["aim-engine", "--root", "/x", "gpus"],
            ),
            (&["aim-engine", "--help"], &["aim-engine", "--help"]),
            (&["aim-engine"], &["aim-engine"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                with_default_subcommand(v(input)),
                v(want),
                "input {input:?}"
            );
        }
    }

    /// AIM_LOG_LEVEL wins; AIM_LOG_LEVEL_ROOT stands in when it is unset; AIM's Python
    /// names map to tracing levels (the operator's discovery job sets both to CRITICAL).
    #[test]
    fn log_level_and_log_level_root() {
        let parse = |env: &[(&str, &str)]| {
            let mut argv = vec!["aim-engine".to_string()];
            for (k, v) in env {
                argv.push(format!("--{k}={v}"));
            }
            argv.push("gpus".into());
            Cli::try_parse_from(argv)
                .expect("parses")
                .global
                .log_filter()
        };
        assert_eq!(parse(&[]), "info");
        assert_eq!(parse(&[("log-level-root", "CRITICAL")]), "error");
        assert_eq!(
            parse(&[("log-level-root", "CRITICAL"), ("log-level", "DEBUG")]),
            "debug"
        );
        assert_eq!(parse(&[("log-level", "WARNING")]), "warn");
        assert_eq!(
            parse(&[("log-level", "aim_engine=debug")]),
            "aim_engine=debug"
        );
        assert_eq!(
            parse(&[("log-level", " "), ("log-level-root", "info")]),
            "info"
        );
        let _ = Cli::try_parse_from(["aim-engine", "list-profiles", "--format", "table"])
            .expect("list-profiles is recipes; table is text");
    }

    /// A bad value from a variable is reported under the variable's name; the same value on
    /// the command line is reported under the flag, as clap does.
    #[test]
    fn bad_env_values_name_the_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let check = |argv: &[&str], pairs: &'static [(&'static str, &'static str)]| {
            let argv = v(argv);
            // What clap sees: the variables' values as the flags' values.
            let mut with = argv.clone();
            for (k, val) in pairs {
                let flag = match *k {
                    "AIM_PRECISION" => "--precision",
                    "AIM_LOG_FORMAT" => "--log-format",
                    _ => "",
                };
                if !flag.is_empty() && !argv.iter().any(|a| a.to_string_lossy() == flag) {
                    with.push(OsString::from(format!("{flag}={val}")));
                }
            }
            let e = Cli::try_parse_from(&with).expect_err("bad value");
            env_named_error(&e, &argv, env(pairs))
        };
        let m = check(
            &["aim-engine", "plan", "Qwen/Qwen3-32B"],
            &[("AIM_PRECISION", "fp9")],
        )
        .expect("names the variable");
        assert!(
            m.contains("invalid value 'fp9' for AIM_PRECISION (the variable of --precision)"),
            "{m}"
        );
        assert!(!m.contains("'--precision"), "{m}");
        let m = check(&["aim-engine", "gpus"], &[("AIM_LOG_FORMAT", "xml")]).expect("names it");
        assert!(
            m.contains("AIM_LOG_FORMAT (the variable of --log-format)"),
            "{m}"
        );
        // Given on the command line: clap's own message stands.
        assert!(
            check(
                &["aim-engine", "plan", "Qwen/Qwen3-32B", "--precision", "fp9"],
                &[("AIM_PRECISION", "fp9")]
            )
            .is_none()
        );
        // GPU_COUNT, a positional, from AIM_GPU_COUNT.
        let e = Cli::try_parse_from(["aim-engine", "plan", "Qwen/Qwen3-32B", "many"]).unwrap_err();
        let m = env_named_error(
            &e,
            &v(&["aim-engine", "plan", "Qwen/Qwen3-32B"]),
            env(&[("AIM_GPU_COUNT", "many")]),
        )
        .expect("names AIM_GPU_COUNT");
        assert!(
            m.contains("AIM_GPU_COUNT (the variable of GPU_COUNT)"),
            "{m}"
        );
    }

    /// `download-to-cache` as AIM's images call it: `--model-id hf://org/name`, or nothing
    /// with AIM_ID set.
    #[test]
    fn download_to_cache_takes_model_id_or_aim_id() {
        let model = |argv: &[&str]| match Cli::try_parse_from(argv).expect("parses").command {
            Command::Download(a) => a.model().map(str::to_string),
            _ => panic!("not download"),
        };
        assert_eq!(
            model(&[
                "aim-engine",
                "download-to-cache",
                "--model-id",
                "hf://Qwen/Qwen3-8B"
            ])
            .as_deref(),
            Some("hf://Qwen/Qwen3-8B")
        );
        assert_eq!(
            model(&[
                "aim-engine",
                "download-to-cache",
                "--aim-id",
                "Qwen/Qwen3-32B"
            ])
            .as_deref(),
            Some("Qwen/Qwen3-32B")
        );
        assert_eq!(
            model(&[
                "aim-engine",
                "download",
                "a/b",
                "--aim-id",
                "Qwen/Qwen3-32B"
            ])
            .as_deref(),
            Some("a/b")
        );
    }

    /// No arguments with AIM_ID / AIM_MODEL_ID set: `serve`, as AIM's entry point does.
    #[test]
    fn no_arguments_serve_the_model_of_the_environment() {
        let cases: &[(&[&str], bool, &[&str])] = &[
            (&["aim-engine"], true, &["aim-engine", "serve"]),
            (&["aim-engine"], false, &["aim-engine"]),
            (
                &[
                    "aim-engine",
                    "--root",
                    "/x",
                    "--port",
                    "9",
                    "--",
                    "--enforce-eager",
                ],
                true,
                &[
                    "aim-engine",
                    "serve",
                    "--root",
                    "/x",
                    "--port",
                    "9",
                    "--",
                    "--enforce-eager",
                ],
            ),
            (&["aim-engine", "gpus"], true, &["aim-engine", "gpus"]),
            (&["aim-engine", "--help"], true, &["aim-engine", "--help"]),
            (
                &["aim-engine", "m/n"],
                true,
                &["aim-engine", "serve", "m/n"],
            ),
        ];
        for (input, env, want) in cases {
            assert_eq!(with_default_command(v(input), *env), v(want), "{input:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
