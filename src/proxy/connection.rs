//! One guest connection, from its ticket at the door to its close: the TLS handshake on the
//! HTTPS listener, HTTP served until the connection ends, and the close, lingering after an
//! answer that may have left bytes unread.
//!
//! HTTP/1.1 is served by hyper's connection polled *without* its shutdown, so the socket comes
//! back when hyper is done with it ([`serve_http1`]): the shield then ends its side itself
//! (over TLS `close_notify`, then FIN) and, when its answer said `Connection: close` (an early
//! answer with the body unread, a blocklisted or banned client, a malformed request) or hyper
//! refused a malformed or oversized head, lingers ([`crate::proxy::linger`]) before it closes.
//! Each protocol is one `serve_*` function returning [`Ended`]; [`serve`] picks one.
//!
//! A connection is told to close by the door (to make room at `max_connections`, only while
//! idle) or by the shutdown: either way hyper's graceful shutdown, which lets a request in
//! flight finish first.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::proxy::door::{Busy, ConnSlot, Ticket};
use crate::proxy::linger;
use crate::proxy::sent::SentBody;
use crate::proxy::stall::WriteStall;
use crate::proxy::Parts;
use crate::shutdown::Shutdown;
use crate::telemetry::meters::Protocol;

/// Largest request head (request line and headers) the shield reads; larger is 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long ending the shield's side may take (flushing `close_notify` to a client that reads
/// nothing): past it the connection is simply closed.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// A guest connection's stream: plain TCP or TLS over it.
pub(crate) trait GuestIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP stream underneath, to drain raw after the shield ended its side.
    fn into_tcp(self) -> TcpStream;
}

impl GuestIo for TcpStream {
    fn into_tcp(self) -> TcpStream {
        self
    }
}

impl GuestIo for TlsStream<TcpStream> {
    fn into_tcp(self) -> TcpStream {
        self.into_inner().0
    }
}

/// What an accepted connection carries into its task.
pub(crate) struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Its place at the door, given back when the socket closes.
    pub ticket: Ticket,
    /// A request head must arrive within this (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// How long the client may leave its answer unread (`body_timeout`).
    pub stall: Duration,
}

/// How HTTP serving of a connection ended.
pub(crate) enum Ended<T> {
    /// Hyper is done with the stream; `linger` says whether unread bytes follow the last
    /// answer for sure (else only bytes already waiting on the socket make it linger).
    Done { io: T, linger: bool },
    /// The connection failed (reset, timed out, cut off): nothing more to say on it.
    Failed,
}

/// Serves one connection until it closes. `tls` is the HTTPS listener's handshake, `None` on
/// the plain listener. `held` keeps the listener's shutdown waiting while requests may still
/// come; it is let go before lingering (an answered connection does not hold up a stop).
pub(crate) async fn serve(
    parts: Arc<Parts>,
    tls: Option<Arc<crate::proxy::tls::TlsFront>>,
    accepted: Accepted,
    shutdown: Shutdown,
    held: tokio::sync::mpsc::Sender<()>,
) {
    let Accepted {
        stream,
        peer,
        mut ticket,
        header_timeout,
        handshake_timeout,
        stall,
    } = accepted;
    let slot = ticket.slot().clone();
    let told = told_to_close(slot.clone(), shutdown);
    tokio::pin!(told);
    match tls {
        None => {
            let ended = serve_http1(
                &parts,
                &ticket,
                peer,
                false,
                stream,
                (header_timeout, stall),
                told,
            )
            .await;
            close(ticket, ended, held).await;
        }
        Some(tls) => {
            let counts = &parts.telemetry.meters.tls;
            let stream = tokio::select! {
                s = tls.handshake(stream, handshake_timeout, counts) => s,
                _ = &mut told => None,
            };
            let Some(stream) = stream else { return };
            ticket.speaks(Protocol::Http1);
            let ended = serve_http1(
                &parts,
                &ticket,
                peer,
                true,
                stream,
                (header_timeout, stall),
                told,
            )
            .await;
            close(ticket, ended, held).await;
        }
    }
}

