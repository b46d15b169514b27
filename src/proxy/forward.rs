//! The forward phase: a pooled keep-alive HTTP/1.1 client to the app (see [`Upstream`]), header hygiene
//! (hop-by-hop headers out, the shield's own forwarding headers in), and bodies streamed both
//! ways: a 64 MiB upload or gallery zip passes through in small chunks and is never held in
//! memory. It returns the app's answer or a [`ForwardError`]; `respond.rs` turns the latter into
//! the shield's answer.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt;

use crate::clock::Now;
use crate::proxy::request::RequestCtx;
use crate::proxy::Parts;

/// Why a request could not be forwarded (or its answer not received). Each has its answer in
/// `respond.rs`; none is a policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The app could not be reached, or reset the connection.
    #[error("the upstream could not be reached")]
    Unavailable,
    /// The app did not send its response head within `upstream_timeout`.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The client's body stalled past `body_timeout` (also when `upstream_timeout` ran out
    /// while the shield was still waiting on the client).
    #[error("the request body stalled")]
    BodyStalled,
    /// The client's body ran past `max_body`.
    #[error("the request body is larger than max_body")]
    BodyTooLarge,
    /// The client's body broke mid-stream (bad chunk framing, cut off): the client's fault,
    /// never the app's.
    #[error("the request body is malformed or was cut off")]
    BrokenBody,
}

impl ForwardError {
    /// Whether part of the client's body is left unread (the connection must close after the
    /// answer).
    pub(crate) fn leaves_body_unread(self) -> bool {
        matches!(
            self,
            ForwardError::BodyTooLarge | ForwardError::BodyStalled | ForwardError::BrokenBody
        )
    }
}

/// How forwarding ended: the app's answer (when its head arrived), or why there is none.
// Built once per request and matched at once by `finish`: boxing the answer would cost an
// allocation per forwarded request to save a move.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Forwarded {
    /// The app answered; its head arrived `latency` after the request was sent, at `at`.
    Answered {
        /// The app's answer, its body still streaming.
        response: Response<ResponseBody>,
        /// From sending to the response head.
        latency: Duration,
        /// When the head arrived.
        at: Now,
    },
    /// No answer; noticed `latency` after the request was sent, at `at`.
    Failed {
        /// Why.
        error: ForwardError,
        /// From sending to the failure.
        latency: Duration,
        /// When.
        at: Now,
    },
}

/// The forward phase: turns the client's request into the app's (origin-form target, hygiene,
/// forwarding headers), streams its body with the stall and size limits, and waits for the
/// answer's head within `upstream_timeout`.
pub(crate) async fn forward(parts: &Parts, ctx: &RequestCtx, req: Request<Incoming>) -> Forwarded {
    let server = &ctx.snap.loaded.config.server;
    let limit = usize::try_from(server.max_body).unwrap_or(usize::MAX);
    let (head, body) = req.into_parts();
    let body = ClientBody::new(body, server.body_timeout);
    let body_waiting = body.waiting();
    let mut up = Request::from_parts(head, Limited::new(body, limit));
    let dropped = prepare(
        &mut up,
        &server.upstream.uri,
        &ForwardInfo {
            client: ctx.client,
            https: ctx.https,
            request_id: &ctx.request_id,
        },
    );
    // Not an answer (that is finish's): what the forwarded request lost on the way.
    parts
        .telemetry
        .meters
        .headers_dropped(dropped.underscore, dropped.invalid);
    // The upstream latency is measured around the exchange alone (not the cluster's settling).
    let sent = parts.clock.now();
    let result = parts
        .upstream
        .send(up, server.upstream_timeout, &body_waiting)
        .await;
    let at = parts.clock.now();
    let latency = at.instant().saturating_duration_since(sent.instant());
    match result {
        Ok(response) => Forwarded::Answered {
            response,
            latency,
            at,
        },
        Err(error) => Forwarded::Failed { error, latency, at },
    }
}

/// The request body as sent upstream: the client's, cut off past `max_body`.
pub type UpstreamBody = Limited<ClientBody>;

/// The client's request body, with a stall limit: when the shield wants the next bytes and
/// the client sends none for `body_timeout`, the body fails with [`BodyStalled`].
///
/// The timer runs only while the shield waits on the client. When the app stops reading (its
/// socket full), hyper stops asking for the body and the app's own `upstream_timeout` applies.
/// Whether the shield was waiting on the client when that ran out is kept in `waiting`, so a
/// client that trickles its body is not reported as a slow app.
pub struct ClientBody {
    inner: Incoming,
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// True while the last poll found the client had sent nothing new.
    waiting: Arc<std::sync::atomic::AtomicBool>,
}

