//! The supervisor's own Prometheus metrics (`aim_*`), one registry, no global state.
//!
//! `supervise` and `http` both update these; `http` renders them on `/metrics`, followed by
//! the engine's own text.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::status::Phase;

/// The `kind` of `aim_request_timeouts_total`: no response (head, then first body bytes) in time.
pub const TIMEOUT_FIRST_BYTE: &str = "first_byte";
/// The `kind` of `aim_request_timeouts_total`: a started response paused too long.
pub const TIMEOUT_GAP: &str = "gap";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HangLabel {
    /// `frozen`, `no_progress`, `startup_stall`, `probe_misses`.
    pub signal: String,
}

/// The `code` labels of `aim_proxied_requests_total`: the response's status class, `error`
/// (no response came back) and `499` (the client went away during its request body).
pub const PROXIED_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "499"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusClassLabel {
    /// "2xx", "4xx", "5xx", or "error" when no response came back.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutKindLabel {
    /// "first_byte" or "gap".
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    /// The HIP ordinal, as in `/status` `gpus[].ordinal`.
    pub gpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuSensorLabel {
    pub gpu: String,
    /// `edge`, `junction`, `mem` (hwmon's labels).
    pub sensor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuRasLabel {
    pub gpu: String,
    /// The RAS block (`umc`, `gfx`, `sdma`, ...).
    pub block: String,
    /// `ue` (uncorrectable), `ce` (correctable), `de` (deferred, UMC).
    pub kind: String,
}

/// The GPU signals of the current launch (`gpu::signals`), set from each hang sample.
#[derive(Default)]
pub struct GpuMetrics {
    pub busy_percent: Family<GpuLabel, Gauge>,
    pub vram_used_bytes: Family<GpuLabel, Gauge>,
    pub temperature_celsius: Family<GpuSensorLabel, Gauge<f64, AtomicU64>>,
    pub power_watts: Family<GpuLabel, Gauge<f64, AtomicU64>>,
    /// The kernel's own counts, copied (a counter whose value we set: it only falls when the
    /// driver is reloaded).
    pub ras_errors: Family<GpuRasLabel, Counter>,
}

impl GpuMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpu_busy_percent",
            "How busy each GPU of the launch is (amdgpu gpu_busy_percent)",
            self.busy_percent.clone(),
        );
        registry.register(
            "gpu_vram_used_bytes",
            "VRAM in use on each GPU of the launch (the whole card: mem_info_vram_used)",
            self.vram_used_bytes.clone(),
        );
        registry.register(
            "gpu_temperature_celsius",
            "GPU temperatures from hwmon, by sensor (edge, junction, mem)",
            self.temperature_celsius.clone(),
        );
        registry.register(
            "gpu_power_watts",
            "GPU power from hwmon (power1_average, else power1_input)",
            self.power_watts.clone(),
        );
        registry.register(
            "gpu_ras_errors",
            "RAS error counts of each GPU of the launch, by block and kind (ue uncorrectable, \
             ce correctable, de deferred)",
            self.ras_errors.clone(),
        );
    }

    /// Replaces every GPU series with these readings: (HIP ordinal, signals) per GPU of the
    /// launch. A value the kernel does not expose has no series.
    pub fn set(&self, gpus: &[(u32, &crate::gpu::GpuSignals)]) {
        use std::sync::atomic::Ordering;
        self.busy_percent.clear();
        self.vram_used_bytes.clear();
        self.temperature_celsius.clear();
        self.power_watts.clear();
        self.ras_errors.clear();
        for (ordinal, s) in gpus {
            let gpu = GpuLabel {
                gpu: ordinal.to_string(),
            };
            if let Some(v) = s.busy_percent {
                self.busy_percent.get_or_create(&gpu).set(i64::from(v));
            }
            if let Some(v) = s.vram_used_bytes {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                self.vram_used_bytes.get_or_create(&gpu).set(v);
            }
            if let Some(v) = s.power_watts {
                self.power_watts.get_or_create(&gpu).set(v);
            }
            for (sensor, c) in &s.temperatures {
                let l = GpuSensorLabel {
                    gpu: gpu.gpu.clone(),
                    sensor: sensor.clone(),
                };
                self.temperature_celsius.get_or_create(&l).set(*c);
            }
            for (block, c) in &s.ras {
                let kinds = [("ue", Some(c.ue)), ("ce", Some(c.ce)), ("de", c.de)];
                for (kind, v) in kinds {
                    let Some(v) = v else { continue };
                    let l = GpuRasLabel {
                        gpu: gpu.gpu.clone(),
                        block: block.clone(),
                        kind: kind.to_string(),
                    };
                    self.ras_errors
                        .get_or_create(&l)
                        .inner()
                        .store(v, Ordering::Relaxed);
                }
            }
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// 1 for the current phase, 0 for the others.
    pub phase: Family<PhaseLabel, Gauge>,
    pub ready: Gauge,
    pub restarts: Family<ClassLabel, Counter>,
    pub engine_starts: Counter,
    pub startup_duration_seconds: Gauge<f64, AtomicU64>,
    pub liveness_failures: Counter,
    /// Hangs found, by the signal that showed them.
    pub hangs: Family<HangLabel, Counter>,
    /// Seconds since the engine last showed progress (0 while idle).
    pub last_progress_age_seconds: Gauge<f64, AtomicU64>,
    pub proxied_requests: Family<StatusClassLabel, Counter>,
    /// `proxied_requests`' counter of each class in `PROXIED_CLASSES`, looked up once (a
    /// family lookup per request is an allocation, a hash and a lock).
    proxied_by_class: [std::sync::OnceLock<Counter>; PROXIED_CLASSES.len()],
    pub inflight_requests: Gauge,
    pub request_duration_seconds: Histogram,
    pub streamed_bytes: Counter,
    /// Forwarded responses cut short (by the engine, a deadline or `abort_inflight`), passed on
    /// visibly cut.
    pub responses_cut: Counter,
    /// Forwarded requests ended by a proxy deadline (`first_byte`, `gap`).
    pub request_timeouts: Family<TimeoutKindLabel, Counter>,
    /// Forwarded requests ended by `Shared::abort_inflight`.
    pub requests_aborted: Counter,
    /// `serve --download`: bytes of the model in the cache so far, in all, and the rate.
    pub download_bytes_done: Gauge,
    pub download_bytes_total: Gauge,
    pub download_rate_bytes_per_second: Gauge,
    /// The current launch's GPU signals.
    pub gpus: GpuMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aim");
        let m = Metrics {
            registry: Registry::default(),
            phase: Family::default(),
            ready: Gauge::default(),
            restarts: Family::default(),
            engine_starts: Counter::default(),
            startup_duration_seconds: Gauge::default(),
            liveness_failures: Counter::default(),
            hangs: Family::default(),
            last_progress_age_seconds: Gauge::default(),
            proxied_requests: Family::default(),
            proxied_by_class: Default::default(),
            inflight_requests: Gauge::default(),
            request_duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            streamed_bytes: Counter::default(),
            responses_cut: Counter::default(),
            request_timeouts: Family::default(),
            requests_aborted: Counter::default(),
            download_bytes_done: Gauge::default(),
            download_bytes_total: Gauge::default(),
            download_rate_bytes_per_second: Gauge::default(),
            gpus: GpuMetrics::default(),
        };
        m.gpus.register(&mut registry);
        m.register_supervisor(&mut registry);
        m.register_rest(&mut registry);
        for kind in [TIMEOUT_FIRST_BYTE, TIMEOUT_GAP] {
            m.request_timeouts
                .get_or_create(&TimeoutKindLabel {
                    kind: kind.to_string(),
                })
                .inc_by(0);
        }
        for p in Phase::ALL {
            m.phase
                .get_or_create(&PhaseLabel {
                    phase: p.as_str().to_string(),
                })
                .set(0);
        }
        Metrics { registry, ..m }
    }

    /// Registers the supervisor's series.
    fn register_supervisor(&self, registry: &mut Registry) {
        registry.register(
            "download_bytes_done",
            "Bytes of the model in the cache so far (serve --download)",
            self.download_bytes_done.clone(),
        );
        registry.register(
            "download_bytes_total",
            "Bytes of the model's files to have in the cache (serve --download)",
            self.download_bytes_total.clone(),
        );
        registry.register(
            "download_rate_bytes_per_second",
            "Download rate over the last seconds (serve --download)",
            self.download_rate_bytes_per_second.clone(),
        );
        registry.register(
            "phase",
            "Current supervisor phase (1 for the current one)",
            self.phase.clone(),
        );
        registry.register(
            "ready",
            "1 when the engine serves and is healthy",
            self.ready.clone(),
        );
        registry.register(
            "restarts",
            "Engine restarts by failure class",
            self.restarts.clone(),
        );
        registry.register(
            "engine_starts",
            "Engine processes started",
            self.engine_starts.clone(),
        );
        registry.register(
            "startup_duration_seconds",
            "Seconds from the last engine spawn to ready",
            self.startup_duration_seconds.clone(),
        );
        registry.register(
            "liveness_failures",
            "Failed liveness probes after ready",
            self.liveness_failures.clone(),
        );
    }

    /// Registers the proxy's, the download's and the GPUs' series.
    fn register_rest(&self, registry: &mut Registry) {
        registry.register(
            "hangs",
            "Hung engines found, by the signal that showed the hang",
            self.hangs.clone(),
        );
        registry.register(
            "last_progress_age_seconds",
            "Seconds since the engine last showed progress (0 while idle)",
            self.last_progress_age_seconds.clone(),
        );
        registry.register(
            "proxied_requests",
            "Requests forwarded to the engine, by response status class",
            self.proxied_requests.clone(),
        );
        registry.register(
            "inflight_requests",
            "Requests being forwarded now",
            self.inflight_requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the forwarded response",
            self.request_duration_seconds.clone(),
        );
        registry.register(
            "streamed_bytes",
            "Response body bytes forwarded to clients",
            self.streamed_bytes.clone(),
        );
        registry.register(
            "responses_cut",
            "Forwarded responses cut short by the engine, a deadline or an abort (the client sees \
             them cut)",
            self.responses_cut.clone(),
        );
        registry.register(
            "request_timeouts",
            "Forwarded requests ended by a deadline: first_byte (no response in time) or gap \
             (the response paused too long)",
            self.request_timeouts.clone(),
        );
        registry.register(
            "requests_aborted",
            "Forwarded requests ended at once because the hung engine was being restarted",
            self.requests_aborted.clone(),
        );
    }

    /// Marks `phase` as the current one.
    pub fn set_phase(&self, phase: Phase) {
        for p in Phase::ALL {
            let v = i64::from(*p == phase);
            self.phase
                .get_or_create(&PhaseLabel {
                    phase: p.as_str().to_string(),
                })
                .set(v);
        }
        self.ready.set(i64::from(phase == Phase::Ready));
    }

    /// Counts a forwarded request in `proxied_requests` by its `class` (one of
    /// `PROXIED_CLASSES`; any other is looked up in the family each time).
    pub fn proxied(&self, class: &str) {
        match PROXIED_CLASSES.iter().position(|c| *c == class) {
            Some(i) => self.proxied_by_class[i]
                .get_or_init(|| self.proxied_counter(class))
                .inc(),
            None => self.proxied_counter(class).inc(),
        };
    }

    fn proxied_counter(&self, class: &str) -> Counter {
        self.proxied_requests
            .get_or_create(&StatusClassLabel {
                code: class.to_string(),
            })
            .clone()
    }

    /// Counts a request ended by a proxy deadline of `kind` (`TIMEOUT_FIRST_BYTE`, `TIMEOUT_GAP`).
    pub fn request_timeout(&self, kind: &str) {
        self.request_timeouts
            .get_or_create(&TimeoutKindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn restart(&self, class: &str) {
        self.restarts
            .get_or_create(&ClassLabel {
                class: class.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition of our metrics (ends with `# EOF`, which callers strip
    /// before appending the engine's text).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuSignals, RasCount};

    #[test]
    fn gpu_series_are_those_of_the_last_reading() {
        let m = Metrics::new();
        let a = GpuSignals {
            busy_percent: Some(97),
            vram_used_bytes: Some(1 << 30),
            temperatures: vec![("junction".into(), 61.5)],
            power_watts: Some(512.25),
            ras: vec![(
                "umc".into(),
                RasCount {
                    ue: 1,
                    ce: 7,
                    de: Some(2),
                },
            )],
            present: true,
            ..GpuSignals::default()
        };
        m.gpus.set(&[(3, &a)]);
        let text = m.render();
        for line in [
            r#"aim_gpu_busy_percent{gpu="3"} 97"#,
            r#"aim_gpu_vram_used_bytes{gpu="3"} 1073741824"#,
            r#"aim_gpu_temperature_celsius{gpu="3",sensor="junction"} 61.5"#,
            r#"aim_gpu_power_watts{gpu="3"} 512.25"#,
            r#"aim_gpu_ras_errors_total{gpu="3",block="umc",kind="ue"} 1"#,
            r#"aim_gpu_ras_errors_total{gpu="3",block="umc",kind="ce"} 7"#,
            r#"aim_gpu_ras_errors_total{gpu="3",block="umc",kind="de"} 2"#,
            "# TYPE aim_gpu_ras_errors counter",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // A new launch on another GPU, whose kernel exposes less: the old series are gone and
        // nothing is made up.
        let b = GpuSignals {
            busy_percent: Some(0),
            present: true,
            ..GpuSignals::default()
        };
        m.gpus.set(&[(0, &b)]);
        let text = m.render();
        assert!(
            text.contains(r#"aim_gpu_busy_percent{gpu="0"} 0"#),
            "{text}"
        );
        assert!(!text.contains(r#"gpu="3""#), "{text}");
        assert!(!text.contains("aim_gpu_power_watts{"), "{text}");
    }
}
