//! Crash-safe, append-only storage of the bans (and offence histories) that must survive a
//! restart: a change is on disk (written and `fsync`ed) before [`Store::commit`]'s future says
//! so, at the same cost with 10 or 1,000,000 bans on file.
//!
//! **Files**, beside the state file `<state>` (design notes: `docs/state.md`):
//! - `<state>`: the snapshot, one self-checking line per entry (`<crc32> <json>`), a header
//!   naming the first journal segment not folded in, an end line with the counts. The
//!   whole-file JSON of earlier builds (version 1) is read and migrated.
//! - `<state>.journal.<n>`: journal segments, one line per change (ban made or updated, lifted,
//!   expired; offence history set or forgotten), each with its checksum.
//! - `<state>.tmp` while compacting; `<state>.<tag>-<unix>-<n>` for files kept aside
//!   (`unreadable`, `damaged`, `v1`), never overwritten.
//!
//! **Writing**: one writer thread (never a tokio worker) takes every queued change, appends them
//! in one write, syncs once, then answers every waiter: a burst costs a handful of syncs. A
//! failed write or sync answers [`NotSaved`]; the change stays pending and is written on the next
//! round (the next change, every `retry_every`, or [`Store::retry`]), so space that returns needs
//! no restart. After a failure the segment is cut back to its last synced length (or, when that
//! or the sync failed, the next write starts a new segment), so no garbage is ever buried under
//! later records.
//!
//! **Compaction** runs on its own thread once the journal outgrows the snapshot: the writer only
//! closes its segment (the next write opens a new one); the compactor streams the old snapshot
//! and the closed segments into `<state>.tmp`, syncs, renames it over `<state>`, syncs the
//! folder, removes the folded segments. A crash between any two steps loses nothing acknowledged.
//!
//! **Recovery** at [`Store::open`]: snapshot, then the segments after it, in order. A torn last
//! record is ignored and cut away; a damaged record is skipped and reported (file, line, offset,
//! reason); an unreadable file is set aside under a new name; the store starts from the rest.
//!
//! This module is a leaf: it takes and returns its own plain types, and reads no clock (every
//! time is a parameter).

mod compact;
mod disk;
pub mod fault;
mod record;
mod recover;
mod writer;

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use disk::{Disk, DiskFile, Keep, OsDisk};
pub use record::{BanRecord, Change, OffenderRecord, Source, JOURNAL_VERSION, SNAPSHOT_VERSION};
pub use recover::{Damage, Problem, Recovered, RecoveryReport, Torn, Unreadable};

/// Tuning of a [`Store`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The journal is compacted once it holds at least this many bytes…
    pub compact_min_bytes: u64,
    /// …and at least as many as the snapshot, up to this many.
    pub compact_max_bytes: u64,
    /// How often pending changes are written again after a failure.
    pub retry_every: Duration,
    /// The most changes (one per network and kind) held for retry; past it a change is
    /// answered [`NotSaved`] and not retried (counted in [`Stats::dropped`]).
    pub max_pending: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compact_min_bytes: 4 << 20,
            compact_max_bytes: 64 << 20,
            retry_every: Duration::from_secs(1),
            max_pending: 1_000_000,
        }
    }
}

/// A change that is not (yet) on disk: the caller still enforces it from memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not saved: {reason}")]
pub struct NotSaved {
    /// Why, naming the file and the operation that failed.
    pub reason: String,
}

/// Which file of the store a write error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A journal segment.
    Journal,
    /// The snapshot (compaction).
    Snapshot,
}

impl FileKind {
    /// `journal` or `snapshot` (for a metric label).
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Journal => "journal",
            FileKind::Snapshot => "snapshot",
        }
    }
}

/// The last write error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError {
    /// Which kind of file.
    pub file: FileKind,
    /// The file.
    pub path: PathBuf,
    /// What failed (`write`, `sync`, `create`, `truncate`, `rename over`, …).
    pub op: &'static str,
    /// The system's message.
    pub reason: String,
    /// The latest time the store had been given when it happened (unix seconds).
    pub at: i64,
}

/// What the store has done, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Changes waiting to be written (after a failure).
    pub pending: usize,
    /// Failed writes to journal segments (each failed operation once).
    pub journal_write_errors: u64,
    /// Failed compactions (snapshot writes).
    pub snapshot_write_errors: u64,
    /// The last write error.
    pub last_error: Option<WriteError>,
    /// Successful syncs of the journal (group commits).
    pub syncs: u64,
    /// Records made durable.
    pub records: u64,
    /// Finished compactions.
    pub compactions: u64,
    /// Bytes in the journal segments since the snapshot.
    pub journal_bytes: u64,
    /// The snapshot's size.
    pub snapshot_bytes: u64,
    /// Journal segments since the snapshot.
    pub segments: usize,
    /// Damaged records skipped (at open and since).
    pub damaged: u64,
    /// Changes refused past [`Options::max_pending`].
    pub dropped: u64,
}

