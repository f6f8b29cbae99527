//! Request deadlines at the public port, end to end: the real binary in front of the fake
//! engine made to hang (`FAKE_HANG_COMPLETIONS`) or to stall mid-stream
//! (`FAKE_STREAM_STALL_AFTER`), with the deadlines set by flag and by env var. The finer cases
//! (a slow but steady stream, the abort hook, a head without a first token) are in `http`,
//! in process.

use crate::support::{AimEngine, Running, free_port, wait_for};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The binary with the fake engine, `extra` args and env, ready (else panics with the report).
fn serve(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut b = AimEngine::new()
        .fixture("mi300x-8gpu-spx")
        .arg("aim-test/Tiny-7B")
        .public_port()
        .args(["--engine-port", &free_port().to_string()])
        .args(args)
        .fake_engine()
        .offline_hf()
        .env("AIM_STOP_TIMEOUT", "2s")
        .env("FAKE_LOAD_SECS", "0.2");
    for (k, v) in envs {
        b = b.env(k, v);
    }
    let mut run = b.spawn();
    let port = run.port;
    let ready = wait_for(Duration::from_secs(30), || {
        exchange(port, "GET", "/health/ready", "")
            .is_some_and(|(_, reads)| joined(&reads).starts_with("HTTP/1.1 200"))
    });
    assert!(ready, "never ready\n{}", run.report());
    run
}

/// One request with `Connection: close`; every read with when it returned (since the request
/// was written), until the server closed the connection. None when it could not be sent.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(Instant, Vec<(Duration, String)>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let t = Instant::now();
    let mut reads = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reads.push((t.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(_) => return None,
        }
    }
    Some((t, reads))
}

fn joined(reads: &[(Duration, String)]) -> String {
    reads.iter().map(|(_, r)| r.as_str()).collect()
}

fn completion(stream: bool, max_tokens: u32) -> String {
    serde_json::json!({"model": "aim-test/Tiny-7B", "prompt": "Hello there", "max_tokens": max_tokens, "stream": stream})
        .to_string()
}

/// Both logs (the engine's lines are copied into ours).
fn logs(run: &Running) -> String {
    format!("{}\n{}", run.stdout(), run.stderr())
}

fn metrics(port: u16) -> String {
    exchange(port, "GET", "/metrics", "")
        .map(|(_, r)| joined(&r))
        .unwrap_or_default()
}

/// An engine that takes the request and never answers: 504 `first_byte_timeout` in the OpenAI
/// shape right after the deadline (`--request-first-byte-timeout 1s`), and the engine sees the
/// disconnect (vLLM's `Aborted request` line, its running gauge back to 0). Health is untouched.
#[test]
fn a_hung_completion_is_a_504_after_the_first_byte_deadline_and_is_cancelled() {
    let mut run = serve(
        &[
            "--request-first-byte-timeout",
            "1s",
            "--skip-test-inference",
        ],
        &[("FAKE_HANG_COMPLETIONS", "1")],
    );
    let port = run.port;
    let t = Instant::now();
    let (_, reads) =
        exchange(port, "POST", "/v1/completions", &completion(false, 4)).expect("an answer");
    let took = t.elapsed();
    let text = joined(&reads);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 504"), "{text}\n{}", run.report());
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error"]["code"], "first_byte_timeout", "{v}");
    assert_eq!(v["error"]["type"], "timeout_error", "{v}");
    assert!(v["error"].get("param").is_some(), "{v}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    eprintln!("end to end, first-byte deadline 1s: 504 after {took:?}");
    let saw = wait_for(Duration::from_secs(3), || {
        logs(&run).contains("Aborted request cmpl-1.")
    });
    assert!(saw, "the engine never saw the disconnect\n{}", run.report());
    let idle = wait_for(Duration::from_secs(3), || {
        metrics(port)
            .contains("vllm:num_requests_running{engine=\"0\",model_name=\"aim-test/Tiny-7B\"} 0")
    });
    assert!(idle, "{}", metrics(port));
    let m = metrics(port);
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"first_byte\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("aim_inflight_requests 0\n"), "{m}");
    assert!(
        logs(&run).contains("no response from the engine in time"),
        "{}",
        run.report()
    );
    let (_, health) = exchange(port, "GET", "/health", "").expect("health");
    assert!(
        joined(&health).starts_with("HTTP/1.1 200"),
        "{}",
        joined(&health)
    );
    run.signal(libc::SIGTERM);
    run.exit_code(Duration::from_secs(15));
}

/// An engine stream that stops after two tokens: the client gets the two tokens, then, one gap
/// (`AIM_STREAM_GAP_TIMEOUT=1s`) later, a final SSE event with an OpenAI error, then the end
/// of the connection without the terminating chunk; the engine sees the disconnect.
#[test]
fn a_stalled_stream_ends_with_an_sse_error_event_after_the_gap() {
    let mut run = serve(
        &["--request-first-byte-timeout", "5s"],
        &[
            ("AIM_STREAM_GAP_TIMEOUT", "1s"),
            ("FAKE_STREAM_STALL_AFTER", "2"),
            ("FAKE_TOKEN_DELAY_MS", "20"),
        ],
    );
    let port = run.port;
    let (_, reads) =
        exchange(port, "POST", "/v1/completions", &completion(true, 6)).expect("an answer");
    let text = joined(&reads);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}\n{}", run.report());
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a terminating chunk after a cut: {text:?}"
    );
    let tokens: Vec<Duration> = reads
        .iter()
        .filter(|(_, r)| r.contains("\"text\""))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(text.matches("\"text\"").count(), 2, "{text}");
    let (at, event) = reads
        .iter()
        .find(|(_, r)| r.contains("stream_gap_timeout"))
        .unwrap_or_else(|| panic!("no error event: {text:?}"));
    let json = event
        .split("data: ")
        .nth(1)
        .and_then(|j| j.split("\n\n").next())
        .unwrap_or_else(|| panic!("{event:?}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["error"]["code"], "stream_gap_timeout", "{v}");
    let last = *tokens.last().expect("tokens");
    let late = *at - last;
    assert!(late >= Duration::from_secs(1), "{late:?}");
    assert!(late < Duration::from_millis(1700), "{late:?}");
    eprintln!("end to end, gap deadline 1s: error event {late:?} after the last token");
    let saw = wait_for(Duration::from_secs(3), || {
        logs(&run).contains("Aborted request cmpl-")
    });
    assert!(saw, "the engine never saw the disconnect\n{}", run.report());
    let m = metrics(port);
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"gap\"} 1\n"),
        "{m}"
    );
    // A stream shorter than the stall runs to its end.
    let (_, reads) =
        exchange(port, "POST", "/v1/completions", &completion(true, 2)).expect("an answer");
    let text = joined(&reads);
    assert!(
        text.contains("data: [DONE]") && text.ends_with("0\r\n\r\n"),
        "{text:?}"
    );
    run.signal(libc::SIGTERM);
    run.exit_code(Duration::from_secs(15));
}
