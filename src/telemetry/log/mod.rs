//! The log: Laravel-compatible lines, written off the request path, with repeats folded.
//!
//! A [`Record`] is a level, a fixed message and an ordered context. A [`LogHandle`] hands it to
//! one writer thread through a bounded queue and never waits: when the queue is full the record
//! is dropped and counted, and the writer later says how many it lost. The writer formats each
//! record as Laravel's default channel would ([`Format::Laravel`], see [`mod@format`]) or as one JSON
//! object a line ([`Format::Json`]).
//!
//! Under a flood, [`LogHandle::log_folded`] folds the repeats of one key (the caller's hash of
//! client and reason) into one line per [`FOLD_WINDOW`] that carries `"repeated":N`, and
//! [`LogHandle::log_folded_from`] folds a network's flood into one line per network and reason.
//!
//! Request values and single lines: the JSON encoder escapes every control character, so no
//! value can ever break a line. Laravel's own formatter, though, turns the `\n` and `\r` escapes
//! of the context back into real line breaks (it is built with `allowInlineLineBreaks`); to keep
//! our line byte-identical to Laravel's *and* single-line, values taken from a request are built
//! with [`Value::request`] / [`Value::request_bytes`], which replace CR, LF and every other
//! control character with U+FFFD before they reach the encoder.

mod fold;
pub mod format;
mod writer;

use std::borrow::Cow;

pub use fold::{
    FoldOutcome, Network, FOLD_TABLE_CAP, FOLD_WINDOW, NET_BITS, NET_FOLD_CLIENTS, NET_TABLE_CAP,
};
pub use format::{Formatter, Stamper};
#[cfg(unix)]
pub use writer::install_sigusr1_reopen;
pub use writer::{Captured, Destination, LogError, LogHandle, LogSink, QUEUE_CAPACITY};

/// How bad an event is; the names and order of Monolog (and so of Laravel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detailed debug information.
    Debug,
    /// Interesting events.
    Info,
    /// Normal but significant events (a reload, an expired rule).
    Notice,
    /// Exceptional occurrences that are not errors (a denial).
    Warning,
    /// Runtime errors that do not need immediate action (a rejected configuration).
    Error,
    /// Critical conditions.
    Critical,
    /// Action must be taken immediately.
    Alert,
    /// The system is unusable.
    Emergency,
}

impl Level {
    /// The name Monolog writes after the channel: `WARNING`, never `WARN`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
            Level::Alert => "ALERT",
            Level::Emergency => "EMERGENCY",
        }
    }
}

/// A context value. There is no float on purpose: a log line must never print one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string, written as a JSON string.
    Str(Box<str>),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (above `i64::MAX` PHP would have printed a float; we print the digits).
    UInt(u64),
    /// `true` or `false`.
    Bool(bool),
    /// A JSON array.
    List(Vec<Value>),
    /// JSON `null`.
    Null,
}

impl Value {
    /// A string taken from a request: CR, LF and every other control character (Unicode `Cc`)
    /// are replaced with U+FFFD, so the value stays on one line in any reader.
    pub fn request(s: &str) -> Value {
        Value::Str(
            replace_controls(Cow::Borrowed(s))
                .into_owned()
                .into_boxed_str(),
        )
    }

    /// Bytes taken from a request that may not be UTF-8: invalid sequences become U+FFFD exactly
    /// as PHP's `json_encode` with `JSON_INVALID_UTF8_SUBSTITUTE` does, then control characters
    /// are replaced as in [`Value::request`].
    pub fn request_bytes(bytes: &[u8]) -> Value {
        Value::Str(
            replace_controls(format::php_lossy_utf8(bytes))
                .into_owned()
                .into_boxed_str(),
        )
    }

    /// Bytes that may not be UTF-8, with invalid sequences replaced as PHP does and nothing else
    /// changed (for values not taken from a request, and for the golden test).
    pub fn lossy_bytes(bytes: &[u8]) -> Value {
        Value::Str(format::php_lossy_utf8(bytes).into_owned().into_boxed_str())
    }

