//! Hang detection against the fake engine: a frozen process is found and restarted within
//! the freeze window; a slow but steady engine and a long prefill are left alone. The windows
//! are scaled down (seconds, not minutes); the rules are the same as with the defaults.

use crate::support::{AimEngine, Running, request, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn status(port: u16) -> Value {
    let (_, body) = request(port, "GET", "/status", "").unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// aim-engine with the fake engine and small hang windows; `env` for the fake.
fn start(env: &[(&str, &str)], args: &[&str]) -> Running {
    let mut aim = AimEngine::new()
        .fixture("mi300x-8gpu-spx")
        .quick_watched_fake()
        .args(args);
    for (k, v) in env {
        aim = aim.env(k, v);
    }
    aim.spawn()
}

/// Waits up to `limit` for the first restart; the status then (the test fails without one).
fn wait_restart(run: &mut Running, limit: Duration) -> Value {
    let port = run.port;
    let restarted = wait_for(limit, || {
        status(port)["restarts"].as_u64().unwrap_or(0) >= 1
    });
    assert!(restarted, "no restart: {}", run.report());
    status(port)
}

fn wait_ready(run: &mut Running, limit: Duration) {
    let port = run.port;
    let ready = wait_for(limit, || {
        request(port, "GET", "/health/ready", "").is_some_and(|(c, _)| c == 200)
    });
    assert!(ready, "never ready: {}", run.report());
}

fn completion(port: u16, tokens: u32) -> Option<(u16, String)> {
    let (_, models) = request(port, "GET", "/v1/models", "")?;
    let v: Value = serde_json::from_str(&models).ok()?;
    let id = v["data"][0]["id"].as_str()?.to_string();
    let body = json!({"model": id, "prompt": "Hello", "max_tokens": tokens, "stream": true});
    request(port, "POST", "/v1/completions", &body.to_string())
}

/// SIGSTOP of the engine: found frozen within the freeze window plus a sample, stopped and
/// restarted; /status and /metrics say so.
#[test]
fn a_frozen_engine_is_found_and_restarted() {
    let mut run = start(
        &[("FAKE_LOAD_SECS", "0.3")],
        &["--hang-freeze-window", "1s", "--liveness-interval", "30s"],
    );
    wait_ready(&mut run, Duration::from_secs(30));
    let port = run.port;
    let pid = status(port)["engine_pid"].as_i64().expect("engine pid") as i32;
    let stopped_at = Instant::now();
    // SAFETY: plain syscall on the engine aim-engine started.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let st = wait_restart(&mut run, Duration::from_secs(20));
    let took = stopped_at.elapsed();
    assert_eq!(st["last_hang"]["signal"], "frozen", "{st}");
    let detail = st["last_hang"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("engine process {pid}")), "{st}");
    assert_eq!(st["failures"][0]["class"], "hung", "{st}");
    // Found after the 1 s window, within a few samples of it (the stop grace is 2 s, and a
    // stopped process takes the SIGKILL after it).
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    eprintln!("frozen: restart counted {took:?} after SIGSTOP (window 1 s)");
    wait_ready(&mut run, Duration::from_secs(30));
    let (_, metrics) = request(port, "GET", "/metrics", "").expect("metrics");
    assert!(
        metrics.contains("aim_hangs_total{signal=\"frozen\"} 1"),
        "{metrics}"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}

/// Two tokens a second is slow but steady: with a stall window shorter than the whole
/// answer but longer than the gap between tokens, nothing is restarted.
#[test]
fn a_slow_steady_stream_is_left_alone() {
    let mut run = start(
        &[("FAKE_LOAD_SECS", "0.3"), ("FAKE_TOKEN_DELAY_MS", "700")],
        // 3 s: over four token gaps of margin on a loaded machine, and still shorter than
        // the 5.6 s answer.
        &["--hang-stall-window", "3s", "--liveness-interval", "30s"],
    );
    wait_ready(&mut run, Duration::from_secs(30));
    let port = run.port;
    let t = Instant::now();
    let (code, body) = completion(port, 8).expect("completion");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(t.elapsed() >= Duration::from_secs(5), "{:?}", t.elapsed());
    let st = status(port);
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(st["last_hang"].is_null(), "{st}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}

/// A prefill three times as long as the stall window: no byte and no token for 6 s, but the
/// engine works (CPU time), so it is progress and the request completes.
#[test]
fn a_long_prefill_is_left_alone() {
    // Readiness skips its test inference here: it would take the prefill too.
    let mut run = start(
        &[("FAKE_LOAD_SECS", "0.3"), ("FAKE_PREFILL_MS", "6000")],
        &[
            "--hang-stall-window",
            "2s",
            "--liveness-interval",
            "30s",
            "--skip-test-inference",
        ],
    );
    wait_ready(&mut run, Duration::from_secs(30));
    let port = run.port;
    let t = Instant::now();
    let (code, body) = completion(port, 2).expect("completion");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(t.elapsed() >= Duration::from_secs(6), "{:?}", t.elapsed());
    let st = status(port);
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(st["last_hang"].is_null(), "{st}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}

/// Completions that never answer while /health does (a wedged engine core behind a healthy
/// API server): with a request in flight and nothing moving for the stall window, the engine
/// is hung; the request ends at once with 503 `engine_restarting`, not at its client's own
/// timeout.
#[test]
fn work_without_progress_is_hung_and_its_request_ends() {
    let mut run = start(
        &[("FAKE_LOAD_SECS", "0.3"), ("FAKE_HANG_COMPLETIONS", "1")],
        &[
            "--hang-stall-window",
            "2s",
            "--liveness-interval",
            "30s",
            "--skip-test-inference",
        ],
    );
    wait_ready(&mut run, Duration::from_secs(30));
    let port = run.port;
    let t = Instant::now();
    let (code, body) = completion(port, 4).expect("an answer");
    let took = t.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("engine_restarting"), "{body}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    eprintln!("no progress: the request ended after {took:?} (stall window 2 s)");
    let st = wait_restart(&mut run, Duration::from_secs(20));
    assert_eq!(st["last_hang"]["signal"], "no_progress", "{st}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}

/// Idle, and the engine core stopped answering (its /health still fine): the idle probe, a
/// 1-token completion, misses, and after --liveness-failures misses the engine is hung.
#[test]
fn idle_probe_misses_are_hung() {
    let mut run = start(
        &[
            ("FAKE_LOAD_SECS", "0.3"),
            // The readiness check's test inference passes; every later completion hangs.
            ("FAKE_HANG_COMPLETIONS_AFTER", "1"),
        ],
        &[
            "--liveness-interval",
            "0.2s",
            "--liveness-failures",
            "2",
            "--idle-probe-interval",
            "0.2s",
            "--idle-probe-timeout",
            "0.5s",
        ],
    );
    wait_ready(&mut run, Duration::from_secs(30));
    let st = wait_restart(&mut run, Duration::from_secs(20));
    assert_eq!(st["last_hang"]["signal"], "probe_misses", "{st}");
    let detail = st["last_hang"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("idle probes (1-token completions)"), "{st}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}

/// A load that stops moving (no log line, no CPU time) is a hang long before the startup
/// timeout: found after the startup stall window and restarted.
#[test]
fn a_load_that_stops_moving_is_a_startup_stall() {
    let mut run = start(
        // The fake sleeps through its "load": no output, no CPU.
        &[("FAKE_LOAD_SECS", "60")],
        &[
            "--startup-stall-window",
            "2s",
            "--startup-timeout",
            "10m",
            "--liveness-interval",
            "30s",
        ],
    );
    let t = Instant::now();
    let st = wait_restart(&mut run, Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(st["last_hang"]["signal"], "startup_stall", "{st}");
    assert_eq!(st["failures"][0]["class"], "hung", "{st}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    eprintln!("startup stall: restart counted {took:?} after start (window 2 s)");
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(Duration::from_secs(15)), 0);
}
