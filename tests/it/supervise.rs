//! Integration tests: supervise. The real binary supervises small shell-script engines
//! (AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND point at them), as a subreaper (the test is its
//! parent) and, with AIM_TEST_PRIVILEGED=1, as PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc`).
//!
//! Engine scripts get `FAKE_DIR` (a temp dir; `FAKE_*` passes through the supervisor's env
//! filter) and leave evidence there: `spawns` gets one line per start, `ready` is created once
//! their traps are set.

use crate::support::{
    AimEngine, Running, aim_engine, free_port, project_root, wait_exit, wait_for,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE_NAME: &str = "mi300x-8gpu-spx";
const FIXTURE: &str = "tests/fixtures/sysfs/mi300x-8gpu-spx";
const MODEL: &str = "aim-test/Tiny-7B";

/// Whether the PID-1 tests run; when not, `name` says so in the test output.
fn privileged_or_skip(name: &str) -> bool {
    crate::support::privileged_or_skip(name, "root and PID namespaces")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One supervisor run in its own temp dir (`support::Running`).
type Sup = Running;

struct Opts<'a> {
    script: &'a str,
    args: &'a [&'a str],
    env: &'a [(&'a str, String)],
    pid1: bool,
    /// A writable copy of the fixture tree (for VRAM files) instead of the tree itself.
    copy_root: bool,
    /// The engine's loopback port (default: a free one nobody listens on).
    engine_port: Option<u16>,
}

impl<'a> Opts<'a> {
    fn new(script: &'a str) -> Self {
        Opts {
            script,
            args: &[],
            env: &[],
            pid1: false,
            copy_root: false,
            engine_port: None,
        }
    }
}

fn start(o: Opts<'_>) -> Sup {
    let mut run = AimEngine::new();
    let root = if o.copy_root {
        let dst = run.dir().join("root");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(project_root().join(FIXTURE))
            .arg(&dst)
            .status()
            .expect("cp")
            .success();
        assert!(ok, "copying the fixture tree");
        dst
    } else {
        project_root().join(FIXTURE)
    };
    if o.pid1 {
        run = run.pid1();
    }
    let engine_port = o.engine_port.unwrap_or_else(free_port);
    let dir = run.dir().to_path_buf();
    run = run
        .root(&root)
        .arg(MODEL)
        .public_port()
        .args(["--engine-port", &engine_port.to_string()])
        .args(o.args)
        // Defaults as env vars so a test's flags override them.
        .env("AIM_STOP_TIMEOUT", "5s")
        .env("AIM_BACKOFF_INITIAL", "0s")
        .env("AIM_BACKOFF_MAX", "0s")
        .env("AIM_VRAM_WAIT_TIMEOUT", "0.2s")
        .engine_script(o.script)
        .offline_hf()
        .env("FAKE_DIR", &dir)
        .env("FAKE_ROOT", &root)
        .env("AIM_LOG_LEVEL", "info");
    for (k, v) in o.env {
        run = run.env(k, v);
    }
    run.spawn()
}

/// What the engine scripts leave in the run's dir.
impl Running {
    /// Waits for the engine to create `name`; panics with the supervisor's stderr if not.
    fn wait_file(&self, name: &str, limit: Duration) -> bool {
        let p = self.path(name);
        let ok = wait_for(limit, || p.exists());
        assert!(
            ok,
            "{name} not created within {limit:?}; stderr:\n{}",
            self.stderr()
        );
        ok
    }
    fn spawns(&self) -> Vec<String> {
        self.read("spawns").lines().map(str::to_string).collect()
    }
    fn stop(&self, sig: i32) {
        self.signal(sig);
    }
}

/// A script prologue: records the start and the pid.
const RECORD: &str = r#"echo "$$ $(date +%s%N)" >> "$FAKE_DIR/spawns""#;

/// Parent pid and state of `pid`, if it exists.
fn stat(pid: i32) -> Option<(i32, char)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = s.rfind(')')?;
    let mut it = s[close + 1..].split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Zombie children of `pid` right now.
fn zombies_of(pid: i32) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| stat(p) == Some((pid, 'Z')))
        .count()
}

fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, s)) if s != 'Z')
}

// ---------------------------------------------------------------------------------------

/// Exit codes: a stop request ends with the status of the engine that stop ended.
fn exit_codes(pid1: bool) {
    let script = format!(
        "{RECORD}\ntrap 'exit $FAKE_CODE' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
    );
    let codes: Vec<i32> = if pid1 {
        vec![0, 1, 2, 42, 126, 127, 128, 200, 255]
    } else {
        (0..=255).collect()
    };
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in codes.chunks(codes.len().div_ceil(4)) {
            let script = &script;
            let failures = &failures;
            s.spawn(move || {
                for &code in chunk {
                    let env = [("FAKE_CODE", code.to_string())];
                    let mut o = Opts::new(script);
                    o.env = &env;
                    o.pid1 = pid1;
                    let mut sup = start(o);
                    assert!(
                        sup.wait_file("ready", Duration::from_secs(60)),
                        "engine started"
                    );
                    sup.stop(libc::SIGTERM);
                    let got = sup.exit_code(Duration::from_secs(20));
                    if got != code {
                        failures.lock().unwrap().push((code, got, sup.stderr()));
                    }
                }
            });
        }
    });
    let f = failures.into_inner().unwrap();
    assert!(f.is_empty(), "codes that did not come back: {f:?}");
}

/// 128+N: the engine dies by signal N when asked to stop.
fn signal_codes(pid1: bool) {
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGTERM,
    ] {
        let script = format!(
            "{RECORD}\ntrap 'trap - {sig}; kill -{sig} $$' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
        );
        let mut o = Opts::new(&script);
        o.pid1 = pid1;
        let mut sup = start(o);
        assert!(sup.wait_file("ready", Duration::from_secs(60)));
        sup.stop(libc::SIGTERM);
        assert_eq!(
            sup.exit_code(Duration::from_secs(20)),
            128 + sig,
            "signal {sig}"
        );
    }
}

