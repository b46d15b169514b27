//! The value syntaxes of the configuration file: durations (`500ms`, `10s`, `15m`, `2h`, `1d`),
//! rates (`300/min`), sizes (`64KiB`) and instants (RFC 3339, parsed here; written by `clock.rs`). Each parser returns a message that
//! says what was expected, so the caller can name the key and the fix. A leaf: it imports
//! nothing of the shield.

use std::time::Duration;

/// Parses `500ms`, `10s`, `15m`, `2h`, `1d` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("{text:?} has no unit: write e.g. \"500ms\", \"10s\", \"15m\", \"2h\" or \"1d\"")
    })?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number: write e.g. \"10s\""))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A sustained rate: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// The time one event's worth of quota takes to replenish.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => return write!(f, "{}/{}ms", self.count, self.per.as_millis()),
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

/// Parses `N/s`, `N/min`, `N/h` (N a whole number ≥ 1).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let (count, unit) = text.split_once('/').ok_or_else(|| {
        format!("{text:?} is not a rate: write e.g. \"300/min\", \"10/s\" or \"1000/h\"")
    })?;
    let count: u32 = count.trim().parse().map_err(|_| {
        format!("{text:?} does not start with a whole number: write e.g. \"300/min\"")
    })?;
    if count == 0 {
        return Err(format!(
            "{text:?} allows nothing: a rate needs at least 1 (to refuse everything, use a switch)"
        ));
    }
    let per = match unit.trim() {
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}: use s, min or h"
            ))
        }
    };
    Ok(Rate { count, per })
}

/// Parses `512`, `64KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} does not start with a whole number: write e.g. \"64MiB\"")
    })?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}: use B, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses an RFC 3339 instant (`2026-11-28T06:00:00Z`) into a Unix time in seconds.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(jiff::Timestamp::as_second)
        .map_err(|e| {
            format!(
                "{text:?} is not an RFC 3339 instant ({e}): write e.g. \"2026-11-28T06:00:00Z\""
            )
        })
}

/// Writes a duration the way the configuration file spells it (largest whole unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_documented_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn durations_without_a_unit_or_number_are_refused() {
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn rates_need_a_positive_count_and_a_known_unit() {
        assert_eq!(
            parse_rate("300/min"),
            Ok(Rate {
                count: 300,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            parse_rate("10/s").map(|r| r.interval()),
            Ok(Duration::from_millis(100))
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("300").is_err());
        assert!(parse_rate("300/week").is_err());
        assert_eq!(
            parse_rate("300/min").map(|r| r.to_string()),
            Ok("300/min".into())
        );
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("64XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn instants_are_rfc3339() {
        assert_eq!(parse_instant("1970-01-01T00:01:00Z"), Ok(60));
        assert!(parse_instant("tomorrow").is_err());
    }

    #[test]
    fn durations_format_back_to_their_spelling() {
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
