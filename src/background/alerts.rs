//! `[alerts]`: a Slack-compatible webhook (`{"text": "..."}` POSTed as JSON) when the app is
//! failing, when the shield is denying a flood, or when token guessing got a whole prefix banned.
//!
//! **Nothing here touches the request path.** A background task ([`run`]) wakes once a second
//! and reads counters the request path keeps anyway: the per-minute guest error counters of
//! [`crate::telemetry::recent::Rates`], the 429/403 denial cells of [`crate::telemetry::meters`],
//! and a count of prefix bans ([`crate::telemetry::alerts`]) bumped where a prefix is banned
//! (a rare event). [`Evaluator::evaluate`]
//! turns a reading into alerts; it is pure, with the clock passed in, so its windows and
//! cooldowns are tested without waiting. Alerts go through a bounded queue to one sender task
//! that POSTs each with a timeout; a full queue drops the alert, a failing or hanging webhook is
//! logged and given up on. Requests never wait for any of it.
//!
//! The three kinds:
//! - `error_rate`: at least `error_rate` of the guest requests forwarded over the last minute
//!   were answered 5xx (by the app, or 502/504 by the shield because the app was unreachable or
//!   too slow), and there were at least [`MIN_GUEST_REQUESTS`] of them (1 failure of 1 request
//!   does not page anyone). The playbook's SEV-1 line is 50%.
//! - `denial_rate`: more 429 and 403 answers over the last minute than `denial_rate` allows.
//! - `prefix_ban`: token guessing got an IPv4 /24 or IPv6 /48 banned (the playbook's SEV-2
//!   "repeated invalid_token from single IP range").
//!
//! Each kind is sent at most once per `cooldown` (counted from the attempt, so a webhook that
//! is down is not retried every second). The configuration is read at every evaluation, so a
//! reload that changes the webhook or a threshold applies from the next second.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::config::schema::{AlertsSpec, Webhook};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshots;
use crate::telemetry::alerts::{Alerts, Kind, Outcome, PrefixBan};
use crate::telemetry::log::{Level, LogHandle, Record};
use crate::telemetry::timeline::AlertOutcome;
use crate::telemetry::Telemetry;

/// How often the counters are evaluated.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// Fewer forwarded guest requests than this in the last minute never raise an error-rate alert.
pub const MIN_GUEST_REQUESTS: f64 = 20.0;

/// The window the rates are measured over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Alerts waiting for the sender; more are dropped (and counted).
pub const QUEUE: usize = 16;

/// What the counters say at one instant.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Guest requests forwarded over the last minute (estimated).
    pub guest: f64,
    /// Of those, answered 5xx.
    pub guest_errors: f64,
    /// 429 and 403 answers since the start (never decreasing, except when a route class with
    /// counts was removed by a reload).
    pub denials_total: u64,
    /// Prefix bans since the start.
    pub prefix_bans: u64,
    /// The latest of them.
    pub last_prefix: Option<PrefixBan>,
}

/// One alert to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What it is about.
    pub kind: Kind,
    /// The sentence for the channel.
    pub text: String,
}

/// Turns readings into alerts: keeps the last minute of denial totals and when each kind was
/// last sent.
#[derive(Debug)]
pub struct Evaluator {
    last_sent: [Option<Instant>; 3],
    denials: VecDeque<(Instant, u64)>,
    prefix_bans_reported: u64,
}

impl Evaluator {
    /// An evaluator whose history starts at `now` with `baseline` (counts before it are not
    /// held against the first minute).
    pub fn new(now: Instant, baseline: &Reading) -> Self {
        Evaluator {
            last_sent: [None; 3],
            denials: VecDeque::from([(now, baseline.denials_total)]),
            prefix_bans_reported: baseline.prefix_bans,
        }
    }