/// SIGHUP, SIGUSR1, SIGUSR2 and SIGWINCH reach the engine's main process.
fn forwarding(pid1: bool) {
    let script = format!(
        r#"{RECORD}
for s in HUP USR1 USR2 WINCH; do trap "echo $s >> \"\$FAKE_DIR/got\"" $s; done
trap 'exit 0' TERM
touch "$FAKE_DIR/ready"
while :; do sleep 0.02; done"#
    );
    let mut o = Opts::new(&script);
    o.pid1 = pid1;
    let mut sup = start(o);
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    for (sig, name) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ] {
        sup.stop(sig);
        let ok = wait_for(Duration::from_secs(5), || {
            sup.read("got").lines().any(|l| l == name)
        });
        assert!(ok, "{name} was not forwarded; got {:?}", sup.read("got"));
    }
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
    assert_eq!(sup.spawns().len(), 1, "a forwarded signal is not a restart");
}

/// After a stop nothing of the engine's tree is left: a worker ignoring SIGTERM, a setsid'ed
/// one, and a double-forked orphan. `trap`: the main process handles SIGTERM (exit 0);
/// without it, it dies of the SIGTERM before its workers are told anything (a stop during
/// vLLM's warm-up, vllm#44751) and the exit status is 143.
fn no_process_left(pid1: bool, trap: bool) {
    let trap_line = if trap { "trap 'exit 0' TERM" } else { "" };
    let script = format!(
        r#"{RECORD}
{trap_line}
sh -c 'trap "" TERM; echo $$ >> "$FAKE_DIR/workers"; while :; do sleep 1; done' &
setsid sh -c 'echo $$ >> "$FAKE_DIR/workers"; while :; do sleep 1; done' &
sh -c 'sh -c "trap \"\" TERM; echo \$\$ >> \"$FAKE_DIR/workers\"; while :; do sleep 1; done" &'
while [ "$(wc -l < "$FAKE_DIR/workers")" -lt 3 ]; do sleep 0.01; done
touch "$FAKE_DIR/ready"
while :; do sleep 0.02; done"#
    );
    let mut o = Opts::new(&script);
    o.pid1 = pid1;
    let mut sup = start(o);
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    // Host-side pids of everything under the supervisor (inside a namespace too).
    let workers = descendants(sup.pid);
    assert!(workers.len() >= 4, "engine + 3 workers, got {workers:?}");
    sup.stop(libc::SIGTERM);
    let want = if trap { 0 } else { 128 + libc::SIGTERM };
    assert_eq!(sup.exit_code(Duration::from_secs(20)), want);
    let left: Vec<i32> = workers.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive after the stop: {left:?}");
}

