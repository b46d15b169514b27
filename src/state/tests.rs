//! The store's tests: durability, group commit, failures, recovery, compaction crashes, check,
//! a real full tmpfs (where this machine can mount one), and the crash property.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use ipnet::IpNet;
use proptest::prelude::*;

use super::fault::{Errno, FaultDisk, Op};
use super::record::{self, Value};
use super::*;

const NOW: i64 = 1_795_802_400; // 2026-11-27T18:00:00Z
const HOUR: i64 = 3600;
/// A bound on waiting for a writer thread to reach a held operation (never a pass criterion).
const LIMIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ban(n: &str, reason: &str) -> BanRecord {
    BanRecord {
        net: net(n),
        until: NOW + HOUR,
        reason: reason.to_owned(),
        source: Source::Manual,
        offences: 0,
        distinct_tokens: None,
        created: NOW,
        origin: None,
    }
}

fn offender(n: &str, offences: u32) -> OffenderRecord {
    OffenderRecord {
        net: net(n),
        offences,
        forget_at: NOW + 24 * HOUR,
    }
}

/// No compaction unless asked for.
fn quiet() -> Options {
    Options {
        compact_min_bytes: u64::MAX / 2,
        compact_max_bytes: u64::MAX / 2,
        ..Options::default()
    }
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.json");
    (dir, path)
}

fn open(path: &Path) -> (Store, Recovered) {
    Store::open(path, quiet(), NOW).unwrap()
}

fn open_fault(path: &Path, disk: &FaultDisk, options: Options) -> (Store, Recovered) {
    Store::open_on(Arc::new(disk.clone()), path, options, NOW).unwrap()
}

fn bans(r: &Recovered) -> BTreeMap<IpNet, BanRecord> {
    r.bans.iter().map(|b| (b.net, b.clone())).collect()
}

fn offenders(r: &Recovered) -> BTreeMap<IpNet, OffenderRecord> {
    r.offenders.iter().map(|o| (o.net, *o)).collect()
}

fn expect(list: &[BanRecord]) -> BTreeMap<IpNet, BanRecord> {
    list.iter().map(|b| (b.net, b.clone())).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn segment(path: &Path, seq: u64) -> PathBuf {
    Paths::new(path).unwrap().segment(seq)
}

fn commit_ok(store: &Store, change: Change) {
    store.commit(change, NOW).wait().unwrap();
}

fn assert_clean(report: &RecoveryReport) {
    assert!(report.damaged.is_empty(), "{report:?}");
    assert!(report.torn.is_empty(), "{report:?}");
    assert!(report.unreadable.is_empty(), "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
}

/// Changes one byte of `file` inside the first occurrence of `needle`.
fn damage(file: &Path, needle: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in {}", file.display()));
    bytes[at + needle.len() - 1] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

fn line_offset(file: &Path, needle: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(file).unwrap();
    let at = text.find(needle).unwrap();
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() as u64 + 1;
    (start as u64, line)
}

// ---- durability and group commit ----

#[test]
fn committed_bans_lifts_and_offences_come_back_after_reopening() {
    let (_d, path) = state_dir();
    let (store, first) = open(&path);
    assert!(first.bans.is_empty() && first.offenders.is_empty());
    assert_clean(&first.report);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    commit_ok(&store, Change::Ban(ban("203.0.113.7/32", "b")));
    commit_ok(&store, Change::Offender(offender("203.0.113.7/32", 2)));
    commit_ok(&store, Change::Lift(net("203.0.113.7/32")));
    commit_ok(&store, Change::Ban(ban("2001:db8::/48", "c")));
    commit_ok(&store, Change::Expire(net("2001:db8::/48")));
    commit_ok(&store, Change::Offender(offender("192.0.2.1/32", 1)));
    commit_ok(&store, Change::Forget(net("192.0.2.1/32")));
    assert_eq!(store.stats().records, 8);
    assert_eq!(store.close(), 0);

    let (_store, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(bans(&again), expect(&[a]));
    assert_eq!(
        offenders(&again).into_values().collect::<Vec<_>>(),
        vec![offender("203.0.113.7/32", 2)]
    );
}

#[test]
fn a_commit_resolves_only_after_its_record_is_synced() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    disk.hold(Op::Sync, "journal");
    let mut commit = store.commit(Change::Ban(ban("198.51.100.0/24", "a")), NOW);
    assert!(disk.wait_held(LIMIT));
    assert!(
        (&mut commit).now_or_never().is_none(),
        "answered before the sync"
    );
    assert_eq!(store.stats().syncs, 0);
    disk.release();
    commit.wait().unwrap();
    assert_eq!(store.stats().syncs, 1);
}

#[test]
fn a_burst_of_ten_thousand_bans_costs_a_handful_of_syncs() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    // The first change's sync is held while the other 9,999 arrive, as they would while a
    // real sync takes its milliseconds.
    disk.hold(Op::Sync, "journal");
    let mut commits = vec![store.commit(Change::Ban(ban("10.0.0.0/32", "burst")), NOW)];
    assert!(disk.wait_held(LIMIT));
    for n in 1..10_000u32 {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + n);
        let b = ban(&format!("{addr}/32"), "burst");
        commits.push(store.commit(Change::Ban(b), NOW));
    }
    disk.release();
    for c in commits {
        c.wait().unwrap();
    }
    let syncs = disk.count(Op::Sync, "journal");
    assert!(syncs <= 4, "{syncs} syncs for 10,000 bans");
    assert_eq!(store.stats().records, 10_000);
    store.close();
    let (_s, again) = open(&path);
    assert_eq!(again.bans.len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_awaited_from_async_tasks_without_blocking_them() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    shared(&store);
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..200u32)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let b = ban(
                    &format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + n)),
                    "t",
                );
                store.commit(Change::Ban(b), NOW).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.stats().records, 200);
    let store = Arc::try_unwrap(store).unwrap();
    let unsaved = tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
    assert_eq!(unsaved, 0);
    let (_s, got) = open(&path);
    assert_eq!(got.bans.len(), 200);
}

