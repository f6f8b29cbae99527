//! The pure half of the fast lane: which request it may forward itself, the head the engine
//! gets, and what the engine's response head says (its framing, whether its connection can be
//! used again) together with the head the client gets. No IO here.
//!
//! The lane takes only what it forwards exactly as the hyper path would (see `plan_request`);
//! everything else is handed to hyper with the bytes read so far.

use crate::http::auth::{self, ApiKey};
use crate::http::router::{self, Route};
use crate::http::target;
use hyper::http::uri::PathAndQuery;

/// Most headers a request head may have in the lane (more: hyper takes it).
pub const MAX_HEADERS: usize = 64;
/// Most headers of an engine's response head: hyper's client allows as many.
pub const MAX_REPLY_HEADERS: usize = 100;

use crate::http::proxy::HOP_BY_HOP;

/// What the lane does with the bytes read from a client so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The head is not complete yet.
    Partial,
    /// Not for the lane: hyper answers it (own endpoints, chunked or `Expect` bodies,
    /// upgrades, HTTP/1.0, a Connection header naming more than keep-alive or close, anything
    /// odd; every refusal of ours).
    Handoff,
    Forward(Forward),
}

/// A request the lane forwards; its engine head was written to `out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Bytes of the client's head.
    pub head_len: usize,
    /// Bytes of its body (they follow the head; the rest may still be on its way).
    pub body_len: usize,
    /// A HEAD request: the response has no body whatever its headers say.
    pub head_request: bool,
    /// The client asked to close after this exchange.
    pub close: bool,
    /// GET, HEAD or OPTIONS: safe to send again when a pooled connection turns out closed
    /// before any answer (what the engine did with it cannot be known).
    pub resend_safe: bool,
}

/// What `plan_request` needs besides the bytes.
pub struct Facts<'a> {
    /// The client's IP address as text (for X-Forwarded-For).
    pub peer_ip: &'a str,
    /// The engine's address as a Host value (`127.0.0.1:PORT`).
    pub engine_host: &'a [u8],
    pub api_key: Option<&'a ApiKey>,
}

fn is_hop(name: &str, named: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || named
            .iter()
            .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
}

/// The comma-separated tokens of every Connection header, trimmed (at most 8; None for more,
/// which is odd).
fn connection_tokens<'h>(headers: &[httparse::Header<'h>]) -> Option<Vec<&'h [u8]>> {
    let mut tokens = Vec::new();
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for t in h.value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if !t.is_empty() {
                tokens.push(t);
            }
        }
    }
    (tokens.len() <= 8).then_some(tokens)
}

fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn count(headers: &[httparse::Header<'_>], name: &str) -> usize {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .count()
}

/// A Content-Length value: digits only.
fn length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Appends one header line.
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Reads the client's bytes in `buf`: Partial, Handoff, or Forward with the engine's head
/// (request line with the target in normal form, hop-by-hop headers gone, Host and the
/// X-Forwarded-* headers as `proxy::set_forwarded` sets them) written to `out`.
pub fn plan_request(buf: &[u8], facts: &Facts<'_>, out: &mut Vec<u8>) -> Plan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Plan::Partial,
        Err(_) => return Plan::Handoff,
    };
    let (Some(method), Some(raw_target), Some(1)) = (req.method, req.path, req.version) else {
        return Plan::Handoff;
    };
    let headers = &*req.headers;
    let Some(tokens) = connection_tokens(headers) else {
        return Plan::Handoff;
    };
    // A Connection header naming anything but these (`upgrade`, or a header such as
    // Content-Length or Host that would then be dropped) is hyper's.
    let plain =
        |t: &&[u8]| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close");
    let odd = method == "CONNECT"
        || !tokens.iter().all(plain)
        || ["transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| header(headers, n).is_some())
        || count(headers, "content-length") > 1
        || count(headers, "host") > 1;
    if odd {
        return Plan::Handoff;
    }
    let body_len = match header(headers, "content-length").map(length) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Plan::Handoff,
    };
    // The same target parser hyper's server uses, then our normal form.
    let Ok(pq) = PathAndQuery::try_from(raw_target) else {
        return Plan::Handoff;
    };
    if !pq.path().starts_with('/') {
        return Plan::Handoff;
    }
    let Ok(normal) = target::normalize(pq.path(), pq.query()) else {
        return Plan::Handoff;
    };
    if router::route(&normal.path) != Route::Forward {
        return Plan::Handoff;
    }
    if let Some(key) = facts.api_key
        && auth::protected(&normal.path)
        && !key.accepts_value(header(headers, "authorization"))
    {
        return Plan::Handoff;
    }
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(normal.forward.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(out, b"host", facts.engine_host);
    let client_host = header(headers, "host");
    for h in headers {
        let n = h.name;
        if is_hop(n, &[])
            || n.eq_ignore_ascii_case("host")
            || n.eq_ignore_ascii_case("x-forwarded-for")
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || (client_host.is_some() && n.eq_ignore_ascii_case("x-forwarded-host"))
        {
            continue;
        }
        push_header(out, n.as_bytes(), h.value);
    }
    if let Some(host) = client_host {
        push_header(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    // A chain that is not visible ASCII is dropped, as hyper's path drops one that is not text.
    let chain = header(headers, "x-forwarded-for")
        .filter(|v| v.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t'));
    match chain.map(<[u8]>::trim_ascii) {
        Some(prev) if !prev.is_empty() => {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        _ => {}
    }
    out.extend_from_slice(facts.peer_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n\r\n");
    Plan::Forward(Forward {
        head_len,
        body_len: usize::try_from(body_len).unwrap_or(usize::MAX),
        head_request: method == "HEAD",
        close: tokens.iter().any(|t| t.eq_ignore_ascii_case(b"close")),
        resend_safe: matches!(method, "GET" | "HEAD" | "OPTIONS"),
    })
}

/// How the engine's response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Content-Length: passed on as it comes.
    Length(u64),
    /// Chunked: decoded and chunked again for the client (piece by piece).
    Chunked,
    /// Until the engine closes: chunked for the client.
    UntilClose,
}

/// The engine's response head, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The engine keeps the connection open after this response.
    pub reusable: bool,
    /// A chunked `text/event-stream` (it gets an error event when cut).
    pub sse: bool,
}

/// What the engine's bytes so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Partial,
    /// A 1xx head of this many bytes: skipped.
    Informational(usize),
    /// A final head; the client's head was written to `out`.
    Final(Answer),
    /// Not a response we can pass on (the engine's fault).
    Bad(&'static str),
}

/// Reads the engine's response head in `buf` (for a HEAD request when `head_request`) and
/// writes the client's head to `out`: hop-by-hop headers gone, chunked framing when the body is
/// not counted, `connection: close` when the client asked for it.
pub fn plan_reply(buf: &[u8], head_request: bool, close: bool, out: &mut Vec<u8>) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REPLY_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Reply::Partial,
        Err(_) => return Reply::Bad("the engine's response head does not parse"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Reply::Bad("the engine's response head is incomplete");
    };
    if (100..200).contains(&status) {
        return if status == 101 {
            Reply::Bad("the engine switched protocols")
        } else {
            Reply::Informational(head_len)
        };
    }
    let headers = &*resp.headers;
    let Some(tokens) = connection_tokens(headers) else {
        return Reply::Bad("the engine's Connection header is too long");
    };
    // The last coding of the last Transfer-Encoding decides (RFC 9112 §6.3): chunked, or a
    // body that runs until the engine closes.
    let te = headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value);
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(te) = te {
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(v) = header(headers, "content-length") {
        let n = length(v);
        let agree = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .all(|h| length(h.value) == n);
        match n {
            Some(n) if agree => Framing::Length(n),
            _ => return Reply::Bad("the engine's Content-Length is not one number"),
        }
    } else {
        Framing::UntilClose
    };
    let rechunk = matches!(framing, Framing::Chunked | Framing::UntilClose);
    let keep_alive = if version == 1 {
        !tokens.iter().any(|t| t.eq_ignore_ascii_case(b"close"))
    } else {
        tokens.iter().any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    };
    let sse = rechunk
        && header(headers, "content-type").is_some_and(|v| {
            v.trim_ascii_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
        });
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse reads exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Content-Length is always ours: the framing the client gets is the one read here, even
    // when the engine's Connection header names it.
    for h in headers {
        if is_hop(h.name, &tokens) || h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    if rechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if let Some(v) = header(headers, "content-length") {
        // Checked above: every Content-Length is this one number.
        push_header(out, b"content-length", v.trim_ascii());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Reply::Final(Answer {
        head_len,
        status,
        framing,
        reusable: keep_alive && framing != Framing::UntilClose,
        sse,
    })
}

/// Appends `data` to `out` as one chunk.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests;
