//! Lingering close (RFC 9112 §9.6): when hyper is done with a client connection, its socket is
//! not simply dropped. Dropping a socket with unread input (an HTTP/2 client's WINDOW_UPDATE
//! or PING sent as the last streams finished, a pipelined HTTP/1.1 request) makes the kernel
//! answer with a TCP reset, and a reset can destroy responses the client has not read yet.
//! Instead the write side is shut down (the client sees a clean end), and input is read and
//! discarded until the client closes, for at most [`LINGER`] and [`LINGER_BYTES`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest a closed connection is read from before it is dropped.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
pub const LINGER_BYTES: u64 = 256 * 1024;

/// A client connection that lingers when dropped. Must be dropped inside a tokio runtime.
#[derive(Debug)]
pub struct Lingering<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<I>,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<I> {
    /// Wraps `io`.
    pub fn new(io: I) -> Self {
        Self { inner: Some(io) }
    }

    fn io(&mut self) -> &mut I {
        // Only `drop` takes the stream, and nothing polls a value being dropped.
        self.inner.as_mut().expect("stream present until drop")
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<I> {
    fn drop(&mut self) {
        let Some(io) = self.inner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, linger(io)).await;
        });
    }
}

/// Half-closes, then reads until the peer closes (or errs) or the byte cap is reached.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut read = 0u64;
    while read < LINGER_BYTES {
        match io.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n as u64,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// The server answers and closes while the client's last bytes are still unread: the
    /// client must read the whole answer and then a clean end, not a reset.
    #[tokio::test]
    async fn a_close_with_unread_input_is_not_a_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&[7u8; 64 * 1024]).await.unwrap();
        let mut server = Lingering::new(server);
        // Wait until the client's bytes have arrived, unread, before answering and closing.
        let mut peek = [0u8; 1];
        server.io().peek(&mut peek).await.unwrap();
        server.write_all(b"answer").await.unwrap();
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
    }
}
