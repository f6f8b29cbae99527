//! The public port's fast lane (`http::fast`) at its edges: a connection that moves from the
//! lane to hyper mid-way, pipelined requests, a body that comes after its head, a body too
//! large for the lane, and the lane's pool of engine connections (reused; one the engine
//! closed is not used, and a request that met such a close is sent again on a new one).
//! Everything else the lane forwards is tested through the port in `http` and `deadlines`.

use aim_engine::http::{Limits, PublicConfig, serve_public_with};
use aim_engine::shared::Shared;
use aim_engine::status::Phase;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the test engine treats its connections.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    /// Answers every request on a connection (keep-alive).
    KeepAlive,
    /// Answers the first request of a connection; at the second it closes without a word (a
    /// keep-alive timeout that fired as the request came).
    ClosesOnSecond,
    /// Closes its side of each connection right after the first answer (without saying so in a
    /// header) and goes on reading, to see whether anything still comes on it.
    ClosesAfterAnswer,
}

/// What the test engine saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Requests that came on a connection after the engine had closed its side.
    late: AtomicUsize,
}

/// Reads one request (head and Content-Length body) from `s`; None when it closed.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut more = [0u8; 65536];
                let n = s.read(&mut more).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&more[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut more = [0u8; 65536];
        let n = s.read(&mut more).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&more[..n]);
    }
}

