//! State shared between the supervisor loop and the public port, on one runtime.

use crate::metrics::Metrics;
use crate::status::{Phase, Status};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub struct Shared {
    /// The supervisor's view; `send_modify` to change, `borrow` to read.
    pub status: watch::Sender<Status>,
    pub metrics: Metrics,
    /// When the supervisor started (uptime in `/status`).
    pub started: Instant,
    /// Loopback port of the current engine attempt (may change after `port_in_use`).
    pub engine_port: std::sync::atomic::AtomicU16,
    /// Cancelled when a stop was asked (first SIGTERM/SIGINT/SIGQUIT): the port drains.
    pub stopping: CancellationToken,
    /// Forwarded requests in flight; the supervisor waits for zero before stopping the engine.
    pub inflight: InFlight,
    /// The switch `abort_inflight` throws; each forwarded request holds the one current when it
    /// started.
    abort: Mutex<AbortSignal>,
    /// This node's multi-node group, None on one node (`with_group`).
    pub group: Option<crate::group::live::Live>,
}

impl Shared {
    pub fn new(model: &str, engine_port: u16) -> Self {
        let (status, _) = watch::channel(Status::new(model));
        let metrics = Metrics::new();
        // Every later change goes through `set_phase`; announce the initial one here.
        metrics.set_phase(Phase::Detecting);
        Shared {
            status,
            metrics,
            started: Instant::now(),
            engine_port: std::sync::atomic::AtomicU16::new(engine_port),
            stopping: CancellationToken::new(),
            inflight: InFlight::default(),
            abort: Mutex::new(AbortSignal::default()),
            group: None,
        }
    }

    /// The same, as a node of `group`.
    pub fn with_group(mut self, group: Option<crate::group::live::Live>) -> Self {
        self.group = group;
        self
    }

    /// Seconds on the supervisor's clock (the group's times are offsets on it).
    pub fn now(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// A copy of the status with uptime filled in.
    pub fn snapshot(&self) -> Status {
        let mut s = self.status.borrow().clone();
        s.uptime_s = self.started.elapsed().as_secs_f64();
        s.group = self.group.as_ref().map(|g| g.status(self.now()));
        s
    }

    pub fn phase(&self) -> Phase {
        self.status.borrow().phase
    }

    /// Changes the phase (and the phase metric). A `failed` status is never left.
    pub fn set_phase(&self, phase: Phase) {
        let mut changed = false;
        self.status.send_if_modified(|s| {
            if s.phase == Phase::Failed || s.phase == phase {
                return false;
            }
            s.phase = phase;
            changed = true;
            true
        });
        if changed {
            self.metrics.set_phase(phase);
        }
    }

    pub fn engine_port(&self) -> u16 {
        self.engine_port.load(Ordering::Relaxed)
    }

    /// Ends every forwarded request in flight now, for the supervisor when it restarts a hung
    /// engine (the engine will never answer them). A request still waiting for the engine's
    /// response head is answered 503 `engine_restarting` (OpenAI error shape, Retry-After) with
    /// the message "the engine is being restarted: {reason}"; a response already streaming
    /// gets that error as a last SSE event (`text/event-stream`) and is then cut, any other
    /// body is cut (never ended cleanly). Each upstream request is dropped, so the engine sees
    /// the disconnect should it be alive. `reason` should say why, e.g. "it hung: 3 liveness
    /// probes failed". Requests forwarded after this call are not affected. Returns how many
    /// requests were in flight (each is counted in `aim_requests_aborted_total` and logged).
    /// It does not wait for them to end (`inflight.wait_idle()` does); any thread may call it.
    pub fn abort_inflight(&self, reason: &str) -> usize {
        let fresh = AbortSignal::default();
        let old = {
            let mut cur = self.abort.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *cur, fresh)
        };
        let _ = old.0.reason.set(reason.to_string());
        old.0.token.cancel();
        let n = self.inflight.count();
        tracing::warn!(requests = n, reason, "ending every request in flight");
        n
    }

    /// The abort signal a request starting now holds (the proxy takes one per request).
    pub fn abort_signal(&self) -> AbortSignal {
        self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Thrown once by `Shared::abort_inflight` for every request that took it before. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct AbortSignal(Arc<AbortInner>);

#[derive(Default)]
struct AbortInner {
    token: CancellationToken,
    /// Set before `token` is cancelled.
    reason: OnceLock<String>,
}

impl AbortSignal {
    /// Resolves when the signal is thrown.
    pub fn thrown(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.token.clone().cancelled_owned()
    }

    pub fn is_thrown(&self) -> bool {
        self.0.token.is_cancelled()
    }

    /// Why it was thrown (empty before).
    pub fn reason(&self) -> &str {
        self.0.reason.get().map_or("", String::as_str)
    }
}

/// Counts forwarded requests so a drain can wait for the last one. Cheap to clone.
#[derive(Clone, Default)]
pub struct InFlight {
    inner: std::sync::Arc<InFlightInner>,
}

#[derive(Default)]
struct InFlightInner {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Call when a forwarded request starts; drop the guard when its response body ends.
    pub fn enter(&self) -> InFlightGuard {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            owner: self.inner.clone(),
        }
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct InFlightGuard {
    owner: std::sync::Arc<InFlightInner>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.owner.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.owner.idle.notify_waiters();
        }
    }
}
