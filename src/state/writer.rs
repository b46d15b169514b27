//! The writer thread: takes changes from the channel, appends every queued one to the current
//! journal segment, syncs once, and answers every waiter (group commit). A change that could
//! not be made durable stays pending and is written again on the next round: the next change,
//! a retry tick, or [`crate::state::Store::retry`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;

use super::compact::{Folded, Job};
use super::disk::{write_all, Disk, DiskFile, Keep};
use super::record::{self, Change, JournalHeader, Key, JOURNAL_VERSION};
use super::recover::{keep_aside, Format, SegmentState, SnapshotState};
use super::{CompactDone, Compaction, Done, FileKind, Msg, NotSaved, Options, Paths, Shared};

/// The most messages taken in one round before writing, so the first waiter of a long burst is
/// not kept waiting for the whole burst.
const MAX_ROUND: usize = 65_536;

/// Changes not yet durable, in order, at most one per key: a newer change of a key replaces the
/// older one (and takes over its waiters), so a long outage holds one record per network, not
/// one per change.
#[derive(Default)]
struct Pending {
    order: BTreeMap<u64, Entry>,
    by_key: HashMap<Key, u64>,
    next: u64,
}

struct Entry {
    line: Vec<u8>,
    waiters: Vec<Done>,
}

impl Pending {
    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Queues `line` for `key`; `Err` gives the waiter back when the queue is full.
    fn insert(&mut self, key: Key, line: Vec<u8>, waiter: Done, max: usize) -> Result<(), Done> {
        let mut waiters = Vec::with_capacity(1);
        if let Some(old) = self.by_key.remove(&key) {
            if let Some(e) = self.order.remove(&old) {
                waiters = e.waiters;
            }
        } else if self.order.len() >= max {
            return Err(waiter);
        }
        waiters.push(waiter);
        let n = self.next;
        self.next += 1;
        self.by_key.insert(key, n);
        self.order.insert(n, Entry { line, waiters });
        Ok(())
    }
}

/// The segment being appended to.
struct Current {
    file: Box<dyn DiskFile>,
    /// The length up to the last synced record: after a failure the file is cut back to it.
    len: u64,
    /// A sync failed, or cutting back did: the next write starts a new segment.
    poisoned: bool,
}

/// The writer's state; lives on its own thread.
pub(crate) struct Writer {
    pub disk: Arc<dyn Disk>,
    pub paths: Paths,
    pub opts: Options,
    pub shared: Arc<Shared>,
    /// Every segment since the snapshot, in order; the open one (if any) is the last.
    pub segments: Vec<SegmentState>,
    pub next_seq: u64,
    pub snapshot: SnapshotState,
    pub latest_at: i64,
    /// The snapshot must be rewritten soon (migrated from the older format, or damaged).
    pub rewrite: bool,
    pub jobs: Sender<Job>,
    current: Option<Current>,
    pending: Pending,
    compacting: bool,
    compact_waiters: Vec<CompactDone>,
    compact_queued: Vec<CompactDone>,
    /// Journal size past which an automatic compaction may start (raised after a failure, so a
    /// failing compaction is not retried on every write).
    auto_after: u64,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Round {
    flushes: Vec<Done>,
    compacts: Vec<CompactDone>,
    stop: bool,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        disk: Arc<dyn Disk>,
        paths: Paths,
        opts: Options,
        shared: Arc<Shared>,
        segments: Vec<SegmentState>,
        next_seq: u64,
        snapshot: SnapshotState,
        latest_at: i64,
        rewrite: bool,
        jobs: Sender<Job>,
    ) -> Writer {
        let w = Writer {
            disk,
            paths,
            opts,
            shared,
            segments,
            next_seq,
            snapshot,
            latest_at,
            rewrite,
            jobs,
            current: None,
            pending: Pending::default(),
            compacting: false,
            compact_waiters: Vec::new(),
            compact_queued: Vec::new(),
            auto_after: 0,
            buf: Vec::new(),
        };
        w.publish_sizes();
        w
    }

    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        // A snapshot to migrate or rewrite is compacted at once (in the background).
        self.maybe_compact();
        loop {
            let first = if self.pending.is_empty() {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(self.opts.retry_every) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut round = Round::default();
            if let Some(m) = first {
                self.take(m, &mut round);
            }
            let mut taken = 1;
            while taken < MAX_ROUND && !round.stop {
                match rx.try_recv() {
                    Ok(m) => self.take(m, &mut round),
                    Err(_) => break,
                }
                taken += 1;
            }
            let outcome = if self.pending.is_empty() {
                Ok(())
            } else {
                self.write_pending()
            };
            for f in round.flushes {
                let _ = f.send(outcome.clone());
            }
            self.compact_queued.extend(round.compacts);
            self.maybe_compact();
            if round.stop {
                break;
            }
        }
        // Whatever is still pending could not be written; its waiters already know.
        self.shared
            .unsaved_at_close
            .store(self.pending.len(), Ordering::Release);
        for w in self
            .compact_waiters
            .drain(..)
            .chain(self.compact_queued.drain(..))
        {
            let _ = w.send(Err(NotSaved {
                reason: "the store closed".to_owned(),
            }));
        }
    }

