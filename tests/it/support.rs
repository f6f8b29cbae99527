//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
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

/// One `aim-engine` run being prepared, as ripgrep's `TestCommand`: the command line, a temp
/// dir for its logs and state, and an environment with nothing inherited that would change
/// the result (AIM_*, HF_*, the visibility variables, systemd's). Finish it with `output`
/// (run to the end) or `spawn` (keep it running); on a failed expectation both print the
/// command, its status and its logs.
pub struct AimEngine {
    cmd: Command,
    dir: tempfile::TempDir,
    /// The command as a shell would show it (set variables first), for failure reports.
    shown: Vec<String>,
    pid1: bool,
    port: Option<u16>,
}

impl Default for AimEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl AimEngine {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = aim_engine();
        for (k, _) in std::env::vars() {
            let inherited_setting = k.starts_with("AIM_")
                || k.starts_with("HF_")
                || k.starts_with("WATCHDOG_")
                || k.ends_with("_VISIBLE_DEVICES")
                || k == "NOTIFY_SOCKET"
                || k == "HUGGING_FACE_HUB_TOKEN";
            if inherited_setting {
                cmd.env_remove(k);
            }
        }
        AimEngine {
            cmd,
            dir,
            shown: Vec::new(),
            pid1: false,
            port: None,
        }
    }

    /// The run's own temp dir (logs, engine scripts, state files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--root` on the committed fixture tree `tests/fixtures/sysfs/NAME`.
    pub fn fixture(self, name: &str) -> Self {
        let root = project_root().join("tests/fixtures/sysfs").join(name);
        self.root(&root)
    }

    /// `--root PATH`.
    pub fn root(self, path: &Path) -> Self {
        self.arg("--root").arg(path)
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.shown
            .insert(0, format!("{k}={}", v.as_ref().to_string_lossy()));
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// An empty, offline Hugging Face cache in the run's dir.
    pub fn offline_hf(self) -> Self {
        let hf = self.dir().join("hf");
        self.env("HF_HOME", hf).env("HF_HUB_OFFLINE", "1")
    }

    /// `serve aim-test/Tiny-7B` on the fake engine with a public port, a free engine port, an
    /// offline cache and short stop, backoff, hang-sample (0.2 s) and VRAM-wait times: the
    /// setup of the hang and GPU-fault tests (the tree comes from `fixture` or `root`).
    pub fn quick_watched_fake(self) -> Self {
        self.arg("aim-test/Tiny-7B")
            .public_port()
            .args(["--engine-port", &free_port().to_string()])
            .fake_engine()
            .offline_hf()
            .args(["--stop-timeout", "2s", "--backoff-initial", "0.2s"])
            .args([
                "--hang-sample-interval",
                "0.2s",
                "--vram-wait-timeout",
                "1s",
            ])
    }

    /// The fake engine (tests/fake-engine) as both engines' launcher.
    pub fn fake_engine(self) -> Self {
        let fake = fake_engine();
        self.env("AIM_VLLM_COMMAND", &fake)
            .env("AIM_SGLANG_COMMAND", &fake)
    }

    /// A `/bin/sh` script (`body`) as both engines' launcher, at `<dir>/engine.sh`.
    pub fn engine_script(self, body: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let script = self.dir().join("engine.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write engine script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod engine script");
        self.env("AIM_VLLM_COMMAND", &script)
            .env("AIM_SGLANG_COMMAND", &script)
    }

    /// A free public port on 127.0.0.1 (`Running::port`).
    pub fn public_port(mut self) -> Self {
        let port = free_port();
        self.port = Some(port);
        self.args(["--host", "127.0.0.1", "--port", &port.to_string()])
    }

    /// Runs as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`).
    pub fn pid1(mut self) -> Self {
        self.pid1 = true;
        self
    }

    fn command_line(&self) -> String {
        let mut words = self.shown.clone();
        let at = words.iter().take_while(|w| w.contains('=')).count();
        words.insert(at, "aim-engine".into());
        if self.pid1 {
            words.insert(at, "unshare --pid --fork --mount-proc".into());
        }
        words.join(" ")
    }

    /// Runs to the end and keeps what it printed.
    pub fn output(mut self) -> Finished {
        let command = self.command_line();
        let out = self
            .cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run aim-engine");
        Finished {
            out,
            command,
            _dir: self.dir,
        }
    }

    /// Starts it with stdout and stderr going to `out.log` and `err.log` in its dir.
    pub fn spawn(self) -> Running {
        let command = self.command_line();
        let AimEngine {
            cmd,
            dir,
            pid1,
            port,
            ..
        } = self;
        let mut cmd = if pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc"])
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c
        } else {
            cmd
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("out.log")).expect("out.log"))
            .stderr(std::fs::File::create(dir.path().join("err.log")).expect("err.log"));
        let child = cmd.spawn().expect("start aim-engine");
        let mut pid = child.id() as i32;
        if pid1 {
            // The supervisor is unshare's child.
            let path = format!("/proc/{pid}/task/{pid}/children");
            let mut inner = None;
            wait_for(std::time::Duration::from_secs(5), || {
                inner = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
                inner.is_some()
            });
            pid = inner.expect("unshare started the supervisor");
        }
        Running {
            child,
            dir,
            pid,
            port: port.unwrap_or(0),
            command,
        }
    }
}

