//! The supervisor over a plan's launches: one attempt after another, each failure handed to
//! the pure policy (`machine`), whose decision is carried out here. Between attempts it
//! waits (backoff, VRAM release) while still handling signals.

use super::attempt::AttemptEnd;
use super::machine::{Decision, Event, Failure, Policy, memory_per_replica, transition};
use super::probe::Prober;
use super::reaper::Reaper;
use super::run::{
    Config, free_loopback_port, give_up_summary, model_unavailable_message, with_port,
};
use super::signals::{self, SigEvent};
use super::spawn::{self, SpawnError};
use super::vram::{self, Baseline};
use super::{logs, logs::Sink, tree};
use crate::engine::{self, ExitKind};
use crate::exit::{self, ExitError};
use crate::launch::Launch;
use crate::notify::Notifier;
use crate::plan::Plan;
use crate::shared::Shared;
use crate::status::{AttemptFailure, GpuStatus, RecipeStatus, Status};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long the process-tree sweep may take before we give up on stragglers.
pub(super) const SWEEP_LIMIT: Duration = Duration::from_secs(5);
/// How long to wait for the engine's pipes to close after its tree is gone.
pub(super) const LOG_DRAIN: Duration = Duration::from_millis(500);
/// How long a version probe may take.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a signal means right now.
pub(super) enum SigAction {
    /// The first stop request: drain, then stop the engine gracefully.
    BeginStop,
    /// A second stop request during the stop: kill the engine's group at once.
    KillNow,
    Forwarded,
}

/// Which stop requests end a wait early.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EndsOn {
    /// The first stop request (or a later one).
    AnyStop,
    /// Only a second stop request (we are already stopping).
    SecondStop,
}

/// How a wait ended.
pub(super) enum Waited<T> {
    Done(T),
    Deadline,
    /// A stop request ended the wait.
    Stop,
}

pub struct Supervisor {
    pub(super) shared: Arc<Shared>,
    pub(super) reaper: Arc<Reaper>,
    pub(super) signals: mpsc::UnboundedReceiver<SigEvent>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) prober: Prober,
    pub(super) cfg: Config,
    pub(super) stop_requested: bool,
    pub(super) ready_once: bool,
}

/// An attempt that failed, with what the policy needs and `/status` records.
struct Failed {
    failure: Failure,
    exit: String,
    was_ready: bool,
    tail: Vec<String>,
    /// Set when the launcher could not be spawned: the exit status when no launch's
    /// launcher can run (126 executable bit or interpreter, 127 not found).
    launcher_code: Option<u8>,
}

