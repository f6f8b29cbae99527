//! Chaos test (issue 7's fault campaign): random sequences of engine faults against the real
//! binary as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`).
//!
//! Each run draws a sequence of attempts from a fixed-seed generator (the seed is printed, so
//! a failure reproduces with `AIM_CHAOS_SEED=<seed> AIM_CHAOS_RUNS=1`): crashes at start with
//! each failure text of the classification table, a crash right after ready, a clean exit 0
//! after ready (vLLM's engine death), a hang (the test SIGSTOPs the ready engine), a slow
//! start, and modifiers (workers that ignore SIGTERM, setsid workers, orphans that linger or
//! turn into zombies at once). A wrapper script picks attempt N's faults from a file.
//!
//! The expected end comes from the policy table (`supervise::machine::Policy`, itself tested
//! as a table) fed with the failure class this test expects for each fault (its own table,
//! not the classifier's). Checked for every run:
//! * the exit status (0 after SIGTERM when the run ends ready, 70 gave up, 66 model
//!   unavailable);
//! * every `/status` seen while the run goes on tells the true story: its `failures` are a
//!   prefix of the expected (class, action) list, `attempt` never exceeds the expected count,
//!   and once ready `attempt`, `restarts` and the failures are complete;
//! * once ready: no zombie in the namespace, and no process left from earlier attempts (every
//!   process is PID 1, the current engine's tree, or the current attempt's lingering orphans).
//!
//! Runs only with AIM_TEST_PRIVILEGED=1. AIM_CHAOS_RUNS (default 6) sets the number of runs.

use crate::support::{AimEngine, fake_engine, free_port};
use aim_engine::supervise::backoff::Backoff;
use aim_engine::supervise::machine::{Decision, Failure, Policy, PolicyConfig};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FIXTURE_NAME: &str = "mi300x-8gpu-spx";
const MODEL: &str = "aim-test/Tiny-7B";
const RESTART_BUDGET: u32 = 3;

