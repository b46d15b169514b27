//! What does a log line cost the request path, and what does a folded one cost?
//!
//! Under a flood most denials are folded, so the folded path must be far cheaper than writing:
//! the baseline is formatting one full denial line (the writer thread's work per line), and the
//! target for a folded record is tens of nanoseconds (one hash lookup under a shard lock, no
//! record built). Queueing a record (build + try_send) is what an unfolded denial costs the
//! request itself.

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::tz::TimeZone;
use joinshield::telemetry::log::{
    redact_path, Destination, Format, Formatter, Level, LogConfig, LogSink, Record, Value,
};

fn denial() -> Record {
    Record::new(Level::Warning, "Join token access denied")
        .with("reason", "token_rate_limited")
        .with("ip", "203.0.113.7")
        .with("token", Value::token("abc123XYZ789def456", 6))
        .with("route", "gallery")
        .with("method", "GET")
        .with(
            "path",
            Value::request(&redact_path(
                "/api/v1/gallery/abc123XYZ789def456/photos",
                "abc123XYZ789def456",
                6,
            )),
        )
        .with("limit", "guest-ip")
        .with("retry_after", 30u64)
        .with("request_id", "0f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0")
}

fn bench(c: &mut Criterion) {
    let at: jiff::Timestamp = "2026-11-27T17:44:15Z".parse().unwrap();
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    let record = denial();

    let mut laravel = Formatter::new(Format::Laravel, "production", berlin.clone());
    let mut line = Vec::with_capacity(512);
    c.bench_function("format one denial line (laravel)", |b| {
        b.iter(|| {
            line.clear();
            laravel.write(&mut line, black_box(&record), at);
            black_box(line.len())
        })
    });

    let mut json = Formatter::new(Format::Json, "production", berlin.clone());
    c.bench_function("format one denial line (json)", |b| {
        b.iter(|| {
            line.clear();
            json.write(&mut line, black_box(&record), at);
            black_box(line.len())
        })
    });

    c.bench_function("build a denial record with token redaction", |b| {
        b.iter(|| black_box(denial()))
    });

    let config = LogConfig {
        file: "/dev/null".to_owned(),
        ..LogConfig::default()
    };
    let sink = match LogSink::start_with(
        &config,
        Destination::File("/dev/null".into()),
        joinshield::telemetry::log::QUEUE_CAPACITY,
    ) {
        Ok(sink) => sink,
        Err(e) => panic!("cannot start the log: {e}"),
    };
    let log = sink.handle();
    let now = Instant::now();
    log.log_folded(7, now, denial);
    c.bench_function("folded record (key inside its window)", |b| {
        b.iter(|| black_box(log.log_folded(black_box(7), now, denial)))
    });

    c.bench_function("queue one denial (build + try_send)", |b| {
        b.iter(|| log.log(denial()))
    });
    sink.flush();
}

criterion_group!(benches, bench);
criterion_main!(benches);
