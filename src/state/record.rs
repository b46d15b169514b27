//! What the store keeps (bans and offence histories), the changes it journals, and the one line
//! format every file of the store is made of: `<crc32 as 8 hex digits> <json>\n`.
//!
//! JSON never contains a raw newline (it escapes them), so a newline always ends a record and a
//! damaged record costs only itself: the reader finds the next one at the next newline. The
//! checksum covers the JSON bytes, so a flipped bit is caught and a torn write (no newline at
//! the end of the file) is told apart from a damaged record (a whole line that fails its check).

use std::io::{self, BufRead};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The longest line the reader accepts. A real record is a few hundred bytes; a longer "line" is
/// garbage (say, a run of zeros without a newline), reported without holding it in memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Who made a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The guessing counter.
    Automatic,
    /// An operator, through the admin API.
    Manual,
}

/// One banned network, as the state file has always stored it (the fields of version 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned network (the store keeps it as given; the caller canonicalises).
    #[serde(with = "net_text")]
    pub net: IpNet,
    /// When the ban ends (unix seconds).
    pub until: i64,
    /// Why.
    pub reason: String,
    /// Who made it.
    pub source: Source,
    /// Which offence of this network it punishes (0 for a manual ban).
    pub offences: u32,
    /// The distinct failed tokens that triggered it (automatic bans only).
    pub distinct_tokens: Option<u32>,
    /// When it was made (unix seconds).
    pub created: i64,
    /// The replica that made it, in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A network's offence history: how many offences, and when they are forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffenderRecord {
    /// The network.
    #[serde(with = "net_text")]
    pub net: IpNet,
    /// Its offences so far.
    pub offences: u32,
    /// When the history is forgotten (unix seconds).
    pub forget_at: i64,
}

/// One change to the kept state, journalled before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A ban made or updated: it replaces any ban of the same network.
    Ban(BanRecord),
    /// The ban of exactly this network was lifted.
    Lift(IpNet),
    /// The ban of exactly this network ended.
    Expire(IpNet),
    /// A network's offence history set (replacing the one before).
    Offender(OffenderRecord),
    /// A network's offence history forgotten.
    Forget(IpNet),
}

/// What a change is about: a change replaces every earlier change of the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Ban(IpNet),
    Offender(IpNet),
}

/// A key's value after a change: present, or gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Ban(BanRecord),
    Offender(OffenderRecord),
    Gone,
}

impl Change {
    pub(crate) fn key(&self) -> Key {
        match self {
            Change::Ban(b) => Key::Ban(b.net),
            Change::Lift(net) | Change::Expire(net) => Key::Ban(*net),
            Change::Offender(o) => Key::Offender(o.net),
            Change::Forget(net) => Key::Offender(*net),
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Change::Ban(b) => Value::Ban(b),
            Change::Offender(o) => Value::Offender(o),
            Change::Lift(_) | Change::Expire(_) | Change::Forget(_) => Value::Gone,
        }
    }
}

impl Value {
    /// Whether the value is still in force at `now` (an ended ban or a forgotten history is not).
    pub(crate) fn live_at(&self, now: i64) -> bool {
        match self {
            Value::Ban(b) => b.until > now,
            Value::Offender(o) => o.forget_at > now,
            Value::Gone => false,
        }
    }
}

/// A journal line: `{"at":<unix>,"ban":{…}}`, `{"at":…,"lift":"<net>"}`, and so on.
#[derive(Serialize)]
struct JournalOut<'a> {
    at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ban: Option<&'a BanRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lift: Option<Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire: Option<Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offender: Option<&'a OffenderRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forget: Option<Net>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalIn {
    at: i64,
    ban: Option<BanRecord>,
    lift: Option<Net>,
    expire: Option<Net>,
    offender: Option<OffenderRecord>,
    forget: Option<Net>,
}

/// A snapshot line: a header, an entry, or the end.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ban: Option<&'a BanRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offender: Option<&'a OffenderRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    ban: Option<BanRecord>,
    offender: Option<OffenderRecord>,
    end: Option<End>,
}

