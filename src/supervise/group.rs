//! A worker's reports to its group's leader (IO): every `Timing::interval` a POST of this
//! node's state to the leader's public port (`group::roster::REPORT_PATH`), and the answer
//! into the worker's `Link`, which the attempt loop judges (`attempt::group`).

use crate::group::live::{Live, Side};
use crate::group::roster::{Ack, MemberState, REPORT_PATH, Report};
use crate::shared::Shared;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// The most an answer may weigh.
const MAX_ANSWER: usize = 16 * 1024;

/// Sends a worker's reports.
#[derive(Clone)]
pub struct Reporter {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: String,
    api_key: Option<String>,
}

/// What one report came back with.
enum Answer {
    Ack(Ack),
    Refused(String),
    Error(String),
}

impl Reporter {
    pub fn new(live: &Live, api_key: Option<String>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        Reporter {
            client: Client::builder(TokioExecutor::new()).build(conn),
            uri: format!("http://{}{REPORT_PATH}", live.leader()),
            api_key,
        }
    }

    /// Reports until the process ends; a no-op on a node that is not a group's worker.
    pub fn spawn(self, shared: Arc<Shared>) {
        let Some(live) = shared.group.as_ref() else {
            return;
        };
        let every = live.timing.interval.max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                self.report_once(&shared, every.max(Duration::from_secs(1)))
                    .await;
            }
        });
    }

    /// One report of this node's state now, its answer taken into the link.
    pub async fn report_once(&self, shared: &Shared, timeout: Duration) {
        let Some(live) = shared.group.as_ref() else {
            return;
        };
        let Side::Worker(link) = &live.side else {
            return;
        };
        let (state, detail) = state_of(shared);
        let joined = link.lock().unwrap_or_else(|p| p.into_inner()).joined();
        let report = Report {
            joined,
            rank: live.group.rank,
            nnodes: live.group.nnodes,
            instance: live.instance.clone(),
            state,
            detail,
        };
        let answer = match tokio::time::timeout(timeout, self.send(&report)).await {
            Ok(a) => a,
            Err(_) => Answer::Error(format!("no answer within {timeout:?}")),
        };
        let now = shared.now();
        let mut link = link.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Answer::Ack(ack) => link.on_ack(&ack, now),
            Answer::Refused(why) => link.on_refused(why),
            Answer::Error(e) => link.on_error(e),
        }
    }

    async fn send(&self, report: &Report) -> Answer {
        let body = match serde_json::to_vec(report) {
            Ok(b) => b,
            Err(e) => return Answer::Error(format!("cannot encode the report: {e}")),
        };
        let mut b =
            hyper::Request::post(&self.uri).header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(k) = &self.api_key {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match b.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Answer::Error(format!("{}: {e}", self.uri)),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Answer::Error(root_cause(&e)),
        };
        let status = resp.status().as_u16();
        let body = match http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return Answer::Error(format!("HTTP {status}, body unreadable: {e}")),
        };
        answer_of(status, &body)
    }
}

/// The answer a status and body make (pure).
fn answer_of(status: u16, body: &[u8]) -> Answer {
    let message = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
    };
    match status {
        200 => match serde_json::from_slice::<Ack>(body) {
            Ok(a) => Answer::Ack(a),
            Err(e) => Answer::Error(format!("the leader's answer is not an ack: {e}")),
        },
        409 => Answer::Refused(message()),
        401 | 403 => Answer::Refused(format!(
            "it refused this node's API key (HTTP {status}): give every node the same --api-key / AIM_API_KEY"
        )),
        // A leader without a group: it was started without AIM_NNODES / LWS_GROUP_SIZE.
        404 => Answer::Refused(format!("it is not a group's leader ({})", message())),
        _ => Answer::Error(format!("HTTP {status}: {}", message())),
    }
}

/// This node's state, as its reports say it.
fn state_of(shared: &Shared) -> (MemberState, Option<String>) {
    let s = shared.status.borrow();
    if let Some(f) = &s.fatal {
        return (
            MemberState::Failed,
            Some(f.lines().next().unwrap_or("").to_string()),
        );
    }
    if shared.stopping.is_cancelled() {
        return (MemberState::Stopping, None);
    }
    match s.engine_pid {
        Some(_) => (MemberState::Running, None),
        None if s.failures.is_empty() => (MemberState::Starting, None),
        // Between the end of a failed attempt and the end of the run.
        None => (
            MemberState::Failed,
            s.failures
                .last()
                .map(|f| format!("{} ({})", f.exit, f.class)),
        ),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_leader() {
        let ok = br#"{"instance":"L","group":"forming","ready":false}"#;
        assert!(matches!(answer_of(200, ok), Answer::Ack(a) if a.instance == "L"));
        assert!(matches!(answer_of(200, b"{}"), Answer::Error(e) if e.contains("not an ack")));
        let refused = br#"{"error":{"message":"node rank 1 reports a group of 3 nodes"}}"#;
        assert!(matches!(answer_of(409, refused), Answer::Refused(m) if m.contains("group of 3")));
        assert!(matches!(answer_of(401, b""), Answer::Refused(m) if m.contains("--api-key")));
        assert!(
            matches!(answer_of(404, b"x"), Answer::Refused(m) if m.contains("not a group's leader"))
        );
        assert!(matches!(answer_of(503, b"busy"), Answer::Error(m) if m.contains("503")));
    }
}
