//! `[alerts]` over real sockets: a local webhook receiver on 127.0.0.1:0 records what the shield
//! POSTs. Each test waits on events (a body arriving, the evaluation counter growing, a log line
//! appearing) with a deadline, never on a sleep.
#![allow(clippy::disallowed_methods)] // bounded waits measure real time

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::recorder::{self, Mode, Recorder};
use support::{closed_port, get, log_lines, spawn_shield_at};

/// How long any one wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// A webhook receiver: the strict recording upstream, answering 200, or never (`hang`).
struct Receiver {
    rec: Recorder,
    /// Alerts already taken by the test.
    taken: usize,
}

impl Receiver {
    async fn start(hang: bool) -> Receiver {
        let mode = if hang { Mode::Hold } else { Mode::Answer };
        Receiver {
            rec: recorder::spawn(mode).await,
            taken: 0,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/services/T000/B000/secret", self.rec.addr)
    }

    /// Waits (bounded) until the shield's next alert request has arrived whole.
    async fn arrived(&self) {
        self.rec.wait_for(self.taken + 1).await;
    }

    /// The `text` of the next alert, within the recorder's bound.
    async fn next_text(&mut self) -> String {
        self.arrived().await;
        let body = self.take(self.taken);
        self.taken += 1;
        text_of(&body)
    }

    /// Every alert text received and not taken yet.
    fn received(&mut self) -> Vec<String> {
        let n = self.rec.parsed().len();
        let out = (self.taken..n).map(|i| text_of(&self.take(i))).collect();
        self.taken = n;
        out
    }

    /// The body of request `i`, checked to be the webhook's POST of JSON.
    fn take(&self, i: usize) -> String {
        let request = &self.rec.parsed()[i];
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("POST", "/services/T000/B000/secret")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        String::from_utf8_lossy(&request.body).into_owned()
    }
}

/// The `text` of an alert body, which must have Slack's shape.
fn text_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(obj.len(), 1, "Slack's shape is {{\"text\": ...}}: {body}");
    obj["text"].as_str().expect("text is a string").to_string()
}

/// Waits until a log line contains every one of `parts`, and returns it.
async fn wait_for_line(shield: &joinshield::Running, dir: &Path, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let lines = log_lines(shield, dir).await;
        if let Some(l) = lines.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no line with {parts:?} in:\n{}",
            lines.join("\n")
        );
        // Polling with a deadline: the line is written by the log thread when it is.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the alert task has evaluated `n` more times (woken by each evaluation).
async fn wait_evaluations(shield: &joinshield::Running, n: u64) {
    let mut evaluations = shield.alert_evaluations();
    let target = *evaluations.borrow_and_update() + n;
    tokio::time::timeout(DEADLINE, evaluations.wait_for(|done| *done >= target))
        .await
        .expect("the alert task stopped evaluating")
        .expect("the alert task ended");
}

