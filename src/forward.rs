//! Forwarding to the app: a pooled keep-alive HTTP/1.1 client, header hygiene (hop-by-hop
//! headers out, the shield's own forwarding headers in), and bodies streamed both ways: a 64 MiB
//! upload or gallery zip passes through in small chunks and is never held in memory.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::deny::Denial;

/// The request body as sent upstream: the client's, cut off past `max_body`.
pub type UpstreamBody = Limited<Incoming>;

/// The pooled client to the app.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
}

impl Upstream {
    /// A client with keep-alive pooling and TCP_NODELAY; connecting gives up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        Upstream { client }
    }

    /// Sends `req` and waits for the response head within `timeout`.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, Denial> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(Denial::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify_error(&e)),
        }
    }
}

/// A failed exchange is 413 when the client's body ran past the limit, else 502.
fn classify_error(e: &(dyn std::error::Error + 'static)) -> Denial {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return Denial::PayloadTooLarge;
        }
        source = err.source();
    }
    Denial::UpstreamUnavailable
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

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too; collect first (they are few).
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
    for n in &STRIPPED {
        headers.remove(n);
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
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::FORWARDED);
    headers.remove(X_FORWARDED_PORT);
    headers.remove(X_FORWARDED_PREFIX);
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
    HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("0.0.0.0"))
}

/// Removes hop-by-hop headers from the app's answer before it goes to the client.
pub fn prepare_response(resp: &mut Response<Incoming>, request_id: &HeaderValue) {
    let headers = resp.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::PROXY_AUTHENTICATE);
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id.clone());
    }
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
