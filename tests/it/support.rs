//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `aim-engine` binary under test.
pub fn aim_engine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aim-engine"))
}

/// The project root (fixtures, recipes).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the `fake-engine` test double (package tests/fake-engine), built on demand.
///
/// Tests of package aim-engine cannot use `CARGO_BIN_EXE_*` for another package, so this
/// looks next to the test executable (`<target>/<profile>/deps/it-*` → `<target>/<profile>/`)
/// and runs `$CARGO build -p fake-engine` once per test process when the binary is missing or
/// older than its sources (a clean clone under `cargo test --workspace` does not build it).
pub fn fake_engine() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(locate_or_build_fake_engine).clone()
}

fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let m = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(m);
    }
    newest
}

fn locate_or_build_fake_engine() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let candidate = profile_dir.join("fake-engine");
    // Only what cargo rebuilds for (README edits must not force a cargo run per test process).
    let pkg = project_root().join("tests/fake-engine");
    let manifest = std::fs::metadata(pkg.join("Cargo.toml"))
        .and_then(|m| m.modified())
        .ok();
    let sources = newest_mtime(&pkg.join("src")).max(manifest);
    let built = std::fs::metadata(&candidate)
        .and_then(|m| m.modified())
        .ok();
    if let (Some(built), Some(sources)) = (built, sources)
        && built >= sources
    {
        return candidate;
    }
    // Build with the same profile and let cargo report where the binary went.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "fake-engine",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(project_root())
    .stderr(std::process::Stdio::inherit());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build -p fake-engine");
    assert!(out.status.success(), "cargo build -p fake-engine failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let from_cargo = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "fake-engine")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from));
    match from_cargo {
        Some(p) => p,
        None if candidate.exists() => candidate,
        None => panic!(
            "cargo build -p fake-engine produced no executable (looked for {})",
            candidate.display()
        ),
    }
}

/// A TCP port that nothing listens on and that no other caller in this test process got.
///
/// Binding port 0 twice can hand out the same port once the first probe socket is closed,
/// and the kernel's ephemeral range is also where outgoing connections take their source
/// ports. So ports come from just below the ephemeral range, handed out once per process
/// (the start is spread by pid so concurrent test processes rarely probe the same ports),
/// and each is checked free on the wildcard address before it is returned.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = if ephemeral_low > 12_000 {
        (ephemeral_low - 10_000, 10_000)
    } else {
        (ephemeral_low.saturating_sub(1000).max(1024), 1000)
    };
    let start = (std::process::id() * 97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free TCP port in {low}..{}", low + span)
}

/// Polls `cond` every 5 ms until it holds or `limit` has passed; one last look at the end.
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

/// Waits up to `limit` for `child` to exit; on a timeout kills and reaps it and returns None
/// (the caller's assertion then fails without leaving a process behind).
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_for(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}
