//! The public port's part in a multi-node group: the leader hears its workers' reports
//! (`group::roster::REPORT_PATH`) and answers with its own state; a worker refuses the
//! OpenAI API, which only the leader serves.

use super::{Body, Ctx, reply};
use crate::group::Role;
use crate::group::live::Live;
use crate::group::roster::Report;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// The most a report may weigh.
const MAX_REPORT: usize = 4096;

/// `POST /group/report` on the leader: 200 with the leader's `Ack`, 409 when the report is
/// refused (another group's size, a rank that is not a worker's), 400 for a body that is no
/// report, 404 on a node that is no group's leader.
pub async fn report(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let live = match &ctx.shared.group {
        Some(g) if g.role() == Role::Leader => g,
        _ => {
            return reply::error(
                StatusCode::NOT_FOUND,
                "this node is not the leader of a multi-node group: report to the leader (AIM_LEADER_ADDR)",
                "invalid_request_error",
                "not_a_group_leader",
            );
        }
    };
    if req.method() != Method::POST {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "a group report is a POST",
            "invalid_request_error",
            "method_not_allowed",
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REPORT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(&format!("cannot read the report: {e}")),
    };
    let r: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("not a group report: {e}")),
    };
    let shared = &ctx.shared;
    let ready = shared.status.borrow().is_ready();
    match live.hear(&r, shared.now(), ready, shared.stopping.is_cancelled()) {
        Ok(ack) => match serde_json::to_value(&ack) {
            Ok(v) => reply::json(StatusCode::OK, &v),
            Err(e) => bad(&format!("cannot encode the answer: {e}")),
        },
        Err(e) => {
            tracing::warn!(rank = r.rank, "refused a group report: {e}");
            reply::error(
                StatusCode::CONFLICT,
                &e.to_string(),
                "invalid_request_error",
                "group_mismatch",
            )
        }
    }
}

fn bad(msg: &str) -> Response<Body> {
    reply::error(
        StatusCode::BAD_REQUEST,
        msg,
        "invalid_request_error",
        "bad_group_report",
    )
}

/// A worker's answer to anything it would forward: only the leader serves the API.
pub fn worker_refusal(live: &Live) -> Response<Body> {
    reply::error(
        StatusCode::MISDIRECTED_REQUEST,
        &format!(
            "this node is worker rank {} of a group of {}: the API is served by the leader at {}",
            live.group.rank,
            live.group.nnodes,
            live.leader()
        ),
        "invalid_request_error",
        "group_worker",
    )
}