/// Every live descendant of `root` (host pids).
fn descendants(root: i32) -> Vec<i32> {
    let pids: Vec<i32> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let table: Vec<(i32, i32)> = pids
        .iter()
        .filter_map(|&p| stat(p).map(|(pp, _)| (p, pp)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &table {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// 1,000 orphans reparented to the supervisor are all reaped.
fn orphans(pid1: bool) {
    let script = format!(
        r#"{RECORD}
trap 'exit 0' TERM
i=0
while [ $i -lt 1000 ]; do (true &); i=$((i+1)); done
touch "$FAKE_DIR/ready"
while :; do sleep 0.02; done"#
    );
    let mut o = Opts::new(&script);
    o.pid1 = pid1;
    let mut sup = start(o);
    assert!(
        sup.wait_file("ready", Duration::from_secs(60)),
        "orphans made"
    );
    let pid = sup.pid;
    let clean = wait_for(Duration::from_secs(3), || zombies_of(pid) == 0);
    assert!(
        clean,
        "{} zombies left under the supervisor",
        zombies_of(pid)
    );
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
}

#[test]
fn exit_codes_come_back_exact_as_subreaper() {
    exit_codes(false);
}

#[test]
fn signal_deaths_come_back_as_128_plus_n_as_subreaper() {
    signal_codes(false);
}

#[test]
fn signals_are_forwarded_as_subreaper() {
    forwarding(false);
}

#[test]
fn stop_leaves_no_process_of_the_tree_as_subreaper() {
    no_process_left(false, true);
    no_process_left(false, false);
}

#[test]
fn thousand_orphans_leave_no_zombie_as_subreaper() {
    orphans(false);
}

#[test]
fn as_pid1_in_a_new_pid_namespace() {
    if !privileged_or_skip("as_pid1_in_a_new_pid_namespace") {
        return;
    }
    exit_codes(true);
    signal_codes(true);
    forwarding(true);
    no_process_left(true, true);
    no_process_left(true, false);
    orphans(true);
}

#[test]
fn double_sigterm_kills_at_once() {
    let script = format!(
        "{RECORD}\ntrap 'echo ignoring TERM' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
    );
    let mut o = Opts::new(&script);
    o.args = &["--stop-timeout", "60s"];
    let mut sup = start(o);
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    sup.stop(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    sup.stop(libc::SIGTERM);
    let code = sup.exit_code(Duration::from_secs(10));
    assert_eq!(code, 128 + libc::SIGKILL, "{}", sup.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_single_stop_escalates_to_kill_after_the_grace() {
    let script = format!(
        "{RECORD}\ntrap 'echo ignoring TERM' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
    );
    let mut o = Opts::new(&script);
    o.args = &["--stop-timeout", "0.3s"];
    let mut sup = start(o);
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    let t = Instant::now();
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 137);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(
        sup.read("out.log").contains("ignoring TERM"),
        "the engine got SIGTERM first"
    );
}

#[test]
fn crash_restarts_with_backoff_then_gives_up() {
    let script = format!("{RECORD}\necho 'engine crashed for no known reason'\nexit 1");
    let mut o = Opts::new(&script);
    o.args = &[
        "--backoff-initial",
        "0.1s",
        "--backoff-max",
        "0.2s",
        "--restart-budget",
        "2",
    ];
    let mut sup = start(o);
    sup.expect_exit(70, Duration::from_secs(30));
    let times: Vec<u128> = sup
        .spawns()
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    // At least the first launch's series: spawn, +0.1 s, +0.2 s.
    assert!(times.len() >= 3, "spawns: {times:?}");
    let gap = |i: usize| (times[i + 1] - times[i]) / 1_000_000;
    assert!(gap(0) >= 100, "first restart after {} ms", gap(0));
    assert!(gap(1) >= 200, "second restart after {} ms", gap(1));
    let err = sup.stderr();
    assert!(err.contains("gave up"), "{err}");
    assert!(err.contains("(unknown) -> restart"), "{err}");
    assert!(err.contains("engine crashed for no known reason"), "{err}");
    // The engine's output reaches our stdout unchanged.
    assert!(
        sup.read("out.log")
            .contains("engine crashed for no known reason\n")
    );
}

#[test]
fn oom_text_moves_to_the_next_recipe() {
    let script = format!(
        "{RECORD}\necho 'torch.OutOfMemoryError: HIP out of memory. Tried to allocate 12.95 GiB.' >&2\nexit 1"
    );
    let mut sup = start(Opts::new(&script));
    sup.expect_exit(70, Duration::from_secs(30));
    let err = sup.stderr();
    let attempts: Vec<&str> = err.lines().filter(|l| l.contains("  attempt ")).collect();
    assert!(!attempts.is_empty(), "{err}");
    // Never the same recipe twice: each attempt is a different recipe, each moves on.
    for (i, a) in attempts.iter().enumerate() {
        let want = if i + 1 == attempts.len() {
            "(oom) -> give_up"
        } else {
            "(oom) -> next_recipe"
        };
        assert!(a.contains(want), "attempt {i}: {a}");
    }
    assert_eq!(sup.spawns().len(), attempts.len());
}

#[test]
fn model_not_found_is_not_retried() {
    let script = format!(
        "{RECORD}\necho \"huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. Repository Not Found for url: https://huggingface.co/api/models/aim-test/Tiny-7B\" >&2\nexit 1"
    );
    let mut sup = start(Opts::new(&script));
    sup.expect_exit(66, Duration::from_secs(30));
    assert_eq!(sup.spawns().len(), 1, "no retry");
    assert!(
        sup.stderr().contains("check the model id"),
        "{}",
        sup.stderr()
    );
}

#[test]
fn engine_command_not_found_is_127_and_not_executable_126() {
    let dir = tempfile::tempdir().expect("tmp");
    let not_exec = dir.path().join("vllm");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").expect("write");
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing = "/nonexistent/vllm".to_string();
    let not_exec = not_exec.display().to_string();
    for (launcher, code) in [(&missing, 127), (&not_exec, 126)] {
        let out = AimEngine::new()
            .fixture(FIXTURE_NAME)
            .arg(MODEL)
            .public_port()
            .args(["--engine-port", &free_port().to_string()])
            .env("AIM_VLLM_COMMAND", launcher)
            .env("AIM_SGLANG_COMMAND", launcher)
            .offline_hf()
            .output();
        out.expect_code(code);
        let err = out.stderr();
        for needle in [launcher.as_str(), "AIM_VLLM_COMMAND", "PATH"] {
            assert!(err.contains(needle), "{needle} missing: {err}");
        }
    }
}

#[test]
fn startup_deadline_ends_the_attempt() {
    let script = format!("{RECORD}\ntrap 'exit 0' TERM\nwhile :; do sleep 0.02; done");
    let mut o = Opts::new(&script);
    o.args = &["--startup-timeout", "0.3s", "--stop-timeout", "1s"];
    let mut sup = start(o);
    let t = Instant::now();
    sup.expect_exit(70, Duration::from_secs(60));
    let n = sup.spawns().len();
    assert!(n >= 1);
    assert!(t.elapsed() >= Duration::from_millis(300) * n as u32);
    assert!(
        sup.stderr().contains("(startup_timeout)"),
        "{}",
        sup.stderr()
    );
}

#[test]
fn a_relaunch_waits_for_vram() {
    // The first attempt "holds" 100 GiB on every card and crashes; the test releases the
    // memory 600 ms later. The relaunch (zero backoff) must wait for it.
    let script = format!(
        r#"{RECORD}
if [ ! -e "$FAKE_DIR/held" ]; then
  touch "$FAKE_DIR/held"
  for f in $(find "$FAKE_ROOT/sys/devices" -name mem_info_vram_used); do echo 107374182400 > "$f"; done
  echo 'crash while holding VRAM'
  exit 1
fi
trap 'exit 0' TERM
touch "$FAKE_DIR/ready"
while :; do sleep 0.02; done"#
    );
    let mut o = Opts::new(&script);
    o.copy_root = true;
    o.args = &["--vram-wait-timeout", "20s"];
    let mut sup = start(o);
    assert!(sup.wait_file("held", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(600));
    let released = Instant::now();
    let root = sup.dir.path().join("root");
    for f in find_named(&root.join("sys/devices"), "mem_info_vram_used") {
        let mut h = fs::File::create(&f).expect("vram file");
        writeln!(h, "0").expect("write");
    }
    assert!(
        sup.wait_file("ready", Duration::from_secs(60)),
        "{}",
        sup.stderr()
    );
    let spawns = sup.spawns();
    assert_eq!(spawns.len(), 2, "{spawns:?}");
    let t: Vec<u128> = spawns
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    let gap_ms = (t[1] - t[0]) / 1_000_000;
    assert!(
        gap_ms >= 600,
        "relaunched after {gap_ms} ms, before the VRAM came back"
    );
    assert!(released.elapsed() < Duration::from_secs(10));
    assert!(
        sup.stderr().contains("waiting for VRAM"),
        "{}",
        sup.stderr()
    );
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
}

fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(find_named(&p, name));
        } else if ft.is_file() && e.file_name() == name {
            out.push(p);
        }
    }
    out
}

/// The engine starts with an empty signal mask and no ignored signal, even when the
/// supervisor itself was started with SIGALRM blocked and SIGALRM and SIGRTMIN+2 ignored (std
/// children inherit the mask since Rust 1.66; ignored dispositions survive exec). glibc's
/// internal signals 32 and 33 are the exception: glibc refuses to touch them, and a parent
/// that used posix_spawn (cargo) may leave them ignored; every glibc program resets them.
#[test]
fn engine_gets_a_clean_signal_state() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("engine.sh");
    fs::write(
        &script,
        "#!/bin/sh\n# Builtins only: a forked reader could see the mask the shell holds while forking.\nwhile read -r l; do case $l in Sig*) echo \"$l\";; esac; done < /proc/$$/status > \"$FAKE_DIR/sig.tmp\"\ntrap 'exit 0' TERM\nmv \"$FAKE_DIR/sig.tmp\" \"$FAKE_DIR/sig\"\nwhile :; do sleep 0.02; done\n",
    )
    .expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = aim_engine();
    cmd.arg("--root")
        .arg(project_root().join(FIXTURE))
        .args([
            MODEL,
            "--port",
            &free_port().to_string(),
            "--host",
            "127.0.0.1",
        ])
        .args(["--engine-port", &free_port().to_string()])
        .env("AIM_VLLM_COMMAND", &script)
        .env("AIM_SGLANG_COMMAND", &script)
        .env("HF_HOME", dir.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("FAKE_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: async-signal-safe calls only, in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGALRM, libc::SIG_IGN);
            libc::signal(libc::SIGRTMIN() + 2, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start aim-engine");
    let sig = dir.path().join("sig");
    let ok = wait_for(Duration::from_secs(20), || sig.exists());
    signal(child.id() as i32, libc::SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(10));
    assert!(ok, "the engine did not start");
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    let text = fs::read_to_string(&sig).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    };
    assert_eq!(field("SigBlk:"), Some(0), "{text}");
    let ign = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    assert_eq!(ign.map(|m| m & !0x1_8000_0000), Some(0), "{text}");
}

/// The engine's environment is built on purpose: the pass-through set and the launch's own
/// variables, never systemd's NOTIFY_SOCKET / WATCHDOG_* nor unrelated variables.
#[test]
fn engine_environment_is_filtered() {
    let script = format!(
        "{RECORD}\nenv > \"$FAKE_DIR/env.tmp\"\ntrap 'exit 0' TERM\nmv \"$FAKE_DIR/env.tmp\" \"$FAKE_DIR/env\"\nwhile :; do sleep 0.02; done"
    );
    let env = [
        ("NOTIFY_SOCKET", "/nonexistent/notify".to_string()),
        ("WATCHDOG_USEC", "30000000".to_string()),
        ("WATCHDOG_PID", "1".to_string()),
        ("HF_TOKEN", "hf_test".to_string()),
        ("VLLM_LOGGING_LEVEL", "DEBUG".to_string()),
        ("SOME_UNRELATED_SECRET", "x".to_string()),
        ("AIM_API_KEY", "k".to_string()),
    ];
    let mut o = Opts::new(&script);
    o.env = &env;
    let mut sup = start(o);
    assert!(sup.wait_file("env", Duration::from_secs(20)));
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
    let got = sup.read("env");
    let has = |k: &str| got.lines().any(|l| l.starts_with(&format!("{k}=")));
    for k in [
        "PATH",
        "HF_TOKEN",
        "VLLM_LOGGING_LEVEL",
        "FAKE_DIR",
        "PYTHONUNBUFFERED",
    ] {
        assert!(has(k), "{k} missing:\n{got}");
    }
    for k in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "SOME_UNRELATED_SECRET",
        "AIM_API_KEY",
    ] {
        assert!(!has(k), "{k} leaked:\n{got}");
    }
}

/// An OpenAI-ish engine API served by the test itself on the engine's loopback port, so a
/// sleeping shell script can stand in for an engine that loads, serves and hangs.
struct FakeApi {
    port: u16,
    /// 0: healthy; 1: accept connections but never answer (hung); 2: /health answers 503.
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl FakeApi {
    fn start() -> FakeApi {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::{AtomicU8, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = std::sync::Arc::new(AtomicU8::new(0));
        let m = mode.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = std::io::Read::read_exact(&mut reader, &mut body);
                    let mode = m.load(Ordering::SeqCst);
                    if mode == 1 {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    let (code, text) = match path.as_str() {
                        "/health" if mode == 2 => (503, String::new()),
                        "/health" => (200, String::new()),
                        "/v1/models" => (
                            200,
                            format!(r#"{{"object":"list","data":[{{"id":"{MODEL}"}}]}}"#),
                        ),
                        "/v1/completions" => (200, r#"{"choices":[{"text":" hi"}]}"#.into()),
                        _ => (404, String::new()),
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                });
            }
        });
        FakeApi { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An engine that records its start and sleeps until SIGTERM (trap first: a stop may come
/// as soon as the test's API answers).
const SLEEPER: &str = "trap 'exit 0' TERM\necho \"$$ $(date +%s%N)\" >> \"$FAKE_DIR/spawns\"\nwhile :; do sleep 0.02; done";

/// Ready, then hung: liveness fails N times in a row, the engine is stopped and restarted,
/// and the new attempt becomes ready again.
#[test]
fn a_hung_engine_is_restarted() {
    let api = FakeApi::start();
    let script = SLEEPER;
    let mut o = Opts::new(script);
    o.engine_port = Some(api.port);
    o.args = &[
        "--liveness-interval",
        "0.1s",
        "--liveness-timeout",
        "0.2s",
        "--liveness-failures",
        "2",
        "--stop-timeout",
        "1s",
        // The /health path only; the idle probe has its own test.
        "--idle-probe-interval",
        "0",
    ];
    let mut sup = start(o);
    let ready = wait_for(Duration::from_secs(20), || {
        sup.stderr().contains("engine ready")
    });
    assert!(ready, "never ready: {}", sup.stderr());
    api.set(1);
    let restarted = wait_for(Duration::from_secs(20), || sup.spawns().len() >= 2);
    assert!(restarted, "no restart: {}", sup.stderr());
    api.set(0);
    let again = wait_for(Duration::from_secs(20), || {
        sup.stderr().matches("engine ready").count() >= 2
    });
    assert!(again, "not ready again: {}", sup.stderr());
    let err = sup.stderr();
    assert!(
        err.contains("hung (probe_misses): 2 liveness checks failed in a row"),
        "{err}"
    );
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
    assert_eq!(sup.spawns().len(), 2);
}

/// /health answering 503 after ready (vLLM's dead engine core, SGLang's stuck scheduler) is
/// a failed liveness check too.
#[test]
fn health_503_after_ready_counts_as_hung() {
    let api = FakeApi::start();
    let script = SLEEPER;
    let mut o = Opts::new(script);
    o.engine_port = Some(api.port);
    o.args = &[
        "--liveness-interval",
        "0.1s",
        "--liveness-failures",
        "3",
        "--restart-budget",
        "0",
        "--startup-timeout",
        "1s",
        "--stop-timeout",
        "1s",
    ];
    let mut sup = start(o);
    let ready = wait_for(Duration::from_secs(20), || {
        sup.stderr().contains("engine ready")
    });
    assert!(ready, "never ready: {}", sup.stderr());
    api.set(2);
    // No restart budget: the hang moves on to the next launch, which never gets healthy
    // (startup deadline), until the run gives up.
    sup.expect_exit(70, Duration::from_secs(30));
    assert!(
        sup.stderr().contains("/health answered 503"),
        "{}",
        sup.stderr()
    );
}

/// The public port is bound first; a port in use is a clear error naming the fix.
#[test]
fn public_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = AimEngine::new()
        .fixture(FIXTURE_NAME)
        .args([MODEL, "--port", &port.to_string(), "--host", "127.0.0.1"])
        .env("AIM_VLLM_COMMAND", "/nonexistent/vllm")
        .offline_hf()
        .output();
    out.expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
}

/// sd_notify: a fake $NOTIFY_SOCKET receives STATUS= lines, EXTEND_TIMEOUT_USEC while
/// loading, READY=1 once ready, WATCHDOG=1 pings and STOPPING=1 on the stop, in that order.
#[test]
fn systemd_notifications_arrive_in_order() {
    use std::os::unix::net::UnixDatagram;
    let api = FakeApi::start();
    let sock_dir = tempfile::tempdir().expect("tmp");
    let path = sock_dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let env = [
        ("NOTIFY_SOCKET", path.display().to_string()),
        ("WATCHDOG_USEC", "200000".to_string()),
    ];
    let mut o = Opts::new(SLEEPER);
    o.engine_port = Some(api.port);
    o.env = &env;
    let mut sup = start(o);
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv_until = |got: &mut Vec<String>, limit: Duration, want: &str| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(n) = sock.recv(&mut buf) {
                got.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                );
            }
            if got.iter().any(|l| l == want) {
                return true;
            }
        }
        false
    };
    assert!(
        recv_until(&mut got, Duration::from_secs(20), "READY=1"),
        "no READY=1: {got:?}"
    );
    // Watchdog pings at half of WATCHDOG_USEC keep coming once ready.
    let before = got.iter().filter(|l| *l == "WATCHDOG=1").count();
    std::thread::sleep(Duration::from_millis(350));
    recv_until(&mut got, Duration::from_millis(100), "never");
    let after = got.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(
        after >= before + 2,
        "watchdog pings: {before} -> {after}: {got:?}"
    );
    sup.stop(libc::SIGTERM);
    assert!(
        recv_until(&mut got, Duration::from_secs(10), "STOPPING=1"),
        "no STOPPING=1: {got:?}"
    );
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
    let pos = |k: &str| got.iter().position(|l| l.starts_with(k));
    let (status, extend, ready, stopping) = (
        pos("STATUS="),
        pos("EXTEND_TIMEOUT_USEC="),
        pos("READY=1"),
        pos("STOPPING=1"),
    );
    assert!(status.is_some() && extend.is_some(), "{got:?}");
    assert!(extend < ready && ready < stopping, "order: {got:?}");
    assert!(got.iter().any(|l| l.starts_with("STATUS=ready")), "{got:?}");
}

/// The engine's stdout reaches ours byte for byte (our own logs go to stderr), and its
/// stderr reaches our stderr.
#[test]
fn engine_output_passes_through_unchanged() {
    let script = "trap 'exit 0' TERM\nprintf 'line one\\r\\nbytes \\001\\377 tail without newline'\nprintf 'to stderr\\n' >&2\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done";
    let mut sup = start(Opts::new(script));
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(10)), 0);
    let out = fs::read(sup.path("out.log")).expect("out.log");
    assert_eq!(
        out,
        b"line one\r\nbytes \x01\xff tail without newline".to_vec()
    );
    assert!(sup.stderr().contains("to stderr\n"), "{}", sup.stderr());
}

// ------------------------------------------------------------------------------------------
// With the fake engine (tests/fake-engine): a real process tree that loads, serves and fails
// like vLLM.

/// Starts the supervisor on the fake engine with `env` (FAKE_STATE_DIR is the temp dir).
fn start_fake(env: &[(&str, String)], args: &'static [&'static str]) -> Sup {
    let fake = crate::support::fake_engine();
    let mut all: Vec<(&str, String)> = vec![
        ("AIM_VLLM_COMMAND", fake.display().to_string()),
        ("AIM_SGLANG_COMMAND", fake.display().to_string()),
        ("FAKE_LOAD_SECS", "0.2".to_string()),
    ];
    all.extend(env.iter().cloned());
    let mut o = Opts::new("exit 99");
    o.env = &all;
    o.args = args;
    start(o)
}

/// GET on the supervisor's public port: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1.to_string())?;
    Some((code, body))
}

/// The supervisor's /status as JSON.
fn status(sup: &Sup) -> serde_json::Value {
    let (code, body) = http_get(sup.port, "/status").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    // A chunked body starts with its size line.
    let json = body
        .find('{')
        .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
        .unwrap_or("");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

fn ready_count(sup: &Sup) -> usize {
    sup.stderr().matches("engine ready").count()
}

/// Ready with workers (one ignoring SIGTERM, in their own session) and adopted orphans;
/// SIGTERM ends with the engine's own exit status and leaves nothing behind.
#[test]
fn fake_engine_full_life() {
    let state = tempfile::tempdir().expect("tmp");
    let env = [
        ("FAKE_STATE_DIR", state.path().display().to_string()),
        ("FAKE_WORKERS", "2".to_string()),
        ("FAKE_WORKERS_IGNORE_TERM", "1".to_string()),
        ("FAKE_WORKERS_SETSID", "1".to_string()),
        ("FAKE_ORPHANS", "3".to_string()),
        ("FAKE_ORPHAN_LINGER_SECS", "30".to_string()),
        ("FAKE_EXIT_CODE_ON_TERM", "7".to_string()),
    ];
    let mut sup = start_fake(&env, &[]);
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let tree = descendants(sup.pid);
    assert!(tree.len() >= 6, "engine + 2 workers + 3 orphans: {tree:?}");
    // The status and health on the public port tell the same story.
    let st = status(&sup);
    assert_eq!(st["phase"], "ready", "{st}");
    assert_eq!(st["attempt"], 1, "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(
        st["engine_pid"]
            .as_i64()
            .is_some_and(|p| tree.contains(&(p as i32))),
        "{st}"
    );
    assert!(
        st["recipe"]["id"].as_str().is_some_and(|r| !r.is_empty()),
        "{st}"
    );
    assert!(st["ready_since_s"].as_f64().is_some(), "{st}");
    assert!(
        st["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{st}"
    );
    assert_eq!(http_get(sup.port, "/health").map(|r| r.0), Some(200));
    sup.stop(libc::SIGTERM);
    sup.expect_exit(7, Duration::from_secs(20));
    let left: Vec<i32> = tree.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The engine's own log went through to our stdout.
    assert!(
        sup.read("out.log")
            .contains("Application startup complete.")
    );
}

/// A crash after ready restarts the same recipe; exit code 0 from a runtime engine death is
/// a failure too.
#[test]
fn fake_engine_crash_after_ready_restarts_even_with_exit_0() {
    let state = tempfile::tempdir().expect("tmp");
    let env = [
        ("FAKE_STATE_DIR", state.path().display().to_string()),
        ("FAKE_CRASH_AFTER_SECS", "0.8".to_string()),
        ("FAKE_EXIT0_ENGINE_DEATH", "1".to_string()),
    ];
    let mut sup = start_fake(
        &env,
        &["--backoff-initial", "0.05s", "--backoff-max", "0.1s"],
    );
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) >= 2),
        "not ready twice: {}",
        sup.stderr()
    );
    let err = sup.stderr();
    assert!(err.contains("exited unexpectedly (exit 0)"), "{err}");
    assert!(err.contains("next: restart"), "{err}");
    let st = status(&sup);
    let f = &st["failures"][0];
    assert_eq!(f["exit"], "exit 0", "{st}");
    assert_eq!(f["action"], "restart", "{st}");
    assert!(
        f["log_tail"].as_array().is_some_and(|t| !t.is_empty()),
        "{st}"
    );
    assert!(st["restarts"].as_u64().is_some_and(|r| r >= 1), "{st}");
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(20)), 0);
}

