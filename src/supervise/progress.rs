//! Progress-based liveness (pure): from periodic samples of what the engine does, whether it
//! is hung.
//!
//! An engine's own `/health` stays green while its engine core is wedged (the API server
//! answers it), so aim-engine watches progress instead. A sample holds what moves when an
//! engine works: response bytes through our proxy, the engine's token counters, lines in its
//! log, the CPU time of its process tree, and how busy its GPUs are. The rules:
//!
//! - **Frozen**: a process of the engine's tree is stopped (`T`, e.g. SIGSTOP) for the freeze
//!   window. Nothing legitimate stops an engine process; `docker pause` stops us too.
//! - **No progress**: there is work (requests in flight at our port, or the engine says it
//!   runs some) and nothing moved for the stall window. Moved means any of: bytes, tokens,
//!   a log line, CPU time of at least `busy_cpu` cores over the sample, a GPU busy above
//!   `busy_gpu_percent`. A long prefill emits no token for minutes but keeps the engine's
//!   process and its GPUs busy, so it is progress; a wedged engine core shows none of it.
//! - **Startup stall**: while loading, no new log line and no CPU time for the startup
//!   stall window (a download or a load that stopped moving), long before the startup
//!   timeout.
//!
//! Without work nothing is judged here; the idle probe (a 1-token completion) covers that.

use std::collections::HashMap;
use std::time::Duration;

/// What the engine's own `/metrics` says.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineCounters {
    /// Requests the engine runs now (vLLM `vllm:num_requests_running`).
    pub running: f64,
    /// Prompt plus generation tokens processed so far.
    pub tokens: f64,
}

/// One look at the engine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Since the attempt started.
    pub at: Duration,
    /// Requests in flight at our public port.
    pub inflight: u64,
    /// Response bytes our proxy forwarded so far.
    pub streamed_bytes: u64,
    /// None when the engine's metrics could not be read.
    pub engine: Option<EngineCounters>,
    /// Lines the engine printed so far.
    pub log_lines: u64,
    /// CPU time of the engine's process tree so far (seconds); None when unreadable.
    pub cpu_s: Option<f64>,
    /// Processes of the tree that are stopped: (pid, name).
    pub stopped: Vec<(i32, String)>,
    /// The busiest of the engine's GPUs, percent; None where the kernel does not say.
    pub gpu_busy_percent: Option<u32>,
}

/// The windows and thresholds (flags of `serve`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub freeze_window: Duration,
    pub stall_window: Duration,
    pub startup_stall_window: Duration,
    /// CPU cores' worth of time over a sample that counts as working.
    pub busy_cpu: f64,
    pub busy_gpu_percent: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            freeze_window: Duration::from_secs(30),
            stall_window: Duration::from_secs(300),
            startup_stall_window: Duration::from_secs(600),
            busy_cpu: 0.2,
            busy_gpu_percent: 10,
        }
    }
}

/// Which signal showed the hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangSignal {
    /// A process of the tree was stopped.
    Frozen,
    /// Work, and nothing moved.
    NoProgress,
    /// Loading, and nothing moved.
    StartupStall,
    /// The idle probe (a 1-token completion) missed too often.
    ProbeMisses,
}

impl HangSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            HangSignal::Frozen => "frozen",
            HangSignal::NoProgress => "no_progress",
            HangSignal::StartupStall => "startup_stall",
            HangSignal::ProbeMisses => "probe_misses",
        }
    }
}

/// A hang: which signal, for how long, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Hang {
    pub signal: HangSignal,
    pub for_: Duration,
    pub detail: String,
}

/// The watch over one attempt.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    last: Option<Sample>,
    /// When the last progress (or the last moment without work) was seen.
    last_progress: Duration,
    /// pid -> when it was first seen stopped.
    stopped_since: HashMap<i32, Duration>,
}

impl Watch {
    pub fn new(at: Duration) -> Self {
        Watch {
            last_progress: at,
            ..Default::default()
        }
    }

