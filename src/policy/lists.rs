//! The list files of SPEC §3: the blocklist and allowlist (addresses and CIDRs) and the revoked
//! join tokens, parsed with every bad line reported at once and looked up without allocating.
//! Reading the files is the configuration's job (`config/list_files.rs`): this is text in,
//! tables out.
//!
//! It decides two things: whether a client IP is listed at a given instant (and by which entry),
//! and whether a join token is revoked at a given instant.
//!
//! How, for IP lists: CIDR blocks are either nested or disjoint, so each family's distinct
//! networks are sorted by `(start, prefix)` into flat arrays (`u32` for IPv4, `u128` for IPv6)
//! and each network records the smallest network of the list that encloses it. A lookup
//! binary-searches the last network starting at or before the address; every network containing
//! the address is that one or one of its encloser chain (at most 33 or 129 deep), so the walk up
//! the chain finds the most specific unexpired entry. IPv4-mapped IPv6 entries and clients
//! (`::ffff:a.b.c.d`, networks inside `::ffff:0:0/96`) are IPv4 everywhere; an IPv6 network that
//! merely contains `::ffff:0:0/96` (such as `::/0`) matches IPv6 clients only, as in
//! [`crate::policy::client_ip::TrustedProxies`].
//!
//! How, for tokens: only SHA-256 digests are kept, in a hash set. A plain token in the file is
//! hashed at load and the secret dropped; a request's token is hashed only when the list is not
//! empty. Digests are uniformly spread, so the set buckets by their first eight bytes instead of
//! hashing them again; requests only read the set, so an attacker cannot degrade it.
//!
//! Line syntax: one entry a line, then optional `until=<RFC 3339 instant>` and `reason="..."`
//! (quoted; `\"` and `\\` are its only escapes), each at most once, in any order. `#` outside a
//! reason starts a comment; blank lines are ignored; a leading byte-order mark is skipped.
//!
//! Duplicates (the same network, or the same token digest, on several lines) are allowed, because
//! scripts that append a fresh `until=` to an existing entry are common and a reload must not fail
//! over them: the entries together apply while any of them is in force, and a lookup returns the
//! longest-lived one.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sha2::{Digest as _, Sha256};

use crate::policy::tokens::TokenFolding;

use crate::policy::client_ip::{canonical, canonical_net};
use crate::units::parse_instant;

/// One line of a list file: when it stops applying, why it is there, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The Unix time (seconds) from which the entry no longer applies; `None`: never expires.
    pub until: Option<i64>,
    /// The `reason="..."` text, unescaped; `None` when absent or empty.
    pub reason: Option<Box<str>>,
    /// The line number in the file, from 1.
    pub line: usize,
}

impl Entry {
    /// Whether the entry applies at `now_unix` (its `until`, if any, lies after it).
    pub fn in_force(&self, now_unix: i64) -> bool {
        until_key(self.until) > now_unix
    }
}

/// A bad line of a list file, or a file that could not be read (`line` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// The list file.
    pub file: PathBuf,
    /// The line number, from 1; 0 when the error concerns the whole file.
    pub line: usize,
    /// What is wrong, naming the bad text and the fix (lowercase).
    pub message: String,
}

impl fmt::Display for ListError {
    /// `file:line: message`, or `file: message` when the error concerns the whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ListError {}

// ---------------------------------------------------------------------------------------------
// Line syntax, shared by both kinds of list.

/// One non-blank line: the entry's text and its attributes.
struct Line<'a> {
    subject: &'a str,
    until: Option<i64>,
    reason: Option<Box<str>>,
}

const EXAMPLE_UNTIL: &str = "until=2026-11-28T06:00:00Z";

fn is_field_end(c: char) -> bool {
    c.is_whitespace() || c == '#'
}

