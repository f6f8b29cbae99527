//! Health, readiness and `/status`, answered from the supervisor's status alone (never by
//! asking the engine, so they stay fast whatever the engine or the proxied traffic does).
//!
//! Meanings: `/health` and `/health/ready` are 200 only when the
//! engine is ready and nothing fatal happened (vLLM's `/health` meaning), and go to 503 as soon
//! as a stop was asked (so load balancers stop sending); `/health/live` is 200 while the
//! supervisor still works on it (load and restarts included) and 503 once it has given up.

use super::Body;
use super::reply;
use crate::shared::Shared;
use crate::status::Status;
use hyper::{Response, StatusCode};

/// Which health question was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/health`, `/health/ready`, `/v1/health/ready`.
    Ready,
    /// `/health/live`, `/v1/health/live`.
    Live,
}

/// The pure decision: is the answer to `probe` "yes" for `status` (with a stop asked or not)?
pub fn verdict(probe: Probe, status: &Status, stopping: bool) -> bool {
    match probe {
        Probe::Ready => status.is_ready() && !stopping,
        Probe::Live => status.is_live(),
    }
}

/// 200 or 503, with a small JSON body naming the phase (handy with `curl`).
pub fn answer(shared: &Shared, probe: Probe) -> Response<Body> {
    let stopping = shared.stopping.is_cancelled();
    let status = shared.status.borrow();
    let ok = verdict(probe, &status, stopping);
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "phase": status.phase.as_str(),
        "stopping": stopping,
    });
    drop(status);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::json(code, &body)
}

/// `/status`: the whole story as JSON (uptime filled in).
pub fn status(shared: &Shared) -> Response<Body> {
    match serde_json::to_vec(&shared.snapshot()) {
        Ok(bytes) => reply::with_type(StatusCode::OK, "application/json", bytes),
        Err(e) => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the status: {e}"),
            "internal_error",
            "status_encoding",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;

    #[test]
    fn verdict_table() {
        // (phase, fatal, stopping, ready?, live?)
        let table: &[(Phase, bool, bool, bool, bool)] = &[
            (Phase::Detecting, false, false, false, true),
            (Phase::Starting, false, false, false, true),
            (Phase::Loading, false, false, false, true),
            (Phase::Validating, false, false, false, true),
            (Phase::Ready, false, false, true, true),
            (Phase::Ready, false, true, false, true),
            (Phase::Ready, true, false, false, false),
            (Phase::Restarting, false, false, false, true),
            (Phase::Draining, false, true, false, true),
            (Phase::Stopped, false, true, false, true),
            (Phase::Failed, true, false, false, false),
            (Phase::Failed, false, false, false, false),
        ];
        for &(phase, fatal, stopping, ready, live) in table {
            let mut s = Status::new("m");
            s.phase = phase;
            s.fatal = fatal.then(|| "gave up".to_string());
            let ctx = format!("{phase} fatal={fatal} stopping={stopping}");
            assert_eq!(verdict(Probe::Ready, &s, stopping), ready, "ready: {ctx}");
            assert_eq!(verdict(Probe::Live, &s, stopping), live, "live: {ctx}");
        }
    }
}