// ---- failures ----

#[test]
fn a_full_disk_answers_not_saved_and_the_ban_is_written_once_space_returns() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));

    disk.set_full(true);
    let b = ban("203.0.113.7/32", "b");
    let err = store
        .commit(Change::Ban(b.clone()), NOW)
        .wait()
        .unwrap_err();
    assert!(err.reason.contains("no space left"), "{err}");
    assert!(err.reason.contains("bans.json.journal.00000001"), "{err}");
    let stats = store.stats();
    assert_eq!(stats.pending, 1);
    assert_eq!(stats.write_errors(FileKind::Journal), 1);
    let last = stats.last_error.unwrap();
    assert_eq!((last.file, last.op), (FileKind::Journal, "write"));
    assert!(
        store.flush().wait().is_err(),
        "flush says something is pending"
    );

    disk.set_full(false);
    store.retry();
    store.flush().wait().unwrap();
    assert_eq!(store.stats().pending, 0);
    store.close();

    let (_s, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(bans(&again), expect(&[a, b]));
}

#[test]
fn the_next_commit_writes_what_is_pending_first() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    disk.set_full(true);
    let a = ban("198.51.100.0/24", "a");
    assert!(store.commit(Change::Ban(a.clone()), NOW).wait().is_err());
    disk.set_full(false);
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    assert_eq!(store.stats().pending, 0);
    store.close();
    let (_s, again) = open(&path);
    assert_eq!(bans(&again), expect(&[a, b]));
}

#[test]
fn pending_changes_are_retried_without_any_new_call() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let options = Options {
        retry_every: Duration::from_millis(5),
        ..quiet()
    };
    let (store, _) = open_fault(&path, &disk, options);
    commit_ok(&store, Change::Ban(ban("192.0.2.0/24", "first")));
    disk.set_full(true);
    assert!(store
        .commit(Change::Ban(ban("198.51.100.0/24", "a")), NOW)
        .wait()
        .is_err());
    // The writer syncs again on its own once a write gets through.
    disk.hold(Op::Sync, "journal");
    disk.set_full(false);
    assert!(disk.wait_held(LIMIT), "no retry came");
    disk.release();
    store.flush().wait().unwrap();
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn a_short_write_leaves_no_partial_record_for_a_later_append_to_bury() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    disk.short_write("journal", 20);
    let b = ban("203.0.113.7/32", "b");
    assert!(store.commit(Change::Ban(b.clone()), NOW).wait().is_err());
    let c = ban("192.0.2.0/24", "c");
    commit_ok(&store, Change::Ban(c.clone()));
    assert_eq!(
        store.stats().segments,
        1,
        "the segment was cut back, not left"
    );
    store.close();
    let (_s, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(bans(&again), expect(&[a, b, c]));
}

#[test]
fn a_failed_sync_starts_a_new_segment_and_loses_nothing() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    disk.fail(Op::Sync, "journal", Errno::Io, 1);
    let b = ban("203.0.113.7/32", "b");
    let err = store
        .commit(Change::Ban(b.clone()), NOW)
        .wait()
        .unwrap_err();
    assert!(err.reason.contains("cannot sync"), "{err}");
    let c = ban("192.0.2.0/24", "c");
    commit_ok(&store, Change::Ban(c.clone()));
    assert_eq!(store.stats().segments, 2);
    assert!(segment(&path, 2).exists());
    store.close();
    let (_s, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(bans(&again), expect(&[a, b, c]));
}

#[test]
fn when_cutting_back_fails_too_the_torn_tail_stays_last_in_a_closed_segment() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    disk.short_write("journal", 10);
    disk.fail(Op::Truncate, "journal", Errno::Io, 1);
    let b = ban("203.0.113.7/32", "b");
    assert!(store.commit(Change::Ban(b.clone()), NOW).wait().is_err());
    let c = ban("192.0.2.0/24", "c");
    commit_ok(&store, Change::Ban(c.clone()));
    assert_eq!(store.stats().write_errors(FileKind::Journal), 2);
    store.close();
    let (_s, again) = open(&path);
    assert!(again.report.damaged.is_empty(), "{:?}", again.report);
    assert_eq!(again.report.torn.len(), 1);
    assert_eq!(again.report.torn[0].file, segment(&path, 1));
    assert_eq!(again.report.torn[0].bytes, 10);
    assert_eq!(bans(&again), expect(&[a, b, c]));
}

#[test]
fn pending_changes_of_one_network_are_kept_once() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    disk.set_full(true);
    let last = ban("198.51.100.0/24", "second");
    let b = ban("203.0.113.7/32", "b");
    for change in [
        Change::Ban(ban("198.51.100.0/24", "first")),
        Change::Lift(net("198.51.100.0/24")),
        Change::Ban(last.clone()),
        Change::Ban(b.clone()),
    ] {
        assert!(store.commit(change, NOW).wait().is_err());
    }
    assert_eq!(store.stats().pending, 2);
    disk.set_full(false);
    store.flush().wait().unwrap();
    store.close();
    let (_s, again) = open(&path);
    assert_eq!(bans(&again), expect(&[last, b]));
}

