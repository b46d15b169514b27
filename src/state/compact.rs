//! Compaction, on its own thread: folds the closed journal segments into a new snapshot.
//!
//! It reads from disk, not from memory: the journal's last word on each key it touched, then
//! the old snapshot streamed line by line, each entry the journal did not touch copied as it is.
//! Its memory is that of the keys in the folded segments, whatever the number of bans on file.
//!
//! Steps, and what a crash after each leaves (recovery reads the snapshot, then every segment
//! numbered at or above the snapshot's `journal`):
//! 1. `<state>.tmp` written and synced: old snapshot and all segments intact; the leftover
//!    temporary file is removed at open.
//! 2. A copy of an old snapshot worth keeping (an older format, or one with damaged entries) is
//!    kept under a new name (a hard link when the file system has them).
//! 3. `<state>.tmp` renamed over `<state>`, folder synced: the new snapshot says
//!    `journal = N`; segments below N are stale and removed at open.
//! 4. The folded segments removed (one with damaged records is kept under a new name).

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use super::disk::{Disk, DiskFile, Keep, Writer};
use super::record::{self, End, Key, Lines, SnapshotHeader, Value, SNAPSHOT_VERSION};
use super::recover::{self, keep_aside, Format, SegmentState, SnapshotState};
use super::{Msg, Paths};

/// How often (in lines) a long compaction looks whether the store is closing.
const CANCEL_EVERY: u64 = 4096;

/// What to fold.
pub(crate) struct Job {
    pub folds: Vec<SegmentState>,
    pub snapshot: SnapshotState,
    /// The new snapshot's `journal`: every folded segment is numbered below it.
    pub journal: u64,
    /// The latest time the store has seen: what ended by then is left out.
    pub at: i64,
}

/// A finished compaction.
pub(crate) struct Folded {
    pub journal: u64,
    pub bytes: u64,
    pub bans: u64,
    pub offenders: u64,
    pub segments: usize,
    pub kept: Vec<PathBuf>,
    /// Records skipped because they failed their check (found since open).
    pub damaged: u64,
    /// Folded segments that could not be removed (they are stale, and removed at open).
    pub leftovers: Vec<(PathBuf, &'static str, io::Error)>,
}

/// A compaction that stopped; the old snapshot and every segment are as they were.
pub(crate) struct Failed {
    pub op: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
    pub damaged: u64,
}

pub(crate) fn run(
    disk: Arc<dyn Disk>,
    paths: Paths,
    jobs: Receiver<Job>,
    back: Sender<Msg>,
    cancel: Arc<AtomicBool>,
) {
    while let Ok(job) = jobs.recv() {
        let result = compact(&*disk, &paths, &job, &cancel);
        if back.send(Msg::Compacted(result)).is_err() {
            break;
        }
    }
}

fn failed(op: &'static str, path: &std::path::Path, error: io::Error) -> Failed {
    Failed {
        op,
        path: path.to_owned(),
        error,
        damaged: 0,
    }
}

pub(crate) fn compact(
    disk: &dyn Disk,
    paths: &Paths,
    job: &Job,
    cancel: &AtomicBool,
) -> Result<Folded, Failed> {
    // 1. The journal's last word on every key it touched.
    let mut touched: HashMap<Key, Value> = HashMap::new();
    let mut damaged = 0;
    for s in &job.folds {
        damaged += recover::replay_segment(disk, &s.path, |k, v| {
            touched.insert(k, v);
        })
        .map_err(|e| failed("read", &s.path, e))?;
    }

    // 2. The new snapshot, beside the old one.
    let tmp = paths.tmp();
    let mut file = disk.replace(&tmp).map_err(|e| failed("create", &tmp, e))?;
    let written = write_snapshot(disk, paths, job, &touched, &mut *file, cancel)
        .and_then(|w| file.sync().map(|()| w).map_err(|e| failed("sync", &tmp, e)));
    drop(file);
    let (bytes, end, old_damaged) = match written {
        Ok(w) => w,
        Err(mut f) => {
            let _ = disk.remove(&tmp);
            f.damaged += damaged;
            return Err(f);
        }
    };
    damaged += old_damaged;

    // 3. Keep what is worth keeping of the old one, then replace it.
    let mut kept = Vec::new();
    let tag = match job.snapshot.format {
        Format::V1 => Some("v1"),
        _ if job.snapshot.damaged || old_damaged > 0 => Some("damaged"),
        _ => None,
    };
    if let Some(tag) = tag {
        match keep_aside(disk, &paths.snapshot, tag, job.at, Keep::Copy) {
            Ok(p) => kept.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = disk.remove(&tmp);
                return Err(Failed {
                    op: "keep a copy of",
                    path: paths.snapshot.clone(),
                    error: e,
                    damaged,
                });
            }
        }
    }
    if let Err(e) = disk.rename(&tmp, &paths.snapshot) {
        let _ = disk.remove(&tmp);
        return Err(Failed {
            op: "rename over",
            path: paths.snapshot.clone(),
            error: e,
            damaged,
        });
    }
    let mut leftovers = Vec::new();
    if let Err(e) = disk.sync_dir(&paths.dir) {
        // The rename may not be durable: keep the folded segments (stale beside the new
        // snapshot, needed beside the old one); open removes them once they are stale.
        leftovers.push((paths.dir.clone(), "sync folder", e));
        return Ok(Folded {
            journal: job.journal,
            bytes,
            bans: end.bans,
            offenders: end.offenders,
            segments: job.folds.len(),
            kept,
            damaged,
            leftovers,
        });
    }