/// Splits `s` at the end of its first field (whitespace or `#` ends a field).
fn split_field(s: &str) -> (&str, &str) {
    let end = s.find(is_field_end).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses one line; `Ok(None)` for a blank or comment-only line.
fn parse_line(raw: &str) -> Result<Option<Line<'_>>, String> {
    let mut rest = raw;
    let mut subject: Option<&str> = None;
    let mut until = None;
    let mut reason: Option<Box<str>> = None;
    let mut seen_reason = false;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            break;
        }
        if subject.is_none() {
            let (field, tail) = split_field(rest);
            if field.starts_with("until=") || field.starts_with("reason=") {
                return Err(format!(
                    "{field:?} comes before the entry: put the address, network or token first, \
                     then its attributes"
                ));
            }
            subject = Some(field);
            rest = tail;
            continue;
        }
        let key_end = rest
            .find(|c: char| c == '=' || is_field_end(c))
            .unwrap_or(rest.len());
        let (key, tail) = rest.split_at(key_end);
        let Some(value) = tail.strip_prefix('=') else {
            return Err(format!(
                "{key:?} is not an attribute: write one entry a line, followed only by \
                 {EXAMPLE_UNTIL} or reason=\"...\" (start a comment with #)"
            ));
        };
        match key {
            "until" => {
                if until.is_some() {
                    return Err("until= appears twice: keep one".to_string());
                }
                let (text, tail) = split_field(value);
                if text.is_empty() {
                    return Err(format!("until= has no instant: write e.g. {EXAMPLE_UNTIL}"));
                }
                until = Some(parse_instant(text).map_err(|e| format!("until: {e}"))?);
                rest = tail;
            }
            "reason" => {
                if seen_reason {
                    return Err("reason= appears twice: keep one".to_string());
                }
                seen_reason = true;
                let (text, tail) = parse_quoted(value)?;
                if !(tail.is_empty() || tail.starts_with(is_field_end)) {
                    let (junk, _) = split_field(tail);
                    return Err(format!(
                        "{junk:?} follows the closing quote of reason: put a blank between \
                         attributes, or write \\\" for a quote inside the reason"
                    ));
                }
                if !text.is_empty() {
                    reason = Some(text.into_boxed_str());
                }
                rest = tail;
            }
            other => {
                return Err(format!(
                    "unknown attribute {other:?}: the attributes are {EXAMPLE_UNTIL} and \
                     reason=\"...\""
                ));
            }
        }
    }
    Ok(subject.map(|subject| Line {
        subject,
        until,
        reason,
    }))
}

