//! The public port: health, readiness, status, metrics, and the engine's API forwarded
//! unbuffered.
//!
//! Layout: every connection starts in `fast`, the fast lane, which forwards plain API requests
//! itself (its own HTTP/1.1 and engine pool) and hands everything else, with the bytes it read,
//! to hyper for the rest of the connection. On hyper's side `router` picks the answer for a
//! path; `health` answers from the supervisor's status
//! (never from the engine); `scrape` (/metrics) assembles our text and the engine's; `proxy` forwards the
//! rest; `target` puts the request target in the one normal form that routing, the key check and
//! the proxy share; `auth` checks the optional API key; `limits` holds the protection knobs; `reply` builds
//! the small JSON answers (OpenAI error shape). `local` is the other side: the blocking GET
//! that `healthcheck` and `status` send to a local supervisor's port.
//!
//! # Shutdown handshake (for the supervisor)
//!
//! 1. The supervisor cancels `shared.stopping` (first SIGTERM/SIGINT/SIGQUIT). From then on new
//!    API requests get 503 (`draining`, with Retry-After) and `/health`, `/health/ready` say 503;
//!    requests already forwarded run on (each holds a `shared.inflight` guard until its response
//!    body has ended or the client went away). Health, `/status` and `/metrics` keep answering.
//! 2. The supervisor waits for `shared.inflight.wait_idle()` (bounded by its grace), stops the
//!    engine, and then sets the phase to `Stopped` (or `Failed`).
//! 3. `serve_public` sees "stopping cancelled AND phase Stopped/Failed", stops accepting, lets
//!    open connections finish their current exchange (idle keep-alive ones are closed at once),
//!    waits at most `PublicConfig::drain_grace` for that, and returns `Ok(())`. The fast lane
//!    does the same: it closes idle connections at once and the others after their exchange.
//!
//! A supervisor that gives up (`Failed`) without a stop request keeps the port serving: `/status`
//! explains the failure and `/health/live` says 503 until the supervisor cancels `stopping`.
//!
//! # Ending the requests in flight (for the supervisor)
//!
//! A hung engine answers nothing, so the requests forwarded to it would wait for the proxy's
//! deadlines (`Limits::first_byte_timeout`, `Limits::stream_gap_timeout`, minutes). When the
//! supervisor decides to restart it, it calls `shared.abort_inflight(reason)` (before or as it
//! kills the engine): each request still waiting for a head is answered 503
//! `engine_restarting` with Retry-After, each response already begun gets a last SSE error
//! event (or is cut), and every upstream request is dropped. It returns at once;
//! `shared.inflight.wait_idle()` resolves when they are all gone. Requests forwarded after the
//! call are not touched.

pub mod auth;
pub mod fast;
pub mod group;
pub mod health;
pub mod limits;
pub mod local;
pub mod proxy;
pub mod reply;
pub mod router;
pub mod scrape;
pub mod target;

use crate::shared::Shared;
use crate::status::Phase;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use limits::Limits;

/// Errors a body may carry on its way through us.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every answer we give (and of every request we forward).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, Clone)]
pub struct PublicConfig {
    pub api_key: Option<String>,
    pub max_connections: usize,
    /// How long a drain waits for in-flight requests.
    pub drain_grace: Duration,
}

/// Everything a request handler needs; one per `serve_public`, shared by all connections.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub api_key: Option<auth::ApiKey>,
    pub client: proxy::Client,
    /// The fast lane's connections to the engine.
    pub fast_pool: fast::Pool,
    pub limits: Limits,
}

/// Serves the public port on `listener` until `shared.stopping` is cancelled and the drain is
/// over. Returns when every connection is closed.
///
/// See the module docs for the exact handshake: it returns once `shared.stopping` is cancelled
/// and the phase is `Stopped` or `Failed`.
pub async fn serve_public(
    listener: TcpListener,
    shared: Arc<Shared>,
    cfg: PublicConfig,
) -> std::io::Result<()> {
    serve_public_with(listener, shared, cfg, Limits::default()).await
}

