//! Wrong admin tokens, counted per client IP. Past the allowance a client is
//! refused (429) before its token is compared at all, so guessing goes no
//! faster than the allowance whatever the guess, and the log gets the first
//! failure of a minute at once and one summary line per minute after it,
//! however hard the port is hammered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often failures are summed up in the log (and stale clients forgotten).
const SUMMARY_WINDOW: Duration = Duration::from_secs(60);

/// The outcome of a wrong token.
pub(crate) enum Verdict {
    /// Within the allowance: 401.
    Unauthorized,
    /// Over it: 429, and nothing from this client is looked at until then.
    Refused { retry_after: Duration },
}

pub(crate) struct AuthThrottle {
    /// Each client's allowance of wrong tokens (GCRA: a burst, then one per interval).
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients over their allowance, and until when they stay refused.
    refused_until: Mutex<HashMap<IpAddr, Instant>>,
    /// What happened since the last summary line.
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Wrong tokens presented (within the allowance or not).
    failures: u64,
    /// Requests answered 429 without a look at their token.
    refused: u64,
    /// Distinct clients behind them.
    clients: std::collections::HashSet<IpAddr>,
}

impl AuthThrottle {
    /// A throttle whose summary task runs until the throttle is dropped.
    pub(super) fn start(per_minute: NonZeroU32) -> Arc<Self> {
        let throttle = Arc::new(Self {
            failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            refused_until: Mutex::new(HashMap::new()),
            window: Mutex::new(Window::default()),
        });
        tokio::spawn(summarise(Arc::downgrade(&throttle)));
        throttle
    }

    /// How long `client` stays refused, if it is.
    pub(crate) fn refused(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut refused = lock(&self.refused_until);
        match refused.get(&client) {
            Some(until) if *until > now => {
                let left = *until - now;
                drop(refused);
                let mut window = lock(&self.window);
                window.refused += 1;
                window.clients.insert(client);
                Some(left)
            }
            Some(_) => {
                refused.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Counts a wrong token from `client`.
    pub(crate) fn failed(&self, client: IpAddr) -> Verdict {
        let first_of_window = {
            let mut window = lock(&self.window);
            window.failures += 1;
            window.clients.insert(client);
            window.failures == 1
        };
        if first_of_window {
            tracing::warn!(
                client = %client,
                "admin API called with a wrong token; further failures this minute are summed up"
            );
        }
        match self.failures.check_key(&client) {
            Ok(()) => Verdict::Unauthorized,
            Err(not_until) => {
                let retry_after = not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_secs(1));
                lock(&self.refused_until).insert(client, Instant::now() + retry_after);
                Verdict::Refused { retry_after }
            }
        }
    }

    /// Logs the window that ended, if anything happened in it, and forgets
    /// clients whose allowance has refilled.
    fn close_window(&self) {
        let window = std::mem::take(&mut *lock(&self.window));
        let now = Instant::now();
        lock(&self.refused_until).retain(|_, until| *until > now);
        self.failures.retain_recent();
        if window.failures > 0 || window.refused > 0 {
            tracing::warn!(
                failures = window.failures,
                refused = window.refused,
                clients = window.clients.len(),
                "admin API: {} wrong tokens and {} refused requests from {} clients in the last minute",
                window.failures,
                window.refused,
                window.clients.len()
            );
        }
    }
}

async fn summarise(throttle: Weak<AuthThrottle>) {
    let mut ticks = tokio::time::interval(SUMMARY_WINDOW);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match throttle.upgrade() {
            Some(throttle) => throttle.close_window(),
            None => return,
        }
    }
}

/// The maps hold plain counts: a panic elsewhere cannot leave them half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