    /// The preview of a join token (see [`token_preview`]), ready for the `token` key.
    pub fn token(token: &str, keep: usize) -> Value {
        Value::request(&token_preview(token, keep))
    }
}

fn replace_controls(s: Cow<'_, str>) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s;
    }
    Cow::Owned(
        s.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect(),
    )
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s.into_boxed_str())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::UInt(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::UInt(u64::from(n))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(list: Vec<Value>) -> Value {
        Value::List(list)
    }
}

/// One log event. Context keys are written in the order given and should be unique (PHP arrays
/// cannot hold a key twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The level.
    pub level: Level,
    /// The message: fixed text (the playbook greps for it), never request data.
    pub message: &'static str,
    /// The context, in the order it is written.
    pub context: Vec<(&'static str, Value)>,
}

impl Record {
    /// A record without context.
    pub fn new(level: Level, message: &'static str) -> Record {
        Record {
            level,
            message,
            context: Vec::new(),
        }
    }

    /// Appends one context entry (builder style).
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Record {
        self.context.push((key, value.into()));
        self
    }
}

/// The line format of `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// What Laravel's default channel writes (SPEC section 5).
    Laravel,
    /// One JSON object a line: `datetime`, `channel`, `level`, `message`, `context`.
    Json,
}

/// The validated `[log]` section.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `"-"` for stdout, else a path that is appended to (created if missing).
    pub file: String,
    /// The line format.
    pub format: Format,
    /// The channel word of a Laravel line (Laravel's `APP_ENV`).
    pub channel: String,
    /// The zone timestamps are written in (Laravel's `app.timezone`).
    pub timezone: jiff::tz::TimeZone,
    /// How many characters of a join token a log line may show.
    pub token_preview: usize,
    /// Whether each answer also gets an access log line (`[log] access`).
    pub access: crate::telemetry::access::AccessFormat,
    /// Where access lines go: `"-"` for stdout, else a path that is appended to.
    pub access_file: String,
}

impl Default for LogConfig {
    /// The defaults of SPEC section 2.
    fn default() -> LogConfig {
        LogConfig {
            file: "-".to_owned(),
            format: Format::Laravel,
            channel: "production".to_owned(),
            timezone: jiff::tz::TimeZone::UTC,
            token_preview: 6,
            access: crate::telemetry::access::AccessFormat::Off,
            access_file: "-".to_owned(),
        }
    }
}

/// The first `keep` characters of a token, then `...`.
///
/// At most half of the token's characters are ever shown, so a short token (a malformed one, or
/// a `keep` set too high) never appears whole: `token_preview("abcd", 6)` is `"ab..."`.
pub fn token_preview(token: &str, keep: usize) -> String {
    let shown = keep.min(token.chars().count() / 2);
    let end = token
        .char_indices()
        .nth(shown)
        .map_or(token.len(), |(i, _)| i);
    let mut out = String::with_capacity(end + 3);
    out.push_str(&token[..end]);
    out.push_str("...");
    out
}

