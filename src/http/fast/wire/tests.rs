use super::*;

fn facts(key: Option<&ApiKey>) -> Facts<'_> {
    Facts {
        peer_ip: "192.0.2.7",
        engine_host: b"127.0.0.1:41234",
        api_key: key,
    }
}

fn plan(raw: &str, key: Option<&ApiKey>) -> (Plan, String) {
    let mut out = Vec::new();
    let p = plan_request(raw.as_bytes(), &facts(key), &mut out);
    (p, String::from_utf8(out).expect("utf-8"))
}

#[test]
fn which_requests_the_lane_takes() {
    let key = ApiKey::new("sekrit").expect("key");
    // (request, with the key configured, what the lane does)
    let cases: &[(&str, bool, &str)] = &[
        (
            "GET /v1/models HTTP/1.1\r\nhost: a\r\n\r\n",
            false,
            "forward",
        ),
        (
            "POST /v1/completions HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
            false,
            "forward",
        ),
        ("GET /v1/models HTTP/1.1\r\nhost: a\r\n", false, "partial"),
        // The body is still on its way: the lane reads it (`body_len` says how much).
        (
            "POST /v1/completions HTTP/1.1\r\ncontent-length: 9\r\n\r\n{}",
            false,
            "forward",
        ),
        // Own endpoints, odd framing, upgrades, old versions, bad targets: hyper's.
        ("GET /health HTTP/1.1\r\n\r\n", false, "handoff"),
        ("GET /metrics HTTP/1.1\r\n\r\n", false, "handoff"),
        ("GET /status HTTP/1.1\r\n\r\n", false, "handoff"),
        (
            "POST /group/report HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            false,
            "handoff",
        ),
        ("GET /%2Fhealth HTTP/1.1\r\n\r\n", false, "handoff"),
        ("GET //health HTTP/1.1\r\n\r\n", false, "handoff"),
        ("GET /v1/../health HTTP/1.1\r\n\r\n", false, "handoff"),
        ("GET /v1/models HTTP/1.0\r\n\r\n", false, "handoff"),
        ("GET http://x/v1/models HTTP/1.1\r\n\r\n", false, "handoff"),
        ("OPTIONS * HTTP/1.1\r\n\r\n", false, "handoff"),
        ("CONNECT a:1 HTTP/1.1\r\n\r\n", false, "handoff"),
        (
            "POST /v1/x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "POST /v1/x HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "POST /v1/x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            false,
            "handoff",
        ),
        (
            "POST /v1/x HTTP/1.1\r\ncontent-length: +1\r\n\r\nx",
            false,
            "handoff",
        ),
        (
            "GET /v1/x HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "GET /v1/x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "GET /v1/models HTTP/1.1\r\nho st: a\r\n\r\n",
            false,
            "handoff",
        ),
        // A Connection header naming more than keep-alive or close: a header it names would be
        // dropped (Content-Length: the engine would read the body as the next request).
        (
            "POST /v1/x HTTP/1.1\r\nconnection: content-length\r\ncontent-length: 1\r\n\r\nx",
            false,
            "handoff",
        ),
        (
            "GET /v1/x HTTP/1.1\r\nconnection: host\r\nhost: a\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "GET /v1/x HTTP/1.1\r\nconnection: x-hop\r\nx-hop: 1\r\n\r\n",
            false,
            "handoff",
        ),
        (
            "GET /v1/x HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n",
            false,
            "forward",
        ),
        // The key: right, wrong, missing, and a path it does not cover.
        (
            "GET /v1/models HTTP/1.1\r\nauthorization: Bearer sekrit\r\n\r\n",
            true,
            "forward",
        ),
        (
            "GET /v1/models HTTP/1.1\r\nauthorization: bearer sekrit\r\n\r\n",
            true,
            "forward",
        ),
        (
            "GET /v1/models HTTP/1.1\r\nauthorization: Bearer nope\r\n\r\n",
            true,
            "handoff",
        ),
        ("GET /v1/models HTTP/1.1\r\n\r\n", true, "handoff"),
        ("GET /%76%31/models HTTP/1.1\r\n\r\n", true, "handoff"),
        ("GET /version HTTP/1.1\r\n\r\n", true, "forward"),
    ];
    for &(raw, with_key, want) in cases {
        let (p, _) = plan(raw, with_key.then_some(&key));
        let got = match p {
            Plan::Forward(_) => "forward",
            Plan::Partial => "partial",
            Plan::Handoff => "handoff",
        };
        assert_eq!(got, want, "{raw:?}");
    }
}

