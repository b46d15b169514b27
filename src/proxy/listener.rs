//! The guest listeners' accept loop: every accepted connection goes through the door
//! ([`crate::proxy::door`]: `max_connections_per_ip`, `max_connections`, idle connections
//! closed to make room) and, admitted, gets its own task ([`crate::proxy::connection`]);
//! refused, it is closed at once. The loop never waits for a slot, so a new connection never
//! sits in the backlog behind idle ones. On shutdown it stops accepting and lets the requests
//! in flight finish within the configured grace.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::policy::client_ip::{canonical, ClientKey};
use crate::proxy::connection::{self, Accepted};
use crate::proxy::door::PerIp;
use crate::proxy::Parts;
use crate::shutdown::Shutdown;
use crate::telemetry::denial_line::{log_connection_refused, log_connections_full};
use crate::telemetry::meters::{Listener, Protocol, Refusal};

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
    // Every connection task holds a clone until its requests are done; when all are gone,
    // `recv` below returns None.
    let (held, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let (which, tls) = match &front {
        Front::Plain => (Listener::Http, None),
        Front::Tls(tls) => (Listener::Https, Some(tls.clone())),
    };
    let first = match which {
        Listener::Http => Protocol::Http1,
        Listener::Https => Protocol::Handshake,
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.requested() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning on accept.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (per_ip, header_timeout, handshake_timeout, stall) = {
            let snap = parts.snapshots.load();
            let server = &snap.loaded.config.server;
            let handshake = server.tls.as_ref().map(|t| t.handshake_timeout);
            (
                per_ip(&snap, peer.ip(), || parts.clock.now().unix()),
                server.header_timeout,
                handshake.unwrap_or(Duration::from_secs(10)),
                server.body_timeout,
            )
        };
        match parts.door.admit(per_ip, which, first) {
            Ok(ticket) => {
                let _ = stream.set_nodelay(true);
                let accepted = Accepted {
                    stream,
                    peer: peer.ip(),
                    ticket,
                    header_timeout,
                    handshake_timeout,
                    stall,
                };
                tokio::spawn(connection::serve(
                    parts.clone(),
                    tls.clone(),
                    accepted,
                    shutdown.clone(),
                    held.clone(),
                ));
            }
            Err(refusal) => {
                // Closed at once, unread: a refused client costs one accept and one close.
                drop(stream);
                refused(&parts, refusal, peer.ip(), per_ip);
            }
        }
    }
    drop(listener);
    drop(held);
    let grace = parts.snapshots.load().loaded.config.server.shutdown_grace;
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
}

/// The client key and `max_connections_per_ip` of a connection from `peer`; `None` for a
/// trusted proxy (exempt: its connections carry many clients) and for an allowlisted peer
/// (exempt from limits, as on every request; `now_unix` is read only to look it up).
fn per_ip(snap: &crate::snapshot::Snapshot, peer: IpAddr, now_unix: impl FnOnce() -> i64) -> PerIp {
    let peer = canonical(peer);
    if snap.trusted.contains(peer) {
        return None;
    }
    if !snap.rules.allowlist.is_empty() && snap.rules.allowlisted(peer, now_unix()) {
        return None;
    }
    let config = &snap.loaded.config;
    Some((
        ClientKey::new(peer, config.client.ipv6_prefix),
        config.server.max_connections_per_ip,
    ))
}

/// Logs a refused connection (counted by the door): folded per client, like denials.
fn refused(parts: &Parts, refusal: Refusal, peer: IpAddr, per_ip: PerIp) {
    let now = parts.clock.now().instant();
    let log = &parts.telemetry.log;
    match (refusal, per_ip) {
        (Refusal::PerIp, Some((key, limit))) => log_connection_refused(
            log,
            canonical(peer),
            crate::policy::limits::client_key_hash(key),
            limit,
            now,
        ),
        (Refusal::PerIp, None) => {}
        (Refusal::Max, _) => log_connections_full(log, parts.door.max(), now),
    }
}

/// Binds a listener, with a message naming the address on failure.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