/// A request body stalled past `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled past body_timeout")]
pub struct BodyStalled;

impl ClientBody {
    /// Wraps `inner`, failing it after `gap` without bytes while it is being read.
    pub fn new(inner: Incoming, gap: Duration) -> Self {
        ClientBody {
            inner,
            gap,
            timer: None,
            waiting: Arc::default(),
        }
    }

    /// A flag that is true while the shield is waiting on the client for body bytes.
    pub fn waiting(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.waiting.clone()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting.store(false, Ordering::Relaxed);
                // Disarmed: the next wait starts a new gap.
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                this.waiting.store(true, Ordering::Relaxed);
                let gap = this.gap;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyStalled))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How often idle connections are aged; one closes after [`IDLE_SWEEPS`] sweeps unused.
const IDLE_SWEEP: Duration = Duration::from_secs(10);
/// An idle connection is closed after this many sweeps unused: 30 to 40 s.
const IDLE_SWEEPS: u64 = 4;
/// Idle keep-alive connections kept at most; one more is closed instead of kept.
const MAX_IDLE: usize = 256;

/// The pooled client to the app: keep-alive HTTP/1.1 connections, each driven by its own task,
/// handed out one exchange at a time.
///
/// The idle connections sit in a bounded lock-free queue: a request pops one (or connects),
/// and the connection goes back when the app's answer has been read to its end. An answer
/// dropped before its end takes its connection with it: the bytes left unread on it could
/// never be told from the next answer.
#[derive(Clone)]
pub struct Upstream {
    connector: HttpConnector,
    pool: Arc<Pool>,
}

struct Pool {
    idle: ArrayQueue<Idle>,
    /// Sweeps so far: the age of an idle connection in sweeps, without reading the clock.
    sweeps: AtomicU64,
}

/// A keep-alive connection waiting for its next exchange.
struct Idle {
    sender: SendRequest<UpstreamBody>,
    authority: Authority,
    since: u64,
}

impl Pool {
    fn release(&self, sender: SendRequest<UpstreamBody>, authority: Authority) {
        if sender.is_closed() {
            return;
        }
        let since = self.sweeps.load(Ordering::Relaxed);
        // Full: the connection is dropped, which closes it.
        let _ = self.idle.push(Idle {
            sender,
            authority,
            since,
        });
    }

    fn is_stale(&self, idle: &Idle, now: u64) -> bool {
        now.saturating_sub(idle.since) >= IDLE_SWEEPS || idle.sender.is_closed()
    }

    /// Ages the idle connections and closes those unused for [`IDLE_SWEEPS`] sweeps.
    fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        for _ in 0..self.idle.len() {
            let Some(idle) = self.idle.pop() else { break };
            if !self.is_stale(&idle, now) {
                let _ = self.idle.push(idle);
            }
        }
    }
}