/// Start failures: (text, exit code, class the supervisor must report).
const START_FAILURES: &[(&str, i32, &str)] = &[
    (
        "RuntimeError: Engine core initialization failed. See root cause above.",
        1,
        "unknown",
    ),
    (
        "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 12.95 GiB.",
        1,
        "oom",
    ),
    (
        "ValueError: No available memory for the cache blocks. Try increasing gpu_memory_utilization.",
        1,
        "kv_cache",
    ),
    (
        "AssertionError: 64 attention heads must be divisible by tensor parallel size 3",
        1,
        "tp_invalid",
    ),
    (
        "vllm serve: error: unrecognized arguments: --foo",
        2,
        "bad_args",
    ),
    (
        "ValueError: Bfloat16 is only supported on GPUs with compute capability",
        1,
        "dtype_or_quant",
    ),
    (
        "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found for url",
        1,
        "model_not_found",
    ),
    (
        "OSError: [Errno 98] Address already in use",
        1,
        "port_in_use",
    ),
    (
        "ValueError: User-specified max_model_len (131072) is greater than the derived max_model_len (max_position_embeddings=40960 or model_max_length=None in model's config.json).",
        1,
        "max_model_len",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Index into START_FAILURES.
    StartFail(usize),
    /// Crashes ~50 ms after the supervisor's test inference (exit 1).
    CrashAfterReady,
    /// vLLM's engine death: clean shutdown, exit 0, after ready.
    Exit0AfterReady,
    /// Stops answering once ready (the test SIGSTOPs it).
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Mods {
    workers_ignore_term: bool,
    workers_setsid: bool,
    /// Orphans per start, and whether they linger (else they are zombies at once).
    orphans: u32,
    orphans_linger: bool,
    slow_start: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    faults: Vec<(Fault, Mods)>,
    /// Modifiers of the final, healthy attempt.
    last: Mods,
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn draw_mods(rng: &mut Rng) -> Mods {
    Mods {
        workers_ignore_term: rng.chance(30),
        workers_setsid: rng.chance(15),
        orphans: if rng.chance(40) {
            1 + rng.below(3) as u32
        } else {
            0
        },
        orphans_linger: rng.chance(50),
        slow_start: rng.chance(15),
    }
}

fn draw(rng: &mut Rng) -> Scenario {
    let n = rng.below(5) as usize;
    let faults = (0..n)
        .map(|_| {
            let f = match rng.below(10) {
                0..=4 => Fault::StartFail(rng.below(START_FAILURES.len() as u64) as usize),
                5 | 6 => Fault::CrashAfterReady,
                7 => Fault::Exit0AfterReady,
                _ => Fault::Hang,
            };
            (f, draw_mods(rng))
        })
        .collect();
    Scenario {
        faults,
        last: draw_mods(rng),
    }
}

/// How a run must end.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    /// (class or None when any class will do, action) per failed attempt.
    failures: Vec<(Option<&'static str>, &'static str)>,
    /// Ends ready (then the test stops it), or with this exit status on its own.
    end: End,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Ready,
    Exit(i32),
}

fn class_of(f: Fault) -> Option<&'static str> {
    match f {
        Fault::StartFail(i) => Some(START_FAILURES[i].2),
        Fault::Hang => Some("hung"),
        // A crash right after ready: whatever the classifier makes of the tail, the policy
        // treats a crash after ready as a restart.
        Fault::CrashAfterReady | Fault::Exit0AfterReady => None,
    }
}

fn failure_of(f: Fault) -> (Failure, bool) {
    use aim_engine::engine::FailureClass as C;
    let class = match f {
        Fault::StartFail(i) => match START_FAILURES[i].2 {
            "oom" => C::Oom,
            "kv_cache" => C::KvCache,
            "tp_invalid" => C::TpInvalid,
            "bad_args" => C::BadArgs,
            "dtype_or_quant" => C::DtypeOrQuant,
            "model_not_found" => C::ModelNotFound,
            "port_in_use" => C::PortInUse,
            "max_model_len" => C::MaxModelLen,
            _ => C::Unknown,
        },
        Fault::Hang => return (Failure::Hung, true),
        Fault::CrashAfterReady | Fault::Exit0AfterReady => C::Unknown,
    };
    let suggested = (class == C::MaxModelLen).then_some(40960);
    (
        Failure::Exited {
            class,
            suggested_max_model_len: suggested,
        },
        !matches!(f, Fault::StartFail(_)),
    )
}

fn expect(s: &Scenario, launches: usize) -> Expected {
    let cfg = PolicyConfig {
        backoff: Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        },
        restart_budget: RESTART_BUDGET,
        restart_window: Duration::from_secs(600),
        max_port_retries: 5,
    };
    let mut policy = Policy::new(cfg, vec!["engine".into(); launches]);
    let mut failures = Vec::new();
    for (f, _) in &s.faults {
        let (failure, was_ready) = failure_of(*f);
        let d = policy.on_failure(failure, was_ready, Duration::ZERO);
        failures.push((class_of(*f), d.action_str()));
        let code = match d {
            Decision::GiveUp => Some(70),
            Decision::ModelUnavailable => Some(66),
            Decision::LauncherMissing => Some(127),
            _ => None,
        };
        if let Some(c) = code {
            return Expected {
                failures,
                end: End::Exit(c),
            };
        }
    }
    Expected {
        failures,
        end: End::Ready,
    }
}

fn env_lines(f: Option<Fault>, m: &Mods, state: &Path) -> String {
    let mut v: Vec<(String, String)> = vec![
        ("FAKE_STATE_DIR".into(), state.display().to_string()),
        (
            "FAKE_LOAD_SECS".into(),
            if m.slow_start { "1.0" } else { "0.05" }.into(),
        ),
        ("FAKE_MAX_LIFETIME_SECS".into(), "60".into()),
    ];
    if m.workers_ignore_term || m.workers_setsid {
        v.push(("FAKE_WORKERS".into(), "2".into()));
    }
    if m.workers_ignore_term {
        v.push(("FAKE_WORKERS_IGNORE_TERM".into(), "1".into()));
    }
    if m.workers_setsid {
        v.push(("FAKE_WORKERS_SETSID".into(), "1".into()));
    }
    if m.orphans > 0 {
        v.push(("FAKE_ORPHANS".into(), m.orphans.to_string()));
        let linger = if m.orphans_linger { "30" } else { "0" };
        v.push(("FAKE_ORPHAN_LINGER_SECS".into(), linger.into()));
    }
    match f {
        Some(Fault::StartFail(i)) => {
            v.push(("FAKE_FAIL_AT_START".into(), START_FAILURES[i].0.into()));
            v.push((
                "FAKE_FAIL_EXIT_CODE".into(),
                START_FAILURES[i].1.to_string(),
            ));
            v.push(("FAKE_FAIL_DELAY_SECS".into(), "0.05".into()));
        }
        Some(Fault::CrashAfterReady) => {
            v.push(("FAKE_CRASH_AFTER_REQUESTS".into(), "1".into()));
        }
        Some(Fault::Exit0AfterReady) => {
            v.push(("FAKE_CRASH_AFTER_REQUESTS".into(), "1".into()));
            v.push(("FAKE_EXIT0_ENGINE_DEATH".into(), "1".into()));
        }
        Some(Fault::Hang) | None => {}
    }
    v.iter()
        .map(|(k, val)| format!("{k}='{}'\n", val.replace('\'', "'\\''")))
        .collect::<String>()
}