/// A finished run: its output (`Deref`), and the command line for failure reports.
pub struct Finished {
    out: std::process::Output,
    command: String,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Finished {
    type Target = std::process::Output;
    fn deref(&self) -> &Self::Target {
        &self.out
    }
}

impl Finished {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// The command, its status and what it printed.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.out.status,
            self.stdout(),
            self.stderr()
        )
    }

    /// Asserts the exit code.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.out.status.code(), Some(code), "{}", self.report());
        self
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        self.expect_code(0);
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.report()))
    }
}

/// A running `aim-engine`; killed (and reaped) when dropped if still running.
pub struct Running {
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
    /// Its pid as this test sees it (under `pid1`, the namespace's PID 1).
    pub pid: i32,
    /// The public port (`AimEngine::public_port`), else 0.
    pub port: u16,
    command: String,
}

impl Running {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file in its dir, empty when missing.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.read("err.log")
    }

    pub fn stdout(&self) -> String {
        self.read("out.log")
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// The command, its status and its logs so far.
    pub fn report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(st)) => st.to_string(),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        format!(
            "command: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits up to `limit` for the exit; its code (None: timed out, then killed, or died by
    /// a signal).
    pub fn wait_code(&mut self, limit: std::time::Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit).and_then(|s| s.code())
    }

    /// Waits for the exit and returns its code; panics with the report on a timeout or a
    /// death by signal.
    pub fn exit_code(&mut self, limit: std::time::Duration) -> i32 {
        match wait_exit(&mut self.child, limit) {
            Some(st) if st.code().is_some() => st.code().unwrap_or_default(),
            st => panic!(
                "aim-engine did not exit normally within {limit:?} ({st:?})\n{}",
                self.report()
            ),
        }
    }

    /// Asserts the exit code within `limit`, with the report when it differs.
    pub fn expect_exit(&mut self, code: i32, limit: std::time::Duration) {
        let got = self.exit_code(limit);
        assert_eq!(got, code, "{}", self.report());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether the privileged suites run (`AIM_TEST_PRIVILEGED=1`: root, PID and mount
/// namespaces). When they do not, says so where a plain `cargo test` shows it: libtest
/// captures `eprintln!`, so the line is written to the real stderr, and the test's own line
/// in the summary reads `SKIPPED <name>: ... ok` instead of a silent `ok`.
pub fn privileged_or_skip(name: &str, needs: &str) -> bool {
    if std::env::var("AIM_TEST_PRIVILEGED").as_deref() == Ok("1") {
        return true;
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: needs {needs}; set AIM_TEST_PRIVILEGED=1 to run it"
    );
    false
}

/// One request on a local port (`connection: close`, JSON body): its status and body; None
/// when nothing answered.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut s, req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}
