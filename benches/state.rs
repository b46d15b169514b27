//! Question: what does making one ban durable cost with 10 bans on file and with 1,000,000
//! (goal: within 2×), what does a burst of 10,000 bans cost in syncs, and what do compaction and
//! recovery of 1,000,000 bans cost in time and memory?
//! Baseline: the whole-file rewrite of earlier builds: every ban on file as pretty JSON written
//! to `<file>.tmp`, synced, renamed over the file, folder synced (what each change cost then).
//!
//! The files go to a temporary folder (`STATE_BENCH_DIR` chooses its parent: put it on the
//! disk the shield will use; a tmpfs makes every sync free). Memory figures are printed, read
//! from `/proc/self/status` (Linux) in fresh child processes of this binary.

// A benchmark times itself: the clock rule of the shield (read time through `clock`) is not its.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use joinshield::state::{BanRecord, Change, Options, Source, Store};

const NOW: i64 = 1_795_802_400;
const LARGE: u32 = 1_000_000;

fn ban(n: u32) -> BanRecord {
    BanRecord {
        net: ipnet::IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + n), 32).unwrap()),
        until: NOW + 24 * 3600,
        reason: "join token guessing (client)".into(),
        source: Source::Automatic,
        offences: 1,
        distinct_tokens: Some(20),
        created: NOW,
        origin: None,
    }
}

fn scratch() -> tempfile::TempDir {
    match std::env::var_os("STATE_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// VmRSS and VmHWM (peak) in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak so the next VmHWM is the peak of what follows (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A store with `n` bans on file, compacted into the snapshot, with the default options.
fn filled(path: &Path, n: u32) -> Store {
    let (store, _) = Store::open(path, Options::default(), NOW).unwrap();
    let mut next = 0;
    while next < n {
        let end = (next + 10_000).min(n);
        let commits: Vec<_> = (next..end)
            .map(|i| store.commit(Change::Ban(ban(i)), NOW))
            .collect();
        for c in commits {
            c.wait().unwrap();
        }
        next = end;
    }
    store.compact().wait().unwrap();
    store
}

fn commit_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_commit_one_ban");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(10));
    for n in [10, LARGE] {
        let dir = scratch();
        let path = dir.path().join("bans.json");
        let store = filled(&path, n);
        let next = AtomicU32::new(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                store.commit(Change::Ban(ban(i)), NOW).wait().unwrap();
            })
        });
        eprintln!("{n} bans on file: {:?} after the benchmark", store.stats());
        store.close();
    }
    group.finish();
}

/// The baseline: each change rewrote the whole file.
fn rewrite_whole_file(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_rewrite_whole_file_baseline");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for n in [10, LARGE] {
        let dir = scratch();
        let path = dir.path().join("bans.json");
        let bans: Vec<BanRecord> = (0..n).map(ban).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| rewrite(&path, &bans))
        });
    }
    group.finish();
}

fn rewrite(path: &Path, bans: &[BanRecord]) {
    let state = serde_json::json!({ "version": 1, "bans": bans, "offenders": [] });
    let bytes = serde_json::to_vec_pretty(&state).unwrap();
    let tmp: PathBuf = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(&bytes).unwrap();
    f.write_all(b"\n").unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
    std::fs::File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

/// 10,000 bans at once: how long until all are durable, and how many syncs.
fn burst(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_burst_of_10000_bans");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let dir = scratch();
    let path = dir.path().join("bans.json");
    let (store, _) = Store::open(&path, Options::default(), NOW).unwrap();
    let next = AtomicU32::new(0);
    let mut syncs = Vec::new();
    group.bench_function("all_durable", |b| {
        b.iter(|| {
            let before = store.stats().syncs;
            let start = next.fetch_add(10_000, Ordering::Relaxed);
            let commits: Vec<_> = (start..start + 10_000)
                .map(|i| store.commit(Change::Ban(ban(i % LARGE)), NOW))
                .collect();
            for c in commits {
                c.wait().unwrap();
            }
            syncs.push(store.stats().syncs - before);
        })
    });
    syncs.sort_unstable();
    eprintln!(
        "burst of 10,000: syncs per burst min {} median {} max {}",
        syncs.first().unwrap_or(&0),
        syncs.get(syncs.len() / 2).unwrap_or(&0),
        syncs.last().unwrap_or(&0)
    );
    store.close();
    group.finish();
}

/// Compaction and recovery of 1,000,000 bans, timed; their memory is measured in fresh
/// processes (see [`probe`]), where nothing earlier has grown the heap.
fn large(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_1000000_bans");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let dir = scratch();
    let path = dir.path().join("bans.json");
    let store = filled(&path, LARGE);
    let next = AtomicU32::new(LARGE);
    group.bench_function("compact", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // A change to fold, then the whole snapshot rewritten.
                let i = next.fetch_add(1, Ordering::Relaxed);
                store.commit(Change::Ban(ban(i)), NOW).wait().unwrap();
                let t = Instant::now();
                black_box(store.compact().wait().unwrap());
                spent += t.elapsed();
            }
            spent
        })
    });
    store.close();
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let (store, got) = Store::open(&path, Options::default(), NOW).unwrap();
                spent += t.elapsed();
                assert!(got.bans.len() >= LARGE as usize);
                drop(got);
                store.close();
            }
            spent
        })
    });
    group.finish();
    for probe in ["open", "compact"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env(PROBE, probe)
            .env(PROBE_FILE, &path)
            .output()
            .unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

const PROBE: &str = "STATE_BENCH_PROBE";
const PROBE_FILE: &str = "STATE_BENCH_PROBE_FILE";

/// In a fresh process: the memory of recovering the state file (`open`), or of compacting its
/// snapshot in a store that never loaded it (`compact`: a store opened on an empty folder, one
/// change journalled, the large snapshot put in place, then compacted: compaction streams the
/// snapshot from disk, so this is its own cost).
fn probe(kind: &str, file: &Path) {
    let (rss, _) = memory();
    match kind {
        "open" => {
            reset_peak();
            let t = Instant::now();
            let (store, got) = Store::open(file, Options::default(), NOW).unwrap();
            let spent = t.elapsed();
            let (held, peak) = memory();
            println!(
                "open of {} bans in a fresh process: {spent:.2?}; RSS {rss:.0} MiB before, {held:.0} MiB after (holding them), peak {peak:.0} MiB",
                got.bans.len()
            );
            store.close();
        }
        _ => {
            let dir = tempfile::tempdir_in(file.parent().unwrap().parent().unwrap()).unwrap();
            let path = dir.path().join("bans.json");
            let (store, _) = Store::open(&path, Options::default(), NOW).unwrap();
            store
                .commit(Change::Ban(ban(LARGE + 1)), NOW)
                .wait()
                .unwrap();
            std::fs::copy(file, &path).unwrap();
            let (before, _) = memory();
            reset_peak();
            let t = Instant::now();
            let done = store.compact().wait().unwrap();
            let spent = t.elapsed();
            let (_, peak) = memory();
            println!(
                "compaction of a {} MiB snapshot ({} bans) in a fresh process: {spent:.2?}; RSS {before:.0} MiB before, peak {peak:.0} MiB",
                done.bytes >> 20,
                done.bans
            );
            store.close();
        }
    }
}

criterion_group!(benches, commit_one, burst, rewrite_whole_file, large);

fn main() {
    if let (Ok(kind), Some(file)) = (std::env::var(PROBE), std::env::var_os(PROBE_FILE)) {
        probe(&kind, Path::new(&file));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
