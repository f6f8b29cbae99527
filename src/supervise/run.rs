//! The supervisor loop: the thin IO shell around `machine`.
//!
//! One current-thread tokio runtime runs everything: signal streams, the reaper, the public
//! port, readiness and liveness probes, and this loop, which also spawns every engine (one
//! long-lived thread context; no PR_SET_PDEATHSIG: a watchdog in the engine's process group
//! stops it if we die, see `spawn`).
//!
//! Exit status (see also `exit.rs`):
//! - A stop we were asked for (SIGTERM/SIGINT/SIGQUIT): the status of the engine attempt that
//!   stop ended (its exit code, or 128+N when it died by signal N; 137 when it had to be
//!   killed after the grace). When no engine was running at that moment (backoff, VRAM
//!   wait), 0.
//! - An engine exit we did not ask for is never our exit status, even with code 0: it is a
//!   failure the policy acts on. The run only ends on its own with MODEL_UNAVAILABLE (66),
//!   GAVE_UP (70, after every restart and fallback, with a summary of every attempt), or
//!   ENGINE_NOT_FOUND (127) / ENGINE_NOT_EXECUTABLE (126) when no launch's launcher can run.

use super::logs::{self, SharedRing, Sink};
use super::machine::{Decision, Event, Failure, Policy, PolicyConfig, transition};
use super::probe::{Prober, Readiness};
use super::reaper::{self, Reaper};
use super::signals::{self, SigEvent};
use super::spawn::{self, SpawnError};
use super::tree;
use super::vram::{self, Baseline};
use crate::cli::{GlobalArgs, ServeArgs};
use crate::engine::{self, ExitKind};
use crate::exit::{self, ExitError};
use crate::launch::Launch;
use crate::notify::Notifier;
use crate::plan::Plan;
use crate::shared::Shared;
use crate::status::{AttemptFailure, GpuStatus, LivenessStatus, RecipeStatus, Status};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Lines of the engine's output kept with each failure.
const FAILURE_TAIL: usize = 40;
/// How long the process-tree sweep may take before we give up on stragglers.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);
/// How long to wait for the engine's pipes to close after its tree is gone.
const LOG_DRAIN: Duration = Duration::from_millis(500);
/// How long a version probe may take.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Timings and switches of the loop (from `ServeArgs`).
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub stop_timeout: Duration,
    pub startup_timeout: Duration,
    pub liveness_interval: Duration,
    pub liveness_failures: u32,
    pub liveness_timeout: Duration,
    pub vram_wait_timeout: Duration,
    pub skip_test_inference: bool,
    pub policy: PolicyConfig,
    /// Readiness polling period while loading.
    pub poll_interval: Duration,
    /// Period of the progress line while loading.
    pub progress_interval: Duration,
}

impl Config {
    pub fn from_args(g: &GlobalArgs, a: &ServeArgs) -> Self {
        Config {
            root: g.root.clone(),
            stop_timeout: a.stop_timeout,
            startup_timeout: a.startup_timeout,
            liveness_interval: a.liveness_interval,
            liveness_failures: a.liveness_failures.max(1),
            liveness_timeout: a.liveness_timeout,
            vram_wait_timeout: a.vram_wait_timeout,
            skip_test_inference: a.skip_test_inference,
            policy: PolicyConfig {
                backoff: super::backoff::Backoff {
                    initial: a.backoff_initial,
                    max: a.backoff_max.max(a.backoff_initial),
                },
                restart_budget: a.restart_budget,
                restart_window: a.restart_window,
                max_port_retries: 5,
            },
            poll_interval: Duration::from_millis(200),
            // tokio intervals need a non-zero period.
            progress_interval: a.progress_interval.max(Duration::from_millis(100)),
        }
    }
}

/// `aim-engine serve`: the whole command, from the runtime up.
pub fn serve(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<u8> {
    become_subreaper();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve_async(g, a))
}