/// The first starts fail with an OOM text: each moves to the next recipe, and the chain
/// then gets ready on a later one.
#[test]
fn fake_engine_oom_falls_back_until_a_recipe_works() {
    let state = tempfile::tempdir().expect("tmp");
    let env = [
        ("FAKE_STATE_DIR", state.path().display().to_string()),
        ("FAKE_FAIL_FIRST_N_STARTS", "2".to_string()),
        (
            "FAKE_FAIL_FIRST_TEXT",
            "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 12.95 GiB.".to_string(),
        ),
    ];
    let mut sup = start_fake(&env, &[]);
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let err = sup.stderr();
    assert_eq!(err.matches("falling back to recipe").count(), 2, "{err}");
    assert!(!err.contains("next: restart"), "{err}");
    let st = status(&sup);
    assert_eq!(st["phase"], "ready", "{st}");
    assert_eq!(st["attempt"], 3, "{st}");
    let failures = st["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 2, "{st}");
    for f in &failures {
        assert_eq!(f["class"], "oom", "{st}");
        assert_eq!(f["action"], "next_recipe", "{st}");
    }
    assert_ne!(failures[0]["recipe_id"], failures[1]["recipe_id"], "{st}");
    assert_ne!(st["recipe"]["id"], failures[1]["recipe_id"], "{st}");
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(20)), 0);
}