/// Reads a `"..."` string with `\"` and `\\` escapes; returns it and the text after it.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        let (field, _) = split_field(s);
        return Err(format!(
            "reason={field} is not quoted: write reason=\"{field}\" (quotes allow blanks)"
        ));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, body.get(i + 1..).unwrap_or(""))),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    return Err(format!(
                        "unknown escape \\{e} in reason: only \\\" and \\\\ are escapes"
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("reason has no closing quote: end it with \"".to_string())
}

/// Parses every line of `text`, giving each entry to `add`; collects every error.
fn parse_lines<'a>(
    text: &'a str,
    file: &Path,
    mut add: impl FnMut(&'a str, Entry) -> Result<(), String>,
) -> Result<(), Vec<ListError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut errors = Vec::new();
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        last = line;
        let result = parse_line(raw).and_then(|parsed| match parsed {
            None => Ok(()),
            Some(l) => add(
                l.subject,
                Entry {
                    until: l.until,
                    reason: l.reason,
                    line,
                },
            ),
        });
        if let Err(message) = result {
            errors.push(ListError {
                file: file.to_path_buf(),
                line,
                message,
            });
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    // A file cut short (a copy or write interrupted) ends mid-line: say so on that line's error.
    if !text.ends_with('\n') {
        if let Some(e) = errors.last_mut().filter(|e| e.line == last) {
            e.message
                .push_str(" (this last line has no line end: was the file cut short?)");
        }
    }
    Err(errors)
}

/// `until` as a sort and compare key: never expiring sorts last.
fn until_key(until: Option<i64>) -> i64 {
    until.unwrap_or(i64::MAX)
}

/// Too many entries to index with `u32` (over four billion lines).
fn too_many() -> String {
    "too many entries (over 4 billion): split the list".to_string()
}

// ---------------------------------------------------------------------------------------------
// IP lists.

const NO_PARENT: u32 = u32::MAX;

/// An address family's integer form.
trait Bits: Copy + Ord + fmt::Debug {
    const WIDTH: u8;
    /// Whether the network `start/prefix` contains `ip`.
    fn contains(start: Self, prefix: u8, ip: Self) -> bool;
    /// The last address of the network `start/prefix`.
    fn last(start: Self, prefix: u8) -> Self;
    /// How many leading bits `a` and `b` share.
    fn common(a: Self, b: Self) -> u32;
    /// The `bits` bits of `self` that follow its first `skip` bits.
    fn bucket(self, skip: u32, bits: u32) -> usize;
}

macro_rules! bits {
    ($t:ty, $n:expr) => {
        impl Bits for $t {
            const WIDTH: u8 = $n;
            fn contains(start: Self, prefix: u8, ip: Self) -> bool {
                match <Self as Bits>::WIDTH.checked_sub(prefix) {
                    // A shift by the full width (prefix 0) means every address.
                    Some(host) => (ip ^ start)
                        .checked_shr(u32::from(host))
                        .is_none_or(|x| x == 0),
                    None => false,
                }
            }
            fn last(start: Self, prefix: u8) -> Self {
                let host = <Self as Bits>::WIDTH.saturating_sub(prefix);
                let mask = (1 as $t)
                    .checked_shl(u32::from(host))
                    .map_or(<$t>::MAX, |m| m.wrapping_sub(1));
                start | mask
            }
            fn common(a: Self, b: Self) -> u32 {
                (a ^ b).leading_zeros()
            }
            fn bucket(self, skip: u32, bits: u32) -> usize {
                let top = match u32::from(<Self as Bits>::WIDTH).checked_sub(bits) {
                    Some(rest) if bits > 0 => self
                        .checked_shl(skip)
                        .unwrap_or(0)
                        .checked_shr(rest)
                        .unwrap_or(0),
                    _ => 0,
                };
                // At most RADIX_BITS bits: always fits.
                usize::try_from(top).unwrap_or(0)
            }
        }
    };
}
bits!(u32, 32);
bits!(u128, 128);

/// One distinct network of a family's table.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The longest-lived entry's `until` key (`i64::MAX`: never).
    until: i64,
    /// That entry's index in `IpList::entries`.
    entry: u32,
    /// The smallest enclosing network's index in the table, or `NO_PARENT`.
    parent: u32,
    prefix: u8,
}

/// The most bits of the radix index in front of the binary search (a 256 KiB table at most).
const RADIX_BITS: u32 = 16;

/// One family's distinct networks, sorted by `(start, prefix)`; `starts` and `nodes` are parallel.
///
/// A binary search over a million starts takes twenty dependent cache misses, so a radix index
/// narrows it first: all starts share their first `skip` bits (those of the lowest and highest
/// start), and `radix[b]..radix[b + 1]` are the starts whose next `bits` bits are `b`. Buckets
/// are derived from the data's own spread, so a list concentrated in one IPv6 /32 still spreads.
#[derive(Clone, Default)]
struct Table<A> {
    starts: Vec<A>,
    nodes: Vec<Node>,
    skip: u32,
    bits: u32,
    radix: Vec<u32>,
}