/// As PID 1 orphans come to us anyway; otherwise (systemd, `docker run --init`, Compose
/// `init: true`) ask the kernel to reparent our descendants' orphans to us.
fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        tracing::warn!(
            "not PID 1 and cannot become a child subreaper ({}): orphaned engine workers \
             will not be reaped by us",
            std::io::Error::last_os_error()
        );
    }
}

async fn serve_async(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<u8> {
    // Handlers first: as PID 1 an unhandled signal is dropped.
    let signals = signals::listen()?;
    let reaper = Arc::new(Reaper::new());
    tokio::spawn(reaper.clone().start()?);

    let addr = format!("{}:{}", a.host, a.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        ExitError::new(
            exit::FAILURE,
            format!(
                "cannot listen on {addr}: {e}; choose another port with --port / AIM_PORT \
                 or another address with --host / AIM_HOST"
            ),
        )
    })?;
    // The address really bound (`--port 0` picks one), for the first log line.
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_or(addr.clone(), |l| l.to_string())
    );
    let model = a.select.model.clone().unwrap_or_default();
    let engine_port = a
        .select
        .engine_port
        .unwrap_or_else(|| a.port.saturating_add(1));
    let shared = Arc::new(Shared::new(&model, engine_port));
    let notifier = Arc::new(Notifier::from_env());
    // WATCHDOG=1 from a task on this current-thread runtime: a ping proves that the one
    // thread running the supervisor, the reaper and the public port is not blocked. It does
    // not prove the supervisor's own loop makes progress (that loop may rightly sleep for a
    // whole backoff); its deadlines (startup, stop grace, liveness) cover that.
    if let Some(every) = notifier.watchdog_ping_interval() {
        let n = notifier.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                n.watchdog();
            }
        });
    }
    let public = tokio::spawn(crate::http::serve_public_with(
        listener,
        shared.clone(),
        crate::http::PublicConfig {
            api_key: a.api_key.clone(),
            max_connections: a.max_connections,
            drain_grace: a.stop_timeout,
        },
        crate::http::Limits::from_args(&a),
    ));

    let cfg = Config::from_args(g, &a);
    let mut sup = Supervisor {
        shared: shared.clone(),
        reaper,
        signals,
        notifier,
        prober: Prober::new(),
        cfg,
        stop_requested: false,
        ready_once: false,
    };
    let result = match crate::commands::plan::resolve(g, &a.select, a.port) {
        Ok(plan) => {
            tracing::info!("{}", crate::logging::first_line(&url, &plan));
            sup.supervise(plan).await
        }
        Err(e) => {
            let code = exit::code_of(&e);
            sup.fatal(&format!("{e:#}"));
            Err(ExitError::new(code, format!("{e:#}")))
        }
    };
    // The port drains (if not already) and closes before we exit.
    shared.stopping.cancel();
    let _ = tokio::time::timeout(a.stop_timeout.max(Duration::from_secs(1)), public).await;
    Ok(result?)
}

/// The engine attempt being supervised.
struct Engine {
    pid: i32,
    exit: oneshot::Receiver<ExitKind>,
    status: Option<ExitKind>,
    logs: Vec<oneshot::Receiver<()>>,
    ring: SharedRing,
    spawned: Instant,
}

impl Engine {
    /// The exit status, once (cached; the receiver is never polled after it completed).
    async fn exited(&mut self) -> ExitKind {
        if let Some(s) = self.status {
            return s;
        }
        // The sender lives in the reaper for as long as the process runs.
        let s = (&mut self.exit).await.unwrap_or(ExitKind::Code(255));
        self.status = Some(s);
        s
    }

    fn tail(&self, n: usize) -> Vec<String> {
        logs::lock(&self.ring).tail(n)
    }
}

/// How one attempt ended.
enum AttemptEnd {
    /// We were asked to stop; the exit status to end with.
    Stopped(u8),
    Failed {
        failure: Failure,
        exit: String,
        was_ready: bool,
        tail: Vec<String>,
    },
}