/// vLLM's "estimated maximum model length is N": the same recipe again with that length.
#[test]
fn fake_engine_max_model_len_is_retried_with_the_suggestion() {
    let state = tempfile::tempdir().expect("tmp");
    let text = "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, which is larger than the available KV cache memory (9.87 GiB). Based on the available memory, the estimated maximum model length is 80784. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.";
    let env = [
        ("FAKE_STATE_DIR", state.path().display().to_string()),
        ("FAKE_FAIL_FIRST_N_STARTS", "1".to_string()),
        ("FAKE_FAIL_FIRST_TEXT", text.to_string()),
    ];
    let mut sup = start_fake(&env, &[]);
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let err = sup.stderr();
    assert!(err.contains("next: retry_max_model_len"), "{err}");
    let second = err
        .lines()
        .filter(|l| l.contains("starting the engine"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(second.contains("--max-model-len 80784"), "{second}");
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(20)), 0);
}

/// Engine port taken: another free loopback port, then ready.
#[test]
fn fake_engine_port_in_use_moves_to_a_free_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let fake = crate::support::fake_engine();
    let env = [
        ("AIM_VLLM_COMMAND", fake.display().to_string()),
        ("AIM_SGLANG_COMMAND", fake.display().to_string()),
        ("FAKE_LOAD_SECS", "0.2".to_string()),
    ];
    let mut o = Opts::new("exit 99");
    o.env = &env;
    o.engine_port = Some(port);
    let mut sup = start(o);
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    assert!(
        sup.stderr().contains(&format!("engine port {port} in use")),
        "{}",
        sup.stderr()
    );
    sup.stop(libc::SIGTERM);
    assert_eq!(sup.exit_code(Duration::from_secs(20)), 0);
    drop(taken);
}

