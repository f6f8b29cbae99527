//! Load on the public port across engine restarts (issue 7): the real binary serves the fake
//! engine, which is killed (SIGKILL) a few seconds after it got ready, while client threads
//! send streaming and non-streaming completions without pause. Every request must end within
//! its deadline as one of:
//!
//! * a full answer: 200 with a complete body (the JSON parses; an SSE stream ends with
//!   `data: [DONE]` and the terminating chunk);
//! * a clean 503: Retry-After and an OpenAI error body;
//! * a visible cut: the response ends short (no terminating chunk, or short of Content-Length)
//!   and an SSE stream carries the `engine_stream_cut` error event; only for requests that were
//!   in flight when an engine died.
//!
//! Anything else fails the test: a hang, a 502, a connection closed before a response line, a
//! response that ends cleanly but truncated.
//!
//! `AIM_RESTART_LOAD_SECS=N` turns the test into the longer measurement of bench/README.md:
//! every engine start then dies 3 s after it started, for N seconds of load, and the counts are
//! printed (run with `--nocapture`).

use crate::support::{AimEngine, Running, free_port, wait_for};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request that has not ended after this long hangs.
const DEADLINE: Duration = Duration::from_secs(10);
/// Client threads.
const CLIENTS: usize = 4;
/// How much earlier than our observation of its death an engine may really have died (the
/// watcher polls every 5 ms; the supervisor may reap before we look).
const DEATH_SLACK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Full,
    /// A clean 503, with its error code.
    Unavailable(String),
    Cut,
    Failed(String),
}

#[derive(Debug)]
struct Record {
    stream: bool,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

/// The response bytes of one exchange, read until the server closed the connection.
struct Raw {
    bytes: Vec<u8>,
    /// Why reading stopped early: a reset or similar after some bytes (None: clean EOF).
    read_error: Option<std::io::Error>,
}

fn exchange(port: u16, body: &str, deadline: Instant) -> Result<Raw, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to the public port: {e}"))?;
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send the request: {e}"))?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(hang(&bytes));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Ok(Raw {
                    bytes,
                    read_error: None,
                });
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(hang(&bytes));
            }
            Err(e) => {
                return Ok(Raw {
                    bytes,
                    read_error: Some(e),
                });
            }
        }
    }
}

fn hang(bytes: &[u8]) -> String {
    format!(
        "hang: not ended within {DEADLINE:?}; got {:?}",
        String::from_utf8_lossy(bytes)
    )
}

/// A case-insensitive header value from a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Decodes a chunked body: (data, whether the terminating chunk arrived).
fn dechunk(mut rest: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut data = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok((data, false)); // cut inside a size line (or at a chunk boundary)
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((data, rest.starts_with(b"\r\n")));
        }
        if rest.len() < size + 2 {
            data.extend_from_slice(&rest[..size.min(rest.len())]);
            return Ok((data, false));
        }
        data.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        rest = &rest[size + 2..];
    }
}

/// The SSE events of `text` (`data:` payloads), in order.
fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|e| e.trim_start_matches('\n').strip_prefix("data: "))
        .collect()
}

fn is_cut_event(event: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(event).is_ok_and(|v| {
        v["error"]["code"] == "engine_stream_cut"
            && v["error"]["type"] == "engine_error"
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
    })
}

/// Sorts one exchange into an outcome.
fn classify(raw: &Raw, stream: bool) -> Outcome {
    let text = String::from_utf8_lossy(&raw.bytes);
    let Some(head_end) = raw.bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Failed(format!(
            "closed before a full response head ({:?}): {text:?}",
            raw.read_error
        ));
    };
    let head = String::from_utf8_lossy(&raw.bytes[..head_end]).into_owned();
    let body_bytes = &raw.bytes[head_end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (body, complete) =
        if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            match dechunk(body_bytes) {
                Ok(x) => x,
                Err(e) => return Outcome::Failed(format!("{e}: {text:?}")),
            }
        } else if let Some(len) = header(&head, "content-length").and_then(|v| v.parse().ok()) {
            let len: usize = len;
            (body_bytes.to_vec(), body_bytes.len() == len)
        } else {
            return Outcome::Failed(format!("neither chunked nor counted: {head}"));
        };
    let body = String::from_utf8_lossy(&body).into_owned();
    match status {
        503 => {
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .filter(|v| v["error"]["message"].is_string() && v["error"]["type"].is_string())
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            match (complete, header(&head, "retry-after"), code) {
                (true, Some(s), Some(code)) if s.parse::<u32>().is_ok() => {
                    Outcome::Unavailable(code)
                }
                _ => Outcome::Failed(format!("503 without Retry-After or OpenAI body: {text:?}")),
            }
        }
        200 if complete => {
            let ok = if stream {
                let events = sse_events(&body);
                events.last() == Some(&"[DONE]")
                    && body.ends_with("data: [DONE]\n\n")
                    && !events.iter().any(|e| is_cut_event(e))
                    && events.len() >= 2
            } else {
                serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                    v["choices"][0]["text"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty())
                })
            };
            if ok {
                Outcome::Full
            } else {
                Outcome::Failed(format!("200 that ended cleanly but is not whole: {text:?}"))
            }
        }
        200 => {
            // Cut: visible by its framing; a stream must also say why in an error event.
            if stream && !sse_events(&body).last().is_some_and(|e| is_cut_event(e)) {
                Outcome::Failed(format!("stream cut without the error event: {text:?}"))
            } else {
                Outcome::Cut
            }
        }
        _ => Outcome::Failed(format!("status {status}: {text:?}")),
    }
}

