//! `aim-engine healthcheck` and `status`.
//!
//! Both ask the local supervisor over a blocking HTTP/1.1 GET on a std `TcpStream` (no runtime,
//! no curl): the container's HEALTHCHECK runs this every few seconds, so it must stay light and
//! always finish within `--timeout`.

use crate::cli::{Format, HealthcheckArgs, StatusArgs};
use crate::exit::{ExitError, FAILURE, OK};
use crate::status::Status;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Exit 0 when `/health/ready` answers 200, 1 otherwise (unreachable included).
pub fn healthcheck(a: &HealthcheckArgs) -> anyhow::Result<u8> {
    let deadline = Instant::now() + a.timeout;
    let code = match get(&a.host, a.port, "/health/ready", deadline) {
        Ok((code, _)) => code,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return Ok(FAILURE);
        }
    };
    if a.verbose {
        match get(&a.host, a.port, "/status", deadline) {
            Ok((200, body)) => match serde_json::from_str::<Status>(&body) {
                Ok(s) => print!("{}", render(&s)),
                Err(e) => eprintln!("healthcheck: /status is not a status: {e}"),
            },
            Ok((other, _)) => eprintln!("healthcheck: /status answered {other}"),
            Err(e) => eprintln!("healthcheck: {e}"),
        }
        println!("ready: {}", if code == 200 { "yes" } else { "no" });
    }
    Ok(if code == 200 { OK } else { FAILURE })
}

/// Prints `/status` for humans (`--format json`: the raw JSON).
pub fn status(a: &StatusArgs) -> anyhow::Result<u8> {
    let deadline = Instant::now() + a.timeout;
    let (code, body) =
        get(&a.host, a.port, "/status", deadline).map_err(|e| ExitError::new(FAILURE, e))?;
    if code != 200 {
        return Err(ExitError::new(
            FAILURE,
            format!("{}:{}/status answered {code}: {body}", a.host, a.port),
        )
        .into());
    }
    match a.format {
        Format::Json => println!("{}", body.trim_end()),
        Format::Text => {
            let s: Status = serde_json::from_str(&body).map_err(|e| {
                ExitError::new(
                    FAILURE,
                    format!(
                        "{}:{}/status is not an aim-engine status: {e}",
                        a.host, a.port
                    ),
                )
            })?;
            print!("{}", render(&s));
        }
    }
    Ok(OK)
}

/// The status for humans.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "phase:     {}", s.phase);
    let _ = writeln!(o, "model:     {}", s.model);
    if let Some(d) = &s.download {
        let _ = writeln!(o, "download:  {}", crate::download::progress::line(d));
    }
    match &s.recipe {
        Some(r) => {
            let _ = writeln!(
                o,
                "recipe:    {} ({}, {} GPU, {})",
                r.id, r.engine, r.gpu_count, r.precision
            );
        }
        None => {
            let _ = writeln!(o, "recipe:    (none yet)");
        }
    }
    if !s.gpus.is_empty() {
        let gpus: Vec<String> = s
            .gpus
            .iter()
            .map(|g| format!("{} {} [{}]", g.ordinal, g.product, g.pci))
            .collect();
        let _ = writeln!(o, "gpus:      {}", gpus.join(", "));
    }
    let _ = writeln!(o, "attempt:   {} (restarts: {})", s.attempt, s.restarts);
    if let Some(v) = &s.engine_version {
        let _ = writeln!(o, "engine:    {v}");
    }
    if let Some(pid) = s.engine_pid {
        let _ = writeln!(o, "pid:       {pid}");
    }
    let _ = writeln!(o, "uptime:    {:.0}s", s.uptime_s);
    if let Some(r) = s.ready_since_s {
        let _ = writeln!(o, "ready for: {:.0}s", (s.uptime_s - r).max(0.0));
    }
    if let Some(l) = &s.last_liveness {
        let _ = writeln!(
            o,
            "liveness:  {} at {:.0}s ({}; {} consecutive failures)",
            if l.ok { "ok" } else { "FAILED" },
            l.at_s,
            l.detail,
            l.consecutive_failures
        );
    }
    if let Some(line) = &s.last_log_line {
        let _ = writeln!(o, "last log:  {line}");
    }
    if let Some(f) = &s.fatal {
        let _ = writeln!(o, "FATAL:     {f}");
    }
    for f in &s.failures {
        let _ = writeln!(
            o,
            "attempt {} ({}) failed at {:.0}s: class {}, {}, then {}",
            f.attempt, f.recipe_id, f.at_s, f.class, f.exit, f.action
        );
        for line in &f.log_tail {
            let _ = writeln!(o, "    | {line}");
        }
    }
    o
}

/// One `GET path` to `host:port`, all of it before `deadline`: (status code, body).
fn get(host: &str, port: u16, path: &str, deadline: Instant) -> Result<(u16, String), String> {
    let target = format!("{host}:{port}");
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{target}{path}: no answer in time ({what})"))
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, left("connect")?)
        .map_err(|e| format!("cannot connect to {target}: {e} (is aim-engine serving there?)"))?;
    stream
        .set_write_timeout(Some(left("write")?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{target}{path}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(left("read")?.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{target}{path}: {e}")),
        }
    }
    parse_response(&raw).ok_or_else(|| format!("{target}{path}: not an HTTP response"))
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
    use crate::status::{AttemptFailure, Phase, RecipeStatus};

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
    fn renders_failures_and_recipe() {
        let mut s = Status::new("Qwen/Qwen3-8B");
        s.phase = Phase::Restarting;
        s.attempt = 2;
        s.restarts = 1;
        s.recipe = Some(RecipeStatus {
            id: "vllm-mi300x-bf16-tp1-latency".into(),
            engine: "vllm".into(),
            gpu_count: 1,
            precision: "bf16".into(),
        });
        s.failures.push(AttemptFailure {
            attempt: 1,
            recipe_id: "vllm-mi300x-bf16-tp1-latency".into(),
            class: "oom".into(),
            exit: "exit 1".into(),
            action: "restart".into(),
            at_s: 12.0,
            log_tail: vec!["torch.OutOfMemoryError: HIP out of memory".into()],
        });
        let text = render(&s);
        for want in [
            "phase:     restarting",
            "recipe:    vllm-mi300x-bf16-tp1-latency (vllm, 1 GPU, bf16)",
            "attempt:   2 (restarts: 1)",
            "class oom, exit 1, then restart",
            "    | torch.OutOfMemoryError: HIP out of memory",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
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
