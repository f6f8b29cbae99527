//! Multi-node group mode (`--nnodes N` with N > 1), the way vLLM and SGLang form a group at
//! the process level: the leader (node rank 0) listens on the rendezvous port and waits for
//! the other ranks before it loads and opens its HTTP API; the other ranks serve no HTTP at
//! all, connect to the leader, and die when it goes away. The leader notices a lost rank (like
//! gloo's "Connection closed by peer"), keeps answering `/health`, and fails the next
//! completion (see `server.rs`).
//!
//! Wire protocol between fakes: a worker connects to ADDR:P and sends one line `rank R\n`;
//! the connection then stays open for the life of the group, and either side closing it is
//! the other side's "lost the peer".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::{ArgError, Args, Mode, arg_error};
use crate::procs::timestamp;

/// This node's place in a multi-node group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub nnodes: u32,
    pub rank: u32,
    /// Rendezvous host (vLLM `--master-addr`, SGLang's `--dist-init-addr` host), IPv6
    /// without brackets.
    pub host: String,
    pub port: u16,
}

impl Group {
    /// `HOST:PORT`, `[V6]:PORT` for IPv6.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }
}

/// The group facts from the given flags; `None` unless `--nnodes N` with N > 1.
pub fn parse(args: &Args) -> Result<Option<Group>, ArgError> {
    let mode = args.mode;
    let last = |name: &str| -> Option<String> {
        args.given
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first().cloned())
    };
    // argparse names an option by all its spellings in error messages.
    let (nnodes_name, rank_name) = match mode {
        Mode::Vllm => ("--nnodes/-n", "--node-rank/-r"),
        Mode::Sglang => ("--nnodes", "--node-rank"),
    };
    let int = |flag: &str, shown: &str| -> Result<Option<i64>, ArgError> {
        match last(flag) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                arg_error(mode, &format!("argument {shown}: invalid int value: '{v}'"))
            }),
        }
    };
    let nnodes = int("--nnodes", nnodes_name)?.unwrap_or(1);
    if nnodes <= 1 {
        return Ok(None);
    }
    let rank = int("--node-rank", rank_name)?.unwrap_or(0);
    if rank < 0 || rank >= nnodes {
        return Err(arg_error(
            mode,
            &format!(
                "argument {rank_name}: node rank {rank} is out of range for --nnodes {nnodes} (0..{})",
                nnodes - 1
            ),
        ));
    }
    let nnodes = u32::try_from(nnodes).map_err(|_| {
        arg_error(
            mode,
            &format!("argument {nnodes_name}: too large: {nnodes}"),
        )
    })?;
    let rank = rank as u32;
    let (host, port) = match mode {
        Mode::Vllm => {
            let host = last("--master-addr").unwrap_or_else(|| "127.0.0.1".to_string());
            let port = match last("--master-port") {
                None => 29501,
                Some(p) => p.trim().parse::<u16>().map_err(|_| {
                    arg_error(
                        mode,
                        &format!("argument --master-port: invalid int value: '{p}'"),
                    )
                })?,
            };
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map(str::to_string)
                .unwrap_or(host);
            (host, port)
        }
        Mode::Sglang => {
            let Some(addr) = last("--dist-init-addr") else {
                return Err(arg_error(
                    mode,
                    &format!("--dist-init-addr (HOST:PORT) is required when --nnodes {nnodes} > 1"),
                ));
            };
            split_host_port(&addr).ok_or_else(|| {
                arg_error(
                    mode,
                    &format!(
                        "argument --dist-init-addr: invalid address '{addr}': expected HOST:PORT or [IPV6]:PORT"
                    ),
                )
            })?
        }
    };
    Ok(Some(Group {
        nnodes,
        rank,
        host,
        port,
    }))
}

/// `host:port` or `[v6]:port` → (host without brackets, port).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None; // a bare IPv6 address is ambiguous
        }
        (h, p)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// How long ranks wait for each other (FAKE_GROUP_JOIN_SECS, default 600 like torch's store).
pub fn join_timeout() -> Duration {
    crate::env_secs("FAKE_GROUP_JOIN_SECS", 600.0)
}

