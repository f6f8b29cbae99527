//! Forwards everything that is not ours to the engine on its loopback port, for the requests
//! the fast lane (`super::fast`) hands to hyper, and holds what both share (refusals, the
//! answers when the engine fails, the body deadlines, the error events). It streams both
//! ways: request and response bodies are passed frame by frame (never collected), so SSE token
//! streams reach the client as the engine writes them. When the client goes away hyper drops
//! our response body, which drops the upstream response, which closes the upstream connection:
//! the engine sees the disconnect and aborts the generation.
//!
//! Headers: hop-by-hop ones (RFC 9110 §7.6.1: Connection and every header it names,
//! Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Authenticate,
//! Proxy-Authorization) are removed both ways; Host becomes the engine's address, the client's
//! Host goes to X-Forwarded-Host, its address is appended to X-Forwarded-For, and
//! X-Forwarded-Proto is `http`. Protocol upgrades (WebSocket) are not forwarded.
//!
//! Deadlines (`Limits::first_byte_timeout`, `Limits::stream_gap_timeout`): from the end of the
//! client's request body, the engine's response head and then the first piece of its body
//! must come within the first-byte deadline; after that, no two pieces may be further apart
//! than the gap deadline. A head that does not come in time is a 504 `first_byte_timeout`; a
//! body that misses either deadline is cut (SSE: after an error event). `Shared::abort_inflight`
//! ends every request in flight the same way (503 `engine_restarting` before the head). Each
//! way, the upstream request is dropped at once: the engine sees the disconnect.

use super::{Body, BoxError, Ctx, reply};
use crate::metrics::{TIMEOUT_FIRST_BYTE, TIMEOUT_GAP};
use crate::shared::{AbortSignal, InFlightGuard, Shared};
use crate::status::Phase;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::WaitForCancellationFutureOwned;

mod body;
use body::*;
pub(crate) use body::{BodyClock, Expired, Tracker, abort_message, error_event, stream_cut_event};

/// The pooled client to the engine (one per `serve_public`).
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Hop-by-hop headers that are never forwarded (besides those named in Connection); the fast
/// lane strips the same.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Removes hop-by-hop headers, including every header named in Connection.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no lookups.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Sets Host (`host`, the engine's address) and the X-Forwarded-* headers for a request
/// coming from `peer`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: HeaderValue) {
    if let Some(client_host) = headers.insert(header::HOST, host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), client_host);
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

/// The engine's loopback address on `port`, as a URI authority and as a Host value; built
/// once per port and thread, not per request.
pub fn engine_address(port: u16) -> (Authority, HeaderValue) {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u16, Authority, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((p, authority, host)) if *p == port => (authority.clone(), host.clone()),
        _ => {
            let text = format!("127.0.0.1:{port}");
            let authority = Authority::from_maybe_shared(Bytes::from(text.clone()))
                .expect("127.0.0.1:<u16> is an authority");
            let host = HeaderValue::from_maybe_shared(Bytes::from(text))
                .expect("127.0.0.1:<u16> is a header value");
            *last = Some((port, authority.clone(), host.clone()));
            (authority, host)
        }
    })
}

/// The status class label of `proxied_requests`.
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Why a request is not forwarded now, as (message, code, retry?), or None to forward.
pub fn refusal(phase: Phase, stopping: bool) -> Option<(&'static str, &'static str, bool)> {
    if stopping || phase == Phase::Draining || phase == Phase::Stopped {
        return Some(("the server is shutting down", "draining", true));
    }
    match phase {
        Phase::Ready => None,
        Phase::Failed => Some((
            "the engine failed and the supervisor gave up; see /status",
            "engine_failed",
            false,
        )),
        Phase::Restarting => Some(("the engine is restarting", "engine_restarting", true)),
        _ => Some((
            "the engine is still loading the model",
            "engine_loading",
            true,
        )),
    }
}

