//! Start-up recovery: read the snapshot (this format, or the whole-file JSON of earlier builds),
//! replay the journal segments after it, and say what was found. Reading never changes a file;
//! [`apply`] then does what open must (set unreadable files aside, cut torn tails away, remove
//! leftovers), and [`crate::state::inspect`] reports the same without doing it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::disk::{Disk, Keep};
use super::record::{
    self, BanRecord, JournalHeader, Key, Lines, OffenderRecord, SnapshotEntry, SnapshotHeader,
    Value, JOURNAL_VERSION, SNAPSHOT_VERSION,
};
use super::Paths;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records skipped because they failed their check (every other record was kept).
    pub damaged: Vec<Damage>,
    /// Torn last records (a write cut short by a crash): nothing acknowledged is in one.
    pub torn: Vec<Torn>,
    /// Files that could not be read at all, set aside under a new name.
    pub unreadable: Vec<Unreadable>,
    /// Leftovers removed: a temporary snapshot, segments already folded into the snapshot,
    /// segments whose creation was cut short.
    pub removed: Vec<PathBuf>,
    /// The snapshot's format version when it was older than this build's (it is migrated).
    pub migrated_from: Option<u32>,
    /// What recovery found missing or could not do.
    pub problems: Vec<Problem>,
    /// Nothing was changed on disk (a check); `kept_as` and `removed` say what open would do.
    pub dry_run: bool,
}

/// A skipped record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// Its line (from 1).
    pub line: u64,
    /// Its byte offset.
    pub offset: u64,
    /// Why it was skipped.
    pub reason: String,
}

/// A torn last record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// The file.
    pub file: PathBuf,
    /// Where the torn record starts (the file's new length).
    pub offset: u64,
    /// How many bytes it had.
    pub bytes: u64,
}

/// A file that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub reason: String,
    /// Its new name (`None` in a dry run, or when it could not be moved: see `problems`).
    pub kept_as: Option<PathBuf>,
}

/// Something recovery found missing or could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or folder).
    pub file: PathBuf,
    /// What.
    pub reason: String,
}

/// The state read back at open, and the report.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The bans in force at the time given to open, in no particular order.
    pub bans: Vec<BanRecord>,
    /// The offence histories not yet forgotten at that time.
    pub offenders: Vec<OffenderRecord>,
    /// What was found and done.
    pub report: RecoveryReport,
}

/// The kind of snapshot found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Missing,
    /// The whole-file JSON of earlier builds.
    V1,
    V2,
    /// Could not be read; `stuck` when it could not be set aside either.
    Unreadable,
}

/// The snapshot as recovery left it, for the writer and compaction.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotState {
    pub format: Format,
    /// Segments numbered below this are folded in (`None`: unknown, replay all).
    pub journal: Option<u64>,
    pub bytes: u64,
    /// Has damaged entries: a copy is kept aside before it is replaced.
    pub damaged: bool,
    /// An unreadable snapshot still under its name: it must not be replaced.
    pub stuck: bool,
}

/// A replayed journal segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    pub seq: u64,
    pub path: PathBuf,
    /// Its length up to the last good record.
    pub len: u64,
    /// Has damaged records: kept aside rather than removed once folded.
    pub damaged: bool,
}

enum Action {
    SetAside { path: PathBuf, snapshot: bool },
    Truncate { path: PathBuf, len: u64 },
    Remove(PathBuf),
}

/// The recovered state: the records in vectors, a key's place in a map. Holding whole records
/// in a hash map would cost three times their size at a million bans (the table's slack and
/// its doubling); this costs the records plus a small index.
#[derive(Default)]
pub(crate) struct Table {
    index: HashMap<Key, usize>,
    bans: Vec<Option<BanRecord>>,
    offenders: Vec<Option<OffenderRecord>>,
}

