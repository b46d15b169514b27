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
    prepare(
        &mut up,
        &server.upstream.uri,
        &ForwardInfo {
            client: ctx.client,
            https: ctx.https,
            request_id: &ctx.request_id,
        },
    );
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

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1), plus the
/// forwarding headers a client must not be able to set.
const STRIPPED: [HeaderName; 12] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `X-Request-Id`: kept when the client sent a sane one, generated otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers removed from a request on top of [`STRIPPED`]: forwarding headers the shield does
/// not set itself, so a client cannot smuggle them to the app.
/// `Expect` is answered by the shield itself (hyper sends `100 Continue` when the body is first
/// read), so the app never sees it.
const STRIPPED_REQUEST: [HeaderName; 4] = [
    header::FORWARDED,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
    header::EXPECT,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
#[cfg(test)]
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &[]);
}

/// [`strip_hop_by_hop`], plus every header in `extra`.
///
/// A message usually carries few of these names: one pass over the names present finds which
/// are, and only those are removed (each removal is a hashed lookup, and most would miss).
fn strip(headers: &mut HeaderMap, extra: &[HeaderName]) {
    debug_assert!(STRIPPED.len() + extra.len() <= 32);
    let mut present: u32 = 0;
    for name in headers.keys() {
        if let Some(i) = STRIPPED.iter().chain(extra).position(|n| n == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Connection is STRIPPED[0]. Names listed in it are hop-by-hop too; collect first (they are few).
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
    for (i, n) in STRIPPED.iter().chain(extra).enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
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
/// an absolute-form target, as RFC 9112 §3.2.2 requires of a proxy).
pub fn prepare(req: &mut Request<UpstreamBody>, upstream: &Uri, info: &ForwardInfo<'_>) {
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
    strip(headers, &STRIPPED_REQUEST);
    if let Some(host) = host_from_target {
        headers.insert(header::HOST, host);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_FOR, ip_header(info.client));
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if info.https { "https" } else { "http" }),
    );
    headers.insert(X_REQUEST_ID, info.request_id.clone());
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
    strip(headers, &[header::PROXY_AUTHENTICATE]);
    headers
        .entry(X_REQUEST_ID)
        .or_insert_with(|| request_id.clone());
}

/// Request ids: a random per-process prefix and a counter; unique, cheap, never blocking.
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: rand::random(),
            next: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The id to use: the client's when it is short visible ASCII, else a new one.
    pub fn pick(&self, sent: Option<&HeaderValue>) -> HeaderValue {
        if let Some(v) = sent {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], self.prefix);
        hex_into(&mut buf[16..], n);
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
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("proxy-authorization", "secret"),
            ("accept", "*/*"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        strip(&mut h, &STRIPPED_REQUEST);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn hygiene_leaves_a_clean_message_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let before = h.clone();
        strip(&mut h, &STRIPPED_REQUEST);
        assert_eq!(h, before);
    }

    #[test]
    fn request_ids_keep_sane_client_ids_and_replace_others() {
        let ids = RequestIds::default();
        let sane = HeaderValue::from_static("abc-123");
        assert_eq!(ids.pick(Some(&sane)), sane);
        let bad = HeaderValue::from_static("has space");
        let fresh = ids.pick(Some(&bad));
        assert_eq!(fresh.len(), 32);
        assert_ne!(ids.pick(None), ids.pick(None));
    }
}
