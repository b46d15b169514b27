//! The one exit: every answer, the app's or the shield's, leaves through [`finish`], which
//! meters it, records it, logs it (a denial; shadow limits' would-be denials too), observes it
//! for the guessing counters, has `respond.rs` make it, and, with the access log on, gives its
//! body the answer's access record (written when the answer ends, `proxy/sent.rs`), exactly
//! once. No phase meters, records or logs an answer itself.

use std::time::Duration;

use http::{HeaderValue, Response};

use crate::clock::Now;
use crate::policy::denial::Denial;
use crate::policy::limits::Exceeded;
use crate::proxy::forward::Forwarded;
use crate::proxy::request::RequestCtx;
use crate::proxy::respond;
use crate::proxy::sent::SentBody;
use crate::proxy::{observe, Parts};
use crate::telemetry::access::AccessRecord;
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

/// What the access line says about how the request ended, beyond its status.
struct Ended {
    /// The shield's reason for answering itself; `None` for the app's answer.
    reason: Option<&'static str>,
    /// The time spent on the upstream exchange, when there was one.
    upstream: Option<Duration>,
}

/// Meters, records and logs the answer to `ctx` once, and makes it. `shadowed` are the shadow
/// limits the request exceeded on its way (it went on all the same); `unread_body` says whether
/// the request's body was still unread when the shield answered it itself. The context is
/// taken: with the access log on, its path, token and request id move into the access record.
pub(crate) fn finish(
    parts: &Parts,
    ctx: RequestCtx,
    shadowed: Vec<Exceeded>,
    unread_body: bool,
    outcome: Outcome,
) -> Response<SentBody> {
    let (resp, ended) = answer(parts, &ctx, shadowed, unread_body, outcome);
    let resp = if ctx.https {
        // Every answer over HTTPS, the app's or the shield's, carries the configured HSTS.
        respond::with_hsts(resp, ctx.snap.loaded.config.server.hsts.as_ref())
    } else {
        resp
    };
    // The access log's one branch: off, nothing more happens here.
    let access = parts.telemetry.access.as_ref().map(|log| {
        let status = resp.status().as_u16();
        (log.clone(), Box::new(access_record(ctx, status, ended)))
    });
    resp.map(|body| SentBody::new(body, access))
}

/// The access record of the answer `status` to `ctx` (its bytes are counted as it streams).
fn access_record(ctx: RequestCtx, status: u16, ended: Ended) -> AccessRecord {
    let keep = ctx.snap.loaded.config.log.token_preview;
    AccessRecord {
        at_us: ctx.now.unix_micros(),
        ip: ctx.client,
        route: ctx.snap.meters.name(ctx.class).cloned(),
        keep: u8::try_from(keep).unwrap_or(u8::MAX),
        method: ctx.method,
        uri: ctx.uri,
        token: ctx.token.map(crate::policy::tokens::JoinToken::into_sent),
        request_id: ctx.request_id,
        version: ctx.version,
        tls: ctx.https,
        status,
        reason: ended.reason,
        upstream_us: ended
            .upstream
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        bytes: 0,
        complete: false,
    }
}

/// Meters, records, logs and observes the answer, and makes it.
fn answer(
    parts: &Parts,
    ctx: &RequestCtx,
    shadowed: Vec<Exceeded>,
    unread_body: bool,
    outcome: Outcome,
) -> (Response<respond::Body>, Ended) {
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
    match outcome {
        Outcome::Redirected(location) => {
            meter.answered(308);
            telemetry
                .recent
                .record_answer(ctx.guest(), false, 308, None, ctx.now.unix_ms());
            let ended = Ended {
                reason: Some("https_redirect"),
                upstream: None,
            };
            (
                respond::redirect(location, &ctx.request_id, unread_body),
                ended,
            )
        }
        Outcome::Denied(denial) => {
            meter.refused(&denial);
            log(&denial, false, ctx.now);
            let status = denial.status().as_u16();
            telemetry.recent.record_answer(
                ctx.guest(),
                false,
                status,
                Some(&denial),
                ctx.now.unix_ms(),
            );
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
            let ended = Ended {
                reason: Some(denial.code()),
                upstream: None,
            };
            (
                respond::denial(&denial, &ctx.request_id, close, ctx.now.unix()),
                ended,
            )
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
                .record_answer(ctx.guest(), true, status, None, at.unix_ms());
            let ended = Ended {
                reason: None,
                upstream: Some(latency),
            };
            (respond::forwarded(response, &ctx.request_id), ended)
        }
        Outcome::Forwarded(Forwarded::Failed { error, latency, at }) => {
            let denial = respond::failure(error);
            meter.refused(&denial);
            telemetry.meters.upstream_failed(&denial);
            log(&denial, false, at);
            let status = denial.status().as_u16();
            telemetry
                .recent
                .record_answer(ctx.guest(), true, status, Some(&denial), at.unix_ms());
            let ended = Ended {
                reason: Some(denial.code()),
                upstream: Some(latency),
            };
            // A body cut off at max_body, stalled or broken is still partly unread: close
            // after answering.
            let resp = respond::denial(
                &denial,
                &ctx.request_id,
                error.leaves_body_unread(),
                at.unix(),
            );
            (resp, ended)
        }
    }
}