    // 4. The folded segments are no longer needed.
    for s in &job.folds {
        let done = if s.damaged {
            keep_aside(disk, &s.path, "damaged", job.at, Keep::Move).map(|p| kept.push(p))
        } else {
            disk.remove(&s.path)
        };
        match done {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => leftovers.push((s.path.clone(), "remove", e)),
        }
    }
    if let Err(e) = disk.sync_dir(&paths.dir) {
        leftovers.push((paths.dir.clone(), "sync folder", e));
    }
    Ok(Folded {
        journal: job.journal,
        bytes,
        bans: end.bans,
        offenders: end.offenders,
        segments: job.folds.len(),
        kept,
        damaged,
        leftovers,
    })
}

/// Writes the new snapshot into `file`: header, the old entries the journal did not touch (as
/// they are), the touched ones still in force, the end line. Returns its size, its counts and
/// how many damaged old entries were skipped.
fn write_snapshot(
    disk: &dyn Disk,
    paths: &Paths,
    job: &Job,
    touched: &HashMap<Key, Value>,
    file: &mut dyn DiskFile,
    cancel: &AtomicBool,
) -> Result<(u64, End, u64), Failed> {
    let tmp = paths.tmp();
    let mut out = BufWriter::with_capacity(1 << 20, Writer { file, written: 0 });
    let mut line = Vec::with_capacity(512);
    let encode = |e: serde_json::Error| failed("write", &tmp, io::Error::other(e));
    let mut end = End {
        bans: 0,
        offenders: 0,
    };
    let count = |end: &mut End, key: &Key| match key {
        Key::Ban(_) => end.bans += 1,
        Key::Offender(_) => end.offenders += 1,
    };
    record::header_line(
        &mut line,
        &SnapshotHeader {
            joinshield_state: SNAPSHOT_VERSION,
            journal: job.journal,
        },
    )
    .map_err(encode)?;
    out.write_all(&line).map_err(|e| failed("write", &tmp, e))?;

    let mut damaged = 0;
    let snapshot = &paths.snapshot;
    match disk.read(snapshot) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed("read", snapshot, e)),
        Ok(reader) => {
            let mut reader = BufReader::with_capacity(1 << 16, reader);
            let is_v1 = matches!(job.snapshot.format, Format::V1);
            if is_v1 {
                let mut bytes = Vec::new();
                reader
                    .read_to_end(&mut bytes)
                    .map_err(|e| failed("read", snapshot, e))?;
                let (values, bad) = recover::parse_v1(&bytes, snapshot).map_err(|reason| {
                    failed(
                        "read",
                        snapshot,
                        io::Error::new(io::ErrorKind::InvalidData, reason),
                    )
                })?;
                damaged += bad.len() as u64;
                for (key, value) in &values {
                    if touched.contains_key(key) || !value.live_at(job.at) {
                        continue;
                    }
                    line.clear();
                    record::snapshot_line(&mut line, value).map_err(encode)?;
                    out.write_all(&line).map_err(|e| failed("write", &tmp, e))?;
                    count(&mut end, key);
                }
            } else {
                let mut lines = Lines::new(reader);
                while let Some(raw) = lines.next_line().map_err(|e| failed("read", snapshot, e))? {
                    if raw.number % CANCEL_EVERY == 0 && cancel.load(Ordering::Acquire) {
                        return Err(failed(
                            "write",
                            &tmp,
                            io::Error::new(io::ErrorKind::Interrupted, "the store is closing"),
                        ));
                    }
                    if raw.number == 1 {
                        continue;
                    }
                    if !raw.terminated || raw.too_long {
                        damaged += 1;
                        continue;
                    }
                    let parsed = record::unframe(&raw.bytes)
                        .and_then(|json| record::parse_snapshot_key(json, job.at));
                    match parsed {
                        Ok(Some((key, live))) => {
                            if live && !touched.contains_key(&key) {
                                out.write_all(&raw.bytes)
                                    .and_then(|()| out.write_all(b"\n"))
                                    .map_err(|e| failed("write", &tmp, e))?;
                                count(&mut end, &key);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => damaged += 1,
                    }
                }
            }
        }
    }

    for (key, value) in touched {
        if !value.live_at(job.at) {
            continue;
        }
        line.clear();
        record::snapshot_line(&mut line, value).map_err(encode)?;
        out.write_all(&line).map_err(|e| failed("write", &tmp, e))?;
        count(&mut end, key);
    }
    line.clear();
    record::end_line(&mut line, end).map_err(encode)?;
    out.write_all(&line).map_err(|e| failed("write", &tmp, e))?;
    let writer = out
        .into_inner()
        .map_err(|e| failed("write", &tmp, e.into_error()))?;
    Ok((writer.written, end, damaged))
}
