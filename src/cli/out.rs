//! What the commands print, and how: every line of the binary's own output goes through here.
//!
//! - [`line`] (the [`say!`](crate::say) macro) writes one line to stdout for a command that
//!   ends (`check`, `ctl`, `kuma-template`): when the reader has gone (`ctl denials | head`,
//!   `kuma-template | true`), the command ends at once and quietly with exit 0, as `head`'s
//!   pipeline expects, instead of panicking as `println!` does on a closed pipe.
//! - [`note`] (the [`note!`](crate::note) macro) writes for a process that keeps serving
//!   (`run`, `demo`): a closed stdout is ignored; the shield goes on.
//! - [`complain`] (the [`complain!`](crate::complain) macro) writes to stderr and ignores
//!   errors (there is nowhere left to report them).
//! - [`Table`] prints aligned columns; [`duration`] and [`time`] are how people read spans and
//!   instants (`2h 5m`, not `7500s`; times in UTC, said so in the headers).

use std::io::Write as _;

/// Writes one line to stdout; a closed pipe ends the command quietly (exit 0).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        gone(e);
    }
}

/// Writes `text` to stdout as it is (no newline added); a closed pipe ends the command quietly.
pub fn text(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        gone(e);
    }
}

/// Flushes stdout at the end of a command; a closed pipe is not an error.
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        gone(e);
    }
}

/// Writes one line to stdout for a serving process: errors are ignored.
pub fn note(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

/// Writes one line to stderr; errors are ignored.
pub fn complain(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Stdout failed: a reader that went away ends the command with 0, anything else with 1.
fn gone(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    complain(format_args!("joinshield: cannot write the output: {e}"));
    std::process::exit(1);
}

/// `say!("…", args)`: one line to stdout for a command that ends (see [`line`]).
#[macro_export]
macro_rules! say {
    () => { $crate::cli::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::out::line(format_args!($($arg)*)) };
}

/// `note!("…", args)`: one line to stdout for a serving process (see [`note`]).
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => { $crate::cli::out::note(format_args!($($arg)*)) };
}

/// `complain!("…", args)`: one line to stderr (see [`complain`]).
#[macro_export]
macro_rules! complain {
    ($($arg:tt)*) => { $crate::cli::out::complain(format_args!($($arg)*)) };
}

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and durations.
    Right,
}

/// A table for people: a header row, then rows, every column as wide as its widest cell and
/// two spaces between columns; the last column is not padded.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones are dropped).
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text (no trailing spaces), `indent` spaces before each.
    pub fn render(&self, indent: usize) -> Vec<String> {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i]))
                    .chain([width(h)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        std::iter::once(&headers)
            .chain(&self.rows)
            .map(|cells| {
                let last = cells.len().saturating_sub(1);
                let mut line = " ".repeat(indent);
                for (i, cell) in cells.iter().enumerate() {
                    let pad = widths[i].saturating_sub(width(cell));
                    match self.columns[i].1 {
                        Align::Right => {
                            line.push_str(&" ".repeat(pad));
                            line.push_str(cell);
                        }
                        Align::Left => {
                            line.push_str(cell);
                            if i != last {
                                line.push_str(&" ".repeat(pad));
                            }
                        }
                    }
                    if i != last {
                        line.push_str("  ");
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    /// Prints the table to stdout (see [`line`]).
    pub fn print(&self, indent: usize) {
        for l in self.render(indent) {
            line(format_args!("{l}"));
        }
    }
}

/// A span as people read it: its two largest units, `45s`, `14m 30s`, `2h`, `1d 3h`.
pub fn duration(secs: u64) -> String {
    let units = [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, size)| secs >= *size) else {
        return "0s".to_string();
    };
    let (unit, size) = units[first];
    let mut out = format!("{}{unit}", secs / size);
    if let Some((next, next_size)) = units.get(first + 1) {
        let rest = (secs % size) / next_size;
        if rest > 0 {
            out.push_str(&format!(" {rest}{next}"));
        }
    }
    out
}

/// An instant (Unix seconds) as people read it, in UTC: `2026-11-27 17:44:15`.
pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// An RFC 3339 instant as people read it (see [`time`]); other text is shown as it is.
pub fn time_text(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => time(t.as_second()),
        Err(_) => rfc3339.to_string(),
    }
}

/// `n` and the noun, with an `s` unless `n` is 1: `1 ban`, `3 bans`.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(870), "14m 30s");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(7260), "2h 1m");
        assert_eq!(duration(97_200), "1d 3h");
        assert_eq!(duration(86_400 * 365), "365d");
    }

    #[test]
    fn a_table_aligns_its_columns_and_ends_no_line_with_spaces() {
        let mut t = Table::new(&[
            ("network", Align::Left),
            ("left", Align::Right),
            ("reason", Align::Left),
        ]);
        t.row(["198.51.100.0/24", "2h", "SEV-2"]);
        t.row(["203.0.113.7/32", "14m 30s", ""]);
        assert_eq!(
            t.render(0),
            [
                "network             left  reason",
                "198.51.100.0/24       2h  SEV-2",
                "203.0.113.7/32   14m 30s",
            ]
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(1_795_802_400), "2026-11-27 18:00:00");
        assert_eq!(time_text("2026-11-27T18:00:00Z"), "2026-11-27 18:00:00");
        assert_eq!(time_text("soon"), "soon");
    }
}
