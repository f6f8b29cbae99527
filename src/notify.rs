//! sd_notify for systemd `Type=notify` units (a no-op when NOTIFY_SOCKET is unset).
//!
//! The protocol is one `AF_UNIX`/`SOCK_DGRAM` datagram per message to `$NOTIFY_SOCKET`,
//! holding newline-separated `KEY=VALUE` assignments (sd_notify(3)). A leading `@` in the
//! address means Linux's abstract namespace: the `@` stands for the leading NUL byte and the
//! address length is exact (no trailing NUL). Paths are plain filesystem sockets.
//!
//! The pure part (`parse_env`, `Message::encode`) decides what to send; `Notifier` only owns
//! the socket. Sending never fails the caller: systemd being gone is not a reason to stop
//! serving, so errors are logged (the first one as a warning, the rest at debug level).
//!
//! Only the process systemd started may speak for the unit (`NotifyAccess=main`): when
//! `WATCHDOG_PID` names another process, the variables were inherited from a parent and this
//! notifier stays silent (sd_watchdog_enabled(3) semantics, applied to every message).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variables systemd hands to the main process for this protocol. The
/// supervisor removes them from the engine's environment: they are addressed to us, and an
/// engine that spoke sd_notify itself would be rejected (`NotifyAccess=main`) or, worse,
/// confuse the unit's state.
pub const SYSTEMD_ENV: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket file (`/run/systemd/notify`).
    Path(PathBuf),
    /// An abstract-namespace name, without the leading NUL (`@name` in NOTIFY_SOCKET).
    Abstract(Vec<u8>),
}

/// What the environment asks of us, decided without touching the system.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyConfig {
    /// None: nobody listens (not under systemd, or the variables are not ours).
    pub addr: Option<NotifyAddr>,
    /// The full watchdog interval systemd enforces (WATCHDOG_USEC), when it is on for us.
    pub watchdog: Option<Duration>,
}

/// Reads the three variables' raw values. `problems` lists what was ignored and why, for the
/// caller to log: a bad variable disables that feature, never the process.
pub fn parse_env(
    notify_socket: Option<&OsStr>,
    watchdog_usec: Option<&OsStr>,
    watchdog_pid: Option<&OsStr>,
    our_pid: u32,
    problems: &mut Vec<String>,
) -> NotifyConfig {
    if let Some(pid) = watchdog_pid {
        match pid.to_str().and_then(|s| s.trim().parse::<u32>().ok()) {
            Some(p) if p == our_pid => {}
            Some(p) => {
                problems.push(format!(
                    "WATCHDOG_PID={p} is not our pid {our_pid}: the systemd variables were \
                     inherited from a parent process, so no sd_notify messages are sent"
                ));
                return NotifyConfig::default();
            }
            None => {
                problems.push(format!(
                    "WATCHDOG_PID={:?} is not a process id; sd_notify stays off",
                    pid.to_string_lossy()
                ));
                return NotifyConfig::default();
            }
        }
    }
    let addr = match notify_socket {
        None => None,
        Some(raw) => parse_addr(raw.as_bytes(), problems),
    };
    if addr.is_none() {
        // Without a socket the watchdog cannot be fed, so it is off too.
        return NotifyConfig::default();
    }
    let watchdog = match watchdog_usec {
        None => None,
        Some(raw) => match raw.to_str().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(0) => None,
            Some(usec) => Some(Duration::from_micros(usec)),
            None => {
                problems.push(format!(
                    "WATCHDOG_USEC={:?} is not a number of microseconds; no watchdog pings",
                    raw.to_string_lossy()
                ));
                None
            }
        },
    };
    NotifyConfig { addr, watchdog }
}

