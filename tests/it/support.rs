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