/// Just the key and the end time of a snapshot entry: compaction copies the lines it keeps as
/// they are, so it reads no more than this.
#[derive(Deserialize)]
struct SnapshotKeyIn {
    ban: Option<KeyUntil>,
    offender: Option<KeyForget>,
    end: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct KeyUntil {
    #[serde(with = "net_text")]
    net: IpNet,
    until: i64,
}

#[derive(Deserialize)]
struct KeyForget {
    #[serde(with = "net_text")]
    net: IpNet,
    forget_at: i64,
}

/// The last line of a snapshot: how many entries it holds. Without it a snapshot is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct End {
    pub bans: u64,
    pub offenders: u64,
}

#[derive(Serialize)]
struct EndOut {
    end: End,
}

/// The first line of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotHeader {
    /// The format version (see [`SNAPSHOT_VERSION`]).
    pub joinshield_state: u32,
    /// Every journal segment numbered below this is folded into the snapshot.
    pub journal: u64,
}

/// The first line of a journal segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JournalHeader {
    /// The format version (see [`JOURNAL_VERSION`]).
    pub joinshield_journal: u32,
    /// The segment's number (also in its file name).
    pub seq: u64,
}

/// The snapshot format this build writes. Version 1 is the whole-file JSON of earlier builds,
/// read and migrated.
pub const SNAPSHOT_VERSION: u32 = 2;

/// The journal format this build writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// A network as its CIDR text.
#[derive(Debug, Clone, Copy)]
struct Net(IpNet);

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
        net_text::deserialize(d).map(Net)
    }
}

/// Appends one framed line to `out`: the JSON that `write` produces, its checksum before it.
fn frame(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let crc = crc32fast::hash(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
    Ok(())
}

/// The journal line of `change` made at `at`.
pub(crate) fn journal_line(out: &mut Vec<u8>, change: &Change, at: i64) -> serde_json::Result<()> {
    let mut line = JournalOut {
        at,
        ban: None,
        lift: None,
        expire: None,
        offender: None,
        forget: None,
    };
    match change {
        Change::Ban(b) => line.ban = Some(b),
        Change::Lift(net) => line.lift = Some(Net(*net)),
        Change::Expire(net) => line.expire = Some(Net(*net)),
        Change::Offender(o) => line.offender = Some(o),
        Change::Forget(net) => line.forget = Some(Net(*net)),
    }
    frame(out, |o| serde_json::to_writer(o, &line))
}

/// The snapshot line of a live value (nothing for [`Value::Gone`]).
pub(crate) fn snapshot_line(out: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    let line = match value {
        Value::Ban(b) => SnapshotOut {
            ban: Some(b),
            offender: None,
        },
        Value::Offender(o) => SnapshotOut {
            ban: None,
            offender: Some(o),
        },
        Value::Gone => return Ok(()),
    };
    frame(out, |o| serde_json::to_writer(o, &line))
}

pub(crate) fn header_line<T: Serialize>(out: &mut Vec<u8>, header: &T) -> serde_json::Result<()> {
    frame(out, |o| serde_json::to_writer(o, header))
}

pub(crate) fn end_line(out: &mut Vec<u8>, end: End) -> serde_json::Result<()> {
    frame(out, |o| serde_json::to_writer(o, &EndOut { end }))
}

/// Whether a line has the shape of a record (8 hex digits and a space in front), whatever its
/// check says: a damaged record, not a foreign file.
pub(crate) fn looks_framed(line: &[u8]) -> bool {
    line.len() > 9 && line[..8].iter().all(u8::is_ascii_hexdigit) && line[8] == b' '
}

/// The JSON of a framed line (without its newline), or why the line is damaged.
pub(crate) fn unframe(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("not a record line (no checksum in front)".to_owned());
    }
    let hex = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| "not a record line (no checksum in front)".to_owned())?;
    let json = &line[9..];
    let crc = crc32fast::hash(json);
    if crc != hex {
        return Err(format!(
            "checksum mismatch (stored {hex:08x}, computed {crc:08x})"
        ));
    }
    Ok(json)
}