    /// The alerts `reading` at `now` raises under `spec`, each kind at most once per cooldown.
    pub fn evaluate(&mut self, spec: &AlertsSpec, now: Instant, reading: &Reading) -> Vec<Alert> {
        let mut out = Vec::new();

        // Denials over the last minute: the total now minus the total a minute ago (or at the
        // oldest sample held, early on: more than the threshold in less than a minute is over
        // the rate too).
        if self
            .denials
            .back()
            .is_some_and(|&(_, total)| reading.denials_total < total)
        {
            // A reload removed a route class and its counts: start over from here.
            self.denials.clear();
        }
        self.denials.push_back((now, reading.denials_total));
        while self.denials.len() > 1
            && self
                .denials
                .get(1)
                .is_some_and(|&(at, _)| now.saturating_duration_since(at) >= WINDOW)
        {
            self.denials.pop_front();
        }
        let denied = self
            .denials
            .front()
            .map_or(0, |&(_, then)| reading.denials_total.saturating_sub(then));

        let error_rate = (reading.guest >= MIN_GUEST_REQUESTS)
            .then(|| (reading.guest_errors / reading.guest).clamp(0.0, 1.0))
            .filter(|&r| r >= spec.error_rate);
        if let Some(rate) = error_rate {
            if self.due(Kind::ErrorRate, spec, now) {
                out.push(Alert {
                    kind: Kind::ErrorRate,
                    text: format!(
                        "joinshield: {:.0}% of guest requests failed over the last minute ({:.0} of {:.0} answered 5xx; alert threshold {:.0}%). Over 50% is SEV-1 in the incident playbook: check the app, then `joinshield ctl status`.",
                        rate * 100.0,
                        reading.guest_errors,
                        reading.guest,
                        spec.error_rate * 100.0
                    ),
                });
            }
        }

        if denied > spec.denials_per_minute && self.due(Kind::DenialRate, spec, now) {
            out.push(Alert {
                kind: Kind::DenialRate,
                text: format!(
                    "joinshield: {denied} requests denied (429/403) over the last minute, above the alert rate of {}. Who: `joinshield ctl offenders --since 15m`.",
                    spec.denial_rate
                ),
            });
        }

        if reading.prefix_bans > self.prefix_bans_reported && self.due(Kind::PrefixBan, spec, now) {
            let new = reading.prefix_bans - self.prefix_bans_reported;
            self.prefix_bans_reported = reading.prefix_bans;
            let latest = reading.last_prefix.as_ref().map_or_else(
                || "a prefix".to_string(),
                |p| {
                    let tokens = p.distinct_tokens.map_or_else(String::new, |n| {
                        format!(" after {n} distinct failed join tokens")
                    });
                    format!("{}{tokens}, for {}s", p.net, p.ban_seconds)
                },
            );
            let more = if new > 1 {
                format!(" ({new} prefix bans since the last alert)")
            } else {
                String::new()
            };
            out.push(Alert {
                kind: Kind::PrefixBan,
                text: format!(
                    "joinshield: token guessing banned {latest}{more}. SEV-2 in the incident playbook: `joinshield ctl bans`, `joinshield ctl offenders --since 15m`."
                ),
            });
        }
        out
    }

    /// Whether `kind` may be sent at `now`; if so, it counts as sent now.
    fn due(&mut self, kind: Kind, spec: &AlertsSpec, now: Instant) -> bool {
        let slot = &mut self.last_sent[kind.index()];
        let due = slot.is_none_or(|at| now.saturating_duration_since(at) >= spec.cooldown);
        if due {
            *slot = Some(now);
        }
        due
    }
}

/// What the alert task holds: the snapshots (for `[alerts]` and the meters), the telemetry
/// (for the rates and the log), the alert state and the clock.
#[derive(Clone)]
pub struct Parts {
    /// The snapshot in force.
    pub snapshots: Arc<Snapshots>,
    /// The per-minute rates and the log.
    pub telemetry: Arc<Telemetry>,
    /// Prefix bans noted, and what became of the alerts.
    pub alerts: Arc<Alerts>,
    /// The time.
    pub clock: SharedClock,
}

/// Reads the counters of `parts` at `now_ms`.
pub fn read(parts: &Parts, now_ms: i64) -> Reading {
    let window = parts.telemetry.recent.rates.window(1, now_ms);
    let (prefix_bans, last_prefix) = parts.alerts.prefix_bans();
    Reading {
        guest: window.guest,
        guest_errors: window.guest_errors,
        denials_total: parts.snapshots.load().meters.denied_429_403(),
        prefix_bans,
        last_prefix,
    }
}

/// One alert on its way: where to, and what.
struct Job {
    alert: Alert,
    webhook: Webhook,
    timeout: Duration,
}

/// Evaluates the counters every [`EVALUATE_EVERY`] until `shutdown`, and sends what they raise.
pub async fn run(parts: Parts, shutdown: Shutdown) {
    let (tx, rx) = mpsc::channel::<Job>(QUEUE);
    let sender = tokio::spawn(send_all(parts.clone(), rx));
    let start = parts.clock.now();
    let mut evaluator = Evaluator::new(start.instant(), &read(&parts, start.unix_ms()));
    let mut tick = tokio::time::interval(EVALUATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => break,
        }
        let now = parts.clock.now();
        let reading = read(&parts, now.unix_ms());
        let spec = parts.snapshots.load().loaded.config.alerts.clone();
        if let Some(spec) = spec {
            for alert in evaluator.evaluate(&spec, now.instant(), &reading) {
                let kind = alert.kind;
                let job = Job {
                    alert,
                    webhook: spec.webhook.clone(),
                    timeout: spec.timeout,
                };
                if let Err(mpsc::error::TrySendError::Full(job)) = tx.try_send(job) {
                    parts.alerts.counted(kind, Outcome::Dropped);
                    parts.telemetry.timeline.alert(
                        now.unix_ms(),
                        kind.name(),
                        AlertOutcome::Failed("the alert queue is full".to_string()),
                        &job.alert.text,
                    );
                    log_failure(
                        &parts.telemetry.log,
                        now.instant(),
                        &job,
                        "the alert queue is full (the webhook is slow)",
                    );
                }
            }
        } else {
            // Alerts are off: keep the history current so turning them on judges only what
            // happens from then on.
            evaluator = Evaluator::new(now.instant(), &reading);
        }
        parts.alerts.evaluated();
    }
    drop(tx);
    sender.abort();
}