impl Table {
    /// Sets a key's value (a later change of a key replaces the earlier).
    pub(crate) fn set(&mut self, key: Key, value: Value) {
        match (self.index.get(&key).copied(), value) {
            (Some(i), Value::Ban(b)) => self.bans[i] = Some(b),
            (Some(i), Value::Offender(o)) => self.offenders[i] = Some(o),
            (Some(i), Value::Gone) => match key {
                Key::Ban(_) => self.bans[i] = None,
                Key::Offender(_) => self.offenders[i] = None,
            },
            (None, Value::Ban(b)) => {
                self.index.insert(key, self.bans.len());
                self.bans.push(Some(b));
            }
            (None, Value::Offender(o)) => {
                self.index.insert(key, self.offenders.len());
                self.offenders.push(Some(o));
            }
            (None, Value::Gone) => {}
        }
    }
}

/// What a scan found.
pub(crate) struct Scan {
    pub values: Table,
    pub snapshot: SnapshotState,
    pub segments: Vec<SegmentState>,
    /// The highest number of any file named like a segment (the next segment is above it).
    pub max_seq: u64,
    pub report: RecoveryReport,
    actions: Vec<Action>,
}

impl Scan {
    /// Takes the live values at `now` out of the scan, as the caller's types.
    pub(crate) fn take_recovered(&mut self, now: i64) -> (Vec<BanRecord>, Vec<OffenderRecord>) {
        let Table {
            index,
            bans,
            offenders,
        } = std::mem::take(&mut self.values);
        drop(index);
        // `filter_map` over `into_iter` collects in place: no second vector of a million.
        let bans = bans
            .into_iter()
            .filter_map(|b| b.filter(|b| b.until > now))
            .collect();
        let offenders = offenders
            .into_iter()
            .filter_map(|o| o.filter(|o| o.forget_at > now))
            .collect();
        (bans, offenders)
    }
}

/// Reads everything; changes nothing.
pub(crate) fn scan(disk: &dyn Disk, paths: &Paths) -> Scan {
    let mut report = RecoveryReport::default();
    let mut actions = Vec::new();
    let mut values = Table::default();

    let names = match disk.list(&paths.dir) {
        Ok(n) => n,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                report.problems.push(Problem {
                    file: paths.dir.clone(),
                    reason: format!("cannot list the state folder: {e}"),
                });
            }
            Vec::new()
        }
    };

    let snapshot = read_snapshot(disk, paths, &mut values, &mut report, &mut actions);

    let mut seqs: Vec<u64> = names.iter().filter_map(|n| paths.segment_seq(n)).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut max_seq = 0;
    let mut segments = Vec::new();
    for seq in seqs {
        let path = paths.segment(seq);
        let stale = snapshot.journal.is_some_and(|s| seq < s);
        match read_segment(
            disk,
            &path,
            seq,
            stale,
            &mut values,
            &mut report,
            &mut actions,
        ) {
            Segment::Replayed(s) => {
                max_seq = seq;
                segments.push(s);
            }
            Segment::Skipped => max_seq = seq,
            Segment::Empty => {}
        }
    }
    // Segments are numbered without gaps (a number whose creation failed is used again), so a
    // gap means a lost file.
    let mut want = match snapshot.format {
        Format::Missing => Some(1),
        Format::V2 => snapshot.journal,
        Format::V1 | Format::Unreadable => None,
    };
    for s in &segments {
        if let Some(w) = want.filter(|&w| s.seq > w) {
            let reason = if snapshot.format == Format::Missing && w == 1 {
                format!(
                    "there is no snapshot and the journal starts at segment {}: bans of segments {w} to {} are lost",
                    s.seq,
                    s.seq - 1
                )
            } else {
                format!("journal segments {w} to {} are missing", s.seq - 1)
            };
            report.problems.push(Problem {
                file: s.path.clone(),
                reason,
            });
        }
        want = Some(s.seq + 1);
    }

    if names.iter().any(|n| *n == paths.tmp_name()) {
        actions.push(Action::Remove(paths.tmp()));
        report.removed.push(paths.tmp());
    }

    Scan {
        values,
        snapshot,
        segments,
        max_seq,
        report,
        actions,
    }
}