/// What a signal means right now.
enum SigAction {
    /// The first stop request: drain, then stop the engine gracefully.
    BeginStop,
    /// A second stop request during the stop: kill the engine's group at once.
    KillNow,
    Forwarded,
}

/// What woke the attempt loop.
enum Wake {
    Exited(ExitKind),
    Signal(Option<SigEvent>),
    StartupDeadline,
    PollTick,
    Readiness(Readiness),
    Progress,
    LivenessTick,
    Liveness(Result<(), String>),
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T>>>;

pub struct Supervisor {
    shared: Arc<Shared>,
    reaper: Arc<Reaper>,
    signals: mpsc::UnboundedReceiver<SigEvent>,
    notifier: Arc<Notifier>,
    prober: Prober,
    cfg: Config,
    stop_requested: bool,
    ready_once: bool,
}

impl Supervisor {
    fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Applies a state-machine event; tells systemd about a new phase.
    fn event(&self, ev: Event, detail: &str) {
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

    fn update(&self, f: impl FnOnce(&mut Status)) {
        self.shared.status.send_modify(f);
    }

    /// Marks the run as given up (phase failed, `fatal` set).
    fn fatal(&self, message: &str) {
        self.update(|s| {
            s.fatal = Some(message.to_string());
            s.engine_pid = None;
        });
        self.event(Event::GaveUp, message);
    }

    fn on_signal(&mut self, ev: SigEvent, engine_pid: Option<i32>) -> SigAction {
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
        let mut policy = Policy::new(self.cfg.policy, launchers);
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
            let env = spawn::build_env(spawn::process_env(), &launch.env);
            let argv = self.gate_version(&launch, &env, &mut versions).await;
            tracing::info!(attempt, recipe = %launch.recipe_id, "starting the engine: {}", argv.join(" "));
            let end = match spawn::spawn_engine(&self.reaper, &argv, &env) {
                Ok(sp) => self.run_attempt(&launch, sp).await,
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
                    self.event(Event::AttemptFailed, "spawn failed");
                    AttemptEnd::Failed {
                        failure,
                        exit: e.to_string(),
                        was_ready: false,
                        tail: Vec::new(),
                    }
                }
            };
            let (failure, exit_desc, was_ready, tail) = match end {
                AttemptEnd::Stopped(code) => return Ok(code),
                AttemptEnd::Failed {
                    failure,
                    exit,
                    was_ready,
                    tail,
                } => (failure, exit, was_ready, tail),
            };
            let decision = policy.on_failure(failure, was_ready, self.elapsed());
            let record = AttemptFailure {
                attempt,
                recipe_id: launch.recipe_id.clone(),
                class: failure.class_str().to_string(),
                exit: exit_desc.clone(),
                action: decision.action_str().to_string(),
                at_s: self.elapsed().as_secs_f64(),
                log_tail: tail,
            };
            tracing::warn!(
                attempt,
                recipe = %launch.recipe_id,
                class = failure.class_str(),
                "engine attempt failed ({exit_desc}); next: {}",
                decision.action_str()
            );
            self.update(|s| {
                s.failures.push(record);
                s.engine_pid = None;
                s.ready_since_s = None;
            });
            delay = Duration::ZERO;
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
            match decision {
                Decision::Restart { delay: d } => delay = d,
                Decision::RetryMaxModelLen { len } => {
                    tracing::info!("retrying {} with max model len {len}", launch.recipe_id);
                    launches[idx].argv =
                        engine::with_max_model_len(launch.engine, &launch.argv, len);
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
                    let code = if exit_desc.contains("cannot be executed") {
                        exit::ENGINE_NOT_EXECUTABLE
                    } else {
                        exit::ENGINE_NOT_FOUND
                    };
                    let msg = format!(
                        "{exit_desc} (PATH={})",
                        std::env::var("PATH").unwrap_or_default()
                    );
                    self.fatal(&msg);
                    return Err(ExitError::new(code, msg));
                }
                Decision::GiveUp => {
                    let msg = give_up_summary(&self.shared.status.borrow());
                    self.fatal("gave up: every restart and every fallback recipe failed");
                    return Err(ExitError::new(exit::GAVE_UP, msg));
                }
            }
        }
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
        if let Some(stderr) = sp.child.stderr.take() {
            let _ = logs::start_copy(
                stderr,
                Sink::Stderr,
                Arc::new(Mutex::new(logs::Ring::new(1))),
            );
        }
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
        let until = tokio::time::Instant::now() + d;
        loop {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                ev = self.signals.recv() => ev,
            };
            if let Some(ev) = ev
                && let SigAction::BeginStop | SigAction::KillNow = self.on_signal(ev, None)
            {
                return Some(self.finish_idle_stop().await);
            }
        }
    }

    /// Waits for VRAM (logged, bounded by vram_wait_timeout); Some(code) on a stop.
    async fn wait_vram(&mut self, baseline: &Baseline, minors: &[u32]) -> Option<u8> {
        let root = self.cfg.root.clone();
        let timeout = self.cfg.vram_wait_timeout;
        let wait = vram::wait_released(&root, baseline, minors, timeout);
        tokio::pin!(wait);
        loop {
            let ev = tokio::select! {
                r = &mut wait => {
                    match r {
                        Ok(t) if t > Duration::from_millis(1) => {
                            tracing::info!("VRAM released after {:.1}s", t.as_secs_f64());
                        }
                        Ok(_) => {}
                        Err(held) => tracing::warn!(
                            "VRAM still held after {timeout:?} ({held}); relaunching anyway"
                        ),
                    }
                    return None;
                }
                ev = self.signals.recv() => ev,
            };
            if let Some(ev) = ev
                && let SigAction::BeginStop | SigAction::KillNow = self.on_signal(ev, None)
            {
                return Some(self.finish_idle_stop().await);
            }
        }
    }

    /// A stop while no engine runs: drain the port (a second stop request ends the drain),
    /// then end with 0.
    async fn finish_idle_stop(&mut self) -> u8 {
        let until = tokio::time::Instant::now() + self.cfg.stop_timeout;
        loop {
            let ev = tokio::select! {
                _ = self.shared.inflight.wait_idle() => break,
                _ = tokio::time::sleep_until(until) => break,
                ev = self.signals.recv() => ev,
            };
            if let Some(ev) = ev
                && let SigAction::KillNow = self.on_signal(ev, None)
            {
                break;
            }
        }
        self.event(Event::Stopped, "stopped");
        exit::OK
    }

    /// Supervises one engine process from spawn to its end.
    async fn run_attempt(&mut self, launch: &Launch, mut sp: reaper::Spawned) -> AttemptEnd {
        let ring: SharedRing = Arc::new(Mutex::new(logs::Ring::new(logs::TAIL_LINES)));
        let mut log_done = Vec::new();
        if let Some(out) = sp.child.stdout.take() {
            match logs::start_copy(out, Sink::Stdout, ring.clone()) {
                Ok(rx) => log_done.push(rx),
                Err(e) => tracing::warn!("cannot copy the engine's stdout: {e}"),
            }
        }
        if let Some(err) = sp.child.stderr.take() {
            match logs::start_copy(err, Sink::Stderr, ring.clone()) {
                Ok(rx) => log_done.push(rx),
                Err(e) => tracing::warn!("cannot copy the engine's stderr: {e}"),
            }
        }
        let mut eng = Engine {
            pid: sp.pid,
            exit: sp.exit,
            status: None,
            logs: log_done,
            ring,
            spawned: Instant::now(),
        };
        let pid = eng.pid;
        self.shared.metrics.engine_starts.inc();
        self.update(|s| s.engine_pid = Some(pid));
        self.event(Event::Spawned, &format!("engine pid {pid}"));
        self.notifier
            .extend_timeout(self.cfg.progress_interval.saturating_mul(3));

        if self.stop_requested {
            // A stop arrived while we were launching.
            return self.stop_engine(&mut eng, false).await;
        }
        let port = launch.engine_port;
        let served = launch.served_model_name.clone();
        let deadline = tokio::time::Instant::now() + self.cfg.startup_timeout;
        let mut poll = tokio::time::interval(self.cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + self.cfg.progress_interval,
            self.cfg.progress_interval,
        );
        let mut liveness =
            tokio::time::interval(self.cfg.liveness_interval.max(Duration::from_millis(10)));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut readiness: Option<BoxFut<Readiness>> = None;
        let mut live: Option<BoxFut<Result<(), String>>> = None;
        let mut ready_at: Option<Instant> = None;
        let mut live_fails = 0u32;
        let mut last_detail = String::new();
        loop {
            let ready = ready_at.is_some();
            let wake = tokio::select! {
                biased;
                s = eng.exited() => Wake::Exited(s),
                ev = self.signals.recv() => Wake::Signal(ev),
                _ = tokio::time::sleep_until(deadline), if !ready => Wake::StartupDeadline,
                r = async { match readiness.as_mut() { Some(f) => f.await, None => std::future::pending().await } },
                    if readiness.is_some() => Wake::Readiness(r),
                r = async { match live.as_mut() { Some(f) => f.await, None => std::future::pending().await } },
                    if live.is_some() => Wake::Liveness(r),
                _ = poll.tick(), if !ready && readiness.is_none() => Wake::PollTick,
                _ = progress.tick(), if !ready => Wake::Progress,
                _ = liveness.tick(), if ready && live.is_none() => Wake::LivenessTick,
            };
            match wake {
                Wake::Exited(kind) => {
                    let desc = reaper::describe(kind);
                    tracing::warn!(pid, "the engine exited unexpectedly ({desc})");
                    self.event(Event::AttemptFailed, &desc);
                    // Workers may outlive the main process: the tree goes before anything else.
                    let tail = self.teardown(&mut eng).await;
                    let c = engine::classify(kind, &tail);
                    if let Some(ev) = &c.evidence {
                        tracing::info!("failure evidence: {ev}");
                    }
                    return AttemptEnd::Failed {
                        failure: Failure::Exited {
                            class: c.class,
                            suggested_max_model_len: c.suggested_max_model_len,
                        },
                        exit: desc,
                        was_ready: ready,
                        tail: last_n(tail, FAILURE_TAIL),
                    };
                }
                Wake::Signal(None) => {}
                Wake::Signal(Some(ev)) => match self.on_signal(ev, Some(pid)) {
                    SigAction::BeginStop => return self.stop_engine(&mut eng, false).await,
                    SigAction::KillNow => return self.stop_engine(&mut eng, true).await,
                    SigAction::Forwarded => {}
                },
                Wake::StartupDeadline => {
                    let msg = format!(
                        "not ready within {:?} (last check: {last_detail})",
                        self.cfg.startup_timeout
                    );
                    tracing::warn!("{msg}");
                    self.event(Event::AttemptFailed, "startup deadline");
                    return self
                        .end_alive(&mut eng, Failure::StartupTimeout, msg, false)
                        .await;
                }
                Wake::PollTick => {
                    let p = self.prober.clone();
                    let served = served.clone();
                    let test = !self.cfg.skip_test_inference;
                    let timeout = self.cfg.liveness_timeout;
                    readiness = Some(Box::pin(async move {
                        p.readiness(port, &served, test, timeout).await
                    }));
                }
                Wake::Readiness(r) => {
                    readiness = None;
                    let line = logs::lock(&eng.ring).last_line();
                    if line.is_some() {
                        self.shared.status.send_if_modified(|s| {
                            let changed = s.last_log_line != line;
                            s.last_log_line = line;
                            changed
                        });
                    }
                    match r {
                        Readiness::NotHealthy(d) => last_detail = d,
                        Readiness::Unauthorized(msg) => {
                            tracing::error!("{msg}");
                            self.event(Event::AttemptFailed, "the engine refuses our checks");
                            let bad_args = Failure::Exited {
                                class: engine::FailureClass::BadArgs,
                                suggested_max_model_len: None,
                            };
                            return self.end_alive(&mut eng, bad_args, msg, false).await;
                        }
                        Readiness::Healthy(d) => {
                            self.event(Event::Healthy, "validating");
                            last_detail = d;
                        }
                        Readiness::Ready => {
                            self.event(Event::Healthy, "validating");
                            self.event(Event::Validated, &served);
                            let took = eng.spawned.elapsed();
                            ready_at = Some(Instant::now());
                            self.shared
                                .metrics
                                .startup_duration_seconds
                                .set(took.as_secs_f64());
                            self.update(|s| s.ready_since_s = Some(0.0));
                            tracing::info!(
                                "engine ready after {:.1}s: serving `{served}`",
                                took.as_secs_f64()
                            );
                            if !self.ready_once {
                                self.ready_once = true;
                                self.notifier.ready();
                            }
                            liveness.reset();
                        }
                    }
                }
                Wake::Progress => {
                    let line = logs::lock(&eng.ring).last_line();
                    tracing::info!(
                        "{} for {:.0}s; last engine line: {}",
                        self.shared.phase(),
                        eng.spawned.elapsed().as_secs_f64(),
                        line.as_deref().unwrap_or("(none yet)")
                    );
                    self.update(|s| s.last_log_line = line);
                    self.notifier
                        .extend_timeout(self.cfg.progress_interval.saturating_mul(3));
                }
                Wake::LivenessTick => {
                    let p = self.prober.clone();
                    let timeout = self.cfg.liveness_timeout;
                    live = Some(Box::pin(async move { p.health(port, timeout).await }));
                }
                Wake::Liveness(r) => {
                    live = None;
                    let ok = r.is_ok();
                    if ok {
                        live_fails = 0;
                    } else {
                        live_fails += 1;
                        self.shared.metrics.liveness_failures.inc();
                    }
                    let at_s = self.elapsed().as_secs_f64();
                    let since = ready_at.map(|t| t.elapsed().as_secs_f64());
                    let line = logs::lock(&eng.ring).last_line();
                    let detail = r.err().unwrap_or_else(|| "ok".into());
                    self.update(|s| {
                        s.last_liveness = Some(LivenessStatus {
                            ok,
                            at_s,
                            detail: detail.clone(),
                            consecutive_failures: live_fails,
                        });
                        s.ready_since_s = since;
                        s.last_log_line = line;
                    });
                    if live_fails >= self.cfg.liveness_failures {
                        let msg = format!("hung: {live_fails} liveness checks failed ({detail})");
                        tracing::warn!("{msg}");
                        self.event(Event::AttemptFailed, "hung");
                        return self.end_alive(&mut eng, Failure::Hung, msg, true).await;
                    } else if !ok {
                        tracing::warn!(
                            "liveness check failed ({live_fails}/{}): {detail}",
                            self.cfg.liveness_failures
                        );
                    }
                }
            }
        }
    }

    /// Ends an attempt whose process is still alive (hung, startup deadline): SIGTERM, the
    /// grace, then the tree. A stop request meanwhile turns it into a stop.
    async fn end_alive(
        &mut self,
        eng: &mut Engine,
        failure: Failure,
        why: String,
        was_ready: bool,
    ) -> AttemptEnd {
        let kill_now = self.term_and_wait(eng).await;
        let tail = self.teardown(eng).await;
        if self.stop_requested {
            let _ = kill_now;
            return self.stopped(eng).await;
        }
        AttemptEnd::Failed {
            failure,
            exit: why,
            was_ready,
            tail: last_n(tail, FAILURE_TAIL),
        }
    }

    /// SIGTERM to the main pid once, then up to the grace for it to end. Returns early on a
    /// (second) stop request. Signals meanwhile are handled.
    async fn term_and_wait(&mut self, eng: &mut Engine) -> bool {
        if eng.status.is_some() {
            return false;
        }
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(eng.pid, libc::SIGTERM);
        }
        let until = tokio::time::Instant::now() + self.cfg.stop_timeout;
        loop {
            let ev = tokio::select! {
                _ = eng.exited() => return false,
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(pid = eng.pid, "the engine did not exit within {:?} of SIGTERM; killing its process group", self.cfg.stop_timeout);
                    return false;
                }
                ev = self.signals.recv() => ev,
            };
            if let Some(ev) = ev {
                match self.on_signal(ev, Some(eng.pid)) {
                    SigAction::KillNow => return true,
                    SigAction::BeginStop | SigAction::Forwarded => {}
                }
            }
        }
    }

    /// The requested stop: drain the port (up to the grace), SIGTERM the engine, wait up to
    /// the grace, kill the group, sweep. `kill_now`: a second request already came.
    async fn stop_engine(&mut self, eng: &mut Engine, mut kill_now: bool) -> AttemptEnd {
        if !kill_now {
            let until = tokio::time::Instant::now() + self.cfg.stop_timeout;
            loop {
                let ev = tokio::select! {
                    _ = self.shared.inflight.wait_idle() => break,
                    _ = tokio::time::sleep_until(until) => {
                        tracing::warn!("requests still in flight after {:?}; stopping the engine anyway", self.cfg.stop_timeout);
                        break;
                    }
                    ev = self.signals.recv() => ev,
                };
                if let Some(ev) = ev
                    && let SigAction::KillNow = self.on_signal(ev, Some(eng.pid))
                {
                    kill_now = true;
                    break;
                }
            }
        }
        if !kill_now {
            self.term_and_wait(eng).await;
        }
        self.teardown(eng).await;
        self.stopped(eng).await
    }

    async fn stopped(&mut self, eng: &mut Engine) -> AttemptEnd {
        let status = match eng.status {
            Some(s) => s,
            None => tokio::time::timeout(SWEEP_LIMIT, eng.exited())
                .await
                .unwrap_or(ExitKind::Signal(libc::SIGKILL)),
        };
        let code = reaper::exit_code(status);
        tracing::info!(
            "engine stopped ({}); exiting with {code}",
            reaper::describe(status)
        );
        self.update(|s| s.engine_pid = None);
        self.event(Event::Stopped, "stopped");
        AttemptEnd::Stopped(code)
    }

    /// Kills the engine's group, sweeps the rest of the tree, waits for the pipes to close;
    /// returns the log tail.
    async fn teardown(&mut self, eng: &mut Engine) -> Vec<String> {
        let swept = tree::kill_tree(&self.reaper, Some(eng.pid), SWEEP_LIMIT).await;
        if swept > 0 {
            tracing::info!("killed {swept} process(es) left of the engine's tree");
        }
        let drain_until = tokio::time::Instant::now() + LOG_DRAIN;
        for rx in eng.logs.drain(..) {
            let _ = tokio::time::timeout_at(drain_until, rx).await;
        }
        let tail = eng.tail(logs::TAIL_LINES);
        let last = tail.last().cloned();
        self.update(|s| {
            s.engine_pid = None;
            if last.is_some() {
                s.last_log_line = last;
            }
        });
        tail
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

fn last_n(mut v: Vec<String>, n: usize) -> Vec<String> {
    let skip = v.len().saturating_sub(n);
    v.split_off(skip)
}

/// A free loopback port (the kernel's choice, released at once for the engine to bind).
fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `argv` with `--port` set to `port` (replaced where present, else appended).
pub fn with_port(argv: &[String], port: u16) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 2);
    let mut found = false;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--port" && i + 1 < argv.len() {
            out.push(a.clone());
            out.push(port.to_string());
            found = true;
            i += 2;
            continue;
        }
        if a.starts_with("--port=") {
            out.push(format!("--port={port}"));
            found = true;
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    if !found {
        out.push("--port".into());
        out.push(port.to_string());
    }
    out
}

