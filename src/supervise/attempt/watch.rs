//! The attempt's watch over a ready or loading engine: the liveness probe (a 1-token
//! completion when idle, `/health` otherwise), the progress samples judged by
//! `supervise::progress`, and the end of a hung attempt.

use super::{Attempt, AttemptEnd, BoxFut, FAILURE_TAIL, Sampled, last_n};
use crate::status::{HangStatus, LivenessStatus, ProgressStatus};
use crate::supervise::logs;
use crate::supervise::machine::{Event, Failure};
use crate::supervise::probe::ProbeError;
use crate::supervise::progress::{self, HangSignal, Sample};
use crate::supervise::supervisor::Supervisor;
use crate::supervise::tree;
use std::time::Duration;
use tokio::time::Instant;

impl Supervisor {
    /// The liveness probe: with no request in flight, every --idle-probe-interval a 1-token
    /// completion (it goes through the engine core, which `/health` does not); else `/health`.
    pub(super) fn start_liveness_probe(&mut self, a: &mut Attempt) {
        let p = self.prober.clone();
        let (port, timeout) = (a.launch.engine_port, self.cfg.liveness_timeout);
        let idle = self.shared.inflight.count() == 0;
        let every = self.cfg.idle_probe_interval;
        let due = a.last_idle_probe.is_none_or(|t| t.elapsed() >= every);
        a.live_is_idle_probe = idle && !every.is_zero() && due && !self.cfg.skip_test_inference;
        if a.live_is_idle_probe {
            a.last_idle_probe = Some(Instant::now());
            let served = a.launch.served_model_name.clone();
            // A warm engine answers one token in well under a second; the bound is for a
            // busy host, not for compilation (that happened before ready).
            let timeout = self.cfg.idle_probe_timeout;
            a.live = Some(Box::pin(async move {
                p.inference(port, &served, timeout).await
            }));
        } else {
            a.live = Some(Box::pin(async move { p.health(port, timeout).await }));
        }
    }

    /// One progress sample of the attempt (`supervise::progress`), with the GPU signals.
    pub(super) fn sample(&self, a: &Attempt) -> BoxFut<Sampled> {
        let prober = self.prober.clone();
        let port = a.launch.engine_port;
        let shared = self.shared.clone();
        let ring = a.eng.ring.clone();
        let root = self.cfg.root.clone();
        let minors: Vec<u32> = a.launch.gpus.iter().map(|g| g.render_minor).collect();
        let spawned = a.eng.spawned;
        // A group worker's headless engine has no metrics to ask.
        let ready = a.ready() && !a.worker;
        // A frozen engine does not answer: the wait for its metrics must not hold up the next
        // look at its processes for long.
        let timeout = self
            .cfg
            .liveness_timeout
            .min(self.cfg.hang_sample_interval.max(Duration::from_secs(1)));
        // The processes first, at the time of the sample.
        let at = spawned.elapsed();
        let (cpu_s, stopped) = tree::tree_usage(std::process::id() as i32);
        Box::pin(async move {
            let engine = if ready {
                match prober.metrics(port, timeout).await {
                    Ok(text) => progress::engine_counters(&text),
                    Err(_) => None,
                }
            } else {
                None
            };
            // The GPU files are read here, once per sample for the hang rules, the metrics and
            // the fault judge alike: a scrape reads what the last sample saw.
            let gpus = crate::gpu::read_signals(&root, &minors);
            let gpu_busy_percent = gpus.iter().filter_map(|g| g.busy_percent).max();
            let sample = Sample {
                at,
                inflight: shared.inflight.count() as u64,
                streamed_bytes: shared.metrics.streamed_bytes.get(),
                engine,
                log_lines: logs::lock(&ring).total(),
                cpu_s: Some(cpu_s),
                stopped,
                gpu_busy_percent,
            };
            (sample, gpus)
        })
    }

