//! The signals we act on, registered early with tokio so that as PID 1 none is dropped.
//!
//! The kernel drops any signal PID 1 has no handler for (pid_namespaces(7)), so every signal
//! we mean to see gets a handler here, before the engine starts. SIGCHLD belongs to the
//! reaper. Nothing is blocked: tokio's handlers and blocked-signal designs do not mix.
//!
//! Signals we do not act on but whose default action would end us (`IGNORED`: SIGALRM,
//! SIGVTALRM, SIGPROF, SIGIO, SIGXCPU, SIGXFSZ, SIGPWR, SIGSTKFLT and the real-time signals)
//! get a handler that only logs them. As PID 1 the kernel would drop them anyway; not as PID 1
//! (systemd, `docker run --init`, a shared-PID pod) their default action would kill us and
//! leave the engine serving without a supervisor. SIGKILL and SIGSTOP cannot be handled; the
//! synchronous faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT) must keep
//! their default. The engine's tree is stopped when we die anyway (see `spawn`).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// What a received signal asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigEvent {
    /// SIGTERM, SIGINT, SIGQUIT: graceful stop (a second one during the stop: kill at once).
    Stop(i32),
    /// SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH: passed to the engine's main process.
    Forward(i32),
}

pub const STOP: &[i32] = &[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];
pub const FORWARD: &[i32] = &[libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

/// Signals that only get logged (see the module docs); the real-time ones are added by
/// `ignored`.
pub const IGNORED: &[i32] = &[
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGPWR,
    libc::SIGSTKFLT,
];

/// Every signal that is only logged: `IGNORED` and SIGRTMIN..=SIGRTMAX (glibc keeps the
/// first two real-time signals for itself; SIGRTMIN is the first one left to programs).
pub fn ignored() -> Vec<i32> {
    let mut v = IGNORED.to_vec();
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v
}

/// Runs `spawn` (which starts helper threads) with every signal blocked in the calling
/// thread; threads inherit the mask, so the helpers never take a process signal and the kernel
/// delivers those to the runtime's thread. Our helper threads (log copiers) have 64 KiB stacks,
/// and a burst of different signals nests one handler frame per signal, each with the CPU's
/// saved register state, on the stack of the thread that takes them: enough to overflow a small
/// stack (SIGSEGV). Signals that arrive meanwhile stay pending and are delivered on restore.
pub fn with_all_blocked<T>(spawn: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset on a local set; pthread_sigmask changes this thread only, and the
    // old mask is restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// What `sig` means (pure).
pub fn classify(sig: i32) -> Option<SigEvent> {
    if STOP.contains(&sig) {
        Some(SigEvent::Stop(sig))
    } else if FORWARD.contains(&sig) {
        Some(SigEvent::Forward(sig))
    } else {
        None
    }
}

/// Registers every signal of `STOP` and `FORWARD` and returns the stream of their events,
/// and a logging handler for every signal of `ignored()`. Must run inside the runtime.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<SigEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for sig in ignored() {
        let mut stream = signal(SignalKind::from_raw(sig))?;
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                tracing::info!(
                    signal = sig,
                    "signal ignored (it asks nothing of the supervisor)"
                );
            }
        });
    }
    for &sig in STOP.iter().chain(FORWARD) {
        let mut stream = signal(SignalKind::from_raw(sig))?;
        let Some(ev) = classify(sig) else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_signals_cover_every_default_fatal_one_we_can_handle() {
        let all = ignored();
        for sig in [
            libc::SIGALRM,
            libc::SIGPWR,
            libc::SIGSTKFLT,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(all.contains(&sig), "{sig}");
        }
        for sig in STOP.iter().chain(FORWARD) {
            assert!(!all.contains(sig), "{sig} has a role");
        }
        for sig in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGCHLD] {
            assert!(!all.contains(&sig), "{sig}");
        }
    }

    #[test]
    fn signal_roles() {
        let cases = [
            (libc::SIGTERM, Some(SigEvent::Stop(libc::SIGTERM))),
            (libc::SIGINT, Some(SigEvent::Stop(libc::SIGINT))),
            (libc::SIGQUIT, Some(SigEvent::Stop(libc::SIGQUIT))),
            (libc::SIGHUP, Some(SigEvent::Forward(libc::SIGHUP))),
            (libc::SIGUSR1, Some(SigEvent::Forward(libc::SIGUSR1))),
            (libc::SIGUSR2, Some(SigEvent::Forward(libc::SIGUSR2))),
            (libc::SIGWINCH, Some(SigEvent::Forward(libc::SIGWINCH))),
            (libc::SIGCHLD, None),
            (libc::SIGTSTP, None),
            (libc::SIGPIPE, None),
            (libc::SIGALRM, None),
        ];
        for (sig, want) in cases {
            assert_eq!(classify(sig), want, "signal {sig}");
        }
    }
}
