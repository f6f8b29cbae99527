//! The fast lane: the public port's own HTTP/1.1 forwarding for the plain requests that are
//! most of the traffic, at a reverse proxy's cost (bench/README, "Issue 18").
//!
//! Every public connection starts here. For each request the lane reads the head and decides
//! (`wire::plan_request`, pure): a forwarded API request on HTTP/1.1 with a body of at most
//! `MAX_BODY` (read whole, then sent), while the engine is ready, goes straight to the engine
//! over the lane's own pool (`pool`); anything else (our own endpoints, a longer body, chunked
//! or `Expect` requests, upgrades, HTTP/1.0, refusals while loading or draining, a wrong API
//! key, anything the lane does not parse) is handed to hyper with the bytes read so far
//! (`rewind`), and hyper serves the rest of that connection exactly as before: our own
//! endpoints and every refusal (400, 401, 421, 431, 503 while not ready) come from `router`.
//! The lane writes only the answers of a request it took whose engine failed it (below, with
//! `proxy`'s texts and counts) and 408 for a body that stalls.
//!
//! What a forwarded request gets is what `proxy` gives (its tests run through the lane): the
//! same target normal form, key check, hop-by-hop and X-Forwarded-* headers, the first-byte and
//! gap deadlines (`BodyClock`), `Shared::abort_inflight`, the error events of a cut SSE
//! stream, the same answers when the engine fails (504 `first_byte_timeout`, 503
//! `engine_restarting` / `engine_unreachable`), the same metrics and in-flight count. The
//! engine's body goes on as it comes: counted bodies byte for byte, chunked or unframed ones
//! as one chunk per read. A client that leaves drops the upstream connection, so the engine
//! sees the disconnect. A drain closes idle connections at once and the others after their
//! current exchange (saying `connection: close`); a head half read waits for the header
//! timeout, as on hyper's side. A connection handed over during the drain gets one request
//! (`router` answers 503 `draining` for the API).

mod chunked;
mod pool;
mod rewind;
pub mod wire;

pub use pool::Pool;
pub use rewind::Rewind;

use super::proxy::{self, BodyClock, Expired, Tracker};
use super::{Body, Ctx, router};
use crate::shared::AbortSignal;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wire::{Answer, Facts, Forward, Framing, Plan, Reply};

/// How long a connection to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Smallest free room for one read.
const READ_ROOM: usize = 4096;
/// Largest request body the lane reads before it forwards (a longer one is streamed by
/// hyper's path): chat and completion requests are well under it, and a flood of slow bodies
/// holds at most this much per connection.
pub const MAX_BODY: usize = 64 * 1024;

/// How a connection left the lane.
pub enum End {
    /// Closed (the client left, asked to close, a drain, or an exchange that cannot go on).
    Closed,
    /// For hyper, with the bytes already read from it.
    Handoff(TcpStream, Vec<u8>),
}

/// Serves `client` until it closes or is handed off.
pub async fn serve(
    ctx: &Arc<Ctx>,
    client: TcpStream,
    peer: SocketAddr,
    drain: &CancellationToken,
) -> End {
    let mut lane = Lane {
        ctx,
        client,
        peer,
        peer_ip: peer.ip().to_string(),
        buf: Vec::with_capacity(8192),
        request: Vec::new(),
        up_buf: Vec::new(),
        out: Vec::new(),
        drain,
    };
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let (forward, taken) = match lane.next_request(timer.as_mut()).await {
            Next::Forward(f, taken) => (f, taken),
            Next::Handoff => return End::Handoff(lane.client, lane.buf),
            Next::Closed => return End::Closed,
        };
        let keep = lane.exchange(&forward, taken, timer.as_mut()).await;
        if !keep || forward.close || drain.is_cancelled() {
            let _ = lane.client.shutdown().await;
            return End::Closed;
        }
    }
}

/// What a request holds from its head on, as on hyper's path: its place in the in-flight
/// count, and the abort signal current when it came.
struct Taken {
    tracker: Tracker,
    abort: AbortSignal,
}

enum Next {
    /// A request to forward, its body read.
    Forward(Forward, Taken),
    Handoff,
    Closed,
}

