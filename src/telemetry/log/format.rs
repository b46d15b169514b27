//! Turning a record into bytes: Laravel's default line, or one JSON object a line.
//!
//! The Laravel line is what Monolog's `LineFormatter` writes when Laravel builds it for its
//! default channels: `new LineFormatter(null, 'Y-m-d H:i:s', true, true)` with
//! `includeStacktraces()` (Illuminate\Log\LogManager::formatter), on the format
//! `"[%datetime%] %channel%.%level_name%: %message% %context% %extra%\n"`. Because
//! `ignoreEmptyContextAndExtra` is on, an empty context prints nothing (not `[]`), and the always
//! empty extra prints nothing too. So a line with context ends `} \n` (one space) and a line
//! without ends with the message then two spaces then `\n`.
//!
//! The context is JSON as PHP's `json_encode` writes it with Monolog's flags
//! (`JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION |
//! JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR`): `/` and non-ASCII are raw,
//! U+2028 and U+2029 are `\u2028` and `\u2029`, control characters are `\b \f \n \r \t` or
//! `\u00xx` (lowercase hex), DEL is raw. Monolog's normaliser limits (9 levels deep, 1000 items)
//! are reproduced too.
//!
//! Two deliberate differences from Monolog, both only for values a request can carry:
//! - Monolog turns the `\n` and `\r` escapes in the context back into real line breaks
//!   (`allowInlineLineBreaks`); we keep the escapes, so a line is always one line. Values from a
//!   request are built with [`super::Value::request`], which removes CR and LF, so for them the
//!   bytes are the same.
//! - Monolog substitutes `%channel%`, `%level_name%`, `%level%` and `%datetime%` and deletes
//!   `%context.x%` / `%extra.x%` even inside context values; we write the value as it was, so an
//!   attacker cannot make the log show another path than the one requested.

use std::borrow::Cow;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{Format, LogConfig, Record, Value};

/// Monolog's `maxNormalizeDepth`.
const MAX_DEPTH: usize = 9;
/// Monolog's `maxNormalizeItemCount`.
const MAX_ITEMS: usize = 1000;

/// Formats records for one configured channel, zone and format.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: Format,
    channel: Box<str>,
    stamper: Stamper,
}

/// The wall-clock text of an instant in one zone, `Y-m-d H:i:s` and its UTC offset `+hh:mm`,
/// cached per second: lines come in bursts within a second, and the zone lookup is the dearest
/// part of a line.
#[derive(Debug, Clone)]
pub struct Stamper {
    timezone: TimeZone,
    cached_second: i64,
    cached_text: [u8; 19],
    cached_offset: [u8; 6],
}

impl Stamper {
    /// A stamper writing times in `timezone`.
    pub fn new(timezone: TimeZone) -> Stamper {
        Stamper {
            timezone,
            cached_second: i64::MIN,
            cached_text: [b'0'; 19],
            cached_offset: *b"+00:00",
        }
    }

    /// `Y-m-d H:i:s` of `at` in the zone, and the zone's offset then as `+hh:mm`.
    pub fn stamp(&mut self, at: Timestamp) -> ([u8; 19], [u8; 6]) {
        let second = at.as_second();
        if second != self.cached_second {
            let local = self.timezone.to_datetime(at);
            // Each field is within its range (a year of four digits, the others of two).
            let field = |v: i16| u32::try_from(v).unwrap_or(0);
            let mut text = [0u8; 19];
            put_digits(&mut text[0..4], field(local.year()) % 10_000);
            text[4] = b'-';
            put_digits(&mut text[5..7], field(local.month().into()));
            text[7] = b'-';
            put_digits(&mut text[8..10], field(local.day().into()));
            text[10] = b' ';
            put_digits(&mut text[11..13], field(local.hour().into()));
            text[13] = b':';
            put_digits(&mut text[14..16], field(local.minute().into()));
            text[16] = b':';
            put_digits(&mut text[17..19], field(local.second().into()));
            let offset = self.timezone.to_offset(at).seconds();
            let mut zone = [b'+', 0, 0, b':', 0, 0];
            if offset < 0 {
                zone[0] = b'-';
            }
            let minutes = offset.unsigned_abs() / 60;
            put_digits(&mut zone[1..3], minutes / 60);
            put_digits(&mut zone[4..6], minutes % 60);
            self.cached_second = second;
            self.cached_text = text;
            self.cached_offset = zone;
        }
        (self.cached_text, self.cached_offset)
    }
}

impl Formatter {
    /// A formatter for `format`, writing `channel` and times in `timezone`.
    pub fn new(format: Format, channel: &str, timezone: TimeZone) -> Formatter {
        Formatter {
            format,
            channel: channel.into(),
            stamper: Stamper::new(timezone),
        }
    }