/// Does what open must after a scan: sets unreadable files aside (never replacing an earlier
/// kept file), cuts torn tails away, removes leftovers. Failures become problems; returns how
/// many operations failed on journal segments and on the snapshot (or its temporary file).
pub(crate) fn apply(disk: &dyn Disk, paths: &Paths, scan: &mut Scan, now: i64) -> (u64, u64) {
    let mut failed = (0, 0);
    let mut count = |path: &Path| {
        if *path == paths.snapshot || *path == paths.tmp() {
            failed.1 += 1;
        } else {
            failed.0 += 1;
        }
    };
    let mut changed = false;
    for action in std::mem::take(&mut scan.actions) {
        match action {
            Action::SetAside { path, snapshot } => {
                match keep_aside(disk, &path, "unreadable", now, Keep::Move) {
                    Ok(kept) => {
                        changed = true;
                        if let Some(u) = scan.report.unreadable.iter_mut().find(|u| u.file == path)
                        {
                            u.kept_as = Some(kept);
                        }
                    }
                    Err(e) => {
                        count(&path);
                        if snapshot {
                            scan.snapshot.stuck = true;
                        }
                        scan.report.problems.push(Problem {
                            file: path,
                            reason: format!(
                                "cannot set the unreadable file aside: {e}; it is left in place and never overwritten"
                            ),
                        });
                    }
                }
            }
            Action::Truncate { path, len } => {
                let cut = disk
                    .open_append(&path)
                    .and_then(|mut f| f.set_len(len).and_then(|()| f.sync()));
                if let Err(e) = cut {
                    count(&path);
                    scan.report.problems.push(Problem {
                        file: path,
                        reason: format!("cannot cut the torn record away: {e} (it is ignored)"),
                    });
                }
            }
            Action::Remove(path) => match disk.remove(&path) {
                Ok(()) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    count(&path);
                    scan.report.removed.retain(|p| *p != path);
                    scan.report.problems.push(Problem {
                        file: path,
                        reason: format!("cannot remove the leftover: {e}"),
                    });
                }
            },
        }
    }
    if changed {
        if let Err(e) = disk.sync_dir(&paths.dir) {
            count(&paths.dir);
            scan.report.problems.push(Problem {
                file: paths.dir.clone(),
                reason: format!("cannot sync the state folder: {e}"),
            });
        }
    }
    failed
}

/// Gives `path` the first free name `<path>.<tag>-<now>-<n>`; an earlier kept file is never
/// replaced.
pub(crate) fn keep_aside(
    disk: &dyn Disk,
    path: &Path,
    tag: &str,
    now: i64,
    how: Keep,
) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{tag}-{now}-{n}"));
        let to = PathBuf::from(name);
        match disk.keep(path, &to, how) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "10,000 kept files of this name and time already",
    ))
}

fn read_snapshot(
    disk: &dyn Disk,
    paths: &Paths,
    values: &mut Table,
    report: &mut RecoveryReport,
    actions: &mut Vec<Action>,
) -> SnapshotState {
    let path = &paths.snapshot;
    let mut damaged = Vec::new();
    match snapshot_contents(disk, path, values, &mut damaged) {
        Ok(state) => {
            if state.format == Format::V1 {
                report.migrated_from = Some(1);
            }
            report.damaged.extend(damaged);
            state
        }
        Err(reason) => {
            report.unreadable.push(Unreadable {
                file: path.clone(),
                reason,
                kept_as: None,
            });
            actions.push(Action::SetAside {
                path: path.clone(),
                snapshot: true,
            });
            SnapshotState {
                format: Format::Unreadable,
                journal: None,
                bytes: 0,
                damaged: false,
                stuck: false,
            }
        }
    }
}