const WRAPPER: &str = r#"#!/bin/sh
# Chaos wrapper: attempt N runs the fake engine with attempt-N.env (or last.env).
if [ "$1" = "--version" ]; then exec "$FAKE_CHAOS_BIN" "$@"; fi
n=$(cat "$FAKE_CHAOS_DIR/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$FAKE_CHAOS_DIR/count"
f="$FAKE_CHAOS_DIR/attempt-$n.env"
[ -f "$f" ] || f="$FAKE_CHAOS_DIR/last.env"
set -a
. "$f"
set +a
exec "$FAKE_CHAOS_BIN" "$@"
"#;

/// GET /status on loopback; None when nothing answers.
fn get_status(port: u16) -> Option<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// A process of the namespace: (host pid, ns pid, ns ppid... as host ppid, state).
#[derive(Debug, Clone)]
struct NsProc {
    host_pid: i32,
    ns_pid: i32,
    host_ppid: i32,
    state: char,
    /// Shown in failure messages.
    #[allow(dead_code)]
    name: String,
}

fn ns_procs(ns: &Path) -> Vec<NsProc> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_deref() != Some(ns) {
            continue;
        }
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        out.push(NsProc {
            host_pid: pid,
            ns_pid: field("NSpid:")
                .split_whitespace()
                .last()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            host_ppid: field("PPid:").parse().unwrap_or(0),
            state: field("State:").chars().next().unwrap_or('?'),
            name: field("Name:"),
        });
    }
    out
}

fn read_pids(dir: &Path) -> HashSet<i32> {
    let mut out = HashSet::new();
    if let Ok(d) = fs::read_dir(dir) {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pid")
                && !name.starts_with("vram")
                && let Some(p) = fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            {
                out.insert(p);
            }
        }
    }
    out
}

/// Checks the namespace once the run is ready: no zombie, nothing left of earlier attempts.
fn check_tree(
    ns: &Path,
    sup_host_pid: i32,
    engine_ns_pid: i32,
    state: &Path,
) -> Result<(), String> {
    let allowed_orphans = read_pids(state);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let procs = ns_procs(ns);
        let engine_host = procs
            .iter()
            .find(|p| p.ns_pid == engine_ns_pid)
            .map(|p| p.host_pid);
        // Descendants of the engine (host pids), following parent links.
        let mut tree: HashSet<i32> = engine_host.into_iter().collect();
        loop {
            let before = tree.len();
            for p in &procs {
                if tree.contains(&p.host_ppid) {
                    tree.insert(p.host_pid);
                }
            }
            if tree.len() == before {
                break;
            }
        }
        let bad: Vec<&NsProc> = procs
            .iter()
            .filter(|p| {
                p.state == 'Z'
                    || !(p.host_pid == sup_host_pid
                        || tree.contains(&p.host_pid)
                        || allowed_orphans.contains(&p.ns_pid))
            })
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "zombies or leftovers in the namespace (engine ns pid {engine_ns_pid}): {bad:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn plan_launches() -> usize {
    let v = AimEngine::new()
        .fixture(FIXTURE_NAME)
        .args(["plan", MODEL, "--format", "json"])
        .offline_hf()
        .output()
        .json();
    // The chosen recipe plus its fallback chain.
    1 + v["fallbacks"].as_array().map_or(0, Vec::len)
}

