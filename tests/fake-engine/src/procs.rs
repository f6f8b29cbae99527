//! The process-tree side of the fake: worker children (optionally ignoring SIGTERM or in their
//! own session), double-forked orphans, the detached "VRAM" releaser, pid files in
//! FAKE_STATE_DIR, and vLLM-style log lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{env, env_flag, env_num, env_secs};

/// `MM-DD HH:MM:SS` in UTC, the way vLLM's logger prints times.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let tod = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{m:02}-{d:02} {:02}:{:02}:{:02}",
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    )
}

/// Prints one vLLM-format log line to stdout: `(Tag pid=N) LEVEL MM-DD HH:MM:SS [file] msg`.
pub fn log(tag: &str, level: &str, file: &str, msg: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not kill the fake: log lines are best effort.
    let _ = writeln!(
        out,
        "({tag} pid={}) {level} {} [{file}] {msg}",
        std::process::id(),
        timestamp()
    );
    let _ = out.flush();
}

/// Prints one SGLang-format log line to stdout: `[YYYY-MM-DD HH:MM:SS] msg`.
pub fn log_sglang(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{}] {msg}", timestamp());
    let _ = out.flush();
}

/// FAKE_STATE_DIR, if set.
pub fn state_dir() -> Option<PathBuf> {
    env("FAKE_STATE_DIR").map(PathBuf::from)
}

/// Writes `<state dir>/<name>` with `content` (best effort: tests read these files).
pub fn write_state(name: &str, content: &str) {
    if let Some(dir) = state_dir() {
        let _ = std::fs::create_dir_all(&dir);
        if let Err(e) = std::fs::write(dir.join(name), content) {
            elog!(
                "fake-engine: cannot write {}: {e}",
                dir.join(name).display()
            );
        }
    }
}

/// Increments `<state dir>/starts` and returns the new count (1 for the first start).
/// Without FAKE_STATE_DIR every start counts as the first.
pub fn count_start() -> u64 {
    let Some(dir) = state_dir() else { return 1 };
    let path = dir.join("starts");
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    write_state("starts", &format!("{n}\n"));
    n
}

/// Sets SIGTERM (and SIGINT, SIGHUP when `all`) to ignored in this process.
pub fn ignore_term(all: bool) {
    // SAFETY: installing SIG_IGN is async-signal-safe and has no Rust-side invariants.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        if all {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
        }
    }
}

fn self_exe() -> Option<PathBuf> {
    match std::env::current_exe() {
        Ok(p) => Some(p),
        Err(e) => {
            elog!("fake-engine: cannot find own executable to spawn helpers: {e}");
            None
        }
    }
}

/// Safety net so no fake process lingers forever after a test forgot it.
fn max_lifetime() -> Duration {
    env_secs("FAKE_MAX_LIFETIME_SECS", 3600.0)
}

/// Whether `pid` is alive and not a zombie (reads /proc/PID/stat).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(s[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Spawns FAKE_WORKERS worker children; returns their pids.
pub fn spawn_workers() -> Vec<i32> {
    let n: u32 = env_num("FAKE_WORKERS", 0);
    let Some(exe) = self_exe() else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for i in 0..n {
        match Command::new(&exe)
            .arg("__fake-worker")
            .arg(i.to_string())
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                // The child is deliberately not waited for here: the main process reaps it
                // on shutdown, or it is orphaned when the main process dies (like vLLM's).
                let pid = child.id() as i32;
                std::mem::forget(child);
                pids.push(pid);
            }
            Err(e) => elog!("fake-engine: cannot spawn worker {i}: {e}"),
        }
    }
    pids
}

/// Worker child: optional setsid, optional SIGTERM immunity, pid file, then sleeps.
pub fn worker_main(argv: &[String]) -> ! {
    let idx = argv.first().cloned().unwrap_or_default();
    if env_flag("FAKE_WORKERS_SETSID") {
        // SAFETY: setsid has no memory-safety preconditions.
        unsafe {
            libc::setsid();
        }
    }
    if env_flag("FAKE_WORKERS_IGNORE_TERM") {
        ignore_term(false);
    } else {
        // The main process may run with SIGTERM ignored (FAKE_IGNORE_TERM); workers get the
        // default disposition back unless asked to ignore it themselves.
        // SAFETY: restoring SIG_DFL is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
    write_state(
        &format!("worker-{idx}.pid"),
        &format!("{}\n", std::process::id()),
    );
    log(
        &format!("Worker_TP{idx}"),
        "INFO",
        "multiproc_executor.py:512",
        "Worker ready",
    );
    std::thread::sleep(max_lifetime());
    std::process::exit(0)
}

/// Spawns FAKE_ORPHANS intermediate parents, each of which starts an orphan and exits at once,
/// so the orphans get reparented to PID 1 / the nearest subreaper. Reaps the intermediates and
/// returns the orphans' pids (each intermediate prints its child's pid).
pub fn spawn_orphans() -> Vec<i32> {
    let n: u32 = env_num("FAKE_ORPHANS", 0);
    let Some(exe) = self_exe() else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for i in 0..n {
        match Command::new(&exe)
            .arg("__fake-orphan-parent")
            .arg(i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
        {
            Ok(out) => match String::from_utf8_lossy(&out.stdout).trim().parse() {
                Ok(pid) => pids.push(pid),
                Err(_) => elog!("fake-engine: orphan {i} did not start"),
            },
            Err(e) => elog!("fake-engine: cannot spawn orphan {i}: {e}"),
        }
    }
    pids
}

/// Intermediate parent: start the orphan, print its pid, exit without waiting.
pub fn orphan_parent_main(argv: &[String]) -> ! {
    let idx = argv.first().cloned().unwrap_or_default();
    if let Some(exe) = self_exe() {
        // The orphan must not hold our stdout pipe open, or the engine would wait for it.
        match Command::new(exe)
            .arg("__fake-orphan")
            .arg(&idx)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                olog!("{}", child.id());
                std::mem::forget(child);
            }
            Err(e) => elog!("fake-engine: cannot spawn orphan {idx}: {e}"),
        }
    }
    std::process::exit(0)
}