#[test]
fn past_max_pending_a_change_is_refused_for_retry_and_counted() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let options = Options {
        max_pending: 2,
        ..quiet()
    };
    let (store, _) = open_fault(&path, &disk, options);
    disk.set_full(true);
    let a = ban("198.51.100.0/24", "a");
    let b = ban("203.0.113.7/32", "b");
    assert!(store.commit(Change::Ban(a.clone()), NOW).wait().is_err());
    assert!(store.commit(Change::Ban(b.clone()), NOW).wait().is_err());
    let err = store
        .commit(Change::Ban(ban("192.0.2.0/24", "c")), NOW)
        .wait()
        .unwrap_err();
    assert!(err.reason.contains("not kept for retry"), "{err}");
    assert_eq!((store.stats().pending, store.stats().dropped), (2, 1));
    disk.set_full(false);
    store.flush().wait().unwrap();
    store.close();
    let (_s, again) = open(&path);
    assert_eq!(bans(&again), expect(&[a, b]));
}

#[test]
fn write_errors_are_counted_by_file() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    commit_ok(&store, Change::Ban(ban("198.51.100.0/24", "a")));
    disk.fail(Op::Create, "tmp", Errno::NoSpace, 1);
    let err = store.compact().wait().unwrap_err();
    assert!(err.reason.contains("bans.json.tmp"), "{err}");
    let stats = store.stats();
    assert_eq!(stats.write_errors(FileKind::Snapshot), 1);
    assert_eq!(stats.write_errors(FileKind::Journal), 0);
    assert_eq!(stats.last_error.unwrap().file, FileKind::Snapshot);
    assert_eq!(stats.compactions, 0);
}

// ---- recovery ----

#[test]
fn a_torn_last_record_is_ignored_and_cut_away() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    store.close();
    let seg = segment(&path, 1);
    let good = std::fs::metadata(&seg).unwrap().len();
    let mut line = Vec::new();
    record::journal_line(&mut line, &Change::Ban(ban("203.0.113.7/32", "torn")), NOW).unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&line[..line.len() / 2]);
    std::fs::write(&seg, &bytes).unwrap();

    let (_s, again) = open(&path);
    assert!(again.report.damaged.is_empty());
    assert_eq!(
        again.report.torn,
        vec![Torn {
            file: seg.clone(),
            offset: good,
            bytes: (line.len() / 2) as u64,
        }]
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good, "cut away");
    assert_eq!(bans(&again), expect(&[a]));
}

#[test]
fn a_damaged_record_is_skipped_and_reported_with_file_line_and_offset_and_the_rest_kept() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "reason-A");
    let c = ban("192.0.2.0/24", "reason-C");
    commit_ok(&store, Change::Ban(a.clone()));
    commit_ok(&store, Change::Ban(ban("203.0.113.7/32", "reason-B")));
    commit_ok(&store, Change::Ban(c.clone()));
    store.close();
    let seg = segment(&path, 1);
    let (offset, line) = line_offset(&seg, "reason-B");
    damage(&seg, "reason-B");

    let (store, again) = open(&path);
    assert_eq!(bans(&again), expect(&[a.clone(), c.clone()]));
    assert_eq!(again.report.damaged.len(), 1);
    let d = &again.report.damaged[0];
    assert_eq!(
        (d.file.clone(), d.line, d.offset),
        (seg.clone(), line, offset)
    );
    assert_eq!(line, 3, "header, A, then B");
    assert!(d.reason.contains("checksum"), "{}", d.reason);
    assert_eq!(store.stats().damaged, 1);

    // Open folds a damaged journal at once, keeping the segment aside; the store goes on.
    let dd = ban("2001:db8::/48", "reason-D");
    commit_ok(&store, Change::Ban(dd.clone()));
    store.compact().wait().unwrap();
    store.close();
    let kept = seg.with_file_name(format!("bans.json.journal.00000001.damaged-{NOW}-0"));
    assert!(kept.exists(), "{:?}", files(seg.parent().unwrap()));
    let (_s, last) = open(&path);
    assert_clean(&last.report);
    assert_eq!(bans(&last), expect(&[a, c, dd]));
}

#[test]
fn a_damaged_snapshot_entry_is_skipped_and_a_copy_kept_before_the_snapshot_is_rewritten() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "reason-A");
    commit_ok(&store, Change::Ban(a.clone()));
    commit_ok(&store, Change::Ban(ban("203.0.113.7/32", "reason-B")));
    store.compact().wait().unwrap();
    store.close();
    let (_, line) = line_offset(&path, "reason-B");
    damage(&path, "reason-B");
    let damaged_bytes = std::fs::read(&path).unwrap();

    let (store, again) = open(&path);
    assert_eq!(bans(&again), expect(std::slice::from_ref(&a)));
    assert_eq!(again.report.damaged.len(), 1, "{:?}", again.report);
    assert_eq!(
        (
            again.report.damaged[0].file.clone(),
            again.report.damaged[0].line
        ),
        (path.clone(), line)
    );
    // Open rewrites a damaged snapshot at once; the explicit one runs after it.
    store.compact().wait().unwrap();
    store.close();
    let kept: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("bans.json.damaged-"))
        .collect();
    assert_eq!(kept, vec![format!("bans.json.damaged-{NOW}-0")]);
    assert_eq!(
        std::fs::read(dir.path().join(&kept[0])).unwrap(),
        damaged_bytes
    );
    let (_s, last) = open(&path);
    assert_clean(&last.report);
    assert_eq!(bans(&last), expect(&[a]));
}

