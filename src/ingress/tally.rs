//! Deliveries answered per minute and outcome, for the console's overview.
//!
//! A request only bumps a counter in memory; a background task adds the
//! counts to Postgres every few seconds in one statement, so the hot path
//! never waits on the database and replicas never contend for a row more
//! than once per flush. Counts not yet flushed when the process dies are
//! lost: a few seconds of a dashboard figure, never an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, Utc};
use sqlx::PgPool;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::store::tally::{self, MinuteCount};
use crate::telemetry::ErrorChain;

/// How often counts reach Postgres.
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// How long minutes are kept.
const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

type Counts = HashMap<(DateTime<Utc>, &'static str), i64>;

/// The in-memory counters; the flusher stops (after a last flush) when the
/// last clone is dropped with the router.
#[derive(Clone)]
pub struct Tally {
    /// Counts since the last flush, by minute and outcome.
    counts: Arc<Mutex<Counts>>,
    /// Cancels the flusher when the last clone goes.
    _stop: Arc<DropGuard>,
}

impl Tally {
    /// Starts the flusher on `pool`.
    pub fn start(pool: PgPool) -> Self {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let stop = CancellationToken::new();
        tokio::spawn(flush_until(pool, counts.clone(), stop.clone()));
        Self {
            counts,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Counts one answered delivery.
    pub fn bump(&self, outcome: &'static str) {
        let minute = minute_of(Utc::now());
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((minute, outcome)).or_default() += 1;
        }
    }
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap_or(at)
}

async fn flush_until(pool: PgPool, counts: Arc<Mutex<Counts>>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.tick().await;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        flush(&pool, &counts).await;
        if last {
            return;
        }
    }
}

async fn flush(pool: &PgPool, counts: &Mutex<Counts>) {
    let taken = match counts.lock() {
        Ok(mut counts) => std::mem::take(&mut *counts),
        Err(_) => return,
    };
    if taken.is_empty() {
        return;
    }
    let rows: Vec<MinuteCount> = taken
        .iter()
        .map(|((minute, outcome), count)| MinuteCount {
            minute: *minute,
            outcome: (*outcome).to_owned(),
            count: *count,
        })
        .collect();
    if let Err(error) = tally::add(pool, &rows).await {
        tracing::warn!(error = %ErrorChain(&error), "ingress counts not saved; kept for the next try");
        if let Ok(mut counts) = counts.lock() {
            for (key, count) in taken {
                *counts.entry(key).or_default() += count;
            }
        }
        return;
    }
    if let Err(error) = tally::prune(pool, Utc::now() - KEEP).await {
        tracing::debug!(error = %ErrorChain(&error), "old ingress counts not pruned");
    }
}
