//! Integration tests: the public port (`http::serve_public`), in process against a small
//! controllable upstream that plays the engine, plus `healthcheck`/`status` through the real
//! binary.

use crate::support::free_port;
use aim_engine::http::{Limits, PublicConfig, serve_public_with};
use aim_engine::shared::Shared;
use aim_engine::status::Phase;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------- the fake upstream

/// What the upstream saw and how it behaves.
#[derive(Default)]
struct Upstream {
    /// A stream ended because the reader went away.
    cancelled: AtomicBool,
    /// Streams that ran to their end.
    completed: AtomicUsize,
    /// `/metrics` takes 3 s when set.
    slow_metrics: AtomicBool,
    /// A `/slow` request was dropped before its answer (its connection closed under it).
    slow_abandoned: AtomicBool,
}

/// Sets `slow_abandoned` when dropped before `done` is called.
struct AbandonGuard(Arc<Upstream>, bool);

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.slow_abandoned.store(true, Ordering::SeqCst);
        }
    }
}

/// A response body fed by a channel (the upstream writes tokens into it).
struct ChanBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> UpBody {
    Full::new(s.into()).boxed_unsync()
}

/// How a `/stream` goes: `/stream?n=N&ms=M&first=F&stall=1&json=1`.
#[derive(Default, Clone, Copy)]
struct StreamShape {
    /// Before the first event.
    first: Duration,
    /// After the N events, never end (until the reader goes away).
    stall: bool,
    /// `application/json` instead of `text/event-stream`.
    json: bool,
}

/// `/stream?n=N&ms=M`: N SSE events M ms apart (shaped as `shape` says).
fn sse_shaped(up: Arc<Upstream>, n: usize, gap: Duration, shape: StreamShape) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(shape.first) => {}
            _ = tx.closed() => {
                up.cancelled.store(true, Ordering::SeqCst);
                return;
            }
        }
        for i in 0..n {
            let event = format!("data: {{\"token\":{i}}}\n\n");
            if tx.send(Bytes::from(event)).await.is_err() {
                up.cancelled.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(gap).await;
        }
        if shape.stall {
            tx.closed().await;
            up.cancelled.store(true, Ordering::SeqCst);
            return;
        }
        if tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .is_err()
        {
            up.cancelled.store(true, Ordering::SeqCst);
            return;
        }
        up.completed.fetch_add(1, Ordering::SeqCst);
    });
    let content_type = if shape.json {
        "application/json"
    } else {
        "text/event-stream"
    };
    Response::builder()
        .header("content-type", content_type)
        .body(ChanBody(rx).boxed_unsync())
        .expect("response")
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

