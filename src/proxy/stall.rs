//! A write-stall limit on a guest connection: when the shield has bytes for the client and the
//! client takes none of them for `body_timeout`, the connection fails (nginx's `send_timeout`).
//!
//! Without it a client that asks for a gallery zip and never reads keeps its connection, its
//! task and an app connection forever, and enough of them fill `max_connections`. Reads are left
//! alone: `header_timeout` bounds a head and [`crate::proxy::forward::ClientBody`] a request body.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `io` whose writes fail with `TimedOut` after `limit` without progress.
pub struct WriteStall<T> {
    io: T,
    limit: Duration,
    /// Armed while a write is waiting on the client; dropped as soon as one makes progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStall<T> {
    /// Wraps `io`.
    pub fn new(io: T, limit: Duration) -> Self {
        WriteStall {
            io,
            limit,
            timer: None,
        }
    }

    /// The stream inside.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// On `Pending`, arms (or polls) the timer; on anything else, disarms it.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for body_timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_fails_the_write_after_the_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let mut w = WriteStall::new(near, Duration::from_secs(5));
        let err = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_reading_is_never_cut_off() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            // Slower than the writer, but each read well within the limit.
            while let Ok(n) = far.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got += n;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            got
        });
        let mut w = WriteStall::new(near, Duration::from_secs(5));
        w.write_all(&[7u8; 1024]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
