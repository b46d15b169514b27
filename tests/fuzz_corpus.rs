//! The fuzz targets' bodies (`fuzz/bodies.rs`) over their committed corpus, on stable: every
//! seed and every input that once crashed a target stays a regression test.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use std::path::Path;

fn run_corpus(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        n += 1;
    }
    assert!(n >= 5, "{target}: only {n} seeds in {}", dir.display());
}

#[test]
fn classify_corpus() {
    run_corpus("classify", bodies::classify);
}

#[test]
fn client_ip_corpus() {
    run_corpus("client_ip", bodies::client_ip);
}

#[test]
fn config_corpus() {
    run_corpus("config", bodies::config);
}

#[test]
fn lists_corpus() {
    run_corpus("lists", bodies::lists);
}

#[test]
fn log_corpus() {
    run_corpus("log", bodies::log);
}

#[test]
fn request_head_corpus() {
    run_corpus("request_head", bodies::request_head);
}
