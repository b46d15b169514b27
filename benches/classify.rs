//! Question: what does classifying a request cost on the hot path, and is the byte-wise,
//! allocation-free matcher worth having over the obvious design?
//!
//! Baseline: the naive classifier one would write first, one regex per pattern (in route order)
//! run on the percent-decoded, slash-trimmed path. It handles fewer spellings than
//! `RouteTable::classify` (no front controller, no dot segments, no case folding), so it is a
//! lower bound for the naive approach, not an equal.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use joinshield::policy::classify::{default_specs, RouteSpec, RouteTable};
use regex::Regex;

/// One regex per pattern, tried in route order on the decoded path.
struct RegexTable {
    routes: Vec<(Option<Vec<Method>>, Vec<Regex>)>,
}

impl RegexTable {
    fn new(specs: &[RouteSpec]) -> Self {
        let routes = specs
            .iter()
            .map(|spec| {
                let regexes = spec
                    .paths
                    .iter()
                    .map(|p| {
                        let body: Vec<String> = p
                            .split('/')
                            .skip(1)
                            .map(|seg| match seg {
                                "{token}" => "(?P<token>[^/]+)".to_owned(),
                                "*" => "[^/]+".to_owned(),
                                "**" => ".*".to_owned(),
                                lit => regex::escape(lit),
                            })
                            .collect();
                        Regex::new(&format!("^/{}$", body.join("/"))).expect("valid regex")
                    })
                    .collect();
                (spec.methods.clone(), regexes)
            })
            .collect();
        RegexTable { routes }
    }

    fn classify(&self, method: &Method, path: &str) -> (Option<u16>, Option<Box<str>>) {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let decoded = percent_encoding::percent_decode_str(trimmed).decode_utf8_lossy();
        for (i, (methods, regexes)) in self.routes.iter().enumerate() {
            if let Some(ms) = methods {
                if !ms
                    .iter()
                    .any(|m| m == method || (*m == Method::GET && method == Method::HEAD))
                {
                    continue;
                }
            }
            for re in regexes {
                if let Some(caps) = re.captures(&decoded) {
                    let token = caps.name("token").map(|t| t.as_str().into());
                    return (u16::try_from(i).ok(), token);
                }
            }
        }
        (None, None)
    }
}

fn bench(c: &mut Criterion) {
    let specs = default_specs();
    let table = RouteTable::new(&specs).expect("default routes compile");
    let naive = RegexTable::new(&specs);
    let cases = [
        ("events", Method::GET, "/api/v1/events/Xk3d9fQ2mZ7pLw4a"),
        (
            "events-rest",
            Method::GET,
            "/api/v1/events/Xk3d9fQ2mZ7pLw4a/photos/123/likes",
        ),
        (
            "upload",
            Method::POST,
            "/api/v1/events/Xk3d9fQ2mZ7pLw4a/photos",
        ),
        ("gallery", Method::GET, "/gallery/Xk3d9fQ2mZ7pLw4a"),
        (
            "download",
            Method::GET,
            "/api/v1/gallery/Xk3d9fQ2mZ7pLw4a/photos/42/download",
        ),
        ("non-guest", Method::GET, "/api/v1/users/42/notifications"),
        (
            "encoded",
            Method::GET,
            "/index.php/api/v1/events/Xk3d9fQ2mZ7pLw4a%2Fphotos/",
        ),
        (
            "front-controller",
            Method::GET,
            "/public/index.php/api/v1/gallery/Xk3d9fQ2mZ7pLw4a/download",
        ),
        // A scanner's probe: `.php` in a path that is no guest route (every cut is tried).
        ("php-probe", Method::GET, "/wp-admin/setup-config.php"),
    ];
    // The worst a client can send: `.php` and escapes throughout a long path.
    let hostile = format!("/{}.php{}", "a".repeat(1000), "/%4a".repeat(1000));
    let mut group = c.benchmark_group("classify");
    for (name, method, path) in &cases {
        group.bench_with_input(BenchmarkId::new("shield", name), path, |b, path| {
            b.iter(|| table.classify(black_box(method), black_box(path)))
        });
        group.bench_with_input(BenchmarkId::new("regex-baseline", name), path, |b, path| {
            b.iter(|| naive.classify(black_box(method), black_box(path)))
        });
    }
    group.bench_with_input(
        BenchmarkId::new("shield", "hostile-4k"),
        &hostile,
        |b, path| b.iter(|| table.classify(black_box(&Method::GET), black_box(path))),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