    fn take(&mut self, msg: Msg, round: &mut Round) {
        match msg {
            Msg::Change { change, at, done } => self.queue(change, at, done),
            Msg::Flush(done) => round.flushes.push(done),
            Msg::Retry => {}
            Msg::Compact(done) => round.compacts.push(done),
            Msg::Compacted(result) => self.finish_compaction(result),
            Msg::Stop => round.stop = true,
        }
    }

    fn queue(&mut self, change: Change, at: i64, done: Done) {
        self.latest_at = self.latest_at.max(at);
        let mut line = Vec::with_capacity(256);
        if let Err(e) = record::journal_line(&mut line, &change, at) {
            let _ = done.send(Err(NotSaved {
                reason: format!("cannot encode the change: {e}"),
            }));
            return;
        }
        if let Err(done) = self
            .pending
            .insert(change.key(), line, done, self.opts.max_pending)
        {
            self.shared.dropped.fetch_add(1, Ordering::AcqRel);
            let _ = done.send(Err(NotSaved {
                reason: format!(
                    "{} changes already wait to be written ({}); this one is not kept for retry",
                    self.pending.len(),
                    self.shared.last_error_text()
                ),
            }));
        }
        self.shared
            .pending
            .store(self.pending.len(), Ordering::Release);
    }

    /// One group commit: every pending record in one write, one sync, every waiter answered.
    fn write_pending(&mut self) -> Result<(), NotSaved> {
        if let Err(reason) = self.ensure_segment() {
            return self.fail_all(reason);
        }
        self.buf.clear();
        for e in self.pending.order.values() {
            self.buf.extend_from_slice(&e.line);
        }
        let Some(cur) = self.current.as_mut() else {
            return self.fail_all("no journal segment is open".to_owned());
        };
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let (written, res) = write_all(&mut *cur.file, &self.buf);
        let res = res
            .map_err(|e| ("write", e))
            .and_then(|()| cur.file.sync().map_err(|e| ("sync", e)));
        match res {
            Ok(()) => {
                cur.len += written as u64;
                let len = cur.len;
                if let Some(s) = self.segments.last_mut() {
                    s.len = len;
                }
                self.shared.syncs.fetch_add(1, Ordering::AcqRel);
                self.shared
                    .records
                    .fetch_add(self.pending.len() as u64, Ordering::AcqRel);
                let done = std::mem::take(&mut self.pending.order);
                self.pending.by_key.clear();
                // Counters first: a waiter that reads them after its answer sees them current.
                self.shared.pending.store(0, Ordering::Release);
                self.publish_sizes();
                for (_, e) in done {
                    for w in e.waiters {
                        let _ = w.send(Ok(()));
                    }
                }
                Ok(())
            }
            Err((op, e)) => {
                let reason = self
                    .shared
                    .failed(FileKind::Journal, &path, op, &e, self.latest_at);
                // Never leave part of a record where a later append would make it look like a
                // damaged one: cut back to the last synced length. After a failed sync the
                // file's cached pages cannot be trusted either: the next write starts afresh.
                if written > 0 || op == "sync" {
                    if let Err(e) = cur.file.set_len(cur.len) {
                        self.shared.failed(
                            FileKind::Journal,
                            &path,
                            "truncate",
                            &e,
                            self.latest_at,
                        );
                        cur.poisoned = true;
                    }
                }
                if op == "sync" {
                    cur.poisoned = true;
                }
                self.fail_all(reason)
            }
        }
    }

    /// Answers every waiter `NotSaved`; the records stay pending.
    fn fail_all(&mut self, reason: String) -> Result<(), NotSaved> {
        let err = NotSaved { reason };
        self.shared
            .pending
            .store(self.pending.len(), Ordering::Release);
        for e in self.pending.order.values_mut() {
            for w in e.waiters.drain(..) {
                let _ = w.send(Err(err.clone()));
            }
        }
        Err(err)
    }

