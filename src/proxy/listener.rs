//! The guest listener: the accept loop (at most `max_connections` open), one task per
//! connection serving HTTP/1.1 with a header-read timeout and a cap on the head, the TLS
//! handshake first on the HTTPS listener, and graceful shutdown. Each request goes to
//! [`crate::proxy::pipeline::answer`]; the service's error type is `Infallible`: every failure
//! becomes an answer there, never a dropped connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::proxy::stall::WriteStall;
use crate::proxy::Parts;
use crate::shutdown::Shutdown;

/// Largest request head (request line and headers) the shield reads; larger is 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What a listener speaks.
pub(crate) enum Front {
    /// Plain HTTP/1.1.
    Plain,
    /// HTTP/1.1 over TLS; the handshake runs in the connection's own task.
    Tls(Arc<crate::proxy::tls::TlsFront>),
}

/// Serves guests on `listener` until `shutdown` is requested, then lets in-flight requests
/// finish within the configured grace.
pub(crate) async fn serve(
    listener: TcpListener,
    parts: Arc<Parts>,
    front: Front,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    // One slot per open connection: at max_connections the shield stops accepting (new
    // connections wait in the kernel's backlog) until one ends, instead of running out of
    // file descriptors. Read at start, like the listen address.
    let max = parts.snapshots.load().loaded.config.server.max_connections;
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.requested() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (header_timeout, handshake_timeout, stall) = {
                        let server = &parts.snapshots.load().loaded.config.server;
                        let handshake = server.tls.as_ref().map(|t| t.handshake_timeout);
                        (server.header_timeout, handshake.unwrap_or(Duration::from_secs(10)), server.body_timeout)
                    };
                    let watcher = graceful.watcher();
                    let conn_parts = parts.clone();
                    let conn = Conn { peer: peer.ip(), header_timeout, stall, watcher, slot };
                    match &front {
                        Front::Plain => {
                            tokio::spawn(serve_connection(conn_parts, false, stream, conn));
                        }
                        Front::Tls(tls) => {
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                let counts = &conn_parts.telemetry.meters.tls;
                                if let Some(stream) = tls.handshake(stream, handshake_timeout, counts).await {
                                    serve_connection(conn_parts, true, stream, conn).await;
                                }
                            });
                        }
                    }
                }
                Err(_) => {
                    // Out of file descriptors or similar: back off instead of spinning on accept.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.requested() => break,
        }
    }
    drop(listener);
    let grace = parts.snapshots.load().loaded.config.server.shutdown_grace;
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// What one accepted connection carries into its task.
struct Conn {
    peer: IpAddr,
    header_timeout: Duration,
    /// How long the client may leave its answer unread (`body_timeout`).
    stall: Duration,
    watcher: Watcher,
    /// Its place among `max_connections`, given back when the connection ends.
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// Serves HTTP/1.1 on one connection (plain or after the TLS handshake) until it closes or a
/// graceful shutdown ends it.
async fn serve_connection<T>(parts: Arc<Parts>, https: bool, io: T, conn: Conn)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        header_timeout,
        stall,
        watcher,
        slot,
    } = conn;
    let counted = parts.clone();
    let service = service_fn(move |req| {
        let parts = parts.clone();
        async move {
            Ok::<_, Infallible>(crate::proxy::pipeline::answer(&parts, peer, https, req).await)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // max_buf_size alone only trips when the buffer fills before the head ends, and one
        // read can overshoot it: a 70 KiB head was served.
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(WriteStall::new(io, stall)), service);
    // hyper answers a malformed or oversized head itself, and closes a slow one; the
    // connection's error is the only trace of those requests.
    if let Err(e) = watcher.watch(conn).await {
        counted.telemetry.meters.connection_failed(&e);
    }
    drop(slot);
}

/// Binds a listener, with a message naming the address on failure.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
