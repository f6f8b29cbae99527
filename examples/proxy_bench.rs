//! Benchmark harness for the public port (bench/http/run.sh). The script measures the real
//! `aim-engine serve` with the fake engine; this file adds what wrk cannot do and a way to
//! measure the proxy alone. Every mode runs on a current-thread runtime, as `serve` does.
//!
//! - `proxy_bench latency --url U --rate R --conns C --secs S`: open-loop load (each of C
//!   keep-alive connections sends on a fixed schedule, R requests/s in all) and the latency of
//!   each request to its last body byte, counted from its *scheduled* send time whenever an
//!   earlier answer made it late, so a stall is charged to every request it delayed (no
//!   coordinated omission). Prints
//!   `sent ok p50_us p90_us p99_us p999_us max_us`.
//! - `proxy_bench proxy --listen P --engine-port E`: `http::serve_public` alone with the phase
//!   set to Ready, forwarding to `127.0.0.1:E`, until SIGINT/SIGTERM.
//! - `proxy_bench upstream --listen E [--tokens N] [--gap-ms M]`: a minimal engine stand-in
//!   (`/v1/models`, `/health`, `/metrics`, `/v1/completions` with `"stream": true` as SSE of N
//!   events M ms apart) for when the fake engine is not at hand.

use aim_engine::http::{PublicConfig, serve_public};
use aim_engine::shared::Shared;
use aim_engine::status::Phase;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type B = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    if mode == "latency" {
        return latency(&args).await;
    }
    let listen = arg(&args, "--listen", 0) as u16;
    let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
    match mode {
        "proxy" => {
            let engine_port = arg(&args, "--engine-port", 8001) as u16;
            let shared = Arc::new(Shared::new("bench/model", engine_port));
            shared.set_phase(Phase::Ready);
            let cfg = PublicConfig {
                api_key: None,
                max_connections: 4096,
                drain_grace: Duration::from_secs(1),
            };
            let stop = shared.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.stopping.cancel();
                stop.set_phase(Phase::Stopped);
            });
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let s2 = shared.clone();
            tokio::spawn(async move {
                term.recv().await;
                s2.stopping.cancel();
                s2.set_phase(Phase::Stopped);
            });
            serve_public(listener, shared, cfg).await?;
        }
        "upstream" => {
            let tokens = arg(&args, "--tokens", 16) as usize;
            let gap = Duration::from_millis(arg(&args, "--gap-ms", 0));
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| async move {
                        Ok::<_, Infallible>(upstream(req, tokens, gap).await)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
        _ => {
            eprintln!(
                "usage: proxy_bench latency --url U --rate R --conns C --secs S | proxy --listen P --engine-port E | upstream --listen E [--tokens N] [--gap-ms M]"
            );
            std::process::exit(64);
        }
    }
    Ok(())
}

fn full(s: &'static str) -> B {
    Full::new(Bytes::from_static(s.as_bytes())).boxed_unsync()
}

async fn upstream(req: Request<Incoming>, tokens: usize, gap: Duration) -> Response<B> {
    match req.uri().path() {
        "/health" => Response::new(full("")),
        "/metrics" => Response::new(full(
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n",
        )),
        "/v1/completions" | "/v1/chat/completions" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let stream = body
                .windows(14)
                .any(|w| w == b"\"stream\": true" || w.starts_with(b"\"stream\":true"));
            if !stream {
                return Response::new(full(
                    r#"{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" Paris","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
                ));
            }
            let events = futures_util::stream::unfold(0usize, move |i| async move {
                if i > tokens {
                    return None;
                }
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                let data = if i == tokens {
                    Bytes::from_static(b"data: [DONE]\n\n")
                } else {
                    Bytes::from(format!(
                        "data: {{\"choices\":[{{\"index\":0,\"text\":\"t{i}\"}}]}}\n\n"
                    ))
                };
                Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(events).boxed_unsync())
                .unwrap_or_else(|_| Response::new(full("")))
        }
        _ => Response::new(full(
            r#"{"object":"list","data":[{"id":"bench/model","object":"model"}]}"#,
        )),
    }
}

/// Open-loop latency: see the module docs.
async fn latency(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let url: hyper::Uri = args
        .windows(2)
        .find(|w| w[0] == "--url")
        .map(|w| w[1].parse())
        .ok_or("--url is required")??;
    let rate = arg(args, "--rate", 1000).max(1);
    let conns = arg(args, "--conns", 16).max(1);
    let secs = arg(args, "--secs", 5).max(1);
    let authority = url.authority().ok_or("--url needs host:port")?.clone();
    // Each connection sends every `period`; connections are staggered across one period.
    let period = Duration::from_nanos(1_000_000_000 * conns / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (url, authority) = (url.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut sent = 0u64;
            let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
            stream.set_nodelay(true)?;
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            let mut due = start + period * c as u32 / conns as u32;
            while due < end {
                // The timer wakes up to a millisecond late: when we are early, the clock starts
                // at the actual send; when the previous answer made us late, at the due time.
                let t0 = if tokio::time::Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due).await;
                    tokio::time::Instant::now()
                };
                sent += 1;
                // Origin form (`/path`), as clients send it: the port refuses absolute form.
                let target = url.path_and_query().map_or("/", |p| p.as_str());
                let req = Request::get(target)
                    .header(hyper::header::HOST, authority.as_str())
                    .body(Full::new(Bytes::new()))?;
                tx.ready().await?;
                let resp = tx.send_request(req).await?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await?;
                if ok {
                    lat.push((tokio::time::Instant::now() - t0).as_micros() as u64);
                }
                due += period;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((sent, lat))
        }));
    }
    let (mut sent, mut all) = (0u64, Vec::new());
    for t in tasks {
        let (s, l) = t.await?.map_err(|e| e.to_string())?;
        sent += s;
        all.extend(l);
    }
    if (all.len() as u64) < sent {
        // Latencies of failed answers would flatter the figures: say so instead.
        return Err(format!(
            "{} of {sent} requests to {url} did not succeed",
            sent - all.len() as u64
        )
        .into());
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{sent} {} {} {} {} {} {}",
        all.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        all.last().copied().unwrap_or(0)
    );
    Ok(())
}