/// One group log line in the mode's style: vLLM `(EngineCore_0 pid=N) LEVEL ts [file] msg` on
/// the leader, `LEVEL ts [file] msg` on a headless rank; SGLang `[ts] msg` / `[ts] LEVEL: msg`.
fn line(mode: Mode, g: &Group, level: &str, msg: &str) -> String {
    let pid = std::process::id();
    let ts = timestamp();
    match mode {
        Mode::Vllm if g.is_leader() => {
            format!("(EngineCore_0 pid={pid}) {level} {ts} [parallel_state.py:1165] {msg}")
        }
        Mode::Vllm => format!("{level} {ts} [serve.py:212] {msg}"),
        Mode::Sglang if level == "INFO" => format!("[{ts} node{}] {msg}", g.rank),
        Mode::Sglang => format!("[{ts} node{}] {level}: {msg}", g.rank),
    }
}

pub fn info(mode: Mode, g: &Group, msg: &str) {
    olog!("{}", line(mode, g, "INFO", msg));
}

pub fn error(mode: Mode, g: &Group, msg: &str) {
    elog!("{}", line(mode, g, "ERROR", msg));
}

/// One joined rank's connection, held by the leader.
pub struct Member {
    pub rank: u32,
    pub peer: SocketAddr,
    conn: BufReader<TcpStream>,
}

/// Leader: binds the rendezvous port on all interfaces (`[::]` for an IPv6 address). On
/// failure prints torch's c10d warnings and returns the exception text for a traceback.
pub async fn bind(g: &Group) -> Result<TcpListener, String> {
    let any = if g.host.contains(':') {
        "[::]"
    } else {
        "0.0.0.0"
    };
    let at = format!("{any}:{}", g.port);
    match TcpListener::bind(&at).await {
        Ok(l) => Ok(l),
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            let text = crate::server::strip_os_error(&e);
            elog!(
                "[W{} socket.cpp:759] [c10d] The server socket has failed to bind to {at} (errno: {errno} - {text}).",
                timestamp()
            );
            elog!(
                "[E{} socket.cpp:793] [c10d] The server socket has failed to listen on any local network address.",
                timestamp()
            );
            Err(format!(
                "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network address. port: {}, useIpv6: {}, code: -{errno}, name: {}, message: {}",
                g.port,
                g.host.contains(':'),
                if errno == libc::EADDRINUSE {
                    "EADDRINUSE"
                } else {
                    "EUNKNOWN"
                },
                text.to_lowercase()
            ))
        }
    }
}

/// Reads the `rank R` line a joining node sends (at most 64 bytes).
async fn read_hello(conn: &mut BufReader<TcpStream>) -> Result<u32, String> {
    let mut buf = Vec::new();
    loop {
        match conn.read_u8().await {
            Ok(b'\n') => break,
            Ok(b) if buf.len() < 64 => buf.push(b),
            Ok(_) => return Err("hello line too long".to_string()),
            Err(e) => return Err(format!("closed before its hello: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.trim()
        .strip_prefix("rank ")
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| format!("bad hello {text:?}"))
}

/// Leader: waits until every other rank joined (FAKE_GROUP_JOIN_SECS). On timeout logs the
/// ranks that never joined (and torch's store error) and returns `Err`.
pub async fn gather(g: &Group, mode: Mode, listener: TcpListener) -> Result<Vec<Member>, ()> {
    let others = g.nnodes - 1;
    info(
        mode,
        g,
        &format!(
            "Waiting for {others} other node(s) to join the group at {} (nnodes={})",
            g.endpoint(),
            g.nnodes
        ),
    );
    let timeout = join_timeout();
    let deadline = Instant::now() + timeout;
    let (tx, mut rx) = mpsc::channel::<(SocketAddr, BufReader<TcpStream>, Result<u32, String>)>(16);
    let mut members: Vec<Member> = Vec::new();
    while members.len() < others as usize {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut conn = BufReader::new(stream);
                        let hello = read_hello(&mut conn).await;
                        let _ = tx.send((peer, conn, hello)).await;
                    });
                }
                Err(e) => error(mode, g, &format!("accept on the group port failed: {e}")),
            },
            Some((peer, conn, hello)) = rx.recv() => match hello {
                Ok(rank) if rank == 0 || rank >= g.nnodes => error(
                    mode,
                    g,
                    &format!("rejected a node from {peer}: node rank {rank} is out of range (1..{})", g.nnodes - 1),
                ),
                Ok(rank) if members.iter().any(|m| m.rank == rank) => error(
                    mode,
                    g,
                    &format!("rejected a node from {peer}: node rank {rank} already joined"),
                ),
                Ok(rank) => {
                    info(mode, g, &format!("node rank {rank} joined from {peer}"));
                    members.push(Member { rank, peer, conn });
                }
                Err(why) => error(mode, g, &format!("rejected a node from {peer}: {why}")),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<String> = (1..g.nnodes)
                    .filter(|r| !members.iter().any(|m| m.rank == *r))
                    .map(|r| r.to_string())
                    .collect();
                error(
                    mode,
                    g,
                    &format!(
                        "timed out after {}s waiting for the group at {}: node rank(s) {} never joined",
                        timeout.as_secs_f64(),
                        g.endpoint(),
                        missing.join(", ")
                    ),
                );
                elog!(
                    "torch.distributed.DistStoreError: Timed out after {} seconds waiting for clients. {}/{} clients joined.",
                    timeout.as_secs_f64(),
                    members.len() + 1,
                    g.nnodes
                );
                return Err(());
            }
        }
    }
    info(
        mode,
        g,
        &format!(
            "All {} nodes joined the group at {}",
            g.nnodes,
            g.endpoint()
        ),
    );
    Ok(members)
}