    /// The formatter for a `[log]` section.
    pub fn from_config(config: &LogConfig) -> Formatter {
        Formatter::new(config.format, &config.channel, config.timezone.clone())
    }

    /// Appends the line for `record`, logged at `at`, to `out` (newline included).
    pub fn write(&mut self, out: &mut Vec<u8>, record: &Record, at: Timestamp) {
        match self.format {
            Format::Laravel => self.write_laravel(out, record, at),
            Format::Json => self.write_json(out, record, at),
        }
    }

    /// The line for `record` as a string (newline included); for tests and tools.
    pub fn line(&mut self, record: &Record, at: Timestamp) -> String {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, record, at);
        // The encoder only writes valid UTF-8: every input is a `&str` or a fixed ASCII text.
        String::from_utf8_lossy(&out).into_owned()
    }

    fn write_laravel(&mut self, out: &mut Vec<u8>, record: &Record, at: Timestamp) {
        out.push(b'[');
        let (stamp, _) = self.stamper.stamp(at);
        out.extend_from_slice(&stamp);
        out.extend_from_slice(b"] ");
        out.extend_from_slice(self.channel.as_bytes());
        out.push(b'.');
        out.extend_from_slice(record.level.name().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(record.message.as_bytes());
        out.push(b' ');
        if !record.context.is_empty() {
            write_context(out, &record.context);
        }
        // The empty extra: its placeholder is replaced by nothing, the space before it stays.
        out.extend_from_slice(b" \n");
    }

    fn write_json(&mut self, out: &mut Vec<u8>, record: &Record, at: Timestamp) {
        out.extend_from_slice(b"{\"datetime\":\"");
        let (mut stamp, offset) = self.stamper.stamp(at);
        stamp[10] = b'T';
        out.extend_from_slice(&stamp);
        // Microseconds as Monolog's JSON dates have them; a leap second's excess is cut.
        let mut micros = [b'.', 0, 0, 0, 0, 0, 0];
        let subsec = at.as_microsecond().rem_euclid(1_000_000);
        put_digits(&mut micros[1..], u32::try_from(subsec).unwrap_or(0));
        out.extend_from_slice(&micros);
        out.extend_from_slice(&offset);
        out.extend_from_slice(b"\",\"channel\":");
        write_str(out, &self.channel);
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(record.level.name().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        write_str(out, record.message);
        out.extend_from_slice(b",\"context\":");
        write_context(out, &record.context);
        out.extend_from_slice(b"}\n");
    }
}

/// Writes `n` as the decimal digits filling `slot`, zero-padded (the leading digits of a larger
/// `n` are cut).
pub fn put_digits(slot: &mut [u8], mut n: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Writes the context as a JSON object, keys in order, as `json_encode` would after Monolog's
/// normaliser (the context array sits at depth 1, its values at depth 2).
pub fn write_context(out: &mut Vec<u8>, context: &[(&'static str, Value)]) {
    out.push(b'{');
    for (n, (key, value)) in context.iter().enumerate() {
        if n == MAX_ITEMS {
            out.extend_from_slice(b",\"...\":");
            write_over_items(out, context.len());
            break;
        }
        if n > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value, 2);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        write_str(out, "Over 9 levels deep, aborting normalization");
        return;
    }
    match value {
        Value::Str(s) => write_str(out, s),
        Value::Int(n) => write_int(out, *n < 0, n.unsigned_abs()),
        Value::UInt(n) => write_int(out, false, *n),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        Value::List(items) if items.len() > MAX_ITEMS => {
            // Monolog adds a "..." key, which makes the PHP array a map: an object, keyed 0..999.
            out.push(b'{');
            for (n, item) in items.iter().take(MAX_ITEMS).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\":");
                write_value(out, item, depth + 1);
            }
            out.extend_from_slice(b",\"...\":");
            write_over_items(out, items.len());
            out.push(b'}');
        }
        Value::List(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1);
            }
            out.push(b']');
        }
    }
}

fn write_over_items(out: &mut Vec<u8>, total: usize) {
    let text = format!("Over {MAX_ITEMS} items ({total} total), aborting normalization");
    write_str(out, &text);
}

/// Bytes that may start an escape: `"`, `\\`, the C0 controls, and 0xE2 (the lead byte of
/// U+2028 and U+2029). Everything else is copied in runs.
static MAY_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0xe2] = true;
    table
};

