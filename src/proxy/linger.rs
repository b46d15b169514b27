//! Lingering close (nginx's `lingering_close`): after an answer that left the request's body
//! unread, the shield has already ended its side (FIN; over TLS `close_notify` first) and now
//! reads and discards whatever the client still sends, until the client closes, or
//! [`LINGER_IDLE`] passes without a byte, or [`LINGER_TOTAL`] in all; then it closes.
//!
//! Closing at once instead would reset the connection while the client is still sending (the
//! kernel answers unread data with RST), and a reset can destroy the answer before the client
//! has read it: a browser's `fetch` uploading a photo then sees "network error" instead of its
//! 413 or 429. How many connections linger at once is bounded by the door
//! ([`crate::proxy::door::Door::try_linger`]); each keeps its place among the connections of
//! its client and of the shield until it closes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest a connection lingers.
pub const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// Lingering ends when the client sends nothing for this long.
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// How lingering ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The client closed its side (or the connection failed): nothing more can come.
    Closed,
    /// Nothing arrived for [`LINGER_IDLE`].
    Idle,
    /// [`LINGER_TOTAL`] ran out while the client was still sending.
    TimeUp,
}

/// Reads and discards from `io` until it ends (see [`Drained`]); returns how, and the bytes
/// discarded. (A lingering connection does not hold up a shutdown: its answer is out, and the
/// shield stops once the requests in flight are done.)
pub async fn drain<R: AsyncRead + Unpin>(io: &mut R) -> (Drained, u64) {
    let mut buf = [0u8; 16 * 1024];
    let mut discarded = 0u64;
    let total = tokio::time::sleep(LINGER_TOTAL);
    tokio::pin!(total);
    loop {
        tokio::select! {
            read = tokio::time::timeout(LINGER_IDLE, io.read(&mut buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => return (Drained::Closed, discarded),
                Ok(Ok(n)) => discarded += n as u64,
                Err(_) => return (Drained::Idle, discarded),
            },
            _ = &mut total => return (Drained::TimeUp, discarded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_closes_ends_lingering_with_everything_discarded() {
        let (mut near, mut far) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                far.write_all(&[b'x'; 10_000]).await.unwrap();
            }
        });
        let (how, n) = drain(&mut near).await;
        writer.await.unwrap();
        assert_eq!((how, n), (Drained::Closed, 1_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn five_seconds_without_data_ends_lingering() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(b"part of a body").await.unwrap();
        let started = tokio::time::Instant::now();
        let (how, n) = drain(&mut near).await;
        assert_eq!((how, n), (Drained::Idle, 14));
        assert_eq!(started.elapsed(), LINGER_IDLE);
        drop(far);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_trickles_forever_is_cut_at_thirty_seconds() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            // A byte every 4 s: never idle for 5 s.
            while far.write_all(b"y").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let started = tokio::time::Instant::now();
        let (how, n) = drain(&mut near).await;
        assert_eq!(how, Drained::TimeUp);
        assert_eq!(started.elapsed(), LINGER_TOTAL);
        assert_eq!(n, 8, "bytes at 0, 4, .., 28 s");
        drop(near);
        writer.await.unwrap();
    }
}