#[test]
fn a_damaged_snapshot_header_keeps_the_entries_and_replays_every_segment() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    store.compact().wait().unwrap();
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    store.close();
    damage(&path, "joinshield_state");
    let (_s, got) = open(&path);
    assert_eq!(bans(&got), expect(&[a, b]));
    assert_eq!(got.report.damaged.len(), 1);
    assert_eq!(got.report.damaged[0].line, 1);
    assert!(got.report.damaged[0].reason.contains("snapshot header"));
    assert!(got.report.unreadable.is_empty());
}

#[test]
fn an_unreadable_snapshot_is_set_aside_under_a_new_name_every_time_and_the_journal_replayed() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    store.close();

    let mut future_header = Vec::new();
    record::header_line(
        &mut future_header,
        &serde_json::json!({"joinshield_state": 3, "journal": 1}),
    )
    .unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x00garbage".to_vec(), "not a joinshield state file"),
        (Vec::new(), "empty"),
        (b"{\"version\":7,\"bans\":[]}".to_vec(), "version 7"),
        (future_header, "format version 3"),
        (
            b"{\"version\":1,\"bans\":[{\"net\":\"19".to_vec(),
            "not valid JSON",
        ),
    ];
    for (n, (bytes, why)) in cases.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let (store, got) = open(&path);
        assert_eq!(got.report.unreadable.len(), 1, "{why}: {:?}", got.report);
        let u = &got.report.unreadable[0];
        assert!(u.reason.contains(why), "{why}: {}", u.reason);
        let kept = dir.path().join(format!("bans.json.unreadable-{NOW}-{n}"));
        assert_eq!(u.kept_as.as_deref(), Some(kept.as_path()));
        assert_eq!(
            bans(&got),
            expect(std::slice::from_ref(&a)),
            "the journal still counts"
        );
        store.close();
    }
    // Every kept file is still there, as it was.
    for (n, (bytes, _)) in cases.iter().enumerate() {
        let kept = dir.path().join(format!("bans.json.unreadable-{NOW}-{n}"));
        assert_eq!(&std::fs::read(kept).unwrap(), bytes);
    }
}

#[test]
fn an_unreadable_snapshot_that_cannot_be_set_aside_is_never_replaced() {
    let (dir, path) = state_dir();
    std::fs::write(&path, b"\x00evidence").unwrap();
    let disk = FaultDisk::new();
    disk.fail(Op::Keep, "bans.json", Errno::Denied, 2);
    let (store, got) = open_fault(&path, &disk, quiet());
    assert_eq!(got.report.unreadable.len(), 1);
    assert_eq!(got.report.unreadable[0].kept_as, None);
    assert!(
        got.report.problems[0]
            .reason
            .contains("cannot set the unreadable file aside"),
        "{:?}",
        got.report.problems
    );
    assert_eq!(store.stats().write_errors(FileKind::Snapshot), 1);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    // Compaction first tries again to set it aside, and refuses to go on when it cannot.
    let err = store.compact().wait().unwrap_err();
    assert!(err.reason.contains("cannot set aside"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"\x00evidence");
    store.compact().wait().unwrap();
    let kept = dir.path().join(format!("bans.json.unreadable-{NOW}-0"));
    assert_eq!(std::fs::read(kept).unwrap(), b"\x00evidence");
    store.close();
    let (_s, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(bans(&again), expect(&[a]));
}

#[test]
fn todays_state_file_is_read_migrated_and_kept_for_a_rollback() {
    let (dir, path) = state_dir();
    // The file earlier builds write (pretty JSON), with an ended ban and one broken entry.
    let v1 = format!(
        r#"{{
  "version": 1,
  "bans": [
    {{
      "net": "203.0.113.9/32",
      "until": {ended},
      "reason": "short",
      "source": "manual",
      "offences": 0,
      "distinct_tokens": null,
      "created": {created}
    }},
    {{
      "net": "203.0.113.7/32",
      "until": {until},
      "reason": "join token guessing (client)",
      "source": "automatic",
      "offences": 2,
      "distinct_tokens": 20,
      "created": {created},
      "origin": "shield-a"
    }},
    {{
      "net": "not a net",
      "until": {until}
    }},
    {{
      "net": "198.51.100.0/24",
      "until": {until},
      "reason": "SEV-2 \"scraping\"",
      "source": "manual",
      "offences": 0,
      "distinct_tokens": null,
      "created": {created}
    }}
  ],
  "offenders": [
    {{
      "net": "203.0.113.7/32",
      "offences": 2,
      "forget_at": {forget}
    }}
  ]
}}
"#,
        ended = NOW - 1,
        until = NOW + HOUR,
        created = NOW - HOUR,
        forget = NOW + 25 * HOUR,
    );
    std::fs::write(&path, &v1).unwrap();
    let auto = BanRecord {
        net: net("203.0.113.7/32"),
        until: NOW + HOUR,
        reason: "join token guessing (client)".into(),
        source: Source::Automatic,
        offences: 2,
        distinct_tokens: Some(20),
        created: NOW - HOUR,
        origin: Some("shield-a".into()),
    };
    let manual = BanRecord {
        net: net("198.51.100.0/24"),
        reason: "SEV-2 \"scraping\"".into(),
        created: NOW - HOUR,
        ..ban("198.51.100.0/24", "")
    };
    let offence = OffenderRecord {
        net: net("203.0.113.7/32"),
        offences: 2,
        forget_at: NOW + 25 * HOUR,
    };

    let (store, got) = open(&path);
    assert_eq!(got.report.migrated_from, Some(1));
    assert_eq!(bans(&got), expect(&[auto.clone(), manual.clone()]));
    assert_eq!(got.offenders, vec![offence]);
    assert_eq!(got.report.damaged.len(), 1);
    let (_, line) = line_offset(&path, "\"not a net\"");
    let d = &got.report.damaged[0];
    assert_eq!(
        (d.file.clone(), d.line),
        (path.clone(), line - 1),
        "the entry's opening brace"
    );
    assert!(d.reason.starts_with("bans[2]"), "{}", d.reason);

    // Migrated at once, in the background; the old file is kept for a rollback.
    let c = ban("192.0.2.0/24", "c");
    commit_ok(&store, Change::Ban(c.clone()));
    store.compact().wait().unwrap();
    store.close();
    let kept = dir.path().join(format!("bans.json.v1-{NOW}-0"));
    assert_eq!(std::fs::read_to_string(kept).unwrap(), v1);
    assert!(!std::fs::read_to_string(&path).unwrap().starts_with('{'));

    let (_s, again) = open(&path);
    assert_clean(&again.report);
    assert_eq!(again.report.migrated_from, None);
    assert_eq!(bans(&again), expect(&[auto, manual, c]));
    assert_eq!(again.offenders, vec![offence]);
}

