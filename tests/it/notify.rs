//! Integration tests: sd_notify. `aim-engine serve` supervises the real fake engine
//! (tests/fake-engine, as `AIM_VLLM_COMMAND`) on the MI300X fixture tree while the test plays
//! systemd: it binds the `$NOTIFY_SOCKET` datagram socket (a path, and an `@abstract` name)
//! and reads what arrives.

use crate::support::{AimEngine, Running, fake_engine, free_port};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

const FIXTURE: &str = "mi300x-8gpu-spx";
const MODEL: &str = "Qwen/Qwen3-32B";

/// One `aim-engine serve` under a test notify socket.
struct Run {
    run: Running,
    sock: UnixDatagram,
    /// (arrival time, one assignment) in arrival order.
    got: Vec<(Instant, String)>,
}

enum Addr {
    Path,
    Abstract,
}

impl Run {
    fn start(addr: Addr, extra_env: &[(&str, String)]) -> Run {
        let mut aim = AimEngine::new();
        let dir = aim.dir().to_path_buf();
        let (sock, notify_socket) = match addr {
            Addr::Path => {
                let p = dir.join("notify.sock");
                let s = UnixDatagram::bind(&p).expect("bind the notify socket");
                (s, p.display().to_string())
            }
            Addr::Abstract => {
                let name = format!("aim-engine-it-notify-{}", std::process::id());
                let a = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
                let s = UnixDatagram::bind_addr(&a).expect("bind the abstract notify socket");
                (s, format!("@{name}"))
            }
        };
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let engine_port = free_port();
        aim = aim
            .fixture(FIXTURE)
            .args(["serve", MODEL])
            .public_port()
            .args(["--engine-port", &engine_port.to_string()])
            .env("AIM_VLLM_COMMAND", fake_engine())
            .env("AIM_STOP_TIMEOUT", "5s")
            .offline_hf()
            .env("FAKE_STATE_DIR", &dir)
            .env("FAKE_LOAD_SECS", "0.3")
            .env("NOTIFY_SOCKET", &notify_socket);
        for (k, v) in extra_env {
            aim = aim.env(k, v);
        }
        Run {
            run: aim.spawn(),
            sock,
            got: Vec::new(),
        }
    }