impl Supervisor {
    pub(super) fn new(
        shared: Arc<Shared>,
        reaper: Arc<Reaper>,
        signals: mpsc::UnboundedReceiver<SigEvent>,
        notifier: Arc<Notifier>,
        cfg: Config,
    ) -> Self {
        Supervisor {
            shared,
            reaper,
            signals,
            notifier,
            prober: Prober::new(),
            cfg,
            stop_requested: false,
            ready_once: false,
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Applies a state-machine event; tells systemd about a new phase.
    pub(super) fn event(&self, ev: Event, detail: &str) {
        let from = self.shared.phase();
        if let Some(to) = transition(from, ev) {
            self.shared.set_phase(to);
            // STATUS= is one line of a newline-separated datagram: first line only.
            let detail = detail.lines().next().unwrap_or("");
            let line = if detail.is_empty() {
                to.to_string()
            } else {
                format!("{to}: {detail}")
            };
            self.notifier.status(&line);
            tracing::debug!(from = %from, to = %to, "phase");
        }
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        self.shared.status.send_modify(f);
    }

    /// Marks the run as given up (phase failed, `fatal` set).
    pub(super) fn fatal(&self, message: &str) {
        self.update(|s| {
            s.fatal = Some(message.to_string());
            s.engine_pid = None;
        });
        self.event(Event::GaveUp, message);
    }

    pub(super) fn on_signal(&mut self, ev: SigEvent, engine_pid: Option<i32>) -> SigAction {
        match ev {
            SigEvent::Stop(sig) => {
                if self.stop_requested {
                    tracing::warn!(
                        signal = sig,
                        "second stop request: killing the engine's process group now"
                    );
                    SigAction::KillNow
                } else {
                    self.stop_requested = true;
                    tracing::info!(
                        signal = sig,
                        "stop requested: draining, then stopping the engine"
                    );
                    self.shared.stopping.cancel();
                    self.event(Event::StopRequested, "stop requested");
                    self.notifier.stopping();
                    SigAction::BeginStop
                }
            }
            SigEvent::Forward(sig) => {
                match engine_pid {
                    Some(pid) => {
                        tracing::info!(signal = sig, pid, "forwarding signal to the engine");
                        // SAFETY: plain syscall; ESRCH (already gone) is harmless.
                        unsafe {
                            libc::kill(pid, sig);
                        }
                    }
                    None => tracing::info!(signal = sig, "no engine running; signal not forwarded"),
                }
                SigAction::Forwarded
            }
        }
    }

    /// Awaits `fut` until `deadline` (None: no deadline) while handling every signal
    /// (forwarded ones go to `engine_pid`); a stop request that `ends` names ends the wait.
    pub(super) async fn await_handling_signals<T>(
        &mut self,
        fut: impl Future<Output = T>,
        deadline: Option<Instant>,
        engine_pid: Option<i32>,
        ends: EndsOn,
    ) -> Waited<T> {
        tokio::pin!(fut);
        loop {
            let ev = tokio::select! {
                v = &mut fut => return Waited::Done(v),
                _ = sleep_until(deadline) => return Waited::Deadline,
                ev = self.signals.recv() => ev,
            };
            let Some(ev) = ev else { continue };
            match self.on_signal(ev, engine_pid) {
                SigAction::KillNow => return Waited::Stop,
                SigAction::BeginStop if ends == EndsOn::AnyStop => {
                    return Waited::Stop;
                }
                SigAction::BeginStop | SigAction::Forwarded => {}
            }
        }
    }

    /// The whole run over the plan's launches.
    pub async fn supervise(&mut self, plan: Plan) -> Result<u8, ExitError> {
        let mut launches = plan.launches.clone();
        if launches.is_empty() {
            let msg = "the plan has no launch".to_string();
            self.fatal(&msg);
            return Err(ExitError::new(exit::NO_FIT, msg));
        }
        let mut minors: Vec<u32> = launches
            .iter()
            .flat_map(|l| l.gpus.iter().map(|g| g.render_minor))
            .collect();
        minors.sort_unstable();
        minors.dedup();
        let baseline = Baseline::read(&self.cfg.root, &minors);
        let launchers = launches
            .iter()
            .map(|l| l.argv.first().cloned().unwrap_or_default())
            .collect();
        let gpus = launches
            .iter()
            .map(|l| l.gpus.iter().map(|g| g.ordinal).collect())
            .collect();
        let memory = launches
            .iter()
            .map(|l| memory_per_replica(l.gpu_count, l.precision))
            .collect();
        let mut policy = Policy::with_memory(self.cfg.policy, launchers, memory).with_gpus(gpus);
        if self.shared.group.is_some() {
            policy = policy.in_group();
        }
        let mut versions: HashMap<String, Option<String>> = HashMap::new();
        let mut first = true;
        let mut delay = Duration::ZERO;
        for r in &plan.reasons {
            tracing::info!("plan: {r}");
        }
        loop {
            let idx = policy.index();
            if !first {
                if let Some(code) = self.pause(delay).await {
                    return Ok(code);
                }
                let minors: Vec<u32> = launches[idx].gpus.iter().map(|g| g.render_minor).collect();
                if let Some(code) = self.wait_vram(&baseline, &minors).await {
                    return Ok(code);
                }
            }
            first = false;
            // A stop that came while planning or pausing: no new engine.
            while let Ok(ev) = self.signals.try_recv() {
                if let SigAction::BeginStop | SigAction::KillNow = self.on_signal(ev, None) {
                    return Ok(self.finish_idle_stop().await);
                }
            }
            let launch = launches[idx].clone();
            let attempt = self.begin_attempt(&launch);
            let failed = match self.attempt(&launch, attempt, &mut versions).await {
                Ok(code) => return Ok(code),
                Err(failed) => failed,
            };
            let decision = policy.on_failure(failed.failure, failed.was_ready, self.elapsed());
            let launcher_code = failed.launcher_code;
            let exit_desc = self.record_failure(&launch, attempt, failed, &decision);
            delay = self.carry_out(decision, &mut launches, idx, &exit_desc, launcher_code)?;
        }
    }

    /// Carries out the policy's decision on a failed attempt of `launches[idx]`: Ok(the pause
    /// before the next attempt), or Err(the error that ends the run). `exit_desc` says how the
    /// attempt ended; `launcher_code` is set when its launcher could not be spawned.
    fn carry_out(
        &self,
        decision: Decision,
        launches: &mut [Launch],
        idx: usize,
        exit_desc: &str,
        launcher_code: Option<u8>,
    ) -> Result<Duration, ExitError> {
        let launch = launches[idx].clone();
        match decision {
            Decision::Restart { delay: d } => return Ok(d),
            Decision::RetryMaxModelLen { len } => {
                tracing::info!("retrying {} with max model len {len}", launch.recipe_id);
                launches[idx].argv = engine::with_max_model_len(launch.engine, &launch.argv, len);
            }
            Decision::NewPort => match free_loopback_port() {
                Ok(port) => {
                    tracing::info!(
                        "engine port {} in use; retrying on {port}",
                        launch.engine_port
                    );
                    launches[idx].argv = with_port(&launch.argv, port);
                    launches[idx].engine_port = port;
                }
                Err(e) => tracing::warn!("cannot find a free loopback port: {e}"),
            },
            Decision::NextLaunch { index } => {
                tracing::info!("falling back to recipe {}", launches[index].recipe_id);
            }
            Decision::ModelUnavailable => {
                let msg = model_unavailable_message(&self.shared.status.borrow());
                self.fatal(&msg);
                return Err(ExitError::new(exit::MODEL_UNAVAILABLE, msg));
            }
            Decision::LauncherMissing => {
                let msg = format!(
                    "{exit_desc} (PATH={})",
                    std::env::var("PATH").unwrap_or_default()
                );
                self.fatal(&msg);
                let code = launcher_code.unwrap_or(exit::ENGINE_NOT_FOUND);
                return Err(ExitError::new(code, msg));
            }
            Decision::UserArgRejected => {
                let tail = self
                    .shared
                    .status
                    .borrow()
                    .failures
                    .last()
                    .map(|f| f.log_tail.clone());
                let tail = tail.unwrap_or_default();
                let (flag, line) = engine::rejected_user_arg(
                    engine::FailureClass::BadArgs,
                    &tail,
                    &launch.user_flags,
                )
                .unwrap_or_default();
                let msg = format!(
                    "the engine refused `{flag}` from --engine-args / AIM_ENGINE_ARGS (bad_args): \
                     {line}. Fix or remove it; no other recipe can help, so none is tried"
                );
                self.fatal(&msg);
                return Err(ExitError::new(exit::USAGE, msg));
            }
            Decision::GpuFault => {
                // `exit_desc` is the fault's message: the GPU, what happened, what to check.
                tracing::error!("{exit_desc}");
                self.fatal(exit_desc);
                return Err(ExitError::new(exit::GAVE_UP, exit_desc.to_string()));
            }
            Decision::EndGroup => {
                let msg = format!(
                    "{exit_desc}; a group restarts as one: this node ends with {} so that its \
                     launcher starts every node of the group again (under LeaderWorkerSet \
                     RecreateGroupOnPodRestart recreates the group)",
                    exit::GROUP_LOST
                );
                tracing::error!("{msg}");
                self.fatal(&msg);
                return Err(ExitError::new(exit::GROUP_LOST, msg));
            }
            Decision::GiveUp => {
                let msg = give_up_summary(&self.shared.status.borrow());
                self.fatal("gave up: every restart and every fallback recipe failed");
                return Err(ExitError::new(exit::GAVE_UP, msg));
            }
        }
        Ok(Duration::ZERO)
    }

    /// Publishes a new attempt of `launch` (phase, `/status`, the engine port); its number.
    fn begin_attempt(&self, launch: &Launch) -> u32 {
        self.event(Event::Launching, &launch.recipe_id);
        let attempt = self.shared.status.borrow().attempt + 1;
        self.update(|s| {
            s.attempt = attempt;
            s.recipe = Some(RecipeStatus {
                id: launch.recipe_id.clone(),
                engine: launch.engine.as_str().to_string(),
                gpu_count: launch.gpu_count,
                precision: launch.precision.as_str().to_string(),
            });
            s.gpus = launch
                .gpus
                .iter()
                .map(|g| GpuStatus {
                    ordinal: g.ordinal,
                    product: g.product.clone(),
                    pci: g.pci.clone(),
                })
                .collect();
            s.engine_pid = None;
            s.ready_since_s = None;
        });
        self.shared
            .engine_port
            .store(launch.engine_port, std::sync::atomic::Ordering::Relaxed);
        attempt
    }

    /// Spawns and supervises one attempt: Ok(status) when a stop ended the run.
    async fn attempt(
        &mut self,
        launch: &Launch,
        attempt: u32,
        versions: &mut HashMap<String, Option<String>>,
    ) -> Result<u8, Failed> {
        let env = spawn::build_env(spawn::process_env(), &launch.env);
        let argv = self.gate_version(launch, &env, versions).await;
        tracing::info!(attempt, recipe = %launch.recipe_id, "starting the engine: {}", argv.join(" "));
        match spawn::spawn_engine(&self.reaper, &argv, &env) {
            Ok(sp) => match self.run_attempt(launch, sp).await {
                AttemptEnd::Stopped(code) => Ok(code),
                AttemptEnd::Failed {
                    failure,
                    exit,
                    was_ready,
                    tail,
                } => Err(Failed {
                    failure,
                    exit,
                    was_ready,
                    tail,
                    launcher_code: None,
                }),
            },
            Err(e) => {
                tracing::error!("{e}");
                let failure = match e {
                    SpawnError::NotFound(_) | SpawnError::NotExecutable(..) => {
                        Failure::LauncherMissing
                    }
                    SpawnError::Other(..) => Failure::Exited {
                        class: engine::FailureClass::Unknown,
                        suggested_max_model_len: None,
                    },
                };
                let launcher_code = Some(match e {
                    SpawnError::NotExecutable(..) => exit::ENGINE_NOT_EXECUTABLE,
                    SpawnError::NotFound(_) | SpawnError::Other(..) => exit::ENGINE_NOT_FOUND,
                });
                self.event(Event::AttemptFailed, "spawn failed");
                Err(Failed {
                    failure,
                    exit: e.to_string(),
                    was_ready: false,
                    tail: Vec::new(),
                    launcher_code,
                })
            }
        }
    }

    /// Records a failed attempt and the decision taken on it (`/status`, log, metrics);
    /// returns the description of how the attempt ended.
    fn record_failure(
        &self,
        launch: &Launch,
        attempt: u32,
        failed: Failed,
        decision: &Decision,
    ) -> String {
        let failure = failed.failure;
        let record = AttemptFailure {
            attempt,
            recipe_id: launch.recipe_id.clone(),
            class: failure.class_str().to_string(),
            exit: failed.exit.clone(),
            action: decision.action_str().to_string(),
            at_s: self.elapsed().as_secs_f64(),
            log_tail: failed.tail,
        };
        tracing::warn!(
            attempt,
            recipe = %launch.recipe_id,
            class = failure.class_str(),
            "engine attempt failed ({}); next: {}",
            failed.exit,
            decision.action_str()
        );
        self.update(|s| {
            s.failures.push(record);
            s.engine_pid = None;
            s.ready_since_s = None;
        });
        if matches!(
            decision,
            Decision::Restart { .. }
                | Decision::RetryMaxModelLen { .. }
                | Decision::NewPort
                | Decision::NextLaunch { .. }
        ) {
            // Every relaunch counts, whatever the recipe: `attempt` - 1 == `restarts`.
            self.update(|s| s.restarts += 1);
            self.shared.metrics.restart(failure.class_str());
        }
        failed.exit
    }

    /// Probes the engine version once per launcher and applies the version gate.
    async fn gate_version(
        &mut self,
        launch: &Launch,
        env: &[(String, String)],
        cache: &mut HashMap<String, Option<String>>,
    ) -> Vec<String> {
        let Some(probe) = version_probe_argv(launch) else {
            return launch.argv.clone();
        };
        let key = probe.join(" ");
        let version = match cache.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = self.run_version_probe(&probe, env).await;
                cache.insert(key, v.clone());
                v
            }
        };
        let Some(version) = version else {
            return launch.argv.clone();
        };
        self.update(|s| s.engine_version = Some(version.clone()));
        let (argv, notes) = engine::gate_for_version(launch.engine, &version, launch.argv.clone());
        for n in notes {
            tracing::info!("engine {version}: {n}");
        }
        argv
    }