    /// How long ago progress was last seen.
    pub fn progress_age(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_progress)
    }

    /// Takes a sample; Some when it shows a hang. `loading`: the engine is not ready yet.
    pub fn observe(&mut self, s: Sample, rules: &Rules, loading: bool) -> Option<Hang> {
        let now = s.at;
        self.stopped_since
            .retain(|pid, _| s.stopped.iter().any(|(p, _)| p == pid));
        for (pid, _) in &s.stopped {
            self.stopped_since.entry(*pid).or_insert(now);
        }
        let frozen = s
            .stopped
            .iter()
            .filter_map(|(pid, name)| {
                let since = *self.stopped_since.get(pid)?;
                Some((now.saturating_sub(since), *pid, name))
            })
            .max_by_key(|(d, _, _)| *d);
        let verdict = match frozen {
            Some((d, pid, name)) if !rules.freeze_window.is_zero() && d >= rules.freeze_window => {
                Some(Hang {
                    signal: HangSignal::Frozen,
                    for_: d,
                    detail: format!("engine process {pid} ({name}) stopped for {}s", d.as_secs()),
                })
            }
            _ => self.judge_progress(&s, rules, loading),
        };
        self.last = Some(s);
        verdict
    }

    fn judge_progress(&mut self, s: &Sample, rules: &Rules, loading: bool) -> Option<Hang> {
        let now = s.at;
        let work = loading || s.inflight > 0 || s.engine.is_some_and(|e| e.running > 0.0);
        let moved = self
            .last
            .as_ref()
            .map(|prev| moved(prev, s, rules, loading))
            .unwrap_or(Moved::Yes);
        if !work || moved == Moved::Yes {
            self.last_progress = now;
            return None;
        }
        let window = if loading {
            rules.startup_stall_window
        } else {
            rules.stall_window
        };
        let age = self.progress_age(now);
        if window.is_zero() || age < window {
            return None;
        }
        let (signal, what) = if loading {
            (
                HangSignal::StartupStall,
                "loading: no new log line and no CPU time".to_string(),
            )
        } else {
            (
                HangSignal::NoProgress,
                format!(
                    "{} request(s) in flight{}: no response bytes, no tokens, no log line, under {} CPU cores{}",
                    s.inflight,
                    s.engine
                        .map(|e| format!(", {} running in the engine", e.running))
                        .unwrap_or_default(),
                    rules.busy_cpu,
                    s.gpu_busy_percent
                        .map(|g| format!(", GPUs {g}% busy"))
                        .unwrap_or_default()
                ),
            )
        };
        Some(Hang {
            signal,
            for_: age,
            detail: format!("{what} for {}s", age.as_secs()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    Yes,
    No,
}

/// Whether anything moved between two samples. While loading only the log and the CPU count
/// (there is no traffic yet).
fn moved(prev: &Sample, s: &Sample, rules: &Rules, loading: bool) -> Moved {
    let dt = s.at.saturating_sub(prev.at).as_secs_f64();
    let cpu = match (prev.cpu_s, s.cpu_s) {
        (Some(a), Some(b)) if dt > 0.0 => (b - a) / dt >= rules.busy_cpu,
        _ => false,
    };
    let log = s.log_lines > prev.log_lines;
    if loading {
        return if cpu || log { Moved::Yes } else { Moved::No };
    }
    let bytes = s.streamed_bytes > prev.streamed_bytes;
    let tokens = match (prev.engine, s.engine) {
        (Some(a), Some(b)) => b.tokens > a.tokens,
        _ => false,
    };
    let gpu = s
        .gpu_busy_percent
        .is_some_and(|g| g >= rules.busy_gpu_percent);
    if bytes || tokens || log || cpu || gpu {
        Moved::Yes
    } else {
        Moved::No
    }
}

/// The engine's counters from its Prometheus text: vLLM (`vllm:num_requests_running`,
/// `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`) or SGLang
/// (`sglang:num_running_reqs`, `sglang:prompt_tokens_total`, `sglang:generation_tokens_total`),
/// summed over label sets. None when it names none of them.
pub fn engine_counters(text: &str) -> Option<EngineCounters> {
    let mut c = EngineCounters::default();
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = metric_line(line) else {
            continue;
        };
        match name {
            "vllm:num_requests_running" | "sglang:num_running_reqs" => {
                c.running += value;
                seen = true;
            }
            "vllm:prompt_tokens_total"
            | "vllm:generation_tokens_total"
            | "sglang:prompt_tokens_total"
            | "sglang:generation_tokens_total" => {
                c.tokens += value;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(c)
}

/// `name{labels} value [timestamp]` -> (name, value).
fn metric_line(line: &str) -> Option<(&str, f64)> {
    let (name, rest) = match line.find('{') {
        Some(i) => {
            let close = line[i..].find('}')? + i;
            (&line[..i], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.trim(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn rules() -> Rules {
        Rules {
            freeze_window: secs(30),
            stall_window: secs(60),
            startup_stall_window: secs(120),
            busy_cpu: 0.2,
            busy_gpu_percent: 10,
        }
    }

    /// A busy engine's sample: work in flight, with the given moving parts.
    fn busy(at: u64, bytes: u64, tokens: f64, cpu_s: f64) -> Sample {
        Sample {
            at: secs(at),
            inflight: 1,
            streamed_bytes: bytes,
            engine: Some(EngineCounters {
                running: 1.0,
                tokens,
            }),
            log_lines: 10,
            cpu_s: Some(cpu_s),
            stopped: vec![],
            gpu_busy_percent: None,
        }
    }

    /// Feeds samples in order; returns the first hang and the index of its sample.
    fn run(samples: Vec<Sample>, loading: bool) -> Option<(usize, Hang)> {
        let r = rules();
        let mut w = Watch::new(Duration::ZERO);
        samples
            .into_iter()
            .enumerate()
            .find_map(|(i, s)| w.observe(s, &r, loading).map(|h| (i, h)))
    }

    /// Every 5 s for `n` samples, with `f` giving the i-th sample.
    fn every5(n: u64, f: impl Fn(u64) -> Sample) -> Vec<Sample> {
        (0..n).map(|i| f(i * 5)).collect()
    }

    #[test]
    fn cases() {
        struct Case {
            name: &'static str,
            samples: Vec<Sample>,
            loading: bool,
            /// The signal and the sample time it must fire at (None: never).
            want: Option<(HangSignal, u64)>,
        }
        let cases = vec![
            Case {
                name: "steady decode: bytes and tokens move",
                samples: every5(60, |t| busy(t, t * 100, t as f64, t as f64)),
                loading: false,
                want: None,
            },
            Case {
                name: "slow decode: one token every 10 s, nothing else moves",
                samples: every5(60, |t| busy(t, t / 10, (t / 10) as f64, 0.0)),
                loading: false,
                want: None,
            },
            Case {
                name: "long prefill: no bytes or tokens for 5 min, but the engine burns CPU",
                samples: every5(60, |t| busy(t, 0, 0.0, t as f64)),
                loading: false,
                want: None,
            },
            Case {
                name: "long prefill on a GPU: CPU idle, GPUs busy",
                samples: every5(60, |t| Sample {
                    gpu_busy_percent: Some(97),
                    ..busy(t, 0, 0.0, 0.0)
                }),
                loading: false,
                want: None,
            },
            Case {
                name: "wedged engine core: work in flight, nothing moves",
                samples: every5(30, |t| busy(t, 0, 0.0, 0.0)),
                loading: false,
                want: Some((HangSignal::NoProgress, 60)),
            },
            Case {
                name: "wedged after a while of progress: the window counts from the last progress",
                samples: every5(40, |t| {
                    let m = t.min(50);
                    busy(t, m, m as f64, m as f64)
                }),
                loading: false,
                want: Some((HangSignal::NoProgress, 110)),
            },
            Case {
                name: "a trickle of CPU below the threshold is not progress",
                samples: every5(30, |t| busy(t, 0, 0.0, t as f64 * 0.05)),
                loading: false,
                want: Some((HangSignal::NoProgress, 60)),
            },
            Case {
                name: "idle: nothing moves and nothing is asked",
                samples: every5(60, |t| Sample {
                    at: secs(t),
                    ..Default::default()
                }),
                loading: false,
                want: None,
            },
            Case {
                name: "the engine says it runs a request that our port does not carry",
                samples: every5(30, |t| Sample {
                    inflight: 0,
                    ..busy(t, 0, 0.0, 0.0)
                }),
                loading: false,
                want: Some((HangSignal::NoProgress, 60)),
            },
            Case {
                name: "a stopped engine process: frozen after the freeze window, even when idle",
                samples: every5(20, |t| Sample {
                    at: secs(t),
                    stopped: if t >= 10 {
                        vec![(42, "VLLM::EngineCore".into())]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                }),
                loading: false,
                want: Some((HangSignal::Frozen, 40)),
            },
            Case {
                name: "a process stopped briefly and continued is not frozen",
                samples: every5(40, |t| Sample {
                    at: secs(t),
                    stopped: if (10..30).contains(&t) {
                        vec![(42, "VLLM::EngineCore".into())]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                }),
                loading: false,
                want: None,
            },
            Case {
                name: "loading that prints and computes",
                samples: every5(60, |t| Sample {
                    at: secs(t),
                    log_lines: t / 20,
                    cpu_s: Some(t as f64 * 0.9),
                    ..Default::default()
                }),
                loading: true,
                want: None,
            },
            Case {
                name: "loading that stopped moving: a startup stall",
                samples: every5(40, |t| Sample {
                    at: secs(t),
                    log_lines: 7,
                    cpu_s: Some(1.0),
                    ..Default::default()
                }),
                loading: true,
                want: Some((HangSignal::StartupStall, 120)),
            },
        ];
        for c in cases {
            let got = run(c.samples.clone(), c.loading);
            match (c.want, got) {
                (None, None) => {}
                (Some((sig, at)), Some((i, h))) => {
                    assert_eq!(h.signal, sig, "{}: {h:?}", c.name);
                    assert_eq!(c.samples[i].at, secs(at), "{}: {h:?}", c.name);
                }
                (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn progress_age_follows_the_last_progress() {
        let r = rules();
        let mut w = Watch::new(Duration::ZERO);
        assert!(w.observe(busy(0, 0, 0.0, 0.0), &r, false).is_none());
        assert!(w.observe(busy(5, 10, 1.0, 0.0), &r, false).is_none());
        assert!(w.observe(busy(10, 10, 1.0, 0.0), &r, false).is_none());
        assert_eq!(w.progress_age(secs(20)), secs(15));
    }

    #[test]
    fn counters_from_engine_metrics() {
        let vllm = "# HELP vllm:num_requests_running x\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2.0\n\
            vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 100.0\n\
            vllm:generation_tokens_total{engine=\"0\",model_name=\"m\"} 50.0\n\
            vllm:num_requests_waiting{engine=\"0\"} 3.0\n";
        assert_eq!(
            engine_counters(vllm),
            Some(EngineCounters {
                running: 2.0,
                tokens: 150.0
            })
        );
        let sglang = "sglang:num_running_reqs{model_name=\"m\"} 1\nsglang:generation_tokens_total{model_name=\"m\"} 7\n";
        assert_eq!(
            engine_counters(sglang),
            Some(EngineCounters {
                running: 1.0,
                tokens: 7.0
            })
        );
        assert_eq!(engine_counters("other_metric 1\n"), None);
        assert_eq!(engine_counters("vllm:num_requests_running garbage\n"), None);
    }
}