    /// A progress sample: status and metrics, and the end of the attempt when it shows a hang.
    pub(super) async fn on_sample(&mut self, a: &mut Attempt, s: Sample) -> Option<AttemptEnd> {
        let at = s.at;
        let inflight = s.inflight;
        let stopped_pids: Vec<i32> = s.stopped.iter().map(|(p, _)| *p).collect();
        // A group worker waits on the leader, and a loading leader on its workers (its engine
        // sits silent at the rendezvous while a worker downloads): the group's watch judges
        // them (`attempt::group`, with its join timeout), the hang rules do not.
        let waits_on_group = !a.ready() && self.group_not_complete().is_some();
        let hang = if a.worker || waits_on_group {
            None
        } else {
            a.watch.observe(s, &self.cfg.hang, !a.ready())
        };
        let age = a.watch.progress_age(at).as_secs_f64();
        self.shared.metrics.last_progress_age_seconds.set(age);
        self.update(|st| {
            st.progress = Some(ProgressStatus {
                last_progress_age_s: age,
                inflight,
                stopped_pids,
            });
        });
        let h = hang?;
        let msg = format!("hung ({}): {}", h.signal.as_str(), h.detail);
        Some(self.end_hung(a, h.signal, h.for_, msg).await)
    }

    /// Ends a hung attempt: counted, said in /status, requests in flight ended, the engine
    /// stopped; the machine then restarts it after the VRAM wait.
    pub(super) async fn end_hung(
        &mut self,
        a: &mut Attempt,
        signal: HangSignal,
        for_: Duration,
        msg: String,
    ) -> AttemptEnd {
        tracing::warn!("{msg}");
        self.shared
            .metrics
            .hangs
            .get_or_create(&crate::metrics::HangLabel {
                signal: signal.as_str().to_string(),
            })
            .inc();
        let at_s = self.elapsed().as_secs_f64();
        self.update(|st| {
            st.last_hang = Some(HangStatus {
                signal: signal.as_str().to_string(),
                for_s: for_.as_secs_f64(),
                detail: msg.clone(),
                at_s,
            });
        });
        self.event(Event::AttemptFailed, "hung");
        // Nobody waits for their client's own timeout: every request in flight ends now,
        // with an error that says why.
        let ended = self
            .shared
            .abort_inflight(&format!("it hung ({})", signal.as_str()));
        if ended > 0 {
            tracing::info!("ended {ended} request(s) in flight: the engine hung");
        }
        let was_ready = a.ready();
        if signal == HangSignal::Frozen {
            // A stopped process cannot take SIGTERM: the group is killed at once.
            let tail = self.teardown(&mut a.eng).await;
            if self.stop_requested {
                return self.stopped(&mut a.eng).await;
            }
            return AttemptEnd::Failed {
                failure: Failure::Hung,
                exit: msg,
                was_ready,
                tail: last_n(tail, FAILURE_TAIL),
            };
        }
        self.end_alive(&mut a.eng, Failure::Hung, msg, was_ready)
            .await
    }

    /// A liveness answer; Some when too many failed in a row (the engine is hung).
    pub(super) async fn on_liveness(
        &mut self,
        a: &mut Attempt,
        r: Result<(), ProbeError>,
    ) -> Option<AttemptEnd> {
        let ok = r.is_ok();
        // The idle probes count on their own: the /health probes between them still pass
        // while the engine core is wedged.
        let fails = if a.live_is_idle_probe {
            &mut a.idle_fails
        } else {
            &mut a.live_fails
        };
        if ok {
            *fails = 0;
        } else {
            *fails += 1;
            self.shared.metrics.liveness_failures.inc();
        }
        let live_fails = *fails;
        let at_s = self.elapsed().as_secs_f64();
        let since = a.ready_at.map(|t| t.elapsed().as_secs_f64());
        let line = a.eng.last_line();
        let detail = r.err().map_or_else(|| "ok".into(), |e| e.to_string());
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
            let what = if a.live_is_idle_probe {
                "idle probes (1-token completions)"
            } else {
                "liveness checks"
            };
            let msg = format!(
                "hung ({}): {live_fails} {what} failed in a row ({detail})",
                HangSignal::ProbeMisses.as_str()
            );
            let for_ = a.watch.progress_age(a.eng.spawned.elapsed());
            return Some(self.end_hung(a, HangSignal::ProbeMisses, for_, msg).await);
        } else if !ok {
            tracing::warn!(
                "liveness check failed ({live_fails}/{}): {detail}",
                self.cfg.liveness_failures
            );
        }
        None
    }
}
