//! State shared between the supervisor loop and the public port, on one runtime.

use crate::metrics::Metrics;
use crate::status::{Phase, Status};
use std::sync::atomic::{AtomicUsize, Ordering};
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
        }
    }

    /// A copy of the status with uptime filled in.
    pub fn snapshot(&self) -> Status {
        let mut s = self.status.borrow().clone();
        s.uptime_s = self.started.elapsed().as_secs_f64();
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