/// An engine that answers each request with `<target> <body length> <connection number>`.
async fn engine(kind: Engine) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let number = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                    if kind == Engine::ClosesOnSecond && served == 1 {
                        return;
                    }
                    if kind == Engine::ClosesAfterAnswer && served == 1 {
                        state.late.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    served += 1;
                    state.requests.fetch_add(1, Ordering::SeqCst);
                    let target = head.split(' ').nth(1).unwrap_or("?").to_string();
                    let text = format!("{target} {} {number}", body.len());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if kind == Engine::ClosesAfterAnswer {
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    (port, seen)
}

async fn port_before(engine_port: u16) -> SocketAddr {
    port_with_state(engine_port).await.0
}

async fn port_with_state(engine_port: u16) -> (SocketAddr, Arc<Shared>) {
    let shared = Arc::new(Shared::new("test/model", engine_port));
    shared.set_phase(Phase::Ready);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cfg = PublicConfig {
        api_key: None,
        max_connections: 64,
        drain_grace: Duration::from_secs(2),
    };
    let limits = Limits {
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    tokio::spawn(serve_public_with(listener, shared.clone(), cfg, limits));
    (addr, shared)
}

/// Reads `n` responses (each with a Content-Length body) from `s`; their status lines and
/// bodies.
async fn read_answers(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < n {
        let got = tokio::time::timeout(Duration::from_secs(5), read_request(s, &mut buf))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|| panic!("closed after {answers:?}"));
        let status = got.0.lines().next().unwrap_or("").to_string();
        answers.push((status, String::from_utf8_lossy(&got.1).into_owned()));
    }
    answers
}

#[tokio::test]
async fn one_connection_moves_from_the_lane_to_hyper_and_keeps_its_order() {
    let (engine_port, seen) = engine(Engine::KeepAlive).await;
    let addr = port_before(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // Two forwarded requests in one write (pipelined), then our own endpoint (handed to
    // hyper with what was read), then forwarded again (now by hyper's path).
    s.write_all(
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd\
          GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /v1/models?after=health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let answers = read_answers(&mut s, 4).await;
    let statuses: Vec<&str> = answers.iter().map(|a| a.0.as_str()).collect();
    assert!(
        statuses.iter().all(|s| s.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
    assert_eq!(answers[0].1, "/v1/models 0 1");
    assert_eq!(
        answers[1].1, "/v1/completions 4 1",
        "the same engine connection, reused"
    );
    assert!(
        answers[2].1.contains(r#""phase":"ready""#),
        "our own answer: {}",
        answers[2].1
    );
    assert!(
        answers[3].1.starts_with("/v1/models?after=health 0 "),
        "{answers:?}"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_body_after_its_head_and_one_too_large_for_the_lane_arrive_whole() {
    let (engine_port, _) = engine(Engine::KeepAlive).await;
    let addr = port_before(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n")
        .await
        .expect("head");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"hello").await.expect("body");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b" world").await.expect("body");
    assert_eq!(read_answers(&mut s, 1).await[0].1, "/v1/completions 11 1");
    // Larger than the lane reads: streamed by hyper's path, on the same client connection.
    let big = 200 * 1024;
    let head = format!("POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {big}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&vec![b'x'; big]).await.expect("body");
    let answer = &read_answers(&mut s, 1).await[0];
    // hyper's path has its own engine connection (the lane's first is in the lane's pool).
    assert_eq!(answer.1, format!("/v1/completions {big} 2"), "{answer:?}");
}

#[tokio::test]
async fn a_closed_engine_connection_resends_a_get_but_never_a_post() {
    let (engine_port, seen) = engine(Engine::ClosesOnSecond).await;
    let addr = port_before(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let post = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx";
    let get = "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    // (request, status, body prefix): the POST that meets the close on pooled connection 1
    // is answered 503, as hyper's path does (the engine may have acted on it); a GET that
    // meets it on connection 2 goes again on connection 3.
    let steps = [
        (post, "HTTP/1.1 200", "/v1/completions 1 1"),
        (post, "HTTP/1.1 503", "{"),
        (get, "HTTP/1.1 200", "/v1/models 0 2"),
        (get, "HTTP/1.1 200", "/v1/models 0 3"),
    ];
    for (i, (req, status, body)) in steps.into_iter().enumerate() {
        s.write_all(req.as_bytes()).await.expect("write");
        let answer = &read_answers(&mut s, 1).await[0];
        assert!(answer.0.starts_with(status), "step {i}: {answer:?}");
        assert!(answer.1.starts_with(body), "step {i}: {answer:?}");
        if status.ends_with("503") {
            assert!(answer.1.contains("engine_unreachable"), "{answer:?}");
        }
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        3,
        "the POST was not sent twice"
    );
}

#[tokio::test]
async fn an_engine_connection_the_engine_closed_while_idle_is_not_used() {
    let (engine_port, seen) = engine(Engine::ClosesAfterAnswer).await;
    let addr = port_before(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for (i, want) in [(1, "/v1/completions 1 1"), (2, "/v1/completions 1 2")] {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let req =
            format!("POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n{i}");
        s.write_all(req.as_bytes()).await.expect("write");
        let answer = &read_answers(&mut s, 1).await[0];
        assert_eq!(answer.1, want, "request {i}: {answer:?}");
    }
    assert_eq!(
        seen.late.load(Ordering::SeqCst),
        0,
        "a request went on a connection the engine had closed"
    );
}

/// `Connection: content-length` must not strip the length the engine needs: the body, a whole
/// request of its own, must reach the engine as a body and never as a second request.
#[tokio::test]
async fn a_connection_header_cannot_smuggle_a_request_to_the_engine() {
    let (engine_port, seen) = engine(Engine::KeepAlive).await;
    let addr = port_before(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let hidden = "GET /v1/hidden HTTP/1.1\r\nhost: x\r\n\r\n";
    let req = format!(
        "POST /version HTTP/1.1\r\nhost: x\r\nconnection: content-length\r\n\
         content-length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let answer = &read_answers(&mut s, 1).await[0];
    assert!(
        answer.1.starts_with(&format!("/version {} ", hidden.len())),
        "{answer:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        1,
        "one request, none hidden"
    );
}

/// Our own answers to HEAD (here 503: no engine listens) carry no body, so the next answer on
/// the connection is read as an answer.
#[tokio::test]
async fn our_answer_to_head_has_no_body() {
    let addr = port_before(crate::support::free_port()).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let first_end = text.find("\r\n\r\n").expect("a head") + 4;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text[first_end..].starts_with("HTTP/1.1 503"),
        "the HEAD answer had a body: {text}"
    );
}

/// A request whose head was half read when the drain began is answered (503 `draining`), not
/// dropped: the connection goes to hyper after hyper's own drain signal.
#[tokio::test]
async fn a_head_half_read_when_the_drain_begins_gets_its_answer() {
    let (engine_port, _) = engine(Engine::KeepAlive).await;
    let (addr, shared) = port_with_state(engine_port).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /v1/mod").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    shared.stopping.cancel();
    shared.set_phase(Phase::Stopped);
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"els HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("draining"), "{text}");
}