pub(crate) fn count(shared: &Shared, class: &str) {
    shared.metrics.proxied(class);
}

/// Forwards `req` to the engine with `target` (its path and query in normal form, see
/// `super::target`) as the request target, or answers 503 itself.
pub async fn forward(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    target: String,
    peer: SocketAddr,
) -> Response<Body> {
    if let Some(refusal) = refused(ctx) {
        return refusal;
    }
    let shared = &ctx.shared;
    let tracker = Tracker::start(shared.clone());
    let port = shared.engine_port();
    let Upstream {
        request,
        fault,
        sent,
    } = match upstream_request(ctx, req, target, peer, port) {
        Ok(u) => u,
        Err(e) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                &format!("bad request target: {e}"),
                "invalid_request_error",
                "bad_target",
            );
        }
    };
    let abort = shared.abort_signal();
    // One wait for the signal, from the request through to the end of the response body.
    let mut thrown = Box::pin(abort.thrown());
    match wait_head(ctx, request, thrown.as_mut(), &sent).await {
        Head::Answer(answer) => {
            let got = Got {
                tracker,
                peer,
                port,
                sent,
                fault,
                abort,
                thrown,
            };
            relay(ctx, answer, got)
        }
        Head::TimedOut(limit) => no_head_in_time(shared, peer, port, limit),
        Head::Aborted => aborted_before_head(ctx, peer, port, &abort),
    }
}

/// No response head within the first-byte deadline (`limit`): counted, logged, answered 504.
pub(crate) fn no_head_in_time(
    shared: &Shared,
    peer: SocketAddr,
    port: u16,
    limit: Duration,
) -> Response<Body> {
    count(shared, "error");
    shared.metrics.request_timeout(TIMEOUT_FIRST_BYTE);
    tracing::warn!(%peer, port, ?limit, "proxy: no response from the engine in time; answered 504 and cancelled the request");
    reply::error(
        StatusCode::GATEWAY_TIMEOUT,
        &Expired::FirstByte(limit).message(),
        "timeout_error",
        "first_byte_timeout",
    )
}

/// The client paused its request body for more than `limit`: counted 4xx, answered 408.
pub(crate) fn body_stalled(shared: &Shared, limit: Duration) -> Response<Body> {
    count(shared, "4xx");
    reply::error(
        StatusCode::REQUEST_TIMEOUT,
        &format!(
            "the request body stalled for more than {limit:?} (--body-read-timeout / \
             AIM_BODY_READ_TIMEOUT); send it without long pauses"
        ),
        "invalid_request_error",
        "body_timeout",
    )
}

/// `Shared::abort_inflight` ended the request before the engine's head: counted, logged,
/// answered 503 `engine_restarting`.
pub(crate) fn aborted_before_head(
    ctx: &Ctx,
    peer: SocketAddr,
    port: u16,
    abort: &AbortSignal,
) -> Response<Body> {
    count(&ctx.shared, "error");
    ctx.shared.metrics.requests_aborted.inc();
    tracing::warn!(%peer, port, reason = abort.reason(), "proxy: request ended before the engine's response: the engine is being restarted");
    reply::unavailable(
        &abort_message(abort.reason()),
        "engine_restarting",
        Some(ctx.limits.retry_after_s),
    )
}

/// The engine could not be reached or gave no usable head (`why`): counted, logged, answered
/// 503 `engine_unreachable`.
pub(crate) fn no_answer(ctx: &Ctx, port: u16, why: &str) -> Response<Body> {
    count(&ctx.shared, "error");
    tracing::warn!(error = %why, port, "proxy: engine did not answer");
    engine_unreachable(why, ctx.limits.retry_after_s)
}