/// Loops until `stop`, alternating streaming and non-streaming completions.
fn client(port: u16, model: String, first_stream: bool, stop: Arc<AtomicBool>) -> Vec<Record> {
    let mut out = Vec::new();
    let mut stream = first_stream;
    while !stop.load(Ordering::SeqCst) {
        let body = serde_json::json!({
            "model": model, "prompt": "Hello", "max_tokens": 8, "stream": stream,
        })
        .to_string();
        let start = Instant::now();
        let outcome = match exchange(port, &body, start + DEADLINE) {
            Ok(raw) => classify(&raw, stream),
            Err(e) => Outcome::Failed(e),
        };
        let pause = matches!(outcome, Outcome::Unavailable(_));
        out.push(Record {
            stream,
            start,
            end: Instant::now(),
            outcome,
        });
        stream = !stream;
        if pause {
            // A polite client waits (Retry-After); a short pause keeps the 2-core CI box usable.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    out
}

/// Whether process `pid` is gone (or a zombie).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Records when each engine (the pid in `main.pid`) is seen dead, until `stop`.
fn watch_engines(state: &Path, stop: Arc<AtomicBool>, deaths: Arc<Mutex<Vec<Instant>>>) {
    let mut watched: Option<i32> = None;
    loop {
        // One last look after `stop`: a death just before it still counts.
        let last = stop.load(Ordering::SeqCst);
        let current = std::fs::read_to_string(state.join("main.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if watched.is_none() || current != watched {
            // A new engine: watch it (its predecessor's death was recorded already).
            if current.is_some_and(|p| !dead(p)) {
                watched = current;
            }
        } else if let Some(pid) = watched
            && dead(pid)
        {
            deaths.lock().expect("deaths").push(Instant::now());
            watched = Some(-1);
        }
        if last {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The supervisor, stopped with SIGTERM (then SIGKILL) when dropped.
struct Supervisor(Running);

impl Supervisor {
    fn stop(&mut self) {
        if let Ok(None) = self.0.child.try_wait() {
            self.0.signal(libc::SIGTERM);
            self.0.wait_code(Duration::from_secs(15));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (head, body) = all.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn ready(port: u16) -> bool {
    get(port, "/health/ready").is_some_and(|(s, _)| s == 200)
}

fn restarts(port: u16) -> u64 {
    get(port, "/status")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["restarts"].as_u64())
        .unwrap_or(0)
}

#[test]
fn public_port_stays_honest_across_an_engine_restart() {
    let long: Option<u64> = std::env::var("AIM_RESTART_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let aim = AimEngine::new();
    let state = aim.dir().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let engine_port = free_port();
    let aim = aim
        .fixture("mi300x-8gpu-spx")
        .arg("aim-test/Tiny-7B")
        .public_port()
        .args(["--engine-port", &engine_port.to_string()])
        .args(["--backoff-initial", "0.2s", "--backoff-max", "0.2s"])
        .args(["--restart-budget", "1000", "--vram-wait-timeout", "0.2s"])
        .args(["--stop-timeout", "5s"])
        .fake_engine()
        .offline_hf()
        .env("FAKE_STATE_DIR", &state)
        .env("FAKE_LOAD_SECS", "0.5")
        .env("FAKE_TOKEN_DELAY_MS", "40")
        .env("FAKE_STREAM_TOKENS", "8")
        .env("FAKE_CRASH_SIGNAL", "KILL");
    let aim = match long {
        // Every engine dies 3 s after its start (about 2 s after it got ready).
        Some(_) => aim.env("FAKE_CRASH_AFTER_SECS", "3"),
        // Only the first one, 3 s after its start; the restarted one serves on.
        None => aim.env("FAKE_START_1", "FAKE_CRASH_AFTER_SECS=3"),
    };
    let mut sup = Supervisor(aim.spawn());
    let port = sup.0.port;
    let err_log = sup.0.path("err.log");
    // Read from the file: `sup` is stopped (mutably) while this is still used.
    let stderr = || std::fs::read_to_string(&err_log).unwrap_or_default();

    assert!(
        wait_for(Duration::from_secs(30), || ready(port)),
        "never ready: {}",
        stderr()
    );
    let models = get(port, "/v1/models").expect("models").1;
    let model = serde_json::from_str::<serde_json::Value>(&models)
        .ok()
        .and_then(|v| v["data"][0]["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no model id in {models}"));

    let stop = Arc::new(AtomicBool::new(false));
    // The watcher outlives the clients: a request still running at `stop` may be cut by a death.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let deaths = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (state, stop, deaths) = (state.clone(), stop_watch.clone(), deaths.clone());
        std::thread::spawn(move || watch_engines(&state, stop, deaths))
    };
    let t0 = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (model, stop) = (model.clone(), stop.clone());
            std::thread::spawn(move || client(port, model, i % 2 == 0, stop))
        })
        .collect();

    // Single restart: load until the engine died, is ready again, and served a while more.
    // Long run: load for the given time.
    let mut ready_again = None;
    match long {
        Some(secs) => std::thread::sleep(Duration::from_secs(secs)),
        None => {
            let died = wait_for(Duration::from_secs(15), || {
                !deaths.lock().expect("deaths").is_empty()
            });
            let back = died
                && wait_for(Duration::from_secs(20), || {
                    ready(port) && restarts(port) >= 1
                });
            ready_again = back.then(Instant::now);
            if back {
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let records: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    // An engine's sockets close a moment before it turns zombie.
    std::thread::sleep(Duration::from_millis(50));
    stop_watch.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let wall = t0.elapsed();
    let deaths = deaths.lock().expect("deaths").clone();
    let restarts_seen = restarts(port);
    sup.stop();

    // Tally.
    let mut full = 0;
    let mut cut = 0;
    let mut unavailable: std::collections::BTreeMap<String, usize> = Default::default();
    let mut failures = Vec::new();
    for r in &records {
        match &r.outcome {
            Outcome::Full => full += 1,
            Outcome::Unavailable(code) => *unavailable.entry(code.clone()).or_default() += 1,
            Outcome::Cut => {
                // Only a request in flight when an engine died may be cut.
                let in_flight = deaths
                    .iter()
                    .any(|&d| r.start < d && r.end + DEATH_SLACK > d);
                if in_flight {
                    cut += 1;
                } else {
                    failures.push(format!(
                        "cut but not in flight at a death (stream {}, {:?}..{:?} after start)",
                        r.stream,
                        r.start - t0,
                        r.end - t0
                    ));
                }
            }
            Outcome::Failed(why) => {
                failures.push(format!("stream {} at {:?}: {why}", r.stream, r.start - t0))
            }
        }
        // Before the first death the engine was fine: nothing but full answers.
        if r.outcome != Outcome::Full && deaths.first().is_none_or(|&d| r.end + DEATH_SLACK < d) {
            failures.push(format!("{:?} before any engine died", r.outcome));
        }
    }
    let n503: usize = unavailable.values().sum();
    eprintln!(
        "restart load: {} requests in {wall:.1?} ({} engine deaths, restarts {restarts_seen}): \
         full {full}, 503 {n503} {unavailable:?}, cut with visible error {cut}, failures {}",
        records.len(),
        deaths.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failures:\n{}\n{}",
        failures.join("\n"),
        stderr()
    );
    assert!(!deaths.is_empty(), "no engine died: {}", stderr());
    if long.is_none() {
        let again = ready_again
            .unwrap_or_else(|| panic!("not ready again with restarts >= 1: {}", stderr()));
        let first_death = deaths[0];
        assert!(
            records
                .iter()
                .any(|r| r.outcome == Outcome::Full && r.end < first_death),
            "no full answer before the crash"
        );
        assert!(
            records
                .iter()
                .any(|r| r.outcome == Outcome::Full && r.start > again),
            "no full answer after the restart"
        );
        assert!(
            records
                .iter()
                .any(|r| r.outcome == Outcome::Full && r.stream && r.start > again),
            "no full stream after the restart"
        );
    }
    assert!(
        n503 + cut > 0,
        "the restart was never seen by a client: the test did not exercise it"
    );
}
