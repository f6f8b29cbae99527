//! The signals we act on, registered early with tokio so that as PID 1 none is dropped.
//!
//! The kernel drops any signal PID 1 has no handler for (pid_namespaces(7)), so every signal
//! we mean to see gets a handler here, before the engine starts. SIGCHLD belongs to the
//! reaper. Nothing is blocked: tokio's handlers and blocked-signal designs do not mix.

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

/// Registers every signal of `STOP` and `FORWARD` and returns the stream of their events.
/// Must run inside the runtime.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<SigEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
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
        ];
        for (sig, want) in cases {
            assert_eq!(classify(sig), want, "signal {sig}");
        }
    }
}
