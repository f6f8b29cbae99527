//! Integration tests: the log path. Our stdout and stderr may be a pipe nobody reads (a stuck
//! log collector) or one whose reader is gone (`aim-engine ... 2>&1 | head`): the supervisor
//! must keep answering health, handle SIGTERM within its stop timeout and leave no engine
//! behind, whatever the engine writes.

use crate::support::{aim_engine, free_port, project_root, wait_exit, wait_for};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::Duration;

const FIXTURE: &str = "tests/fixtures/sysfs/mi300x-8gpu-spx";

/// An engine that writes as fast as it can to stdout and stderr.
const CHATTY: &str = r#"#!/bin/sh
trap 'exit 0' TERM
echo $$ > "$FAKE_DIR/engine"
touch "$FAKE_DIR/ready"
while :; do
  echo "engine stdout line ................................................................"
  echo "engine stderr line ................................................................" >&2
done
"#;

fn start(dir: &std::path::Path, stdout: Stdio, stderr: Stdio) -> (Child, u16) {
    let script = dir.join("engine.sh");
    fs::write(&script, CHATTY).expect("write engine");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    let child = aim_engine()
        .arg("--root")
        .arg(project_root().join(FIXTURE))
        .args(["aim-test/Tiny-7B", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--engine-port", &free_port().to_string()])
        .args(["--stop-timeout", "3s", "--progress-interval", "0.1s"])
        .env("AIM_VLLM_COMMAND", &script)
        .env("AIM_SGLANG_COMMAND", &script)
        .env("HF_HOME", dir.join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env("FAKE_DIR", dir)
        .env("AIM_LOG_LEVEL", "debug")
        .env_remove("AIM_ENGINE")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start aim-engine");
    (child, port)
}

/// GET /health/live with a 2 s limit: the status code.
fn live(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let close = s.rfind(')')?;
            s[close + 1..].split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Health keeps answering while the engine floods the log, SIGTERM ends the run with the
/// engine's status within the stop timeout, and the engine is gone.
fn survives(mut child: Child, port: u16, dir: &std::path::Path) {
    assert!(
        wait_for(Duration::from_secs(30), || dir.join("ready").exists()),
        "the engine never started"
    );
    // Ten answers over at least a second: the pipes are full within milliseconds of the
    // engine's start, and the progress line is logged every 0.1 s meanwhile.
    for i in 0..10 {
        assert_eq!(live(port), Some(200), "health answer {i}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let engine: i32 = fs::read_to_string(dir.join("engine"))
        .expect("engine pid")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = wait_exit(&mut child, Duration::from_secs(10));
    let gone = wait_for(Duration::from_secs(5), || !alive(engine));
    if !gone {
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(-engine, libc::SIGKILL);
        }
    }
    assert_eq!(st.and_then(|s| s.code()), Some(0), "exit status {st:?}");
    assert!(gone, "the engine outlived the supervisor");
}

#[test]
fn stdout_and_stderr_nobody_reads_block_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (out_r, out_w) = std::io::pipe().expect("pipe");
    let (err_r, err_w) = std::io::pipe().expect("pipe");
    let (child, port) = start(dir.path(), out_w.into(), err_w.into());
    survives(child, port, dir.path());
    drop((out_r, err_r));
}

#[test]
fn closed_stderr_does_not_abort_the_supervisor() {
    // `aim-engine ... 2>&1 | head`: once head is gone every write fails with EPIPE.
    let dir = tempfile::tempdir().expect("tmp");
    let (err_r, err_w) = std::io::pipe().expect("pipe");
    let out_w = err_w.try_clone().expect("dup");
    drop(err_r);
    let (child, port) = start(dir.path(), out_w.into(), err_w.into());
    survives(child, port, dir.path());
}
