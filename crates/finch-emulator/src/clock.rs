//! Finch time: the clock every schedule, delay and rate-limit window of the
//! emulator is measured on. It runs `time_scale` times faster than the wall
//! clock (not at all when frozen) and can be moved forward on demand, so a
//! simulated week can pass in minutes, or in one call from a test.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug)]
pub struct FinchClock {
    /// Changes together when the pace changes, so Finch time never jumps.
    pace: Mutex<Pace>,
}

#[derive(Debug)]
struct Pace {
    /// Wall-clock instant `origin` corresponds to.
    origin_wall: Instant,
    /// Finch time at `origin_wall`, including everything `advance` added.
    origin: DateTime<Utc>,
    /// Finch seconds per wall second; 0 when the clock only moves by `advance`.
    rate: f64,
}

impl Pace {
    fn now(&self) -> DateTime<Utc> {
        let running = self.origin_wall.elapsed().mul_f64(self.rate);
        self.origin + chrono::Duration::from_std(running).unwrap_or_default()
    }
}

impl FinchClock {
    pub fn new(origin: DateTime<Utc>, time_scale: f64, frozen: bool) -> Self {
        Self {
            pace: Mutex::new(Pace {
                origin_wall: Instant::now(),
                origin,
                rate: if frozen { 0.0 } else { time_scale },
            }),
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().expect("clock lock")
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.pace().now()
    }

    /// Moves Finch time forward by `by` at once.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut pace = self.pace();
        pace.origin += chrono::Duration::from_std(by).unwrap_or_default();
        pace.now()
    }

    /// Runs Finch time at `rate` Finch seconds per wall second from now on
    /// (0 freezes it), continuing from where it is.
    pub fn set_rate(&self, rate: f64) {
        let mut pace = self.pace();
        pace.origin = pace.now();
        pace.origin_wall = Instant::now();
        pace.rate = rate.max(0.0);
    }

    pub fn rate(&self) -> f64 {
        self.pace().rate
    }

    pub fn is_frozen(&self) -> bool {
        self.rate() == 0.0
    }
}

/// A Finch-time span as a `chrono` duration, saturating instead of failing.
pub fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let origin = DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = FinchClock::new(origin, 1000.0, true);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), origin);
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(clock.now(), origin + chrono::Duration::days(1));
    }

    #[test]
    fn a_running_clock_runs_scaled() {
        let clock = FinchClock::new(Utc::now(), 1000.0, false);
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let passed = clock.now() - before;
        assert!(passed >= chrono::Duration::seconds(19), "{passed}");
    }

    #[test]
    fn a_new_pace_continues_from_the_current_time() {
        let clock = FinchClock::new(Utc::now(), 1000.0, false);
        std::thread::sleep(Duration::from_millis(20));
        clock.set_rate(0.0);
        let frozen_at = clock.now();
        assert!(frozen_at - clock.now() == chrono::Duration::zero());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), frozen_at);
        assert!(clock.is_frozen());
        clock.set_rate(1000.0);
        std::thread::sleep(Duration::from_millis(10));
        let moved = clock.now() - frozen_at;
        assert!(moved >= chrono::Duration::seconds(9), "{moved}");
        assert!(moved < chrono::Duration::hours(1), "{moved}");
    }
}