impl Upstream {
    /// A client with keep-alive pooling and TCP_NODELAY; connecting gives up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let pool = Arc::new(Pool {
            idle: ArrayQueue::new(MAX_IDLE),
            sweeps: AtomicU64::new(0),
        });
        // Outside a runtime (unit tests) there is no sweeper: checkout still skips stale ones.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_SWEEP);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => return,
                    }
                }
            });
        }
        Upstream { connector, pool }
    }

    /// Sends `req` (its URI absolute, on the app's authority) and waits for the response head
    /// within `timeout`. `body_waiting` is its body's [`ClientBody::waiting`] flag.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
        body_waiting: &std::sync::atomic::AtomicBool,
    ) -> Result<Response<ResponseBody>, ForwardError> {
        let waiting = body_waiting;
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            // Still waiting on the client's body: the client is slow, not the app.
            Err(_) if waiting.load(Ordering::Relaxed) => Err(ForwardError::BodyStalled),
            Err(_) => Err(ForwardError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify_error(&*e)),
        }
    }

    async fn exchange(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Err("the upstream request has no authority".into());
        };
        // On the wire: origin-form, or authority-form for CONNECT (RFC 9112 §3.2).
        let mut parts = http::uri::Parts::default();
        if req.method() == Method::CONNECT {
            parts.authority = Some(authority.clone());
        } else {
            parts.path_and_query = req.uri().path_and_query().cloned();
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        loop {
            let (mut sender, reused) = match self.checkout(&authority).await {
                Some(sender) => (sender, true),
                None => (self.connect(&authority).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let back = Some((sender, authority, self.pool.clone()));
                    return Ok(resp.map(|inner| ResponseBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request was written: another one may
                    // take it (a fresh connection that fails is a real failure).
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// An idle connection to `authority` that is ready for a request, if there is one.
    async fn checkout(&self, authority: &Authority) -> Option<SendRequest<UpstreamBody>> {
        let now = self.pool.sweeps.load(Ordering::Relaxed);
        while let Some(mut idle) = self.pool.idle.pop() {
            // One to another authority is from before a reload changed the upstream.
            if idle.authority != *authority || self.pool.is_stale(&idle, now) {
                continue;
            }
            // Its last answer was read to the end; the connection may still be winding up.
            if idle.sender.ready().await.is_ok() {
                return Some(idle.sender);
            }
        }
        None
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<UpstreamBody>, BoxError> {
        let uri = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let io = self.connector.clone().oneshot(uri).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.ready().await?;
        Ok(sender)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app's answer body, streamed; when it has been read to its end, its connection goes back
/// to the pool.
pub struct ResponseBody {
    inner: Incoming,
    back: Option<(SendRequest<UpstreamBody>, Authority, Arc<Pool>)>,
}

impl ResponseBody {
    fn release(&mut self) {
        if let Some((sender, authority, pool)) = self.back.take() {
            pool.release(sender, authority);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // A broken answer leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // An answer dropped before its end takes its connection along (`back` is dropped).
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

/// Why an exchange failed: the client's body ran past the limit, stalled or broke (bad chunked
/// framing, cut off), else the app is unavailable.
fn classify_error(e: &(dyn std::error::Error + 'static)) -> ForwardError {
    let mut client_body = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return ForwardError::BodyTooLarge;
        }
        if err.is::<BodyStalled>() {
            return ForwardError::BodyStalled;
        }
        // hyper reports an error of the request body stream as a "user" error caused by it;
        // the body is the client's, so is the fault. (Must not blame the app: that would feed
        // its error rate, the upstream-error metric and the alerts.)
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            client_body |= h.is_user() && std::error::Error::source(h).is_some();
        }
        source = err.source();
    }
    if client_body {
        ForwardError::BrokenBody
    } else {
        ForwardError::Unavailable
    }
}

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-Id`: kept from a trusted proxy when well-formed, generated otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers a client must not be able to hand the app, removed from every request on top of
/// [`HOP_BY_HOP`]: the forwarding headers (SPEC §4: `X-Forwarded-*`, `Forwarded`, `X-Real-IP`;
/// the shield sets `X-Forwarded-For`, `-Proto` and `-Host` itself) and the URL rewrites that
/// IIS-era front controllers honour. Any other `X-Forwarded-*` name is removed too (by its
/// prefix, see [`strip`]); these are the common ones, found without a second pass.
/// `Expect` is answered by the shield itself (hyper sends `100 Continue` when the body is first
/// read), so the app never sees it.
const CLIENT_ONLY: [HeaderName; 11] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    header::FORWARDED,
    X_REAL_IP,
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    header::EXPECT,
];

/// Removed from the app's answers on top of [`HOP_BY_HOP`].
const RESPONSE_ONLY: [HeaderName; 5] = [
    header::PROXY_AUTHENTICATE,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
];

/// Request headers dropped for their name, by why (each a `reason` of
/// `joinshield_request_headers_dropped_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedNames {
    /// Names with `_`: PHP maps `_` and `-` to the same `HTTP_*` variable, so `X_Real_Ip`
    /// would reach the app as `x-real-ip` (nginx: `underscores_in_headers off`).
    pub underscore: u32,
    /// Other names with a byte that is not a letter, digit or `-` (`X.Real.Ip`: PHP turns `.`
    /// into `_` too; nginx: `ignore_invalid_headers on`).
    pub invalid: u32,
}

/// How a name is judged: 0 a letter, digit or `-`; 1 `_`; 2 anything else. `HeaderName`s
/// are lower-case already.
const NAME_BYTE: [u8; 256] = {
    let mut t = [2u8; 256];
    let mut b = b'a';
    while b <= b'z' {
        t[b as usize] = 0;
        b += 1;
    }
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = 0;
        d += 1;
    }
    t[b'-' as usize] = 0;
    t[b'_' as usize] = 1;
    t
};

/// Why a request header must not be forwarded for its name alone, if it must not.
fn foreign_name(name: &HeaderName) -> Option<Foreign> {
    let bytes = name.as_str().as_bytes();
    let worst = bytes
        .iter()
        .fold(0u8, |w, &b| w.max(NAME_BYTE[usize::from(b)]));
    match worst {
        0 if bytes.starts_with(b"x-forwarded-") => Some(Foreign::Forwarding),
        0 => None,
        1 => Some(Foreign::Underscore),
        _ => Some(Foreign::Invalid),
    }
}

/// See [`foreign_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Foreign {
    /// An `X-Forwarded-*` name not in [`CLIENT_ONLY`].
    Forwarding,
    /// Letters, digits, `-` and at least one `_`.
    Underscore,
    /// Some other byte.
    Invalid,
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
#[cfg(test)]
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &[], false);
}

/// Removes the [`HOP_BY_HOP`] headers, every header the `Connection` header names, and every
/// header in `extra`; with `request`, also every `X-Forwarded-*` header and every header whose
/// name is not letters, digits and `-` (counted in the answer).
///
/// A message usually carries few of these names: one pass over the names present finds which
/// are, and only those are removed (each removal is a hashed lookup, and most would miss).
/// Names removed for their spelling are rare (a client that means harm, or a broken one), so
/// only they cost an allocation.
fn strip(headers: &mut HeaderMap, extra: &[HeaderName], request: bool) -> DroppedNames {
    debug_assert!(HOP_BY_HOP.len() + extra.len() <= 32);
    let mut present: u32 = 0;
    let mut foreign = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().chain(extra).position(|n| n == name) {
            present |= 1 << i;
        } else if request && foreign_name(name).is_some() {
            foreign = true;
        }
    }
    let mut dropped = DroppedNames::default();
    if foreign {
        let mut named: Vec<(HeaderName, Foreign)> = Vec::new();
        for name in headers.keys() {
            if let Some(why) = foreign_name(name) {
                named.push((name.clone(), why));
            }
        }
        for (name, why) in named {
            headers.remove(&name);
            match why {
                Foreign::Forwarding => {}
                Foreign::Underscore => dropped.underscore += 1,
                Foreign::Invalid => dropped.invalid += 1,
            }
        }
    }
    if present == 0 {
        return dropped;
    }
    // Connection is HOP_BY_HOP[0]. Names listed in it are hop-by-hop too; collect first (they are few).
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            if let Ok(v) = value.to_str() {
                for name in v.split(',') {
                    if let Ok(n) = HeaderName::from_bytes(name.trim().as_bytes()) {
                        named.push(n);
                    }
                }
            }
        }
        for n in named {
            // A client must not make the shield drop headers it adds itself or that carry framing.
            if n != header::HOST && n != X_REQUEST_ID {
                headers.remove(n);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().chain(extra).enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
    dropped
}

/// What the shield knows about a request that the forwarding headers report.
pub struct ForwardInfo<'a> {
    /// The client IP the shield decided on.
    pub client: IpAddr,
    /// Whether the client connection was TLS.
    pub https: bool,
    /// The request id (kept or generated).
    pub request_id: &'a HeaderValue,
}

/// Turns a client request into the upstream request, in place: origin-form target on the
/// upstream's authority, hygiene applied, forwarding headers set, `Host` preserved (or taken from
/// an absolute-form target or HTTP/2's `:authority`, as RFC 9112 §3.2.2 requires of a proxy; a
/// request that names no host at all, HTTP/1.0 without `Host`, gets the upstream's authority).
/// The `Host` was validated before (`framing::host`). Returns the headers dropped for their
/// name.
pub fn prepare<B>(req: &mut Request<B>, upstream: &Uri, info: &ForwardInfo<'_>) -> DroppedNames {
    let host_from_target = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    // The client's path and query, as parsed already: cloning shares the bytes, no re-parse.
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    let dropped = strip(headers, &CLIENT_ONLY, true);
    if let Some(host) = host_from_target {
        headers.insert(header::HOST, host);
    }
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            // HTTP/1.1 requires a Host: the app's own authority (the client named none, so
            // there is no X-Forwarded-Host to report).
            let upstream_host = upstream
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(host) = upstream_host {
                headers.insert(header::HOST, host);
            }
        }
    }
    headers.insert(X_FORWARDED_FOR, ip_header(info.client));
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if info.https { "https" } else { "http" }),
    );
    headers.insert(X_REQUEST_ID, info.request_id.clone());
    dropped
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    match ip {
        // Dotted decimal written by hand: `to_string` goes through the formatter, which costs
        // more than the rest of the header work on a forwarded request.
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("0.0.0.0"))
        }
        IpAddr::V6(_) => {
            HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("0.0.0.0"))
        }
    }
}