impl<A: Bits> Table<A> {
    /// Builds from `(start, prefix, until key, entry index)` of every entry.
    fn build(mut items: Vec<(A, u8, i64, u32)>) -> Table<A> {
        // Per network, the longest-lived entry first: if it has expired, so have its duplicates.
        items.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.cmp(&a.2)));
        items.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
        let mut starts = Vec::with_capacity(items.len());
        let mut nodes: Vec<Node> = Vec::with_capacity(items.len());
        // The networks enclosing the current one, innermost on top.
        let mut open: Vec<(A, u8, u32)> = Vec::new();
        for (i, &(start, prefix, until, entry)) in items.iter().enumerate() {
            while let Some(&(s, p, _)) = open.last() {
                if A::contains(s, p, start) {
                    break;
                }
                open.pop();
            }
            let parent = open.last().map_or(NO_PARENT, |&(_, _, idx)| idx);
            starts.push(start);
            nodes.push(Node {
                until,
                entry,
                parent,
                prefix,
            });
            // Indices fit: the caller refuses more than u32::MAX - 1 entries.
            open.push((start, prefix, u32::try_from(i).unwrap_or(NO_PARENT)));
        }
        let mut table = Table {
            starts,
            nodes,
            skip: 0,
            bits: 0,
            radix: Vec::new(),
        };
        table.index();
        table
    }

    /// Builds the radix index over `starts`.
    fn index(&mut self) {
        let (Some(&lo), Some(&hi)) = (self.starts.first(), self.starts.last()) else {
            return;
        };
        self.skip = A::common(lo, hi);
        let room = u32::from(A::WIDTH).saturating_sub(self.skip);
        // About one bucket per start, no more than RADIX_BITS bits.
        let wanted = usize::BITS - self.starts.len().leading_zeros();
        self.bits = wanted.min(RADIX_BITS).min(room);
        let buckets = 1usize << self.bits;
        let mut radix = Vec::with_capacity(buckets + 1);
        let mut at = 0usize;
        for b in 0..buckets {
            while self
                .starts
                .get(at)
                .is_some_and(|s| s.bucket(self.skip, self.bits) < b)
            {
                at += 1;
            }
            radix.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        radix.push(u32::try_from(self.starts.len()).unwrap_or(u32::MAX));
        self.radix = radix;
    }

    /// The index of the last start at or before `ip`.
    fn last_start_at_or_before(&self, ip: A) -> Option<usize> {
        let (&lo, &hi) = (self.starts.first()?, self.starts.last()?);
        if ip < lo {
            return None;
        }
        if ip >= hi {
            return self.starts.len().checked_sub(1);
        }
        // Here lo <= ip < hi, so ip shares their first `skip` bits.
        let b = ip.bucket(self.skip, self.bits);
        let from = *self.radix.get(b)? as usize;
        let to = *self.radix.get(b + 1)? as usize;
        let within = self.starts.get(from..to)?.partition_point(|&s| s <= ip);
        (from + within).checked_sub(1)
    }

    /// The most specific network containing `ip` whose entry is in force at `now`.
    fn find(&self, ip: A, now: i64) -> Option<(A, &Node)> {
        let mut at = self.last_start_at_or_before(ip)?;
        // Every network containing `ip` is `at` or encloses it; parents have smaller indices,
        // so the walk ends.
        loop {
            let node = self.nodes.get(at)?;
            let start = *self.starts.get(at)?;
            if node.until > now && A::contains(start, node.prefix, ip) {
                return Some((start, node));
            }
            if node.parent == NO_PARENT {
                return None;
            }
            at = node.parent as usize;
        }
    }

    /// Pairs `(self node, other node)` of overlapping (hence nested) networks.
    fn overlapping(&self, other: &Table<A>, out: &mut Vec<(u32, u32)>) {
        for (node, &start) in self.nodes.iter().zip(&self.starts) {
            let prefix = node.prefix;
            // Networks of `other` enclosing this one (or equal to it): on its encloser chain.
            if let Some(mut at) = other.starts.partition_point(|&s| s <= start).checked_sub(1) {
                while let (Some(o), Some(&s)) = (other.nodes.get(at), other.starts.get(at)) {
                    if o.prefix <= prefix && A::contains(s, o.prefix, start) {
                        out.push((node.entry, o.entry));
                    }
                    if o.parent == NO_PARENT {
                        break;
                    }
                    at = o.parent as usize;
                }
            }
            // Networks of `other` inside this one: those starting within it, more specific.
            let last = A::last(start, prefix);
            let from = other.starts.partition_point(|&s| s < start);
            let to = other.starts.partition_point(|&s| s <= last);
            if let Some(inside) = other.nodes.get(from..to) {
                for o in inside.iter().filter(|o| o.prefix > prefix) {
                    out.push((node.entry, o.entry));
                }
            }
        }
    }

    /// The distinct networks of `other` missing from `self`, counted by a merge.
    fn missing_from(&self, other: &Table<A>) -> usize {
        let mine = self
            .starts
            .iter()
            .zip(&self.nodes)
            .map(|(&s, n)| (s, n.prefix));
        let theirs = other
            .starts
            .iter()
            .zip(&other.nodes)
            .map(|(&s, n)| (s, n.prefix));
        let mut missing = 0;
        let mut mine = mine.peekable();
        for t in theirs {
            while mine.next_if(|&m| m < t).is_some() {}
            if mine.next_if_eq(&t).is_none() {
                missing += 1;
            }
        }
        missing
    }
}

