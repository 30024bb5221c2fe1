//! Parked connections: the worker stops reading a connection after a
//! failure that retrying soon cannot fix, records why and until when, and
//! announces it on `finch.synced` (`connection.parked`, `connection.resumed`)
//! through the outbox, in the same transaction as the change.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use super::finch_data::{self, Notification};
use super::StoreError;

/// Routing keys of the status changes on `finch.synced`.
pub const PARKED: &str = "connection.parked";
pub const RESUMED: &str = "connection.resumed";

/// Why and until when a connection is parked.
#[derive(Debug, Clone)]
pub struct Park<'a> {
    /// The failure class (`pending`, `server_error`, `reauthenticate_user`, ...).
    pub reason: &'a str,
    /// Finch's status to record with it, for the classes Finch names one for.
    pub status: Option<&'a str>,
    /// When to try again; `None` waits for a reconnect or an operator.
    pub resume_at: Option<DateTime<Utc>>,
    /// What Finch answered, for `last_error`.
    pub error: &'a str,
}

/// The connection's failure series so far, to size the next backoff.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Series {
    /// Parks in a row so far.
    pub park_count: i32,
    /// When the series began; `None` before the first park.
    pub parked_at: Option<DateTime<Utc>>,
}

pub async fn series(pool: &PgPool, connection_id: &str) -> Result<Option<Series>, StoreError> {
    Ok(
        sqlx::query_as("SELECT park_count, parked_at FROM connections WHERE connection_id = $1")
            .bind(connection_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Parks the connection. Returns the notification to publish, or none when
/// it was already parked for the same reason (another batch got there first).
pub async fn park(
    pool: &PgPool,
    connection_id: &str,
    park: &Park<'_>,
) -> Result<Vec<Notification>, StoreError> {
    let mut tx = pool.begin().await?;
    let changed: Option<(DateTime<Utc>, i32)> = sqlx::query_as(
        "UPDATE connections SET
             parked_reason = $2,
             parked_at = coalesce(parked_at, now()),
             resume_at = $3,
             park_count = park_count + 1,
             status = coalesce($4, status),
             last_error = $5,
             updated_at = now()
         WHERE connection_id = $1 AND parked_reason IS DISTINCT FROM $2
         RETURNING parked_at, park_count",
    )
    .bind(connection_id)
    .bind(park.reason)
    .bind(park.resume_at)
    .bind(park.status)
    .bind(park.error)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((since, count)) = changed else {
        return Ok(Vec::new());
    };
    let body = json!({
        "connection_id": connection_id,
        "status": "parked",
        "reason": park.reason,
        "parked_since": iso(since),
        "resume_at": park.resume_at.map(iso),
        "attempt": count,
        "error": park.error,
        "at": iso(Utc::now()),
    });
    let notification = announce(&mut tx, PARKED, &body).await?;
    tx.commit().await?;
    Ok(vec![notification])
}

/// Lifts the park so the connection is read again; `None` if it was not
/// parked by the worker. The series stays until a read succeeds, so a
/// failure right after resuming backs off further.
pub async fn resume(
    pool: &PgPool,
    connection_id: &str,
    why: &str,
) -> Result<Option<Notification>, StoreError> {
    let mut tx = pool.begin().await?;
    let lifted: Option<(String,)> = sqlx::query_as(
        "WITH old AS (SELECT connection_id, parked_reason FROM connections
                      WHERE connection_id = $1 AND parked_reason IS NOT NULL FOR UPDATE)
         UPDATE connections c SET parked_reason = NULL, resume_at = NULL, updated_at = now()
         FROM old WHERE c.connection_id = old.connection_id
         RETURNING old.parked_reason",
    )
    .bind(connection_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((reason,)) = lifted else {
        return Ok(None);
    };
    let body = json!({
        "connection_id": connection_id,
        "status": "resumed",
        "previous_reason": reason,
        "why": why,
        "at": iso(Utc::now()),
    });
    let notification = announce(&mut tx, RESUMED, &body).await?;
    tx.commit().await?;
    Ok(Some(notification))
}

/// Parked connections whose resume time has come, oldest first.
pub async fn due_resumes(pool: &PgPool, limit: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT connection_id FROM connections
         WHERE parked_reason IS NOT NULL AND resume_at <= now()
         ORDER BY resume_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

async fn announce(
    tx: &mut PgConnection,
    routing_key: &str,
    body: &serde_json::Value,
) -> Result<Notification, StoreError> {
    finch_data::queue_notification(tx, routing_key, body).await
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