fn parse_addr(raw: &[u8], problems: &mut Vec<String>) -> Option<NotifyAddr> {
    match raw.first() {
        None => None,
        Some(b'@') if raw.len() > 1 => Some(NotifyAddr::Abstract(raw[1..].to_vec())),
        Some(b'/') => Some(NotifyAddr::Path(PathBuf::from(OsStr::from_bytes(raw)))),
        Some(_) => {
            // systemd also knows `vsock:` addresses (for VMs); a container or unit never gets one.
            problems.push(format!(
                "NOTIFY_SOCKET={:?} is neither an absolute path nor an @abstract name; \
                 sd_notify stays off",
                String::from_utf8_lossy(raw)
            ));
            None
        }
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Ready,
    Status(&'a str),
    ExtendTimeout(Duration),
    Watchdog,
    Stopping,
}

impl Message<'_> {
    /// The datagram's text. A STATUS line is kept on one line: a newline would start a new
    /// assignment, so status text could otherwise forge `READY=1`.
    pub fn encode(&self) -> String {
        match self {
            Message::Ready => "READY=1".to_owned(),
            Message::Status(line) => {
                let mut s = String::with_capacity(line.len() + 7);
                s.push_str("STATUS=");
                for c in line.chars() {
                    s.push(if c == '\n' || c == '\r' || c == '\0' {
                        ' '
                    } else {
                        c
                    });
                }
                s
            }
            Message::ExtendTimeout(by) => {
                let mut s = String::from("EXTEND_TIMEOUT_USEC=");
                // At least 1 µs: 0 would mean "no extension" to systemd.
                let _ = write!(s, "{}", by.as_micros().max(1));
                s
            }
            Message::Watchdog => "WATCHDOG=1".to_owned(),
            Message::Stopping => "STOPPING=1".to_owned(),
        }
    }
}

/// Sends sd_notify messages for this process; every method is a cheap no-op when systemd did
/// not ask for them.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

#[derive(Debug)]
struct Target {
    addr: NotifyAddr,
    socket: UnixDatagram,
}

impl Notifier {
    /// Reads NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID from our environment.
    pub fn from_env() -> Self {
        let mut problems = Vec::new();
        let cfg = parse_env(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
            &mut problems,
        );
        for p in &problems {
            tracing::warn!("sd_notify: {p}");
        }
        Self::from_config(cfg)
    }

    /// A notifier for an explicit configuration (tests, or a caller that parsed the env).
    pub fn from_config(cfg: NotifyConfig) -> Self {
        let target = match cfg.addr {
            None => None,
            Some(addr) => match UnixDatagram::unbound() {
                Ok(socket) => {
                    // A full receive queue must not stall the supervisor's loop for long;
                    // systemd drains its queue continuously, so this never trips in practice.
                    let _ = socket.set_write_timeout(Some(Duration::from_millis(500)));
                    Some(Target { addr, socket })
                }
                Err(e) => {
                    tracing::warn!(
                        "sd_notify: cannot create a datagram socket ({e}); sd_notify stays off"
                    );
                    None
                }
            },
        };
        let watchdog = target.as_ref().and(cfg.watchdog);
        Notifier {
            target,
            watchdog,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether messages are sent at all.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The model serves: the unit becomes active (sent once per start; repeats are harmless).
    pub fn ready(&self) {
        self.send(&Message::Ready);
    }
    /// A one-line description of the phase, shown by `systemctl status`.
    pub fn status(&self, line: &str) {
        self.send(&Message::Status(line));
    }
    /// Pushes the unit's current start (or stop) timeout out to `by` from now; send again
    /// before it runs out while a model loads.
    pub fn extend_timeout(&self, by: Duration) {
        self.send(&Message::ExtendTimeout(by));
    }
    /// The supervisor's keep-alive. Sent only when systemd enabled the watchdog for us.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&Message::Watchdog);
        }
    }
    pub fn stopping(&self) {
        self.send(&Message::Stopping);
    }
    /// Half the watchdog interval systemd asked for, when it asked.
    pub fn watchdog_ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    fn send(&self, msg: &Message<'_>) {
        let Some(t) = &self.target else { return };
        let text = msg.encode();
        if let Err(e) = send_to(&t.socket, &t.addr, text.as_bytes()) {
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!("sd_notify: sending {text:?} to {:?} failed: {e}", t.addr);
            } else {
                tracing::warn!(
                    "sd_notify: sending {text:?} to {:?} failed: {e} (further failures are logged at debug level)",
                    t.addr
                );
            }
        }
    }
}

