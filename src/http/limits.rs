//! Protection of the public port: slow or oversized request heads and too many connections.
//!
//! Health must stay fast whatever the proxied traffic does: every connection is its own task,
//! health never waits on the engine, a client that dribbles its headers is cut off after
//! `header_read_timeout`, and a head larger than `max_header_bytes` gets 431 from hyper.

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
        }
    }
}

impl Limits {
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
    fn buffer_never_below_hyper_minimum() {
        let l = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(l.max_buf_size(), HYPER_MIN_BUF);
    }
}
