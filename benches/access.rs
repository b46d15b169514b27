//! What does an access line cost?
//!
//! The writer thread formats each line (with the token's preview and the path's redaction) into
//! one reused buffer; the baseline is the denial log's line (`benches/log.rs`: about 200 to
//! 350 ns here), which the access line should not exceed by much: it is written for every
//! answer, not only denials. The request path's share with the access log on is moving the
//! record into a box and one `try_send` (measured here too); with it off, one branch.

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderValue, Method, Uri, Version};
use jiff::tz::TimeZone;
use joinshield::telemetry::access::{format::write_line, AccessRecord, AccessSink};
use joinshield::telemetry::log::{Destination, LogConfig, LogSink, Stamper};

fn record() -> AccessRecord {
    AccessRecord {
        at_us: 1_795_802_400_123_456,
        ip: "203.0.113.7".parse().unwrap(),
        method: Method::GET,
        uri: Uri::from_static("/api/v1/gallery/abc123XYZ789def456/photos?page=2"),
        route: Some(Arc::from("gallery")),
        token: Some("abc123XYZ789def456".into()),
        keep: 6,
        request_id: HeaderValue::from_static("0f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"),
        version: Version::HTTP_11,
        tls: false,
        status: 200,
        reason: None,
        upstream_us: Some(12_345),
        bytes: 5120,
        complete: true,
    }
}

fn bench(c: &mut Criterion) {
    let mut stamper = Stamper::new(TimeZone::get("Europe/Berlin").unwrap());
    let mut line = Vec::with_capacity(512);
    let guest = record();
    c.bench_function(
        "format one access line (guest route, token redacted)",
        |b| {
            b.iter(|| {
                line.clear();
                write_line(&mut line, &mut stamper, black_box(&guest));
                black_box(line.len())
            })
        },
    );
    let plain = AccessRecord {
        uri: Uri::from_static("/up"),
        route: None,
        token: None,
        ..record()
    };
    c.bench_function("format one access line (no token)", |b| {
        b.iter(|| {
            line.clear();
            write_line(&mut line, &mut stamper, black_box(&plain));
            black_box(line.len())
        })
    });

    // The request path's part: box the record and queue it. The writer drains to /dev/null
    // meanwhile; when the queue is full a record is dropped (counted), which costs less.
    let config = LogConfig {
        access_file: "/dev/null".to_owned(),
        ..LogConfig::default()
    };
    let log = match LogSink::start_with(&config, Destination::Memory(Default::default()), 64) {
        Ok(log) => log,
        Err(e) => panic!("cannot start the log: {e}"),
    };
    let sink = match AccessSink::start_with(
        &config,
        Destination::File("/dev/null".into()),
        joinshield::telemetry::access::QUEUE_CAPACITY,
        log.handle(),
    ) {
        Ok(sink) => sink,
        Err(e) => panic!("cannot start the access log: {e}"),
    };
    let access = sink.handle();
    c.bench_function("queue one access record (box + try_send)", |b| {
        b.iter_batched(record, |r| access.write(Box::new(r)), BatchSize::SmallInput)
    });
    access.flush_blocking();
    println!(
        "access records dropped while queueing: {}",
        access.dropped()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
