//! The phases of one request, in order, over one [`RequestCtx`]: framing, the redirect to
//! HTTPS, the cluster's settling of shared limits, the decision, forwarding, and the one exit,
//! [`finish`]. Each phase is a function of the context; the only awaits are the settling (only
//! with a shared limit, at most `[cluster] timeout`) and the forwarding.

use std::net::IpAddr;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::policy::decide::decide;
use crate::policy::limits::{Exceeded, Settled};
use crate::proxy::finish::{finish, Outcome};
use crate::proxy::request::RequestCtx;
use crate::proxy::sent::SentBody;
use crate::proxy::{forward, framing, redirect, Parts};

/// Answers one request from `peer`; `https` says whether it came over TLS.
pub(crate) async fn answer(
    parts: &Parts,
    peer: IpAddr,
    https: bool,
    req: Request<Incoming>,
) -> Response<SentBody> {
    let ctx = RequestCtx::new(parts, peer, https, &req);
    let unread_body = framing::has_body(&req);
    let mut shadowed = Vec::new();
    let outcome = match screen(parts, &ctx, &req, &mut shadowed).await {
        Some(outcome) => outcome,
        None => Outcome::Forwarded(forward::forward(parts, &ctx, req).await),
    };
    finish(parts, ctx, shadowed, unread_body, outcome)
}

/// Everything before forwarding: framing, the redirect, the settling and the decision. `None`
/// forwards the request; shadow limits it exceeded are appended to `shadowed`.
async fn screen(
    parts: &Parts,
    ctx: &RequestCtx,
    req: &Request<Incoming>,
    shadowed: &mut Vec<Exceeded>,
) -> Option<Outcome> {
    let config = &ctx.snap.loaded.config;
    let mut framing = framing::check(req, config.server.max_body);
    // Every plain request is sent to HTTPS, before any other check: nothing is forwarded. (A
    // reload that turns the redirect on while no HTTPS listener runs has nowhere to send it.)
    let redirect_to = match parts.tls_port {
        Some(port) if !ctx.https && config.server.redirect_https => Some(port),
        _ => None,
    };
    if let (None, Some(port)) = (&framing, redirect_to) {
        match redirect::https_location(req, port) {
            Some(location) => return Some(Outcome::Redirected(location)),
            None => {
                framing = Some(crate::policy::denial::Denial::BadRequest(
                    "A request must carry a valid Host header to be redirected to HTTPS.",
                ))
            }
        }
    }
    if let Some(denial) = framing {
        return Some(Outcome::Denied(denial));
    }
    let settled = settle(parts, ctx).await;
    decide(
        &ctx.snap.rules,
        &parts.defence.bans,
        &ctx.facts(&settled),
        shadowed,
    )
    .map(Outcome::Denied)
}

/// Shared limits need Redis' word before the (synchronous) decision. Only configurations with a
/// shared limit get here, only a spent lease waits (at most `[cluster] timeout`), and the
/// context holds the snapshot as an owned `Arc`, never a guard, across that wait.
async fn settle(parts: &Parts, ctx: &RequestCtx) -> Vec<Settled> {
    match &parts.cluster {
        Some(cluster) if ctx.snap.has_shared_limits && ctx.guest() => {
            crate::cluster::limits::settle(
                cluster,
                &ctx.snap.rules.limits,
                &ctx.snap.shared_limits,
                ctx.snap.loaded.config.client.ipv6_prefix,
                &ctx.facts(&[]),
                ctx.now.unix_ms(),
            )
            .await
        }
        _ => Vec::new(),
    }
}