/// The error for an entry that is not an address or a network.
fn bad_ip(text: &str) -> String {
    format!(
        "{text:?} is not an IP address or network: write e.g. 203.0.113.7, 198.51.100.0/24 or \
         2001:db8:abcd::/48"
    )
}

/// Parses an address or CIDR entry into its canonical network (IPv4-mapped becomes IPv4).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| bad_ip(text))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!("{text:?} has a bad prefix length {p:?}: write a number from 0 to {max}")
            })?,
    };
    let net = IpNet::new(addr, prefix).map_err(|_| bad_ip(text))?;
    let network = net.trunc();
    if network != net {
        return Err(format!(
            "{text:?} has host bits set: write {network} for the network, or {addr} for the one \
             address"
        ));
    }
    Ok(canonical_net(net))
}

/// A blocklist or allowlist: addresses and networks with optional expiry, indexed for lookup.
#[derive(Clone, Default)]
pub struct IpList {
    /// Every entry in file order, with its canonical network.
    entries: Vec<(IpNet, Entry)>,
    v4: Table<u32>,
    v6: Table<u128>,
    /// Every `until`, sorted.
    untils: Vec<i64>,
}

impl fmt::Debug for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpList")
            .field("entries", &self.entries.len())
            .field("ipv4_networks", &self.v4.nodes.len())
            .field("ipv6_networks", &self.v6.nodes.len())
            .finish()
    }
}

impl IpList {
    /// Parses a list file's text; `file` names it in errors. Reports every bad line at once.
    pub fn parse(text: &str, file: &Path) -> Result<IpList, Vec<ListError>> {
        let mut entries = Vec::new();
        parse_lines(text, file, |subject, entry| {
            entries.push((parse_net(subject)?, entry));
            Ok(())
        })?;
        IpList::from_entries(entries).map_err(|message| {
            vec![ListError {
                file: file.to_path_buf(),
                line: 0,
                message,
            }]
        })
    }

    /// The list with no entries.
    pub fn empty() -> IpList {
        IpList::default()
    }

    /// Builds a list from networks (canonicalised here) and their entries.
    pub fn from_entries(entries: Vec<(IpNet, Entry)>) -> Result<IpList, String> {
        if entries.len() >= NO_PARENT as usize {
            return Err(too_many());
        }
        let entries: Vec<(IpNet, Entry)> = entries
            .into_iter()
            .map(|(net, e)| (canonical_net(net.trunc()), e))
            .collect();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, (net, e)) in entries.iter().enumerate() {
            let i = u32::try_from(i).map_err(|_| too_many())?;
            let until = until_key(e.until);
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), n.prefix_len(), until, i)),
                IpNet::V6(n) => v6.push((u128::from(n.network()), n.prefix_len(), until, i)),
            }
        }
        let mut untils: Vec<i64> = entries.iter().filter_map(|(_, e)| e.until).collect();
        untils.sort_unstable();
        Ok(IpList {
            v4: Table::build(v4),
            v6: Table::build(v6),
            entries,
            untils,
        })
    }

    /// The entry that matches `ip` (canonicalised) at `now_unix`, ignoring entries whose until
    /// <= now. If several match (nested CIDRs), any unexpired one; prefer the most specific.
    /// This returns the most specific, and among duplicates of it the longest-lived.
    pub fn lookup(&self, ip: IpAddr, now_unix: i64) -> Option<(IpNet, &Entry)> {
        // The network is rebuilt from the table rather than read beside the entry: a hit then
        // touches no entry memory until the caller reads it.
        let (net, node) = match canonical(ip) {
            IpAddr::V4(a) => {
                let (start, node) = self.v4.find(u32::from(a), now_unix)?;
                (Ipv4Net::new(start.into(), node.prefix).ok()?.into(), node)
            }
            IpAddr::V6(a) => {
                let (start, node) = self.v6.find(u128::from(a), now_unix)?;
                (Ipv6Net::new(start.into(), node.prefix).ok()?.into(), node)
            }
        };
        let (_, entry) = self.entries.get(node.entry as usize)?;
        Some((net, entry))
    }

    fn entry(&self, index: u32) -> Option<(IpNet, &Entry)> {
        self.entries.get(index as usize).map(|(n, e)| (*n, e))
    }

    /// The number of entries (lines), duplicates included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry with its canonical network, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Entry)> {
        self.entries.iter().map(|(n, e)| (*n, e))
    }

    /// Entries whose `until` lies in (from, to]: for the "Temporary rule expired" log line.
    pub fn expiring_between(&self, from: i64, to: i64) -> Vec<(IpNet, &Entry)> {
        if !any_between(&self.untils, from, to) {
            return Vec::new();
        }
        self.iter()
            .filter(|(_, e)| e.until.is_some_and(|u| u > from && u <= to))
            .collect()
    }

    /// The earliest `until` strictly after `now` (to schedule the next expiry check).
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        next_after(&self.untils, now)
    }

    /// Networks of `self` that overlap any network of `other` (for the "both allowed and
    /// blocked" warning): each pair of distinct overlapping networks once, expiry ignored.
    pub fn overlapping(&self, other: &IpList) -> Vec<(IpNet, IpNet)> {
        let mut pairs = Vec::new();
        self.v4.overlapping(&other.v4, &mut pairs);
        self.v6.overlapping(&other.v6, &mut pairs);
        pairs
            .into_iter()
            .filter_map(|(mine, theirs)| Some((self.entry(mine)?.0, other.entry(theirs)?.0)))
            .collect()
    }

    /// The number of distinct networks.
    pub fn networks(&self) -> usize {
        self.v4.nodes.len() + self.v6.nodes.len()
    }
}