#[test]
fn bans_that_ended_before_opening_are_left_out() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    let short = BanRecord {
        until: NOW + 10,
        ..ban("198.51.100.0/24", "short")
    };
    let long = ban("203.0.113.7/32", "long");
    commit_ok(&store, Change::Ban(short));
    commit_ok(&store, Change::Ban(long.clone()));
    store.close();
    let (_s, later) = Store::open(&path, quiet(), NOW + 100).unwrap();
    assert_eq!(bans(&later), expect(&[long]));
}

#[test]
fn leftovers_of_a_compaction_and_of_a_cut_short_segment_are_removed_at_open() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    store.compact().wait().unwrap();
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    store.close();
    // A compaction that died before its rename; a folded segment that was not yet removed;
    // a segment whose header was being written.
    std::fs::write(dir.path().join("bans.json.tmp"), b"0000 partial").unwrap();
    let mut stale = Vec::new();
    record::header_line(
        &mut stale,
        &record::JournalHeader {
            joinshield_journal: JOURNAL_VERSION,
            seq: 1,
        },
    )
    .unwrap();
    record::journal_line(&mut stale, &Change::Lift(a.net), NOW).unwrap();
    std::fs::write(segment(&path, 1), &stale).unwrap();
    std::fs::write(segment(&path, 3), &stale[..5]).unwrap();

    let (store, got) = open(&path);
    assert_clean(&got.report);
    assert_eq!(
        bans(&got),
        expect(&[a.clone(), b.clone()]),
        "the stale lift is not replayed"
    );
    let mut removed = got.report.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            dir.path().join("bans.json.journal.00000001"),
            dir.path().join("bans.json.journal.00000003"),
            dir.path().join("bans.json.tmp"),
        ]
    );
    assert_eq!(
        files(dir.path()),
        vec!["bans.json", "bans.json.journal.00000002"]
    );
    // The number of the cut-short segment is used again.
    commit_ok(&store, Change::Ban(ban("192.0.2.0/24", "c")));
    assert!(segment(&path, 3).exists());
}

#[test]
fn an_unreadable_segment_is_set_aside_and_the_others_replayed() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    store.close();
    std::fs::write(segment(&path, 2), b"something else entirely\n").unwrap();
    let (store, got) = open(&path);
    assert_eq!(bans(&got), expect(&[a]));
    assert_eq!(got.report.unreadable.len(), 1);
    assert_eq!(
        got.report.unreadable[0].kept_as,
        Some(
            dir.path()
                .join(format!("bans.json.journal.00000002.unreadable-{NOW}-0"))
        )
    );
    commit_ok(&store, Change::Ban(ban("192.0.2.0/24", "c")));
    assert!(
        segment(&path, 3).exists(),
        "the set-aside number is not used again"
    );
}

#[test]
fn a_lost_snapshot_before_later_segments_is_reported() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    commit_ok(&store, Change::Ban(ban("198.51.100.0/24", "a")));
    store.compact().wait().unwrap();
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    store.close();
    std::fs::remove_file(&path).unwrap();
    let (_s, got) = open(&path);
    assert_eq!(bans(&got), expect(&[b]));
    assert_eq!(got.report.problems.len(), 1, "{:?}", got.report);
    assert!(
        got.report.problems[0].reason.contains("no snapshot"),
        "{:?}",
        got.report.problems
    );
}

// ---- compaction ----