/// Our own 503 while the engine cannot take requests (loading, restarting, stopping, failed).
pub(crate) fn refused(ctx: &Ctx) -> Option<Response<Body>> {
    let shared = &ctx.shared;
    let refused = {
        let status = shared.status.borrow();
        let phase = if status.fatal.is_some() {
            Phase::Failed
        } else {
            status.phase
        };
        refusal(phase, shared.stopping.is_cancelled())
    };
    let (message, code, retry) = refused?;
    Some(reply::unavailable(
        message,
        code,
        retry.then_some(ctx.limits.retry_after_s),
    ))
}

/// The request for the engine, with what its client body reports back.
struct Upstream {
    request: Request<Body>,
    /// How the client's body failed, if it did (`FAULT_*`).
    fault: Arc<AtomicU8>,
    sent: BodyEnd,
}

/// `req` turned into the engine's request: target in normal form on the engine's loopback
/// authority, hop-by-hop headers gone, forwarding headers set, the body watched.
fn upstream_request(
    ctx: &Ctx,
    req: Request<Incoming>,
    target: String,
    peer: SocketAddr,
    port: u16,
) -> Result<Upstream, hyper::http::Error> {
    let (mut parts, body) = req.into_parts();
    // Built from parts, never by pasting strings: the target cannot change the authority.
    let (authority, host) = engine_address(port);
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(PathAndQuery::from_maybe_shared(Bytes::from(target))?)
        .build();
    parts.uri = uri?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded(&mut parts.headers, peer, host);
    let fault = Arc::new(AtomicU8::new(FAULT_NONE));
    let sent: BodyEnd = Arc::new(OnceLock::new());
    if hyper::body::Body::is_end_stream(&body) {
        let _ = sent.set(tokio::time::Instant::now());
    }
    let body = ClientBody::new(
        body,
        ctx.limits.body_read_timeout,
        fault.clone(),
        sent.clone(),
    );
    Ok(Upstream {
        request: Request::from_parts(parts, body.boxed_unsync()),
        fault,
        sent,
    })
}

/// What a forwarded request carries into its answer.
struct Got {
    tracker: Tracker,
    peer: SocketAddr,
    port: u16,
    sent: BodyEnd,
    fault: Arc<AtomicU8>,
    abort: AbortSignal,
    thrown: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// The engine's answer (or its failure) passed on: its body watched by the deadlines and the
/// abort signal; a failure named by whose fault it was.
fn relay(
    ctx: &Ctx,
    answer: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    got: Got,
) -> Response<Body> {
    let shared = &ctx.shared;
    let Got {
        tracker,
        peer,
        port,
        sent,
        fault,
        abort,
        thrown,
    } = got;
    match answer {
        Ok(resp) => {
            count(shared, status_class(resp.status()));
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let start = sent
                .get()
                .copied()
                .unwrap_or_else(tokio::time::Instant::now);
            let clock = BodyClock::new(
                ctx.limits.first_byte().map(|l| (start + l, l)),
                ctx.limits.stream_gap(),
            );
            let sse = is_chunked_event_stream(&parts.headers);
            let body = Tracked::new(body, tracker, peer, sse, clock, (abort, thrown));
            Response::from_parts(parts, body.boxed_unsync())
        }
        Err(_) if fault.load(Ordering::Relaxed) == FAULT_STALLED => {
            let limit = ctx.limits.body_read_timeout;
            tracing::debug!(%peer, ?limit, "proxy: the client's request body stalled");
            body_stalled(shared, limit)
        }
        Err(e) if fault.load(Ordering::Relaxed) == FAULT_GONE => {
            // The client went away (or sent less than it announced): nginx's 499, nobody
            // reads this answer.
            count(shared, "499");
            tracing::debug!(%peer, error = %error_chain(&e), "proxy: the client went away during its request body");
            reply::error(
                StatusCode::BAD_REQUEST,
                "the request body ended early",
                "invalid_request_error",
                "client_closed",
            )
        }
        Err(e) => no_answer(ctx, port, &error_chain(&e)),
    }
}

/// When the client's request body ended (the first-byte deadline counts from there).
type BodyEnd = Arc<OnceLock<tokio::time::Instant>>;

/// How the wait for the engine's response head ended.
enum Head {
    Answer(Result<Response<Incoming>, hyper_util::client::legacy::Error>),
    /// No head within the first-byte deadline (this long).
    TimedOut(Duration),
    /// `Shared::abort_inflight` was called.
    Aborted,
}

/// Sends `upstream` and waits for the engine's response head, at most the first-byte deadline
/// from the end of the request body, and no longer than until `thrown` resolves. Returning
/// early drops the request future, which closes its connection to the engine.
async fn wait_head(
    ctx: &Ctx,
    upstream: Request<Body>,
    mut thrown: Pin<&mut WaitForCancellationFutureOwned>,
    sent: &BodyEnd,
) -> Head {
    let request = ctx.client.request(upstream);
    tokio::pin!(request);
    let limit = ctx.limits.first_byte();
    let from = sent
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    let first = from + limit.unwrap_or_default();
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = thrown.as_mut() => return Head::Aborted,
            answer = &mut request => return Head::Answer(answer),
            _ = &mut timer, if limit.is_some() => {
                let limit = limit.unwrap_or_default();
                let now = tokio::time::Instant::now();
                match sent.get().map(|at| *at + limit) {
                    Some(at) if at <= now => return Head::TimedOut(limit),
                    Some(at) => timer.as_mut().reset(at),
                    // The client is still sending its body (bounded by the body read timeout).
                    None => timer.as_mut().reset(now + limit),
                }
            }
        }
    }
}

