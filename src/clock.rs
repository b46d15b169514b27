//! Time, read in one place: a [`Clock`] hands out [`Now`] readings (the wall time and the
//! monotonic instant, taken together), and the shield's RFC 3339 texts are written here.
//!
//! Every part of the shield that needs the time is handed a [`SharedClock`]: the system one in
//! production, a [`ManualClock`] in tests, so that limits, expiries and background ticks are
//! tested without waiting. A request reads the clock once, when its context is built. Nothing
//! outside this file reads the system clock (`clippy.toml` refuses `SystemTime::now`,
//! `Instant::now` and the date crate's `now` elsewhere).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One reading of a clock: when (Unix microseconds) and the monotonic instant of that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    unix_micros: i64,
    instant: Instant,
}

impl Now {
    /// A reading made of its two parts (for clocks and tests).
    pub fn new(unix_micros: i64, instant: Instant) -> Now {
        Now {
            unix_micros,
            instant,
        }
    }

    /// Unix microseconds.
    pub fn unix_micros(&self) -> i64 {
        self.unix_micros
    }

    /// Unix milliseconds.
    pub fn unix_ms(&self) -> i64 {
        self.unix_micros.div_euclid(1000)
    }

    /// Unix seconds.
    pub fn unix(&self) -> i64 {
        self.unix_micros.div_euclid(1_000_000)
    }

    /// The monotonic instant (for windows, folds and latencies: never goes back).
    pub fn instant(&self) -> Instant {
        self.instant
    }
}

/// Where time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now(&self) -> Now;
}

/// A clock every part of the shield can hold.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clocks: `SystemTime` for the wall time, `Instant` for the monotonic one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads the system's clocks.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Now {
        let unix_micros = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Now {
            unix_micros,
            instant: Instant::now(),
        }
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to ([`ManualClock::advance`]): for tests.
#[derive(Debug)]
pub struct ManualClock {
    start_unix_micros: i64,
    start: Instant,
    elapsed_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `unix_ms` (Unix milliseconds).
    #[allow(clippy::disallowed_methods)]
    pub fn new(unix_ms: i64) -> ManualClock {
        ManualClock {
            start_unix_micros: unix_ms.saturating_mul(1000),
            // Only an anchor: the clock's instants are this plus the time it was advanced.
            start: Instant::now(),
            elapsed_nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        let elapsed = Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire));
        let micros = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
        Now {
            unix_micros: self.start_unix_micros.saturating_add(micros),
            instant: self.start + elapsed,
        }
    }
}

/// Unix seconds as `2026-11-28T06:00:00Z` (the seconds themselves when out of range).
pub fn rfc3339(unix: i64) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(t) => format!("{}Z", t.strftime("%Y-%m-%dT%H:%M:%S")),
        Err(_) => unix.to_string(),
    }
}

/// Unix milliseconds as `2026-11-27T20:00:00.123Z` (the milliseconds themselves when out of
/// range).
pub fn rfc3339_ms(unix_ms: i64) -> String {
    match jiff::Timestamp::from_second(unix_ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{}.{:03}Z",
            t.strftime("%Y-%m-%dT%H:%M:%S"),
            unix_ms.rem_euclid(1000)
        ),
        Err(_) => unix_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_both_readings_move_together() {
        let clock = ManualClock::new(1_800_000_000_000);
        let a = clock.now();
        assert_eq!(clock.now(), a);
        clock.advance(Duration::from_millis(1500));
        let b = clock.now();
        assert_eq!(b.unix_ms() - a.unix_ms(), 1500);
        assert_eq!(b.instant() - a.instant(), Duration::from_millis(1500));
        assert_eq!(b.unix(), 1_800_000_001);
    }

    #[test]
    fn rfc3339_texts_are_utc_with_a_z() {
        assert_eq!(rfc3339(1_795_802_400), "2026-11-27T18:00:00Z");
        assert_eq!(rfc3339_ms(1_795_802_400_123), "2026-11-27T18:00:00.123Z");
    }
}