/// The snapshot's entries into `values`, its damaged ones into `damaged`; `Err` when it cannot
/// be read at all (entries read before a read error stay in `values`: they passed their check).
fn snapshot_contents(
    disk: &dyn Disk,
    path: &Path,
    values: &mut Table,
    damaged: &mut Vec<Damage>,
) -> Result<SnapshotState, String> {
    let mut state = SnapshotState {
        format: Format::Missing,
        journal: None,
        bytes: 0,
        damaged: false,
        stuck: false,
    };
    let file = match disk.read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    match first_byte(&mut reader).map_err(|e| format!("cannot read it: {e}"))? {
        None => Err("it is empty".to_owned()),
        Some(b'{') => {
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read it: {e}"))?;
            let (found, bad) = parse_v1(&bytes, path)?;
            state.format = Format::V1;
            state.bytes = bytes.len() as u64;
            state.damaged = !bad.is_empty();
            damaged.extend(bad);
            for (k, v) in found {
                values.set(k, v);
            }
            Ok(state)
        }
        Some(_) => {
            let (journal, bytes) = read_v2(reader, path, values, damaged)?;
            state.format = Format::V2;
            state.journal = journal;
            state.bytes = bytes;
            state.damaged = !damaged.is_empty();
            Ok(state)
        }
    }
}

/// The first byte that is not white space, left unread.
fn first_byte(reader: &mut impl BufRead) -> io::Result<Option<u8>> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                reader.consume(i);
                return Ok(Some(b));
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct V1In<'a> {
    #[serde(borrow, default)]
    bans: Vec<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    offenders: Vec<&'a serde_json::value::RawValue>,
}

/// Today's whole-file JSON: `{"version":1,"bans":[…],"offenders":[…]}`. An entry that does not
/// parse is damage (with its line); a file that is not that shape is unreadable.
pub(crate) fn parse_v1(
    bytes: &[u8],
    path: &Path,
) -> Result<(HashMap<Key, Value>, Vec<Damage>), String> {
    let version: VersionOnly =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    match version.version {
        None => return Err("not a joinshield state file (no version)".to_owned()),
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(format!(
                "state file version {v}; this build reads 1 and {SNAPSHOT_VERSION}"
            ))
        }
    }
    let file: V1In =
        serde_json::from_slice(bytes).map_err(|e| format!("not a joinshield state file: {e}"))?;
    let base = bytes.as_ptr() as usize;
    let at = |raw: &serde_json::value::RawValue| {
        let offset = (raw.get().as_ptr() as usize).saturating_sub(base);
        let line = bytes[..offset.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + 1;
        (offset as u64, line)
    };
    let mut values = HashMap::new();
    let mut damaged = Vec::new();
    for (i, raw) in file.offenders.iter().enumerate() {
        match serde_json::from_str::<OffenderRecord>(raw.get()) {
            Ok(o) => {
                values.insert(Key::Offender(o.net), Value::Offender(o));
            }
            Err(e) => {
                let (offset, line) = at(raw);
                damaged.push(Damage {
                    file: path.to_owned(),
                    line,
                    offset,
                    reason: format!("offenders[{i}]: {e}"),
                });
            }
        }
    }
    for (i, raw) in file.bans.iter().enumerate() {
        match serde_json::from_str::<BanRecord>(raw.get()) {
            Ok(b) => {
                values.insert(Key::Ban(b.net), Value::Ban(b));
            }
            Err(e) => {
                let (offset, line) = at(raw);
                damaged.push(Damage {
                    file: path.to_owned(),
                    line,
                    offset,
                    reason: format!("bans[{i}]: {e}"),
                });
            }
        }
    }
    Ok((values, damaged))
}