fn alerts_total(shield: &joinshield::Running, kind: &str, result: &str) -> u64 {
    let text = shield.metrics_text(joinshield::admin::scrape::Format::Prometheus);
    let series = format!("joinshield_alerts_total{{kind=\"{kind}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

const TOKEN: &str = "/api/v1/events/demo-synthetic01";

#[tokio::test]
async fn a_failing_app_raises_one_error_rate_alert_per_cooldown() {
    let mut hook = Receiver::start(false).await;
    let app = closed_port();
    // 25 requests pass the limit and fail (502); later ones are refused with 429. (25, not the
    // 20 the alert needs, so that a minute boundary between the requests and the evaluation,
    // which weighs the older minute down, cannot hide them.)
    let rest = format!(
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 25\n\n\
         [alerts]\nwebhook = \"{}\"\nerror_rate = 0.5\ndenial_rate = \"5/min\"\ncooldown = \"1h\"\n",
        hook.url()
    );
    let f = spawn_shield_at(app, "", &rest).await;
    let (shield, dir) = (f.shield, f.dir);
    for _ in 0..25 {
        assert_eq!(get(shield.addr, TOKEN, "").await.status, 502);
    }
    let text = hook.next_text().await;
    assert!(text.contains("100% of guest requests failed"), "{text}");
    let line = wait_for_line(
        &shield,
        dir.path(),
        &[
            "production.NOTICE: Shield alert sent",
            "\"kind\":\"error_rate\"",
        ],
    )
    .await;
    assert!(line.contains("\"status\":200"), "{line}");

    // The app is still failing for the next evaluations: the cooldown holds the alert back.
    wait_evaluations(&shield, 3).await;
    // A denial alert now goes through the same queue after any second error alert would have.
    for _ in 0..6 {
        assert_eq!(get(shield.addr, TOKEN, "").await.status, 429);
    }
    let text = hook.next_text().await;
    assert!(text.contains("6 requests denied (429/403)"), "{text}");
    assert!(hook.received().is_empty());
    wait_for_line(
        &shield,
        dir.path(),
        &["Shield alert sent", "\"kind\":\"denial_rate\""],
    )
    .await;
    assert_eq!(alerts_total(&shield, "error_rate", "sent"), 1);
    assert_eq!(alerts_total(&shield, "denial_rate", "sent"), 1);
    assert_eq!(alerts_total(&shield, "prefix_ban", "sent"), 0);
    shield.shutdown().await;
}

#[tokio::test]
async fn token_guessing_that_bans_a_slash_24_is_alerted_with_the_prefix() {
    let mut hook = Receiver::start(false).await;
    let rest = format!(
        "[enumeration]\nmax_failures = 50\nprefix_max_failures = 6\n\n[alerts]\nwebhook = \"{}\"\n",
        hook.url()
    );
    let h = support::spawn_shield("", &rest).await;
    for i in 0..6 {
        let ip = format!("198.51.100.{}", 10 + i % 3);
        let a = get(
            h.addr(),
            &format!("/api/v1/events/guess-{i:06}"),
            &format!("X-Forwarded-For: {ip}\r\n"),
        )
        .await;
        assert_eq!(a.status, 404, "guess {i}");
    }
    let text = hook.next_text().await;
    assert!(text.contains("198.51.100.0/24"), "{text}");
    assert!(text.contains("6 distinct failed join tokens"), "{text}");
    assert!(!text.contains("guess-"), "no token in an alert: {text}");
    wait_for_line(
        &h.shield,
        h.dir.path(),
        &["Shield alert sent", "\"kind\":\"prefix_ban\""],
    )
    .await;
    assert_eq!(alerts_total(&h.shield, "prefix_ban", "sent"), 1);
}

#[tokio::test]
async fn a_hanging_webhook_slows_no_guest_request_and_is_given_up() {
    let hook = Receiver::start(true).await;
    let rest = format!(
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n\n\
         [alerts]\nwebhook = \"{}\"\ndenial_rate = \"2/min\"\ntimeout = \"2s\"\n",
        hook.url()
    );
    let h = support::spawn_shield("", &rest).await;
    assert_eq!(get(h.addr(), TOKEN, "").await.status, 200);
    for _ in 0..3 {
        assert_eq!(get(h.addr(), TOKEN, "").await.status, 429);
    }
    // The shield connects to the webhook and sends its request whole.
    hook.arrived().await;
    // The webhook holds the alert; guests are answered all the same, each within support's
    // 10 s read bound (these are not timings, only answers).
    for i in 0..50 {
        assert_eq!(get(h.addr(), "/", "").await.status, 200, "request {i}");
    }
    let line = wait_for_line(
        &h.shield,
        h.dir.path(),
        &[
            "production.WARNING: Shield alert failed",
            "no answer within 2s",
        ],
    )
    .await;
    assert!(line.contains("\"kind\":\"denial_rate\""), "{line}");
    assert!(
        !line.contains("secret"),
        "the webhook's path stays out of the log: {line}"
    );
    assert_eq!(alerts_total(&h.shield, "denial_rate", "failed"), 1);
}

#[tokio::test]
async fn a_refused_webhook_connection_is_logged_and_counted() {
    let nowhere = closed_port();
    let rest = format!(
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n\n\
         [alerts]\nwebhook = \"http://{nowhere}/hook\"\ndenial_rate = \"2/min\"\n"
    );
    let h = support::spawn_shield("", &rest).await;
    assert_eq!(get(h.addr(), TOKEN, "").await.status, 200);
    for _ in 0..3 {
        assert_eq!(get(h.addr(), TOKEN, "").await.status, 429);
    }
    let line = wait_for_line(
        &h.shield,
        h.dir.path(),
        &["production.WARNING: Shield alert failed", "cannot connect"],
    )
    .await;
    assert!(
        line.contains(&format!("\"webhook\":\"{nowhere}\"")),
        "{line}"
    );
    assert_eq!(alerts_total(&h.shield, "denial_rate", "failed"), 1);
    assert_eq!(alerts_total(&h.shield, "denial_rate", "sent"), 0);
}

#[tokio::test]
async fn a_reload_sends_the_next_alert_to_the_new_webhook() {
    let mut first = Receiver::start(false).await;
    let mut second = Receiver::start(false).await;
    let rest = |hook: &str| {
        format!(
            "[[limit]]\nname = \"gallery-ip\"\nroutes = [\"gallery\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n\n\
             [enumeration]\nmax_failures = 50\nprefix_max_failures = 3\n\n\
             [alerts]\nwebhook = \"{hook}\"\ndenial_rate = \"2/min\"\n"
        )
    };
    let h = support::spawn_shield("", &rest(&first.url())).await;
    assert_eq!(
        get(h.addr(), "/api/v1/gallery/demo-synthetic01", "")
            .await
            .status,
        200
    );
    for _ in 0..3 {
        assert_eq!(
            get(h.addr(), "/api/v1/gallery/demo-synthetic01", "")
                .await
                .status,
            429
        );
    }
    assert!(first.next_text().await.contains("denied (429/403)"));

    let text = support::config_text(&format!("http://{}", h.app.addr), "", &rest(&second.url()));
    std::fs::write(h.config_path(), text).unwrap();
    let outcome = h.shield.reload_logged();
    assert!(
        matches!(
            outcome,
            joinshield::ReloadOutcome::Applied { version: 2, .. }
        ),
        "{outcome:?}"
    );
    for i in 0..3 {
        let xff = format!("X-Forwarded-For: 203.0.113.{}\r\n", 20 + i);
        let a = get(h.addr(), &format!("/api/v1/events/guess-{i:06}"), &xff).await;
        assert_eq!(a.status, 404);
    }
    assert!(second.next_text().await.contains("203.0.113.0/24"));
    assert!(first.received().is_empty());
    let line = wait_for_line(
        &h.shield,
        h.dir.path(),
        &["Shield configuration reloaded", "alerts webhook now"],
    )
    .await;
    assert!(!line.contains("secret"), "{line}");
}