#[test]
fn compaction_folds_the_journal_into_the_snapshot() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    commit_ok(&store, Change::Ban(ban("198.51.100.0/24", "a")));
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    commit_ok(&store, Change::Lift(net("198.51.100.0/24")));
    commit_ok(&store, Change::Offender(offender("203.0.113.7/32", 1)));
    let done = store.compact().wait().unwrap();
    assert_eq!((done.bans, done.offenders, done.segments), (1, 1, 1));
    assert_eq!(files(dir.path()), vec!["bans.json"]);
    let stats = store.stats();
    assert_eq!(
        (stats.compactions, stats.segments, stats.journal_bytes),
        (1, 0, 0)
    );
    assert_eq!(
        stats.snapshot_bytes,
        std::fs::metadata(&path).unwrap().len()
    );
    let c = ban("192.0.2.0/24", "c");
    commit_ok(&store, Change::Ban(c.clone()));
    assert!(segment(&path, 2).exists());
    store.close();
    let (_s, got) = open(&path);
    assert_clean(&got.report);
    assert_eq!(bans(&got), expect(&[b, c]));
    assert_eq!(got.offenders, vec![offender("203.0.113.7/32", 1)]);
}

#[test]
fn compaction_starts_by_itself_and_never_holds_up_commits() {
    let (_d, path) = state_dir();
    let disk = FaultDisk::new();
    let options = Options {
        compact_min_bytes: 2048,
        compact_max_bytes: 2048,
        ..quiet()
    };
    let (store, _) = open_fault(&path, &disk, options);
    disk.hold(Op::Sync, "tmp");
    let mut expected = Vec::new();
    let mut n = 0u32;
    while store.stats().journal_bytes < 2048 {
        let b = ban(
            &format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + n)),
            "x",
        );
        commit_ok(&store, Change::Ban(b.clone()));
        expected.push(b);
        n += 1;
    }
    assert!(disk.wait_held(LIMIT), "no compaction started");
    // The compaction is stuck in its sync: commits go on.
    for _ in 0..100 {
        let b = ban(
            &format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + n)),
            "y",
        );
        commit_ok(&store, Change::Ban(b.clone()));
        expected.push(b);
        n += 1;
    }
    assert_eq!(store.stats().compactions, 0);
    disk.release();
    store.compact().wait().unwrap();
    assert_eq!(store.stats().compactions, 2);
    store.close();
    let (_s, got) = open(&path);
    assert_clean(&got.report);
    assert_eq!(bans(&got), expect(&expected));
}

#[test]
fn a_failed_compaction_leaves_the_old_files_whole() {
    let (dir, path) = state_dir();
    let disk = FaultDisk::new();
    let (store, _) = open_fault(&path, &disk, quiet());
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    disk.fail(Op::Rename, "tmp", Errno::Io, 1);
    assert!(store.compact().wait().is_err());
    assert_eq!(store.stats().write_errors(FileKind::Snapshot), 1);
    assert_eq!(files(dir.path()), vec!["bans.json.journal.00000001"]);
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    store.compact().wait().unwrap();
    store.close();
    let (_s, got) = open(&path);
    assert_clean(&got.report);
    assert_eq!(bans(&got), expect(&[a, b]));
}

#[test]
fn compaction_leaves_out_ended_bans_and_forgotten_offences() {
    let (_d, path) = state_dir();
    let (store, _) = open(&path);
    let ending = BanRecord {
        until: NOW + 10,
        ..ban("198.51.100.0/24", "short")
    };
    commit_ok(&store, Change::Ban(ending));
    commit_ok(
        &store,
        Change::Offender(OffenderRecord {
            forget_at: NOW + 10,
            ..offender("198.51.100.0/24", 1)
        }),
    );
    let b = ban("203.0.113.7/32", "b");
    commit_ok(&store, Change::Ban(b.clone()));
    // The latest time the store was given is what compaction goes by.
    let later = ban("192.0.2.0/24", "c");
    store
        .commit(Change::Ban(later.clone()), NOW + 100)
        .wait()
        .unwrap();
    let done = store.compact().wait().unwrap();
    assert_eq!((done.bans, done.offenders), (2, 0));
    store.close();
    let (_s, got) = open(&path);
    assert_eq!(bans(&got), expect(&[b, later]));
}

/// Builds an on-disk state with `setup`, then for every k crashes the disk after k operations
/// of opening and compacting it, and checks that reopening finds exactly `want`.
fn crash_at_every_step(setup: impl Fn(&Path), want: &[BanRecord]) {
    let steps = {
        let (_d, path) = state_dir();
        setup(&path);
        let disk = FaultDisk::new();
        let (store, _) = open_fault(&path, &disk, quiet());
        store.compact().wait().unwrap();
        store.close();
        disk.log().len() as u64
    };
    assert!(
        steps >= 5,
        "a compaction is at least create, write, sync, rename, sync folder"
    );
    for k in 0..steps {
        let (dir, path) = state_dir();
        setup(&path);
        let disk = FaultDisk::new();
        disk.crash_after_ops(k);
        let (store, _) = open_fault(&path, &disk, quiet());
        let _ = store.compact().wait();
        store.close();
        assert!(disk.crashed(), "step {k} of {steps}");
        let (store, got) = open(&path);
        assert_eq!(bans(&got), expect(want), "crash after step {k} of {steps}");
        assert!(
            got.report.unreadable.is_empty() && got.report.problems.is_empty(),
            "step {k}: {:?}",
            got.report
        );
        // And the next compaction from there is whole too.
        store.compact().wait().unwrap();
        store.close();
        let (_s, last) = open(&path);
        assert_eq!(bans(&last), expect(want), "after step {k}, compacted again");
        assert!(!dir.path().join("bans.json.tmp").exists());
    }
}

