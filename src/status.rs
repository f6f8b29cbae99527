//! What the supervisor knows about the engine, as served on `/status` and read by health checks.
//!
//! Written only by `supervise`; read by `http`, `notify` and the `status` command.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The engine's life, as the supervisor sees it (a closed set; see `supervise::machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Detecting,
    /// `serve --download`: fetching the model into the cache before any engine starts.
    Downloading,
    Starting,
    Loading,
    Validating,
    Ready,
    Restarting,
    Draining,
    Stopped,
    Failed,
}

impl Phase {
    pub const ALL: &'static [Phase] = &[
        Phase::Detecting,
        Phase::Downloading,
        Phase::Starting,
        Phase::Loading,
        Phase::Validating,
        Phase::Ready,
        Phase::Restarting,
        Phase::Draining,
        Phase::Stopped,
        Phase::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Detecting => "detecting",
            Phase::Downloading => "downloading",
            Phase::Starting => "starting",
            Phase::Loading => "loading",
            Phase::Validating => "validating",
            Phase::Ready => "ready",
            Phase::Restarting => "restarting",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipeStatus {
    pub id: String,
    pub engine: String,
    pub gpu_count: u32,
    pub precision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    pub ordinal: u32,
    pub product: String,
    pub pci: String,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailure {
    pub attempt: u32,
    pub recipe_id: String,
    /// Failure class (`oom`, `kv_cache`, `unknown`, `liveness`, ...).
    pub class: String,
    /// "exit 1", "signal 9", or "hung" etc.
    pub exit: String,
    /// What the policy did next: "restart", "next_recipe", "retry_max_model_len", "give_up".
    pub action: String,
    /// Seconds since the supervisor started.
    pub at_s: f64,
    /// Last lines the engine printed.
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivenessStatus {
    pub ok: bool,
    pub at_s: f64,
    pub detail: String,
    pub consecutive_failures: u32,
}

/// The whole story, as JSON on `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub model: String,
    pub recipe: Option<RecipeStatus>,
    pub gpus: Vec<GpuStatus>,
    /// 1-based number of the current engine attempt (0 before the first spawn).
    pub attempt: u32,
    pub restarts: u32,
    pub engine_pid: Option<i32>,
    pub engine_version: Option<String>,
    pub uptime_s: f64,
    /// Seconds since the current attempt became ready.
    pub ready_since_s: Option<f64>,
    pub failures: Vec<AttemptFailure>,
    pub last_liveness: Option<LivenessStatus>,
    /// Set once the supervisor gave up (phase `failed`); never cleared.
    pub fatal: Option<String>,
    /// The engine's last log line (progress while loading).
    pub last_log_line: Option<String>,
    /// The model download of `serve --download`: bytes and files done and in all, and the
    /// recent rate (absent when there was none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<crate::download::progress::Counts>,
}

impl Status {
    pub fn new(model: impl Into<String>) -> Self {
        Status {
            phase: Phase::Detecting,
            model: model.into(),
            recipe: None,
            gpus: Vec::new(),
            attempt: 0,
            restarts: 0,
            engine_pid: None,
            engine_version: None,
            uptime_s: 0.0,
            ready_since_s: None,
            failures: Vec::new(),
            last_liveness: None,
            fatal: None,
            last_log_line: None,
            download: None,
        }
    }

    /// `/health` and `/health/ready`: ready and not given up.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready && self.fatal.is_none()
    }

    /// `/health/live`: the supervisor is still working on it.
    pub fn is_live(&self) -> bool {
        self.phase != Phase::Failed && self.fatal.is_none()
    }
}
