//! The reconciliation schedule: when each connection is swept next. New
//! connections get a slot spread evenly over the cadence (by a hash of
//! their id), so a fleet's sweeps make a flat load rather than a weekly spike.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// A connection whose sweep (or, if assisted, refresh check) is due.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub connection_id: String,
    pub kind: String,
    pub finch_synced_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_swept_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Gives every connection without a slot one within the next `cadence`,
/// at an offset fixed by its id.
pub async fn assign_slots(pool: &PgPool, cadence: Duration) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET next_sweep_at = now() + make_interval(secs =>
             $1 * ((hashtext(connection_id)::bigint + 2147483648) / 4294967296.0))
         WHERE next_sweep_at IS NULL",
    )
    .bind(cadence.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Connections whose slot has come and that are not parked, earliest first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Due>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT connection_id, kind, finch_synced_at, last_swept_at FROM connections
         WHERE next_sweep_at <= now() AND parked_reason IS NULL
           AND status NOT IN ('reauth', 'error_permissions', 'error_no_account_setup', 'disconnected')
         ORDER BY next_sweep_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Moves the slot one cadence on; `swept` records that a sweep was queued.
pub async fn advance(
    pool: &PgPool,
    connection_id: &str,
    every: Duration,
    swept: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET
             next_sweep_at = greatest(next_sweep_at + make_interval(secs => $2),
                                      now() + make_interval(secs => $2 / 2)),
             last_swept_at = CASE WHEN $3 THEN now() ELSE last_swept_at END
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(every.as_secs_f64())
    .bind(swept)
    .execute(pool)
    .await?;
    Ok(())
}

/// Connections with a slot, for sizing how many sweeps a tick takes.
pub async fn scheduled(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM connections WHERE next_sweep_at IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}
