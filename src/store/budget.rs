//! The application-wide Finch rate budget, shared by every worker process
//! through Postgres. Finch counts requests per product on a sliding
//! 60-second window; so do we: a log of the requests sent in the window,
//! and a product row locked while a worker decides whether it may send one.
//! Times come from the database clock, so workers' clocks need not agree.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::config::RateLimits;
use crate::finch::Product;

/// The answer to "may I send a request now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Granted,
    /// Not before this much time has passed.
    Wait(Duration),
}

#[derive(Debug, Clone)]
pub struct RateBudget {
    pool: PgPool,
    limits: HashMap<Product, u32>,
    /// Finch's window plus a margin for requests still in transit.
    window: Duration,
    pause: Duration,
}

impl RateBudget {
    pub fn new(pool: PgPool, limits: &RateLimits) -> Self {
        let map = HashMap::from([
            (Product::Company, limits.company),
            (Product::Directory, limits.directory),
            (Product::Individual, limits.individual),
            (Product::Employment, limits.employment),
            (Product::Payment, limits.payment),
            (Product::PayStatement, limits.pay_statement),
        ]);
        Self {
            pool,
            limits: map,
            window: limits.window + limits.margin,
            pause: limits.pause,
        }
    }

    pub fn limit(&self, product: Product) -> u32 {
        self.limits.get(&product).copied().unwrap_or(1)
    }

    /// Creates the product rows the lock is taken on.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        let products: Vec<&str> = Product::ALL.iter().map(|p| p.as_str()).collect();
        sqlx::query(
            "INSERT INTO finch_rate_limits (product) SELECT UNNEST($1::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(products)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes one request from the product's budget if there is room.
    pub async fn try_acquire(&self, product: Product) -> Result<Grant, StoreError> {
        self.try_acquire_within(product, self.limit(product)).await
    }

    /// Takes one request only while fewer than `ceiling` were sent in the
    /// window: background work (sweeps) stays below it, so the rest of the
    /// budget is always there for events.
    pub async fn try_acquire_below(
        &self,
        product: Product,
        reserve: f64,
    ) -> Result<Grant, StoreError> {
        let limit = f64::from(self.limit(product));
        let ceiling = ((limit * (1.0 - reserve)).floor() as u32).max(1);
        self.try_acquire_within(product, ceiling).await
    }

    async fn try_acquire_within(
        &self,
        product: Product,
        ceiling: u32,
    ) -> Result<Grant, StoreError> {
        let window_secs = self.window.as_secs_f64();
        let mut tx = self.pool.begin().await?;
        let row: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT blocked_until FROM finch_rate_limits WHERE product = $1 FOR UPDATE",
        )
        .bind(product.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(blocked_until) = row else {
            drop(tx);
            self.prepare().await?;
            return Ok(Grant::Wait(Duration::ZERO));
        };
        // Read once the lock is held: waiting for it may have taken a while.
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *tx)
            .await?;
        if let Some(until) = blocked_until.filter(|until| *until > now) {
            return Ok(Grant::Wait(until_duration(now, until)));
        }
        sqlx::query(
            "DELETE FROM finch_rate_requests
             WHERE product = $1 AND sent_at <= $2 - make_interval(secs => $3)",
        )
        .bind(product.as_str())
        .bind(now)
        .bind(window_secs)
        .execute(&mut *tx)
        .await?;
        // The limit-th newest request in the window: while it is inside, the
        // window is full; once it slides out there is room for one more.
        let limit = i64::from(ceiling);
        let blocking: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT sent_at FROM finch_rate_requests
             WHERE product = $1 AND sent_at > $2 - make_interval(secs => $3)
             ORDER BY sent_at DESC OFFSET $4 - 1 LIMIT 1",
        )
        .bind(product.as_str())
        .bind(now)
        .bind(window_secs)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(sent_at) = blocking {
            let free_at = sent_at + chrono::Duration::from_std(self.window).unwrap_or_default();
            return Ok(Grant::Wait(until_duration(now, free_at)));
        }
        sqlx::query(
            "INSERT INTO finch_rate_requests (product, sent_at) VALUES ($1, clock_timestamp())",
        )
        .bind(product.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Grant::Granted)
    }

    /// Stops everyone calling `product` for at least the pause (or Finch's
    /// Retry-After, if longer), after a 429.
    pub async fn pause(
        &self,
        product: Product,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let pause = retry_after.map_or(self.pause, |after| after.max(self.pause));
        self.block(&[product], pause).await
    }

    /// Stops everyone calling any product for `pause` (Finch's IP penalty).
    pub async fn pause_all(&self, pause: Duration) -> Result<(), StoreError> {
        self.block(&Product::ALL, pause).await
    }

    async fn block(&self, products: &[Product], pause: Duration) -> Result<(), StoreError> {
        let names: Vec<&str> = products.iter().map(|p| p.as_str()).collect();
        sqlx::query(
            "UPDATE finch_rate_limits
             SET blocked_until = greatest(coalesce(blocked_until, '-infinity'),
                                          clock_timestamp() + make_interval(secs => $2))
             WHERE product = ANY($1)",
        )
        .bind(names)
        .bind(pause.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When each paused product may be called again, for status.
    pub async fn paused(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT product, blocked_until FROM finch_rate_limits
             WHERE blocked_until > clock_timestamp() ORDER BY product",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One product's share of the budget right now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// Finch's name for the product.
    pub product: &'static str,
    /// Requests sent in the current window.
    pub used: i64,
    pub limit: u32,
    /// Set while a 429 keeps everyone off the product.
    pub blocked_until: Option<DateTime<Utc>>,
}

impl RateBudget {
    /// Each product's use of the window, for operators; takes no lock.
    pub async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        let rows: Vec<(String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT l.product,
                    (SELECT count(*) FROM finch_rate_requests r
                     WHERE r.product = l.product
                       AND r.sent_at > clock_timestamp() - make_interval(secs => $1)),
                    l.blocked_until
             FROM finch_rate_limits l",
        )
        .bind(self.window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(Product::ALL
            .into_iter()
            .map(|product| {
                let row = rows.iter().find(|(name, ..)| name == product.as_str());
                Usage {
                    product: product.as_str(),
                    used: row.map_or(0, |(_, used, _)| *used),
                    limit: self.limit(product),
                    blocked_until: row
                        .and_then(|(_, _, until)| *until)
                        .filter(|until| *until > Utc::now()),
                }
            })
            .collect())
    }
}

fn until_duration(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or(Duration::ZERO)
}
