//! The strict test client against raw servers that misbehave on purpose: every way an answer
//! can be cut short, over-long, malformed or ended by a reset must be caught, so that the rest
//! of the suite, which talks to the shield through this client, can fail.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::client::{self, shown, Broken, Conn, End, Sent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a one-connection server does after reading the request head.
#[derive(Clone, Copy)]
enum Then {
    /// Writes the bytes, then closes cleanly (FIN), having read everything the client sent.
    Close(&'static [u8]),
    /// Writes the bytes, then resets: it closes with unread bytes in its receive buffer.
    Reset(&'static [u8]),
    /// Writes the bytes and keeps the connection open until the client goes.
    Hold(&'static [u8]),
}

/// A server for one connection that answers as `then` says; the request must end in a blank
/// line (`Reset` servers leave whatever follows it unread).
async fn server(then: Then) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // The head byte by byte: whatever follows it stays unread in the receive buffer.
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            match s.read_u8().await {
                Ok(b) => got.push(b),
                Err(_) => return,
            }
        }
        let mut chunk = [0u8; 4096];
        match then {
            Then::Close(bytes) => {
                let _ = s.write_all(bytes).await;
                let _ = s.shutdown().await;
                // Read what the client still sends until it closes, so no RST is provoked.
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
            }
            Then::Reset(bytes) => {
                let _ = s.write_all(bytes).await;
                // Wait until the client's extra bytes are in the receive buffer, unread: the
                // close then sends RST. (The client writes them before it reads anything.)
                let _ = s.readable().await;
                drop(s);
            }
            Then::Hold(bytes) => {
                let _ = s.write_all(bytes).await;
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
    });
    addr
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
/// A request with bytes after it that a `Reset` server leaves unread.
const GET_AND_MORE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nunread bytes";

async fn broken(then: Then) -> Broken {
    let mut conn = Conn::open(server(then).await).await;
    conn.send(GET).await;
    conn.try_answer()
        .await
        .expect_err("the client took a broken answer for a whole one")
}

#[tokio::test]
async fn a_whole_answer_then_a_clean_close_is_told_as_such() {
    let addr = server(Then::Close(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ))
    .await;
    let mut conn = Conn::open(addr).await;
    let a = conn.request(GET).await;
    assert_eq!((a.status, a.text().as_str()), (200, "hello"));
    assert!(a.says_close());
    assert_eq!(conn.end().await, End::Closed);
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_not_an_answer() {
    let b = broken(Then::Close(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    ))
    .await;
    assert_eq!(b.end, Some(End::Closed), "{b}");
    assert!(b.why.contains("inside an answer"), "{b}");
}

#[tokio::test]
async fn a_chunked_body_without_its_last_chunk_is_not_an_answer() {
    let b = broken(Then::Close(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ))
    .await;
    assert_eq!(b.end, Some(End::Closed), "{b}");
}

#[tokio::test]
async fn a_whole_chunked_body_with_a_trailer_is_an_answer() {
    let addr = server(Then::Close(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
    ))
    .await;
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.request(GET).await.text(), "hello!");
    conn.closed().await;
}

#[tokio::test]
async fn malformed_chunks_and_framing_are_refused() {
    for bytes in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    ] {
        let addr = server(Then::Close(bytes)).await;
        let mut conn = Conn::open(addr).await;
        conn.send(GET).await;
        let got = conn.try_answer().await;
        assert!(got.is_err(), "{}: taken as {got:?}", shown(bytes));
    }
}

#[tokio::test]
async fn bytes_after_an_answer_that_says_close_fail_the_test() {
    const OVERLONG: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello, and more";
    let mut conn = Conn::open(server(Then::Close(OVERLONG)).await).await;
    assert_eq!(conn.request(GET).await.text(), "hello");
    let end = tokio::spawn(async move { conn.end().await }).await;
    assert!(end
        .expect_err("extra bytes taken for a clean end")
        .is_panic());
    let addr = server(Then::Close(OVERLONG)).await;
    let exchanged = tokio::spawn(client::exchange(addr, GET)).await;
    assert!(exchanged
        .expect_err("extra bytes taken by exchange")
        .is_panic());
}

#[tokio::test]
async fn a_reset_is_never_taken_for_a_close() {
    let addr = server(Then::Reset(
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    ))
    .await;
    let mut conn = Conn::open(addr).await;
    conn.send(GET_AND_MORE).await;
    // The answer may or may not survive the reset; the end is never a clean close.
    let answer = conn.try_answer().await;
    let end = match answer {
        Ok(a) => {
            assert_eq!(a.status, 429);
            conn.end().await
        }
        Err(b) => b.end.expect("the connection ended"),
    };
    assert_eq!(end, End::Reset);
}

#[tokio::test]
async fn a_close_delimited_body_ended_by_a_reset_is_not_whole() {
    let addr = server(Then::Reset(b"HTTP/1.1 200 OK\r\n\r\nperhaps all of it")).await;
    let mut conn = Conn::open(addr).await;
    conn.send(GET_AND_MORE).await;
    let b = conn.try_answer().await.expect_err("taken as whole");
    assert_eq!(b.end, Some(End::Reset), "{b}");
}

#[tokio::test]
async fn a_close_delimited_body_ended_cleanly_is_whole() {
    let addr = server(Then::Close(b"HTTP/1.1 200 OK\r\n\r\nall of it")).await;
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.request(GET).await.text(), "all of it");
    conn.closed().await;
}