/// What ended a wait on the engine.
enum Wait {
    Read(std::io::Result<usize>),
    Expired(Expired),
    Aborted,
    ClientGone,
}

/// Why no usable response head came.
enum NoHead {
    TimedOut(Duration),
    Aborted,
    /// The client closed its connection: nobody to answer.
    ClientGone,
    Unreachable(String),
}

struct Lane<'a> {
    ctx: &'a Arc<Ctx>,
    client: TcpStream,
    peer: SocketAddr,
    peer_ip: String,
    /// Read from the client, not yet used.
    buf: Vec<u8>,
    /// The request for the engine (kept for one retry).
    request: Vec<u8>,
    /// Read from the engine.
    up_buf: Vec<u8>,
    /// For the client.
    out: Vec<u8>,
    /// Cancelled when the port drains.
    drain: &'a CancellationToken,
}

/// Reads into the free room of `buf` (at least `READ_ROOM`).
async fn read_into(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_ROOM);
    stream.read_buf(buf).await
}

impl Lane<'_> {
    /// Reads until the next request's head is complete and decides what it is.
    async fn next_request(&mut self, mut timer: Pin<&mut Sleep>) -> Next {
        let drain = self.drain;
        // hyper's header timer: from the start of the wait for a head, idle time included.
        timer
            .as_mut()
            .reset(Instant::now() + self.ctx.limits.header_read_timeout);
        loop {
            if !self.buf.is_empty() {
                let (_, host) = proxy::engine_address(self.ctx.shared.engine_port());
                let facts = Facts {
                    peer_ip: &self.peer_ip,
                    engine_host: host.as_bytes(),
                    api_key: self.ctx.api_key.as_ref(),
                };
                let max_head = self.ctx.limits.max_header_bytes;
                match wire::plan_request(&self.buf, &facts, &mut self.request) {
                    Plan::Forward(f)
                        if f.body_len <= MAX_BODY && f.head_len <= max_head && self.admitted() =>
                    {
                        let shared = &self.ctx.shared;
                        let taken = Taken {
                            tracker: Tracker::start(shared.clone()),
                            abort: shared.abort_signal(),
                        };
                        return match self.read_body(&f).await {
                            true => Next::Forward(f, taken),
                            false => Next::Closed,
                        };
                    }
                    Plan::Forward(_) | Plan::Handoff => return Next::Handoff,
                    Plan::Partial if self.buf.len() > max_head => {
                        return Next::Handoff; // hyper answers 431
                    }
                    Plan::Partial => {}
                }
            }
            let idle = self.buf.is_empty();
            tokio::select! {
                biased;
                _ = drain.cancelled(), if idle => return Next::Closed,
                read = read_into(&mut self.client, &mut self.buf) => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {}
                },
                _ = timer.as_mut() => return Next::Closed,
            }
        }
    }

    /// Reads the rest of `f`'s body, each read within the body read timeout. A stalled body is
    /// answered 408 as on hyper's path; a client that leaves is counted 499. Returns whether
    /// the body is here.
    async fn read_body(&mut self, f: &Forward) -> bool {
        let limit = self.ctx.limits.body_read_timeout;
        while self.buf.len() < f.head_len + f.body_len {
            match tokio::time::timeout(limit, read_into(&mut self.client, &mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    proxy::count(&self.ctx.shared, "499");
                    tracing::debug!(peer = %self.peer, "proxy: the client went away during its request body");
                    return false;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, ?limit, "proxy: the client's request body stalled");
                    let answer = proxy::body_stalled(&self.ctx.shared, limit);
                    self.reply(answer, f.head_request, true).await;
                    return false;
                }
            }
        }
        true
    }

    /// Whether the engine takes requests now and this node forwards them (otherwise hyper's
    /// path answers: 503 while loading or draining, 421 on a group's worker).
    fn admitted(&self) -> bool {
        router::worker_group(self.ctx).is_none() && proxy::refused(self.ctx).is_none()
    }

    /// Forwards one request and passes its answer on. Returns whether the client connection
    /// can carry another request.
    async fn exchange(&mut self, f: &Forward, taken: Taken, mut timer: Pin<&mut Sleep>) -> bool {
        let Taken { tracker, abort } = taken;
        let ctx = self.ctx;
        let shared = &ctx.shared;
        let port = shared.engine_port();
        let used = f.head_len + f.body_len;
        self.request.extend_from_slice(&self.buf[f.head_len..used]);
        self.buf.drain(..used);
        let sent = Instant::now();
        let thrown = abort.thrown();
        tokio::pin!(thrown);
        let first = ctx.limits.first_byte();
        let (up, answer) = match self
            .send(
                port,
                f,
                first.map(|l| (sent + l, l)),
                timer.as_mut(),
                thrown.as_mut(),
            )
            .await
        {
            Ok(got) => got,
            Err(no) => {
                let answer = match no {
                    NoHead::TimedOut(limit) => {
                        proxy::no_head_in_time(shared, self.peer, port, limit)
                    }
                    NoHead::Aborted => proxy::aborted_before_head(ctx, self.peer, port, &abort),
                    NoHead::Unreachable(why) => proxy::no_answer(ctx, port, &why),
                    NoHead::ClientGone => {
                        tracing::debug!(peer = %self.peer, "proxy: the client left before the engine's response");
                        return false;
                    }
                };
                drop(tracker);
                return self.reply(answer, f.head_request, f.close).await;
            }
        };
        let status = hyper::StatusCode::from_u16(answer.status);
        proxy::count(shared, status.map_or("5xx", proxy::status_class));
        let clock = BodyClock::new(first.map(|l| (sent + l, l)), ctx.limits.stream_gap());
        let relay = Relay {
            up,
            port,
            answer,
            clock,
            abort: &abort,
            _tracker: tracker,
        };
        self.relay(relay, timer, thrown).await
    }

    /// Sends the request on a pooled connection or a new one, and reads the response head.
    /// When a pooled connection fails the write, or closes before any answer to a GET, HEAD
    /// or OPTIONS, the request goes once more on a new connection; any other request that met
    /// such a close gets 503 `engine_unreachable`, as on hyper's path (the engine may have
    /// acted on it).
    async fn send(
        &mut self,
        port: u16,
        f: &Forward,
        deadline: Option<(Instant, Duration)>,
        mut timer: Pin<&mut Sleep>,
        mut thrown: Pin<&mut WaitForCancellationFutureOwned>,
    ) -> Result<(TcpStream, Answer), NoHead> {
        if let Some((at, _)) = deadline {
            timer.as_mut().reset(at);
        }
        let mut pooled = self.ctx.fast_pool.take(port);
        loop {
            let reused = pooled.is_some();
            let mut up = match pooled.take() {
                Some(up) => up,
                None => connect(port).await.map_err(NoHead::Unreachable)?,
            };
            if let Err(e) = up.write_all(&self.request).await {
                if reused {
                    continue;
                }
                return Err(NoHead::Unreachable(format!("writing the request: {e}")));
            }
            self.up_buf.clear();
            loop {
                let watch = self.buf.len() < self.ctx.limits.max_buf_size();
                let read = tokio::select! {
                    biased;
                    _ = thrown.as_mut() => return Err(NoHead::Aborted),
                    _ = timer.as_mut(), if deadline.is_some() => {
                        return Err(NoHead::TimedOut(deadline.map_or(Duration::ZERO, |d| d.1)));
                    }
                    read = read_into(&mut up, &mut self.up_buf) => read,
                    // A client that leaves ends the request (the next one's bytes are kept).
                    gone = read_into(&mut self.client, &mut self.buf), if watch => match gone {
                        Ok(0) | Err(_) => return Err(NoHead::ClientGone),
                        Ok(_) => continue,
                    },
                };
                match read {
                    Ok(0) | Err(_) if reused && f.resend_safe && self.up_buf.is_empty() => break,
                    Ok(0) => {
                        return Err(NoHead::Unreachable(
                            "the engine closed the connection before its response head".into(),
                        ));
                    }
                    Err(e) => {
                        return Err(NoHead::Unreachable(format!("reading the response: {e}")));
                    }
                    Ok(_) => {}
                }
                loop {
                    // A drain closes the connection after this exchange: the head says so.
                    let close = f.close || self.drain.is_cancelled();
                    match wire::plan_reply(&self.up_buf, f.head_request, close, &mut self.out) {
                        Reply::Partial => break,
                        Reply::Informational(n) => {
                            self.up_buf.drain(..n);
                        }
                        Reply::Final(answer) => return Ok((up, answer)),
                        Reply::Bad(why) => return Err(NoHead::Unreachable(why.into())),
                    }
                }
                if self.up_buf.len() > self.ctx.limits.max_buf_size() {
                    return Err(NoHead::Unreachable(
                        "the engine's response head is too large".into(),
                    ));
                }
            }
        }
    }

    /// Writes one of our own answers (`Response<Body>` with a complete body) to the client.
    /// A HEAD request gets the head only.
    async fn reply(&mut self, answer: Response<Body>, head_request: bool, close: bool) -> bool {
        let (parts, body) = answer.into_parts();
        let body = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            wire::push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        wire::push_header(out, b"content-length", body.len().to_string().as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_request {
            out.extend_from_slice(&body);
        }
        self.client.write_all(out).await.is_ok()
    }
}