/// `path` with every occurrence of `token` replaced by its preview.
///
/// The token is found in the raw spelling and in any percent-encoded spelling (`%61bc`,
/// `%61%62c`, upper or lower hex), because the router decodes the path before it matches the
/// token: an attacker's encoded token is the same secret. Raw occurrences go first: in
/// `%abcdefgh` the decoder would read `%ab` as one byte and miss the raw `abcdefgh` behind it.
/// It is found in any ASCII letter case and without its trailing spaces and tabs too: under the
/// app's case-insensitive collations (`[tokens]`) `ABC123` and `abc123 ` are the same secret, so
/// every spelling of it in the path goes, not only the one that was bound. The preview is of the
/// token as sent.
pub fn redact_path(path: &str, token: &str, keep: usize) -> String {
    let secret = token.trim_end_matches([' ', '\t']);
    if secret.is_empty() {
        return path.to_owned();
    }
    let preview = token_preview(token, keep);
    let needle = secret.to_ascii_lowercase();
    // Raw occurrences first. memmem's search is linear in the path whatever the token: a naive
    // scan would cost path × token byte comparisons, and a client chooses both (64 KiB of head).
    // Lower-casing ASCII keeps every byte where it was, so offsets in the lower-cased copy are
    // offsets in the path; and a match of one valid UTF-8 string inside another starts and ends
    // on character boundaries, so the slices below cannot split a character.
    let folded = lowered(path);
    let mut raw = String::with_capacity(path.len());
    let mut copied = 0;
    for at in memchr::memmem::find_iter(folded.as_bytes(), needle.as_bytes()) {
        raw.push_str(&path[copied..at]);
        raw.push_str(&preview);
        copied = at + needle.len();
    }
    raw.push_str(&path[copied..]);
    let out = if raw.contains('%') {
        redact_encoded(&raw, &needle, &preview)
    } else {
        // The common case: no escapes, a plain substring replacement.
        raw
    };
    match lowered(&out).find(needle.as_str()) {
        // Only a token that overlaps its own preview (one made of dots, say) can be rebuilt
        // next to one: cut the path there rather than write it whole.
        Some(at) => format!("{}{preview}", &out[..at]),
        None => out,
    }
}