/// This format: a header line, entry lines, an end line. Returns the header's journal number
/// (`None` when the header is damaged) and the bytes read.
fn read_v2(
    reader: impl BufRead,
    path: &Path,
    values: &mut Table,
    damaged: &mut Vec<Damage>,
) -> Result<(Option<u64>, u64), String> {
    let mut lines = Lines::new(reader);
    let damage = |damaged: &mut Vec<Damage>, line: &record::RawLine, reason: String| {
        damaged.push(Damage {
            file: path.to_owned(),
            line: line.number,
            offset: line.offset,
            reason,
        });
    };
    let read_err = |e: io::Error| format!("cannot read it: {e}");
    let Some(first) = lines.next_line().map_err(read_err)? else {
        return Err("it is empty".to_owned());
    };
    let journal = match record::unframe(&first.bytes) {
        Ok(json) => Some(parse_header::<SnapshotHeader>(
            json,
            "joinshield_state",
            SNAPSHOT_VERSION,
            |h| (h.joinshield_state, h.journal),
        )?),
        // A record line whose check fails: the header is damaged, the entries may be fine.
        Err(reason) if record::looks_framed(&first.bytes) && !first.too_long => {
            damage(
                damaged,
                &first,
                format!("snapshot header: {reason}; every journal segment is replayed"),
            );
            None
        }
        Err(_) => return Err("not a joinshield state file".to_owned()),
    };
    let (mut bans, mut offenders) = (0u64, 0u64);
    let mut end = None;
    while let Some(line) = lines.next_line().map_err(read_err)? {
        if !line.terminated {
            damage(damaged, &line, "the snapshot is cut short here".to_owned());
            break;
        }
        if end.is_some() {
            damage(damaged, &line, "an entry after the end line".to_owned());
            continue;
        }
        if line.too_long {
            damage(damaged, &line, "line too long".to_owned());
            continue;
        }
        match record::unframe(&line.bytes).and_then(record::parse_snapshot) {
            Ok(SnapshotEntry::Value(v)) => {
                let key = match &v {
                    Value::Ban(b) => {
                        bans += 1;
                        Key::Ban(b.net)
                    }
                    Value::Offender(o) => {
                        offenders += 1;
                        Key::Offender(o.net)
                    }
                    Value::Gone => continue,
                };
                values.set(key, v);
            }
            Ok(SnapshotEntry::End(e)) => end = Some((e, line.number)),
            Err(reason) => damage(damaged, &line, reason),
        }
    }
    match end {
        None if damaged.iter().all(|d| d.reason != "the snapshot is cut short here") => {
            damaged.push(Damage {
                file: path.to_owned(),
                line: 0,
                offset: lines.offset(),
                reason: "the snapshot has no end line: it is cut short".to_owned(),
            })
        }
        Some((e, number)) if damaged.is_empty() && (e.bans, e.offenders) != (bans, offenders) => {
            damaged.push(Damage {
                file: path.to_owned(),
                line: number,
                offset: 0,
                reason: format!(
                    "the end line counts {} bans and {} offenders, the snapshot holds {bans} and {offenders}",
                    e.bans, e.offenders
                ),
            })
        }
        _ => {}
    }
    Ok((journal, lines.offset()))
}

/// Parses a header of `field` = `version`; a header of another version or no header at all is
/// an unreadable file.
fn parse_header<H: serde::de::DeserializeOwned>(
    json: &[u8],
    field: &str,
    version: u32,
    get: impl Fn(&H) -> (u32, u64),
) -> Result<u64, String> {
    if let Ok(h) = serde_json::from_slice::<H>(json) {
        let (v, n) = get(&h);
        if v == version {
            return Ok(n);
        }
    }
    let any: serde_json::Value =
        serde_json::from_slice(json).map_err(|_| "not a joinshield file".to_owned())?;
    match any.get(field) {
        Some(v) => Err(format!(
            "format version {v}; this build reads version {version}"
        )),
        None => Err("not a joinshield file (no header)".to_owned()),
    }
}

/// What became of a segment at recovery.
enum Segment {
    Replayed(SegmentState),
    /// Folded into the snapshot already, or set aside: its number stays used.
    Skipped,
    /// Its creation was cut short (no header): removed, its number free again.
    Empty,
}