/// What the user must fix when the model cannot be had, from the last failure.
pub fn model_unavailable_message(s: &Status) -> String {
    let last = s.failures.last();
    let class = last.map(|f| f.class.as_str()).unwrap_or("model_not_found");
    let fix = match class {
        "gated" => {
            "the model is gated: accept its license on huggingface.co and pass a token \
                    with access (HF_TOKEN)"
        }
        "offline" => {
            "the model is not in the local cache and the hub cannot be reached: \
                      mount a cache that has it (HF_HOME), or allow network access (unset \
                      HF_HUB_OFFLINE)"
        }
        _ => {
            "the model was not found: check the model id (org/name) or the local path, and \
              for a private repository pass a token with access (HF_TOKEN)"
        }
    };
    let evidence = last
        .and_then(|f| f.log_tail.last())
        .map(|l| format!("\n  engine said: {l}"))
        .unwrap_or_default();
    format!(
        "model `{}` is unavailable ({class}): {fix}{evidence}",
        s.model
    )
}

/// The summary printed when the chain is exhausted: every attempt and what it led to.
pub fn give_up_summary(s: &Status) -> String {
    let mut out = format!(
        "gave up on `{}` after {} attempt(s); every restart and fallback recipe failed:",
        s.model,
        s.failures.len()
    );
    for f in &s.failures {
        out.push_str(&format!(
            "\n  attempt {}: recipe {}: {} ({}) -> {}",
            f.attempt, f.recipe_id, f.exit, f.class, f.action
        ));
        if let Some(l) = f.log_tail.last() {
            out.push_str(&format!("\n      last line: {l}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn port_rewrite() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["vllm", "serve", "m", "--port", "8001"],
                &["vllm", "serve", "m", "--port", "9"],
            ),
            (&["x", "--port=8001", "--y"], &["x", "--port=9", "--y"]),
            (
                &["x", "--host", "127.0.0.1"],
                &["x", "--host", "127.0.0.1", "--port", "9"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(with_port(&v(input), 9), v(want));
        }
    }

    #[test]
    fn messages_name_the_fix_and_every_attempt() {
        let mut s = Status::new("org/m");
        let f = |attempt, class: &str, action: &str| AttemptFailure {
            attempt,
            recipe_id: format!("r{attempt}"),
            class: class.into(),
            exit: "exit 1".into(),
            action: action.into(),
            at_s: 0.0,
            log_tail: vec![format!("line {attempt}")],
        };
        s.failures = vec![f(1, "oom", "next_recipe"), f(2, "unknown", "give_up")];
        let sum = give_up_summary(&s);
        assert!(sum.contains("after 2 attempt(s)"), "{sum}");
        assert!(
            sum.contains("attempt 1: recipe r1: exit 1 (oom) -> next_recipe"),
            "{sum}"
        );
        assert!(
            sum.contains("attempt 2: recipe r2: exit 1 (unknown) -> give_up"),
            "{sum}"
        );
        assert!(sum.contains("last line: line 2"), "{sum}");

        for (class, needle) in [
            ("gated", "HF_TOKEN"),
            ("offline", "HF_HUB_OFFLINE"),
            ("model_not_found", "check the model id"),
        ] {
            s.failures = vec![f(1, class, "model_unavailable")];
            let m = model_unavailable_message(&s);
            assert!(m.contains(needle) && m.contains("org/m"), "{class}: {m}");
        }
    }
}
