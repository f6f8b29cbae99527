//! Protection of the public port: slow or oversized request heads, slow bodies, idle
//! connections and too many connections.
//!
//! Health must stay fast whatever the proxied traffic does: every connection is its own task,
//! health never waits on the engine, a client that dribbles its headers is cut off after
//! `header_read_timeout` (the same timer closes an idle keep-alive connection: hyper starts it
//! whenever it waits for a request head), a request body that stalls for `body_read_timeout`
//! is cut with 408, and a head larger than `max_header_bytes` gets 431 from hyper.
//!
//! Floods: one peer (IP address) holds at most `max_connections_per_peer` connections. A
//! connection over that or over the global cap is not refused at once: it takes one of the
//! `health_connections` reserved slots (a peer may hold an eighth of them), where only health
//! and `/status` are answered (one request, a short head timeout) and anything else is 503
//! `over_capacity`. Only when the reserve is full too is a connection answered 503 without
//! being read. So Docker's and Kubernetes' probes get their answer while one client floods.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// hyper refuses a read buffer smaller than this.
const HYPER_MIN_BUF: usize = 8192;

/// The knobs; `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must arrive completely within this (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head accepted (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// Longest wait for the engine's `/metrics` during a scrape.
    pub engine_metrics_timeout: Duration,
    /// Retry-After seconds while the engine loads, restarts or we drain.
    pub retry_after_s: u32,
    /// Longest pause between two pieces of a request body (slow-body floods).
    pub body_read_timeout: Duration,
    /// Connections one peer address may hold (0: no per-peer cap).
    pub max_connections_per_peer: usize,
    /// Connection slots kept for health and `/status` when the caps are reached.
    pub health_connections: usize,
    /// Longest wait for the engine's first byte of a forwarded response (its head, then the
    /// first piece of its body), counted from the end of the client's request body; then 504
    /// `first_byte_timeout` (0: no limit).
    pub first_byte_timeout: Duration,
    /// Longest pause of the engine between two pieces of a response body once it has begun
    /// (counted while we wait on the engine, not while the client reads); then the response
    /// is cut (0: no limit).
    pub stream_gap_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            // Requests carry their payload in the body; 64 KiB of headers is plenty (vLLM's
            // uvicorn allows about the same).
            max_header_bytes: 64 * 1024,
            engine_metrics_timeout: Duration::from_millis(500),
            retry_after_s: 5,
            body_read_timeout: Duration::from_secs(60),
            max_connections_per_peer: 1024,
            health_connections: 64,
            // A long prompt's prefill comes before the first token: 100k tokens on a loaded
            // engine take minutes.
            first_byte_timeout: Duration::from_secs(600),
            // Decode steps are milliseconds apart; two minutes of silence is a stuck engine
            // (or a batch stalled behind a huge prefill, which still ends in well under that).
            stream_gap_timeout: Duration::from_secs(120),
        }
    }
}

impl Limits {
    /// The first-byte deadline, None when disabled.
    pub fn first_byte(&self) -> Option<Duration> {
        Some(self.first_byte_timeout).filter(|d| !d.is_zero())
    }

    /// The gap deadline, None when disabled.
    pub fn stream_gap(&self) -> Option<Duration> {
        Some(self.stream_gap_timeout).filter(|d| !d.is_zero())
    }

    /// How long a reserved (health-only) connection may take to send its request head.
    pub fn reserved_head_timeout(&self) -> Duration {
        self.header_read_timeout.min(Duration::from_secs(2))
    }

    /// Reserved slots one peer may hold.
    pub fn reserved_per_peer(&self) -> usize {
        (self.health_connections / 8).max(1)
    }

    /// The value for hyper's `max_buf_size` (which asserts a minimum).
    pub fn max_buf_size(&self) -> usize {
        self.max_header_bytes.max(HYPER_MIN_BUF)
    }
}

/// The whole answer to a connection over the cap.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 128\r\n\r\n\
{\"error\":{\"message\":\"too many connections to the public port\",\"type\":\"service_unavailable\",\"param\":null,\"code\":\"over_capacity\"}}";

/// Answers 503 without reading the request and closes; bounded so it cannot pile up.
pub async fn refuse_over_capacity(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVER_CAPACITY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises our soft open-file limit to the hard one (systemd gives services a soft limit of
/// 1024) and warns when even that cannot hold every connection the port may take: past the fd
/// limit `accept` fails and no slot, reserved or not, can answer health.
pub fn fit_fd_limit(max_connections: usize, health_connections: usize) {
    // Connections to the engine (one per forwarded request) and our own files come on top.
    let wanted = (2 * max_connections + health_connections + 256) as u64;
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        if lim.rlim_cur < wanted {
            tracing::warn!(
                limit = lim.rlim_cur,
                wanted,
                "the open-file limit is below what --max-connections needs: under a flood, \
                 accept would fail before the caps apply and health would go unanswered; \
                 raise it (ulimit -n, LimitNOFILE=, --ulimit nofile) or lower --max-connections"
            );
        }
    }
}

/// Connections held per peer address, against a limit.
#[derive(Clone, Default)]
pub struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection of a peer; gives its place back when dropped.
pub struct PeerSlot {
    counts: PeerCounts,
    ip: IpAddr,
}

impl PeerCounts {
    /// A slot for `ip` unless it already holds `limit` (0: no limit).
    pub fn try_enter(&self, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_capacity_answer_has_the_right_length() {
        let text = std::str::from_utf8(OVER_CAPACITY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("content-length")
            .parse()
            .expect("number");
        assert_eq!(declared, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(v["error"]["code"], "over_capacity");
    }

    #[test]
    fn peer_slots_are_counted_and_given_back() {
        let counts = PeerCounts::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let one = counts.try_enter(a, 2).expect("first");
        let two = counts.try_enter(a, 2).expect("second");
        assert!(counts.try_enter(a, 2).is_none());
        assert!(counts.try_enter(b, 2).is_some());
        drop(one);
        let three = counts.try_enter(a, 2).expect("a place came back");
        drop((two, three));
        assert!(counts.0.lock().expect("lock").is_empty());
        let many: Vec<_> = (0..10).filter_map(|_| counts.try_enter(a, 0)).collect();
        assert_eq!(many.len(), 10, "0 means no cap");
    }

    #[test]
    fn buffer_never_below_hyper_minimum() {
        let l = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(l.max_buf_size(), HYPER_MIN_BUF);
    }
}
