//! Spacing replays so that a large backlog does not starve live events.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `per_second` that holds at most `burst` tokens.
/// Slots are scheduled on absolute deadlines, so sleeping late once does not
/// lower the long-run rate, while the burst cap stops a stall (a slow
/// confirm, a database write) from being followed by a flood.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    burst: u32,
    next: Option<Instant>,
}

impl Pacer {
    /// `per_second` must be at least 1.
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            interval: Duration::from_secs(1) / per_second,
            // A tenth of a second's worth, and at least one.
            burst: (per_second / 10).max(1),
            next: None,
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&mut self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
    }

    /// Takes the next slot as seen at `now` and returns when it begins.
    fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next {
            None => now,
            Some(next) => {
                let banked = self.interval * (self.burst - 1);
                next.max(now.checked_sub(banked).unwrap_or(now))
            }
        };
        self.next = Some(slot + self.interval);
        slot.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_rate() {
        let mut pacer = Pacer::new(100);
        let start = Instant::now();
        let mut slot = start;
        for _ in 0..101 {
            // The caller sleeps until each slot.
            slot = pacer.reserve(slot);
        }
        assert_eq!(slot - start, Duration::from_secs(1));
    }

    #[test]
    fn a_stall_banks_at_most_the_burst() {
        let mut pacer = Pacer::new(100);
        let start = Instant::now();
        pacer.reserve(start);
        let late = start + Duration::from_secs(5);
        // Ten slots (a tenth of a second's worth) are free at once, then the rate resumes.
        for _ in 0..10 {
            assert_eq!(pacer.reserve(late), late);
        }
        assert_eq!(pacer.reserve(late), late + Duration::from_millis(10));
    }
}