impl Stats {
    /// The write errors of one kind of file.
    pub fn write_errors(&self, file: FileKind) -> u64 {
        match file {
            FileKind::Journal => self.journal_write_errors,
            FileKind::Snapshot => self.snapshot_write_errors,
        }
    }
}

/// A finished compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// Bans in the new snapshot.
    pub bans: u64,
    /// Offence histories in it.
    pub offenders: u64,
    /// Its size.
    pub bytes: u64,
    /// Journal segments folded into it.
    pub segments: usize,
    /// Files kept under a new name (the old format, damaged files).
    pub kept: Vec<PathBuf>,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The state file path names no file.
    #[error("state file {0} names no file")]
    Path(PathBuf),
    /// A thread could not be started.
    #[error("cannot start the state writer: {0}")]
    Thread(io::Error),
}

/// The state folder is not writable.
#[derive(Debug, thiserror::Error)]
#[error("state folder {dir} is not writable: {reason}")]
pub struct NotWritable {
    /// The folder.
    pub dir: PathBuf,
    /// Why.
    pub reason: String,
}

/// What a dry-run recovery found: what open would read, skip and set aside.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Bans in force at the given time.
    pub bans: usize,
    /// Offence histories not yet forgotten.
    pub offenders: usize,
    /// Damaged and torn records, unreadable files, leftovers (nothing was changed).
    pub report: RecoveryReport,
}

type Done = oneshot::Sender<Result<(), NotSaved>>;
type CompactDone = oneshot::Sender<Result<Compaction, NotSaved>>;

pub(crate) enum Msg {
    Change { change: Change, at: i64, done: Done },
    Flush(Done),
    Retry,
    Compact(CompactDone),
    Compacted(Result<compact::Folded, compact::Failed>),
    Stop,
}

/// Resolves once a change is durable (`Ok`) or could not be made so ([`NotSaved`]).
#[must_use = "a commit says whether the change is on disk"]
pub struct Commit {
    rx: oneshot::Receiver<Result<(), NotSaved>>,
}

impl Future for Commit {
    type Output = Result<(), NotSaved>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

impl Commit {
    /// Blocks the calling thread until the answer (never call it on a tokio worker).
    pub fn wait(self) -> Result<(), NotSaved> {
        self.rx.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }
}

/// Resolves once a compaction finished or failed.
#[must_use = "a compaction says whether it finished"]
pub struct CompactionDone {
    rx: oneshot::Receiver<Result<Compaction, NotSaved>>,
}

impl Future for CompactionDone {
    type Output = Result<Compaction, NotSaved>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

impl CompactionDone {
    /// Blocks the calling thread until the answer (never call it on a tokio worker).
    pub fn wait(self) -> Result<Compaction, NotSaved> {
        self.rx.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> NotSaved {
    NotSaved {
        reason: "the state writer has stopped".to_owned(),
    }
}

/// Counters shared by the threads and read by [`Store::stats`].
#[derive(Default)]
pub(crate) struct Shared {
    pending: AtomicUsize,
    journal_errors: AtomicU64,
    snapshot_errors: AtomicU64,
    syncs: AtomicU64,
    records: AtomicU64,
    compactions: AtomicU64,
    journal_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    segments: AtomicUsize,
    damaged: AtomicU64,
    dropped: AtomicU64,
    unsaved_at_close: AtomicUsize,
    last_error: Mutex<Option<WriteError>>,
}

impl Shared {
    /// Counts a failed operation and keeps it as the last error; returns the reason to give.
    pub(crate) fn failed(
        &self,
        file: FileKind,
        path: &Path,
        op: &'static str,
        error: &io::Error,
        at: i64,
    ) -> String {
        match file {
            FileKind::Journal => self.journal_errors.fetch_add(1, Ordering::AcqRel),
            FileKind::Snapshot => self.snapshot_errors.fetch_add(1, Ordering::AcqRel),
        };
        let reason = format!("cannot {op} {}: {error}", path.display());
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(WriteError {
            file,
            path: path.to_owned(),
            op,
            reason: error.to_string(),
            at,
        });
        reason
    }

    pub(crate) fn last_error_text(&self) -> String {
        match &*self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(e) => format!("cannot {} {}: {}", e.op, e.path.display(), e.reason),
            None => "no write error yet".to_owned(),
        }
    }
}

/// Where the store's files are.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub snapshot: PathBuf,
    pub dir: PathBuf,
    pub name: OsString,
}

impl Paths {
    pub(crate) fn new(state_file: &Path) -> Option<Paths> {
        let name = state_file.file_name()?.to_owned();
        let dir = match state_file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Some(Paths {
            snapshot: state_file.to_owned(),
            dir,
            name,
        })
    }

