//! Our stdout and stderr: bounded, non-blocking, never fatal.
//!
//! Everything we write (our log lines through tracing, and the engine's output copied through
//! `supervise::logs`) goes into a bounded queue per descriptor; one plain thread per
//! descriptor writes the queue out. A reader that is slow or stuck (a full pipe nobody reads)
//! only blocks that thread: when its queue is full new messages are dropped and counted, and
//! once writing works again a line says how many were lost. A reader that is gone (EPIPE,
//! `aim-engine ... | head`) makes the thread discard everything from then on; nothing panics
//! and nothing aborts. So the event loop never waits on a log reader, and health, stop and the
//! engine's teardown work regardless.
//!
//! `flush` waits (bounded) for the queues to be written out, for the last lines before exit.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Messages each queue holds by default (`--log-buffer`).
pub const DEFAULT_CAPACITY: usize = 4096;

static CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_CAPACITY);
static STDOUT: OnceLock<Sink> = OnceLock::new();
static STDERR: OnceLock<Sink> = OnceLock::new();

/// Sets the queue size of the sinks not yet started (call before the first log line).
pub fn set_capacity(messages: usize) {
    CAPACITY.store(messages.max(1), Ordering::Relaxed);
}

/// The sink of our stdout (fd 1).
pub fn stdout() -> &'static Sink {
    STDOUT.get_or_init(|| Sink::start(Fd::Stdout, CAPACITY.load(Ordering::Relaxed)))
}

/// The sink of our stderr (fd 2).
pub fn stderr() -> &'static Sink {
    STDERR.get_or_init(|| Sink::start(Fd::Stderr, CAPACITY.load(Ordering::Relaxed)))
}

/// Waits at most `limit` for both queues to be written out (or discarded).
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    for sink in [STDOUT.get(), STDERR.get()].into_iter().flatten() {
        sink.flush_until(deadline);
    }
}

