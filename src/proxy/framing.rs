//! Framing: requests the shield refuses whatever the route, before any other check. hyper has
//! already refused conflicting or malformed lengths and transfer codings; this is what is left.

use http::{header, Request, Version};
use hyper::body::Incoming;

use crate::policy::denial::Denial;

/// `CONNECT` (the shield is no tunnel), no or several `Host` headers, or a declared body over
/// `max_body`: the denial, else `None`.
pub(crate) fn check(req: &Request<Incoming>, max_body: u64) -> Option<Denial> {
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
pub(crate) fn has_body(req: &Request<Incoming>) -> bool {
    use hyper::body::Body as _;
    !req.body().is_end_stream()
}