#[test]
fn a_crash_at_every_step_of_compaction_loses_nothing_acknowledged() {
    let a = ban("198.51.100.0/24", "a");
    let b = ban("203.0.113.7/32", "b");
    let c = ban("2001:db8::/48", "c");
    // Journal only, in two segments.
    crash_at_every_step(
        |path| {
            let (s, _) = open(path);
            commit_ok(&s, Change::Ban(a.clone()));
            commit_ok(&s, Change::Ban(ban("192.0.2.0/24", "lifted")));
            s.close();
            let (s, _) = open(path);
            commit_ok(&s, Change::Ban(b.clone()));
            commit_ok(&s, Change::Lift(net("192.0.2.0/24")));
            s.close();
        },
        &[a.clone(), b.clone()],
    );
    // A snapshot and a journal after it.
    crash_at_every_step(
        |path| {
            let (s, _) = open(path);
            commit_ok(&s, Change::Ban(a.clone()));
            commit_ok(&s, Change::Ban(ban("192.0.2.0/24", "lifted")));
            s.compact().wait().unwrap();
            commit_ok(&s, Change::Ban(b.clone()));
            commit_ok(&s, Change::Lift(net("192.0.2.0/24")));
            s.close();
        },
        &[a.clone(), b.clone()],
    );
    // Today's file, migrated (its copy kept for a rollback is a step too).
    let v1 = serde_json::json!({
        "version": 1,
        "bans": [serde_json::to_value(&a).unwrap()],
        "offenders": [],
    });
    crash_at_every_step(
        |path| {
            std::fs::write(path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
            // A journal beside it, written by hand: opening a store here would migrate it.
            let mut seg = Vec::new();
            record::header_line(
                &mut seg,
                &record::JournalHeader {
                    joinshield_journal: JOURNAL_VERSION,
                    seq: 1,
                },
            )
            .unwrap();
            record::journal_line(&mut seg, &Change::Ban(c.clone()), NOW).unwrap();
            std::fs::write(segment(path, 1), seg).unwrap();
        },
        &[a.clone(), c.clone()],
    );
    // A segment with a damaged record (kept aside when folded).
    crash_at_every_step(
        |path| {
            let (s, _) = open(path);
            commit_ok(&s, Change::Ban(a.clone()));
            commit_ok(&s, Change::Ban(ban("192.0.2.0/24", "reason-X")));
            commit_ok(&s, Change::Ban(b.clone()));
            s.close();
            damage(&segment(path, 1), "reason-X");
        },
        &[a.clone(), b.clone()],
    );
}

// ---- check ----

#[test]
fn check_writable_takes_a_writable_folder_and_leaves_nothing_behind() {
    let (dir, path) = state_dir();
    check_writable(&path).unwrap();
    assert!(files(dir.path()).is_empty());
    let err = check_writable(&dir.path().join("missing").join("bans.json")).unwrap_err();
    assert!(err.reason.contains("cannot reach"), "{err}");
    std::fs::write(dir.path().join("plain"), b"").unwrap();
    let err = check_writable(&dir.path().join("plain").join("bans.json")).unwrap_err();
    assert!(err.reason.contains("not a folder"), "{err}");
}

#[test]
fn inspect_reports_what_open_would_do_and_changes_nothing() {
    let (dir, path) = state_dir();
    let (store, _) = open(&path);
    commit_ok(&store, Change::Ban(ban("198.51.100.0/24", "reason-A")));
    commit_ok(&store, Change::Ban(ban("203.0.113.7/32", "reason-B")));
    commit_ok(&store, Change::Ban(ban("192.0.2.0/24", "reason-C")));
    store.close();
    let seg = segment(&path, 1);
    damage(&seg, "reason-B");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"0123abcd {\"at\":1");
    std::fs::write(&seg, bytes).unwrap();
    std::fs::write(segment(&path, 2), b"not a segment\n").unwrap();
    std::fs::write(dir.path().join("bans.json.tmp"), b"x").unwrap();
    let before: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.path().join(&n)).unwrap();
            (n, b)
        })
        .collect();

    let seen = inspect(&path, NOW).unwrap();
    assert!(seen.report.dry_run);
    assert_eq!((seen.bans, seen.offenders), (2, 0));
    assert_eq!(seen.report.damaged.len(), 1);
    assert_eq!(seen.report.damaged[0].line, 3);
    assert_eq!(seen.report.torn.len(), 1);
    assert_eq!(seen.report.unreadable.len(), 1);
    assert_eq!(seen.report.unreadable[0].kept_as, None);
    assert_eq!(seen.report.removed, vec![dir.path().join("bans.json.tmp")]);

    let after: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.path().join(&n)).unwrap();
            (n, b)
        })
        .collect();
    assert_eq!(before, after);
}