    /// Runs a version probe through our own spawn and reaper; the first line it prints is
    /// the version. Any failure means "unknown" (the launch goes ahead ungated).
    async fn run_version_probe(
        &mut self,
        argv: &[String],
        env: &[(String, String)],
    ) -> Option<String> {
        let mut sp = match spawn::spawn_engine(&self.reaper, argv, env) {
            Ok(sp) => sp,
            Err(e) => {
                tracing::debug!("version probe not run: {e}");
                return None;
            }
        };
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let (tx, rx) = oneshot::channel();
        if let Some(mut stdout) = sp.child.stdout.take() {
            let out = out.clone();
            let _ = signals::with_all_blocked(|| {
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        use std::io::Read;
                        let mut buf = Vec::new();
                        let _ = stdout.read_to_end(&mut buf);
                        *out.lock().unwrap_or_else(|p| p.into_inner()) = buf;
                        let _ = tx.send(());
                    })
            });
        }
        // The probe's stderr is not the engine's log: an engine that is not installed answers
        // with a Python traceback, which must not come before our own message. Its last line
        // goes to the debug log.
        let err_tail = Arc::new(Mutex::new(logs::Ring::new(1)));
        let err_done = sp
            .child
            .stderr
            .take()
            .and_then(|stderr| logs::start_copy(stderr, Sink::Discard, err_tail.clone()).ok());
        let pid = sp.pid;
        let status = tokio::time::timeout(VERSION_PROBE_TIMEOUT, &mut sp.exit).await;
        if status.is_err() {
            tracing::warn!(
                "version probe `{}` took too long; going on without it",
                argv.join(" ")
            );
        }
        tree::kill_tree(&self.reaper, Some(pid), SWEEP_LIMIT).await;
        let _ = tokio::time::timeout(LOG_DRAIN, rx).await;
        if let Some(done) = err_done {
            let _ = tokio::time::timeout(LOG_DRAIN, done).await;
        }
        if let Some(last) = logs::lock(&err_tail).last_line() {
            tracing::debug!("version probe `{}` said on stderr: {last}", argv.join(" "));
        }
        let text =
            String::from_utf8_lossy(&out.lock().unwrap_or_else(|p| p.into_inner())).to_string();
        match status {
            Ok(Ok(ExitKind::Code(0))) => engine::parse_version_output(&text),
            _ => None,
        }
    }

    /// Sleeps `d` (backoff) while handling signals; Some(code) when a stop ended the run.
    async fn pause(&mut self, d: Duration) -> Option<u8> {
        if self.stop_requested {
            return Some(self.finish_idle_stop().await);
        }
        let until = Instant::now() + d;
        match self
            .await_handling_signals(
                std::future::pending::<()>(),
                Some(until),
                None,
                EndsOn::AnyStop,
            )
            .await
        {
            Waited::Stop => Some(self.finish_idle_stop().await),
            Waited::Done(()) | Waited::Deadline => None,
        }
    }

    /// Waits for VRAM (logged, bounded by vram_wait_timeout); Some(code) on a stop.
    async fn wait_vram(&mut self, baseline: &Baseline, minors: &[u32]) -> Option<u8> {
        let root = self.cfg.root.clone();
        let timeout = self.cfg.vram_wait_timeout;
        let wait = vram::wait_released(&root, baseline, minors, timeout);
        match self
            .await_handling_signals(wait, None, None, EndsOn::AnyStop)
            .await
        {
            Waited::Done(r) => {
                match r {
                    Ok(t) if t > Duration::from_millis(1) => {
                        tracing::info!("VRAM released after {:.1}s", t.as_secs_f64());
                    }
                    Ok(_) => {}
                    Err(held) => tracing::warn!(
                        "VRAM still held after {timeout:?} ({held}); relaunching anyway"
                    ),
                }
                None
            }
            Waited::Deadline => None,
            Waited::Stop => Some(self.finish_idle_stop().await),
        }
    }

    /// A stop while no engine runs: drain the port (a second stop request ends the drain),
    /// then end with 0.
    pub(super) async fn finish_idle_stop(&mut self) -> u8 {
        let until = Instant::now() + self.cfg.stop_timeout;
        let shared = self.shared.clone();
        let _ = self
            .await_handling_signals(
                shared.inflight.wait_idle(),
                Some(until),
                None,
                EndsOn::SecondStop,
            )
            .await;
        self.event(Event::Stopped, "stopped");
        exit::OK
    }
}

/// Sleeps until `deadline`; forever when there is none.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The version probe for a launch: the engine module decides from the launcher override
/// (none for a launcher that is not the real engine, e.g. the test double).
fn version_probe_argv(launch: &Launch) -> Option<Vec<String>> {
    let var = match launch.engine {
        crate::types::Engine::Vllm => "AIM_VLLM_COMMAND",
        crate::types::Engine::Sglang => "AIM_SGLANG_COMMAND",
    };
    let launcher = std::env::var(var).ok().filter(|s| !s.trim().is_empty());
    engine::version_probe(launch.engine, launcher.as_deref())
}
