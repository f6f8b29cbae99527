//! The attempt's GPU watch: the launch's GPU signals read at its start (the baseline) and
//! with every hang sample, published as metrics, and judged by `supervise::gpu_fault`.

use super::{Attempt, AttemptEnd};
use crate::gpu::GpuSignals;
use crate::launch::Launch;
use crate::supervise::gpu_fault::{self, GpuFault};
use crate::supervise::machine::{Event, Failure};
use crate::supervise::supervisor::Supervisor;

impl Supervisor {
    /// Reads the launch's GPU signals now, in the order of `launch.gpus`.
    pub(super) fn read_gpus(&self, launch: &Launch) -> Vec<GpuSignals> {
        let minors: Vec<u32> = launch.gpus.iter().map(|g| g.render_minor).collect();
        crate::gpu::read_signals(&self.cfg.root, &minors)
    }

    /// Publishes a reading of the launch's GPUs (metrics); the fault it shows, if any.
    pub(super) fn on_gpus(&self, a: &Attempt, now: &[GpuSignals]) -> Option<GpuFault> {
        let labelled: Vec<(u32, &GpuSignals)> =
            a.launch.gpus.iter().map(|g| g.ordinal).zip(now).collect();
        self.shared.metrics.gpus.set(&labelled);
        gpu_fault::judge(&a.launch.gpus, &a.gpu_baseline, now)
    }

    /// The end of an attempt whose engine exited (`desc`) when its GPUs show a fault then: a
    /// reset or a bad page usually kills the engine before the next sample would see it.
    pub(super) fn exit_as_gpu_fault(
        &self,
        a: &Attempt,
        desc: &str,
        tail: &[String],
    ) -> Option<AttemptEnd> {
        let now = self.read_gpus(&a.launch);
        let f = self.on_gpus(a, &now)?;
        let msg = f.message();
        tracing::error!("{msg}");
        Some(AttemptEnd::Failed {
            failure: Failure::GpuFault { ordinal: f.ordinal },
            exit: format!("{msg} (the engine: {desc})"),
            was_ready: a.ready(),
            tail: super::last_n(tail.to_vec(), super::FAILURE_TAIL),
        })
    }

    /// Ends the attempt on a failed GPU: said in the log, the requests in flight ended, the
    /// engine stopped; the policy then keeps off that GPU.
    pub(super) async fn end_gpu_fault(&mut self, a: &mut Attempt, f: GpuFault) -> AttemptEnd {
        let msg = f.message();
        tracing::error!("{msg}");
        self.event(Event::AttemptFailed, "gpu_fault");
        let ended = self.shared.abort_inflight("its GPU failed (gpu_fault)");
        if ended > 0 {
            tracing::info!("ended {ended} request(s) in flight: a GPU failed");
        }
        let was_ready = a.ready();
        let failure = Failure::GpuFault { ordinal: f.ordinal };
        self.end_alive(&mut a.eng, failure, msg, was_ready).await
    }
}
