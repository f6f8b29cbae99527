//! A blocking HTTP/1.1 GET to the local supervisor's public port on a std `TcpStream` (no
//! runtime, no curl), for `healthcheck` and `status`: the container's HEALTHCHECK runs it
//! every few seconds, so it stays light and always finishes by its deadline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The address and path a [`GetError`] is about (`host:port/path`).
#[derive(Debug)]
pub struct At {
    pub target: String,
    pub path: String,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.target, self.path)
    }
}

/// Why a GET to the local port gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{at}: no answer in time ({what})")]
    Timeout { at: At, what: &'static str },
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("{target} resolves to no address")]
    NoAddress { target: String },
    #[error("cannot connect to {target}: {source} (is aim-engine serving there?)")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("{at}: {source}")]
    Io { at: At, source: std::io::Error },
    #[error("{at}: not an HTTP response")]
    NotHttp { at: At },
}

/// One `GET path` to `host:port`, all of it before `deadline`: (status code, body).
pub fn get(
    host: &str,
    port: u16,
    path: &str,
    deadline: Instant,
) -> Result<(u16, String), GetError> {
    let target = format!("{host}:{port}");
    let at = || At {
        target: target.clone(),
        path: path.to_string(),
    };
    let left = |what: &'static str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| GetError::Timeout { at: at(), what })
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|source| GetError::Resolve {
            target: target.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| GetError::NoAddress {
            target: target.clone(),
        })?;
    let mut stream = TcpStream::connect_timeout(&addr, left("connect")?).map_err(|source| {
        GetError::Connect {
            target: target.clone(),
            source,
        }
    })?;
    stream
        .set_write_timeout(Some(left("write")?))
        .map_err(GetError::Socket)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|source| GetError::Io { at: at(), source })?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(left("read")?.max(Duration::from_millis(1))))
            .map_err(GetError::Socket)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(GetError::Io { at: at(), source }),
        }
    }
    parse_response(&raw).ok_or_else(|| GetError::NotHttp { at: at() })
}

/// Status code and body of a complete HTTP/1.1 response (Content-Length or close-delimited,
/// which is what our port sends for these small answers).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut words = status_line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = words.next()?.parse().ok()?;
    Some((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        type Case<'a> = (&'a [u8], Option<(u16, &'a str)>);
        let cases: &[Case] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                Some((200, "{}")),
            ),
            (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", Some((503, ""))),
            (
                b"HTTP/1.0 404 Not Found\r\nx: y\r\n\r\nnope",
                Some((404, "nope")),
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", None),
            (b"HTTP/1.1 200 OK\r\n", None),
            (b"", None),
        ];
        for (raw, want) in cases {
            let got = parse_response(raw);
            assert_eq!(
                got.as_ref().map(|(c, b)| (*c, b.as_str())),
                *want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn unreachable_port_is_an_error_within_the_deadline() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let t = Instant::now();
        let r = get(
            "127.0.0.1",
            port,
            "/health/ready",
            t + Duration::from_secs(2),
        );
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