    fn sibling(&self, suffix: &str) -> OsString {
        let mut n = self.name.clone();
        n.push(suffix);
        n
    }

    pub(crate) fn tmp_name(&self) -> OsString {
        self.sibling(".tmp")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.dir.join(self.tmp_name())
    }

    /// `<state>.journal.<n>`, the number zero-padded to 8 digits so a listing sorts.
    pub(crate) fn segment(&self, seq: u64) -> PathBuf {
        self.dir.join(self.sibling(&format!(".journal.{seq:08}")))
    }

    /// The number of a segment's file name.
    pub(crate) fn segment_seq(&self, file_name: &OsStr) -> Option<u64> {
        let name = file_name.to_str()?;
        let prefix = self.name.to_str()?;
        let digits = name.strip_prefix(prefix)?.strip_prefix(".journal.")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// The store: commit changes, read stats, close. `Send + Sync`; share it in an `Arc`.
pub struct Store {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    cancel: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    compactor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// Opens the store of `state_file` on the real file system at time `now` (unix seconds):
    /// recovers what is on disk, tidies up (torn tails, unreadable files set aside, leftovers)
    /// and starts the writer. Write problems at open do not stop it: they are in the report and
    /// the stats, and the writer keeps trying.
    pub fn open(
        state_file: &Path,
        options: Options,
        now: i64,
    ) -> Result<(Store, Recovered), OpenError> {
        Store::open_on(Arc::new(OsDisk), state_file, options, now)
    }

    /// [`Store::open`] on the given file operations (a [`fault::FaultDisk`] in tests).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        state_file: &Path,
        options: Options,
        now: i64,
    ) -> Result<(Store, Recovered), OpenError> {
        let paths = Paths::new(state_file).ok_or_else(|| OpenError::Path(state_file.to_owned()))?;
        let mut scan = recover::scan(&*disk, &paths);
        let failed = recover::apply(&*disk, &paths, &mut scan, now);
        let shared = Arc::new(Shared::default());
        shared
            .damaged
            .store(scan.report.damaged.len() as u64, Ordering::Release);
        // What open could not tidy (set aside, cut back, remove) counts as a write error; the
        // last such problem is the last error.
        let (journal, snapshot) = failed;
        shared.journal_errors.store(journal, Ordering::Release);
        shared.snapshot_errors.store(snapshot, Ordering::Release);
        if journal + snapshot > 0 {
            if let Some(p) = scan.report.problems.last() {
                let file = if p.file == paths.snapshot {
                    FileKind::Snapshot
                } else {
                    FileKind::Journal
                };
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(WriteError {
                    file,
                    path: p.file.clone(),
                    op: "tidy",
                    reason: p.reason.clone(),
                    at: now,
                });
            }
        }
        let (bans, offenders) = scan.take_recovered(now);
        let rewrite = matches!(scan.snapshot.format, recover::Format::V1)
            || scan.snapshot.damaged
            || scan.segments.iter().any(|s| s.damaged);
        let next_seq = scan
            .max_seq
            .max(scan.snapshot.journal.unwrap_or(1).saturating_sub(1))
            + 1;
        let (tx, rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let compactor = {
            let (disk, paths, back, cancel) =
                (disk.clone(), paths.clone(), tx.clone(), cancel.clone());
            std::thread::Builder::new()
                .name("state-compactor".into())
                .spawn(move || compact::run(disk, paths, jobs_rx, back, cancel))
                .map_err(OpenError::Thread)?
        };
        let writer = writer::Writer::new(
            disk,
            paths,
            options,
            shared.clone(),
            scan.segments,
            next_seq,
            scan.snapshot,
            now,
            rewrite,
            jobs_tx,
        );
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;
        let store = Store {
            tx,
            shared,
            cancel,
            writer: Some(writer),
            compactor: Some(compactor),
        };
        Ok((
            store,
            Recovered {
                bans,
                offenders,
                report: scan.report,
            },
        ))
    }

    /// Journals `change`, made at `now` (unix seconds). The answer resolves once the change is
    /// durable, or with [`NotSaved`] when it could not be written (it stays pending and is
    /// written later; the caller enforces it from memory meanwhile). Never blocks.
    pub fn commit(&self, change: Change, now: i64) -> Commit {
        let (done, rx) = oneshot::channel();
        // A send fails only once the writer is gone; the dropped sender answers "stopped".
        let _ = self.tx.send(Msg::Change {
            change,
            at: now,
            done,
        });
        Commit { rx }
    }

    /// Resolves once everything committed before it is durable, or with [`NotSaved`] while some
    /// of it is still pending.
    pub fn flush(&self) -> Commit {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Flush(done));
        Commit { rx }
    }

    /// Writes pending changes now (they are also retried every `retry_every` and before the
    /// next change).
    pub fn retry(&self) {
        let _ = self.tx.send(Msg::Retry);
    }

    /// Compacts now (after a running compaction, if any).
    pub fn compact(&self) -> CompactionDone {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Compact(done));
        CompactionDone { rx }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            pending: s.pending.load(Ordering::Acquire),
            journal_write_errors: s.journal_errors.load(Ordering::Acquire),
            snapshot_write_errors: s.snapshot_errors.load(Ordering::Acquire),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            syncs: s.syncs.load(Ordering::Acquire),
            records: s.records.load(Ordering::Acquire),
            compactions: s.compactions.load(Ordering::Acquire),
            journal_bytes: s.journal_bytes.load(Ordering::Acquire),
            snapshot_bytes: s.snapshot_bytes.load(Ordering::Acquire),
            segments: s.segments.load(Ordering::Acquire),
            damaged: s.damaged.load(Ordering::Acquire),
            dropped: s.dropped.load(Ordering::Acquire),
        }
    }

