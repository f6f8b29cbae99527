//! Picks the answer for a request: our own endpoints by exact path (a plain `match`, no
//! framework), the API key on `/v1/*`, everything else to the proxy.

use super::health::{self, Probe};
use super::{Body, Ctx, auth, proxy, reply, scrape};
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
    Forward,
}

/// The pure routing table.
pub fn route(path: &str) -> Route {
    match path {
        "/health" | "/health/ready" | "/v1/health/ready" => Route::Health(Probe::Ready),
        "/health/live" | "/v1/health/live" => Route::Health(Probe::Live),
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => Route::Forward,
    }
}

/// Answers one request; never fails (errors become HTTP answers).
pub async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let route = route(req.uri().path());
    if route != Route::Forward && !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} only answers GET and HEAD", req.uri().path()),
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
        Route::Forward => {
            if let Some(key) = &ctx.api_key
                && auth::protected(req.uri().path())
                && !key.accepts(req.headers())
            {
                return reply::error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API key: send `Authorization: Bearer <key>`",
                    "invalid_request_error",
                    "invalid_api_key",
                );
            }
            proxy::forward(&ctx, req, peer).await
        }
    }
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