/// A launcher that is the engine's own executable (`<dir>/vllm`, here the fake under that
/// name) gets its version probed with the `python3` beside it; the version shows in /status
/// and flags that version lacks are dropped before the engine sees them. The fake, told it is
/// vLLM 0.10.2, rejects `--kv-cache-memory-bytes` (added in 0.11) as vLLM would, so without
/// the gate this attempt fails with bad arguments.
#[test]
fn engine_version_is_probed_shown_and_gates_flags() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().expect("tmp");
    let vllm = bin.path().join("vllm");
    std::os::unix::fs::symlink(crate::support::fake_engine(), &vllm).expect("symlink vllm");
    let python = bin.path().join("python3");
    fs::write(&python, "#!/bin/sh\necho 0.10.2\n").expect("python3");
    fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = [
        ("AIM_VLLM_COMMAND", vllm.display().to_string()),
        ("FAKE_VERSION", "0.10.2".to_string()),
    ];
    let mut sup = start_fake(
        &env,
        &["--engine-args", r#"{"kv-cache-memory-bytes": 1000000000}"#],
    );
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let st = status(&sup);
    assert_eq!(st["engine_version"], "0.10.2", "{st}");
    assert!(
        st["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{st}"
    );
    let log = sup.stderr();
    assert!(
        log.contains("dropped `--kv-cache-memory-bytes 1000000000` for vllm 0.10.2"),
        "{log}"
    );
    sup.stop(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
}

/// AIM's per-model images set AIM_ID alone: with no MODEL and no subcommand (as their entry
/// point runs), aim-engine serves that model from its recipe folder, and the engine answers
/// to it.
#[test]
fn serve_with_only_aim_id() {
    let fake = crate::support::fake_engine();
    let run = AimEngine::new();
    let argv_file = run.dir().join("argv");
    let mut sup = run
        .fixture(FIXTURE_NAME)
        .engine_script(&format!(
            "echo \"$@\" > '{}'\nexec '{}' \"$@\"",
            argv_file.display(),
            fake.display()
        ))
        .offline_hf()
        .env("AIM_ID", "Qwen/Qwen3-32B")
        .env("FAKE_LOAD_SECS", "0.2")
        .env("AIM_LOG_LEVEL", "info")
        .public_port()
        .arg("--")
        .args(["--max-num-seqs", "7", "--enforce-eager"])
        .spawn();
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let st = status(&sup);
    assert_eq!(st["recipe"]["id"], "vllm-mi300x-bf16-tp1-latency", "{st}");
    let (code, body) = http_get(sup.port, "/v1/models").expect("GET /v1/models");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Qwen/Qwen3-32B"), "{body}");
    // The engine flags after `--` reach the engine.
    let argv = fs::read_to_string(&argv_file).expect("argv");
    assert!(argv.contains("--max-num-seqs 7"), "{argv}");
    assert!(argv.contains("--enforce-eager"), "{argv}");
    assert!(
        argv.contains("--served-model-name Qwen/Qwen3-32B"),
        "{argv}"
    );
    sup.signal(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
}

/// vLLM not installed: its version probe (the `python3` beside the launcher) prints a
/// traceback on stderr and exits 1. None of that reaches our stderr: the probe's last line is
/// logged at debug, the launch goes ahead ungated, and the engine serves.
#[test]
fn a_failed_version_probe_keeps_its_traceback_out_of_our_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().expect("tmp");
    let vllm = bin.path().join("vllm");
    std::os::unix::fs::symlink(crate::support::fake_engine(), &vllm).expect("symlink vllm");
    let python = bin.path().join("python3");
    fs::write(
        &python,
        "#!/bin/sh\n\
         echo 'Traceback (most recent call last):' >&2\n\
         echo '  File \"<string>\", line 1, in <module>' >&2\n\
         echo \"importlib.metadata.PackageNotFoundError: No package metadata was found for vllm\" >&2\n\
         exit 1\n",
    )
    .expect("python3");
    fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = [
        ("AIM_VLLM_COMMAND", vllm.display().to_string()),
        ("AIM_LOG_LEVEL", "debug".to_string()),
    ];
    let mut sup = start_fake(&env, &[]);
    assert!(
        wait_for(Duration::from_secs(30), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    let log = sup.stderr();
    assert!(!log.contains("Traceback"), "{log}");
    assert!(!log.contains("line 1, in <module>"), "{log}");
    assert!(
        log.contains("said on stderr: importlib.metadata.PackageNotFoundError"),
        "the last line at debug: {log}"
    );
    assert!(status(&sup)["engine_version"].is_null());
    sup.stop(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
}

/// While the engine loads, a progress line (phase, time so far, the engine's last log line)
/// comes every --progress-interval, and /status carries the same last line.
#[test]
fn loading_progress_is_logged_with_the_engines_last_line() {
    let env = [("FAKE_LOAD_SECS", "2".to_string())];
    let mut sup = start_fake(&env, &["--progress-interval", "0.4s"]);
    let line = |log: &str| {
        log.lines()
            .filter(|l| l.contains("loading for") && l.contains("last engine line: "))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || line(&sup.stderr()) >= 2),
        "no progress lines: {}",
        sup.stderr()
    );
    let st = status(&sup);
    assert!(
        st["last_log_line"].as_str().is_some_and(|l| !l.is_empty()),
        "{st}"
    );
    assert!(
        wait_for(Duration::from_secs(20), || ready_count(&sup) == 1),
        "never ready: {}",
        sup.stderr()
    );
    // Once ready the progress lines stop.
    let after_ready = line(&sup.stderr());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(line(&sup.stderr()), after_ready, "{}", sup.stderr());
    sup.stop(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
}

// ---------------------------------------------------------------- signals we do not act on

/// Signals whose default action would end the supervisor (SIGALRM, SIGVTALRM, SIGPROF, SIGIO,
/// SIGXCPU, SIGXFSZ, SIGPWR, SIGSTKFLT and every real-time signal) neither stop nor kill it:
/// the engine keeps running, is not restarted, and a later SIGTERM still ends the run with
/// the engine's status.
fn default_fatal_signals_are_harmless(pid1: bool) {
    let script = format!(
        "{RECORD}\ntrap 'echo HUP >> \"$FAKE_DIR/got\"' HUP\ntrap 'exit 0' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
    );
    let mut o = Opts::new(&script);
    o.pid1 = pid1;
    let mut sup = start(o);
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    let mut sigs = vec![
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGPWR,
        libc::SIGSTKFLT,
    ];
    sigs.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    for &sig in &sigs {
        sup.stop(sig);
    }
    // A forwarded signal after them: once the engine saw it, ours were all delivered.
    sup.stop(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(5), || sup.read("got").contains("HUP")),
        "the supervisor stopped forwarding ({:?} after {sigs:?}); stderr:\n{}",
        sup.child.try_wait(),
        sup.stderr()
    );
    assert!(
        sup.child.try_wait().expect("try_wait").is_none(),
        "{}",
        sup.stderr()
    );
    assert_eq!(sup.spawns().len(), 1, "{}", sup.stderr());
    sup.stop(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
}

#[test]
fn default_fatal_signals_are_harmless_as_subreaper() {
    default_fatal_signals_are_harmless(false);
}

#[test]
fn default_fatal_signals_are_harmless_as_pid1() {
    if !privileged_or_skip("default_fatal_signals_are_harmless_as_pid1") {
        return;
    }
    default_fatal_signals_are_harmless(true);
}

/// The engine never outlives the supervisor: when the supervisor is SIGKILLed (nothing of it
/// runs), the engine's main process and the workers in its process group are stopped too.
#[test]
fn engine_tree_dies_with_a_killed_supervisor() {
    let script = format!(
        r#"{RECORD}
trap 'exit 0' TERM
sh -c 'trap "" TERM; echo $$ >> "$FAKE_DIR/workers"; while :; do sleep 0.05; done' &
while [ ! -s "$FAKE_DIR/workers" ]; do sleep 0.01; done
touch "$FAKE_DIR/ready"
while :; do sleep 0.02; done"#
    );
    let mut sup = start(Opts::new(&script));
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    let engine: i32 = sup.spawns()[0]
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("engine pid");
    let worker: i32 = sup.read("workers").trim().parse().expect("worker pid");
    assert!(alive(engine) && alive(worker));
    sup.stop(libc::SIGKILL);
    let _ = wait_exit(&mut sup.child, Duration::from_secs(5));
    let gone = wait_for(Duration::from_secs(5), || !alive(engine) && !alive(worker));
    let left: Vec<i32> = [engine, worker].into_iter().filter(|&p| alive(p)).collect();
    // Leave nothing behind even when the assertion fails.
    for &p in &left {
        signal(p, libc::SIGKILL);
    }
    assert!(
        gone,
        "still running after the supervisor was killed: {left:?}"
    );
}

/// An engine that answers 401 (it was given an API key some other way) is a configuration
/// error: the attempt ends at once with a message pointing at `--api-key`, and no recipe
/// waits for its startup timeout.
#[test]
fn an_engine_that_answers_401_is_a_configuration_error() {
    let fake = crate::support::fake_engine();
    let script = format!("exec {} \"$@\" --api-key engine-only", fake.display());
    let env = [("FAKE_LOAD_SECS", "0.1".to_string())];
    let mut o = Opts::new(&script);
    o.env = &env;
    o.args = &["--startup-timeout", "120s"];
    let mut sup = start(o);
    let t = Instant::now();
    sup.expect_exit(70, Duration::from_secs(60));
    assert!(t.elapsed() < Duration::from_secs(60));
    let err = sup.stderr();
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("AIM_API_KEY"), "{err}");
}

/// Logs for machines and people: no colour codes when stderr is not a terminal (`docker
/// logs`, a file), and the first line says the version, the public URL, the model, the recipe
/// and the GPUs.
#[test]
fn logs_are_plain_off_a_terminal_and_start_with_a_summary_line() {
    let script = format!(
        "{RECORD}\ntrap 'exit 0' TERM\ntouch \"$FAKE_DIR/ready\"\nwhile :; do sleep 0.02; done"
    );
    let mut sup = start(Opts::new(&script));
    assert!(sup.wait_file("ready", Duration::from_secs(60)));
    sup.stop(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(20));
    let err = sup.stderr();
    assert!(
        !err.contains('\u{1b}'),
        "escape codes in a log file:\n{err}"
    );
    let first = err.lines().next().unwrap_or_default();
    for want in [
        format!("aim-engine {}", env!("CARGO_PKG_VERSION")),
        format!("http://127.0.0.1:{}", sup.port),
        MODEL.to_string(),
        "recipe general/vllm-".to_string(),
        "GPU 0".to_string(),
    ] {
        assert!(
            first.contains(&want),
            "{want:?} not in the first line: {first}"
        );
    }
}
