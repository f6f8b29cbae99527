//! Integration tests of the fake engine itself (tests/fake-engine): command-line rejection,
//! vLLM's refuse-until-loaded and SGLang's 503-while-warming readiness, SSE streaming, and
//! injected start failures and crashes. Other suites rely on these behaviours.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{fake_engine, free_port, wait_exit, wait_for};

/// Kills and reaps the child when a test ends, passed or failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs a pid (an orphan or worker the test made) when the test ends, passed or failed.
struct KillPid(i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
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
    wait_for(within, || {
        request(port, "GET", path, None).map(|(s, _)| s) == Some(want)
    })
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

/// Waits for `<dir>/<name>` to exist and returns its trimmed content.
fn wait_file(dir: &std::path::Path, name: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(dir.join(name))
            && !s.trim().is_empty()
        {
            return Some(s.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn pid_in(dir: &std::path::Path, name: &str) -> i32 {
    wait_file(dir, name, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{name} never written"))
        .parse()
        .expect("pid file holds a pid")
}

/// Fields 4 (ppid) and 6 (session) of /proc/PID/stat, or None once the process is gone or a
/// zombie.
fn ppid_sid(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f[0] == "Z" || f[0] == "X" {
        return None;
    }
    Some((f[1].parse().ok()?, f[3].parse().ok()?))
}

fn sigterm(child: &Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn state_engine(dir: &std::path::Path, envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(fake_engine());
    cmd.args(["serve", "m", "--host", "127.0.0.1", "--port", "0"])
        .env("FAKE_STATE_DIR", dir)
        .env("FAKE_LOAD_SECS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("spawn fake-engine"))
}

#[test]
fn fake_engine_fails_first_starts_then_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let envs = [
        ("FAKE_FAIL_FIRST_N_STARTS", "1"),
        ("FAKE_EXIT_CODE_ON_TERM", "5"),
    ];
    let mut first = state_engine(dir.path(), &envs);
    let st = wait_exit(&mut first.0, Duration::from_secs(10)).expect("first start must fail");
    assert_eq!(st.code(), Some(1));
    let mut second = state_engine(dir.path(), &envs);
    let port: u16 = wait_file(dir.path(), "port", Duration::from_secs(10))
        .expect("second start listens")
        .parse()
        .expect("port");
    assert!(wait_status(port, "/health", 200, Duration::from_secs(10)));
    sigterm(&second.0);
    let st = wait_exit(&mut second.0, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(5));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("starts"))
            .expect("starts")
            .trim(),
        "2"
    );
}

#[test]
fn fake_engine_spawns_workers_and_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = state_engine(
        dir.path(),
        &[
            ("FAKE_WORKERS", "2"),
            ("FAKE_WORKERS_SETSID", "1"),
            ("FAKE_ORPHANS", "1"),
            ("FAKE_ORPHAN_LINGER_SECS", "30"),
        ],
    );
    let main = pid_in(dir.path(), "main.pid");
    let workers = [
        pid_in(dir.path(), "worker-0.pid"),
        pid_in(dir.path(), "worker-1.pid"),
    ];
    let orphan = pid_in(dir.path(), "orphan-0.pid");
    let _cleanup = [KillPid(orphan), KillPid(workers[0]), KillPid(workers[1])];
    // A SIGTERM before the engine is up would be vLLM's KeyboardInterrupt path (exit 1).
    wait_file(dir.path(), "ready", Duration::from_secs(10)).expect("ready");
    for w in workers {
        let (ppid, sid) = ppid_sid(w).expect("worker alive");
        assert_eq!(ppid, main, "worker {w} is the engine's child");
        assert_eq!(
            sid, w,
            "FAKE_WORKERS_SETSID puts worker {w} in its own session"
        );
    }
    let (orphan_ppid, _) = ppid_sid(orphan).expect("orphan alive");
    assert_ne!(
        orphan_ppid, main,
        "the orphan was reparented away from the engine"
    );
    sigterm(&engine.0);
    assert_eq!(
        wait_exit(&mut engine.0, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    wait_for(Duration::from_secs(5), || {
        !workers.iter().any(|&w| ppid_sid(w).is_some())
    });
    assert!(
        workers.iter().all(|&w| ppid_sid(w).is_none()),
        "graceful stop ends the workers"
    );
    assert!(ppid_sid(orphan).is_some(), "orphans outlive the engine");
}

#[test]
fn fake_engine_holds_vram_until_after_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vram = dir.path().join("mem_info_vram_used");
    std::fs::write(&vram, "7\n").expect("write fixture");
    let vram_s = vram.to_str().expect("utf-8 path");
    let mut engine = state_engine(
        dir.path(),
        &[
            ("FAKE_VRAM_FILE", vram_s),
            ("FAKE_VRAM_BYTES", "1000"),
            ("FAKE_VRAM_IDLE_BYTES", "7"),
            ("FAKE_VRAM_RELEASE_SECS", "1"),
        ],
    );
    wait_file(dir.path(), "ready", Duration::from_secs(10)).expect("ready");
    let read = || {
        std::fs::read_to_string(&vram)
            .expect("read vram")
            .trim()
            .to_string()
    };
    assert_eq!(read(), "1000");
    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap");
    assert_eq!(read(), "1000", "VRAM is released lazily, not at once");
    wait_for(Duration::from_secs(10), || read() == "7");
    assert_eq!(read(), "7", "VRAM comes back after the release delay");
}

#[test]
fn fake_engine_engine_death_exits_zero() {
    let out = Command::new(fake_engine())
        .args(["serve", "m", "--host", "127.0.0.1", "--port", "0"])
        .env("FAKE_LOAD_SECS", "0")
        .env("FAKE_CRASH_AFTER_SECS", "0.3")
        .env("FAKE_EXIT0_ENGINE_DEATH", "1")
        .output()
        .expect("run fake-engine");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("EngineDeadError"));
}

#[test]
fn fake_engine_hang_stops_answering_but_stays_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spawned = Instant::now();
    let mut engine = state_engine(dir.path(), &[("FAKE_HANG_AFTER_SECS", "2")]);
    let port: u16 = wait_file(dir.path(), "port", Duration::from_secs(10))
        .expect("listens")
        .parse()
        .expect("port");
    assert!(
        wait_status(port, "/health", 200, Duration::from_millis(1500)),
        "healthy before the hang"
    );
    std::thread::sleep(
        (spawned + Duration::from_millis(2200)).saturating_duration_since(Instant::now()),
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("still accepts connections");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 64];
    assert!(s.read(&mut buf).is_err(), "a hung engine must not answer");
    assert!(
        engine.0.try_wait().expect("try_wait").is_none(),
        "a hung engine stays alive"
    );
}

#[test]
fn fake_engine_external_vram_watcher_releases_after_the_tree_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vram = dir.path().join("mem_info_vram_used");
    std::fs::write(&vram, "7\n").expect("write fixture");
    let vram_s = vram.to_str().expect("utf-8 path");
    let vram_env = [
        ("FAKE_VRAM_FILE", vram_s),
        ("FAKE_VRAM_BYTES", "1000"),
        ("FAKE_VRAM_IDLE_BYTES", "7"),
        ("FAKE_VRAM_RELEASE_SECS", "0.5"),
        ("FAKE_VRAM_EXTERNAL", "1"),
    ];
    let mut watch = Command::new(fake_engine());
    watch
        .arg("__fake-vram-watch")
        .env("FAKE_STATE_DIR", dir.path());
    for (k, v) in vram_env {
        watch.env(k, v);
    }
    let _watcher = Running(watch.spawn().expect("spawn the watcher"));
    let mut engine_env = vram_env.to_vec();
    engine_env.extend([("FAKE_WORKERS", "1"), ("FAKE_WORKERS_IGNORE_TERM", "1")]);
    let mut engine = state_engine(dir.path(), &engine_env);
    let worker = KillPid(pid_in(dir.path(), "worker-0.pid"));
    wait_file(dir.path(), "ready", Duration::from_secs(10)).expect("ready");
    let read = || {
        std::fs::read_to_string(&vram)
            .expect("read vram")
            .trim()
            .to_string()
    };
    assert_eq!(read(), "1000");
    assert!(
        !dir.path().join("vram-release.pid").exists(),
        "no in-tree releaser when external"
    );
    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(read(), "1000", "a surviving worker still holds the VRAM");
    drop(worker);
    wait_for(Duration::from_secs(10), || read() == "7");
    assert_eq!(read(), "7", "released once every holder is gone");
}

#[test]
fn fake_engine_sigterm_during_vllm_load_is_keyboard_interrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(fake_engine());
    cmd.args(["serve", "m", "--host", "127.0.0.1", "--port", "0"])
        .env("FAKE_STATE_DIR", dir.path())
        .env("FAKE_LOAD_SECS", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut engine = Running(cmd.spawn().expect("spawn fake-engine"));
    pid_in(dir.path(), "main.pid");
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&engine.0);
    let st = wait_exit(&mut engine.0, Duration::from_secs(10)).expect("exits while loading");
    assert_eq!(st.code(), Some(1));
    let mut stderr = String::new();
    if let Some(mut e) = engine.0.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(stderr.contains("KeyboardInterrupt: terminated"), "{stderr}");
}