#[test]
fn the_engine_gets_the_normal_target_and_forwarding_headers() {
    let raw = "POST //v1//chat/completions?x=1 HTTP/1.1\r\nHost: api.example:8000\r\n\
               Connection: keep-alive\r\nkeep-alive: timeout=5\r\n\
               te: trailers\r\nproxy-authorization: Basic x\r\nX-Forwarded-For: 10.0.0.1\r\n\
               x-forwarded-proto: https\r\nContent-Type: application/json\r\n\
               content-length: 2\r\n\r\n{}GET";
    let (p, head) = plan(raw, None);
    assert_eq!(
        p,
        Plan::Forward(Forward {
            head_len: raw.len() - 5,
            body_len: 2,
            head_request: false,
            close: false,
            resend_safe: false,
        })
    );
    assert_eq!(
        head,
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:41234\r\n\
         Content-Type: application/json\r\ncontent-length: 2\r\n\
         x-forwarded-host: api.example:8000\r\nx-forwarded-for: 10.0.0.1, 192.0.2.7\r\n\
         x-forwarded-proto: http\r\n\r\n"
    );
    // Without Host, a client's X-Forwarded-Host passes; "close" is seen; HEAD is known.
    let (p, head) = plan(
        "HEAD /v1/models HTTP/1.1\r\nx-forwarded-host: h\r\nconnection: Close\r\n\r\n",
        None,
    );
    assert!(
        matches!(
            p,
            Plan::Forward(Forward {
                head_request: true,
                close: true,
                resend_safe: true,
                ..
            })
        ),
        "{p:?}"
    );
    assert!(head.contains("\r\nx-forwarded-host: h\r\n"), "{head}");
    assert!(
        head.contains("\r\nx-forwarded-for: 192.0.2.7\r\n"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("connection"), "{head}");
    // A chain that is not text is dropped (hyper's path cannot read it either).
    let (_, head) = plan(
        "GET /v1/models HTTP/1.1\r\nx-forwarded-for: 10.0.0.\u{e9}\r\n\r\n",
        None,
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 192.0.2.7\r\n"),
        "{head}"
    );
}

fn reply(raw: &str, head_request: bool, close: bool) -> (Reply, String) {
    let mut out = Vec::new();
    let r = plan_reply(raw.as_bytes(), head_request, close, &mut out);
    (r, String::from_utf8(out).expect("utf-8"))
}

#[test]
fn what_the_engine_answer_says() {
    // (response, HEAD request, framing, reusable, sse) for final heads
    let cases: &[(&str, bool, Framing, bool, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            false,
            Framing::Length(5),
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            true,
            Framing::Empty,
            true,
            false,
        ),
        (
            "HTTP/1.1 204 No Content\r\n\r\n",
            false,
            Framing::Empty,
            true,
            false,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            false,
            Framing::Empty,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
            Framing::Chunked,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
            Framing::Chunked,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
             transfer-encoding: chunked\r\n\r\n",
            false,
            Framing::Chunked,
            true,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 3\r\n\r\n",
            false,
            Framing::Length(3),
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            false,
            Framing::Length(1),
            false,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
            false,
            Framing::Length(1),
            false,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            false,
            Framing::Length(1),
            true,
            false,
        ),
        // A last coding that is not chunked: the body runs until the engine closes.
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
            Framing::Chunked,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            false,
            Framing::Length(2),
            true,
            false,
        ),
    ];
    for &(raw, head_request, framing, reusable, sse) in cases {
        let (r, _) = reply(raw, head_request, false);
        let Reply::Final(a) = r else {
            panic!("{raw:?}: {r:?}");
        };
        assert_eq!(
            (a.framing, a.reusable, a.sse),
            (framing, reusable, sse),
            "{raw:?}"
        );
        assert_eq!(
            a.head_len,
            raw.find("\r\n\r\n").expect("head") + 4,
            "{raw:?}"
        );
    }
    for raw in [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
    ] {
        assert!(
            matches!(reply(raw, false, false).0, Reply::Bad(_)),
            "{raw:?}"
        );
    }
    assert_eq!(
        reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false, false).0,
        Reply::Informational(25)
    );
    assert_eq!(
        reply("HTTP/1.1 200 OK\r\ncontent", false, false).0,
        Reply::Partial
    );
}

#[test]
fn the_client_head_drops_hops_and_says_how_the_body_comes() {
    let (_, head) = reply(
        "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\
         keep-alive: timeout=5\r\ncontent-type: text/event-stream\r\n\
         transfer-encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-type: text/event-stream\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let (_, head) = reply(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
    // Content-Length is ours: an engine's Connection naming it does not take it away.
    let (_, head) = reply(
        "HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
    );
    assert_eq!(head, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
    // Chunked framing wins over a Content-Length sent with it.
    let (_, head) = reply(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn chunks_for_the_client() {
    let mut out = Vec::new();
    push_chunk(&mut out, b"");
    push_chunk(&mut out, b"data: {}\n\n");
    push_chunk(&mut out, &[b'x'; 26]);
    out.extend_from_slice(LAST_CHUNK);
    let mut want = b"a\r\ndata: {}\n\n\r\n1a\r\n".to_vec();
    want.extend_from_slice(&[b'x'; 26]);
    want.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(out, want);
}