/// Removes hop-by-hop headers from the app's answer before it goes to the client.
pub fn prepare_response<B>(resp: &mut Response<B>, request_id: &HeaderValue) {
    let headers = resp.headers_mut();
    strip(headers, &RESPONSE_ONLY, false);
    headers
        .entry(X_REQUEST_ID)
        .or_insert_with(|| request_id.clone());
}

/// The longest request id a trusted proxy may hand on (a UUID is 36 bytes, a W3C trace id 32,
/// nginx's `$request_id` 32, an AWS `X-Amzn-Trace-Id` root 35).
pub const MAX_REQUEST_ID: usize = 64;

/// Request ids: 128 random bits in hex, from the worker thread's own CSPRNG (seeded from the
/// OS, reseeded as it goes): unique, unpredictable, and telling nothing of the request volume.
/// An id is kept only when a trusted proxy sent exactly one and it is a short token
/// ([`valid_request_id`]); a client's own is always replaced.
#[derive(Debug, Default)]
pub struct RequestIds;

/// Whether `id` is an id a trusted proxy may hand on: 1 to [`MAX_REQUEST_ID`] bytes of
/// `[A-Za-z0-9._:-]`.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl RequestIds {
    /// The id to use: the one of `sent` (the request's `X-Request-Id` values) when the peer is
    /// `trusted`, it sent exactly one and it is [`valid_request_id`]; else a new one.
    pub fn pick<'a>(
        &self,
        mut sent: impl Iterator<Item = &'a HeaderValue>,
        trusted: bool,
    ) -> HeaderValue {
        if trusted {
            if let (Some(v), None) = (sent.next(), sent.next()) {
                if valid_request_id(v.as_bytes()) {
                    return v.clone();
                }
            }
        }
        self.fresh()
    }

    /// A new id: 32 lower-case hex digits.
    pub fn fresh(&self) -> HeaderValue {
        let bits: u128 = rand::random();
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], (bits >> 64) as u64);
        hex_into(&mut buf[16..], bits as u64);
        // Only hex digits were written.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

