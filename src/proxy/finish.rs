//! The one exit: every answer, the app's or the shield's, leaves through [`finish`], which
//! meters it, records it, logs it (a denial; shadow limits' would-be denials too), observes it
//! for the guessing counters, and has `respond.rs` make it, exactly once. No phase meters,
//! records or logs an answer itself.

use http::{HeaderValue, Response};

use crate::clock::Now;
use crate::policy::denial::Denial;
use crate::policy::limits::Exceeded;
use crate::proxy::forward::Forwarded;
use crate::proxy::request::RequestCtx;
use crate::proxy::respond::{self, Body};
use crate::proxy::{observe, Parts};
use crate::telemetry::denial_line::log_denial;

/// How a request ended.
pub(crate) enum Outcome {
    /// Sent to HTTPS (308) before any other check.
    Redirected(HeaderValue),
    /// Refused by framing or the decision.
    Denied(Denial),
    /// Forwarded: the app's answer or the failure.
    Forwarded(Forwarded),
}

/// Meters, records and logs the answer to `ctx` once, and makes it. `shadowed` are the shadow
/// limits the request exceeded on its way (it went on all the same); `unread_body` says whether
/// the request's body was still unread when the shield answered it itself.
pub(crate) fn finish(
    parts: &Parts,
    ctx: &RequestCtx,
    shadowed: Vec<Exceeded>,
    unread_body: bool,
    outcome: Outcome,
) -> Response<Body> {
    let telemetry = &parts.telemetry;
    let meter = ctx.snap.meters.get(ctx.class);
    let keep = ctx.snap.loaded.config.log.token_preview;
    let seen = ctx.seen();
    let log = |denial: &Denial, shadow: bool, at: Now| {
        log_denial(
            &telemetry.log,
            &telemetry.recent,
            keep,
            denial,
            &seen,
            shadow,
            at,
        );
    };
    for hit in shadowed {
        let hit = Denial::RateLimited(hit);
        meter.shadowed(&hit);
        log(&hit, true, ctx.now);
    }
    let resp = match outcome {
        Outcome::Redirected(location) => {
            meter.answered(308);
            telemetry
                .recent
                .record_answer(ctx.guest(), false, 308, ctx.now.unix_ms());
            respond::redirect(location, &ctx.request_id, unread_body)
        }
        Outcome::Denied(denial) => {
            meter.refused(&denial);
            log(&denial, false, ctx.now);
            let status = denial.status().as_u16();
            telemetry
                .recent
                .record_answer(ctx.guest(), false, status, ctx.now.unix_ms());
            if denial == Denial::InvalidToken {
                // A malformed token is a failed guess too, answered without asking the app.
                observe::failed_token(parts, ctx);
            }
            // A malformed request (no Host, CONNECT) ends its connection too: whatever follows
            // on it was framed by a client that does not speak HTTP/1.1 as the shield does. A
            // blocklisted or banned client loses its connection after this one answer: what
            // it pipelined behind it is neither answered nor forwarded.
            let close = unread_body
                || matches!(
                    denial,
                    Denial::BadRequest(_) | Denial::Blocked | Denial::Banned { .. }
                );
            respond::denial(&denial, &ctx.request_id, close, ctx.now.unix())
        }
        Outcome::Forwarded(Forwarded::Answered {
            response,
            latency,
            at,
        }) => {
            let status = response.status().as_u16();
            meter.forwarded(status, latency);
            telemetry.liveness.note(at.unix_ms());
            observe::app_answered(parts, ctx, status);
            telemetry
                .recent
                .record_answer(ctx.guest(), true, status, at.unix_ms());
            respond::forwarded(response, &ctx.request_id)
        }
        Outcome::Forwarded(Forwarded::Failed { error, at }) => {
            let denial = respond::failure(error);
            meter.refused(&denial);
            telemetry.meters.upstream_failed(&denial);
            log(&denial, false, at);
            let status = denial.status().as_u16();
            telemetry
                .recent
                .record_answer(ctx.guest(), true, status, at.unix_ms());
            // A body cut off at max_body, stalled or broken is still partly unread: close
            // after answering.
            respond::denial(
                &denial,
                &ctx.request_id,
                error.leaves_body_unread(),
                at.unix(),
            )
        }
    };
    if ctx.https {
        // Every answer over HTTPS, the app's or the shield's, carries the configured HSTS.
        respond::with_hsts(resp, ctx.snap.loaded.config.server.hsts.as_ref())
    } else {
        resp
    }
}