/// Reads one segment. A stale one (already folded in) is only checked and removed; one whose
/// header was cut short is removed (nothing was written after it); an unreadable one is set
/// aside; the rest is replayed into `values`.
fn read_segment(
    disk: &dyn Disk,
    path: &Path,
    seq: u64,
    stale: bool,
    values: &mut Table,
    report: &mut RecoveryReport,
    actions: &mut Vec<Action>,
) -> Segment {
    let set_aside = |report: &mut RecoveryReport, actions: &mut Vec<Action>, reason: String| {
        report.unreadable.push(Unreadable {
            file: path.to_owned(),
            reason,
            kept_as: None,
        });
        actions.push(Action::SetAside {
            path: path.to_owned(),
            snapshot: false,
        });
        Segment::Skipped
    };
    let remove = |report: &mut RecoveryReport, actions: &mut Vec<Action>| {
        actions.push(Action::Remove(path.to_owned()));
        report.removed.push(path.to_owned());
    };
    let file = match disk.read(path) {
        Ok(f) => f,
        Err(e) => return set_aside(report, actions, format!("cannot open it: {e}")),
    };
    let mut lines = Lines::new(BufReader::with_capacity(1 << 16, file));
    let first = match lines.next_line() {
        Ok(Some(l)) => l,
        Ok(None) => {
            remove(report, actions);
            return Segment::Empty;
        }
        Err(e) => return set_aside(report, actions, format!("cannot read it: {e}")),
    };
    let mut damaged = false;
    match record::unframe(&first.bytes) {
        Ok(json) => {
            match parse_header::<JournalHeader>(json, "joinshield_journal", JOURNAL_VERSION, |h| {
                (h.joinshield_journal, h.seq)
            }) {
                Ok(n) if n == seq => {}
                Ok(n) => {
                    return set_aside(
                        report,
                        actions,
                        format!("its header says segment {n}, its name says {seq}"),
                    )
                }
                Err(reason) => return set_aside(report, actions, reason),
            }
        }
        // Created, and the header's write cut short: nothing can follow it.
        Err(_) if !first.terminated && !first.too_long => {
            remove(report, actions);
            return Segment::Empty;
        }
        Err(reason) if record::looks_framed(&first.bytes) && !first.too_long => {
            report.damaged.push(Damage {
                file: path.to_owned(),
                line: 1,
                offset: 0,
                reason: format!("segment header: {reason}"),
            });
            damaged = true;
        }
        Err(_) => {
            return set_aside(
                report,
                actions,
                "not a joinshield journal segment".to_owned(),
            )
        }
    }
    if stale {
        // Already folded into the snapshot; one with a damaged header is left alone.
        if !damaged {
            remove(report, actions);
        }
        return Segment::Skipped;
    }
    let mut len = first.offset + first.bytes.len() as u64 + 1;
    loop {
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                report.problems.push(Problem {
                    file: path.to_owned(),
                    reason: format!("cannot read past byte {}: {e}", lines.offset()),
                });
                damaged = true;
                break;
            }
        };
        if !line.terminated {
            report.torn.push(Torn {
                file: path.to_owned(),
                offset: line.offset,
                bytes: lines.offset() - line.offset,
            });
            actions.push(Action::Truncate {
                path: path.to_owned(),
                len: line.offset,
            });
            break;
        }
        len = lines.offset();
        let parsed = if line.too_long {
            Err("line too long".to_owned())
        } else {
            record::unframe(&line.bytes).and_then(record::parse_journal)
        };
        match parsed {
            Ok((change, _at)) => {
                values.set(change.key(), change.into_value());
            }
            Err(reason) => {
                damaged = true;
                report.damaged.push(Damage {
                    file: path.to_owned(),
                    line: line.number,
                    offset: line.offset,
                    reason,
                });
            }
        }
    }
    Segment::Replayed(SegmentState {
        seq,
        path: path.to_owned(),
        len,
        damaged,
    })
}

/// Reads the journal records of a segment for compaction, in order; damaged and torn records
/// are skipped and counted.
pub(crate) fn replay_segment(
    disk: &dyn Disk,
    path: &Path,
    mut apply: impl FnMut(Key, Value),
) -> io::Result<u64> {
    let mut lines = Lines::new(BufReader::with_capacity(1 << 16, disk.read(path)?));
    let mut skipped = 0;
    let mut first = true;
    while let Some(line) = lines.next_line()? {
        if std::mem::take(&mut first) {
            continue;
        }
        if !line.terminated || line.too_long {
            skipped += u64::from(line.terminated);
            continue;
        }
        match record::unframe(&line.bytes).and_then(record::parse_journal) {
            Ok((change, _)) => apply(change.key(), change.into_value()),
            Err(_) => skipped += 1,
        }
    }
    Ok(skipped)
}
