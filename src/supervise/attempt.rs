//! One engine attempt, from spawn to its end: readiness, liveness, the hang watch, progress
//! lines, the startup deadline, and the stop.
//!
//! Waiting is separated from acting: `next_event` selects over everything that can wake the
//! attempt (the engine's exit, a signal, the earliest timer, a probe's answer) and
//! `handle_event` acts on what came. The timers are plain deadlines in `Timers`; the loop
//! sleeps until the earliest armed one.

mod gpu;
mod group;
mod watch;

use super::logs::{self, SharedRing, Sink};
use super::machine::{Event, Failure};
use super::probe::{ProbeError, Readiness};
use super::progress::{Sample, Watch};
use super::reaper::{self, Spawned};
use super::signals::SigEvent;
use super::supervisor::{
    EndsOn, LOG_DRAIN, SWEEP_LIMIT, SigAction, Supervisor, Waited, sleep_until,
};
use super::tree;
use crate::engine::{self, ExitKind};
use crate::launch::Launch;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Lines of the engine's output kept with each failure.
const FAILURE_TAIL: usize = 40;

/// The engine process of the attempt being supervised.
pub(super) struct RunningEngine {
    pid: i32,
    exit: oneshot::Receiver<ExitKind>,
    status: Option<ExitKind>,
    logs: Vec<oneshot::Receiver<()>>,
    ring: SharedRing,
    spawned: Instant,
}

impl RunningEngine {
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

    fn last_line(&self) -> Option<String> {
        logs::lock(&self.ring).last_line()
    }
}

/// How one attempt ended.
pub(super) enum AttemptEnd {
    /// We were asked to stop; the exit status to end with.
    Stopped(u8),
    Failed {
        failure: Failure,
        exit: String,
        was_ready: bool,
        tail: Vec<String>,
    },
}

/// The attempt's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Not ready within the startup timeout.
    Startup,
    /// Time for the next readiness probe (while loading).
    Poll,
    /// Time for the next progress line (while loading).
    Progress,
    /// Time for the next liveness probe (once ready).
    Liveness,
    /// Time for the next progress sample (the hang watch).
    Sample,
    /// Time to judge the multi-node group (`attempt::group`).
    Group,
}

/// Every timer of an attempt as a deadline. A timer fires only while it is armed (see
/// `Attempt::next_timer`); a periodic one is then set again from the time it fired.
struct Timers {
    startup: Instant,
    poll: Instant,
    progress: Instant,
    liveness: Instant,
    sample: Instant,
    group: Instant,
}

/// What woke the attempt.
enum Wake {
    Exited(ExitKind),
    Signal(Option<SigEvent>),
    Timer(Timer),
    Readiness(Readiness),
    Liveness(Result<(), ProbeError>),
    Sampled(Sampled),
}

/// A hang sample and the launch's GPU signals read with it.
type Sampled = (Sample, Vec<crate::gpu::GpuSignals>);

type BoxFut<T> = Pin<Box<dyn Future<Output = T>>>;

/// The state of one attempt between wakes.
struct Attempt {
    eng: RunningEngine,
    /// What was launched (its engine port, served name, the user's flags).
    launch: Launch,
    timers: Timers,
    readiness: Option<BoxFut<Readiness>>,
    live: Option<BoxFut<Result<(), ProbeError>>>,
    ready_at: Option<Instant>,
    live_fails: u32,
    /// Idle probes missed in a row.
    idle_fails: u32,
    last_detail: String,
    /// The hang watch and its sample in flight.
    watch: Watch,
    sampling: Option<BoxFut<Sampled>>,
    /// The launch's GPU signals at the start of the attempt (`supervise::gpu_fault`).
    gpu_baseline: Vec<crate::gpu::GpuSignals>,
    /// When the last idle probe (a 1-token completion) was sent, and whether the liveness
    /// probe in flight is one.
    last_idle_probe: Option<Instant>,
    live_is_idle_probe: bool,
    /// A group node: how often the group is judged.
    group_every: Option<Duration>,
    /// A group's worker: its headless engine has no API, so no readiness, liveness or
    /// hang probes; it is ready when the leader serves (`attempt::group`).
    worker: bool,
}

impl Attempt {
    fn ready(&self) -> bool {
        self.ready_at.is_some()
    }

