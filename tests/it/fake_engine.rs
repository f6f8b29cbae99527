//! Integration tests of the fake engine itself (tests/fake-engine): command-line rejection,
//! vLLM's refuse-until-loaded and SGLang's 503-while-warming readiness, SSE streaming, and
//! injected start failures and crashes. Other suites rely on these behaviours.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fake_engine;

/// Kills and reaps the child when a test ends, passed or failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn vllm(port: u16, envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(fake_engine());
    cmd.args(["serve", "/models/m", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--tensor-parallel-size", "1", "--served-model-name", "m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("spawn fake-engine"))
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body) or None if the
/// connection was refused or broke.
fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `GET path` until it answers `want` or `within` passes.
fn wait_status(port: u16, path: &str, want: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if request(port, "GET", path, None).map(|(s, _)| s) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn fake_engine_rejects_unknown_flags_like_argparse() {
    for (args, prog) in [
        (
            &["serve", "m", "--port", "1", "--no-such-flag"][..],
            "vllm serve",
        ),
        (
            &["--model-path", "m", "--no-such-flag"][..],
            "launch_server.py",
        ),
    ] {
        let out = Command::new(fake_engine())
            .args(args)
            .output()
            .expect("run fake-engine");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{prog}: error: unrecognized arguments: --no-such-flag"
            )),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn fake_engine_vllm_refuses_connections_until_loaded() {
    let port = free_port();
    let started = Instant::now();
    let _engine = vllm(port, &[("FAKE_LOAD_SECS", "1.5")]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        request(port, "GET", "/health", None).is_none(),
        "port must refuse while loading"
    );
    assert!(
        wait_status(port, "/health", 200, Duration::from_secs(10)),
        "never became healthy"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "ready before the load time"
    );
    let (status, body) = request(port, "GET", "/v1/models", None).expect("models");
    assert_eq!(status, 200);
    assert!(body.contains("\"id\":\"m\""), "{body}");
}

#[test]
fn fake_engine_sglang_answers_503_while_warming() {
    let port = free_port();
    let mut cmd = Command::new(fake_engine());
    cmd.args(["--model-path", "/models/m", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--tp-size", "1"])
        .env("FAKE_LOAD_SECS", "1.5")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _engine = Running(cmd.spawn().expect("spawn fake-engine"));
    assert!(
        wait_status(port, "/health", 503, Duration::from_secs(5)),
        "no 503 while warming"
    );
    assert!(
        wait_status(port, "/health", 200, Duration::from_secs(10)),
        "never became healthy"
    );
}

#[test]
fn fake_engine_streams_sse_chunks_and_done() {
    let port = free_port();
    let _engine = vllm(
        port,
        &[("FAKE_LOAD_SECS", "0"), ("FAKE_STREAM_TOKENS", "50")],
    );
    assert!(wait_status(port, "/health", 200, Duration::from_secs(10)));
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let body = r#"{"model":"m","prompt":"hi","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}"#;
        let (status, text) = request(port, "POST", path, Some(body)).expect("stream");
        assert_eq!(status, 200, "{path}");
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data: ")).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"), "{path}: {text}");
        let tokens = events
            .iter()
            .filter(|e| {
                e.contains("\"finish_reason\"")
                    && (e.contains("\"text\"") || e.contains("\"content\":\" "))
            })
            .count();
        assert_eq!(
            tokens, 5,
            "{path}: max_tokens must bound the stream: {text}"
        );
    }
}

#[test]
fn fake_engine_start_failure_prints_text_and_exits_with_code() {
    let text = "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.";
    let out = Command::new(fake_engine())
        .args(["serve", "m", "--port", "1"])
        .env("FAKE_FAIL_AT_START", text)
        .env("FAKE_FAIL_EXIT_CODE", "7")
        .output()
        .expect("run fake-engine");
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains(text));
}

#[test]
fn fake_engine_crashes_after_n_requests() {
    let port = free_port();
    let mut engine = vllm(
        port,
        &[
            ("FAKE_LOAD_SECS", "0"),
            ("FAKE_CRASH_AFTER_REQUESTS", "2"),
            ("FAKE_CRASH_EXIT_CODE", "3"),
        ],
    );
    assert!(wait_status(port, "/health", 200, Duration::from_secs(10)));
    let req = r#"{"model":"m","prompt":"hi","max_tokens":2}"#;
    let first = request(port, "POST", "/v1/completions", Some(req)).expect("first");
    assert_eq!(first.0, 200);
    assert!(
        engine.0.try_wait().expect("try_wait").is_none(),
        "crashed too early"
    );
    let second = request(port, "POST", "/v1/completions", Some(req)).expect("second");
    assert_eq!(second.0, 200, "the Nth request is still answered");
    let status = wait_exit(&mut engine.0, Duration::from_secs(5)).expect("did not crash");
    assert_eq!(status.code(), Some(3));
}
