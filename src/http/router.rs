//! Picks the answer for a request: our own endpoints by exact path (a plain `match`, no
//! framework), the API key on `/v1/*`, everything else to the proxy. Routing, the key check
//! and the proxy all use the one normal form of the target (`target`).

use super::health::{self, Probe};
use super::target::{self, Target};
use super::{Body, Ctx, auth, group, proxy, reply, scrape};
use hyper::body::Incoming;
use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// What a path is answered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health(Probe),
    Status,
    Metrics,
    /// A worker's report to the group's leader.
    GroupReport,
    Forward,
}

/// The pure routing table.
pub fn route(path: &str) -> Route {
    match path {
        "/health" | "/health/ready" | "/v1/health/ready" => Route::Health(Probe::Ready),
        "/health/live" | "/v1/health/live" => Route::Health(Probe::Live),
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        crate::group::roster::REPORT_PATH => Route::GroupReport,
        _ => Route::Forward,
    }
}

/// Answers one request; never fails (errors become HTTP answers).
pub async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let normal = match target::parse(req.method(), req.uri()) {
        Ok(Target::Origin(n)) => n,
        Ok(Target::ServerOptions) => return server_options(),
        Err(e) => return bad_target(e),
    };
    let route = route(&normal.path);
    let own_get = !matches!(route, Route::Forward | Route::GroupReport);
    if own_get && !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} only answers GET and HEAD", normal.path),
            "invalid_request_error",
            "method_not_allowed",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match route {
        Route::Health(probe) => health::answer(&ctx.shared, probe),
        Route::Status => health::status(&ctx.shared),
        Route::Metrics => scrape::answer(&ctx).await,
        Route::GroupReport | Route::Forward => {
            if let Some(key) = &ctx.api_key
                && (auth::protected(&normal.path) || route == Route::GroupReport)
                && !key.accepts(req.headers())
            {
                return reply::error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API key: send `Authorization: Bearer <key>`",
                    "invalid_request_error",
                    "invalid_api_key",
                );
            }
            if route == Route::GroupReport {
                return group::report(&ctx, req).await;
            }
            if let Some(live) = worker_group(&ctx) {
                return group::worker_refusal(live);
            }
            proxy::forward(&ctx, req, normal.forward, peer).await
        }
    }
}

/// The group this node serves as a worker of (its API is refused with 421), if any.
pub fn worker_group(ctx: &Ctx) -> Option<&crate::group::live::Live> {
    ctx.shared
        .group
        .as_ref()
        .filter(|g| g.role() == crate::group::Role::Worker)
}

/// Answers a request on a reserved connection (the caps were reached): health, `/status` and
/// a group worker's report as usual (a flood of clients must not cut a group apart), anything
/// else 503 `over_capacity`.
pub async fn handle_reserved(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let route = match target::parse(req.method(), req.uri()) {
        Ok(Target::Origin(n)) => route(&n.path),
        Ok(Target::ServerOptions) => return server_options(),
        Err(e) => return bad_target(e),
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    match route {
        Route::Health(probe) if read_only => health::answer(&ctx.shared, probe),
        Route::Status if read_only => health::status(&ctx.shared),
        Route::GroupReport
            if ctx
                .api_key
                .as_ref()
                .is_none_or(|key| key.accepts(req.headers())) =>
        {
            group::report(ctx, req).await
        }
        _ => reply::unavailable(
            "too many connections to the public port",
            "over_capacity",
            Some(1),
        ),
    }
}

/// The answer to `OPTIONS *` (a question about the server, never forwarded).
fn server_options() -> Response<Body> {
    let mut r = Response::new(reply::full(""));
    r.headers_mut().insert(
        ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    r
}

/// 400 for a target we do not forward (see `target`).
fn bad_target(e: target::TargetError) -> Response<Body> {
    reply::error(
        StatusCode::BAD_REQUEST,
        &format!("bad request target: {e}"),
        "invalid_request_error",
        "bad_target",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        for (path, want) in [
            ("/health", Route::Health(Probe::Ready)),
            ("/health/ready", Route::Health(Probe::Ready)),
            ("/v1/health/ready", Route::Health(Probe::Ready)),
            ("/health/live", Route::Health(Probe::Live)),
            ("/v1/health/live", Route::Health(Probe::Live)),
            ("/status", Route::Status),
            ("/metrics", Route::Metrics),
            ("/group/report", Route::GroupReport),
            ("/v1/completions", Route::Forward),
            ("/v1/models", Route::Forward),
            ("/version", Route::Forward),
            ("/health/", Route::Forward),
            ("/metrics/x", Route::Forward),
        ] {
            assert_eq!(route(path), want, "{path}");
        }
    }
}