/// A journal record's change and time.
pub(crate) fn parse_journal(json: &[u8]) -> Result<(Change, i64), String> {
    let r: JournalIn = serde_json::from_slice(json).map_err(|e| format!("bad record: {e}"))?;
    let mut found = Vec::with_capacity(1);
    if let Some(b) = r.ban {
        found.push(Change::Ban(b));
    }
    if let Some(n) = r.lift {
        found.push(Change::Lift(n.0));
    }
    if let Some(n) = r.expire {
        found.push(Change::Expire(n.0));
    }
    if let Some(o) = r.offender {
        found.push(Change::Offender(o));
    }
    if let Some(n) = r.forget {
        found.push(Change::Forget(n.0));
    }
    match (found.pop(), found.is_empty()) {
        (Some(change), true) => Ok((change, r.at)),
        _ => Err("bad record: not exactly one change".to_owned()),
    }
}

/// What a snapshot line holds.
pub(crate) enum SnapshotEntry {
    Value(Value),
    End(End),
}

pub(crate) fn parse_snapshot(json: &[u8]) -> Result<SnapshotEntry, String> {
    let r: SnapshotIn = serde_json::from_slice(json).map_err(|e| format!("bad entry: {e}"))?;
    match (r.ban, r.offender, r.end) {
        (Some(b), None, None) => Ok(SnapshotEntry::Value(Value::Ban(b))),
        (None, Some(o), None) => Ok(SnapshotEntry::Value(Value::Offender(o))),
        (None, None, Some(end)) => Ok(SnapshotEntry::End(end)),
        _ => Err("bad entry: not exactly one of ban, offender, end".to_owned()),
    }
}

/// A snapshot line's key and whether it is live at `now`, or `None` for the end line.
pub(crate) fn parse_snapshot_key(json: &[u8], now: i64) -> Result<Option<(Key, bool)>, String> {
    let r: SnapshotKeyIn = serde_json::from_slice(json).map_err(|e| format!("bad entry: {e}"))?;
    match (r.ban, r.offender, r.end) {
        (Some(b), None, None) => Ok(Some((Key::Ban(b.net), b.until > now))),
        (None, Some(o), None) => Ok(Some((Key::Offender(o.net), o.forget_at > now))),
        (None, None, Some(_)) => Ok(None),
        _ => Err("bad entry: not exactly one of ban, offender, end".to_owned()),
    }
}

/// One line as read: where it starts, its number (from 1), its bytes without the newline, and
/// whether a newline ended it (a last line without one is a torn write).
pub(crate) struct RawLine {
    pub offset: u64,
    pub number: u64,
    pub bytes: Vec<u8>,
    pub terminated: bool,
    /// The line was longer than [`MAX_LINE`]; `bytes` holds its start only.
    pub too_long: bool,
}

/// Reads lines with their offsets, never holding more than [`MAX_LINE`] bytes of one.
pub(crate) struct Lines<R> {
    reader: R,
    offset: u64,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            offset: 0,
            number: 0,
        }
    }

    /// The offset just past the last line read.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let start = self.offset;
        let mut bytes = Vec::new();
        let mut too_long = false;
        let mut terminated = false;
        let mut consumed = 0u64;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let (take, found) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let content = if found { take - 1 } else { take };
            let room = MAX_LINE.saturating_sub(bytes.len());
            if content > room {
                too_long = true;
            }
            bytes.extend_from_slice(&buf[..content.min(room)]);
            self.reader.consume(take);
            consumed += take as u64;
            if found {
                terminated = true;
                break;
            }
        }
        if consumed == 0 {
            return Ok(None);
        }
        self.offset += consumed;
        self.number += 1;
        Ok(Some(RawLine {
            offset: start,
            number: self.number,
            bytes,
            terminated,
            too_long,
        }))
    }
}