/// `serve_public` with explicit protection limits (tests shorten the timeouts).
pub async fn serve_public_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    cfg: PublicConfig,
    limits: Limits,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        api_key: cfg.api_key.as_deref().and_then(auth::ApiKey::new),
        client: proxy::client(),
        fast_pool: fast::Pool::default(),
        limits: limits.clone(),
    });
    limits::fit_fd_limit(cfg.max_connections, limits.health_connections);
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(limits.health_connections));
    let peers = limits::PeerCounts::default();
    let reserved_peers = limits::PeerCounts::default();
    let graceful = GracefulShutdown::new();
    // Tells the fast lane's idle connections to close (hyper's get `graceful`'s signal).
    let drain = tokio_util::sync::CancellationToken::new();
    let (builder, last) = connection_builders(&limits);
    // Reserved connections: one request, a short head timeout, health and /status only.
    let mut reserved = http1::Builder::new();
    reserved
        .timer(TokioTimer::new())
        .header_read_timeout(limits.reserved_head_timeout())
        .max_buf_size(limits.max_buf_size())
        .max_header_size(limits.max_header_bytes)
        .keep_alive(false);

    let finished = finished(&shared);
    tokio::pin!(finished);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut finished => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning; the cap on
                    // connections normally keeps us far from the fd limit.
                    tracing::warn!(error = %err, "public port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Token streams are many small writes: Nagle would add up to 40 ms per chunk.
        let _ = stream.set_nodelay(true);
        let full = peers
            .try_enter(peer.ip(), limits.max_connections_per_peer)
            .and_then(|slot| Some((slot, permits.clone().try_acquire_owned().ok()?)));
        let Some(held) = full else {
            // Over a cap: health may still be asked on a reserved slot; with none left,
            // answer 503 at once and close rather than leave the client in the backlog.
            let slot = reserved_peers
                .try_enter(peer.ip(), limits.reserved_per_peer())
                .and_then(|slot| Some((slot, reserve.clone().try_acquire_owned().ok()?)));
            let Some(held) = slot else {
                tokio::spawn(limits::refuse_over_capacity(stream));
                continue;
            };
            let ctx = ctx.clone();
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(router::handle_reserved(&ctx, req).await) }
            });
            let conn = graceful.watch(reserved.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = conn.await;
                drop(held);
            });
            continue;
        };
        let lane = Handover {
            builder: builder.clone(),
            last: last.clone(),
            watcher: graceful.watcher(),
            drain: drain.clone(),
        };
        tokio::spawn(serve_connection(ctx.clone(), stream, peer, lane, held));
    }
    drop(listener);
    drain.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(cfg.drain_grace) => {
            tracing::warn!(grace = ?cfg.drain_grace, "public port: connections still open after the grace; closing");
        }
    }
    Ok(())
}

/// hyper's settings for the connections the lane hands over, and for one handed over once
/// the drain has begun: hyper's graceful signal came before it and would close it unread, so
/// it answers its one request (503 `draining` for the API) and closes.
fn connection_builders(limits: &Limits) -> (Arc<http1::Builder>, Arc<http1::Builder>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size())
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let mut last = builder.clone();
    last.keep_alive(false);
    (Arc::new(builder), Arc::new(last))
}

/// What a connection's task needs besides the request context.
struct Handover {
    builder: Arc<http1::Builder>,
    /// For a connection handed over during the drain: one request, then closed.
    last: Arc<http1::Builder>,
    /// Held until the task ends: `graceful.shutdown()` waits for the lane's connections too.
    watcher: hyper_util::server::graceful::Watcher,
    /// Cancelled when the drain begins: the lane closes its idle connections.
    drain: tokio_util::sync::CancellationToken,
}

/// Serves one public connection: the fast lane first, then hyper for whatever the lane hands
/// over, to the end of the connection. `held` is its slot under the caps.
async fn serve_connection<H>(
    ctx: Arc<Ctx>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    lane: Handover,
    held: H,
) {
    if let fast::End::Handoff(stream, read) = fast::serve(&ctx, stream, peer, &lane.drain).await {
        let service = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(router::handle(ctx, req, peer).await) }
        });
        let io = TokioIo::new(fast::Rewind::new(read, stream));
        let ended = if lane.drain.is_cancelled() {
            // Still bounded: `graceful.shutdown()` waits for `watcher` only up to the grace.
            lane.last.serve_connection(io, service).await
        } else {
            let conn = lane.builder.serve_connection(io, service);
            lane.watcher.watch(conn).await
        };
        if let Err(err) = ended {
            tracing::debug!(error = %err, %peer, "public port: connection ended with an error");
        }
    }
    drop(held);
}

/// Resolves when the supervisor is done: a stop was asked and the phase is terminal.
async fn finished(shared: &Shared) {
    shared.stopping.cancelled().await;
    let mut rx = shared.status.subscribe();
    // The sender lives in `shared`, which we hold: `wait_for` cannot fail while we wait.
    let _ = rx
        .wait_for(|s| matches!(s.phase, Phase::Stopped | Phase::Failed))
        .await;
}
