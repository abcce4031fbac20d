//! Injected time source.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A source of wall-clock time. Everything in sluice that reads the time takes a `Clock`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// Now as Unix milliseconds.
    fn now_millis(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(
                (start.unix_timestamp_nanos() / 1_000_000) as i64,
            )),
        }
    }

    /// Moves the clock forward (or backward, with a negative value).
    pub fn advance_millis(&self, ms: i64) {
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, t: OffsetDateTime) {
        self.millis.store(
            (t.unix_timestamp_nanos() / 1_000_000) as i64,
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let ms = self.millis.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_000).unwrap());
        assert_eq!(c.now().unix_timestamp(), 1_000);
        c.advance_millis(1_500);
        assert_eq!(c.now_millis(), 1_001_500);
    }
}
