//! Question: what does the request path's per-request head work cost, and what did issue 17
//! (folded join tokens, method overrides, header hygiene, random request ids, Host checks) add
//! to it? Baseline: the same measurements on the code before it (main at f90f5ea, with only the
//! adapters below changed for the old signatures), run in the same sitting (BENCHMARKS.md).
//!
//! - `request id`: a fresh id for a request that brought none (before: a prefix and a counter;
//!   after: 128 random bits from the thread's CSPRNG), and a trusted proxy's id kept.
//! - `forward prepare`: turning the client's head into the app's: hop-by-hop and forwarding
//!   headers out, the shield's in. A browser's head; the same behind a trusted proxy (with its
//!   X-Forwarded-* and X-Request-Id); a hostile head with underscore and X-Forwarded-* names.
//! - `host`: the Host check (after only: before, framing counted Host headers, no syntax).
//! - `decide`: the decision for a guest request with the shipped limits and a revoked-tokens
//!   list, the token in mixed case (after: folded once first, as the request context does).
//! - `classify POST`: an upload's classification (after: with the method-override classes).

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Method, Request, Uri, Version};
use joinshield::policy::bans::Bans;
use joinshield::policy::classify::{default_specs, RouteTable};
use joinshield::policy::client_ip::ClientKey;
use joinshield::policy::decide::{decide, Facts};
use joinshield::policy::limits::{client_key_hash, KeyKind, KeyedLimiter, LimitRule, Mode};
use joinshield::policy::lists::TokenList;
use joinshield::policy::rules::{ClassMask, Rules};
use joinshield::policy::tokens::{JoinToken, TokenFolding};
use joinshield::request_head::{host, prepare, ForwardInfo, RequestIds};
use joinshield::units::Rate;

const TOKEN: &str = "Xk3mQ9pLw2ZtR7vB";

fn browser_head(req: http::request::Builder) -> http::request::Builder {
    req.header("host", "app.example")
        .header("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
        .header("accept", "application/json")
        .header("accept-language", "de-DE,de;q=0.9")
        .header("accept-encoding", "gzip, deflate, br")
        .header("referer", "https://app.example/e/Xk3mQ9pLw2ZtR7vB")
        .header("cookie", "XSRF-TOKEN=abc; laravel_session=def")
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .header("connection", "keep-alive")
}

fn request(extra: &[(&str, &str)]) -> Request<()> {
    let mut b = browser_head(
        Request::builder()
            .method(Method::GET)
            .uri(format!("/api/v1/events/{TOKEN}/photos?page=2")),
    );
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn limit(name: &str, key: KeyKind, count: u32, burst: u32) -> LimitRule {
    LimitRule {
        name: name.into(),
        classes: ClassMask::of(&[0, 1, 2, 3]),
        key,
        mode: Mode::Enforce,
        until: None,
        replaced_until: None,
        stands_in: false,
        limiter: Arc::new(KeyedLimiter::with_clock(
            // So generous the bench never exhausts a bucket.
            Rate {
                count: count * 1_000_000,
                per: Duration::from_secs(60),
            },
            NonZeroU32::new(burst).unwrap(),
            200_000,
            Default::default(),
        )),
        shared: false,
    }
}

fn bench(c: &mut Criterion) {
    let ids = RequestIds;
    let mut g = c.benchmark_group("request id");
    g.bench_function("fresh", |b| b.iter(|| black_box(ids.fresh())));
    let sent = [HeaderValue::from_static(
        "123e4567-e89b-12d3-a456-426614174000",
    )];
    g.bench_function("kept from a trusted proxy", |b| {
        b.iter(|| black_box(ids.pick(black_box(&sent).iter(), true)))
    });
    g.finish();

    let upstream: Uri = "http://127.0.0.1:8000".parse().unwrap();
    let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    let info = ForwardInfo {
        client: "203.0.113.7".parse().unwrap(),
        https: true,
        request_id: &id,
    };
    let heads = [
        ("browser", request(&[])),
        (
            "behind a trusted proxy",
            request(&[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example"),
                ("x-request-id", "123e4567-e89b-12d3-a456-426614174000"),
            ]),
        ),
        (
            "hostile",
            request(&[
                ("x_real_ip", "6.6.6.6"),
                ("client_ip", "6.6.6.6"),
                ("x-forwarded-server", "evil"),
                ("x-original-url", "/admin"),
            ]),
        ),
    ];
    let mut g = c.benchmark_group("forward prepare");
    for (name, head) in &heads {
        g.bench_function(*name, |b| {
            b.iter_batched_ref(
                || head.clone(),
                |req| black_box(prepare(req, &upstream, &info)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let plain = request(&[]);
    c.bench_function("host/valid Host", |b| {
        b.iter(|| {
            black_box(host(
                Version::HTTP_11,
                black_box(plain.uri()),
                black_box(plain.headers()),
            ))
        })
    });

    let rules = Rules {
        revoked: Arc::new(
            TokenList::parse_with(
                "someone-else-1234\nsha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\n",
                Path::new("revoked-tokens.txt"),
                TokenFolding::default(),
            )
            .unwrap(),
        ),
        token_pattern: Some(regex::Regex::new("^[A-Za-z0-9_-]{8,128}$").unwrap()),
        limits: vec![
            limit("guest-ip", KeyKind::Ip, 300, 100),
            limit("guest-token", KeyKind::Token, 3000, 600),
            limit("download-ip", KeyKind::Ip, 30, 10),
        ],
        ..Rules::default()
    };
    let with_net = Rules {
        revoked: rules.revoked.clone(),
        token_pattern: rules.token_pattern.clone(),
        limits: vec![
            limit("guest-ip", KeyKind::Ip, 300, 100),
            limit("guest-token", KeyKind::Token, 3000, 600),
            limit("guest-net", KeyKind::Net, 6000, 1200),
            limit("download-ip", KeyKind::Ip, 30, 10),
        ],
        ..Rules::default()
    };
    let bans = Bans::new();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let client = ClientKey::new(ip, 64);
    let client_hash = client_key_hash(client);
    let mut g = c.benchmark_group("decide");
    for (name, rules) in [("shipped limits", &rules), ("with guest-net", &with_net)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                // The fold is the request context's, once per request: timed with the decision.
                let token = JoinToken::new(black_box(TOKEN).into(), TokenFolding::default());
                let facts = Facts {
                    ip,
                    class: Some(2),
                    classes: ClassMask::one(2),
                    token: Some(&token),
                    client,
                    client_hash,
                    now_unix: 1_800_000_000,
                    allowlisted: false,
                    settled: &[],
                };
                black_box(decide(rules, &bans, &facts, &mut Vec::new()))
            })
        });
    }
    g.finish();

    let table = RouteTable::new(&default_specs()).unwrap();
    let path = format!("/api/v1/events/{TOKEN}/photos");
    c.bench_function("classify POST/upload", |b| {
        b.iter(|| {
            let m = black_box(&Method::POST);
            let p = black_box(path.as_str());
            black_box((table.classify(m, p), table.override_classes(m, p)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