/// Writes `s` as a JSON string exactly as PHP's `json_encode` does with Monolog's flags.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !MAY_ESCAPE[usize::from(b)] {
            i += 1;
            continue;
        }
        let (escape, len, width): ([u8; 6], usize, usize) = match b {
            b'"' => (*b"\\\"    ", 2, 1),
            b'\\' => (*b"\\\\    ", 2, 1),
            0x08 => (*b"\\b    ", 2, 1),
            0x0c => (*b"\\f    ", 2, 1),
            b'\n' => (*b"\\n    ", 2, 1),
            b'\r' => (*b"\\r    ", 2, 1),
            b'\t' => (*b"\\t    ", 2, 1),
            0x00..=0x1f => {
                let hi = HEX[usize::from(b >> 4)];
                let lo = HEX[usize::from(b & 0xf)];
                ([b'\\', b'u', b'0', b'0', hi, lo], 6, 1)
            }
            // U+2028 and U+2029 (E2 80 A8/A9): PHP escapes them unless told not to.
            _ if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8) | Some(0xa9)) =>
            {
                let last = if bytes[i + 2] == 0xa8 { b'8' } else { b'9' };
                ([b'\\', b'u', b'2', b'0', b'2', last], 6, 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(&escape[..len]);
        i += width;
        clean_from = i;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// Writes an integer's decimal digits without allocating.
fn write_int(out: &mut Vec<u8>, negative: bool, n: u64) {
    if negative {
        out.push(b'-');
    }
    crate::text::push_decimal(out, n);
}

/// `bytes` as UTF-8, each invalid sequence replaced with U+FFFD the way PHP's
/// `php_next_utf8_char` (and so `json_encode` with `JSON_INVALID_UTF8_SUBSTITUTE`) splits them;
/// this differs from `String::from_utf8_lossy` (PHP writes one U+FFFD for an encoded surrogate).
pub fn php_lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let lead = |c: u8| c < 0x80 || (0xc2..=0xf4).contains(&c);
    let trail = |c: u8| (0x80..=0xbf).contains(&c);
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut pos = 0;
    while pos < bytes.len() {
        let c = bytes[pos];
        let avail = bytes.len() - pos;
        let at = |k: usize| bytes.get(pos + k).copied().unwrap_or(0);
        // Ok(len) for a valid sequence of len bytes, Err(skip) for an invalid one.
        let step: Result<usize, usize> = if c < 0x80 {
            Ok(1)
        } else if c < 0xc2 {
            Err(1)
        } else if c < 0xe0 {
            if avail < 2 {
                Err(1)
            } else if !trail(at(1)) {
                Err(if lead(at(1)) { 1 } else { 2 })
            } else {
                Ok(2)
            }
        } else if c < 0xf0 {
            if avail < 3 || !trail(at(1)) || !trail(at(2)) {
                if avail < 2 || lead(at(1)) {
                    Err(1)
                } else if avail < 3 || lead(at(2)) {
                    Err(2)
                } else {
                    Err(3)
                }
            } else {
                let cp = (u32::from(c & 0x0f) << 12)
                    | (u32::from(at(1) & 0x3f) << 6)
                    | u32::from(at(2) & 0x3f);
                if cp < 0x800 || (0xd800..=0xdfff).contains(&cp) {
                    Err(3)
                } else {
                    Ok(3)
                }
            }
        } else if c < 0xf5 {
            if avail < 4 || !trail(at(1)) || !trail(at(2)) || !trail(at(3)) {
                if avail < 2 || lead(at(1)) {
                    Err(1)
                } else if avail < 3 || lead(at(2)) {
                    Err(2)
                } else if avail < 4 || lead(at(3)) {
                    Err(3)
                } else {
                    Err(4)
                }
            } else {
                let cp = (u32::from(c & 0x07) << 18)
                    | (u32::from(at(1) & 0x3f) << 12)
                    | (u32::from(at(2) & 0x3f) << 6)
                    | u32::from(at(3) & 0x3f);
                if !(0x10000..=0x10ffff).contains(&cp) {
                    Err(4)
                } else {
                    Ok(4)
                }
            }
        } else {
            Err(1)
        };
        match step {
            Ok(len) => {
                // The checks above are exactly UTF-8 validity, so this cannot fail; should it,
                // the replacement character is still the right output.
                match std::str::from_utf8(&bytes[pos..pos + len]) {
                    Ok(s) => out.push_str(s),
                    Err(_) => out.push('\u{FFFD}'),
                }
                pos += len;
            }
            Err(skip) => {
                out.push('\u{FFFD}');
                pos += skip;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::Level;

    fn at() -> Timestamp {
        "2026-11-27T17:44:15Z".parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn laravel() -> Formatter {
        Formatter::new(Format::Laravel, "production", TimeZone::UTC)
    }

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn a_denial_line_matches_the_spec_example() {
        let record = Record::new(Level::Warning, "Join token access denied")
            .with("reason", "token_rate_limited")
            .with("ip", "203.0.113.7");
        assert_eq!(
            laravel().line(&record, at()),
            "[2026-11-27 17:44:15] production.WARNING: Join token access denied \
             {\"reason\":\"token_rate_limited\",\"ip\":\"203.0.113.7\"} \n"
        );
    }

    #[test]
    fn an_empty_context_prints_nothing_and_leaves_two_spaces() {
        let record = Record::new(Level::Notice, "Temporary rule expired");
        assert_eq!(
            laravel().line(&record, at()),
            "[2026-11-27 17:44:15] production.NOTICE: Temporary rule expired  \n"
        );
    }

    #[test]
    fn timestamps_are_written_in_the_configured_zone() {
        let mut f = Formatter::new(Format::Laravel, "local", zone("Europe/Berlin"));
        let line = f.line(&Record::new(Level::Info, "x"), at());
        assert!(line.starts_with("[2026-11-27 18:44:15] local.INFO: x"));
    }

    #[test]
    fn strings_escape_like_php_json_encode() {
        assert_eq!(json("/a/é😀"), "\"/a/é😀\"");
        assert_eq!(json("q\"b\\"), "\"q\\\"b\\\\\"");
        assert_eq!(json("\u{8}\u{c}\n\r\t"), "\"\\b\\f\\n\\r\\t\"");
        assert_eq!(json("\u{1}\u{1f}\u{7f}"), "\"\\u0001\\u001f\u{7f}\"");
        assert_eq!(json("a\u{2028}b\u{2029}"), "\"a\\u2028b\\u2029\"");
    }

    #[test]
    fn a_line_never_contains_a_line_break_before_its_end() {
        let record = Record::new(Level::Warning, "m").with("p", "a\r\nb\u{2028}");
        let line = laravel().line(&record, at());
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with(" \n"));
    }

    #[test]
    fn invalid_utf8_is_replaced_as_php_does() {
        let cases: [(&[u8], &str); 6] = [
            (b"a\xe2\x82x", "a\u{FFFD}x"),
            (b"\xed\xa0\x80", "\u{FFFD}"),
            (b"\xc0\x80", "\u{FFFD}\u{FFFD}"),
            (b"\xf0\x9f\x98", "\u{FFFD}"),
            (b"\xe2\x28\xa1", "\u{FFFD}(\u{FFFD}"),
            (b"\xf8\x88", "\u{FFFD}\u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(php_lossy_utf8(input), want, "{input:?}");
        }
    }

    #[test]
    fn values_deeper_than_monolog_normalises_become_a_notice_string() {
        let mut v = Value::Int(1);
        for _ in 0..9 {
            v = Value::List(vec![v]);
        }
        let record = Record::new(Level::Info, "m").with("d", v);
        let line = laravel().line(&record, at());
        assert!(line.contains("[[[[[[[[\"Over 9 levels deep, aborting normalization\"]]]]]]]]"));
    }

    #[test]
    fn a_list_over_a_thousand_items_is_cut_like_monolog() {
        let list = Value::List((0..1001).map(Value::Int).collect());
        let record = Record::new(Level::Info, "m").with("l", list);
        let line = laravel().line(&record, at());
        assert!(line.contains(
            "\"999\":999,\"...\":\"Over 1000 items (1001 total), aborting normalization\"}"
        ));
    }

    #[test]
    fn the_json_format_writes_one_object_a_line() {
        let mut f = Formatter::new(Format::Json, "production", TimeZone::UTC);
        let record = Record::new(Level::Warning, "Join token access denied")
            .with("reason", "ip_blocked")
            .with("n", 3u64);
        assert_eq!(
            f.line(&record, at()),
            "{\"datetime\":\"2026-11-27T17:44:15.000000+00:00\",\"channel\":\"production\",\
             \"level\":\"WARNING\",\"message\":\"Join token access denied\",\
             \"context\":{\"reason\":\"ip_blocked\",\"n\":3}}\n"
        );
        let mut ny = Formatter::new(Format::Json, "p", zone("America/New_York"));
        let line = ny.line(
            &Record::new(Level::Info, "m"),
            at() + jiff::SignedDuration::from_micros(1234),
        );
        assert!(
            line.starts_with("{\"datetime\":\"2026-11-27T12:44:15.001234-05:00\""),
            "{line}"
        );
        let mut kolkata = Formatter::new(Format::Json, "p", zone("Asia/Kolkata"));
        let line = kolkata.line(&Record::new(Level::Info, "m"), at());
        assert!(
            line.starts_with("{\"datetime\":\"2026-11-27T23:14:15.000000+05:30\""),
            "{line}"
        );
        let empty = f.line(&Record::new(Level::Info, "m"), at());
        assert!(empty.ends_with("\"context\":{}}\n"));
    }
}
