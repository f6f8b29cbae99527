//! Multi-node group mode end to end: two fake engines on loopback form a 2-node group.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fake-engine");

/// A free loopback port (bound once, released; the race with other tests is negligible).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A started fake whose stdout and stderr go to files (read at any time, never blocking).
struct Engine {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Engine {
    fn start(name: &str, args: &str, env: &[(&str, &str)]) -> Engine {
        let base = format!("fake-group-{}-{name}", std::process::id());
        let out = std::env::temp_dir().join(format!("{base}.out"));
        let err = std::env::temp_dir().join(format!("{base}.err"));
        let mut cmd = Command::new(BIN);
        cmd.args(args.split_whitespace())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"));
        for var in ["FAKE_STATE_DIR", "FAKE_WORKERS", "FAKE_VRAM_FILE"] {
            cmd.env_remove(var);
        }
        cmd.env("FAKE_LOAD_SECS", "0.1")
            .env("FAKE_MAX_LIFETIME_SECS", "60");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the fake starts");
        Engine { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }

    /// Waits (polling) for the exit, at most `within`.
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

/// Polls `f` every 20 ms until it holds or `within` passed.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a fresh connection; `None` when the connection fails.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn health(port: u16) -> Option<u16> {
    http(port, "GET", "/health", None).map(|(s, _)| s)
}

fn chat(port: u16) -> Option<(u16, String)> {
    http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#),
    )
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn vllm_two_nodes_form_a_group_and_a_lost_worker_fails_the_next_completion() {
    let (http_port, group_port) = (free_port(), free_port());
    let env = [("FAKE_GROUP_JOIN_SECS", "20")];
    let mut leader = Engine::start(
        "vllm-leader",
        &format!(
            "serve m --host 127.0.0.1 --port {http_port} --nnodes 2 --node-rank 0 --master-addr 127.0.0.1 --master-port {group_port}"
        ),
        &env,
    );
    assert!(
        eventually(WAIT, || leader.stdout().contains(&format!(
            "Waiting for 1 other node(s) to join the group at 127.0.0.1:{group_port}"
        ))),
        "{}",
        leader.logs()
    );
    // Longer than the load time: without the worker, the API stays closed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(health(http_port), None, "{}", leader.logs());

    // The worker gets the same --port: it must not bind it.
    let mut worker = Engine::start(
        "vllm-worker",
        &format!(
            "serve m --host 127.0.0.1 --port {http_port} --nnodes 2 --node-rank 1 --master-addr 127.0.0.1 --master-port {group_port} --headless"
        ),
        &env,
    );
    assert!(
        eventually(WAIT, || health(http_port) == Some(200)),
        "{}\n{}",
        leader.logs(),
        worker.logs()
    );
    assert!(
        leader
            .stdout()
            .contains("node rank 1 joined from 127.0.0.1:")
    );
    assert!(worker.stdout().contains(&format!(
        "joined the group at 127.0.0.1:{group_port} as node rank 1 of 2"
    )));
    let (status, body) = chat(http_port).expect("the chat completion is answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("chat.completion"), "{body}");

    worker.child.kill().expect("SIGKILL the worker");
    let _ = worker.child.wait();
    assert!(
        eventually(WAIT, || leader
            .stderr()
            .contains("lost node rank 1: Connection closed by peer")),
        "{}",
        leader.logs()
    );
    // Like vLLM: /health does not notice, the next completion does.
    assert_eq!(health(http_port), Some(200), "{}", leader.logs());
    let (status, body) = chat(http_port).expect("the failing completion is answered");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("EngineDeadError"), "{body}");
    let exit = leader.exit_within(WAIT).expect("the leader exits");
    assert_eq!(exit.code(), Some(1), "{}", leader.logs());
    assert!(
        leader
            .stderr()
            .contains("Connection closed by peer [127.0.0.1]:")
    );
    assert!(leader.stderr().contains("EngineDeadError"));
}

#[test]
fn leader_alone_times_out_naming_the_missing_rank() {
    let (http_port, group_port) = (free_port(), free_port());
    let mut leader = Engine::start(
        "lonely-leader",
        &format!(
            "serve m --port {http_port} --nnodes 2 --master-addr 127.0.0.1 --master-port {group_port}"
        ),
        &[("FAKE_GROUP_JOIN_SECS", "1")],
    );
    let exit = leader.exit_within(WAIT).expect("the leader gives up");
    assert_eq!(exit.code(), Some(1), "{}", leader.logs());
    assert!(
        leader.stderr().contains(&format!(
            "waiting for the group at 127.0.0.1:{group_port}: node rank(s) 1 never joined"
        )),
        "{}",
        leader.logs()
    );
    assert_eq!(health(http_port), None);
}

#[test]
fn worker_alone_times_out_naming_the_leader() {
    let group_port = free_port();
    let mut worker = Engine::start(
        "lonely-worker",
        &format!("--model-path m --nnodes 2 --node-rank 1 --dist-init-addr 127.0.0.1:{group_port}"),
        &[("FAKE_GROUP_JOIN_SECS", "0.5")],
    );
    let exit = worker.exit_within(WAIT).expect("the worker gives up");
    assert_eq!(exit.code(), Some(1), "{}", worker.logs());
    assert!(
        worker.stderr().contains(&format!(
            "could not join the group: leader at 127.0.0.1:{group_port} not reachable"
        )),
        "{}",
        worker.logs()
    );
}

#[test]
fn sglang_worker_dies_when_the_leader_stops() {
    let (http_port, group_port) = (free_port(), free_port());
    let env = [("FAKE_GROUP_JOIN_SECS", "20")];
    let mut leader = Engine::start(
        "sglang-leader",
        &format!(
            "--model-path m --port {http_port} --nnodes 2 --dist-init-addr 127.0.0.1:{group_port}"
        ),
        &env,
    );
    // SGLang listens at once and answers 503 until the group formed and loaded.
    assert!(
        eventually(WAIT, || health(http_port) == Some(503)),
        "{}",
        leader.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(health(http_port), Some(503), "{}", leader.logs());
    let mut worker = Engine::start(
        "sglang-worker",
        &format!(
            "--model-path m --port {http_port} --nnodes 2 --node-rank 1 --dist-init-addr 127.0.0.1:{group_port}"
        ),
        &env,
    );
    assert!(
        eventually(WAIT, || health(http_port) == Some(200)),
        "{}\n{}",
        leader.logs(),
        worker.logs()
    );
    leader.signal(libc::SIGTERM);
    let exit = leader.exit_within(WAIT).expect("the leader stops");
    assert_eq!(exit.code(), Some(0), "{}", leader.logs());
    let exit = worker.exit_within(WAIT).expect("the worker follows");
    assert_eq!(exit.code(), Some(1), "{}", worker.logs());
    assert!(
        worker.stderr().contains(&format!(
            "lost the leader at 127.0.0.1:{group_port}: Connection closed by peer"
        )),
        "{}",
        worker.logs()
    );
}

#[test]
fn worker_stops_on_sigterm_like_any_fake() {
    let group_port = free_port();
    let mut worker = Engine::start(
        "term-worker",
        &format!("serve m --nnodes 2 --node-rank 1 --master-port {group_port} --headless"),
        &[
            ("FAKE_GROUP_JOIN_SECS", "20"),
            ("FAKE_EXIT_CODE_ON_TERM", "7"),
        ],
    );
    assert!(
        eventually(WAIT, || worker
            .stdout()
            .contains("Launching headless node rank 1 of 2")),
        "{}",
        worker.logs()
    );
    worker.signal(libc::SIGTERM);
    let exit = worker.exit_within(WAIT).expect("the worker stops");
    assert_eq!(exit.code(), Some(7), "{}", worker.logs());
}

#[test]
fn group_port_in_use_fails_like_torch() {
    let taken = TcpListener::bind("0.0.0.0:0").expect("a port");
    let group_port = taken.local_addr().expect("addr").port();
    let mut leader = Engine::start(
        "busy-leader",
        &format!(
            "serve m --port {} --nnodes 2 --master-port {group_port}",
            free_port()
        ),
        &[],
    );
    let exit = leader.exit_within(WAIT).expect("the leader fails");
    assert_eq!(exit.code(), Some(1), "{}", leader.logs());
    assert!(
        leader.stderr().contains("Address already in use"),
        "{}",
        leader.logs()
    );
}

#[test]
fn bad_group_flags_exit_2() {
    for args in [
        "serve m --nnodes 2 --node-rank 2",
        "serve m --nnodes two",
        "--model-path m --nnodes 2",
    ] {
        let mut e = Engine::start("bad-flags", args, &[]);
        let exit = e.exit_within(WAIT).expect("argparse fails at once");
        assert_eq!(exit.code(), Some(2), "{args}: {}", e.logs());
        assert!(e.stderr().contains(": error: "), "{args}: {}", e.logs());
    }
}

#[test]
fn a_crashing_worker_keeps_its_process_tree_features_and_is_lost_by_the_leader() {
    let (http_port, group_port) = (free_port(), free_port());
    let state = std::env::temp_dir().join(format!("fake-group-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let state_s = state.to_string_lossy().to_string();
    let leader = Engine::start(
        "crash-leader",
        &format!("serve m --port {http_port} --nnodes 2 --master-port {group_port}"),
        &[("FAKE_GROUP_JOIN_SECS", "20")],
    );
    let mut worker = Engine::start(
        "crash-worker",
        &format!("serve m --nnodes 2 --node-rank 1 --master-port {group_port} --headless"),
        &[
            ("FAKE_GROUP_JOIN_SECS", "20"),
            ("FAKE_STATE_DIR", state_s.as_str()),
            ("FAKE_WORKERS", "1"),
            ("FAKE_CRASH_AFTER_SECS", "1"),
        ],
    );
    assert!(
        eventually(WAIT, || health(http_port) == Some(200)),
        "{}\n{}",
        leader.logs(),
        worker.logs()
    );
    assert!(state.join("main.pid").exists());
    assert!(
        eventually(WAIT, || state.join("worker-0.pid").exists()),
        "{}",
        worker.logs()
    );
    let exit = worker.exit_within(WAIT).expect("the worker crashes");
    assert_eq!(exit.code(), Some(1), "{}", worker.logs());
    assert!(
        worker.stderr().contains("died unexpectedly"),
        "{}",
        worker.logs()
    );
    assert!(
        eventually(WAIT, || leader
            .stderr()
            .contains("lost node rank 1: Connection closed by peer")),
        "{}",
        leader.logs()
    );
    // The worker's own child (FAKE_WORKERS) outlives a crash, like vLLM's; clean it up.
    if let Some(pid) = std::fs::read_to_string(state.join("worker-0.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: kill on the pid our worker recorded for its child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(&state);
}