async fn upstream_handle(up: Arc<Upstream>, req: Request<Incoming>) -> Response<UpBody> {
    match req.uri().path() {
        "/v1/models" => Response::new(full(r#"{"object":"list","data":[{"id":"m"}]}"#)),
        "/version" => Response::new(full(r#"{"version":"0.11.0"}"#)),
        "/metrics" => {
            if up.slow_metrics.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Response::new(full(
                "# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n",
            ))
        }
        "/slow" => {
            // A long non-streamed generation: the answer (headers and all) comes after `ms`.
            let ms = query(&req, "ms").unwrap_or(3000);
            let mut guard = AbandonGuard(up.clone(), false);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            guard.1 = true;
            Response::new(full(r#"{"choices":[{"text":"late"}]}"#))
        }
        "/stream" => {
            let n = query(&req, "n").unwrap_or(5) as usize;
            let ms = query(&req, "ms").unwrap_or(100);
            let shape = StreamShape {
                first: Duration::from_millis(query(&req, "first").unwrap_or(0)),
                stall: query(&req, "stall") == Some(1),
                json: query(&req, "json") == Some(1),
            };
            sse_shaped(up, n, Duration::from_millis(ms), shape)
        }
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
                .collect();
            let target = req.uri().to_string();
            let method = req.method().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let v = serde_json::json!({
                "headers": headers, "target": target, "method": method,
                "body": String::from_utf8_lossy(&body),
            });
            Response::new(full(v.to_string()))
        }
        _ => Response::builder()
            .status(404)
            .body(full("not found"))
            .expect("response"),
    }
}

async fn start_upstream() -> (u16, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    let up = Arc::new(Upstream::default());
    let state = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(upstream_handle(state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, up)
}

// ---------------------------------------------------------------- the port under test

struct Harness {
    addr: SocketAddr,
    shared: Arc<Shared>,
    up: Arc<Upstream>,
    engine_port: u16,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn test_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        engine_metrics_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

async fn start(phase: Phase, api_key: Option<&str>) -> Harness {
    start_with(phase, api_key, 64).await
}

async fn start_with(phase: Phase, api_key: Option<&str>, max_connections: usize) -> Harness {
    start_limited(phase, api_key, max_connections, test_limits()).await
}

async fn start_limited(
    phase: Phase,
    api_key: Option<&str>,
    max_connections: usize,
    limits: Limits,
) -> Harness {
    let (engine_port, up) = start_upstream().await;
    let shared = Arc::new(Shared::new("test/model", engine_port));
    shared.set_phase(phase);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
    let addr = listener.local_addr().expect("addr");
    let cfg = PublicConfig {
        api_key: api_key.map(str::to_string),
        max_connections,
        drain_grace: Duration::from_secs(2),
    };
    let served = tokio::spawn(serve_public_with(listener, shared.clone(), cfg, limits));
    Harness {
        addr,
        shared,
        up,
        engine_port,
        served,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client().request(req).await.expect("answer");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, "GET", path, &[], "").await
}

fn assert_openai_error(a: &Answer, code: &str) {
    let v = a.json();
    assert_eq!(v["error"]["code"], code, "{}", a.body);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"]["type"].is_string());
    assert!(v["error"].get("param").is_some());
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn each_endpoint_in_each_phase() {
    for &phase in Phase::ALL {
        let h = start(phase, None).await;
        let ready = phase == Phase::Ready;
        let live = phase != Phase::Failed;
        let code = |ok: bool| {
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        for path in ["/health", "/health/ready", "/v1/health/ready"] {
            assert_eq!(
                get(h.addr, path).await.status,
                code(ready),
                "{phase} {path}"
            );
        }
        for path in ["/health/live", "/v1/health/live"] {
            assert_eq!(get(h.addr, path).await.status, code(live), "{phase} {path}");
        }
        let status = get(h.addr, "/status").await;
        assert_eq!(status.status, StatusCode::OK);
        assert_eq!(status.json()["phase"], phase.as_str());
        assert_eq!(status.json()["model"], "test/model");
        let metrics = get(h.addr, "/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert!(
            metrics
                .body
                .contains(&format!("aim_phase{{phase=\"{phase}\"}} 1")),
            "{phase}: {}",
            metrics.body
        );
        let api = get(h.addr, "/v1/models").await;
        if ready {
            assert_eq!(api.status, StatusCode::OK, "{phase}");
            assert_eq!(api.json()["data"][0]["id"], "m");
        } else {
            assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE, "{phase}");
            let want_retry = phase != Phase::Failed;
            assert_eq!(
                api.headers.contains_key("retry-after"),
                want_retry,
                "{phase}"
            );
            let code = match phase {
                Phase::Failed => "engine_failed",
                Phase::Restarting => "engine_restarting",
                Phase::Draining | Phase::Stopped => "draining",
                _ => "engine_loading",
            };
            assert_openai_error(&api, code);
        }
    }
}

#[tokio::test]
async fn fatal_is_never_cleared_and_restart_answers_503() {
    let h = start(Phase::Ready, None).await;
    assert_eq!(get(h.addr, "/health").await.status, StatusCode::OK);
    h.shared.set_phase(Phase::Restarting);
    let a = get(h.addr, "/v1/completions").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "5");
    assert_eq!(get(h.addr, "/health/live").await.status, StatusCode::OK);
    // Given up: a later "ready" from a stray probe must not make us healthy again.
    h.shared
        .status
        .send_modify(|s| s.fatal = Some("gave up".into()));
    h.shared.set_phase(Phase::Failed);
    h.shared.set_phase(Phase::Ready);
    assert_eq!(
        get(h.addr, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(h.addr, "/health/live").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(h.addr, "/status").await.json()["fatal"], "gave up");
}

/// Reads the stream at `url` and returns when (since the request) each chunk arrived.
async fn chunk_times(url: String) -> Vec<(Duration, Bytes)> {
    let t = Instant::now();
    let req = Request::post(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            out.push((t.elapsed(), data));
        }
    }
    out
}

#[tokio::test]
async fn streamed_completion_arrives_in_pieces_at_the_direct_pace() {
    let h = start(Phase::Ready, None).await;
    // Tokens 200 ms apart; on a loaded CI machine scheduling noise stays well below that.
    let path = "/stream?n=5&ms=200";
    let (direct, proxied) = tokio::join!(
        chunk_times(format!("http://127.0.0.1:{}{path}", h.engine_port)),
        chunk_times(format!("http://{}{path}", h.addr)),
    );
    assert_eq!(proxied.len(), 6, "5 events and [DONE] as separate chunks");
    let text: Vec<u8> = proxied.iter().flat_map(|(_, b)| b.to_vec()).collect();
    let direct_text: Vec<u8> = direct.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(text, direct_text);
    // Not buffered: the first token arrives long before the last one is written.
    assert!(
        proxied[0].0 < Duration::from_millis(200),
        "first chunk at {:?}",
        proxied[0].0
    );
    assert!(proxied[5].0 >= Duration::from_millis(5 * 120));
    for ((td, _), (tp, _)) in direct.iter().zip(&proxied) {
        let gap = tp.abs_diff(*td);
        assert!(
            gap < Duration::from_millis(60),
            "direct {td:?} vs proxied {tp:?}"
        );
    }
    assert_eq!(h.shared.inflight.count(), 0);
    let m = get(h.addr, "/metrics").await.body;
    assert!(
        m.contains("aim_proxied_requests_total{code=\"2xx\"} 1"),
        "{m}"
    );
    assert!(!m.contains("aim_streamed_bytes_total 0\n"), "{m}");
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_upstream() {
    let h = start(Phase::Ready, None).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /stream?n=50&ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(h.shared.inflight.count(), 1);
    drop(s);
    let t = Instant::now();
    while !h.up.cancelled.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "upstream never saw the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
        .await
        .expect("in-flight count back to zero");
    assert_eq!(h.up.completed.load(Ordering::SeqCst), 0);
}

/// A client that leaves while the engine is still working on a non-streamed answer (no
/// headers yet) closes the upstream request too, so the engine can abort the generation.
#[tokio::test]
async fn client_gone_before_the_headers_cancels_upstream() {
    let h = start(Phase::Ready, None).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    while h.shared.inflight.count() == 0 {
        assert!(t.elapsed() < Duration::from_secs(3), "never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(s);
    let t = Instant::now();
    while !h.up.slow_abandoned.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the engine kept working for a client that left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
        .await
        .expect("in-flight count back to zero");
}

#[tokio::test]
async fn api_key_accepted_and_refused() {
    let h = start(Phase::Ready, Some("s3cret")).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "s3cret")],
    ] {
        let a = send(h.addr, "GET", "/v1/models", &headers, "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_openai_error(&a, "invalid_api_key");
    }
    let ok = send(
        h.addr,
        "POST",
        "/v1/echo",
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    // The upstream has no /v1/echo: 404 from it proves we forwarded.
    assert_eq!(ok.status, StatusCode::NOT_FOUND);
    let models = send(
        h.addr,
        "GET",
        "/v1/models",
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(models.status, StatusCode::OK);
    // Open without a key.
    for path in [
        "/health",
        "/health/live",
        "/v1/health/live",
        "/v1/health/ready",
        "/metrics",
        "/status",
        "/version",
    ] {
        assert_eq!(get(h.addr, path).await.status, StatusCode::OK, "{path}");
    }
    // The header reaches the engine unchanged.
    let echo = send(
        h.addr,
        "GET",
        "/echo",
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(echo.json()["headers"]["authorization"], "Bearer s3cret");
}

#[tokio::test]
async fn request_is_forwarded_with_sensible_headers() {
    let h = start(Phase::Ready, None).await;
    let a = send(
        h.addr,
        "POST",
        "/echo?a=1&b=two",
        &[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("proxy-authorization", "Basic x"),
            ("x-custom", "kept"),
            ("content-type", "application/json"),
        ],
        r#"{"prompt":"hi"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["target"], "/echo?a=1&b=two");
    assert_eq!(v["body"], r#"{"prompt":"hi"}"#);
    let hd = &v["headers"];
    assert_eq!(hd["x-custom"], "kept");
    assert_eq!(hd["content-type"], "application/json");
    assert!(hd.get("x-hop").is_none(), "{hd}");
    assert!(hd.get("proxy-authorization").is_none(), "{hd}");
    assert_eq!(hd["host"], format!("127.0.0.1:{}", h.engine_port));
    assert_eq!(hd["x-forwarded-host"], h.addr.to_string());
    assert_eq!(hd["x-forwarded-for"], "127.0.0.1");
    assert_eq!(hd["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn drain_completes_inflight_streams_refuses_new_ones_then_returns() {
    let h = start(Phase::Ready, None).await;
    let url = format!("http://{}/stream?n=6&ms=100", h.addr);
    let stream = tokio::spawn(chunk_times(url));
    // Wait until the stream is in flight, then ask for a stop.
    let t = Instant::now();
    while h.shared.inflight.count() == 0 {
        assert!(t.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.shared.stopping.cancel();
    let refused = get(h.addr, "/v1/models").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.contains_key("retry-after"));
    assert_openai_error(&refused, "draining");
    assert_eq!(
        get(h.addr, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(h.addr, "/health/live").await.status, StatusCode::OK);
    // The supervisor's side of the handshake.
    h.shared.set_phase(Phase::Draining);
    tokio::time::timeout(Duration::from_secs(3), h.shared.inflight.wait_idle())
        .await
        .expect("drained");
    let chunks = stream.await.expect("stream task");
    assert_eq!(chunks.len(), 7, "the in-flight stream ran to its end");
    assert_eq!(h.up.completed.load(Ordering::SeqCst), 1);
    assert_eq!(get(h.addr, "/status").await.json()["phase"], "draining");
    assert!(
        !h.served.is_finished(),
        "still serving health until the phase is terminal"
    );
    h.shared.set_phase(Phase::Stopped);
    let done = tokio::time::timeout(Duration::from_secs(2), h.served)
        .await
        .expect("serve_public returned");
    assert!(done.expect("task").is_ok());
    assert!(TcpStream::connect(h.addr).await.is_err(), "listener closed");
}

async fn health_latency(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let a = get(addr, "/health").await;
    assert_eq!(a.status, StatusCode::OK);
    t.elapsed()
}

#[tokio::test]
async fn slowloris_and_oversized_headers_refused_while_health_stays_fast() {
    // Slow heads are cut after 2 s; health must answer well before that (not queued behind).
    let limits = Limits {
        header_read_timeout: Duration::from_secs(2),
        ..test_limits()
    };
    let h = start_limited(Phase::Ready, None, 64, limits).await;
    // Ten clients that never finish their request head.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(s);
    }
    assert!(health_latency(h.addr).await < Duration::from_secs(1));
    // Cut off after the header read timeout: EOF or a 408, never a hang.
    for mut s in slow {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "slow client still connected after 5 s");
        let text = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // A 100 KiB header: refused with 431, and health is still fast.
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let big = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(health_latency(h.addr).await < Duration::from_secs(1));
}

#[tokio::test]
async fn over_the_connection_cap_gets_503_at_once() {
    let h = start_with(Phase::Ready, None, 2).await;
    // Two idle keep-alive connections hold both permits.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // Over the cap an API request gets 503 at once (health would still be answered there,
    // see `health_answers_under_a_connection_flood`).
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("answered at once")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("over_capacity"), "{text}");
    // A connection that says nothing there is closed after the short head timeout.
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("closed")
        .expect("read");
    drop(held);
    // Permits come back when those connections close.
    let t = Instant::now();
    loop {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "permits never returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_include_ours_and_the_engines_and_never_hang() {
    let h = start(Phase::Ready, None).await;
    let m = get(h.addr, "/metrics").await;
    assert_eq!(
        m.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(m.body.contains("aim_ready 1\n"), "{}", m.body);
    assert!(
        m.body.contains("# TYPE aim_engine_starts_total counter"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("vllm:num_requests_running 0.0\n"),
        "{}",
        m.body
    );
    assert!(m.body.find("aim_ready").expect("ours") < m.body.find("vllm:").expect("engine's"));
    assert!(!m.body.contains("# EOF"));
    // A stuck engine costs a scrape at most the short timeout (300 ms in tests).
    h.up.slow_metrics.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let m = get(h.addr, "/metrics").await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(m.body.contains("aim_ready 1\n"));
    assert!(
        m.body.contains("# engine metrics unavailable"),
        "{}",
        m.body
    );
    assert!(!m.body.contains("vllm:"));
}

#[tokio::test]
async fn engine_gone_while_ready_is_a_503_with_retry_after_in_openai_shape() {
    let h = start(Phase::Ready, None).await;
    // First a port nobody listens on (connection refused), then an engine that takes the
    // request and closes without a response line (it died under it).
    let dead = free_port();
    h.shared.engine_port.store(dead, Ordering::SeqCst);
    let a = get(h.addr, "/v1/models").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers["retry-after"], "5");
    assert_openai_error(&a, "engine_unreachable");
    assert!(a.body.contains("refused"), "{}", a.body);
    let closer = raw_upstream(b"").await;
    h.shared.engine_port.store(closer, Ordering::SeqCst);
    let a = get(h.addr, "/v1/models").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers["retry-after"], "5");
    assert_openai_error(&a, "engine_unreachable");
    assert_eq!(h.shared.inflight.count(), 0);
    let m = get(h.addr, "/metrics").await.body;
    assert!(
        m.contains("aim_proxied_requests_total{code=\"error\"} 2"),
        "{m}"
    );
}

/// An upstream that answers every connection with `bytes` (after reading the request head) and
/// then closes it: an engine that crashes mid-response.
async fn raw_upstream(bytes: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(bytes).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// One raw request to the public port; everything read until the proxy closed the connection.
async fn raw_exchange(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the cut response was never ended: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// The engine dies mid-response: the client gets the bytes the engine sent and then a cut it can
/// see (no terminating chunk, or fewer bytes than Content-Length), never a response that looks
/// complete. An SSE stream ends with an OpenAI-shaped error event first.
#[tokio::test]
async fn engine_cut_mid_response_is_a_visible_cut_never_a_clean_end() {
    const SSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
        transfer-encoding: chunked\r\n\r\n13\r\ndata: {\"token\":0}\n\n\r\n";
    const JSON_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        transfer-encoding: chunked\r\n\r\n9\r\n{\"choices\r\n";
    const COUNTED: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":1,";
    const SSE_COUNTED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        content-length: 100\r\n\r\ndata: {\"token\":0}\n\n";
    // (upstream bytes, body bytes the client must get, error event expected, chunked)
    let cases: [(&[u8], &str, bool, bool); 4] = [
        (SSE, "data: {\"token\":0}\n\n", true, true),
        (JSON_CHUNKED, "{\"choices", false, true),
        (COUNTED, "{\"id\":1,", false, false),
        (SSE_COUNTED, "data: {\"token\":0}\n\n", false, false),
    ];
    let h = start(Phase::Ready, None).await;
    for (i, (upstream, sent, event, chunked)) in cases.into_iter().enumerate() {
        let port = raw_upstream(upstream).await;
        h.shared.engine_port.store(port, Ordering::SeqCst);
        let got = raw_exchange(h.addr, "/v1/completions").await;
        let (head, body) = got.split_once("\r\n\r\n").expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "case {i}: {got}");
        let lower = head.to_ascii_lowercase();
        if chunked {
            assert!(
                lower.contains("transfer-encoding: chunked"),
                "case {i}: {got}"
            );
            // Decode the chunks: all of them must be complete, and none is the last (size 0).
            let mut rest = body;
            let mut data = String::new();
            while !rest.is_empty() {
                let (size, after) = rest.split_once("\r\n").expect("chunk size line");
                let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
                assert_ne!(size, 0, "case {i}: a terminating chunk after a cut: {got}");
                data.push_str(&after[..size]);
                rest = after[size..].strip_prefix("\r\n").expect("chunk end");
            }
            assert!(data.starts_with(sent), "case {i}: {data:?}");
            let tail = &data[sent.len()..];
            if event {
                let json = tail
                    .strip_prefix("\n\ndata: ")
                    .and_then(|t| t.strip_suffix("\n\n"))
                    .unwrap_or_else(|| panic!("case {i}: no error event: {tail:?}"));
                let v: serde_json::Value = serde_json::from_str(json).expect("event JSON");
                assert_eq!(v["error"]["code"], "engine_stream_cut", "{v}");
                assert_eq!(v["error"]["type"], "engine_error", "{v}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("cut")),
                    "{v}"
                );
            } else {
                assert_eq!(tail, "", "case {i}: bytes added to a non-SSE body");
            }
        } else {
            assert!(lower.contains("content-length: 100"), "case {i}: {got}");
            assert_eq!(
                body, sent,
                "case {i}: the body must stay short of its length"
            );
        }
        tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
            .await
            .expect("in-flight count back to zero");
        assert_eq!(
            h.shared.metrics.responses_cut.get(),
            i as u64 + 1,
            "case {i}"
        );
    }
    let m = h.shared.metrics.render();
    assert!(m.contains("aim_responses_cut_total 4\n"), "{m}");
}

// ---------------------------------------------------------------- the real binary

async fn run_bin(args: &[String]) -> (i32, String) {
    let args = args.to_vec();
    let out =
        tokio::task::spawn_blocking(move || crate::support::AimEngine::new().args(&args).output())
            .await
            .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_and_status_commands() {
    let h = start(Phase::Loading, None).await;
    let port = h.addr.port().to_string();
    let hc = |extra: &[&str]| {
        let mut v = vec!["healthcheck".to_string(), "--port".into(), port.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(run_bin(&hc(&[])).await.0, 1, "loading is not ready");
    h.shared.set_phase(Phase::Ready);
    assert_eq!(run_bin(&hc(&[])).await.0, 0);
    let (code, out) = run_bin(&hc(&["--verbose"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("phase:     ready"), "{out}");
    let (code, out) = run_bin(&[
        "status".into(),
        "--port".into(),
        port.clone(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["phase"], "ready");
    assert_eq!(v["model"], "test/model");
    let (code, out) = run_bin(&["status".into(), "--port".into(), port]).await;
    assert_eq!(code, 0);
    assert!(out.contains("model:     test/model"), "{out}");
    // Nobody listening: exit 1, quickly.
    let dead = free_port();
    let t = Instant::now();
    let (code, _) = run_bin(&["healthcheck".into(), "--port".into(), dead.to_string()]).await;
    assert_eq!(code, 1);
    assert!(t.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------- end to end

/// One blocking request with `Connection: close`: (status line + headers, body chunks with the
/// time each read returned).
fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(String, Vec<(Duration, String)>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    s.write_all(req.as_bytes()).ok()?;
    let mut reads = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reads.push((t.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(_) => return None,
        }
    }
    let all: String = reads.iter().map(|(_, r)| r.as_str()).collect();
    let (head, _) = all.split_once("\r\n\r\n")?;
    Some((head.to_string(), reads))
}

#[test]
fn end_to_end_through_the_real_binary_and_the_fake_engine() {
    let mut run = crate::support::AimEngine::new()
        .fixture("mi300x-8gpu-spx")
        .arg("aim-test/Tiny-7B")
        .public_port()
        .args(["--engine-port", &free_port().to_string()])
        .fake_engine()
        .env("AIM_STOP_TIMEOUT", "5s")
        .offline_hf()
        .env("FAKE_LOAD_SECS", "1.5")
        .env("FAKE_TOKEN_DELAY_MS", "60")
        .env("FAKE_STREAM_TOKENS", "6")
        .spawn();
    let port = run.port;
    let err_log = run.path("err.log");
    let stderr = || std::fs::read_to_string(&err_log).unwrap_or_default();
    let status_of = |path: &str| raw_request(port, "GET", path, "").map(|(h, _)| h);

    // While the engine loads: alive, not ready, API refused with Retry-After.
    let t = Instant::now();
    let mut saw_loading = false;
    let ready = loop {
        if let Some(head) = status_of("/health/ready") {
            if head.starts_with("HTTP/1.1 200") {
                break true;
            }
            let live = status_of("/health/live").unwrap_or_default();
            let api = status_of("/v1/models").unwrap_or_default();
            if api.starts_with("HTTP/1.1 503") {
                assert!(live.starts_with("HTTP/1.1 200"), "{live}");
                assert!(api.to_ascii_lowercase().contains("retry-after: 5"), "{api}");
                saw_loading = true;
            }
        }
        if t.elapsed() > Duration::from_secs(30) || run.child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready, "never ready: {}", stderr());
    assert!(saw_loading, "the load phase was never observed");

    // A streamed completion through us arrives in pieces, token by token.
    let (_, models) = raw_request(port, "GET", "/v1/models", "").expect("models");
    let models: String = models.iter().map(|(_, r)| r.as_str()).collect();
    let body = models
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let id = v["data"][0]["id"].as_str().expect("model id").to_string();
    let req = serde_json::json!({"model": id, "prompt": "Hello", "max_tokens": 6, "stream": true})
        .to_string();
    let (head, reads) = raw_request(port, "POST", "/v1/completions", &req).expect("completion");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text: String = reads.iter().map(|(_, r)| r.as_str()).collect();
    assert!(text.contains("data: [DONE]"), "{text}");
    let with_data: Vec<Duration> = reads
        .iter()
        .filter(|(_, r)| r.contains("data:"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        with_data.len() >= 4,
        "tokens were batched: {} reads",
        with_data.len()
    );
    assert!(with_data[with_data.len() - 1] - with_data[0] >= Duration::from_millis(200));

    // Metrics: ours, then the engine's.
    let (_, m) = raw_request(port, "GET", "/metrics", "").expect("metrics");
    let m: String = m.iter().map(|(_, r)| r.as_str()).collect();
    assert!(m.contains("aim_ready 1"), "{m}");
    assert!(m.contains("vllm:"), "{m}");
    assert!(
        m.contains("aim_proxied_requests_total{code=\"2xx\"}"),
        "{m}"
    );

    // SIGTERM: the supervisor drains, stops the engine, and serve_public lets it exit.
    run.signal(libc::SIGTERM);
    run.exit_code(Duration::from_secs(15));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

// ---------------------------------------------------------------- request targets

/// One raw request (`Connection: close` added) to the public port; the whole answer.
async fn raw_answer(addr: SocketAddr, request_line: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{request_line}\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Every spelling of a protected path that a percent-decoding engine (uvicorn) would route to
/// `/v1/models` needs the key: without it the answer is 401 or 400, never the engine's 200.
#[tokio::test]
async fn api_key_is_checked_on_every_spelling_of_a_protected_path() {
    let h = start(Phase::Ready, Some("s3cret")).await;
    for path in [
        "/v1%2Fmodels",
        "/v1%2fmodels",
        "/%76%31/models",
        "/%76%31%2F%6d%6f%64%65%6c%73",
        "/v1/%6dodels",
        "//v1/models",
        "/v1//models",
        "/x/../v1/models",
        "/x/%2e%2e/v1/models",
        "/v1/./models",
        "/./v1/models",
        "/v1%5Cmodels",
        "/v1\\models",
    ] {
        let a = raw_answer(h.addr, &format!("GET {path} HTTP/1.1"), "").await;
        assert!(
            a.starts_with("HTTP/1.1 401") || a.starts_with("HTTP/1.1 400"),
            "{path}: {a}"
        );
    }
    // With the key, a decodable spelling is forwarded in the form that was checked.
    let auth = "Authorization: Bearer s3cret\r\n";
    let a = raw_answer(h.addr, "GET /%76%31/models HTTP/1.1", auth).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let a = raw_answer(h.addr, "GET //%65cho?a=%2F HTTP/1.1", auth).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.contains(r#""target":"/echo?a=%2F""#), "{a}");
    // Encoded slashes and dot segments are refused whatever the key.
    for path in ["/v1%2Fmodels", "/a/../echo", "/echo/."] {
        let a = raw_answer(h.addr, &format!("GET {path} HTTP/1.1"), auth).await;
        assert!(a.starts_with("HTTP/1.1 400"), "{path}: {a}");
        assert!(a.contains("bad_target"), "{path}: {a}");
    }
}

/// Only origin-form targets are forwarded: `OPTIONS *` is answered by us, every other
/// asterisk-form, absolute-form or authority-form target is a 400 and reaches nobody.
#[tokio::test]
async fn asterisk_and_absolute_form_targets_never_leave_the_port() {
    let h = start(Phase::Ready, None).await;
    let a = raw_answer(h.addr, "OPTIONS * HTTP/1.1", "").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.to_ascii_lowercase().contains("allow: "), "{a}");
    for line in [
        "POST * HTTP/1.1",
        "GET * HTTP/1.1",
        "GET http://127.0.0.1:80/v1/models HTTP/1.1",
        &format!("GET http://127.0.0.1:{}/echo HTTP/1.1", h.engine_port),
        "CONNECT 127.0.0.1:80 HTTP/1.1",
    ] {
        let a = raw_answer(h.addr, line, "").await;
        assert!(a.starts_with("HTTP/1.1 400"), "{line}: {a}");
        assert!(a.contains("bad_target"), "{line}: {a}");
    }
}

// ---------------------------------------------------------------- floods

/// A connection to the port from `source` (another loopback address plays another client).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{source}:0").parse().expect("source"))
        .expect("bind the source address");
    sock.connect(addr).await.expect("connect")
}

/// One client (127.0.0.2) holds more connections than the port takes, idle, slowloris and
/// slow-body ones mixed; another (127.0.0.1: Docker's or the kubelet's probe) still gets
/// `/health/live` and `aim-engine healthcheck` answered, and the flooder's API requests get
/// 503 `over_capacity` rather than hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_under_a_connection_flood() {
    let h = start_with(Phase::Ready, None, 32).await;
    let mut flood = Vec::new();
    for i in 0..120 {
        let mut s = connect_from("127.0.0.2", h.addr).await;
        match i % 3 {
            0 => {}
            1 => {
                let _ = s
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await;
            }
            _ => {
                let _ = s
                    .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
                    .await;
            }
        }
        flood.push(s);
    }
    for path in ["/health/live", "/health", "/v1/health/ready"] {
        let a = get(h.addr, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let port = h.addr.port().to_string();
    let (code, _) = run_bin(&["healthcheck".into(), "--port".into(), port]).await;
    assert_eq!(code, 0, "aim-engine healthcheck under the flood");
    // The flooder's next API request is refused at once, not queued.
    let mut s = connect_from("127.0.0.2", h.addr).await;
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("over_capacity"), "{text}");
    drop(flood);
}

// ---------------------------------------------------------------- client faults

/// A request body that stalls is cut after the body read timeout with 408, and counted as a
/// client fault (4xx), never as an engine that did not answer.
#[tokio::test]
async fn stalled_request_body_is_a_408_client_fault() {
    let h = start(Phase::Ready, None).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("cut after the body read timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    let m = h.shared.metrics.render();
    assert!(
        m.contains(r#"aim_proxied_requests_total{code="4xx"} 1"#),
        "{m}"
    );
    assert!(!m.contains(r#"code="error""#), "{m}");
}

/// A client that goes away in the middle of its body is counted as 499 (client closed), not
/// as an engine error.
#[tokio::test]
async fn client_gone_mid_body_is_a_499_not_an_engine_error() {
    let h = start(Phase::Ready, None).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    // Wait until the request is being forwarded, then leave.
    let t = Instant::now();
    while h.shared.inflight.count() == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "never forwarded");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
    let t = Instant::now();
    loop {
        let m = h.shared.metrics.render();
        assert!(!m.contains(r#"code="error""#), "{m}");
        if m.contains(r#"aim_proxied_requests_total{code="499"} 1"#) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An idle keep-alive connection is closed after the header read timeout (hyper runs that
/// timer whenever it waits for a request head), so idle connections cannot hold the cap.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_read_timeout() {
    let h = start(Phase::Ready, None).await; // header_read_timeout: 300 ms
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Now idle: the server ends the connection (EOF, or a 408 first) well within 5 s.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("idle connection closed by the server")
        .expect("read");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

// ---------------------------------------------------------------- deadlines and the abort hook

fn deadline_limits(first_byte: Duration, gap: Duration) -> Limits {
    Limits {
        first_byte_timeout: first_byte,
        stream_gap_timeout: gap,
        ..test_limits()
    }
}

/// What a streamed answer brought: each data piece with when it came, and how it ended.
struct Streamed {
    status: StatusCode,
    pieces: Vec<(Duration, String)>,
    /// The body ended with an error (a cut), and when.
    cut: Option<Duration>,
    /// When the body ended cleanly.
    ended: Option<Duration>,
}

async fn stream_of(addr: SocketAddr, path: &str) -> Streamed {
    let t = Instant::now();
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("answer");
    let status = resp.status();
    let mut body = resp.into_body();
    let mut out = Streamed {
        status,
        pieces: Vec::new(),
        cut: None,
        ended: None,
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => panic!("the body neither ended nor was cut: {:?}", out.pieces),
            Ok(None) => {
                out.ended = Some(t.elapsed());
                return out;
            }
            Ok(Some(Err(_))) => {
                out.cut = Some(t.elapsed());
                return out;
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.pieces
                        .push((t.elapsed(), String::from_utf8_lossy(&data).into_owned()));
                }
            }
        }
    }
}

/// The OpenAI error of the final SSE event `text` (after the blank line the proxy puts first).
fn error_event_of(text: &str) -> serde_json::Value {
    let json = text
        .strip_prefix("\n\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one error event: {text:?}"));
    serde_json::from_str(json).expect("event JSON")
}

async fn wait_flag(flag: &AtomicBool, what: &str) {
    let t = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(3), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No response head within the first-byte deadline: 504 in the OpenAI shape, soon after the
/// deadline, and the engine's request is dropped (its connection closes under it).
#[tokio::test]
async fn no_head_in_time_is_a_504_and_the_engine_request_is_dropped() {
    let limit = Duration::from_secs(1);
    let h = start_limited(
        Phase::Ready,
        None,
        64,
        deadline_limits(limit, Duration::from_secs(30)),
    )
    .await;
    let t = Instant::now();
    let a = get(h.addr, "/slow?ms=10000").await;
    let took = t.elapsed();
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.body);
    assert_openai_error(&a, "first_byte_timeout");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("AIM_REQUEST_FIRST_BYTE_TIMEOUT")),
        "{}",
        a.body
    );
    assert!(took >= limit, "{took:?}");
    assert!(took < limit + Duration::from_millis(500), "{took:?}");
    eprintln!("first-byte deadline 1s: 504 after {took:?}");
    wait_flag(&h.up.slow_abandoned, "the engine kept the request").await;
    tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
        .await
        .expect("in-flight count back to zero");
    let m = get(h.addr, "/metrics").await.body;
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"first_byte\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"gap\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("aim_proxied_requests_total{code=\"error\"} 1\n"),
        "{m}"
    );
}

/// A stream that stops: an SSE one gets a final error event and is cut, anything else is cut
/// as is, both within the gap and a little; the engine's request is dropped.
#[tokio::test]
async fn a_stalled_stream_is_cut_after_the_gap_with_a_final_error_event() {
    let gap = Duration::from_secs(1);
    for json in [false, true] {
        let h = start_limited(
            Phase::Ready,
            None,
            64,
            deadline_limits(Duration::from_secs(30), gap),
        )
        .await;
        let path = format!("/stream?n=2&ms=50&stall=1&json={}", u8::from(json));
        let s = stream_of(h.addr, &path).await;
        assert_eq!(s.status, StatusCode::OK);
        assert!(
            s.ended.is_none(),
            "json={json}: a stalled body ended cleanly"
        );
        let cut = s.cut.expect("cut");
        let tokens: Vec<&(Duration, String)> = s
            .pieces
            .iter()
            .filter(|(_, p)| p.starts_with("data: {\"token\""))
            .collect();
        assert_eq!(tokens.len(), 2, "json={json}: {:?}", s.pieces);
        let last_token = tokens[1].0;
        if json {
            assert_eq!(
                s.pieces.len(),
                2,
                "bytes added to a non-SSE body: {:?}",
                s.pieces
            );
        } else {
            assert_eq!(s.pieces.len(), 3, "{:?}", s.pieces);
            let (at, text) = &s.pieces[2];
            let v = error_event_of(text);
            assert_eq!(v["error"]["code"], "stream_gap_timeout", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("--stream-gap-timeout")),
                "{v}"
            );
            let late = *at - last_token;
            assert!(
                late >= gap && late < gap + Duration::from_millis(500),
                "{late:?}"
            );
            eprintln!("gap deadline 1s: error event {late:?} after the last token");
        }
        assert!(
            cut - last_token < gap + Duration::from_millis(500),
            "{cut:?}"
        );
        wait_flag(&h.up.cancelled, "the engine's stream was kept").await;
        tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
            .await
            .expect("in-flight count back to zero");
        let m = h.shared.metrics.render();
        assert!(
            m.contains("aim_request_timeouts_total{kind=\"gap\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("aim_responses_cut_total 1\n"), "{m}");
    }
}

/// The engine sent an SSE head at once but no token within the first-byte deadline (a long
/// prefill that never ends): the stream gets the first-byte error event and is cut.
#[tokio::test]
async fn a_stream_head_without_a_first_token_in_time_is_cut() {
    let limit = Duration::from_secs(1);
    let h = start_limited(
        Phase::Ready,
        None,
        64,
        deadline_limits(limit, Duration::from_millis(200)),
    )
    .await;
    let s = stream_of(h.addr, "/stream?n=2&ms=10&first=5000").await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.pieces.len(), 1, "{:?}", s.pieces);
    let (at, text) = &s.pieces[0];
    assert_eq!(error_event_of(text)["error"]["code"], "first_byte_timeout");
    assert!(
        *at >= limit && *at < limit + Duration::from_millis(500),
        "{at:?}"
    );
    assert!(s.cut.is_some());
    wait_flag(&h.up.cancelled, "the engine's stream was kept").await;
    let m = h.shared.metrics.render();
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"first_byte\"} 1\n"),
        "{m}"
    );
}

/// A slow but steady stream (a token a second, gap 3 s, first byte 2 s) runs to its end: the
/// gap counts from the last piece and the first-byte deadline ends with the first one.
#[tokio::test]
async fn a_slow_but_steady_stream_is_never_cut() {
    let h = start_limited(
        Phase::Ready,
        None,
        64,
        deadline_limits(Duration::from_secs(2), Duration::from_secs(3)),
    )
    .await;
    let s = stream_of(h.addr, "/stream?n=4&ms=1000&first=1000").await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(s.cut.is_none(), "cut: {:?}", s.pieces);
    let ended = s.ended.expect("ended");
    assert!(ended >= Duration::from_secs(4), "{ended:?}");
    let text: String = s.pieces.iter().map(|(_, p)| p.as_str()).collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("error"), "{text}");
    assert_eq!(h.up.completed.load(Ordering::SeqCst), 1);
    let m = h.shared.metrics.render();
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"gap\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("aim_request_timeouts_total{kind=\"first_byte\"} 0\n"),
        "{m}"
    );
}

/// `Shared::abort_inflight` (the supervisor restarting a hung engine) ends every request in
/// flight at once: one waiting for its head gets 503 `engine_restarting`, a stream gets the
/// error event and is cut; the engine's requests are dropped; later requests are unaffected.
#[tokio::test]
async fn abort_inflight_ends_every_request_in_flight_at_once() {
    let h = start(Phase::Ready, None).await;
    let addr = h.addr;
    let waiting = tokio::spawn(async move {
        let a = get(addr, "/slow?ms=20000").await;
        (a, Instant::now())
    });
    let streaming = tokio::spawn(async move {
        let t = Instant::now();
        let s = stream_of(addr, "/stream?n=1000&ms=50").await;
        (s, t)
    });
    let t = Instant::now();
    while h.shared.inflight.count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(3), "never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let thrown = Instant::now();
    assert_eq!(h.shared.abort_inflight("it hung: test"), 2);
    let (a, answered) = waiting.await.expect("waiting task");
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_openai_error(&a, "engine_restarting");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("being restarted: it hung: test")),
        "{}",
        a.body
    );
    assert!(a.headers.contains_key("retry-after"));
    let (s, started) = streaming.await.expect("streaming task");
    let cut = s.cut.expect("the stream was cut");
    let (at, last) = s.pieces.last().expect("pieces");
    assert_eq!(error_event_of(last)["error"]["code"], "engine_restarting");
    let answer_after = answered - thrown;
    let event_after = (started + *at).saturating_duration_since(thrown);
    assert!(
        answer_after < Duration::from_millis(300),
        "{answer_after:?}"
    );
    assert!(event_after < Duration::from_millis(300), "{event_after:?}");
    assert!((started + cut).saturating_duration_since(thrown) < Duration::from_millis(300));
    eprintln!("abort_inflight: 503 after {answer_after:?}, stream event after {event_after:?}");
    wait_flag(&h.up.slow_abandoned, "the waiting request was kept").await;
    wait_flag(&h.up.cancelled, "the stream was kept").await;
    tokio::time::timeout(Duration::from_secs(2), h.shared.inflight.wait_idle())
        .await
        .expect("in-flight count back to zero");
    assert_eq!(h.shared.metrics.requests_aborted.get(), 2);
    // A request after the abort holds a fresh signal.
    let s = stream_of(h.addr, "/stream?n=2&ms=10").await;
    assert!(s.ended.is_some() && s.cut.is_none(), "{:?}", s.pieces);
    assert_eq!(h.shared.abort_inflight("nothing in flight"), 0);
}

/// The first-byte deadline counts from the end of the request body: a client that takes
/// longer than the deadline to send its body (in pieces, each within the body read timeout)
/// still gets the engine's answer.
#[tokio::test]
async fn the_first_byte_deadline_starts_when_the_request_body_ends() {
    let h = start_limited(
        Phase::Ready,
        None,
        64,
        deadline_limits(Duration::from_secs(1), Duration::from_secs(1)),
    )
    .await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("head");
    for piece in [b"a", b"b", b"c", b"d"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(piece).await.expect("piece");
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"abcd""#), "{text}");
}
