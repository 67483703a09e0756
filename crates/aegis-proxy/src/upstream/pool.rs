//! Idle HTTP/1.1 connections to one endpoint, shared by the HTTP/1.1 fast path (`http::h1`) and
//! the general path's body-less requests (`upstream::h1`).
//!
//! The request's own task takes a connection, writes, reads and puts it back: no connection task,
//! no channel. Last in, first out, so the warmest connection is reused and the oldest ones age
//! out at the front. A connection the endpoint closed while idle is noticed before use from its
//! read readiness, without a system call.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::dial::UpstreamStream;

/// At most this many idle connections are kept per endpoint.
const MAX_IDLE: usize = 1024;

/// The idle connections of one endpoint.
#[derive(Debug)]
pub struct IdlePool {
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

impl IdlePool {
    /// An empty pool whose connections expire after `idle_timeout` unused.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
        }
    }

    /// The most recently used live connection, if any.
    pub fn take(&self, now: Instant) -> Option<UpstreamStream> {
        loop {
            let idle = self.lock().pop_back()?;
            if now.duration_since(idle.since) < self.idle_timeout && still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for the next request; drops connections that have expired.
    pub fn put(&self, stream: UpstreamStream, now: Instant) {
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { stream, since: now });
        }
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding the lock cannot leave the deque inconsistent: keep using it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection can carry a request: nothing arrived on it since its last response
/// (data or the endpoint's FIN would both make it readable).
fn still_open(stream: &UpstreamStream) -> bool {
    let tcp = match stream {
        UpstreamStream::Plain(tcp) => tcp,
        UpstreamStream::Tls(tls) => tls.get_ref().0,
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        // Readiness may be stale (the last read filled the buffer exactly): ask the socket.
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
        Poll::Ready(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (UpstreamStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (UpstreamStream::Plain(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn reuses_the_last_connection_put_back() {
        let pool = IdlePool::new(Duration::from_secs(60));
        let now = Instant::now();
        let (a, _a) = pair().await;
        let (b, _b) = pair().await;
        let b_port = match &b {
            UpstreamStream::Plain(s) => s.local_addr().unwrap().port(),
            UpstreamStream::Tls(_) => unreachable!(),
        };
        pool.put(a, now);
        pool.put(b, now);
        let Some(UpstreamStream::Plain(taken)) = pool.take(now) else {
            panic!("nothing taken")
        };
        assert_eq!(taken.local_addr().unwrap().port(), b_port);
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn expired_connections_are_dropped() {
        let pool = IdlePool::new(Duration::from_secs(5));
        let now = Instant::now();
        let (a, _a) = pair().await;
        pool.put(a, now);
        assert!(pool.take(now + Duration::from_secs(6)).is_none());
        let (b, _b) = pair().await;
        pool.put(b, now);
        let (c, _c) = pair().await;
        pool.put(c, now + Duration::from_secs(6));
        assert_eq!(pool.len(), 1, "the expired one at the front went on put");
    }

    #[tokio::test]
    async fn a_connection_closed_or_written_to_while_idle_is_not_reused() {
        let pool = IdlePool::new(Duration::from_secs(60));
        let (a, peer_a) = pair().await;
        let (b, mut peer_b) = pair().await;
        drop(peer_a);
        peer_b
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        // The FIN and the stray bytes arrive asynchronously; wait until the kernel has them.
        for stream in [&a, &b] {
            let UpstreamStream::Plain(tcp) = stream else {
                unreachable!()
            };
            tcp.readable().await.unwrap();
        }
        pool.put(a, Instant::now());
        pool.put(b, Instant::now());
        assert!(pool.take(Instant::now()).is_none());
        assert!(pool.is_empty());
    }
}