#[test]
fn fake_engine_version_follows_fake_version() {
    for (env, want) in [(None, "0.11.1"), (Some("0.12.0"), "0.12.0")] {
        let mut cmd = Command::new(fake_engine());
        cmd.arg("--version");
        if let Some(v) = env {
            cmd.env("FAKE_VERSION", v);
        }
        let out = cmd.output().expect("run fake-engine --version");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    }
}

/// Like vLLM 0.32.0 (checked against the real one): when the engine core process (worker 0
/// here) dies under a serving API server, the server logs `EngineDeadError` and exits 0.
#[test]
fn vllm_exits_0_with_engine_dead_error_when_its_engine_core_dies() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let state = dir.path().display().to_string();
    let mut cmd = Command::new(fake_engine());
    cmd.args(["serve", "/models/m", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--served-model-name", "m"])
        .env("FAKE_WORKERS", "2")
        .env("FAKE_STATE_DIR", &state)
        .env("FAKE_LOAD_SECS", "0.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err")).expect("err"));
    let mut engine = Running(cmd.spawn().expect("spawn fake-engine"));
    assert!(wait_status(port, "/health", 200, Duration::from_secs(10)));
    let worker = |i: usize| -> i32 {
        std::fs::read_to_string(dir.path().join(format!("worker-{i}.pid")))
            .expect("worker pid")
            .trim()
            .parse()
            .expect("pid")
    };
    let _other = KillPid(worker(1));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(worker(0), libc::SIGKILL);
    }
    let status = wait_exit(&mut engine.0, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    assert!(err.contains("EngineDeadError"), "{err}");
}
