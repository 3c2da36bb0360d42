//! Time as the domain sees it: UTC instants, and a clock port so tests and the emulator can
//! move time.

pub use chrono::{DateTime, Duration, NaiveDate, Utc};

pub type Timestamp = DateTime<Utc>;

/// Where "now" comes from. Production uses [`SystemClock`]; tests pass a fixed clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that always says the same instant (tests, replays).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// Start of the UTC hour that contains `t` (usage buckets are hourly).
pub fn hour_start(t: Timestamp) -> Timestamp {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).expect("in range")
}
