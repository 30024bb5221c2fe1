//! `ingress_minute_counts`: how many deliveries the ingress answered each
//! minute, by outcome, summed over every replica.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;

/// One minute's count of one outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MinuteCount {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// `accepted`, `duplicate`, `unparseable`, or why the delivery was refused.
    pub outcome: String,
    pub count: i64,
}

/// Adds counts to their minutes, in one statement.
pub async fn add(pool: &PgPool, counts: &[MinuteCount]) -> Result<(), StoreError> {
    let minutes: Vec<DateTime<Utc>> = counts.iter().map(|count| count.minute).collect();
    let outcomes: Vec<&str> = counts.iter().map(|count| count.outcome.as_str()).collect();
    let values: Vec<i64> = counts.iter().map(|count| count.count).collect();
    sqlx::query(
        "INSERT INTO ingress_minute_counts (minute, outcome, count)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::int8[])
         ON CONFLICT (minute, outcome)
         DO UPDATE SET count = ingress_minute_counts.count + EXCLUDED.count",
    )
    .bind(&minutes)
    .bind(&outcomes)
    .bind(&values)
    .execute(pool)
    .await?;
    Ok(())
}

/// Counts of the minutes starting at or after `since`, oldest first.
pub async fn since(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<MinuteCount>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT minute, outcome, count FROM ingress_minute_counts
         WHERE minute >= $1 ORDER BY minute, outcome",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// Forgets the minutes before `before`: the table only feeds a recent view.
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ingress_minute_counts WHERE minute < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(())
}