fn any_between(sorted: &[i64], from: i64, to: i64) -> bool {
    next_after(sorted, from).is_some_and(|u| u <= to)
}

fn next_after(sorted: &[i64], now: i64) -> Option<i64> {
    sorted.get(sorted.partition_point(|&u| u <= now)).copied()
}

/// Entries added and removed between two IP lists, by distinct network: `(added, removed)`.
pub fn ip_diff(old: &IpList, new: &IpList) -> (usize, usize) {
    let added = old.v4.missing_from(&new.v4) + old.v6.missing_from(&new.v6);
    let removed = new.v4.missing_from(&old.v4) + new.v6.missing_from(&old.v6);
    (added, removed)
}

// ---------------------------------------------------------------------------------------------
// Revoked tokens.

/// A token's SHA-256 digest. Hashes by its first eight bytes: it is uniformly spread already.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenDigest([u8; 32]);

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// Passes a [`TokenDigest`]'s eight bytes through.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `TokenDigest`; folds anything else rather than ignoring it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

fn digest(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

/// The line that revokes `token` without the file holding it: `sha256:` and the hex digest of
/// the token folded as `folding` says (what `joinshield token-hash` prints).
pub fn revoked_entry(token: &str, folding: TokenFolding) -> String {
    format!("sha256:{}", hex::encode(digest(&folding.fold(token)).0))
}

/// Parses a token entry: a plain token (folded as `folding` says before it is hashed), or
/// `sha256:<64 hex>` (the digest of the folded token, taken as written).
fn parse_token(text: &str, folding: TokenFolding) -> Result<TokenDigest, String> {
    let Some(hex_text) = text.strip_prefix("sha256:") else {
        return Ok(digest(&folding.fold(text)));
    };
    let mut out = [0u8; 32];
    match hex::decode_to_slice(hex_text, &mut out) {
        Ok(()) => Ok(TokenDigest(out)),
        Err(_) => Err(format!(
            "{text:?} is not sha256:<64 hex digits>: write the token itself, or sha256: followed \
             by the 64 hex digits of its SHA-256"
        )),
    }
}

/// The revoked join tokens: SHA-256 digests only, with optional expiry.
#[derive(Clone, Default)]
pub struct TokenList {
    /// Every entry in file order, with its digest.
    entries: Vec<(TokenDigest, Entry)>,
    /// Per digest, its longest-lived entry's index.
    index: HashMap<TokenDigest, u32, BuildHasherDefault<DigestHasher>>,
    /// Every `until`, sorted.
    untils: Vec<i64>,
}

impl fmt::Debug for TokenList {
    /// Counts only: never a token nor a digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenList")
            .field("entries", &self.entries.len())
            .field("distinct", &self.index.len())
            .finish()
    }
}

