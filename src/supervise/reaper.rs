//! The one owner of `wait*`: drains `waitpid(-1, WNOHANG)` and hands each status to whoever
//! spawned that pid.
//!
//! Why one owner: a second waiter (tokio::process, std's `Child::wait`) would race a global
//! `waitpid(-1)` and lose statuses (measured: 19–30 % of `Child::wait()` calls got ECHILD while
//! such a reaper ran). Why the lock across spawn: std's
//! `Command::spawn` itself `waitpid()`s the child when exec fails and panics if the status is
//! gone; with the lock held the reaper cannot take it first, and a pid is registered before
//! the reaper can see its exit. Why drain in a loop: SIGCHLD coalesces, so one wakeup may
//! stand for many exits (catatonit#4). A periodic backstop tick covers lost wakeups.

use crate::engine::ExitKind;
use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Decodes a raw `waitpid` status (None for stop/continue reports, which we never ask for).
pub fn decode_status(raw: libc::c_int) -> Option<ExitKind> {
    if libc::WIFEXITED(raw) {
        Some(ExitKind::Code(libc::WEXITSTATUS(raw)))
    } else if libc::WIFSIGNALED(raw) {
        Some(ExitKind::Signal(libc::WTERMSIG(raw)))
    } else {
        None
    }
}

/// The exit status a shell would report for `kind` (128+N for signal N).
pub fn exit_code(kind: ExitKind) -> u8 {
    match kind {
        ExitKind::Code(c) => (c & 0xff) as u8,
        ExitKind::Signal(s) => crate::exit::for_signal(s),
    }
}

/// "exit 3" / "signal 9 (SIGKILL)", for logs and `/status`.
pub fn describe(kind: ExitKind) -> String {
    match kind {
        ExitKind::Code(c) => format!("exit {c}"),
        ExitKind::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
            Ok(sig) => format!("signal {s} ({})", sig.as_str()),
            Err(_) => format!("signal {s}"),
        },
    }
}

#[derive(Default)]
pub struct Reaper {
    /// pid -> the waiter for its status. This mutex is also the spawn lock.
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitKind>>>,
    /// Processes reaped that nobody waited for (adopted orphans).
    orphans: AtomicU64,
}

/// A spawned child: its pid and the one-shot that receives its status from the reaper.
pub struct Spawned {
    pub pid: i32,
    pub child: Child,
    pub exit: oneshot::Receiver<ExitKind>,
}

impl Reaper {
    pub fn new() -> Self {
        Reaper::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitKind>>> {
        // A poisoned map is still a valid map: keep reaping.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` with the reap lock held and registers the pid before releasing it.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok(Spawned {
            pid,
            child,
            exit: rx,
        })
    }

    /// Reaps every child that has exited; returns how many were reaped.
    pub fn reap_all(&self) -> usize {
        let mut waiters = self.lock();
        let mut n = 0;
        loop {
            let mut raw: libc::c_int = 0;
            // SAFETY: plain syscall with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid == 0 {
                break; // children exist, none has exited
            }
            if pid < 0 {
                // EINTR: try again. ECHILD: no children at all. EINVAL cannot happen.
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            n += 1;
            let Some(kind) = decode_status(raw) else {
                continue;
            };
            match waiters.remove(&pid) {
                // The waiter may have given up (dropped); the status is then not needed.
                Some(tx) => {
                    let _ = tx.send(kind);
                }
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid, status = %describe(kind), "reaped an adopted process");
                }
            }
        }
        n
    }

    /// Adopted processes reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }

    /// Registers the SIGCHLD handler (call it before the first spawn, inside the runtime) and
    /// returns the task that drains on every SIGCHLD and once a second (tini's backstop).
    pub fn start(
        self: std::sync::Arc<Self>,
    ) -> io::Result<impl std::future::Future<Output = ()> + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let chld = signal(SignalKind::child())?;
        Ok(self.run(chld))
    }

    async fn run(self: std::sync::Arc<Self>, mut chld: tokio::signal::unix::Signal) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = chld.recv() => {}
                _ = tick.tick() => {}
            }
            self.reap_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding_and_exit_codes() {
        // Raw statuses as the kernel encodes them: code << 8, or the signal number.
        let cases = [
            (0, ExitKind::Code(0), 0u8, "exit 0"),
            (3 << 8, ExitKind::Code(3), 3, "exit 3"),
            (255 << 8, ExitKind::Code(255), 255, "exit 255"),
            (9, ExitKind::Signal(9), 137, "signal 9 (SIGKILL)"),
            (15, ExitKind::Signal(15), 143, "signal 15 (SIGTERM)"),
        ];
        for (raw, kind, code, text) in cases {
            assert_eq!(decode_status(raw), Some(kind), "raw {raw}");
            assert_eq!(exit_code(kind), code);
            assert_eq!(describe(kind), text);
        }
        // A stop report (WIFSTOPPED: 0x7f low byte) is not an end.
        assert_eq!(decode_status((19 << 8) | 0x7f), None);
    }
}
