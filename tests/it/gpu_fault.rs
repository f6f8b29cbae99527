//! GPU signals and gpu_fault against the fake engine on a copy of the MI300X fixture: the
//! launch's GPU readings in /metrics, then an uncorrectable RAS count that rises while the
//! engine serves ends the run with class gpu_fault and a message naming the GPU.

use crate::support::{AimEngine, free_port, project_root, request, wait_for};
use std::path::Path;
use std::time::Duration;

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, "")
}

/// A writable copy of the committed fixture tree (symlinks kept).
fn fixture_copy(into: &Path) -> std::path::PathBuf {
    let src = project_root().join("tests/fixtures/sysfs/mi300x-8gpu-spx");
    let dst = into.join("root");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("run cp")
        .success();
    assert!(ok, "cp -a {} {}", src.display(), dst.display());
    dst
}

#[test]
fn rising_uncorrectable_errors_end_the_run_as_gpu_fault() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixture_copy(tmp.path());
    let mut run = AimEngine::new()
        .root(&root)
        .quick_watched_fake()
        .env("FAKE_LOAD_SECS", "0.3")
        .spawn();
    let port = run.port;
    let metrics_show_gpu0 = wait_for(Duration::from_secs(30), || {
        get(port, "/metrics").is_some_and(|(c, b)| {
            c == 200 && b.contains(r#"aim_gpu_ras_errors_total{gpu="0",block="umc",kind="ue"} 0"#)
        })
    });
    assert!(metrics_show_gpu0, "no GPU metrics: {}", run.report());
    let (_, m) = get(port, "/metrics").unwrap_or_default();
    for line in [
        r#"aim_gpu_busy_percent{gpu="0"} 0"#,
        r#"aim_gpu_vram_used_bytes{gpu="0"} 297771008"#,
        r#"aim_gpu_temperature_celsius{gpu="0",sensor="junction"} 38.0"#,
        r#"aim_gpu_temperature_celsius{gpu="0",sensor="mem"} 33.0"#,
        r#"aim_gpu_power_watts{gpu="0"} 132.0"#,
        r#"aim_gpu_ras_errors_total{gpu="0",block="umc",kind="de"} 0"#,
        r#"aim_gpu_ras_errors_total{gpu="0",block="gfx",kind="ce"} 0"#,
    ] {
        assert!(m.contains(line), "{line} missing in:\n{m}");
    }
    // Only the launch's GPU (ordinal 0) has series.
    assert!(!m.contains(r#"gpu="1""#), "{m}");
    let (_, st) = get(port, "/status").unwrap_or_default();
    let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
    assert_eq!(st["gpus"][0]["pci"], "0000:05:00.0", "{st}");

    // Two uncorrectable HBM errors on the launch's GPU while the engine runs.
    let ras = root.join("sys/bus/pci/devices/0000:05:00.0/ras/umc_err_count");
    std::fs::write(&ras, "ue: 2\nce: 0\nde: 0\n").expect("bump ue");
    // Every fallback of this plan also uses GPU 0: no restart, the run ends.
    run.expect_exit(70, Duration::from_secs(30));
    let err = run.stderr();
    for part in [
        "gpu_fault: GPU 0 (0000:05:00.0): uncorrectable RAS errors in block `umc` rose from 0 to 2",
        "dmesg | grep -i amdgpu",
        "drain the node",
        "next: stop_gpu_fault",
        "class=\"gpu_fault\"",
    ] {
        assert!(err.contains(part), "{part} missing: {}", run.report());
    }
    assert!(!err.contains("next: restart"), "{}", run.report());
}

/// An engine killed by a GPU reset: amdgpu's device coredump appears and the engine exits.
/// The exit is classed gpu_fault (not a crash to restart), naming the reset.
#[test]
fn an_engine_exit_after_a_gpu_reset_is_a_gpu_fault() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixture_copy(tmp.path());
    let dump = root.join("sys/bus/pci/devices/0000:05:00.0/devcoredump");
    // The reset comes after the attempt's start (its baseline), then the engine dies.
    let script = format!(
        "sleep 0.5\nmkdir '{}'\necho 'HIP error: unspecified launch failure' >&2\nexit 1",
        dump.display()
    );
    let mut run = AimEngine::new()
        .root(&root)
        .arg("aim-test/Tiny-7B")
        .public_port()
        .args(["--engine-port", &free_port().to_string()])
        .engine_script(&script)
        .offline_hf()
        .args(["--stop-timeout", "2s", "--backoff-initial", "0.1s"])
        .spawn();
    run.expect_exit(70, Duration::from_secs(30));
    let err = run.stderr();
    for part in [
        "gpu_fault: GPU 0 (0000:05:00.0) was reset by the amdgpu driver during this attempt",
        "(the engine: exit 1)",
        "next: stop_gpu_fault",
    ] {
        assert!(err.contains(part), "{part} missing: {}", run.report());
    }
    // One attempt only: a failed GPU is never restarted on.
    assert!(!err.contains("next: restart"), "{}", run.report());
}