async fn connect(port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connecting to 127.0.0.1:{port}: {e}")),
        Err(_) => Err(format!(
            "connecting to 127.0.0.1:{port}: no answer within {CONNECT_TIMEOUT:?}"
        )),
    }
}

/// A response on its way from the engine to the client.
struct Relay<'s> {
    up: TcpStream,
    port: u16,
    answer: Answer,
    clock: BodyClock,
    abort: &'s AbortSignal,
    /// Holds the in-flight count until the body has ended or the client left.
    _tracker: Tracker,
}

/// Where the body stands after one piece.
enum Piece {
    More,
    Ended,
    /// The engine's body failed (why).
    Broken(String),
}

impl Lane<'_> {
    /// Passes the engine's head (already in `out`) and body on. Returns whether the client
    /// connection can go on.
    async fn relay(
        &mut self,
        mut r: Relay<'_>,
        mut timer: Pin<&mut Sleep>,
        mut thrown: Pin<&mut WaitForCancellationFutureOwned>,
    ) -> bool {
        let metrics = &self.ctx.shared.metrics;
        let mut body = BodyLeft {
            left: match r.answer.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: chunked::Decoder::default(),
        };
        // The bytes after the head came with it.
        let mut at = r.answer.head_len;
        loop {
            let (state, data) = frame(&mut r.answer, &mut body, &self.up_buf[at..], &mut self.out);
            if data > 0 {
                metrics.streamed_bytes.inc_by(data as u64);
                r.clock.piece();
            }
            if !self.out.is_empty() && self.client.write_all(&self.out).await.is_err() {
                return false; // the client left: dropping `up` tells the engine
            }
            self.out.clear();
            match state {
                Piece::Ended => {
                    if r.answer.reusable {
                        self.ctx.fast_pool.give(r.up, r.port);
                    }
                    return true;
                }
                Piece::Broken(why) => return self.cut_by(&r, &why).await,
                Piece::More => {}
            }
            self.up_buf.clear();
            at = 0;
            let client = (
                &mut self.client,
                &mut self.buf,
                self.ctx.limits.max_buf_size(),
            );
            match wait_engine(
                &mut r,
                &mut self.up_buf,
                client,
                timer.as_mut(),
                thrown.as_mut(),
            )
            .await
            {
                Wait::ClientGone => return false,
                Wait::Read(Ok(0)) if r.answer.framing == Framing::UntilClose => {
                    self.out.extend_from_slice(wire::LAST_CHUNK);
                    return self.client.write_all(&self.out).await.is_ok();
                }
                Wait::Read(Ok(0)) => {
                    return self
                        .cut_by(&r, "the engine closed the connection before the body ended")
                        .await;
                }
                Wait::Read(Err(e)) => return self.cut_by(&r, &e.to_string()).await,
                Wait::Read(Ok(_)) => {}
                Wait::Expired(expired) => {
                    metrics.request_timeout(expired.kind());
                    let message = expired.message();
                    tracing::warn!(peer = %self.peer, kind = expired.kind(), sse = r.answer.sse, "proxy: {message}");
                    let event = proxy::error_event(&message, "timeout_error", expired.code());
                    return self.cut(&r, event).await;
                }
                Wait::Aborted => {
                    metrics.requests_aborted.inc();
                    let message = proxy::abort_message(r.abort.reason());
                    tracing::warn!(peer = %self.peer, sse = r.answer.sse, "proxy: response cut: {message}");
                    let event =
                        proxy::error_event(&message, "service_unavailable", "engine_restarting");
                    return self.cut(&r, event).await;
                }
            }
        }
    }

    /// The engine's body failed (`why`).
    async fn cut_by(&mut self, r: &Relay<'_>, why: &str) -> bool {
        tracing::warn!(error = %why, sse = r.answer.sse, "proxy: the engine's response was cut");
        self.cut(r, proxy::stream_cut_event(why)).await
    }

    /// Cuts the response: an SSE stream gets `event` as its last chunk; the client connection
    /// is closed without the body's end, so the cut shows. Always false (no next request).
    async fn cut(&mut self, r: &Relay<'_>, event: Bytes) -> bool {
        self.ctx.shared.metrics.responses_cut.inc();
        if r.answer.sse {
            self.out.clear();
            wire::push_chunk(&mut self.out, &event);
            let _ = self.client.write_all(&self.out).await;
        }
        false
    }
}

