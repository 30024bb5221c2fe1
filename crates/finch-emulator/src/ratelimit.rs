//! Finch's application rate limits: per product, all tokens of the application
//! together, counted on a sliding 60-second window.
//!
//! The window stays 60 wall-clock seconds whatever `--time-scale` says: the
//! service's own limiter is configured in requests per real minute, and a
//! compressed window would make every rate-limit figure in a benchmark
//! meaningless. `--rate-limit-scale` is the knob for making limits bite sooner.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use finch_core::Product;
use tokio::time::Instant;

pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct RateLimiter {
    limits: HashMap<Product, usize>,
    window: Duration,
    hits: Mutex<HashMap<Product, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// `scale` multiplies every limit; zero or less turns limiting off.
    pub fn new(scale: f64) -> Self {
        Self::with_window(scale, WINDOW)
    }

    pub fn with_window(scale: f64, window: Duration) -> Self {
        let limits = if scale > 0.0 {
            Product::ALL
                .into_iter()
                .map(|product| {
                    let per_minute = f64::from(product.rate_limit_per_minute());
                    let scaled = (per_minute * scale).round().max(1.0);
                    (product, scaled as usize)
                })
                .collect()
        } else {
            HashMap::new()
        };
        Self {
            limits,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self, product: Product) -> Option<usize> {
        self.limits.get(&product).copied()
    }

    /// Counts a request against its product. `false` means it is over the
    /// limit; refused requests are not counted, so a client that backs off
    /// gets through once the window has slid past its earlier requests.
    pub fn check(&self, product: Product) -> bool {
        let Some(limit) = self.limit(product) else {
            return true;
        };
        let now = Instant::now();
        let mut hits = self.hits.lock().expect("rate limiter lock");
        let window = hits.entry(product).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            window.pop_front();
        }
        if window.len() >= limit {
            return false;
        }
        window.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_scale_and_never_reach_zero() {
        let limiter = RateLimiter::new(0.1);
        assert_eq!(limiter.limit(Product::Company), Some(2));
        assert_eq!(limiter.limit(Product::Payment), Some(1));
        assert_eq!(RateLimiter::new(0.0).limit(Product::Company), None);
    }

    #[test]
    fn products_are_counted_separately() {
        let limiter = RateLimiter::new(0.1);
        assert!(limiter.check(Product::Company));
        assert!(limiter.check(Product::Company));
        assert!(!limiter.check(Product::Company));
        assert!(limiter.check(Product::Directory));
    }

    #[test]
    fn window_slides() {
        let limiter = RateLimiter::with_window(0.05, Duration::from_millis(300));
        assert!(limiter.check(Product::Company));
        assert!(!limiter.check(Product::Company));
        std::thread::sleep(Duration::from_millis(350));
        assert!(limiter.check(Product::Company));
    }
}
