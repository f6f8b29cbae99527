//! Integration test: `serve` raises its soft open-file limit to the hard one (systemd starts
//! services at a soft 1024), so a connection flood meets the port's caps before `accept`
//! runs out of descriptors.

use crate::support::{free_port, project_root, wait_exit, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

/// (soft, hard) "Max open files" of `pid`.
fn nofile(pid: u32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    Some((it.next()?.to_string(), it.next()?.to_string()))
}

#[test]
fn serve_raises_the_soft_open_file_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("engine.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let port = free_port();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 512 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_aim-engine"))
        .arg("--root")
        .arg(project_root().join("tests/fixtures/sysfs/mi300x-8gpu-spx"))
        .args(["aim-test/Tiny-7B", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--engine-port", &free_port().to_string()])
        .env("AIM_VLLM_COMMAND", &script)
        .env("AIM_SGLANG_COMMAND", &script)
        .env("HF_HOME", dir.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("AIM_ENGINE")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aim-engine");
    let pid = child.id();
    // Serving once the port answers.
    let up = wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The port is bound before the public port's task starts: wait for the raise itself.
    let raised = wait_for(Duration::from_secs(5), || {
        nofile(pid).is_some_and(|(soft, hard)| soft == hard)
    });
    let limits = nofile(pid);
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = wait_exit(&mut child, Duration::from_secs(20));
    assert!(up, "the port never opened");
    assert!(raised, "soft limit not raised: {limits:?}");
}