    /// The earliest armed timer. Loading: the startup deadline, the readiness poll (when no
    /// probe is in flight) and the progress line; ready: the liveness probe (when none is in
    /// flight). On a tie the order above wins.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let t = &self.timers;
        let sample = self.sampling.is_none().then_some((t.sample, Timer::Sample));
        let group = self.group_every.map(|_| (t.group, Timer::Group));
        let probes = !self.worker;
        let armed = if self.ready() {
            [
                None,
                None,
                None,
                (probes && self.live.is_none()).then_some((t.liveness, Timer::Liveness)),
                sample,
                group,
            ]
        } else {
            [
                Some((t.startup, Timer::Startup)),
                (probes && self.readiness.is_none()).then_some((t.poll, Timer::Poll)),
                Some((t.progress, Timer::Progress)),
                None,
                sample,
                group,
            ]
        };
        armed.into_iter().flatten().min_by_key(|(at, _)| *at)
    }
}

/// Awaits an optional in-flight probe; never completes when there is none.
async fn answer<T>(fut: &mut Option<BoxFut<T>>) -> T {
    match fut.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Supervises one engine process from spawn to its end.
    pub(super) async fn run_attempt(&mut self, launch: &Launch, sp: Spawned) -> AttemptEnd {
        let mut eng = self.adopt(sp);
        if self.stop_requested {
            // A stop arrived while we were launching.
            return self.stop_engine(&mut eng, false).await;
        }
        let gpu_baseline = self.read_gpus(launch);
        let now = Instant::now();
        let mut a = Attempt {
            eng,
            launch: launch.clone(),
            timers: Timers {
                startup: now + self.cfg.startup_timeout,
                poll: now,
                progress: now + self.cfg.progress_interval,
                liveness: now,
                sample: now + self.cfg.hang_sample_interval,
                group: now,
            },
            readiness: None,
            live: None,
            ready_at: None,
            live_fails: 0,
            idle_fails: 0,
            last_detail: String::new(),
            watch: Watch::new(Duration::ZERO),
            sampling: None,
            gpu_baseline,
            last_idle_probe: None,
            live_is_idle_probe: false,
            group_every: self.shared.group.as_ref().map(|g| {
                g.timing
                    .interval
                    .clamp(Duration::from_millis(50), Duration::from_secs(5))
            }),
            worker: self
                .shared
                .group
                .as_ref()
                .is_some_and(|g| g.role() == crate::group::Role::Worker),
        };
        let baseline = a.gpu_baseline.clone();
        self.on_gpus(&a, &baseline);
        loop {
            let wake = self.next_event(&mut a).await;
            if let Some(end) = self.handle_event(&mut a, wake).await {
                return end;
            }
        }
    }

    /// Takes over a spawned engine: copies its output, publishes its pid.
    fn adopt(&mut self, mut sp: Spawned) -> RunningEngine {
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
        let pid = sp.pid;
        self.shared.metrics.engine_starts.inc();
        self.update(|s| s.engine_pid = Some(pid));
        self.event(Event::Spawned, &format!("engine pid {pid}"));
        // Planning and spawning are behind us: their code and heap can go.
        crate::memory::release_startup();
        self.notifier
            .extend_timeout(self.cfg.progress_interval.saturating_mul(3));
        RunningEngine {
            pid,
            exit: sp.exit,
            status: None,
            logs: log_done,
            ring,
            spawned: Instant::now(),
        }
    }

    /// Waits for whatever wakes the attempt next. The engine's exit comes first, then
    /// signals, then timers, then probe answers.
    async fn next_event(&mut self, a: &mut Attempt) -> Wake {
        let timer = a.next_timer();
        let at = timer.map(|(at, _)| at);
        tokio::select! {
            biased;
            s = a.eng.exited() => Wake::Exited(s),
            ev = self.signals.recv() => Wake::Signal(ev),
            // With no timer armed this never completes (and the wake is then a no-op).
            _ = sleep_until(at) => timer.map_or(Wake::Signal(None), |(_, t)| Wake::Timer(t)),
            r = answer(&mut a.readiness), if a.readiness.is_some() => Wake::Readiness(r),
            r = answer(&mut a.live), if a.live.is_some() => Wake::Liveness(r),
            s = answer(&mut a.sampling), if a.sampling.is_some() => Wake::Sampled(s),
        }
    }

    /// Acts on one wake; Some when the attempt is over.
    async fn handle_event(&mut self, a: &mut Attempt, wake: Wake) -> Option<AttemptEnd> {
        match wake {
            Wake::Exited(kind) => Some(self.on_exit(a, kind).await),
            Wake::Signal(None) => None,
            Wake::Signal(Some(ev)) => match self.on_signal(ev, Some(a.eng.pid)) {
                SigAction::BeginStop => Some(self.stop_engine(&mut a.eng, false).await),
                SigAction::KillNow => Some(self.stop_engine(&mut a.eng, true).await),
                SigAction::Forwarded => None,
            },
            Wake::Timer(Timer::Startup) => {
                let msg = format!(
                    "not ready within {:?} (last check: {}){}",
                    self.cfg.startup_timeout,
                    a.last_detail,
                    self.group_wait_detail()
                );
                tracing::warn!("{msg}");
                self.event(Event::AttemptFailed, "startup deadline");
                Some(
                    self.end_alive(&mut a.eng, Failure::StartupTimeout, msg, false)
                        .await,
                )
            }
            Wake::Timer(Timer::Poll) => {
                a.timers.poll = Instant::now() + self.cfg.poll_interval;
                let p = self.prober.clone();
                let served = a.launch.served_model_name.clone();
                let (port, test) = (a.launch.engine_port, !self.cfg.skip_test_inference);
                let timeout = self.cfg.liveness_timeout;
                a.readiness = Some(Box::pin(async move {
                    p.readiness(port, &served, test, timeout).await
                }));
                None
            }
            Wake::Timer(Timer::Progress) => {
                a.timers.progress += self.cfg.progress_interval;
                self.on_progress(a);
                None
            }
            Wake::Timer(Timer::Liveness) => {
                a.timers.liveness = Instant::now() + self.liveness_interval();
                self.start_liveness_probe(a);
                None
            }
            Wake::Timer(Timer::Group) => {
                let every = a.group_every.unwrap_or(Duration::from_secs(1));
                a.timers.group = Instant::now() + every;
                self.on_group(a).await
            }
            Wake::Timer(Timer::Sample) => {
                a.timers.sample = Instant::now() + self.cfg.hang_sample_interval;
                a.sampling = Some(self.sample(a));
                None
            }
            Wake::Sampled((s, gpus)) => {
                a.sampling = None;
                if let Some(f) = self.on_gpus(a, &gpus) {
                    return Some(self.end_gpu_fault(a, f).await);
                }
                self.on_sample(a, s).await
            }
            Wake::Readiness(Readiness::Unauthorized(msg)) => {
                a.readiness = None;
                // The engine was given a key of its own: a configuration error that a restart
                // does not fix, classed as bad args.
                tracing::error!("{msg}");
                self.event(Event::AttemptFailed, "the engine refuses our checks");
                let bad_args = Failure::Exited {
                    class: engine::FailureClass::BadArgs,
                    suggested_max_model_len: None,
                };
                Some(self.end_alive(&mut a.eng, bad_args, msg, false).await)
            }
            Wake::Readiness(r) => {
                a.readiness = None;
                self.on_readiness(a, r);
                None
            }
            Wake::Liveness(r) => {
                a.live = None;
                self.on_liveness(a, r).await
            }
        }
    }

    fn liveness_interval(&self) -> Duration {
        self.cfg.liveness_interval.max(Duration::from_millis(10))
    }

    /// The engine exited while we did not ask it to.
    async fn on_exit(&mut self, a: &mut Attempt, kind: ExitKind) -> AttemptEnd {
        let desc = reaper::describe(kind);
        tracing::warn!(pid = a.eng.pid, "the engine exited unexpectedly ({desc})");
        self.event(Event::AttemptFailed, &desc);
        // Workers may outlive the main process: the tree goes before anything else.
        let tail = self.teardown(&mut a.eng).await;
        if let Some(end) = self.exit_as_gpu_fault(a, &desc, &tail) {
            return end;
        }
        let c = engine::classify(kind, &tail);
        if let Some(ev) = &c.evidence {
            tracing::info!("failure evidence: {ev}");
        }
        let users = engine::rejected_user_arg(c.class, &tail, &a.launch.user_flags);
        AttemptEnd::Failed {
            failure: match users {
                Some(_) => Failure::UserArgRejected,
                None => Failure::Exited {
                    class: c.class,
                    suggested_max_model_len: c.suggested_max_model_len,
                },
            },
            exit: desc,
            was_ready: a.ready(),
            tail: last_n(tail, FAILURE_TAIL),
        }
    }

    fn on_progress(&self, a: &Attempt) {
        let line = a.eng.last_line();
        tracing::info!(
            "{} for {:.0}s; last engine line: {}",
            self.shared.phase(),
            a.eng.spawned.elapsed().as_secs_f64(),
            line.as_deref().unwrap_or("(none yet)")
        );
        self.update(|s| s.last_log_line = line);
        self.notifier
            .extend_timeout(self.cfg.progress_interval.saturating_mul(3));
    }

    fn on_readiness(&mut self, a: &mut Attempt, r: Readiness) {
        // A group's leader serves only once every node runs its engine.
        if let Readiness::Ready = r
            && let Some(wait) = self.group_not_complete()
        {
            self.event(Event::Healthy, "validating");
            a.last_detail = wait;
            return;
        }
        let line = a.eng.last_line();
        if line.is_some() {
            self.shared.status.send_if_modified(|s| {
                let changed = s.last_log_line != line;
                s.last_log_line = line;
                changed
            });
        }
        match r {
            Readiness::NotHealthy(d) => a.last_detail = d.to_string(),
            Readiness::Unauthorized(msg) => a.last_detail = msg,
            Readiness::Healthy(d) => {
                self.event(Event::Healthy, "validating");
                a.last_detail = d.to_string();
            }
            Readiness::Ready => {
                self.event(Event::Healthy, "validating");
                self.event(Event::Validated, &a.launch.served_model_name);
                let took = a.eng.spawned.elapsed();
                a.ready_at = Some(Instant::now());
                self.shared
                    .metrics
                    .startup_duration_seconds
                    .set(took.as_secs_f64());
                self.update(|s| s.ready_since_s = Some(0.0));
                tracing::info!(
                    "engine ready after {:.1}s: serving `{}`",
                    took.as_secs_f64(),
                    a.launch.served_model_name
                );
                if !self.ready_once {
                    self.ready_once = true;
                    self.notifier.ready();
                }
                // So can the readiness checks'.
                crate::memory::release_startup();
                a.timers.liveness = Instant::now() + self.liveness_interval();
            }
        }
    }

    /// Ends an attempt whose process is still alive (hung, startup deadline): SIGTERM, the
    /// grace, then the tree. A stop request meanwhile turns it into a stop.
    async fn end_alive(
        &mut self,
        eng: &mut RunningEngine,
        failure: Failure,
        why: String,
        was_ready: bool,
    ) -> AttemptEnd {
        self.term_and_wait(eng).await;
        let tail = self.teardown(eng).await;
        if self.stop_requested {
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
    async fn term_and_wait(&mut self, eng: &mut RunningEngine) {
        if eng.status.is_some() {
            return;
        }
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(eng.pid, libc::SIGTERM);
        }
        let until = Instant::now() + self.cfg.stop_timeout;
        let pid = eng.pid;
        if let Waited::Deadline = self
            .await_handling_signals(eng.exited(), Some(until), Some(pid), EndsOn::SecondStop)
            .await
        {
            tracing::warn!(
                pid,
                "the engine did not exit within {:?} of SIGTERM; killing its process group",
                self.cfg.stop_timeout
            );
        }
    }

    /// The requested stop: drain the port (up to the grace), SIGTERM the engine, wait up to
    /// the grace, kill the group, sweep. `kill_now`: a second request already came.
    async fn stop_engine(&mut self, eng: &mut RunningEngine, mut kill_now: bool) -> AttemptEnd {
        if !kill_now {
            let until = Instant::now() + self.cfg.stop_timeout;
            let shared = self.shared.clone();
            match self
                .await_handling_signals(
                    shared.inflight.wait_idle(),
                    Some(until),
                    Some(eng.pid),
                    EndsOn::SecondStop,
                )
                .await
            {
                Waited::Done(()) => {}
                Waited::Deadline => tracing::warn!(
                    "requests still in flight after {:?}; stopping the engine anyway",
                    self.cfg.stop_timeout
                ),
                Waited::Stop => kill_now = true,
            }
        }
        if !kill_now {
            self.term_and_wait(eng).await;
        }
        self.teardown(eng).await;
        self.stopped(eng).await
    }

    async fn stopped(&mut self, eng: &mut RunningEngine) -> AttemptEnd {
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
    async fn teardown(&mut self, eng: &mut RunningEngine) -> Vec<String> {
        let swept = tree::kill_tree(&self.reaper, Some(eng.pid), SWEEP_LIMIT).await;
        if swept > 0 {
            tracing::info!("killed {swept} process(es) left of the engine's tree");
        }
        let drain_until = Instant::now() + LOG_DRAIN;
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

fn last_n(mut v: Vec<String>, n: usize) -> Vec<String> {
    let skip = v.len().saturating_sub(n);
    v.split_off(skip)
}