    /// Receives until an assignment equal to `want` arrived (true) or `limit` passed.
    fn recv_until(&mut self, limit: Duration, want: &str) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let at = Instant::now();
                for l in String::from_utf8_lossy(&buf[..n]).lines() {
                    self.got.push((at, l.to_string()));
                }
            }
            if self.got.iter().any(|(_, l)| l == want) {
                return true;
            }
        }
        false
    }

    fn lines(&self) -> Vec<&str> {
        self.got.iter().map(|(_, l)| l.as_str()).collect()
    }

    fn stderr(&self) -> String {
        self.run.stderr()
    }

    fn terminate(&mut self) -> Option<i32> {
        self.run.signal(libc::SIGTERM);
        self.run.wait_code(Duration::from_secs(15))
    }

    /// The running fake engine's environment (its main pid is in FAKE_STATE_DIR/main.pid).
    fn engine_environ(&self) -> Vec<String> {
        let pid = self.run.read("main.pid");
        let raw = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap_or_default();
        raw.split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// The whole systemd conversation with the real fake engine over an abstract socket (how
/// systemd ≥ 254 passes NOTIFY_SOCKET): STATUS= phases and EXTEND_TIMEOUT_USEC= before READY=1,
/// WATCHDOG=1 about every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM, nothing after STOPPING but
/// status lines; and the engine's environment carries none of the systemd variables.
#[test]
fn abstract_socket_gets_ready_status_watchdog_stopping_in_order() {
    let watchdog = Duration::from_millis(400);
    let mut run = Run::start(
        Addr::Abstract,
        &[("WATCHDOG_USEC", watchdog.as_micros().to_string())],
    );
    assert!(
        run.recv_until(Duration::from_secs(30), "READY=1"),
        "no READY=1: {:?}\nstderr:\n{}",
        run.lines(),
        run.stderr()
    );
    let environ = run.engine_environ();
    assert!(
        environ.iter().any(|v| v.starts_with("FAKE_STATE_DIR=")),
        "engine environment not readable: {environ:?}"
    );
    for var in aim_engine::notify::SYSTEMD_ENV {
        assert!(
            !environ.iter().any(|v| v.starts_with(&format!("{var}="))),
            "the engine inherited {var}: {environ:?}"
        );
    }
    // Keep receiving for a few watchdog periods.
    run.recv_until(Duration::from_millis(1300), "never");
    let code = run.terminate();
    assert!(
        run.recv_until(Duration::from_millis(500), "STOPPING=1"),
        "no STOPPING=1: {:?}",
        run.lines()
    );
    assert_eq!(code, Some(0), "a requested stop exits 0; {}", run.stderr());

    let lines = run.lines();
    let pos = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let first_status = pos(&|l| l.starts_with("STATUS=")).expect("a STATUS= line");
    let extend = pos(&|l| l.starts_with("EXTEND_TIMEOUT_USEC=")).expect("EXTEND_TIMEOUT_USEC=");
    let ready = pos(&|l| l == "READY=1").expect("READY=1");
    let stopping = pos(&|l| l == "STOPPING=1").expect("STOPPING=1");
    assert!(
        first_status < ready && extend < ready && ready < stopping,
        "order: {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == "READY=1").count(),
        1,
        "READY=1 exactly once: {lines:?}"
    );
    for l in &lines[stopping + 1..] {
        assert!(
            l.starts_with("STATUS=") || *l == "WATCHDOG=1" || l.starts_with("EXTEND_TIMEOUT_USEC="),
            "after STOPPING=1 came {l:?}: {lines:?}"
        );
    }
    // Every line is a KEY=VALUE assignment systemd understands.
    for l in &lines {
        let key = l.split('=').next().unwrap_or_default();
        assert!(
            [
                "READY",
                "STATUS",
                "EXTEND_TIMEOUT_USEC",
                "WATCHDOG",
                "STOPPING"
            ]
            .contains(&key),
            "unexpected assignment {l:?}"
        );
    }
    // Pings at about half the interval: never further apart than the interval itself (systemd
    // would kill us), and not a flood either.
    let pings: Vec<Instant> = run
        .got
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 4, "watchdog pings: {lines:?}");
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap < watchdog && gap > watchdog / 4,
            "ping gap {gap:?} for WATCHDOG_USEC={watchdog:?}"
        );
    }
}

/// A path socket works the same, and without WATCHDOG_USEC there are no pings.
#[test]
fn path_socket_without_watchdog_gets_no_pings() {
    let mut run = Run::start(Addr::Path, &[]);
    assert!(
        run.recv_until(Duration::from_secs(30), "READY=1"),
        "no READY=1: {:?}\nstderr:\n{}",
        run.lines(),
        run.stderr()
    );
    run.recv_until(Duration::from_millis(300), "never");
    assert_eq!(run.terminate(), Some(0), "{}", run.stderr());
    run.recv_until(Duration::from_millis(300), "STOPPING=1");
    let lines = run.lines();
    assert!(lines.contains(&"STOPPING=1"), "{lines:?}");
    assert!(!lines.contains(&"WATCHDOG=1"), "{lines:?}");
}

/// WATCHDOG_PID naming another process means the variables were inherited (we are not the
/// unit's main process): not a single datagram may be sent.
#[test]
fn foreign_watchdog_pid_silences_every_message() {
    let mut run = Run::start(
        Addr::Path,
        &[
            ("WATCHDOG_USEC", "200000".to_string()),
            ("WATCHDOG_PID", "1".to_string()),
        ],
    );
    // Wait for the engine to serve (its state file), then for the stop.
    let ready = run.run.path("ready");
    let start = Instant::now();
    while !ready.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready.exists(), "the engine never served: {}", run.stderr());
    run.recv_until(Duration::from_millis(500), "never");
    assert_eq!(run.terminate(), Some(0), "{}", run.stderr());
    run.recv_until(Duration::from_millis(200), "never");
    assert!(
        run.got.is_empty(),
        "sent despite WATCHDOG_PID=1: {:?}",
        run.lines()
    );
    assert!(
        run.stderr().contains("WATCHDOG_PID=1"),
        "the reason is logged: {}",
        run.stderr()
    );
}