/// `s` with ASCII letters lower-cased, borrowed when it has no upper-case letter.
fn lowered(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// [`redact_path`]'s second pass: occurrences of `needle` (lower-case) in the percent-decoded
/// spelling, in any ASCII letter case.
fn redact_encoded(path: &str, needle: &str, preview: &str) -> String {
    let raw = path.as_bytes();
    // Decode once, remembering where each decoded byte came from in the raw path.
    let mut decoded: Vec<(u8, usize, usize)> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex_val(raw[i + 1]), hex_val(raw[i + 2])) {
                decoded.push((h << 4 | l, i, i + 3));
                i += 3;
                continue;
            }
        }
        decoded.push((raw[i], i, i + 1));
        i += 1;
    }
    let bytes: Vec<u8> = decoded.iter().map(|d| d.0.to_ascii_lowercase()).collect();
    let mut out = String::with_capacity(path.len());
    let mut copied = 0; // raw bytes of `path` already written to `out`
                        // Linear in the path, like the raw pass (memmem yields non-overlapping matches).
    for j in memchr::memmem::find_iter(&bytes, needle.as_bytes()) {
        let start = decoded[j].1;
        let end = decoded[j + needle.len() - 1].2;
        out.push_str(&path[copied..start]);
        out.push_str(preview);
        copied = end;
    }
    out.push_str(&path[copied..]);
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_preview_keeps_the_first_characters_then_dots() {
        assert_eq!(token_preview("abc123XYZ789", 6), "abc123...");
    }

    #[test]
    fn token_preview_counts_characters_not_bytes() {
        assert_eq!(token_preview("ééééééééé", 3), "ééé...");
    }

    #[test]
    fn token_preview_never_shows_a_short_token_whole() {
        assert_eq!(token_preview("abcd", 6), "ab...");
        assert_eq!(token_preview("a", 6), "...");
        assert_eq!(token_preview("", 6), "...");
    }

    #[test]
    fn redact_path_matches_a_plain_replacement_on_raw_paths_even_the_adversarial_ones() {
        // A token that almost matches everywhere (the worst case of a naive scan) is redacted
        // exactly as str::replace would, left to right and without overlaps.
        let token = format!("{}b", "a".repeat(2000));
        let path = format!("/api/v1/events/{token}/{}", "a".repeat(6000));
        let preview = token_preview(&token, 6);
        assert_eq!(
            redact_path(&path, &token, 6),
            path.replace(&token, &preview)
        );
        assert_eq!(redact_path("/x/aaaa/aa", "aa", 6), "/x/a...a.../a...");
    }

    #[test]
    fn redact_path_replaces_every_raw_occurrence() {
        assert_eq!(
            redact_path(
                "/api/v1/gallery/abc123XYZ789/photos/abc123XYZ789",
                "abc123XYZ789",
                6
            ),
            "/api/v1/gallery/abc123.../photos/abc123..."
        );
    }

    #[test]
    fn redact_path_finds_a_percent_encoded_token() {
        assert_eq!(
            redact_path("/g/%61bc123XYZ78%39/x", "abc123XYZ789", 6),
            "/g/abc123.../x"
        );
        assert_eq!(
            redact_path("/g/%61%62%63%31%32%33%58%59%5a%37%38%39", "abc123XYZ789", 6),
            "/g/abc123..."
        );
    }

    #[test]
    fn redact_path_finds_a_raw_token_behind_an_escape_that_swallows_its_start() {
        // Found by the `log` fuzz target: `%ab` decodes as one byte, hiding the raw token.
        let out = redact_path("/e/abcdefgh%abcdefgh", "abcdefgh", 6);
        assert!(!out.contains("abcdefgh"), "{out}");
        assert_eq!(out, "/e/abcd...%abcd...");
        let out = redact_path("/api/v1/events/abcdefgh/%abcdefgh", "abcdefgh", 6);
        assert!(!out.contains("abcdefgh"), "{out}");
    }

    #[test]
    fn redact_path_never_writes_a_token_that_overlaps_its_preview() {
        // ".x." becomes "....", and "...." followed by "x." spells ".x." again. (A token made
        // only of dots is in its own preview, as in the `token` field: no path can help that.)
        for (path, token) in [("/.x.x.", ".x."), ("/%2Ex.x.", ".x."), ("/-a--a-", "-a-")] {
            let out = redact_path(path, token, 6);
            assert!(!out.contains(token), "{path} {token}: {out}");
        }
    }

    #[test]
    fn redact_path_finds_every_case_and_trailing_blank_spelling_of_the_token() {
        // Under a case-insensitive collation these are all the same secret.
        for (path, token) in [
            ("/g/ABC123xyz789/x", "ABC123xyz789"),
            ("/g/abc123xyz789%20/x", "abc123xyz789 "),
            ("/g/abc123XYZ789%09/x", "abc123XYZ789\t"),
            ("/g/ABC123XYZ789/photos/abc123xyz789", "ABC123XYZ789"),
            ("/g/abc123xyz789/photos/%41BC123xyz789%20", "abc123xyz789"),
            ("/g/%41%42%43123xyz789", "ABC123xyz789"),
        ] {
            let out = redact_path(path, token, 6);
            assert!(
                !out.to_ascii_lowercase().contains("abc123xyz789"),
                "{path} {token:?}: {out}"
            );
            assert!(
                out.contains(&token_preview(token, 6)),
                "the preview is of the token as sent: {out}"
            );
        }
        assert_eq!(
            redact_path("/g/ABC123xyz789%20/x", "ABC123xyz789 ", 6),
            "/g/ABC123...%20/x"
        );
        assert_eq!(redact_path("/a/b", "   ", 6), "/a/b");
    }

    #[test]
    fn redact_path_leaves_a_path_without_the_token_alone() {
        assert_eq!(redact_path("/a/%zz/%4", "abc123XYZ789", 6), "/a/%zz/%4");
        assert_eq!(redact_path("/a/b", "", 6), "/a/b");
    }

    #[test]
    fn request_values_have_no_control_characters() {
        assert_eq!(
            Value::request("a\r\nb\u{7f}\u{85}c\td"),
            Value::Str("a\u{FFFD}\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}d".into())
        );
        assert_eq!(
            Value::request_bytes(b"a\xffb\n"),
            Value::Str("a\u{FFFD}b\u{FFFD}".into())
        );
    }
}
