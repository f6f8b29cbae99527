//! Forwards everything that is not ours to the engine on its loopback port, streaming both
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

/// Hop-by-hop headers that are never forwarded (besides those named in Connection).
const HOP_BY_HOP: &[&str] = &[
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

/// Sets Host and the X-Forwarded-* headers for a request coming from `peer`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, engine_port: u16) {
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
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
    if let Ok(v) = HeaderValue::from_str(&format!("127.0.0.1:{engine_port}")) {
        headers.insert(header::HOST, v);
    }
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

fn count(shared: &Shared, class: &str) {
    shared
        .metrics
        .proxied_requests
        .get_or_create(&crate::metrics::StatusClassLabel {
            code: class.to_string(),
        })
        .inc();
}

/// Forwards `req` to the engine with `target` (its path and query in normal form, see
/// `super::target`) as the request target, or answers 503 itself.
pub async fn forward(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    target: &str,
    peer: SocketAddr,
) -> Response<Body> {
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
    if let Some((message, code, retry)) = refused {
        return reply::unavailable(message, code, retry.then_some(ctx.limits.retry_after_s));
    }

    let tracker = Tracker::start(shared.clone());
    let port = shared.engine_port();
    let (mut parts, body) = req.into_parts();
    // Built from parts, never by pasting strings: the target cannot change the authority.
    let uri = Uri::builder()
        .scheme("http")
        .authority(format!("127.0.0.1:{port}"))
        .path_and_query(target)
        .build();
    parts.uri = match uri {
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
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded(&mut parts.headers, peer, port);
    let fault = Arc::new(AtomicU8::new(FAULT_NONE));
    let sent: BodyEnd = Arc::new(OnceLock::new());
    if hyper::body::Body::is_end_stream(&body) {
        let _ = sent.set(tokio::time::Instant::now());
    }
    let body = ClientBody {
        inner: body,
        timeout: ctx.limits.body_read_timeout,
        deadline: None,
        fault: fault.clone(),
        sent: sent.clone(),
    };
    let upstream = Request::from_parts(parts, body.boxed_unsync());
    let abort = shared.abort_signal();

    let answer = match wait_head(ctx, upstream, &abort, &sent).await {
        Head::Answer(answer) => answer,
        Head::TimedOut(limit) => {
            count(shared, "error");
            shared.metrics.request_timeout(TIMEOUT_FIRST_BYTE);
            tracing::warn!(%peer, port, ?limit, "proxy: no response from the engine in time; answered 504 and cancelled the request");
            return reply::error(
                StatusCode::GATEWAY_TIMEOUT,
                &Expired::FirstByte(limit).message(),
                "timeout_error",
                "first_byte_timeout",
            );
        }
        Head::Aborted => {
            count(shared, "error");
            shared.metrics.requests_aborted.inc();
            tracing::warn!(%peer, port, reason = abort.reason(), "proxy: request ended before the engine's response: the engine is being restarted");
            return reply::unavailable(
                &abort_message(abort.reason()),
                "engine_restarting",
                Some(ctx.limits.retry_after_s),
            );
        }
    };
    match answer {
        Ok(resp) => {
            count(shared, status_class(resp.status()));
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let start = sent
                .get()
                .copied()
                .unwrap_or_else(tokio::time::Instant::now);
            let body = Tracked {
                inner: Some(body),
                tracker,
                peer,
                sse: is_chunked_event_stream(&parts.headers),
                cut: Cut::None,
                clock: BodyClock::new(
                    ctx.limits.first_byte().map(|l| (start + l, l)),
                    ctx.limits.stream_gap(),
                ),
                timer: None,
                thrown: Box::pin(abort.thrown()),
                abort,
            };
            Response::from_parts(parts, body.boxed_unsync())
        }
        Err(_) if fault.load(Ordering::Relaxed) == FAULT_STALLED => {
            count(shared, "4xx");
            let limit = ctx.limits.body_read_timeout;
            tracing::debug!(%peer, ?limit, "proxy: the client's request body stalled");
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
        Err(e) => {
            count(shared, "error");
            let why = error_chain(&e);
            tracing::warn!(error = %why, port, "proxy: engine did not answer");
            engine_unreachable(&why, ctx.limits.retry_after_s)
        }
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
/// from the end of the request body, and no longer than until `abort` is thrown. Returning
/// early drops the request future, which closes its connection to the engine.
async fn wait_head(
    ctx: &Ctx,
    upstream: Request<Body>,
    abort: &AbortSignal,
    sent: &BodyEnd,
) -> Head {
    let request = ctx.client.request(upstream);
    tokio::pin!(request);
    let thrown = abort.thrown();
    tokio::pin!(thrown);
    let limit = ctx.limits.first_byte();
    let now = tokio::time::Instant::now();
    let first = sent.get().copied().unwrap_or(now) + limit.unwrap_or_default();
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = &mut thrown => return Head::Aborted,
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

/// Which deadline a response missed, with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    FirstByte(Duration),
    Gap(Duration),
}

impl Expired {
    fn message(self) -> String {
        match self {
            Expired::FirstByte(limit) => format!(
                "the engine sent no response within {limit:?} (--request-first-byte-timeout / \
                 AIM_REQUEST_FIRST_BYTE_TIMEOUT); the request was cancelled"
            ),
            Expired::Gap(limit) => format!(
                "the engine's response paused for more than {limit:?} (--stream-gap-timeout / \
                 AIM_STREAM_GAP_TIMEOUT); the response was cut and the request cancelled"
            ),
        }
    }

    fn code(self) -> &'static str {
        match self {
            Expired::FirstByte(_) => "first_byte_timeout",
            Expired::Gap(_) => "stream_gap_timeout",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Expired::FirstByte(_) => TIMEOUT_FIRST_BYTE,
            Expired::Gap(_) => TIMEOUT_GAP,
        }
    }
}

/// The message of a request `Shared::abort_inflight` ended.
fn abort_message(reason: &str) -> String {
    format!("the engine is being restarted: {reason}; the request was ended, send it again")
}

/// The deadlines of a response body on its way: until its first piece the first-byte deadline
/// (absolute, with its length); after that the gap, counted while the engine keeps us waiting
/// (from the first poll that found nothing), so a client that reads slowly (hyper stops
/// polling while it cannot write) never makes the engine look stalled.
#[derive(Debug, Clone)]
struct BodyClock {
    first_byte: Option<(tokio::time::Instant, Duration)>,
    gap: Option<Duration>,
    /// A piece has come.
    begun: bool,
    /// Since when the engine has had nothing for us (None right after a piece).
    waiting: Option<tokio::time::Instant>,
}

impl BodyClock {
    fn new(first_byte: Option<(tokio::time::Instant, Duration)>, gap: Option<Duration>) -> Self {
        BodyClock {
            first_byte,
            gap,
            begun: false,
            waiting: None,
        }
    }

    /// The deadline armed now and what passing it means; None when none is.
    fn deadline(&self) -> Option<(tokio::time::Instant, Expired)> {
        if !self.begun {
            return self
                .first_byte
                .map(|(at, limit)| (at, Expired::FirstByte(limit)));
        }
        let since = self.waiting?;
        self.gap.map(|gap| (since + gap, Expired::Gap(gap)))
    }

    /// A piece of the body came.
    fn piece(&mut self) {
        self.begun = true;
        self.waiting = None;
    }

    /// The engine had nothing at this poll (at `now`).
    fn pending(&mut self, now: tokio::time::Instant) {
        if self.begun && self.waiting.is_none() {
            self.waiting = Some(now);
        }
    }
}

/// No fault of the client's body (yet).
const FAULT_NONE: u8 = 0;
/// The client paused its body for longer than the body read timeout.
const FAULT_STALLED: u8 = 1;
/// The client's body failed: it went away or sent less than announced.
const FAULT_GONE: u8 = 2;

/// The client's request body on its way to the engine: cut when it stalls for `timeout`, and
/// any failure recorded in `fault`, so that a client's fault is never reported as the
/// engine's.
struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed while a read waits.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<AtomicU8>,
    /// Set when the body has been read to its end.
    sent: BodyEnd,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = this.deadline.as_mut() {
                    d.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                if this.inner.is_end_stream() {
                    let _ = this.sent.set(tokio::time::Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.store(FAULT_GONE, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                let _ = this.sent.set(tokio::time::Instant::now());
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let d = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if d.as_mut().poll(cx).is_ready() {
                    this.fault.store(FAULT_STALLED, Ordering::Relaxed);
                    return Poll::Ready(Some(Err("the request body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

/// An SSE response framed by chunks (no Content-Length): the only kind where one more event can
/// be added when the engine cuts the stream (a counted body cannot grow).
fn is_chunked_event_stream(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::CONTENT_LENGTH)
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .get(..17)
                    .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
            })
}

/// The last event of an SSE stream the engine cut, in the OpenAI error shape (the OpenAI SDKs
/// raise on a chunk with an `error` key). It starts with a blank line: should the cut fall
/// inside an event, that event is ended on its own instead of swallowing this one (at an event
/// boundary the extra blank lines dispatch nothing).
pub fn stream_cut_event(why: &str) -> Bytes {
    error_event(
        &format!("the engine's response was cut: {why}"),
        "engine_error",
        "engine_stream_cut",
    )
}

/// One SSE event carrying an OpenAI error, after a blank line (see `stream_cut_event`).
pub fn error_event(message: &str, kind: &str, code: &str) -> Bytes {
    let body = reply::error_body(message, kind, code);
    Bytes::from(format!("\n\ndata: {body}\n\n"))
}

/// Holds the in-flight guard and the gauge for one forwarded request; dropping it (body ended,
/// client gone, or upstream error) records the duration.
struct Tracker {
    shared: Arc<Shared>,
    started: Instant,
    _guard: InFlightGuard,
}

impl Tracker {
    fn start(shared: Arc<Shared>) -> Tracker {
        let guard = shared.inflight.enter();
        shared.metrics.inflight_requests.inc();
        Tracker {
            shared,
            started: Instant::now(),
            _guard: guard,
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        m.inflight_requests.dec();
        m.request_duration_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// The engine's response body, passed through frame by frame while counting bytes and keeping
/// the body deadlines (`BodyClock`) and the abort signal.
///
/// When the engine's body fails (it crashed mid-response), a deadline passes, or the abort
/// signal is thrown, the upstream body is dropped (the engine sees the disconnect) and an error
/// goes on to hyper, which then ends our response without the terminating chunk or short of
/// its Content-Length, so the client sees a cut and never a complete-looking answer. An SSE
/// stream first gets one error event (`error_event`).
struct Tracked {
    /// None once cut.
    inner: Option<Incoming>,
    tracker: Tracker,
    peer: SocketAddr,
    /// A chunked `text/event-stream` response.
    sse: bool,
    cut: Cut,
    clock: BodyClock,
    /// Armed at or before `clock.deadline()`; moved later lazily, when it fires early.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    abort: AbortSignal,
    thrown: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// Where a cut body stands. hyper drops what it buffered when a body fails, so before the error
/// the body yields once (and wakes itself at once) to let hyper flush the bytes before it,
/// the error event included.
enum Cut {
    None,
    /// The error event went out; yield once, then fail.
    Flush(BoxError),
    /// Fail at the next poll.
    Fail(BoxError),
    /// The error was handed to hyper.
    Done,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !matches!(this.cut, Cut::None) {
            return this.poll_cut(cx);
        }
        if this.thrown.as_mut().poll(cx).is_ready() {
            return this.aborted(cx);
        }
        let Some(inner) = this.inner.as_mut() else {
            return this.poll_cut(cx);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tracker
                        .shared
                        .metrics
                        .streamed_bytes
                        .inc_by(data.len() as u64);
                }
                this.clock.piece();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.cut_by(e, cx),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                this.clock.pending(tokio::time::Instant::now());
                this.poll_deadline(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A cut in progress must never look like the end: hyper would finish the response.
        matches!(self.cut, Cut::None) && self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

impl Tracked {
    /// The steps after the body was cut (see `Cut`).
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match std::mem::replace(&mut self.cut, Cut::Done) {
            Cut::Flush(e) => {
                self.cut = Cut::Fail(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Cut::Fail(e) => Poll::Ready(Some(Err(e))),
            // hyper never polls a failed body again; should anything else, it stays failed.
            Cut::None | Cut::Done => Poll::Ready(Some(Err("the engine's response was cut".into()))),
        }
    }

    /// Waits for the armed deadline (the engine's body is pending); cuts the body when it passed.
    fn poll_deadline(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some((at, expired)) = self.clock.deadline() else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        // Pieces move the deadline later without touching the timer (no timer work per
        // chunk); it is moved when it fires early. A deadline earlier than the timer (the
        // first piece switched from the first-byte deadline to the gap) moves it at once.
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= at {
                return self.expired(expired, cx);
            }
            timer.as_mut().reset(at);
        }
    }

    /// A deadline passed: count it, log it, cut the body.
    fn expired(
        &mut self,
        expired: Expired,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let metrics = &self.tracker.shared.metrics;
        metrics.request_timeout(expired.kind());
        let message = expired.message();
        tracing::warn!(peer = %self.peer, kind = expired.kind(), sse = self.sse, "proxy: {message}");
        let event = error_event(&message, "timeout_error", expired.code());
        self.cut(event, message.into(), cx)
    }

    /// `Shared::abort_inflight` was called: count it, log it, cut the body.
    fn aborted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.tracker.shared.metrics.requests_aborted.inc();
        let message = abort_message(self.abort.reason());
        tracing::warn!(peer = %self.peer, sse = self.sse, "proxy: response cut: {message}");
        let event = error_event(&message, "service_unavailable", "engine_restarting");
        self.cut(event, message.into(), cx)
    }

    /// The engine's body failed with `e`. Returns what `poll_frame` answers now.
    fn cut_by(
        &mut self,
        e: hyper::Error,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let why = error_chain(&e);
        tracing::warn!(error = %why, sse = self.sse, "proxy: the engine's response was cut");
        self.cut(stream_cut_event(&why), e.into(), cx)
    }

    /// Cuts the body: drops the upstream body (its connection closes, the engine sees the
    /// disconnect), then `event` when it is a stream, a flush, and `err`. Returns what
    /// `poll_frame` answers now.
    fn cut(
        &mut self,
        event: Bytes,
        err: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = None;
        self.timer = None;
        self.tracker.shared.metrics.responses_cut.inc();
        if self.sse {
            self.cut = Cut::Flush(err);
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        // Nothing to add: still let hyper flush what it holds before it sees the error.
        self.cut = Cut::Fail(err);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
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
        set_forwarded(&mut h, "192.0.2.7:5555".parse().expect("addr"), 41234);
        assert_eq!(h[header::HOST], "127.0.0.1:41234");
        assert_eq!(h["x-forwarded-host"], "api.example:8000");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
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
