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

/// What the progress watch sees of the current attempt (`supervise::progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressStatus {
    /// Seconds since progress (or a moment without work) was last seen.
    pub last_progress_age_s: f64,
    /// Requests in flight at the public port at the last sample.
    pub inflight: u64,
    /// Engine processes stopped at the last sample (pids).
    pub stopped_pids: Vec<i32>,
}

/// The last hang found: the signal that showed it, how long it lasted, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HangStatus {
    /// `frozen`, `no_progress`, `startup_stall` or `probe_misses`.
    pub signal: String,
    pub for_s: f64,
    pub detail: String,
    pub at_s: f64,
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
    /// The progress watch of the current attempt, once it sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
    /// The last hang found (kept after the restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hang: Option<HangStatus>,
    /// This node's multi-node group (absent on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::live::GroupStatus>,
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
            progress: None,
            last_hang: None,
            group: None,
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

/// The status for humans (`aim-engine status`, `healthcheck --verbose`).
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "phase:     {}", s.phase);
    let _ = writeln!(o, "model:     {}", s.model);
    if let Some(d) = &s.download {
        let _ = writeln!(o, "download:  {}", crate::download::progress::line(d));
    }
    match &s.recipe {
        Some(r) => {
            let _ = writeln!(
                o,
                "recipe:    {} ({}, {} GPU, {})",
                r.id, r.engine, r.gpu_count, r.precision
            );
        }
        None => {
            let _ = writeln!(o, "recipe:    (none yet)");
        }
    }
    if !s.gpus.is_empty() {
        let gpus: Vec<String> = s
            .gpus
            .iter()
            .map(|g| format!("{} {} [{}]", g.ordinal, g.product, g.pci))
            .collect();
        let _ = writeln!(o, "gpus:      {}", gpus.join(", "));
    }
    let _ = writeln!(o, "attempt:   {} (restarts: {})", s.attempt, s.restarts);
    if let Some(v) = &s.engine_version {
        let _ = writeln!(o, "engine:    {v}");
    }
    if let Some(pid) = s.engine_pid {
        let _ = writeln!(o, "pid:       {pid}");
    }
    let _ = writeln!(o, "uptime:    {:.0}s", s.uptime_s);
    if let Some(r) = s.ready_since_s {
        let _ = writeln!(o, "ready for: {:.0}s", (s.uptime_s - r).max(0.0));
    }
    if let Some(l) = &s.last_liveness {
        let _ = writeln!(
            o,
            "liveness:  {} at {:.0}s ({}; {} consecutive failures)",
            if l.ok { "ok" } else { "FAILED" },
            l.at_s,
            l.detail,
            l.consecutive_failures
        );
    }
    if let Some(line) = &s.last_log_line {
        let _ = writeln!(o, "last log:  {line}");
    }
    if let Some(f) = &s.fatal {
        let _ = writeln!(o, "FATAL:     {f}");
    }
    for f in &s.failures {
        let _ = writeln!(
            o,
            "attempt {} ({}) failed at {:.0}s: class {}, {}, then {}",
            f.attempt, f.recipe_id, f.at_s, f.class, f.exit, f.action
        );
        for line in &f.log_tail {
            let _ = writeln!(o, "    | {line}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_failures_and_recipe() {
        let mut s = Status::new("Qwen/Qwen3-8B");
        s.phase = Phase::Restarting;
        s.attempt = 2;
        s.restarts = 1;
        s.recipe = Some(RecipeStatus {
            id: "vllm-mi300x-bf16-tp1-latency".into(),
            engine: "vllm".into(),
            gpu_count: 1,
            precision: "bf16".into(),
        });
        s.failures.push(AttemptFailure {
            attempt: 1,
            recipe_id: "vllm-mi300x-bf16-tp1-latency".into(),
            class: "oom".into(),
            exit: "exit 1".into(),
            action: "restart".into(),
            at_s: 12.0,
            log_tail: vec!["torch.OutOfMemoryError: HIP out of memory".into()],
        });
        let text = render(&s);
        for want in [
            "phase:     restarting",
            "recipe:    vllm-mi300x-bf16-tp1-latency (vllm, 1 GPU, bf16)",
            "attempt:   2 (restarts: 1)",
            "class oom, exit 1, then restart",
            "    | torch.OutOfMemoryError: HIP out of memory",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
