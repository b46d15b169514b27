//! The guest listener: accept loop, per-connection HTTP/1.1 with a header-read timeout, the
//! request handler (client IP → classify → decide → forward), and graceful shutdown.
//!
//! The handler's error type is `Infallible`: every failure becomes an answer here, at one
//! boundary ([`crate::deny::respond`]), never a dropped connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bans::Bans;
use crate::client_ip::{client_ip, ClientKey};
use crate::decide::{decide, Facts};
use crate::deny::{self, Denial, Seen};
use crate::enumeration::FailureCounter;
use crate::forward::{self, ForwardInfo, RequestIds, Upstream, X_REQUEST_ID};
use crate::limits;
use crate::log::LogHandle;
use crate::snapshot::Snapshot;

/// The body of every answer: the app's, streamed, or one the shield wrote.
pub type Body = Either<forward::ResponseBody, Full<Bytes>>;

/// Largest request head (request line and headers) the shield reads; larger is 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// State shared by every connection: the current snapshot and long-lived machinery.
pub struct Shared {
    /// The configuration in force; swapped whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// The pooled client to the app.
    pub upstream: Upstream,
    /// Request id source.
    pub request_ids: RequestIds,
    /// Unix milliseconds of the last time the app answered or accepted a connection.
    pub upstream_ok_at: AtomicI64,
    /// The log (never blocks).
    pub log: LogHandle,
    /// Held (synchronously, never across an await) while a reload builds and swaps a snapshot.
    pub reload_lock: std::sync::Mutex<()>,
    /// The version in force, for whoever waits for a reload ("version >= n", never a sleep).
    pub version: watch::Sender<u64>,
    /// Active bans (automatic and manual); state kept across restarts.
    pub bans: Bans,
    /// Distinct failed tokens per client and prefix.
    pub failures: FailureCounter,
    /// Counters that belong to no route (per-route ones live in the snapshot).
    pub metrics: crate::metrics::Metrics,
    /// Recent denials, offenders and request rates (for the admin API).
    pub recent: crate::recent::Recent,
}

/// Most clients and prefixes whose failed tokens are counted at once.
pub const FAILURE_TABLE_CLIENTS: usize = 100_000;
/// See [`FAILURE_TABLE_CLIENTS`].
pub const FAILURE_TABLE_PREFIXES: usize = 50_000;