/// A network as its CIDR text (`198.51.100.0/24`).
pub(crate) mod net_text {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse::<IpNet>().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban() -> BanRecord {
        BanRecord {
            net: "198.51.100.0/24".parse().unwrap(),
            until: 1_795_806_000,
            reason: "SEV-2 \"scraping\"\nsecond line".into(),
            source: Source::Manual,
            offences: 0,
            distinct_tokens: None,
            created: 1_795_802_400,
            origin: Some("shield-a".into()),
        }
    }

    #[test]
    fn a_framed_line_round_trips_and_a_flipped_byte_is_caught() {
        let mut out = Vec::new();
        journal_line(&mut out, &Change::Ban(ban()), 1_795_802_400).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert_eq!(out.last(), Some(&b'\n'));
        let line = &out[..out.len() - 1];
        let json = unframe(line).unwrap();
        assert_eq!(
            parse_journal(json).unwrap(),
            (Change::Ban(ban()), 1_795_802_400)
        );
        for i in 0..line.len() {
            let mut bad = line.to_vec();
            bad[i] ^= 0x04;
            let res = unframe(&bad).map(parse_journal);
            assert!(
                !matches!(res, Ok(Ok(ref r)) if *r == (Change::Ban(ban()), 1_795_802_400)),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_change_has_its_own_journal_line() {
        let net: IpNet = "2001:db8::/48".parse().unwrap();
        let offender = OffenderRecord {
            net,
            offences: 3,
            forget_at: 9,
        };
        for change in [
            Change::Ban(ban()),
            Change::Lift(net),
            Change::Expire(net),
            Change::Offender(offender),
            Change::Forget(net),
        ] {
            let mut out = Vec::new();
            journal_line(&mut out, &change, 7).unwrap();
            let json = unframe(&out[..out.len() - 1]).unwrap();
            assert_eq!(parse_journal(json).unwrap(), (change, 7));
        }
    }

    #[test]
    fn a_record_with_two_changes_or_an_unknown_field_is_damaged() {
        for json in [
            r#"{"at":1,"lift":"192.0.2.0/24","forget":"192.0.2.0/24"}"#,
            r#"{"at":1}"#,
            r#"{"at":1,"lift":"192.0.2.0/24","colour":"red"}"#,
            r#"{"at":1,"lift":"not a net"}"#,
        ] {
            assert!(parse_journal(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn lines_reports_offsets_numbers_and_an_unterminated_tail() {
        let text = b"one\ntwo\nthr";
        let mut lines = Lines::new(&text[..]);
        let a = lines.next_line().unwrap().unwrap();
        assert_eq!(
            (a.offset, a.number, a.bytes.as_slice(), a.terminated),
            (0, 1, &b"one"[..], true)
        );
        let b = lines.next_line().unwrap().unwrap();
        assert_eq!((b.offset, b.number), (4, 2));
        let c = lines.next_line().unwrap().unwrap();
        assert_eq!(
            (c.offset, c.bytes.as_slice(), c.terminated),
            (8, &b"thr"[..], false)
        );
        assert!(lines.next_line().unwrap().is_none());
        assert_eq!(lines.offset(), text.len() as u64);
    }

    #[test]
    fn a_line_past_the_limit_is_cut_and_flagged_not_held() {
        let mut text = vec![0u8; MAX_LINE * 3];
        text.extend_from_slice(b"\nnext\n");
        let mut lines = Lines::new(std::io::BufReader::with_capacity(4096, &text[..]));
        let long = lines.next_line().unwrap().unwrap();
        assert!(long.too_long && long.terminated);
        assert_eq!(long.bytes.len(), MAX_LINE);
        let next = lines.next_line().unwrap().unwrap();
        assert_eq!(
            (next.bytes.as_slice(), next.offset),
            (&b"next"[..], (MAX_LINE * 3 + 1) as u64)
        );
    }
}
