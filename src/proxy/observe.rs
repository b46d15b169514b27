//! Observing the answer: a failed join token (the app's 403/404/410 on a guest route, or a
//! token the decision found malformed) is counted for the client and its prefix; a threshold
//! reached is a ban ([`crate::defence::Defence::ban_offence`]). With `[cluster]` the failure is
//! also queued, never awaited, for the shared count. Called from [`super::finish`] only.

use crate::proxy::request::RequestCtx;
use crate::proxy::Parts;

/// Whether the request's answers count as guesses at all: only guest requests with a token,
/// from a client that is not allowlisted, and only while guessing detection is on.
pub(crate) fn counts_failures(ctx: &RequestCtx) -> bool {
    ctx.snap.loaded.config.enumeration.is_some() && ctx.token.is_some() && !ctx.allowlisted
}

/// Feeds the app's answer `status` into the guessing counters.
pub(crate) fn app_answered(parts: &Parts, ctx: &RequestCtx, status: u16) {
    let counts = ctx
        .snap
        .loaded
        .config
        .enumeration
        .as_ref()
        .is_some_and(|e| e.settings.counts(status));
    if counts_failures(ctx) && counts {
        failed_token(parts, ctx);
    }
}

/// Counts one failed token of the request's client; a client or prefix that reaches its
/// threshold is banned and logged.
pub(crate) fn failed_token(parts: &Parts, ctx: &RequestCtx) {
    let (Some(e), Some(token)) = (&ctx.snap.loaded.config.enumeration, ctx.token.as_ref()) else {
        return;
    };
    if ctx.allowlisted {
        return;
    }
    let keep = ctx.snap.loaded.config.log.token_preview;
    // The offenders show the token as sent (a preview); the counts key on the folded token,
    // so the spellings of one token are one guess.
    parts
        .telemetry
        .recent
        .record_failed_token(ctx.client, token.sent(), keep, ctx.now.unix_ms());
    let v6 = ctx.snap.loaded.config.client.ipv6_prefix;
    let offences = parts.defence.failures.record(
        &e.settings,
        ctx.client_key,
        ctx.client,
        token.key(),
        ctx.now.instant(),
        v6,
    );
    for offence in offences {
        parts
            .defence
            .ban_offence(&offence, &e.settings, v6, ctx.now.unix());
    }
    if let Some(cluster) = &parts.cluster {
        cluster.record_failure(crate::cluster::failures::Failed {
            client: ctx.client_key.net(v6),
            prefix: crate::policy::guessing::prefix_of(ctx.client),
            token: cluster.token_digest(token.key()),
        });
    }
}
