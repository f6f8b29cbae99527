//! Download progress: counters the download writes and anyone may read (the log reporter, a
//! terminal bar, `/status`), and the text both show.

use crate::gpu::detect::human_bytes;
use crate::host::view::human_duration;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Shared counters; every field only grows except `bytes_done`, which drops back when a file
/// has to start over.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    /// Bytes per second over the last few seconds (written by the reporter).
    pub rate_bytes_per_s: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub rate_bytes_per_s: u64,
}

impl Progress {
    pub fn counts(&self) -> Counts {
        Counts {
            bytes_done: self.bytes_done.load(Relaxed),
            bytes_total: self.bytes_total.load(Relaxed),
            files_done: self.files_done.load(Relaxed),
            files_total: self.files_total.load(Relaxed),
            rate_bytes_per_s: self.rate_bytes_per_s.load(Relaxed),
        }
    }
    pub fn add(&self, n: u64) {
        self.bytes_done.fetch_add(n, Relaxed);
    }
    pub fn sub(&self, n: u64) {
        let _ = self
            .bytes_done
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
    pub fn file_done(&self) {
        self.files_done.fetch_add(1, Relaxed);
    }
}

/// The estimated time left, when the rate says anything.
pub fn eta(c: &Counts) -> Option<Duration> {
    let left = c.bytes_total.saturating_sub(c.bytes_done);
    (c.rate_bytes_per_s > 0).then(|| Duration::from_secs(left.div_ceil(c.rate_bytes_per_s)))
}

/// `12.4 GiB of 61.0 GiB (20%), 3 of 21 files, 110.2 MiB/s, ETA 7m32s`.
pub fn line(c: &Counts) -> String {
    let pct = (c.bytes_done as f64 * 100.0 / c.bytes_total.max(1) as f64).min(100.0);
    let eta = match eta(c) {
        Some(d) => format!("ETA {}", human_duration(d.as_secs())),
        None => "ETA unknown".into(),
    };
    format!(
        "{} of {} ({pct:.0}%), {} of {} files, {}/s, {eta}",
        human_bytes(c.bytes_done),
        human_bytes(c.bytes_total),
        c.files_done,
        c.files_total,
        human_bytes(c.rate_bytes_per_s),
    )
}

/// `[#########...........]  45%  ` + the line, for a terminal of any width.
pub fn bar(c: &Counts) -> String {
    const WIDTH: usize = 30;
    let frac = (c.bytes_done as f64 / c.bytes_total.max(1) as f64).clamp(0.0, 1.0);
    let full = (frac * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {}",
        "#".repeat(full),
        ".".repeat(WIDTH - full),
        line(c)
    )
}

/// The rate over a sliding window of samples.
#[derive(Debug)]
pub struct Rate {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    pub fn new(window: Duration) -> Rate {
        Rate {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample and returns the rate since the oldest sample still in the window.
    pub fn sample(&mut self, now: Instant, done: u64) -> u64 {
        self.samples.push_back((now, done));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
        let Some(&(t0, d0)) = self.samples.front() else {
            return 0;
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        (done.saturating_sub(d0) as f64 / secs) as u64
    }
}

/// Until `stop` fires: the rate every second into `p`, and either a progress line in the log
/// every `interval`, or (on a terminal) a bar redrawn every second on stderr.
pub async fn report(
    p: std::sync::Arc<Progress>,
    what: String,
    interval: Duration,
    terminal: bool,
    stop: tokio_util::sync::CancellationToken,
) {
    let tick = Duration::from_secs(1).min(interval.max(Duration::from_millis(100)));
    let mut rate = Rate::new(Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    let mut next_log = start + interval;
    rate.sample(Instant::now(), p.bytes_done.load(Relaxed));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        let r = rate.sample(Instant::now(), p.bytes_done.load(Relaxed));
        p.rate_bytes_per_s.store(r, Relaxed);
        let c = p.counts();
        if terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", bar(&c));
            let _ = err.flush();
        } else if tokio::time::Instant::now() >= next_log {
            next_log += interval;
            tracing::info!(target: "aim_engine::download", "downloading {what}: {}", line(&c));
        }
    }
    if terminal {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\r\x1b[2K{}", bar(&p.counts()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_eta() {
        let c = Counts {
            bytes_done: 1 << 30,
            bytes_total: 4 << 30,
            files_done: 1,
            files_total: 5,
            rate_bytes_per_s: 100 << 20,
        };
        assert_eq!(eta(&c), Some(Duration::from_secs(31)));
        assert_eq!(
            line(&c),
            "1.0 GiB of 4.0 GiB (25%), 1 of 5 files, 100.0 MiB/s, ETA 31s"
        );
        assert!(bar(&c).starts_with("[########......................] 1.0 GiB"));
        let idle = Counts {
            rate_bytes_per_s: 0,
            ..c
        };
        assert!(line(&idle).ends_with("ETA unknown"));
    }

    #[test]
    fn rate_over_a_window() {
        let mut r = Rate::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(r.sample(t, 0), 0);
        assert_eq!(r.sample(t + Duration::from_secs(2), 2000), 1000);
        // Old samples leave the window: only the recent speed counts.
        assert_eq!(r.sample(t + Duration::from_secs(20), 2000), 0);
        assert_eq!(r.sample(t + Duration::from_secs(21), 3000), 1000);
    }
}
