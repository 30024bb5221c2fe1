//! How long to wait before reconnecting to RabbitMQ.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Doubling waits from [`Backoff::FIRST`] to [`Backoff::LONGEST`]: quick
/// after a blip, without hammering a broker that is down for a while.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The wait before the next attempt.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const LONGEST: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait [`Backoff::wait`] will take next, for logs.
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// Starts again from the shortest wait, after a success.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Sleeps the current wait and doubles the next one; false if `stop`
    /// fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let waited = tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(self.next) => true,
        };
        self.next = (self.next * 2).min(Self::LONGEST);
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_double_up_to_the_cap_and_start_over_after_a_reset() {
        let running = CancellationToken::new();
        let mut backoff = Backoff::new();
        assert!(backoff.wait(&running).await);
        // A stopped token ends each wait at once, so the ladder reads fast.
        let stopped = CancellationToken::new();
        stopped.cancel();
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(backoff.next_delay().as_millis());
            assert!(!backoff.wait(&stopped).await);
        }
        assert_eq!(waits, [400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::FIRST);
    }
}