/// Resolves when the door tells the connection to close or the shield stops.
async fn told_to_close(slot: Arc<ConnSlot>, shutdown: Shutdown) {
    tokio::select! {
        _ = slot.told_to_close() => {}
        _ = shutdown.requested() => {}
    }
}

/// Serves HTTP/1.1 on `io` until hyper is done with it; `told` starts a graceful shutdown.
async fn serve_http1<T: GuestIo>(
    parts: &Arc<Parts>,
    ticket: &Ticket,
    peer: IpAddr,
    https: bool,
    io: T,
    (header_timeout, stall): (Duration, Duration),
    mut told: Pin<&mut impl Future<Output = ()>>,
) -> Ended<T> {
    let door = ticket.door().clone();
    let slot = ticket.slot().clone();
    let for_service = parts.clone();
    let service = service_fn(move |req| {
        // In flight from the head to the end of the answer's body.
        let busy = door.begin(&slot);
        let parts = for_service.clone();
        let fut = async move {
            let resp = crate::proxy::pipeline::answer(&parts, peer, https, req).await;
            if says_close(&resp) {
                busy.slot().linger_after();
            }
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        };
        // hyper polls without its shutdown only on an `Unpin` service future.
        Box::pin(fut)
    });
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // max_buf_size alone only trips when the buffer fills before the head ends, and one
        // read can overshoot it: a 70 KiB head was served.
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(WriteStall::new(io, stall)), service);
    let mut closing = false;
    let result = std::future::poll_fn(|cx| {
        if !closing && told.as_mut().poll(cx).is_ready() {
            closing = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    // hyper answers a malformed or oversized head itself (400, 431) and closes a slow one; the
    // connection's error is the only trace of those requests.
    let refused_head = match &result {
        Ok(()) => false,
        Err(e) => {
            parts.telemetry.meters.connection_failed(e);
            e.is_parse() || e.is_parse_too_large()
        }
    };
    if result.is_err() && !refused_head {
        return Ended::Failed;
    }
    // The bytes hyper read past the last request (a body, pipelined requests) are dropped
    // with `read_buf`: nothing on this connection is read as a request any more.
    let parts = conn.into_parts();
    let linger = refused_head || ticket.slot().lingers() || !parts.read_buf.is_empty();
    Ended::Done {
        io: parts.io.into_inner().into_inner(),
        linger,
    }
}

/// Whether the shield's answer ends the connection (it set `Connection: close` itself: the
/// app's hop-by-hop headers never reach the client).
fn says_close<B>(resp: &Response<B>) -> bool {
    resp.headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Ends the shield's side of a connection hyper is done with and, when unread bytes may
/// follow its last answer, lingers (within the door's bound) before the socket closes. The
/// ticket goes back when this returns.
async fn close<T: GuestIo>(ticket: Ticket, ended: Ended<T>, held: tokio::sync::mpsc::Sender<()>) {
    ticket.retire();
    let Ended::Done { mut io, linger } = ended else {
        return;
    };
    // The answer is out (hyper flushed it): over TLS close_notify, then FIN.
    let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, io.shutdown()).await;
    drop(held);
    // Draining below TLS: the bytes are discarded, so they need no decrypting.
    let mut tcp = io.into_tcp();
    // An answer the app gave before the body was read ends the connection too (hyper does
    // not read a body nobody asked for): bytes already waiting say the client is sending.
    if !(linger || pending(&tcp)) {
        return;
    }
    let Some(_lingering) = ticket.door().try_linger() else {
        return;
    };
    let _ = linger::drain(&mut tcp).await;
}

/// Whether the client has sent bytes nobody read (what is read here is discarded).
fn pending(tcp: &TcpStream) -> bool {
    let mut peek = [0u8; 1024];
    matches!(tcp.try_read(&mut peek), Ok(n) if n > 0)
}

/// An answer's body that keeps its request in flight until it is done (hyper drops it once
/// written whole, or when the connection fails).
pub(crate) struct Tracked {
    body: SentBody,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = <SentBody as HttpBody>::Data;
    type Error = <SentBody as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
