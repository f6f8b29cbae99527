//! The bodies the proxy passes on: the client's request body (`ClientBody`: its read timeout,
//! and when it ended) and the engine's response body (`Tracked`: the deadlines of `BodyClock`,
//! the abort signal, a visible cut, the in-flight count).

use super::*;

/// Which deadline a response missed, with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    FirstByte(Duration),
    Gap(Duration),
}

impl Expired {
    pub(crate) fn message(self) -> String {
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

    pub(crate) fn code(self) -> &'static str {
        match self {
            Expired::FirstByte(_) => "first_byte_timeout",
            Expired::Gap(_) => "stream_gap_timeout",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Expired::FirstByte(_) => TIMEOUT_FIRST_BYTE,
            Expired::Gap(_) => TIMEOUT_GAP,
        }
    }
}

/// The message of a request `Shared::abort_inflight` ended.
pub(crate) fn abort_message(reason: &str) -> String {
    format!("the engine is being restarted: {reason}; the request was ended, send it again")
}

/// The deadlines of a response body on its way: until its first piece the first-byte deadline
/// (absolute, with its length); after that the gap, counted while the engine keeps us waiting
/// (from the first poll that found nothing), so a client that reads slowly (hyper stops
/// polling while it cannot write) never makes the engine look stalled.
#[derive(Debug, Clone)]
pub(crate) struct BodyClock {
    first_byte: Option<(tokio::time::Instant, Duration)>,
    gap: Option<Duration>,
    /// A piece has come.
    begun: bool,
    /// Since when the engine has had nothing for us (None right after a piece).
    waiting: Option<tokio::time::Instant>,
}

impl BodyClock {
    pub(crate) fn new(
        first_byte: Option<(tokio::time::Instant, Duration)>,
        gap: Option<Duration>,
    ) -> Self {
        BodyClock {
            first_byte,
            gap,
            begun: false,
            waiting: None,
        }
    }

    /// The deadline armed now and what passing it means; None when none is.
    pub(crate) fn deadline(&self) -> Option<(tokio::time::Instant, Expired)> {
        if !self.begun {
            return self
                .first_byte
                .map(|(at, limit)| (at, Expired::FirstByte(limit)));
        }
        let since = self.waiting?;
        self.gap.map(|gap| (since + gap, Expired::Gap(gap)))
    }

    /// A piece of the body came.
    pub(crate) fn piece(&mut self) {
        self.begun = true;
        self.waiting = None;
    }

    /// The engine had nothing at this poll (at `now`).
    pub(crate) fn pending(&mut self, now: tokio::time::Instant) {
        if self.begun && self.waiting.is_none() {
            self.waiting = Some(now);
        }
    }
}

/// No fault of the client's body (yet).
pub(super) const FAULT_NONE: u8 = 0;
/// The client paused its body for longer than the body read timeout.
pub(super) const FAULT_STALLED: u8 = 1;
/// The client's body failed: it went away or sent less than announced.
pub(super) const FAULT_GONE: u8 = 2;

/// The client's request body on its way to the engine: cut when it stalls for `timeout`, and
/// any failure recorded in `fault`, so that a client's fault is never reported as the
/// engine's.
pub(super) struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed while a read waits.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<AtomicU8>,
    /// Set when the body has been read to its end.
    sent: BodyEnd,
}

impl ClientBody {
    /// The client's body, failing after `timeout` without a frame; `fault` says how it
    /// failed, `sent` when it ended.
    pub(super) fn new(
        inner: Incoming,
        timeout: Duration,
        fault: Arc<AtomicU8>,
        sent: BodyEnd,
    ) -> Self {
        ClientBody {
            inner,
            timeout,
            deadline: None,
            fault,
            sent,
        }
    }
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

/// An SSE response framed by chunks (no Content-Length): the only kind where one more event can
/// be added when the engine cuts the stream (a counted body cannot grow).
pub(super) fn is_chunked_event_stream(headers: &HeaderMap) -> bool {
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
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    started: Instant,
    _guard: InFlightGuard,
}

impl Tracker {
    pub(crate) fn start(shared: Arc<Shared>) -> Tracker {
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
pub(super) struct Tracked {
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

impl Tracked {
    /// The engine's response body, passed on under `clock`'s deadlines and `abort`.
    pub(super) fn new(
        inner: Incoming,
        tracker: Tracker,
        peer: SocketAddr,
        sse: bool,
        clock: BodyClock,
        (abort, thrown): (AbortSignal, Pin<Box<WaitForCancellationFutureOwned>>),
    ) -> Self {
        Tracked {
            inner: Some(inner),
            tracker,
            peer,
            sse,
            cut: Cut::None,
            clock,
            timer: None,
            thrown,
            abort,
        }
    }
}

/// Where a cut body stands. hyper drops what it buffered when a body fails, so before the error
/// the body yields once (and wakes itself at once) to let hyper flush the bytes before it,
/// the error event included.
pub(super) enum Cut {
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
