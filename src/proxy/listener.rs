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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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
    /// The configuration in force; swapped whole on reload. Shared with the TLS certificate
    /// resolver, which reads the certificate pair in force at each handshake.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
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
    /// Prefix bans to alert about, and what became of the alerts.
    pub alerts: crate::alerts::Alerts,
    /// The HTTPS listener's bound port, when there is one (where `redirect_https` points).
    pub tls_port: Option<u16>,
    /// Bans, guessing counts and shared limits across replicas, when `[cluster]` is configured
    /// (fixed at start).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Most clients and prefixes whose failed tokens are counted at once.
pub const FAILURE_TABLE_CLIENTS: usize = 100_000;
/// See [`FAILURE_TABLE_CLIENTS`].
pub const FAILURE_TABLE_PREFIXES: usize = 50_000;

impl Shared {
    /// Shared state around a first snapshot.
    pub fn new(snapshot: Snapshot, log: LogHandle, bans: Bans) -> Self {
        let cluster = snapshot.loaded.config.cluster.clone().and_then(|settings| {
            bans.set_origin(&settings.name);
            // The URL was validated; a client that still cannot be built leaves the shield
            // single-process, which is what a missing [cluster] means.
            crate::cluster::Cluster::new(settings, log.clone())
                .ok()
                .map(Arc::new)
        });
        let connect = snapshot
            .loaded
            .config
            .server
            .upstream_timeout
            .min(Duration::from_secs(10));
        Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
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
            alerts: crate::alerts::Alerts::default(),
            tls_port: None,
            cluster,
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

/// Answers one request from `peer`; `https` says whether it came over TLS. Every answer over
/// HTTPS, the app's or the shield's, carries the configured `Strict-Transport-Security`.
pub async fn handle(
    shared: Arc<Shared>,
    peer: IpAddr,
    https: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !https {
        return answer_request(shared, peer, false, req).await;
    }
    let hsts = shared.snapshot.load().loaded.config.server.hsts.clone();
    let mut resp = answer_request(shared, peer, true, req).await;
    if let (Ok(resp), Some(hsts)) = (&mut resp, hsts) {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    resp
}

async fn answer_request(
    shared: Arc<Shared>,
    peer: IpAddr,
    https: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut snap = shared.snapshot.load();
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
    let now_unix = now_ms() / 1000;
    let facts = Facts {
        ip: client,
        class: classified.class,
        token: classified.token.as_deref(),
        client: client_key,
        client_hash: limits::client_key_hash(client_key),
        now_unix,
        allowlisted: {
            let allow = &snap.loaded.lists.allowlist;
            !allow.is_empty() && allow.lookup(client, now_unix).is_some()
        },
        settled: &[],
    };
    // Shared limits need Redis' word before the (synchronous) decision. Only configurations
    // with a shared limit get here, only a spent lease waits (at most `[cluster] timeout`), and
    // the snapshot is held as an owned Arc, not a guard, across that wait.
    let settled = match &shared.cluster {
        Some(cluster) if snap.has_shared_limits && facts.class.is_some() => {
            let owned = arc_swap::Guard::into_inner(snap);
            let settled = crate::cluster::limits::settle(cluster, &owned, &facts).await;
            snap = arc_swap::Guard::from_inner(owned);
            settled
        }
        _ => Vec::new(),
    };
    let facts = Facts {
        settled: &settled,
        ..facts
    };
    let seen = Seen {
        ip: client,
        client_key: facts.client_hash,
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
    let mut framing = check_framing(&req, snap.loaded.config.server.max_body);
    // Every plain request is sent to HTTPS, before any other check: nothing is forwarded. (A
    // reload that turns the redirect on while no HTTPS listener runs has nowhere to send it.)
    let redirect_to = match shared.tls_port {
        Some(port) if !https && snap.loaded.config.server.redirect_https => Some(port),
        _ => None,
    };
    if let (None, Some(port)) = (&framing, redirect_to) {
        match https_location(&req, port) {
            Some(location) => {
                meter.answered(308);
                let guest = classified.class.is_some();
                shared.recent.record_answer(guest, false, 308, now_ms());
                return Ok(redirect(location, &request_id, has_body(&req)));
            }
            None => {
                framing = Some(Denial::BadRequest(
                    "A request must carry a valid Host header to be redirected to HTTPS.",
                ))
            }
        }
    }
    let verdict = framing.or_else(|| {
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
        ban_offence(shared, &offence, &e.settings, v6, facts.now_unix);
    }
    if let Some(cluster) = &shared.cluster {
        cluster.record_failure(crate::cluster::failures::Failed {
            client: facts.client.net(v6),
            prefix: crate::enumeration::prefix_of(facts.ip),
            token: cluster.token_digest(token),
        });
    }
}

/// Bans the network of `offence` unless a ban of exactly that network is already in force
/// (the local and the cluster count may both reach a threshold for one guesser); logs it and,
/// in a cluster, announces it to the other replicas.
pub fn ban_offence(
    shared: &Shared,
    offence: &crate::enumeration::Offence,
    settings: &crate::enumeration::EnumerationSettings,
    ipv6_prefix: u8,
    now_unix: i64,
) {
    let net = crate::client_ip::canonical_net(offence.net).trunc();
    if shared.bans.get(net).is_some_and(|b| b.until > now_unix) {
        return;
    }
    let ban = shared
        .bans
        .ban_offence(offence, settings.ban, settings.max_ban, now_unix);
    shared
        .log
        .log(crate::bans::brute_force_record(&ban, ipv6_prefix));
    if offence.kind == crate::enumeration::OffenceKind::Prefix {
        shared.alerts.prefix_banned(crate::alerts::PrefixBan {
            net: ban.net,
            distinct_tokens: ban.distinct_tokens,
            ban_seconds: ban.until.saturating_sub(ban.created),
        });
    }
    if let Some(cluster) = &shared.cluster {
        cluster.announce_ban(&ban);
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

/// Where a plain request is sent over HTTPS: `https://<host>[:port]<path and query>`, the host
/// being the request's (absolute-form authority, else its one `Host`) without its port, and the
/// port the HTTPS listener's (left out when 443). `None` when the host is not a plain DNS name
/// or IP address: nothing the client sent can make the shield redirect elsewhere (no userinfo,
/// no second authority, no path or control bytes smuggled into the host).
fn https_location<B>(req: &Request<B>, port: u16) -> Option<http::HeaderValue> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => {
            let host = req.headers().get(header::HOST)?;
            http::uri::Authority::try_from(host.as_bytes()).ok()?
        }
    };
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    if !valid {
        return None;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    http::HeaderValue::from_str(&location).ok()
}

/// 308 Permanent Redirect to `location` (the method and body are kept by the client).
fn redirect(
    location: http::HeaderValue,
    request_id: &http::HeaderValue,
    unread_body: bool,
) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let headers = resp.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(X_REQUEST_ID, request_id.clone());
    if unread_body {
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
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

/// What a listener speaks.
pub enum Front {
    /// Plain HTTP/1.1.
    Plain,
    /// HTTP/1.1 over TLS; the handshake runs in the connection's own task.
    Tls(Arc<crate::tls::TlsFront>),
}

/// Serves guests on `listener` until `shutdown` turns true, then lets in-flight requests finish
/// within the configured grace.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    front: Front,
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
                    let (header_timeout, handshake_timeout, stall) = {
                        let server = &shared.snapshot.load().loaded.config.server;
                        let handshake = server.tls.as_ref().map(|t| t.handshake_timeout);
                        (server.header_timeout, handshake.unwrap_or(Duration::from_secs(10)), server.body_timeout)
                    };
                    let watcher = graceful.watcher();
                    let conn_shared = shared.clone();
                    let conn = Conn { peer: peer.ip(), header_timeout, stall, watcher, slot };
                    match &front {
                        Front::Plain => {
                            tokio::spawn(serve_connection(conn_shared, false, stream, conn));
                        }
                        Front::Tls(tls) => {
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                let counts = &conn_shared.metrics.tls;
                                if let Some(stream) = tls.handshake(stream, handshake_timeout, counts).await {
                                    serve_connection(conn_shared, true, stream, conn).await;
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
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let grace = shared.snapshot.load().loaded.config.server.shutdown_grace;
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
async fn serve_connection<T>(shared: Arc<Shared>, https: bool, io: T, conn: Conn)
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
    let counted = shared.clone();
    let service = service_fn(move |req| handle(shared.clone(), peer, https, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // max_buf_size alone only trips when the buffer fills before the head ends, and one
        // read can overshoot it: a 70 KiB head was served.
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(crate::stall::WriteStall::new(io, stall)),
            service,
        );
    // hyper answers a malformed or oversized head itself, and closes a slow one; the
    // connection's error is the only trace of those requests.
    if let Err(e) = watcher.watch(conn).await {
        counted.metrics.connection_failed(&e);
    }
    drop(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn location(target: &str, host: Option<&str>, port: u16) -> Option<String> {
        let mut req = Request::builder().uri(target);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        let req = req.body(()).unwrap();
        https_location(&req, port).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn the_https_location_keeps_host_path_and_query_and_names_the_tls_port() {
        assert_eq!(
            location("/a/b?c=1&d", Some("app.test:8080"), 8443).as_deref(),
            Some("https://app.test:8443/a/b?c=1&d")
        );
        assert_eq!(
            location("/x", Some("App.Test"), 443).as_deref(),
            Some("https://App.Test/x")
        );
        assert_eq!(
            location("/", Some("[2001:db8::1]:80"), 443).as_deref(),
            Some("https://[2001:db8::1]/")
        );
        assert_eq!(
            location("http://10.0.0.1:80/p?q", Some("ignored.test"), 8443).as_deref(),
            Some("https://10.0.0.1:8443/p?q")
        );
        assert_eq!(
            location("*", Some("app.test"), 443).as_deref(),
            Some("https://app.test/")
        );
    }

    #[test]
    fn a_host_that_is_not_a_plain_name_or_address_gets_no_location() {
        for host in [
            "user@evil.test",
            "evil.test\\@app.test",
            "a b",
            "app.test/x",
            "app_test",
            "[::1",
            "[nope]",
            "",
        ] {
            assert_eq!(location("/", Some(host), 443), None, "{host:?}");
        }
        assert_eq!(location("/", None, 443), None);
        let long = "a".repeat(254);
        assert_eq!(location("/", Some(&long), 443), None);
    }
}