/// Orphan: pid file, linger FAKE_ORPHAN_LINGER_SECS (default 0: exit at once and stay a zombie
/// until the new parent reaps it).
pub fn orphan_main(argv: &[String]) -> ! {
    let idx = argv.first().cloned().unwrap_or_default();
    write_state(
        &format!("orphan-{idx}.pid"),
        &format!("{}\n", std::process::id()),
    );
    let linger = env_secs("FAKE_ORPHAN_LINGER_SECS", 0.0).min(max_lifetime());
    std::thread::sleep(linger);
    std::process::exit(0)
}

/// Writes the "used VRAM" value into FAKE_VRAM_FILE and, unless FAKE_VRAM_EXTERNAL=1 (a
/// `__fake-vram-watch` process started outside the supervisor does it), starts the detached
/// releaser that writes FAKE_VRAM_IDLE_BYTES FAKE_VRAM_RELEASE_SECS after the main process and
/// `holders` (workers, orphans) are all gone.
pub fn hold_vram(holders: &[i32]) {
    let Some(file) = env("FAKE_VRAM_FILE") else {
        return;
    };
    let used: u64 = env_num("FAKE_VRAM_BYTES", 0);
    if let Err(e) = std::fs::write(&file, format!("{used}\n")) {
        elog!("fake-engine: cannot write FAKE_VRAM_FILE {file}: {e}");
        return;
    }
    if env_flag("FAKE_VRAM_EXTERNAL") {
        return;
    }
    let Some(exe) = self_exe() else { return };
    let mut cmd = Command::new(exe);
    cmd.arg("__fake-vram-release")
        .arg(std::process::id().to_string());
    for pid in holders {
        cmd.arg(pid.to_string());
    }
    match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            write_state("vram-release.pid", &format!("{}\n", child.id()));
            std::mem::forget(child);
        }
        Err(e) => elog!("fake-engine: cannot spawn the VRAM releaser: {e}"),
    }
}

fn write_idle_vram() {
    if let Some(file) = env("FAKE_VRAM_FILE") {
        let idle: u64 = env_num("FAKE_VRAM_IDLE_BYTES", 0);
        let _ = std::fs::write(file, format!("{idle}\n"));
    }
}

/// The VRAM releaser: its own session, immune to TERM/INT/HUP (the driver, not a process,
/// frees VRAM in reality), polls the holder pids, then writes the idle value.
pub fn vram_release_main(argv: &[String]) -> ! {
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe {
        libc::setsid();
    }
    ignore_term(true);
    let pids: Vec<i32> = argv.iter().filter_map(|p| p.parse().ok()).collect();
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        if started.elapsed() > max_lifetime() {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(env_secs("FAKE_VRAM_RELEASE_SECS", 0.0));
    write_idle_vram();
    std::process::exit(0)
}

/// Pids recorded in FAKE_STATE_DIR by holders of "VRAM": main.pid, worker-*.pid, orphan-*.pid.
fn recorded_holders(dir: &std::path::Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name == "main.pid"
                || (name.ends_with(".pid")
                    && (name.starts_with("worker-") || name.starts_with("orphan-")))
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// `fake-engine __fake-vram-watch`: run by a test *outside* the supervisor's process tree (so
/// no sweep can kill it) with FAKE_STATE_DIR and FAKE_VRAM_*: whenever the holders recorded
/// in the state dir have all been gone for FAKE_VRAM_RELEASE_SECS, it writes the idle value.
/// Used with FAKE_VRAM_EXTERNAL=1 on the engines. Runs until killed (or the lifetime cap).
pub fn vram_watch_main() -> ! {
    let Some(dir) = state_dir() else {
        elog!("fake-engine __fake-vram-watch needs FAKE_STATE_DIR");
        std::process::exit(2)
    };
    let release = env_secs("FAKE_VRAM_RELEASE_SECS", 0.0);
    let started = Instant::now();
    let mut gone_since: Option<Instant> = None;
    let mut released = false;
    while started.elapsed() < max_lifetime() {
        let any_alive = recorded_holders(&dir).into_iter().any(alive);
        if any_alive {
            gone_since = None;
            released = false;
        } else {
            let since = *gone_since.get_or_insert_with(Instant::now);
            if !released && since.elapsed() >= release {
                write_idle_vram();
                released = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::exit(0)
}

/// Resolves once `pid` has exited (a zombie or gone), polling /proc every 50 ms.
pub async fn gone(pid: i32) {
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()));
        if state.as_deref().is_none_or(|s| s == "Z" || s == "X") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to the workers and reaps those that exit within `wait`.
pub fn stop_workers(pids: &[i32], wait: Duration) {
    for &pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + wait;
    let mut left: Vec<i32> = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            r == 0
        });
        std::thread::sleep(Duration::from_millis(10));
    }
}