#[tokio::test]
async fn an_answer_that_never_completes_fails_within_the_bound() {
    let addr = server(Then::Hold(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel",
    ))
    .await;
    let mut conn = Conn::open(addr).await.bound(Duration::from_millis(200));
    conn.send(GET).await;
    let b = conn.try_answer().await.expect_err("taken as whole");
    assert_eq!(b.end, None, "{b}");
    assert!(b.why.contains("no whole answer within"), "{b}");
    assert!(
        b.to_string().contains("hel"),
        "what was received is shown: {b}"
    );
}

#[tokio::test]
async fn a_connection_kept_open_is_told_apart_from_a_closed_one() {
    let addr = server(Then::Hold(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    let mut conn = Conn::open(addr).await.bound(Duration::from_millis(200));
    assert_eq!(conn.request(GET).await.status, 200);
    assert_eq!(conn.end().await, End::Open);
    let closed = tokio::spawn(conn.closed()).await;
    assert!(closed.expect_err("open taken for closed").is_panic());
}

#[tokio::test]
async fn interim_answers_are_kept_apart_from_the_final_one() {
    let addr = server(Then::Close(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ))
    .await;
    let mut conn = Conn::open(addr).await;
    let a = conn.request(GET).await;
    assert_eq!((a.status, a.interim.clone()), (204, vec![100, 103]));
    conn.closed().await;
}

#[tokio::test]
async fn a_head_answer_has_no_body_whatever_its_length_says() {
    let addr = server(Then::Close(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    ))
    .await;
    let mut conn = Conn::open(addr).await;
    conn.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let a = conn.answer_to_head().await;
    assert_eq!((a.status, a.body.len()), (200, 0));
    conn.closed().await;
}

#[tokio::test]
async fn an_upload_into_a_closed_connection_is_reported_as_such() {
    // A server that answers after the head and closes without reading the body: the client's
    // write of a large body fails, and that is told, never hidden.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        drop(s);
    });
    let head = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n";
    let body = vec![b'x'; 64 * 1024 * 1024];
    let (up, _conn) = client::upload(addr, head, &body).await;
    assert!(
        matches!(up.sent, Sent::BrokenPipe { .. } | Sent::Reset { .. }),
        "{:?}",
        up.sent
    );
    let whole = tokio::spawn(async move { up.whole() }).await;
    assert!(whole.expect_err("a refused upload passed").is_panic());
}

#[tokio::test]
async fn a_plain_tcp_peer_that_vanishes_mid_head_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _): (TcpStream, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
    });
    let mut conn = Conn::open(addr).await;
    conn.send(GET).await;
    let b = conn.try_answer().await.expect_err("half a head taken");
    assert_eq!(b.end, Some(End::Closed), "{b}");
}