/// Sends queued alerts one at a time.
async fn send_all(parts: Parts, mut rx: mpsc::Receiver<Job>) {
    let log = &parts.telemetry.log;
    while let Some(job) = rx.recv().await {
        let kind = job.alert.kind;
        match tokio::time::timeout(job.timeout, post(&job.webhook, &job.alert.text)).await {
            Ok(Ok(status)) => {
                parts.alerts.counted(kind, Outcome::Sent);
                parts.telemetry.timeline.alert(
                    parts.clock.now().unix_ms(),
                    kind.name(),
                    AlertOutcome::Sent(status),
                    &job.alert.text,
                );
                log.log(
                    Record::new(Level::Notice, "Shield alert sent")
                        .with("kind", kind.name())
                        .with("status", u64::from(status))
                        .with("text", job.alert.text.as_str()),
                );
            }
            Ok(Err(why)) => {
                parts.alerts.counted(kind, Outcome::Failed);
                let now = parts.clock.now();
                parts.telemetry.timeline.alert(
                    now.unix_ms(),
                    kind.name(),
                    AlertOutcome::Failed(why.clone()),
                    &job.alert.text,
                );
                log_failure(log, now.instant(), &job, &why);
            }
            Err(_) => {
                parts.alerts.counted(kind, Outcome::Failed);
                let why = format!(
                    "no answer within {}",
                    crate::units::format_duration(job.timeout)
                );
                let now = parts.clock.now();
                parts.telemetry.timeline.alert(
                    now.unix_ms(),
                    kind.name(),
                    AlertOutcome::Failed(why.clone()),
                    &job.alert.text,
                );
                log_failure(log, now.instant(), &job, &why);
            }
        }
    }
}