/// The answer when the engine could not be reached or dropped the connection before its
/// response headers: it died or is restarting and the supervisor has not noticed yet, so this
/// is the same "come back shortly" as during a restart (503 with Retry-After), not a 502.
fn engine_unreachable(why: &str, retry_after_s: u32) -> Response<Body> {
    reply::unavailable(
        &format!("the engine did not answer (it may be restarting): {why}"),
        "engine_unreachable",
        Some(retry_after_s),
    )
}

/// `e` and its sources joined with ": " (hyper-util's own text is only "client error (Connect)").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer k"),
            ("content-type", "application/json"),
            ("content-length", "12"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length", "content-type"]);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example:8000"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        set_forwarded(
            &mut h,
            "192.0.2.7:5555".parse().expect("addr"),
            engine_address(41234).1,
        );
        assert_eq!(h[header::HOST], "127.0.0.1:41234");
        assert_eq!(h["x-forwarded-host"], "api.example:8000");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(engine_address(41234).0.as_str(), "127.0.0.1:41234");
        assert_eq!(
            engine_address(8000).1,
            "127.0.0.1:8000",
            "a new port, a new address"
        );
    }

    #[test]
    fn refusal_table() {
        for &phase in Phase::ALL {
            let r = refusal(phase, false);
            match phase {
                Phase::Ready => assert!(r.is_none()),
                Phase::Failed => assert_eq!(r.map(|x| (x.1, x.2)), Some(("engine_failed", false))),
                Phase::Draining | Phase::Stopped => {
                    assert_eq!(r.map(|x| x.1), Some("draining"))
                }
                Phase::Restarting => assert_eq!(r.map(|x| x.1), Some("engine_restarting")),
                _ => assert_eq!(r.map(|x| (x.1, x.2)), Some(("engine_loading", true))),
            }
            assert_eq!(
                refusal(phase, true).map(|x| x.1),
                Some("draining"),
                "{phase}"
            );
        }
    }

    #[test]
    fn only_chunked_event_streams_get_the_cut_event() {
        // (content type, content length, gets the event)
        let cases: [(Option<&'static str>, Option<&'static str>, bool); 7] = [
            (Some("text/event-stream"), None, true),
            (Some("text/event-stream; charset=utf-8"), None, true),
            (Some("Text/Event-Stream"), None, true),
            (Some("text/event-stream"), Some("100"), false),
            (Some("application/json"), None, false),
            (Some("text/event"), None, false),
            (None, None, false),
        ];
        for (ct, len, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            if let Some(len) = len {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(len));
            }
            assert_eq!(is_chunked_event_stream(&h), want, "{ct:?} {len:?}");
        }
    }

    #[test]
    fn cut_event_is_one_openai_error_event() {
        let ev = stream_cut_event("connection reset");
        let text = std::str::from_utf8(&ev).expect("utf-8");
        let json = text
            .strip_prefix("\n\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one SSE event after a blank line");
        assert!(!json.contains('\n'), "{json}");
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(v["error"]["code"], "engine_stream_cut");
        assert_eq!(v["error"]["type"], "engine_error");
        assert_eq!(
            v["error"]["message"],
            "the engine's response was cut: connection reset"
        );
    }

    #[test]
    fn body_clock_first_byte_then_gap_while_waiting_on_the_engine() {
        let s = Duration::from_secs;
        let t0 = tokio::time::Instant::now();
        let at = |n: u64| t0 + s(n);
        let mut c = BodyClock::new(Some((at(10), s(10))), Some(s(3)));
        let first = Some((at(10), Expired::FirstByte(s(10))));
        assert_eq!(c.deadline(), first);
        c.pending(at(2));
        assert_eq!(c.deadline(), first, "the first-byte deadline is absolute");
        c.piece();
        assert_eq!(
            c.deadline(),
            None,
            "nothing armed until the engine keeps us waiting"
        );
        c.pending(at(8));
        assert_eq!(c.deadline(), Some((at(11), Expired::Gap(s(3)))));
        c.pending(at(9));
        assert_eq!(
            c.deadline(),
            Some((at(11), Expired::Gap(s(3)))),
            "still since 8 s"
        );
        c.piece();
        // The client stops reading for 5 s (hyper does not poll): no gap is counted for it.
        c.pending(at(14));
        assert_eq!(c.deadline(), Some((at(17), Expired::Gap(s(3)))));
        // Disabled deadlines arm nothing.
        let mut off = BodyClock::new(None, None);
        assert_eq!(off.deadline(), None);
        off.piece();
        off.pending(at(1));
        assert_eq!(off.deadline(), None);
        let mut gap_only = BodyClock::new(None, Some(s(3)));
        gap_only.pending(at(1));
        assert_eq!(gap_only.deadline(), None, "no gap before the first piece");
    }

    #[test]
    fn timeout_and_abort_texts_name_the_knob() {
        let fb = Expired::FirstByte(Duration::from_secs(600));
        assert!(fb.message().contains("600s"), "{}", fb.message());
        assert!(fb.message().contains("AIM_REQUEST_FIRST_BYTE_TIMEOUT"));
        assert_eq!((fb.code(), fb.kind()), ("first_byte_timeout", "first_byte"));
        let gap = Expired::Gap(Duration::from_millis(1500));
        assert!(gap.message().contains("1.5s"), "{}", gap.message());
        assert!(gap.message().contains("--stream-gap-timeout"));
        assert_eq!((gap.code(), gap.kind()), ("stream_gap_timeout", "gap"));
        assert!(abort_message("it hung").starts_with("the engine is being restarted: it hung"));
        let ev = error_event(&gap.message(), "timeout_error", gap.code());
        let text = std::str::from_utf8(&ev).expect("utf-8");
        let json = text
            .strip_prefix("\n\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one event");
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(v["error"]["code"], "stream_gap_timeout");
    }

    #[test]
    fn error_chain_names_the_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(error_chain(&Outer(io)), "client error (Connect): refused");
    }

    #[test]
    fn status_classes() {
        for (code, want) in [
            (200, "2xx"),
            (201, "2xx"),
            (404, "4xx"),
            (503, "5xx"),
            (302, "3xx"),
        ] {
            assert_eq!(
                status_class(StatusCode::from_u16(code).expect("code")),
                want
            );
        }
    }
}