/// Leader, after the group formed: watches every member's connection; the first that closes
/// is logged (like gloo) and sets `broken`, with the lost peer's address in `lost_peer`.
pub fn watch(
    g: &Group,
    mode: Mode,
    members: Vec<Member>,
    broken: Arc<AtomicBool>,
    lost_peer: Arc<std::sync::Mutex<Option<SocketAddr>>>,
) {
    for mut m in members {
        let g = g.clone();
        let broken = broken.clone();
        let lost_peer = lost_peer.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let why = loop {
                match m.conn.read(&mut buf).await {
                    Ok(0) => break "Connection closed by peer".to_string(),
                    Ok(_) => continue,
                    Err(e) => break format!("Connection closed by peer ({e})"),
                }
            };
            error(
                mode,
                &g,
                &format!(
                    "lost node rank {}: {why} [{}]:{}",
                    m.rank,
                    m.peer.ip(),
                    m.peer.port()
                ),
            );
            if let Ok(mut p) = lost_peer.lock() {
                p.get_or_insert(m.peer);
            }
            broken.store(true, Ordering::SeqCst);
        });
    }
}

/// A worker rank's whole life after start-up: join the leader, "load" its share, hold the
/// connection. Returns the exit code once the leader is unreachable or gone.
pub async fn work(g: &Group, mode: Mode, load: Duration) -> i32 {
    let timeout = join_timeout();
    let deadline = Instant::now() + timeout;
    let endpoint = g.endpoint();
    let stream = loop {
        let attempt =
            tokio::time::timeout_at(deadline, TcpStream::connect((g.host.as_str(), g.port))).await;
        match attempt {
            Ok(Ok(s)) => break s,
            Ok(Err(_)) if Instant::now() + Duration::from_millis(200) < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => {
                return join_timed_out(g, mode, timeout, &endpoint, &e.to_string());
            }
            Err(_) => return join_timed_out(g, mode, timeout, &endpoint, "timed out"),
        }
    };
    let mut stream = stream;
    use tokio::io::AsyncWriteExt as _;
    if let Err(e) = stream
        .write_all(format!("rank {}\n", g.rank).as_bytes())
        .await
    {
        error(
            mode,
            g,
            &format!("lost the leader at {endpoint}: Connection closed by peer ({e})"),
        );
        return 1;
    }
    info(
        mode,
        g,
        &format!(
            "joined the group at {endpoint} as node rank {} of {}",
            g.rank, g.nnodes
        ),
    );
    let loaded = async {
        tokio::time::sleep(load).await;
        info(
            mode,
            g,
            &format!(
                "Loading weights took {:.2} seconds (node rank {})",
                load.as_secs_f64(),
                g.rank
            ),
        );
        crate::procs::write_state("ready", &format!("{}\n", std::process::id()));
        std::future::pending::<()>().await;
    };
    let mut buf = [0u8; 256];
    let held = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break "Connection closed by peer".to_string(),
                Ok(_) => continue,
                Err(e) => break format!("Connection closed by peer ({e})"),
            }
        }
    };
    let why = tokio::select! {
        why = held => why,
        _ = loaded => unreachable!("the load future never ends"),
    };
    error(mode, g, &format!("lost the leader at {endpoint}: {why}"));
    1
}