impl Shared {
    /// Shared state around a first snapshot.
    pub fn new(snapshot: Snapshot, log: LogHandle, bans: Bans) -> Self {
        let connect = snapshot
            .loaded
            .config
            .server
            .upstream_timeout
            .min(Duration::from_secs(10));
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            upstream: Upstream::new(connect),
            request_ids: RequestIds::default(),
            upstream_ok_at: AtomicI64::new(0),
            log,
            reload_lock: std::sync::Mutex::new(()),
            version: watch::Sender::new(1),
            bans,
            failures: FailureCounter::new(FAILURE_TABLE_CLIENTS, FAILURE_TABLE_PREFIXES),
            metrics: Default::default(),
            recent: crate::recent::Recent::default(),
        }
    }

    /// Notes that the app answered (cheap: one relaxed load, a store at most once a second).
    pub fn note_upstream_ok(&self) {
        let now = now_ms();
        if now - self.upstream_ok_at.load(Ordering::Relaxed) > 1000 {
            self.upstream_ok_at.store(now, Ordering::Relaxed);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    // Straight from the system clock: chrono's `Utc::now` splits the time into a calendar date
    // and `timestamp_millis` joins it back, on every forwarded request.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Answers one request from `peer`.
pub async fn handle(
    shared: Arc<Shared>,
    peer: IpAddr,
    https: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let snap = shared.snapshot.load();
    let headers = req.headers();
    let client = client_ip(
        peer,
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes()),
        &snap.trusted,
    );
    let request_id = shared.request_ids.pick(headers.get(X_REQUEST_ID));

    let classified = snap.routes.classify(req.method(), req.uri().path());
    let client_key = ClientKey::new(client, snap.loaded.config.client.ipv6_prefix);
    let seen = Seen {
        ip: client,
        client_key: limits::client_key_hash(client_key),
        route: classified
            .class
            .and_then(|c| snap.routes.names().get(usize::from(c)))
            .map(String::as_str),
        token: classified.token.as_deref(),
        method: req.method(),
        path: req.uri().path(),
        request_id: &request_id,
    };
    let meter = snap.meters.get(classified.class);
    let keep = snap.loaded.config.log.token_preview;
    let now_unix = now_ms() / 1000;
    let facts = Facts {
        ip: client,
        class: classified.class,
        token: classified.token.as_deref(),
        client: client_key,
        client_hash: seen.client_key,
        now_unix,
        allowlisted: {
            let allow = &snap.loaded.lists.allowlist;
            !allow.is_empty() && allow.lookup(client, now_unix).is_some()
        },
    };
    let verdict = check_framing(&req, snap.loaded.config.server.max_body).or_else(|| {
        let mut shadowed = Vec::new();
        let verdict = decide(&snap, &shared.bans, &facts, &mut shadowed);
        for hit in shadowed {
            let hit = Denial::RateLimited(hit);
            meter.shadowed(&hit);
            deny::log_denial(&shared.log, &shared.recent, keep, &hit, &seen, true);
        }
        verdict
    });
    if let Some(denial) = verdict {
        meter.refused(&denial);
        deny::log_denial(&shared.log, &shared.recent, keep, &denial, &seen, false);
        let guest = classified.class.is_some();
        let status = denial.status().as_u16();
        shared.recent.record_answer(guest, false, status, now_ms());
        if denial == Denial::InvalidToken {
            // A malformed token is a failed guess too, answered without asking the app.
            count_failure(&shared, &snap, &facts);
        }
        // A malformed request (no Host, CONNECT) ends its connection too: whatever follows
        // on it was framed by a client that does not speak HTTP/1.1 as the shield does.
        let close = has_body(&req) || matches!(denial, Denial::BadRequest(_));
        return Ok(answer(&denial, &request_id, close));
    }
    let client_hash = seen.client_key;
    // Only guest requests with a token, and only when guessing detection is on, are counted.
    let counts_failures = snap.loaded.config.enumeration.is_some()
        && classified.token.is_some()
        && !facts.allowlisted;

    let server = &snap.loaded.config.server;
    let upstream_uri = server.upstream.uri.clone();
    let timeout = server.upstream_timeout;
    let limit = usize::try_from(server.max_body).unwrap_or(usize::MAX);
    let body_timeout = server.body_timeout;
    let meter = meter.clone();
    drop(snap);

    // The failure log line needs these after the request is gone; both clones are cheap
    // (a standard method is a tag, a URI shares its bytes).
    let method = req.method().clone();
    let uri = req.uri().clone();
    let (parts, body) = req.into_parts();
    let body = forward::ClientBody::new(body, body_timeout);
    let body_waiting = body.waiting();
    let mut up = Request::from_parts(parts, Limited::new(body, limit));
    forward::prepare(
        &mut up,
        &upstream_uri,
        &ForwardInfo {
            client,
            https,
            request_id: &request_id,
        },
    );
    let sent = std::time::Instant::now();
    match shared.upstream.send(up, timeout, &body_waiting).await {
        Ok(mut resp) => {
            meter.forwarded(resp.status().as_u16(), sent.elapsed());
            shared.note_upstream_ok();
            if counts_failures {
                observe(&shared, resp.status().as_u16(), &facts);
            }
            forward::prepare_response(&mut resp, &request_id);
            let (guest, status) = (classified.class.is_some(), resp.status().as_u16());
            shared.recent.record_answer(guest, true, status, now_ms());
            Ok(resp.map(Either::Left))
        }
        Err(denial) => {
            meter.refused(&denial);
            shared.metrics.upstream_failed(&denial);
            // A reload may have renamed classes meanwhile; the current names are good enough here.
            let snap = shared.snapshot.load();
            let seen = Seen {
                ip: client,
                client_key: client_hash,
                route: classified
                    .class
                    .and_then(|c| snap.routes.names().get(usize::from(c)))
                    .map(String::as_str),
                token: classified.token.as_deref(),
                method: &method,
                path: uri.path(),
                request_id: &request_id,
            };
            deny::log_denial(
                &shared.log,
                &shared.recent,
                snap.loaded.config.log.token_preview,
                &denial,
                &seen,
                false,
            );
            let (guest, status) = (classified.class.is_some(), denial.status().as_u16());
            shared.recent.record_answer(guest, true, status, now_ms());
            // A body cut off at max_body, or broken, is still partly unread: close after answering.
            let unread = matches!(denial, Denial::PayloadTooLarge | Denial::BodyTimeout)
                || denial == forward::BROKEN_BODY;
            Ok(answer(&denial, &request_id, unread))
        }
    }
}

/// Feeds the app's answer to a guest request into the guessing counters.
fn observe(shared: &Shared, status: u16, facts: &Facts<'_>) {
    let snap = shared.snapshot.load();
    let counts = snap
        .loaded
        .config
        .enumeration
        .as_ref()
        .is_some_and(|e| e.settings.counts(status));
    if counts {
        count_failure(shared, &snap, facts);
    }
}

/// Counts one failed token of `facts`' client; a client or prefix that reaches its threshold is
/// banned and logged.
fn count_failure(shared: &Shared, snap: &Snapshot, facts: &Facts<'_>) {
    let (Some(e), Some(token)) = (&snap.loaded.config.enumeration, facts.token) else {
        return;
    };
    if facts.allowlisted {
        return;
    }
    let keep = snap.loaded.config.log.token_preview;
    shared
        .recent
        .record_failed_token(facts.ip, token, keep, now_ms());
    let v6 = snap.loaded.config.client.ipv6_prefix;
    let offences = shared.failures.record(
        &e.settings,
        facts.client,
        facts.ip,
        token,
        std::time::Instant::now(),
        v6,
    );
    for offence in offences {
        let ban =
            shared
                .bans
                .ban_offence(&offence, e.settings.ban, e.settings.max_ban, facts.now_unix);
        shared.log.log(crate::bans::brute_force_record(&ban, v6));
    }
}

/// Requests the shield refuses to forward whatever the route: `CONNECT` (the shield is no
/// tunnel), no or several `Host` headers, or a declared body over the limit.
fn check_framing(req: &Request<Incoming>, max_body: u64) -> Option<Denial> {
    if req.method() == http::Method::CONNECT {
        return Some(Denial::BadRequest(
            "CONNECT is not served: this is not a forward proxy.",
        ));
    }
    let headers = req.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    let first_host = hosts.next();
    if hosts.next().is_some() {
        return Some(Denial::BadRequest(
            "A request must carry exactly one Host header.",
        ));
    }
    if first_host.is_none() && req.version() == Version::HTTP_11 && req.uri().authority().is_none()
    {
        return Some(Denial::BadRequest(
            "A request must carry exactly one Host header.",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Some(Denial::PayloadTooLarge);
    }
    None
}

/// Whether the request carries a body the shield has not read.
fn has_body(req: &Request<Incoming>) -> bool {
    use hyper::body::Body as _;
    !req.body().is_end_stream()
}

/// The shield's own answer. When the request's body was left unread, the connection is closed
/// after the answer: the unread bytes are never drained or read as a next request.
fn answer(denial: &Denial, request_id: &http::HeaderValue, unread_body: bool) -> Response<Body> {
    let mut resp = deny::respond(denial);
    let headers = resp.headers_mut();
    headers.insert(X_REQUEST_ID, request_id.clone());
    if unread_body {
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp.map(Either::Right)
}

/// Serves guests on `listener` until `shutdown` turns true, then lets in-flight requests finish
/// within the configured grace.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    https: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    // One slot per open connection: at max_connections the shield stops accepting (new
    // connections wait in the kernel's backlog) until one ends, instead of running out of
    // file descriptors. Read at start, like the listen address.
    let max = shared.snapshot.load().loaded.config.server.max_connections;
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = crate::server::stopped(&mut shutdown) => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (header_timeout, stall) = {
                        let snap = shared.snapshot.load();
                        (snap.loaded.config.server.header_timeout, snap.loaded.config.server.body_timeout)
                    };
                    let conn_shared = shared.clone();
                    let peer_ip = peer.ip();
                    let service = service_fn(move |req| handle(conn_shared.clone(), peer_ip, https, req));
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .serve_connection(TokioIo::new(crate::stall::WriteStall::new(stream, stall)), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    // Out of file descriptors or similar: back off instead of spinning on accept.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let grace = shared.snapshot.load().loaded.config.server.shutdown_grace;
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// Resolves once `stop` has turned true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here, so no caller holds it across an await.
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds a listener, with a message naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