#[derive(Debug, Clone, Copy)]
enum Fd {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Counts {
    /// Messages accepted into the queue.
    queued: AtomicU64,
    /// Accepted messages written or discarded by the writer.
    done: AtomicU64,
    /// Messages lost: queue full, or the reader gone.
    dropped: AtomicU64,
    /// The reader is gone (EPIPE or another write error): drop at once.
    closed: AtomicBool,
}

/// One descriptor's bounded queue and its writer thread.
pub struct Sink {
    queue: Arc<Queue>,
    counts: Arc<Counts>,
}

/// A bounded queue that takes memory as it fills, not up front (a `sync_channel` of 4,096
/// slots is 128 KiB per descriptor, touched at start).
struct Queue {
    items: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity,
        }
    }

    /// Adds `msg` unless the queue is full; never blocks on the writer.
    fn try_push(&self, msg: Vec<u8>) -> bool {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() >= self.capacity {
            return false;
        }
        items.push_back(msg);
        drop(items);
        self.ready.notify_one();
        true
    }

    /// The next message, waiting for one.
    fn pop(&self) -> Vec<u8> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(msg) = items.pop_front() {
                // After a burst, give the backlog's room back.
                if items.is_empty() && items.capacity() > 64 {
                    items.shrink_to(16);
                }
                return msg;
            }
            items = self.ready.wait(items).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Sink {
    fn start(fd: Fd, capacity: usize) -> Sink {
        let queue = Arc::new(Queue::new(capacity));
        let rx = queue.clone();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let started = crate::supervise::signals::with_all_blocked(|| {
            std::thread::Builder::new()
                .name("log-writer".into())
                .stack_size(64 * 1024)
                .spawn(move || write_out(fd, &rx, &c))
        });
        if started.is_err() {
            // No thread: every message is dropped (and counted) rather than written inline.
            counts.closed.store(true, Ordering::Relaxed);
        }
        Sink { queue, counts }
    }

    /// Queues `bytes` for writing; drops them (counted) when the queue is full or the reader
    /// is gone. Never blocks.
    pub fn send(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.counts.closed.load(Ordering::Relaxed) {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Counted before the send so that `done` never overtakes `queued`.
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        if !self.queue.try_push(bytes) {
            self.counts.queued.fetch_sub(1, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages lost so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    fn flush_until(&self, deadline: Instant) {
        while self.counts.done.load(Ordering::Relaxed) < self.counts.queued.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The writer thread: writes each message to `fd`; after drops, says how many were lost; after
/// a write error, discards everything.
fn write_out(fd: Fd, queue: &Queue, counts: &Counts) -> ! {
    let mut reported = 0u64;
    loop {
        let msg = queue.pop();
        if !counts.closed.load(Ordering::Relaxed) {
            let dropped = counts.dropped.load(Ordering::Relaxed);
            let mut ok = true;
            if dropped > reported {
                let note = format!(
                    "aim-engine: {} log message(s) dropped: the reader of our {} was too slow\n",
                    dropped - reported,
                    match fd {
                        Fd::Stdout => "stdout",
                        Fd::Stderr => "stderr",
                    }
                );
                ok = write_fd(fd, note.as_bytes());
                reported = dropped;
            }
            if !(ok && write_fd(fd, &msg)) {
                counts.closed.store(true, Ordering::Relaxed);
            }
        }
        counts.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes all of `bytes`; false on any error (EPIPE: the reader is gone).
fn write_fd(fd: Fd, bytes: &[u8]) -> bool {
    // Rust ignores SIGPIPE, so a gone reader is an EPIPE error here, not a signal.
    let r = match fd {
        Fd::Stdout => std::io::stdout().lock().write_all(bytes),
        Fd::Stderr => std::io::stderr().lock().write_all(bytes),
    };
    r.is_ok()
}

/// tracing's writer: each event is formatted into a buffer that goes to the stderr sink as
/// one message when tracing drops it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingWriter;

/// One event's bytes on their way to the stderr sink.
pub struct EventBuf(Vec<u8>);

impl Write for EventBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuf {
    fn drop(&mut self) {
        stderr().send(std::mem::take(&mut self.0));
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TracingWriter {
    type Writer = EventBuf;
    fn make_writer(&'a self) -> EventBuf {
        EventBuf(Vec::with_capacity(256))
    }
}

/// Whether log lines get colour: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The first line of `serve`: version, public URL, model, the chosen recipe and its GPUs.
pub fn first_line(url: &str, plan: &crate::plan::Plan) -> String {
    let mut line = format!(
        "aim-engine {}: serving {} at {url}",
        env!("CARGO_PKG_VERSION"),
        plan.model
    );
    if let Some(l) = plan.launches.first() {
        line.push_str(&format!(
            " with recipe {} ({}, {})",
            l.recipe_id, l.engine, l.precision
        ));
        let ordinals: Vec<String> = l.gpus.iter().map(|g| g.ordinal.to_string()).collect();
        let product = l.gpus.first().map(|g| g.product.as_str()).unwrap_or("");
        match ordinals.len() {
            0 => line.push_str(" (no GPU restriction)"),
            1 => line.push_str(&format!(" on GPU {} ({product})", ordinals[0])),
            _ => line.push_str(&format!(" on GPUs {} ({product})", ordinals.join(","))),
        }
        if plan.launches.len() > 1 {
            line.push_str(&format!("; {} fallback(s)", plan.launches.len() - 1));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_blocks() {
        // A sink whose writer never runs: capacity 2, the third message is dropped.
        let sink = Sink {
            queue: Arc::new(Queue::new(2)),
            counts: Arc::new(Counts::default()),
        };
        let t = Instant::now();
        for _ in 0..5 {
            sink.send(b"line\n".to_vec());
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(sink.dropped(), 3);
        assert_eq!(sink.counts.queued.load(Ordering::Relaxed), 2);
        sink.counts.closed.store(true, Ordering::Relaxed);
        sink.send(b"x".to_vec());
        assert_eq!(sink.dropped(), 4);
    }

    #[test]
    fn the_queue_hands_messages_over_in_order_and_gives_room_back() {
        let q = Arc::new(Queue::new(1000));
        for i in 0..200u32 {
            assert!(q.try_push(i.to_le_bytes().to_vec()));
        }
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || (0..201).map(|_| q.pop()).collect::<Vec<_>>())
        };
        // The reader drains 200 and then waits for the 201st.
        std::thread::sleep(Duration::from_millis(50));
        assert!(q.try_push(b"last".to_vec()));
        let got = reader.join().expect("reader");
        assert_eq!(got[0], 0u32.to_le_bytes());
        assert_eq!(got[199], 199u32.to_le_bytes());
        assert_eq!(got[200], b"last");
        let items = q.items.lock().expect("lock");
        assert!(
            items.is_empty() && items.capacity() <= 64,
            "{}",
            items.capacity()
        );
    }
}