fn join_timed_out(g: &Group, mode: Mode, timeout: Duration, endpoint: &str, last: &str) -> i32 {
    error(
        mode,
        g,
        &format!(
            "could not join the group: leader at {endpoint} not reachable within {}s ({last})",
            timeout.as_secs_f64()
        ),
    );
    elog!(
        "torch.distributed.DistNetworkError: The client socket has timed out after {}ms while trying to connect to ({}, {}).",
        timeout.as_millis(),
        g.host,
        g.port
    );
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{detect, parse as parse_args};

    fn group(line: &str) -> Result<Option<Group>, ArgError> {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        let (mode, rest) = detect(&argv);
        let version = if mode == Mode::Vllm {
            "0.32.0"
        } else {
            "0.5.23"
        };
        let a = parse_args(mode, rest, version, &[]).expect("the flags parse");
        parse(&a)
    }

    fn g(nnodes: u32, rank: u32, host: &str, port: u16) -> Option<Group> {
        Some(Group {
            nnodes,
            rank,
            host: host.to_string(),
            port,
        })
    }

    #[test]
    fn single_node_is_no_group() {
        assert_eq!(group("serve m").unwrap(), None);
        assert_eq!(group("serve m --nnodes 1 --node-rank 0").unwrap(), None);
        assert_eq!(group("--model-path m --nnodes 1").unwrap(), None);
    }

    #[test]
    fn vllm_group_flags_and_defaults() {
        assert_eq!(
            group("serve m --nnodes 2").unwrap(),
            g(2, 0, "127.0.0.1", 29501)
        );
        assert_eq!(
            group("serve m --nnodes 3 --node-rank 2 --master-addr 10.0.0.1 --master-port 1234 --headless")
                .unwrap(),
            g(3, 2, "10.0.0.1", 1234)
        );
        assert_eq!(
            group("serve m -n 2 -r 1 --master_addr=::1").unwrap(),
            g(2, 1, "::1", 29501)
        );
        assert_eq!(g(2, 1, "::1", 5).unwrap().endpoint(), "[::1]:5");
    }

    #[test]
    fn sglang_group_flags() {
        assert_eq!(
            group("--model-path m --nnodes 2 --dist-init-addr 127.0.0.1:5000").unwrap(),
            g(2, 0, "127.0.0.1", 5000)
        );
        assert_eq!(
            group("--model-path m --nnodes 2 --node-rank 1 --dist-init-addr [::1]:5000").unwrap(),
            g(2, 1, "::1", 5000)
        );
        assert_eq!(
            group("--model-path m --nnodes 2 --node-rank 1 --nccl-init-addr host:7").unwrap(),
            g(2, 1, "host", 7)
        );
    }

    #[test]
    fn bad_group_values_are_argparse_errors() {
        for (line, want) in [
            (
                "serve m --nnodes x",
                "argument --nnodes/-n: invalid int value: 'x'",
            ),
            (
                "serve m --nnodes 2 --node-rank y",
                "argument --node-rank/-r: invalid int value: 'y'",
            ),
            (
                "serve m --nnodes 2 --node-rank 2",
                "node rank 2 is out of range for --nnodes 2",
            ),
            (
                "serve m --nnodes 2 --node-rank -1",
                "node rank -1 is out of range",
            ),
            (
                "serve m --nnodes 2 --master-port z",
                "argument --master-port: invalid int value: 'z'",
            ),
            (
                "serve m --nnodes 2 --master-port 70000",
                "argument --master-port: invalid int value: '70000'",
            ),
            (
                "--model-path m --nnodes 2",
                "--dist-init-addr (HOST:PORT) is required",
            ),
            (
                "--model-path m --nnodes 2 --dist-init-addr host",
                "invalid address 'host'",
            ),
            (
                "--model-path m --nnodes 2 --dist-init-addr ::1:5000",
                "invalid address '::1:5000'",
            ),
            (
                "--model-path m --nnodes 2 --dist-init-addr h:p",
                "invalid address 'h:p'",
            ),
            (
                "--model-path m --nnodes 2 --node-rank 5 --dist-init-addr h:1",
                "node rank 5 is out of range",
            ),
        ] {
            let e = group(line).expect_err(line);
            assert!(e.0.contains(want), "{line}: {}", e.0);
            assert!(e.0.starts_with("usage: "), "{line}: {}", e.0);
        }
    }
}
