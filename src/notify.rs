//! sd_notify for systemd `Type=notify` units (a no-op when NOTIFY_SOCKET is unset).
//!
//! OWNER: container helper. CONTRACT: `Notifier` and its methods are called by `supervise`.

use std::time::Duration;

#[derive(Debug, Default)]
pub struct Notifier {}

impl Notifier {
    /// Reads NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID from our environment.
    pub fn from_env() -> Self {
        Notifier {}
    }
    pub fn ready(&self) {}
    pub fn status(&self, _line: &str) {}
    pub fn extend_timeout(&self, _by: Duration) {}
    pub fn watchdog(&self) {}
    pub fn stopping(&self) {}
    /// Half the watchdog interval systemd asked for, when it asked.
    pub fn watchdog_ping_interval(&self) -> Option<Duration> {
        None
    }
}