    /// Stops the threads after one last attempt to write what is queued; returns how many
    /// changes are still not on disk (their waiters were told). A running compaction is
    /// abandoned (safely: the old files stay whole). Blocks: call it off the async workers.
    pub fn close(mut self) -> usize {
        self.stop()
    }

    fn stop(&mut self) -> usize {
        let _ = self.tx.send(Msg::Stop);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // The writer dropped the job queue on its way out; a running job ends at its next check.
        self.cancel.store(true, Ordering::Release);
        if let Some(c) = self.compactor.take() {
            let _ = c.join();
        }
        self.shared.unsaved_at_close.load(Ordering::Acquire)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.stop();
        }
    }
}

/// Whether the folder of `state_file` takes new files: creates, syncs and removes a probe file
/// `<state>.probe-<pid>` there (for `check`).
pub fn check_writable(state_file: &Path) -> Result<(), NotWritable> {
    let paths = Paths::new(state_file).ok_or_else(|| NotWritable {
        dir: state_file.to_owned(),
        reason: "the state file path names no file".to_owned(),
    })?;
    let not = |reason: String| NotWritable {
        dir: paths.dir.clone(),
        reason,
    };
    match std::fs::metadata(&paths.dir) {
        Ok(m) if !m.is_dir() => return Err(not("it is not a folder".to_owned())),
        Ok(_) => {}
        Err(e) => return Err(not(format!("cannot reach it: {e}"))),
    }
    let probe = paths
        .dir
        .join(paths.sibling(&format!(".probe-{}", std::process::id())));
    let made = (|| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)?;
        f.write_all(b"probe\n")?;
        f.sync_all()
    })();
    let removed = std::fs::remove_file(&probe);
    made.map_err(|e| not(format!("cannot create a file there: {e}")))?;
    removed.map_err(|e| not(format!("cannot remove a file there: {e}")))
}

/// A dry-run recovery of `state_file` at `now`: what open would read, skip and set aside,
/// changing nothing (for `check`).
pub fn inspect(state_file: &Path, now: i64) -> Result<Inspection, OpenError> {
    inspect_on(&OsDisk, state_file, now)
}

/// [`inspect`] on the given file operations.
pub fn inspect_on(disk: &dyn Disk, state_file: &Path, now: i64) -> Result<Inspection, OpenError> {
    let paths = Paths::new(state_file).ok_or_else(|| OpenError::Path(state_file.to_owned()))?;
    let mut scan = recover::scan(disk, &paths);
    let (bans, offenders) = scan.take_recovered(now);
    let mut report = scan.report;
    report.dry_run = true;
    Ok(Inspection {
        bans: bans.len(),
        offenders: offenders.len(),
        report,
    })
}

#[cfg(test)]
mod tests;