fn send_to(socket: &UnixDatagram, addr: &NotifyAddr, data: &[u8]) -> std::io::Result<usize> {
    match addr {
        NotifyAddr::Path(p) => socket.send_to(data, p),
        NotifyAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(data, &a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    /// (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID, want addr, want watchdog µs, want a problem)
    type EnvCase = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<NotifyAddr>,
        Option<u64>,
        bool,
    );

    #[test]
    fn parse_env_table() {
        let us = 4242;
        let path = Some(NotifyAddr::Path(PathBuf::from("/run/systemd/notify")));
        let abs = Some(NotifyAddr::Abstract(
            b"/org/freedesktop/systemd1/notify/123".to_vec(),
        ));
        let cases: Vec<EnvCase> = vec![
            (None, None, None, None, None, false),
            (None, Some("30000000"), None, None, None, false),
            (
                Some("/run/systemd/notify"),
                None,
                None,
                path.clone(),
                None,
                false,
            ),
            (
                Some("/run/systemd/notify"),
                Some("30000000"),
                None,
                path.clone(),
                Some(30_000_000),
                false,
            ),
            (
                Some("/run/systemd/notify"),
                Some("30000000"),
                Some("4242"),
                path.clone(),
                Some(30_000_000),
                false,
            ),
            (
                Some("/run/systemd/notify"),
                Some("0"),
                None,
                path.clone(),
                None,
                false,
            ),
            (
                Some("/run/systemd/notify"),
                Some("soon"),
                None,
                path.clone(),
                None,
                true,
            ),
            (
                Some("/run/systemd/notify"),
                Some("30000000"),
                Some("1"),
                None,
                None,
                true,
            ),
            (
                Some("/run/systemd/notify"),
                None,
                Some("x"),
                None,
                None,
                true,
            ),
            (
                Some("@/org/freedesktop/systemd1/notify/123"),
                Some("2000000"),
                None,
                abs,
                Some(2_000_000),
                false,
            ),
            (Some("@"), None, None, None, None, true),
            (Some(""), Some("1000"), None, None, None, false),
            (Some("vsock:2:1234"), None, None, None, None, true),
            (Some("relative/sock"), None, None, None, None, true),
        ];
        for (sock, usec, pid, want_addr, want_wd, want_problem) in cases {
            let (s, u, p) = (sock.map(os), usec.map(os), pid.map(os));
            let mut problems = Vec::new();
            let cfg = parse_env(s.as_deref(), u.as_deref(), p.as_deref(), us, &mut problems);
            let label = format!("{sock:?} {usec:?} {pid:?}");
            assert_eq!(cfg.addr, want_addr, "{label}");
            assert_eq!(cfg.watchdog, want_wd.map(Duration::from_micros), "{label}");
            assert_eq!(!problems.is_empty(), want_problem, "{label}: {problems:?}");
        }
    }

    #[test]
    fn encode_table() {
        let cases = [
            (Message::Ready, "READY=1"),
            (Message::Stopping, "STOPPING=1"),
            (Message::Watchdog, "WATCHDOG=1"),
            (
                Message::Status("loading Qwen/Qwen3-32B"),
                "STATUS=loading Qwen/Qwen3-32B",
            ),
            (
                Message::Status("two\nlines\rREADY=1"),
                "STATUS=two lines READY=1",
            ),
            (
                Message::ExtendTimeout(Duration::from_secs(90)),
                "EXTEND_TIMEOUT_USEC=90000000",
            ),
            (
                Message::ExtendTimeout(Duration::ZERO),
                "EXTEND_TIMEOUT_USEC=1",
            ),
        ];
        for (m, want) in cases {
            assert_eq!(m.encode(), want);
        }
    }

    /// A bound receiver plus the NOTIFY_SOCKET value that reaches it.
    fn receiver(abstract_ns: bool) -> (UnixDatagram, String, Option<tempfile::TempDir>) {
        if abstract_ns {
            use std::os::linux::net::SocketAddrExt;
            use std::sync::atomic::AtomicU32;
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "aim-engine-notify-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract address");
            let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
            (sock, format!("@{name}"), None)
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("notify.sock");
            let sock = UnixDatagram::bind(&path).expect("bind path");
            (sock, path.to_string_lossy().into_owned(), Some(dir))
        }
    }

    fn recv_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn notifier_for(socket: &str, usec: Option<&str>, pid: Option<u32>) -> Notifier {
        let mut problems = Vec::new();
        let s = os(socket);
        let u = usec.map(os);
        let p = pid.map(|p| os(&p.to_string()));
        let cfg = parse_env(
            Some(&s),
            u.as_deref(),
            p.as_deref(),
            std::process::id(),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        Notifier::from_config(cfg)
    }

    #[test]
    fn sends_every_message_in_order_to_path_and_abstract_sockets() {
        for abstract_ns in [false, true] {
            let (rx, addr, _dir) = receiver(abstract_ns);
            let n = notifier_for(&addr, Some("10000000"), Some(std::process::id()));
            assert!(n.is_enabled());
            assert_eq!(n.watchdog_ping_interval(), Some(Duration::from_secs(5)));
            n.status("loading");
            n.extend_timeout(Duration::from_secs(60));
            n.ready();
            n.watchdog();
            n.stopping();
            assert_eq!(
                recv_all(&rx),
                [
                    "STATUS=loading",
                    "EXTEND_TIMEOUT_USEC=60000000",
                    "READY=1",
                    "WATCHDOG=1",
                    "STOPPING=1"
                ],
                "abstract={abstract_ns}"
            );
        }
    }

    #[test]
    fn no_watchdog_pings_unless_systemd_asked() {
        let (rx, addr, _dir) = receiver(true);
        let n = notifier_for(&addr, None, None);
        assert_eq!(n.watchdog_ping_interval(), None);
        n.watchdog();
        n.ready();
        assert_eq!(recv_all(&rx), ["READY=1"]);
    }

    #[test]
    fn silent_when_the_variables_belong_to_another_process() {
        let (rx, addr, _dir) = receiver(false);
        let mut problems = Vec::new();
        let s = os(&addr);
        let u = os("10000000");
        let p = os(&(std::process::id() + 1).to_string());
        let cfg = parse_env(
            Some(&s),
            Some(&u),
            Some(&p),
            std::process::id(),
            &mut problems,
        );
        let n = Notifier::from_config(cfg);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_ping_interval(), None);
        n.ready();
        n.watchdog();
        n.status("x");
        assert!(recv_all(&rx).is_empty());
    }

    #[test]
    fn a_vanished_socket_does_not_fail_the_caller() {
        let (rx, addr, dir) = receiver(false);
        let n = notifier_for(&addr, Some("1000000"), None);
        drop(rx);
        drop(dir);
        // Every call returns; the failure is only logged.
        n.ready();
        n.watchdog();
        n.stopping();
        assert!(n.is_enabled());
    }

    #[test]
    fn default_is_disabled() {
        let n = Notifier::default();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_ping_interval(), None);
        n.ready();
    }
}