fn run_one(seed: u64, s: &Scenario, launches: usize) -> Result<String, String> {
    let want = expect(s, launches);
    let aim = AimEngine::new();
    let dir = aim.dir().to_path_buf();
    let d = dir.as_path();
    let wrapper = d.join("engine.sh");
    fs::write(&wrapper, WRAPPER).map_err(|e| e.to_string())?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    for (i, (f, m)) in s.faults.iter().enumerate() {
        let state = d.join(format!("state-{}", i + 1));
        fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        fs::write(
            d.join(format!("attempt-{}.env", i + 1)),
            env_lines(Some(*f), m, &state),
        )
        .map_err(|e| e.to_string())?;
    }
    let last_state = d.join("state-last");
    fs::create_dir_all(&last_state).map_err(|e| e.to_string())?;
    fs::write(d.join("last.env"), env_lines(None, &s.last, &last_state))
        .map_err(|e| e.to_string())?;

    let mut run = aim
        .pid1()
        .fixture(FIXTURE_NAME)
        .arg(MODEL)
        .public_port()
        .args(["--engine-port", &free_port().to_string()])
        .args(["--backoff-initial", "0s", "--backoff-max", "0s"])
        .args(["--restart-budget", &RESTART_BUDGET.to_string()])
        .args(["--liveness-interval", "0.1s", "--liveness-timeout", "0.2s"])
        .args(["--liveness-failures", "2", "--stop-timeout", "5s"])
        .args(["--startup-timeout", "20s", "--vram-wait-timeout", "0.1s"])
        .env("AIM_VLLM_COMMAND", &wrapper)
        .env("AIM_SGLANG_COMMAND", &wrapper)
        .env("FAKE_CHAOS_BIN", fake_engine())
        .env("FAKE_CHAOS_DIR", d)
        .offline_hf()
        .env("AIM_LOG_LEVEL", "info")
        .spawn();
    let (port, sup) = (run.port, run.pid);
    let logs = || fs::read_to_string(d.join("err.log")).unwrap_or_default();
    let started = Instant::now();
    let ns = fs::read_link(format!("/proc/{sup}/ns/pid")).map_err(|e| e.to_string())?;

    // Poll /status; every snapshot must be consistent with the expected story. Hangs are
    // injected from here: SIGSTOP the engine once attempt N (a Hang) is ready.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let last_ready: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
    let poller = {
        let (violations, done, last_ready, want) = (
            violations.clone(),
            done.clone(),
            last_ready.clone(),
            want.clone(),
        );
        let ns = ns.clone();
        let hang_attempts: HashSet<u64> = s
            .faults
            .iter()
            .enumerate()
            .filter(|(_, (f, _))| *f == Fault::Hang)
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let total_attempts = want.failures.len() as u64 + u64::from(want.end == End::Ready);
        std::thread::spawn(move || {
            let mut stopped = HashSet::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(st) = get_status(port) {
                    let attempt = st["attempt"].as_u64().unwrap_or(0);
                    let fails = st["failures"].as_array().cloned().unwrap_or_default();
                    let mut v = violations.lock().expect("lock");
                    if attempt > total_attempts {
                        v.push(format!(
                            "attempt {attempt} > expected {total_attempts}: {st}"
                        ));
                    }
                    for (i, f) in fails.iter().enumerate() {
                        match want.failures.get(i) {
                            Some((class, action)) => {
                                if class.is_some_and(|c| f["class"] != c) || f["action"] != *action
                                {
                                    v.push(format!(
                                        "failure {} is {}/{}, expected {:?}/{}",
                                        i + 1,
                                        f["class"],
                                        f["action"],
                                        class,
                                        action
                                    ));
                                }
                            }
                            None => v.push(format!("unexpected failure {}: {f}", i + 1)),
                        }
                    }
                    drop(v);
                    if st["phase"] == "ready" {
                        if hang_attempts.contains(&attempt) && stopped.insert(attempt) {
                            if let Some(pid) = st["engine_pid"].as_i64() {
                                // The engine pid is the namespace's; find the host pid.
                                if let Some(p) =
                                    ns_procs(&ns).iter().find(|p| p.ns_pid == pid as i32)
                                {
                                    // SAFETY: plain syscall on a pid of our test namespace.
                                    unsafe { libc::kill(p.host_pid, libc::SIGSTOP) };
                                }
                            }
                        } else if attempt == total_attempts {
                            *last_ready.lock().expect("lock") = Some(st);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };

    let limit = Duration::from_secs(30 + 5 * s.faults.len() as u64);
    let mut result: Result<(), String> = Ok(());
    let code;
    if want.end == End::Ready {
        // Wait for the final ready, check the tree, then stop with SIGTERM.
        let t0 = Instant::now();
        let mut ready = None;
        while t0.elapsed() < limit {
            if let Some(st) = last_ready.lock().expect("lock").clone() {
                ready = Some(st);
                break;
            }
            if let Ok(Some(st)) = run.child.try_wait() {
                result = Err(format!("exited with {st} before the final ready"));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match ready {
            Some(st) => {
                let n = want.failures.len() as u64;
                if st["attempt"] != n + 1 || st["restarts"] != n {
                    result = Err(format!(
                        "ready status: attempt/restarts wrong, expected {}/{}: {st}",
                        n + 1,
                        n
                    ));
                } else if st["failures"].as_array().map_or(0, Vec::len) as u64 != n {
                    result = Err(format!(
                        "ready status lists the wrong number of failures: {st}"
                    ));
                }
                let eng = st["engine_pid"].as_i64().unwrap_or(0) as i32;
                if let Err(e) = check_tree(&ns, sup, eng, &last_state) {
                    result = result.and(Err(e));
                }
            }
            None if result.is_ok() => result = Err("never became ready".into()),
            None => {}
        }
        // SAFETY: plain syscall.
        unsafe { libc::kill(sup, libc::SIGTERM) };
        code = run.wait_code(Duration::from_secs(10));
        if result.is_ok() && code != Some(0) {
            result = Err(format!("exit status {code:?} after SIGTERM, expected 0"));
        }
    } else {
        code = run.wait_code(limit);
        let End::Exit(want_code) = want.end else {
            unreachable!()
        };
        if code != Some(want_code) {
            result = Err(format!("exit status {code:?}, expected {want_code}"));
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = poller.join();
    drop(run);
    let v = violations.lock().expect("lock").clone();
    if let (Ok(()), Some(first)) = (&result, v.first()) {
        result = Err(format!("/status told another story: {first}"));
    }
    match result {
        Ok(()) => Ok(format!("ok in {:.1}s", started.elapsed().as_secs_f64())),
        Err(e) => Err(format!(
            "seed {seed}: {e}\nscenario: {s:?}\nexpected: {want:?}\nsupervisor log:\n{}",
            logs()
        )),
    }
}

#[test]
fn chaos_random_fault_sequences_as_pid1() {
    if !crate::support::privileged_or_skip(
        "chaos_random_fault_sequences_as_pid1",
        "root and PID namespaces",
    ) {
        return;
    }
    let runs: u64 = std::env::var("AIM_CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let base: u64 = std::env::var("AIM_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00A1_3E61_0E5E_ED07);
    let launches = plan_launches();
    eprintln!("chaos: {runs} run(s) from seed {base}, {launches} launch(es) in the plan");
    let mut failed = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..runs {
        let seed = base.wrapping_add(i);
        // splitmix64 of the seed, so neighbouring seeds draw unrelated scenarios.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut rng = Rng((z ^ (z >> 31)) | 1);
        let s = draw(&mut rng);
        for (f, _) in &s.faults {
            let key = match f {
                Fault::StartFail(j) => format!("start:{}", START_FAILURES[*j].2),
                other => format!("{other:?}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        match run_one(seed, &s, launches) {
            Ok(msg) => eprintln!("chaos seed {seed}: {} fault(s): {msg}", s.faults.len()),
            Err(e) => {
                eprintln!("chaos FAILED {e}");
                failed.push(seed);
            }
        }
    }
    eprintln!("chaos: faults injected: {counts:?}");
    assert!(
        failed.is_empty(),
        "chaos runs failed for seeds {failed:?} (see above)"
    );
}