/// Logs an alert that did not get through: one WARNING per kind and fold window.
fn log_failure(log: &LogHandle, now: Instant, job: &Job, why: &str) {
    let kind = job.alert.kind;
    // One fold key per kind; the constant keeps them apart from the request path's keys.
    let key =
        0xa1e7_0000_0000_0000_u64 ^ (kind.index() as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    log.log_folded(key, now, || {
        Record::new(Level::Warning, "Shield alert failed")
            .with("kind", kind.name())
            .with("webhook", job.webhook.authority.as_str())
            .with("error", why.to_string())
            .with("text", job.alert.text.as_str())
    });
}

/// POSTs `{"text": text}` to `webhook`; the status when it is 2xx.
async fn post(webhook: &Webhook, text: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(&webhook.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", webhook.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake with {} failed: {e}", webhook.authority))?;
    let connection = tokio::spawn(conn);
    let body = serde_json::json!({ "text": text }).to_string();
    let request = http::Request::post(webhook.path_and_query.as_str())
        .header(http::header::HOST, webhook.host.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("joinshield/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{} did not answer: {e}", webhook.authority))?;
        let status = response.status();
        // Read the (small) body so the exchange completes; its content does not matter.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("{} answered {status}", webhook.authority))
        }
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
// The tests anchor their instants on the real clock; the code under test reads none.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::units::Rate;

    fn spec() -> AlertsSpec {
        AlertsSpec {
            webhook: crate::config::validate::parse_webhook("http://127.0.0.1:9/hook").unwrap(),
            error_rate: 0.5,
            denials_per_minute: 600,
            denial_rate: Rate {
                count: 600,
                per: Duration::from_secs(60),
            },
            cooldown: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
        }
    }

    fn kinds(alerts: &[Alert]) -> Vec<Kind> {
        alerts.iter().map(|a| a.kind).collect()
    }

    fn failing(guest: f64, errors: f64) -> Reading {
        Reading {
            guest,
            guest_errors: errors,
            ..Reading::default()
        }
    }

    #[test]
    fn half_the_guest_requests_failing_is_an_error_rate_alert() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let alerts = e.evaluate(&spec(), t0 + Duration::from_secs(1), &failing(40.0, 20.0));
        assert_eq!(kinds(&alerts), [Kind::ErrorRate]);
        assert!(alerts[0].text.contains("50%"), "{}", alerts[0].text);
    }

    #[test]
    fn below_the_threshold_or_too_few_requests_is_no_alert() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let s = spec();
        assert!(e.evaluate(&s, t0, &failing(100.0, 49.0)).is_empty());
        // One failure of one request, or 19 of 19, pages nobody.
        assert!(e.evaluate(&s, t0, &failing(1.0, 1.0)).is_empty());
        assert!(e.evaluate(&s, t0, &failing(19.0, 19.0)).is_empty());
        assert_eq!(
            kinds(&e.evaluate(&s, t0, &failing(20.0, 20.0))),
            [Kind::ErrorRate]
        );
    }

    #[test]
    fn a_kind_is_sent_once_per_cooldown_and_again_after_it() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let s = spec();
        let bad = failing(100.0, 90.0);
        assert_eq!(e.evaluate(&s, t0, &bad).len(), 1);
        for secs in [1, 60, 599] {
            assert!(e
                .evaluate(&s, t0 + Duration::from_secs(secs), &bad)
                .is_empty());
        }
        assert_eq!(e.evaluate(&s, t0 + Duration::from_secs(600), &bad).len(), 1);
    }

    /// A reading with `n` denials since the start and nothing else.
    fn denials(n: u64) -> Reading {
        Reading {
            denials_total: n,
            ..Reading::default()
        }
    }

    #[test]
    fn denials_over_the_rate_within_a_minute_alert_and_old_ones_do_not_count() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let s = spec();
        // 600 in the first 30 s is not over 600/min; 601 is.
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(30), &denials(600))
            .is_empty());
        assert_eq!(
            kinds(&e.evaluate(&s, t0 + Duration::from_secs(31), &denials(601))),
            [Kind::DenialRate]
        );

        // A steady 500/min never alerts, however long it lasts.
        let mut e = Evaluator::new(t0, &Reading::default());
        for sec in 1..=300u64 {
            let alerts = e.evaluate(&s, t0 + Duration::from_secs(sec), &denials(sec * 500 / 60));
            assert!(alerts.is_empty(), "second {sec}");
        }
    }

    #[test]
    fn a_reload_that_drops_counts_starts_the_minute_over() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let s = spec();
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(1), &denials(500))
            .is_empty());
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(2), &denials(100))
            .is_empty());
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(3), &denials(650))
            .is_empty());
        assert_eq!(
            e.evaluate(&s, t0 + Duration::from_secs(4), &denials(701))
                .len(),
            1
        );
    }

    #[test]
    fn a_prefix_ban_alerts_once_and_names_the_prefix() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(t0, &Reading::default());
        let s = spec();
        let banned = |n| Reading {
            prefix_bans: n,
            last_prefix: Some(PrefixBan {
                net: "198.51.100.0/24".parse().unwrap(),
                distinct_tokens: Some(100),
                ban_seconds: 900,
            }),
            ..Reading::default()
        };
        let alerts = e.evaluate(&s, t0, &banned(1));
        assert_eq!(kinds(&alerts), [Kind::PrefixBan]);
        assert!(
            alerts[0].text.contains("198.51.100.0/24"),
            "{}",
            alerts[0].text
        );
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(1), &banned(1))
            .is_empty());
        // Two more within the cooldown wait, and are summed up when it is over.
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(2), &banned(3))
            .is_empty());
        let later = e.evaluate(&s, t0 + Duration::from_secs(600), &banned(3));
        assert_eq!(kinds(&later), [Kind::PrefixBan]);
        assert!(
            later[0].text.contains("2 prefix bans since the last alert"),
            "{}",
            later[0].text
        );
        assert!(e
            .evaluate(&s, t0 + Duration::from_secs(1200), &banned(3))
            .is_empty());
    }

    #[test]
    fn counts_before_the_evaluator_started_are_not_held_against_it() {
        let t0 = Instant::now();
        let before = Reading {
            denials_total: 5_000,
            prefix_bans: 3,
            ..Reading::default()
        };
        let mut e = Evaluator::new(t0, &before);
        assert!(e
            .evaluate(&spec(), t0 + Duration::from_secs(1), &before)
            .is_empty());
    }

    #[test]
    fn a_webhook_answer_other_than_2xx_is_a_failure() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 11\r\n\r\nno_service\n")
                    .await;
            });
            let hook = crate::config::validate::parse_webhook(&format!("http://{addr}/x")).unwrap();
            let err = post(&hook, "hi").await.unwrap_err();
            assert!(err.contains("404"), "{err}");
        });
    }
}
