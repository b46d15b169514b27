//! The per-request context, built once when the request arrives: the snapshot it is decided
//! on, the one clock reading, the client behind the trusted proxies, the request id, the route
//! class (and, for a POST, every class a method override could take it to) and the join token,
//! folded once as `[tokens]` says. Every later phase reads it; none computes any of it again.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Uri, Version};
use hyper::body::Incoming;

use crate::clock::Now;
use crate::policy::classify::ClassId;
use crate::policy::client_ip::{canonical, client_ip, ClientKey};
use crate::policy::decide::Facts;
use crate::policy::limits::{self, Settled};
use crate::policy::rules::ClassMask;
use crate::policy::tokens::JoinToken;
use crate::proxy::forward::X_REQUEST_ID;
use crate::proxy::Parts;
use crate::snapshot::Snapshot;
use crate::telemetry::denial_line::Seen;

/// One request, as every phase sees it.
pub(crate) struct RequestCtx {
    /// The snapshot the request is decided on (owned: it may be held across the cluster's
    /// settling and the forwarding, never a guard).
    pub snap: Arc<Snapshot>,
    /// The clock, read once.
    pub now: Now,
    /// Whether it came over TLS.
    pub https: bool,
    /// The client IP the shield decides on.
    pub client: IpAddr,
    /// Its key (IPv4 address or IPv6 network) and the key's limiter hash.
    pub client_key: ClientKey,
    /// The limiter hash of `client_key`, computed once.
    pub client_hash: u64,
    /// The request id (a trusted proxy's when well-formed, else a new one).
    pub request_id: HeaderValue,
    /// The route class, on a guest route.
    pub class: Option<ClassId>,
    /// Every class the request may be routed to: `class`, and for a POST every class a
    /// method override could take it to (empty off guest routes).
    pub classes: ClassMask,
    /// The join token, as Laravel would bind it, and folded.
    pub token: Option<JoinToken>,
    /// Whether the client is on the allowlist.
    pub allowlisted: bool,
    /// The method and target, kept for the log line after the request went upstream (a
    /// standard method is a tag, a URI shares its bytes).
    pub method: Method,
    /// See `method`.
    pub uri: Uri,
    /// The HTTP version the client spoke.
    pub version: Version,
}

impl RequestCtx {
    /// The context of `req` from `peer`: one snapshot load, one clock read, one walk of
    /// `X-Forwarded-For`, one classification.
    pub fn new(parts: &Parts, peer: IpAddr, https: bool, req: &Request<Incoming>) -> RequestCtx {
        let snap = parts.snapshots.load_full();
        let now = parts.clock.now();
        let headers = req.headers();
        let client = client_ip(
            peer,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
            &snap.trusted,
        );
        // Only a proxy the shield trusts may hand its request id on; a client's is replaced.
        let request_id = parts.request_ids.pick(
            headers.get_all(X_REQUEST_ID).iter(),
            snap.trusted.contains(canonical(peer)),
        );
        let (method, path) = (req.method(), req.uri().path());
        let mut classified = snap.routes.classify(method, path);
        let (overridden, by_override) = snap.routes.override_classes(method, path);
        if classified.class.is_none() {
            // A POST to a route of other methods is still a guest request: Laravel routes it
            // by the override it may carry.
            classified = by_override;
        }
        let classes = classified
            .class
            .map_or(overridden, |c| overridden.with(ClassMask::one(c)));
        let folding = snap.loaded.config.tokens;
        let client_key = ClientKey::new(client, snap.loaded.config.client.ipv6_prefix);
        let allowlisted = snap.rules.allowlisted(client, now.unix());
        RequestCtx {
            now,
            https,
            client,
            client_key,
            client_hash: limits::client_key_hash(client_key),
            request_id,
            class: classified.class,
            classes,
            token: classified.token.map(|t| JoinToken::new(t, folding)),
            allowlisted,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            snap,
        }
    }

    /// Whether the request is on a guest route.
    pub fn guest(&self) -> bool {
        self.class.is_some()
    }

    /// What the decision reads, with how the cluster settled the shared limits.
    pub fn facts<'a>(&'a self, settled: &'a [Settled]) -> Facts<'a> {
        Facts {
            ip: self.client,
            class: self.class,
            classes: self.classes,
            token: self.token.as_ref(),
            client: self.client_key,
            client_hash: self.client_hash,
            now_unix: self.now.unix(),
            allowlisted: self.allowlisted,
            settled,
        }
    }

    /// What a denial's log line says about the request.
    pub fn seen(&self) -> Seen<'_> {
        Seen {
            ip: self.client,
            client_key: self.client_hash,
            route: self
                .class
                .and_then(|c| self.snap.routes.names().get(usize::from(c)))
                .map(String::as_str),
            token: self.token.as_ref().map(JoinToken::sent),
            method: &self.method,
            path: self.uri.path(),
            request_id: &self.request_id,
        }
    }
}
