//! Finch's rate limits, on Finch time: per product for the whole application
//! (all tokens together) on a sliding 60-second window, and the IP limit
//! (1,000 requests in 5 minutes, then a 60-minute penalty). Windows are Finch
//! time, so at `--time-scale 1000` a minute's budget is spent and renewed in
//! 60 ms; `--rate-limit-scale` multiplies the request counts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use finch_core::Product;

use super::clock::span;

pub const WINDOW: Duration = Duration::from_secs(60);
pub const IP_WINDOW: Duration = Duration::from_secs(5 * 60);
pub const IP_MAX_REQUESTS: f64 = 1000.0;
pub const IP_PENALTY: Duration = Duration::from_secs(60 * 60);

/// A refusal and how long (Finch time) until a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// `finch_application_rl`: this product's window is full.
    Application(Duration),
    /// `finch_api_ip_rl`: every product, until the penalty ends.
    Ip(Duration),
}

#[derive(Debug, Default)]
struct Hits {
    by_product: HashMap<Product, VecDeque<DateTime<Utc>>>,
    /// Every request, for the IP limit.
    all: VecDeque<DateTime<Utc>>,
    penalty_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct RateLimiter {
    /// Replaced whole when the scale changes at run time.
    limits: RwLock<Limits>,
    hits: Mutex<Hits>,
}

#[derive(Debug, Default)]
struct Limits {
    /// Requests per window by product; empty when limits are off.
    by_product: HashMap<Product, usize>,
    /// Requests per IP window; `None` when limits are off.
    ip: Option<usize>,
}

impl Limits {
    fn scaled(scale: f64) -> Self {
        if scale <= 0.0 {
            return Self::default();
        }
        let scaled = |count: f64| (count * scale).round().max(1.0) as usize;
        Self {
            by_product: Product::ALL
                .into_iter()
                .map(|product| (product, scaled(f64::from(product.rate_limit_per_minute()))))
                .collect(),
            ip: Some(scaled(IP_MAX_REQUESTS)),
        }
    }
}

impl RateLimiter {
    /// `scale` multiplies every limit; zero or less turns limiting off.
    pub fn new(scale: f64) -> Self {
        Self {
            limits: RwLock::new(Limits::scaled(scale)),
            hits: Mutex::new(Hits::default()),
        }
    }

    /// Applies a new scale from now on; requests already counted stay in
    /// their windows, so a raised limit does not forget the recent past.
    pub fn set_scale(&self, scale: f64) {
        *self.limits.write().expect("rate limits lock") = Limits::scaled(scale);
    }

    pub fn limit(&self, product: Product) -> Option<usize> {
        self.limits
            .read()
            .expect("rate limits lock")
            .by_product
            .get(&product)
            .copied()
    }

    fn ip_limit(&self) -> Option<usize> {
        self.limits.read().expect("rate limits lock").ip
    }

    /// Counts a request at Finch time `now`. Requests refused by the product
    /// limit are not counted against it, so a client that backs off gets
    /// through once the window has slid past its earlier requests; every
    /// request counts towards the IP limit, as it would at Finch's edge.
    pub fn check(&self, product: Product, now: DateTime<Utc>) -> Result<(), Limited> {
        let Some(limit) = self.limit(product) else {
            return Ok(());
        };
        let mut hits = self.hits.lock().expect("rate limiter lock");
        if let Some(until) = hits.penalty_until {
            if now < until {
                return Err(Limited::Ip((until - now).to_std().unwrap_or_default()));
            }
            hits.penalty_until = None;
        }
        let ip_window = span(IP_WINDOW);
        while hits.all.front().is_some_and(|t| now - *t >= ip_window) {
            hits.all.pop_front();
        }
        hits.all.push_back(now);
        if self.ip_limit().is_some_and(|max| hits.all.len() > max) {
            hits.penalty_until = Some(now + span(IP_PENALTY));
            hits.all.clear();
            return Err(Limited::Ip(IP_PENALTY));
        }
        let window = span(WINDOW);
        let product_hits = hits.by_product.entry(product).or_default();
        while product_hits.front().is_some_and(|t| now - *t >= window) {
            product_hits.pop_front();
        }
        if product_hits.len() >= limit {
            let oldest = *product_hits.front().expect("the window is full");
            return Err(Limited::Application(
                (oldest + window - now).to_std().unwrap_or_default(),
            ));
        }
        product_hits.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn limits_scale_and_never_reach_zero() {
        let limiter = RateLimiter::new(0.1);
        assert_eq!(limiter.limit(Product::Company), Some(2));
        assert_eq!(limiter.limit(Product::Payment), Some(1));
        assert_eq!(RateLimiter::new(0.0).limit(Product::Company), None);
    }

    #[test]
    fn a_new_scale_applies_to_the_next_request() {
        let limiter = RateLimiter::new(0.0);
        for i in 0..50 {
            assert!(limiter.check(Product::Company, at(i)).is_ok());
        }
        limiter.set_scale(0.1);
        assert_eq!(limiter.limit(Product::Company), Some(2));
        assert!(limiter.check(Product::Company, at(100)).is_ok());
        assert!(limiter.check(Product::Company, at(101)).is_ok());
        assert!(limiter.check(Product::Company, at(102)).is_err());
        limiter.set_scale(0.0);
        assert!(limiter.check(Product::Company, at(103)).is_ok());
    }

    #[test]
    fn products_are_counted_separately() {
        let limiter = RateLimiter::new(0.1);
        assert!(limiter.check(Product::Company, at(0)).is_ok());
        assert!(limiter.check(Product::Company, at(1)).is_ok());
        assert_eq!(
            limiter.check(Product::Company, at(2)),
            Err(Limited::Application(Duration::from_secs(58)))
        );
        assert!(limiter.check(Product::Directory, at(2)).is_ok());
    }

    #[test]
    fn window_slides_on_finch_time() {
        let limiter = RateLimiter::new(0.05);
        assert!(limiter.check(Product::Company, at(0)).is_ok());
        assert!(limiter.check(Product::Company, at(59)).is_err());
        assert!(limiter.check(Product::Company, at(60)).is_ok());
    }

    #[test]
    fn too_many_requests_from_one_ip_earn_an_hour_long_penalty() {
        // 0.01 scale: 10 requests per 5 minutes, one a minute per product.
        let limiter = RateLimiter::new(0.01);
        let mut refused = None;
        for i in 0..11 {
            let product = Product::ALL[i % 6];
            if let Err(limited) = limiter.check(product, at(i as i64 * 10)) {
                refused = Some((i, limited));
                break;
            }
        }
        assert!(matches!(refused, Some((10, Limited::Ip(_)))), "{refused:?}");
        assert!(matches!(
            limiter.check(Product::Employment, at(3000)),
            Err(Limited::Ip(_))
        ));
        assert!(limiter.check(Product::Employment, at(100 + 3600)).is_ok());
    }
}