fn hex_into(out: &mut [u8], mut v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret, host"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h[header::HOST], "app.test");
    }

    #[test]
    fn ip_header_writes_the_address_as_its_text() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.9.99",
            "100.64.10.1",
            "255.255.255.255",
            "192.168.0.10",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(addr), addr.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn request_hygiene_removes_forwarding_headers_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/x"),
            ("x-forwarded-server", "evil"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-uri", "/admin"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-original-url", "/up"),
            ("x-rewrite-url", "/up"),
            ("proxy-authorization", "secret"),
            ("accept", "*/*"),
            ("x-forwarded", "kept: not an X-Forwarded-* name"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let dropped = strip(&mut h, &CLIENT_ONLY, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["accept"], "*/*");
        assert!(h.contains_key("x-forwarded"));
        assert_eq!(dropped, DroppedNames::default());
    }

    #[test]
    fn forwarding_headers_are_dropped_in_every_case_spelling() {
        // Names are case-insensitive: what the parser hands on is lower-case whatever was sent.
        for name in [
            "X-Forwarded-For",
            "x-FORWARDED-for",
            "X-REAL-IP",
            "Forwarded",
            "FORWARDED",
            "X-Forwarded-Server",
            "X-Original-URL",
            "x-rewrite-url",
            "X-FORWARDED-PORT",
            "X-Forwarded-Prefix",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("6.6.6.6"),
            );
            strip(&mut h, &CLIENT_ONLY, true);
            assert!(h.is_empty(), "{name} was kept");
        }
    }

    #[test]
    fn headers_named_with_underscores_or_other_bytes_are_dropped_and_counted() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("X_Real_Ip", "6.6.6.6"),
            ("Client_Ip", "6.6.6.6"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("x_http_method_override", "GET"),
            ("X.Real.Ip", "6.6.6.6"),
            ("x-real-ip!", "6.6.6.6"),
            ("x-kept-1", "yes"),
            ("accept", "*/*"),
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let dropped = strip(&mut h, &CLIENT_ONLY, true);
        assert_eq!(
            dropped,
            DroppedNames {
                underscore: 4,
                invalid: 2
            }
        );
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["accept", "x-kept-1"]);
    }

    #[test]
    fn the_apps_answer_keeps_names_the_request_would_lose() {
        let mut h = HeaderMap::new();
        h.insert("x_app_header", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        assert_eq!(
            strip(&mut h, &RESPONSE_ONLY, false),
            DroppedNames::default()
        );
        let kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["x_app_header"]);
    }

    #[test]
    fn hygiene_leaves_a_clean_message_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let before = h.clone();
        strip(&mut h, &CLIENT_ONLY, true);
        assert_eq!(h, before);
    }

    fn prepared(version: http::Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().version(version).uri(target);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        let upstream: Uri = "http://127.0.0.1:8000".parse().unwrap();
        let id = HeaderValue::from_static("id-1");
        prepare(
            &mut req,
            &upstream,
            &ForwardInfo {
                client: "203.0.113.7".parse().unwrap(),
                https: false,
                request_id: &id,
            },
        );
        req
    }

    #[test]
    fn a_request_without_a_host_is_forwarded_with_the_upstreams() {
        let req = prepared(http::Version::HTTP_10, "/api/v1/events/T", &[]);
        assert_eq!(req.version(), http::Version::HTTP_11);
        assert_eq!(req.headers()[header::HOST], "127.0.0.1:8000");
        // The client named no host: there is none to report.
        assert!(req.headers().get(X_FORWARDED_HOST).is_none());
        assert_eq!(req.headers()[X_FORWARDED_FOR], "203.0.113.7");
        assert_eq!(req.uri(), "http://127.0.0.1:8000/api/v1/events/T");
    }

    #[test]
    fn the_host_sent_or_the_targets_authority_is_kept() {
        let req = prepared(
            http::Version::HTTP_10,
            "/x",
            &[
                ("host", "guests.example"),
                ("x-forwarded-host", "evil.test"),
            ],
        );
        assert_eq!(req.headers()[header::HOST], "guests.example");
        assert_eq!(req.headers()[X_FORWARDED_HOST], "guests.example");
        let req = prepared(
            http::Version::HTTP_11,
            "http://guests.example:8080/x",
            &[("host", "other.example")],
        );
        assert_eq!(req.headers()[header::HOST], "guests.example:8080");
        assert_eq!(req.headers().get_all(header::HOST).iter().count(), 1);
    }

    #[test]
    fn request_ids_are_kept_only_from_a_trusted_proxy_and_only_when_well_formed() {
        let ids = RequestIds;
        let one = |v: &'static str| [HeaderValue::from_static(v)];
        let sane = one("abc-123.def_4:5");
        assert_eq!(ids.pick(sane.iter(), true), sane[0]);
        // A client's id is replaced, however well-formed.
        assert_ne!(ids.pick(sane.iter(), false), sane[0]);
        let uuid = one("123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(ids.pick(uuid.iter(), true), uuid[0]);
        for bad in [
            "has space",
            "semi;colon",
            "quote\"",
            "a/b",
            "Root=1-abc",
            "é",
        ] {
            let v = [HeaderValue::from_str(bad).unwrap()];
            let fresh = ids.pick(v.iter(), true);
            assert_eq!(fresh.len(), 32, "{bad:?}");
            assert!(fresh.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        let long = [HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID + 1)).unwrap()];
        assert_ne!(ids.pick(long.iter(), true), long[0]);
        let longest = [HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID)).unwrap()];
        assert_eq!(ids.pick(longest.iter(), true), longest[0]);
        // Two ids are one too many: neither is taken.
        let two = [
            HeaderValue::from_static("a1"),
            HeaderValue::from_static("b2"),
        ];
        let got = ids.pick(two.iter(), true);
        assert!(got != two[0] && got != two[1]);
        assert_eq!(ids.pick(std::iter::empty(), true).len(), 32);
    }

    #[test]
    fn fresh_request_ids_are_random_not_sequential() {
        let ids = RequestIds;
        let drawn: std::collections::HashSet<Vec<u8>> =
            (0..1000).map(|_| ids.fresh().as_bytes().to_vec()).collect();
        assert_eq!(drawn.len(), 1000);
        // Consecutive ids share no common prefix the way a prefix and counter would: among
        // 1000 random 128-bit ids the first 8 hex digits of two consecutive ones agree with
        // probability 2^-32 each.
        let (a, b) = (ids.fresh(), ids.fresh());
        assert_ne!(a.as_bytes()[..8], b.as_bytes()[..8]);
    }
}