    /// An open, healthy segment; a new one (header written and synced, folder synced) if need be.
    fn ensure_segment(&mut self) -> Result<(), String> {
        if self.current.as_ref().is_some_and(|c| !c.poisoned) {
            return Ok(());
        }
        self.current = None;
        let seq = self.next_seq;
        let path = self.paths.segment(seq);
        let mut file = match self.disk.create_new(&path) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.next_seq += 1;
                }
                return Err(self.shared.failed(
                    FileKind::Journal,
                    &path,
                    "create",
                    &e,
                    self.latest_at,
                ));
            }
        };
        let mut header = Vec::new();
        let made = record::header_line(
            &mut header,
            &JournalHeader {
                joinshield_journal: JOURNAL_VERSION,
                seq,
            },
        )
        .map_err(io::Error::other)
        .map_err(|e| ("write", e))
        .and_then(|()| write_all(&mut *file, &header).1.map_err(|e| ("write", e)))
        .and_then(|()| file.sync().map_err(|e| ("sync", e)))
        .and_then(|()| {
            self.disk
                .sync_dir(&self.paths.dir)
                .map_err(|e| ("sync folder of", e))
        });
        if let Err((op, e)) = made {
            drop(file);
            // A number whose file could not be removed is never used again.
            if self.disk.remove(&path).is_err() {
                self.next_seq += 1;
            }
            return Err(self
                .shared
                .failed(FileKind::Journal, &path, op, &e, self.latest_at));
        }
        self.next_seq += 1;
        let len = header.len() as u64;
        self.segments.push(SegmentState {
            seq,
            path,
            len,
            damaged: false,
        });
        self.current = Some(Current {
            file,
            len,
            poisoned: false,
        });
        self.publish_sizes();
        Ok(())
    }

    fn journal_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn publish_sizes(&self) {
        self.shared
            .journal_bytes
            .store(self.journal_bytes(), Ordering::Release);
        self.shared
            .snapshot_bytes
            .store(self.snapshot.bytes, Ordering::Release);
        self.shared
            .segments
            .store(self.segments.len(), Ordering::Release);
    }

    /// Starts a compaction when one was asked for, the snapshot needs rewriting, or the journal
    /// has outgrown its share: at least `compact_min_bytes`, and at least the snapshot's size up
    /// to `compact_max_bytes` (so each compaction's cost is paid for by as many journal bytes).
    fn maybe_compact(&mut self) {
        if self.compacting {
            return;
        }
        let journal = self.journal_bytes();
        let threshold = self.snapshot.bytes.clamp(
            self.opts.compact_min_bytes,
            self.opts.compact_max_bytes.max(self.opts.compact_min_bytes),
        );
        let due = (journal >= threshold && journal >= self.auto_after) || self.rewrite;
        if self.compact_queued.is_empty() && !due {
            return;
        }
        if self.snapshot.stuck {
            // An unreadable snapshot is never replaced: set it aside first.
            match keep_aside(
                &*self.disk,
                &self.paths.snapshot,
                "unreadable",
                self.latest_at,
                Keep::Move,
            ) {
                Ok(_) => {
                    self.snapshot.stuck = false;
                    self.snapshot.format = Format::Missing;
                }
                Err(e) => {
                    let reason = self.shared.failed(
                        FileKind::Snapshot,
                        &self.paths.snapshot,
                        "set aside",
                        &e,
                        self.latest_at,
                    );
                    self.refuse_compaction(reason, journal);
                    return;
                }
            }
        }
        // The open segment is closed: compaction folds it, the next write opens a new one.
        self.current = None;
        let job = Job {
            folds: self.segments.clone(),
            snapshot: self.snapshot.clone(),
            journal: self.next_seq,
            at: self.latest_at,
        };
        if self.jobs.send(job).is_err() {
            self.refuse_compaction("the compaction thread has stopped".to_owned(), journal);
            return;
        }
        self.compacting = true;
        self.rewrite = false;
        self.compact_waiters = std::mem::take(&mut self.compact_queued);
    }

    fn refuse_compaction(&mut self, reason: String, journal: u64) {
        self.auto_after = journal.saturating_add(self.opts.compact_min_bytes);
        for w in self.compact_queued.drain(..) {
            let _ = w.send(Err(NotSaved {
                reason: reason.clone(),
            }));
        }
    }

    fn finish_compaction(&mut self, result: Result<Folded, super::compact::Failed>) {
        self.compacting = false;
        let waiters = std::mem::take(&mut self.compact_waiters);
        match result {
            Ok(f) => {
                self.snapshot = SnapshotState {
                    format: Format::V2,
                    journal: Some(f.journal),
                    bytes: f.bytes,
                    damaged: false,
                    stuck: false,
                };
                self.segments.retain(|s| s.seq >= f.journal);
                self.auto_after = 0;
                self.shared.compactions.fetch_add(1, Ordering::AcqRel);
                self.shared.damaged.fetch_add(f.damaged, Ordering::AcqRel);
                for (path, op, e) in &f.leftovers {
                    self.shared
                        .failed(FileKind::Journal, path, op, e, self.latest_at);
                }
                self.publish_sizes();
                let report = Compaction {
                    bans: f.bans,
                    offenders: f.offenders,
                    bytes: f.bytes,
                    segments: f.segments,
                    kept: f.kept,
                };
                for w in waiters {
                    let _ = w.send(Ok(report.clone()));
                }
            }
            Err(failed) => {
                let reason = self.shared.failed(
                    FileKind::Snapshot,
                    &failed.path,
                    failed.op,
                    &failed.error,
                    self.latest_at,
                );
                self.shared
                    .damaged
                    .fetch_add(failed.damaged, Ordering::AcqRel);
                // The old snapshot and every segment are still there: nothing is lost; the
                // next automatic attempt waits for the journal to grow some more.
                self.auto_after = self
                    .journal_bytes()
                    .saturating_add(self.opts.compact_min_bytes);
                for w in waiters {
                    let _ = w.send(Err(NotSaved {
                        reason: reason.clone(),
                    }));
                }
            }
        }
        if !self.compact_queued.is_empty() {
            self.maybe_compact();
        }
    }
}