/// What is left of the engine's body.
struct BodyLeft {
    /// Bytes of a counted body.
    left: u64,
    chunks: chunked::Decoder,
}

/// Puts one read of the engine's body (`piece`) into `out` in the client's framing; marks the
/// connection not reusable when more came than the body. Returns where the body stands and
/// how many bytes of data the piece held.
fn frame(
    answer: &mut Answer,
    body: &mut BodyLeft,
    piece: &[u8],
    out: &mut Vec<u8>,
) -> (Piece, usize) {
    match answer.framing {
        Framing::Empty => {
            answer.reusable &= piece.is_empty();
            (Piece::Ended, 0)
        }
        Framing::Length(_) => {
            let take = piece
                .len()
                .min(usize::try_from(body.left).unwrap_or(usize::MAX));
            answer.reusable &= take == piece.len();
            out.extend_from_slice(&piece[..take]);
            body.left -= take as u64;
            let state = if body.left == 0 {
                Piece::Ended
            } else {
                Piece::More
            };
            (state, take)
        }
        Framing::Chunked => {
            let mut data = 0;
            let fed = body.chunks.feed(piece, |d| {
                data += d.len();
                wire::push_chunk(out, d);
            });
            match fed {
                Ok(chunked::Fed::More) => (Piece::More, data),
                Ok(chunked::Fed::End(n)) => {
                    answer.reusable &= n == piece.len();
                    out.extend_from_slice(wire::LAST_CHUNK);
                    (Piece::Ended, data)
                }
                Err(e) => (Piece::Broken(e.to_string()), data),
            }
        }
        Framing::UntilClose => {
            wire::push_chunk(out, piece);
            (Piece::More, piece.len())
        }
    }
}

/// Waits for the engine's next bytes under the body deadlines and the abort signal.
async fn wait_engine(
    r: &mut Relay<'_>,
    up_buf: &mut Vec<u8>,
    (client, buf, max): (&mut TcpStream, &mut Vec<u8>, usize),
    mut timer: Pin<&mut Sleep>,
    mut thrown: Pin<&mut WaitForCancellationFutureOwned>,
) -> Wait {
    r.clock.pending(Instant::now());
    let deadline = r.clock.deadline();
    if let Some((at, _)) = deadline
        && timer.deadline() != at
    {
        timer.as_mut().reset(at);
    }
    loop {
        let watch = buf.len() < max;
        return tokio::select! {
            biased;
            _ = thrown.as_mut() => Wait::Aborted,
            read = read_into(&mut r.up, up_buf) => Wait::Read(read),
            _ = timer.as_mut(), if deadline.is_some() => {
                Wait::Expired(deadline.map_or(Expired::Gap(Duration::ZERO), |d| d.1))
            }
            gone = read_into(client, buf), if watch => match gone {
                Ok(0) | Err(_) => Wait::ClientGone,
                Ok(_) => continue,
            },
        };
    }
}
