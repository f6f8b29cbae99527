//! The fast lane's idle connections to the engine, newest first.
//!
//! A connection idle for `IDLE_FOR` is not used again: uvicorn (vLLM's and SGLang's server)
//! closes a keep-alive connection after 5 s, and one it closed while we were about to use it
//! would fail a request. One the engine has closed or written to since (its socket is
//! readable) is dropped when it comes up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Longest idle time of a pooled connection (under uvicorn's 5 s keep-alive).
pub const IDLE_FOR: Duration = Duration::from_secs(4);
/// Most idle connections kept.
const MAX_IDLE: usize = 1024;

struct Idle {
    stream: TcpStream,
    port: u16,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<VecDeque<Idle>>,
}

impl Pool {
    /// An idle connection to `port` that is still good, if there is one.
    pub fn take(&self, port: u16) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop_back() {
            if c.port == port && c.since.elapsed() < IDLE_FOR && quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keeps `stream` (to `port`) for the next request.
    pub fn give(&self, stream: TcpStream, port: u16) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_FOR || idle.len() >= MAX_IDLE)
        {
            idle.pop_front();
        }
        idle.push_back(Idle {
            stream,
            port,
            since: now,
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

/// Whether nothing came on an idle connection (no data, no close): the readiness the runtime
/// already has, no system call.
fn quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(stream.poll_read_ready(&mut cx), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_closed_or_other_port_connection_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let pool = Pool::default();
        let a = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut a_peer, _) = listener.accept().await.expect("accept");
        let b = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (_b_peer, _) = listener.accept().await.expect("accept");
        let b_addr = b.local_addr().expect("addr");
        pool.give(b, port);
        pool.give(a, port);
        // The peer of `a` (the newest) closes it: it must be skipped for `b`.
        a_peer.shutdown().await.expect("shutdown");
        drop(a_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pool.take(port).expect("b is still good");
        assert_eq!(got.local_addr().expect("addr"), b_addr);
        assert!(pool.take(port).is_none(), "a was dropped, b taken");
        pool.give(got, port);
        assert!(
            pool.take(port + 1).is_none(),
            "another port's connection is not used"
        );
        assert_eq!(pool.len(), 0, "and it is dropped, not kept");
    }
}