// ---- a real, small file system ----

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and a SKIPPED line) where this machine does not let the test mount one.
    fn mount(options: &str, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn on_a_full_256k_tmpfs_bans_are_not_saved_until_space_returns() {
    let Some(fs) = Tmpfs::mount("size=256k", "full tmpfs") else {
        return;
    };
    let path = fs.path().join("bans.json");
    let (store, _) = open(&path);
    let a = ban("198.51.100.0/24", "a");
    commit_ok(&store, Change::Ban(a.clone()));
    // Fill the file system to the last byte.
    let filler = fs.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(b"x");
        let _ = f.sync_all();
    }
    // A burst that needs new pages (a write into the file's last page could still fit). Its
    // first record alone is longer than a page: the writer may take the burst in several
    // batches, and every batch carries the still-pending first record, so none fits.
    let burst: Vec<BanRecord> = (0..64u32)
        .map(|n| {
            let reason = if n == 0 {
                "x".repeat(5000)
            } else {
                "burst".to_owned()
            };
            ban(
                &format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + n)),
                &reason,
            )
        })
        .collect();
    let commits: Vec<Commit> = burst
        .iter()
        .map(|b| store.commit(Change::Ban(b.clone()), NOW))
        .collect();
    for c in commits {
        let err = c.wait().unwrap_err();
        assert!(err.reason.contains("No space left"), "{err}");
    }
    assert_eq!(store.stats().pending, burst.len());
    assert!(store.stats().write_errors(FileKind::Journal) >= 1);

    std::fs::remove_file(&filler).unwrap();
    store.retry();
    store.flush().wait().unwrap();
    assert_eq!(store.stats().pending, 0);
    store.close();
    let (_s, got) = open(&path);
    assert_clean(&got.report);
    let mut want = burst;
    want.push(a);
    assert_eq!(bans(&got), expect(&want));
}

#[test]
fn check_writable_refuses_a_read_only_file_system() {
    let Some(fs) = Tmpfs::mount("size=64k,ro", "read-only tmpfs") else {
        return;
    };
    let err = check_writable(&fs.path().join("bans.json")).unwrap_err();
    assert!(err.reason.contains("cannot create"), "{err}");
}

// ---- the crash property ----

/// One change of a small pool of keys, so changes of one key meet often.
fn change_strategy() -> impl Strategy<Value = Change> {
    let nets = [
        "198.51.100.0/24",
        "203.0.113.7/32",
        "2001:db8::/48",
        "192.0.2.1/32",
    ];
    (0..nets.len(), 0..5u8, 0..1000u32).prop_map(move |(i, kind, v)| {
        let n = net(nets[i]);
        match kind {
            0 | 1 => Change::Ban(BanRecord {
                net: n,
                until: NOW + HOUR + i64::from(v),
                reason: format!("r{v}"),
                ..ban(nets[i], "")
            }),
            2 => Change::Lift(n),
            3 => Change::Offender(OffenderRecord {
                net: n,
                offences: v,
                forget_at: NOW + HOUR,
            }),
            _ => Change::Forget(n),
        }
    })
}

fn value_of(r: &Recovered) -> HashMap<record::Key, Value> {
    let mut m = HashMap::new();
    for b in &r.bans {
        m.insert(record::Key::Ban(b.net), Value::Ban(b.clone()));
    }
    for o in &r.offenders {
        m.insert(record::Key::Offender(o.net), Value::Offender(*o));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any changes, group-committed in bursts, with compactions along the way, and the disk
    /// gone after any byte: each key recovers as its last acknowledged change left it, or as a
    /// later change (submitted, never acknowledged) did. Without a crash, exactly as committed.
    #[test]
    fn a_crash_at_any_byte_keeps_every_acknowledged_change(
        changes in prop::collection::vec(change_strategy(), 1..40),
        bursts in prop::collection::vec(1..6usize, 40),
        crash_at in prop::option::weighted(0.85, 0..12_000u64),
    ) {
        let (_d, path) = state_dir();
        let disk = FaultDisk::new();
        let options = Options { compact_min_bytes: 700, compact_max_bytes: 1500, ..quiet() };
        let (store, _) = open_fault(&path, &disk, options);
        if let Some(x) = crash_at {
            disk.crash_after_bytes(x);
        }
        let mut acked = vec![false; changes.len()];
        let mut i = 0;
        for burst in bursts {
            if i >= changes.len() {
                break;
            }
            let end = (i + burst).min(changes.len());
            let commits: Vec<_> = changes[i..end].iter().map(|c| store.commit(c.clone(), NOW)).collect();
            for (j, c) in commits.into_iter().enumerate() {
                acked[i + j] = c.wait().is_ok();
            }
            i = end;
        }
        while i < changes.len() {
            acked[i] = store.commit(changes[i].clone(), NOW).wait().is_ok();
            i += 1;
        }
        let crashed = disk.crashed();
        store.close();

        let (_s, got) = open(&path);
        prop_assert!(got.report.damaged.is_empty(), "{:?}", got.report);
        prop_assert!(got.report.unreadable.is_empty(), "{:?}", got.report);
        let recovered = value_of(&got);
        let keys: std::collections::HashSet<record::Key> = changes.iter().map(|c| c.key()).collect();
        for key in keys {
            let of_key: Vec<(usize, Value)> = changes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.key() == key)
                .map(|(n, c)| (n, c.clone().into_value()))
                .collect();
            let last_ok = of_key.iter().rposition(|(n, _)| acked[*n]);
            let mut allowed: Vec<Value> = match last_ok {
                Some(p) => of_key[p..].iter().map(|(_, v)| v.clone()).collect(),
                None => std::iter::once(Value::Gone).chain(of_key.iter().map(|(_, v)| v.clone())).collect(),
            };
            if !crashed {
                prop_assert!(acked.iter().all(|a| *a), "every change acknowledged without a crash");
                allowed = vec![of_key.last().map(|(_, v)| v.clone()).unwrap_or(Value::Gone)];
            }
            let have = recovered.get(&key).cloned().unwrap_or(Value::Gone);
            prop_assert!(allowed.contains(&have), "key {:?}: have {:?}, allowed {:?}", key, have, allowed);
        }
        for key in recovered.keys() {
            prop_assert!(changes.iter().any(|c| c.key() == *key), "{:?} from nowhere", key);
        }
    }
}