impl TokenList {
    /// Parses a revoked-tokens file's text, plain tokens taken exactly as written (see
    /// [`TokenList::parse_with`]); `file` names it in errors. Reports every bad line.
    pub fn parse(text: &str, file: &Path) -> Result<TokenList, Vec<ListError>> {
        TokenList::parse_with(
            text,
            file,
            TokenFolding {
                case_sensitive: true,
            },
        )
    }

    /// Parses a revoked-tokens file's text with plain tokens folded as `folding` says (`[tokens]`:
    /// with folding, `ABC123` in the file revokes `abc123` and `abc123 ` too, and a `sha256:`
    /// entry is the digest of the folded token); `file` names it in errors. Reports every bad
    /// line. Lookups must then be given folded tokens ([`crate::policy::tokens::JoinToken::key`]).
    pub fn parse_with(
        text: &str,
        file: &Path,
        folding: TokenFolding,
    ) -> Result<TokenList, Vec<ListError>> {
        let mut entries = Vec::new();
        parse_lines(text, file, |subject, entry| {
            entries.push((parse_token(subject, folding)?, entry));
            Ok(())
        })?;
        if entries.len() >= u32::MAX as usize {
            return Err(vec![ListError {
                file: file.to_path_buf(),
                line: 0,
                message: too_many(),
            }]);
        }
        let mut index: HashMap<TokenDigest, u32, _> = HashMap::default();
        for (i, (d, e)) in entries.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            let slot = index.entry(*d).or_insert(i);
            let best = entries
                .get(*slot as usize)
                .map_or(i64::MIN, |(_, b)| until_key(b.until));
            if until_key(e.until) > best {
                *slot = i;
            }
        }
        let mut untils: Vec<i64> = entries.iter().filter_map(|(_, e)| e.until).collect();
        untils.sort_unstable();
        Ok(TokenList {
            entries,
            index,
            untils,
        })
    }

    /// The list with no entries.
    pub fn empty() -> TokenList {
        TokenList::default()
    }

    /// The entry revoking `token` (folded as the list was parsed) at `now_unix` (plain or
    /// `sha256:` form), the longest-lived one among duplicates. The token is hashed only when
    /// the list is not empty.
    pub fn lookup(&self, token: &str, now_unix: i64) -> Option<&Entry> {
        if self.index.is_empty() {
            return None;
        }
        let at = *self.index.get(&digest(token))?;
        let (_, entry) = self.entries.get(at as usize)?;
        entry.in_force(now_unix).then_some(entry)
    }

    /// The number of entries (lines), duplicates included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries whose `until` lies in (from, to]: for the "Temporary rule expired" log line.
    pub fn expiring_between(&self, from: i64, to: i64) -> Vec<&Entry> {
        if !any_between(&self.untils, from, to) {
            return Vec::new();
        }
        self.entries
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.until.is_some_and(|u| u > from && u <= to))
            .collect()
    }

    /// The earliest `until` strictly after `now` (to schedule the next expiry check).
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        next_after(&self.untils, now)
    }

    /// sha256 hex of every entry (plain ones hashed), in file order, so diffs and logs never
    /// need the secret.
    pub fn digests(&self) -> Vec<String> {
        self.entries.iter().map(|(d, _)| hex::encode(d.0)).collect()
    }
}

/// Entries added and removed between two token lists, by distinct digest: `(added, removed)`.
pub fn token_diff(old: &TokenList, new: &TokenList) -> (usize, usize) {
    let added = new
        .index
        .keys()
        .filter(|d| !old.index.contains_key(d))
        .count();
    let removed = old
        .index
        .keys()
        .filter(|d| !new.index.contains_key(d))
        .count();
    (added, removed)
}

#[cfg(test)]
mod tests;
