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
    /// Finch's refresh the latest queued sweep of an assisted connection reads.
    pub swept_finch_sync_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Gives every connection without a slot one within its next cadence
/// (`automated` for sweeps; `assisted` for checks of Finch's refresh), at an
/// offset fixed by its id.
pub async fn assign_slots(
    pool: &PgPool,
    automated: Duration,
    assisted: Duration,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET next_sweep_at = now() + make_interval(secs =>
             CASE WHEN kind = 'assisted' THEN $2 ELSE $1 END
             * ((hashtext(connection_id)::bigint + 2147483648) / 4294967296.0))
         WHERE next_sweep_at IS NULL",
    )
    .bind(automated.as_secs_f64())
    .bind(assisted.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Connections whose slot has come and that are not parked, earliest first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Due>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT connection_id, kind, swept_finch_sync_at FROM connections
         WHERE next_sweep_at <= now() AND parked_reason IS NULL
           AND status NOT IN ('reauth', 'error_permissions', 'error_no_account_setup', 'disconnected')
         ORDER BY next_sweep_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Moves the slot one cadence on; `sweeps_finch_sync` records, for an
/// assisted connection whose sweep was queued, the Finch refresh it reads.
pub async fn advance(
    pool: &PgPool,
    connection_id: &str,
    every: Duration,
    sweeps_finch_sync: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET
             next_sweep_at = greatest(next_sweep_at + make_interval(secs => $2),
                                      now() + make_interval(secs => $2 / 2)),
             swept_finch_sync_at = coalesce($3, swept_finch_sync_at)
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(every.as_secs_f64())
    .bind(sweeps_finch_sync)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that these connections' sweeps finished reading.
pub async fn finished(pool: &PgPool, connection_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("UPDATE connections SET last_swept_at = now() WHERE connection_id = ANY($1)")
        .bind(connection_ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Connections with a slot, automated and assisted, for sizing how many
/// slots a tick takes.
pub async fn scheduled(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind <> 'assisted'), count(*) FILTER (WHERE kind = 'assisted')
         FROM connections WHERE next_sweep_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?)
}
