//! The engine's stdout/stderr: copied to ours byte for byte, and the last lines kept.
//!
//! Decision: pipes, not inherited descriptors. The engine's output is the log users read, so
//! every byte is written through unchanged (stdout to our stdout, stderr to our stderr), and
//! the same bytes feed a ring buffer of the last lines for failure classification, the
//! `log_tail` of `/status` failures and `last_log_line`. Copying runs on two small plain
//! threads per attempt and writes through `crate::logging`'s bounded queues, so a slow or
//! gone log reader can stall neither the engine nor the supervisor's event loop (output is
//! then dropped and counted).
//! The threads end at EOF, i.e. when the last process holding the pipe (the engine or one
//! of its workers) is gone, which the tree teardown guarantees.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Lines kept for diagnosis.
pub const TAIL_LINES: usize = 200;
/// Longer lines are cut (a progress bar without newlines must not grow without bound).
pub const MAX_LINE: usize = 4096;

/// The last `cap` complete lines (plus the line being written).
#[derive(Debug, Clone)]
pub struct Ring {
    cap: usize,
    lines: VecDeque<String>,
    partial: Vec<u8>,
    /// Lines ended so far (progress: a log that moves is an engine that moves).
    total: u64,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            cap,
            lines: VecDeque::with_capacity(cap.min(64)),
            partial: Vec::new(),
            total: 0,
        }
    }

    /// Adds raw output; `\r` counts as a line end too (progress bars redraw with it).
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_line();
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end()
            .to_string();
        self.partial.clear();
        if line.is_empty() {
            return;
        }
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.total += 1;
    }

    /// Lines ended so far, including those no longer kept.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The last `n` lines, oldest first (the unfinished line included).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut all: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            all.push(
                String::from_utf8_lossy(&self.partial)
                    .trim_end()
                    .to_string(),
            );
        }
        let skip = all.len().saturating_sub(n);
        all.split_off(skip)
    }

    pub fn last_line(&self) -> Option<String> {
        self.tail(1).pop()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.partial.clear();
    }
}

/// The tail shared between the copier threads and the supervisor.
pub type SharedRing = Arc<Mutex<Ring>>;

pub fn lock(r: &SharedRing) -> std::sync::MutexGuard<'_, Ring> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which of our descriptors a stream goes to.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    Stdout,
    Stderr,
    /// Kept in the ring only (a helper's output that is not the engine's log, e.g. the
    /// version probe's traceback when the engine is not installed).
    Discard,
}

/// Copies `src` to our `sink` unchanged and into `ring` until EOF; `done` fires at EOF.
pub fn start_copy<R: Read + Send + 'static>(
    mut src: R,
    sink: Sink,
    ring: SharedRing,
) -> std::io::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    super::signals::with_all_blocked(|| {
        std::thread::Builder::new()
            .name("engine-log".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let chunk = &buf[..n];
                            // Never blocks: a stuck or gone reader of ours drops (and
                            // counts) output instead of stalling the engine or us.
                            match sink {
                                Sink::Stdout => crate::logging::stdout().send(chunk.to_vec()),
                                Sink::Stderr => crate::logging::stderr().send(chunk.to_vec()),
                                Sink::Discard => {}
                            }
                            lock(&ring).push(chunk);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            })
    })?;
    Ok(done_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines() {
        let mut r = Ring::new(3);
        r.push(b"one\ntwo\r\nthr");
        assert_eq!(r.tail(10), vec!["one", "two", "thr"]);
        r.push(b"ee\n\nfour\nfive\n");
        assert_eq!(r.tail(10), vec!["three", "four", "five"]);
        assert_eq!(r.tail(2), vec!["four", "five"]);
        assert_eq!(r.last_line().as_deref(), Some("five"));
        r.push(b"progress 10%\rprogress 20%");
        assert_eq!(r.tail(2), vec!["progress 10%", "progress 20%"]);
        let long = vec![b'x'; MAX_LINE * 2];
        r.push(&long);
        r.push(b"\n");
        assert_eq!(r.last_line().map(|l| l.len()), Some(MAX_LINE));
        r.push(&[0xff, b'o', b'k', b'\n']);
        assert_eq!(r.last_line().as_deref(), Some("\u{fffd}ok"));
        r.clear();
        assert!(r.tail(5).is_empty());
    }
}
