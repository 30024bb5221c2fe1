//! Connections: which employers we hold a token for, and their state.
//! Tokens are encrypted before they reach SQL and decrypted only when a
//! request is about to be made.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;

use super::StoreError;
use crate::finch::token::{KeyRing, TokenError};

/// Connection statuses in which Finch serves no data: we stop fetching.
pub const PARKED_STATUSES: &[&str] = &[
    "reauth",
    "error_permissions",
    "error_no_account_setup",
    "disconnected",
];

/// A connection as listed: everything but the token.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ConnectionRow {
    pub connection_id: String,
    pub provider_id: Option<String>,
    pub products: Vec<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// `automated` or `assisted`: decides how the connection is swept.
    pub kind: String,
    /// The entities /introspect lists; with several, each read names one.
    pub entity_ids: Vec<String>,
    /// The failure class that parked the connection; `None` while it is read.
    pub parked_reason: Option<String>,
    /// When the current series of parks began.
    pub parked_at: Option<DateTime<Utc>>,
    /// When the worker tries again by itself; `None` while parked: only a
    /// reconnect or an operator resumes it.
    pub resume_at: Option<DateTime<Utc>>,
    /// Parks in a row, which set the next backoff.
    pub park_count: i32,
    /// No request before this (a provider's rate limit).
    pub paused_until: Option<DateTime<Utc>>,
    /// When the next reconciliation sweep is due.
    pub next_sweep_at: Option<DateTime<Utc>>,
    /// When the last sweep finished: every read of it committed.
    pub last_swept_at: Option<DateTime<Utc>>,
    /// Finch's own latest refresh of the connection.
    pub finch_synced_at: Option<DateTime<Utc>>,
}

impl ConnectionRow {
    /// Finch serves no data in this status, or the worker parked it.
    pub fn is_parked(&self) -> bool {
        PARKED_STATUSES.contains(&self.status.as_str()) || self.parked_reason.is_some()
    }

    /// Finch itself reports a status in which it serves no data.
    pub fn is_parked_by_finch(&self) -> bool {
        PARKED_STATUSES.contains(&self.status.as_str())
    }

    /// Why nothing is read for the connection, for the notes of skipped events.
    pub fn parked_because(&self) -> &str {
        self.parked_reason.as_deref().unwrap_or(&self.status)
    }

    /// The entities each read is made for: every listed one when there are
    /// several, else the connection as a whole (`None`).
    pub fn read_entities(&self) -> Vec<Option<String>> {
        if self.entity_ids.len() > 1 {
            self.entity_ids.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        }
    }

    /// The entity id rows of a read for `entity` are stamped with: the
    /// requested one, or the connection's only one, or ''.
    pub fn row_entity(&self, entity: Option<&str>) -> String {
        entity
            .map(str::to_owned)
            .or_else(|| (self.entity_ids.len() == 1).then(|| self.entity_ids[0].clone()))
            .unwrap_or_default()
    }

    pub fn has_product(&self, permission: &str) -> bool {
        self.products.iter().any(|product| product == permission)
    }
}

/// A connection with its decrypted token; `Debug` keeps the token redacted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub row: ConnectionRow,
    pub token: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token of connection {connection_id}")]
    Token {
        connection_id: String,
        source: TokenError,
    },
}

const COLUMNS: &str = "connection_id, provider_id, products, status, created_at, updated_at, \
                       last_event_at, last_synced_at, last_error, kind, entity_ids, parked_reason, \
                       parked_at, resume_at, park_count, paused_until, next_sweep_at, last_swept_at, \
                       finch_synced_at";

/// What we learned about a token, to be stored with it.
#[derive(Debug, Clone)]
pub struct NewConnection<'a> {
    pub connection_id: &'a str,
    pub token: &'a SecretString,
    pub provider_id: Option<&'a str>,
    pub products: &'a [String],
    pub status: &'a str,
}

/// Stores a connection, replacing the token of one we already hold (a
/// reconnection after `reauth` brings a new token for the same id).
pub async fn upsert(
    pool: &PgPool,
    keys: &KeyRing,
    new: &NewConnection<'_>,
) -> Result<(), StoreError> {
    let sealed = keys.seal(new.connection_id, new.token);
    sqlx::query(
        "INSERT INTO connections (connection_id, access_token, token_key_id, token_bound, provider_id, products, status)
         VALUES ($1, $2, $3, true, $4, $5, $6)
         ON CONFLICT (connection_id) DO UPDATE SET
             access_token = EXCLUDED.access_token, token_key_id = EXCLUDED.token_key_id,
             token_bound = true,
             provider_id = EXCLUDED.provider_id, products = EXCLUDED.products,
             status = EXCLUDED.status, updated_at = now(), last_error = NULL,
             parked_reason = NULL, parked_at = NULL, resume_at = NULL, park_count = 0",
    )
    .bind(new.connection_id)
    .bind(sealed.ciphertext)
    .bind(sealed.key_id)
    .bind(new.provider_id)
    .bind(new.products)
    .bind(new.status)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get(
    pool: &PgPool,
    keys: &KeyRing,
    connection_id: &str,
) -> Result<Option<Connection>, ConnectionError> {
    let row: Option<(Vec<u8>, String, bool)> = sqlx::query_as(
        "SELECT access_token, token_key_id, token_bound FROM connections WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?;
    let Some((stored, key_id, bound)) = row else {
        return Ok(None);
    };
    let token = keys
        .open(connection_id, &key_id, &stored, bound)
        .map_err(|source| ConnectionError::Token {
            connection_id: connection_id.to_owned(),
            source,
        })?;
    let Some(row) = find(pool, connection_id).await? else {
        return Ok(None);
    };
    Ok(Some(Connection { row, token }))
}

pub async fn find(pool: &PgPool, connection_id: &str) -> Result<Option<ConnectionRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM connections WHERE connection_id = $1"
    ))
    .bind(connection_id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &PgPool) -> Result<Vec<ConnectionRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM connections ORDER BY created_at, connection_id"
    ))
    .fetch_all(pool)
    .await?)
}

/// Forgets a connection and its token; its data stays.
pub async fn remove(pool: &PgPool, connection_id: &str) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM connections WHERE connection_id = $1")
        .bind(connection_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn set_status(
    pool: &PgPool,
    connection_id: &str,
    status: &str,
    last_error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET status = $2, last_error = coalesce($3, last_error), updated_at = now()
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(status)
    .bind(last_error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Refreshes what `/introspect` reports.
pub async fn update_details(
    pool: &PgPool,
    connection_id: &str,
    provider_id: Option<&str>,
    products: &[String],
    status: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET provider_id = coalesce($2, provider_id), products = $3,
             status = $4, updated_at = now()
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(provider_id)
    .bind(products)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(())
}

/// What /introspect says about how the connection is refreshed: its kind,
/// its entities and Finch's latest refresh.
pub async fn record_introspection(
    pool: &PgPool,
    connection_id: &str,
    kind: &str,
    entity_ids: &[String],
    finch_synced_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET kind = $2, entity_ids = $3,
             finch_synced_at = greatest(finch_synced_at, $4)
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(kind)
    .bind(entity_ids)
    .bind(finch_synced_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records Finch's latest refresh (a completed data sync job).
pub async fn record_finch_sync(
    pool: &PgPool,
    connection_id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET finch_synced_at = greatest(finch_synced_at, $2)
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Holds every request for the connection until `until` (a provider's limit).
pub async fn pause_until(
    pool: &PgPool,
    connection_id: &str,
    pause: std::time::Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET paused_until = greatest(coalesce(paused_until, '-infinity'),
             now() + make_interval(secs => $2))
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(pause.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn touch_event(pool: &PgPool, connection_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("UPDATE connections SET last_event_at = now() WHERE connection_id = ANY($1)")
        .bind(connection_ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// A read committed: the failure series (if any) is over.
pub async fn mark_synced(pool: &PgPool, connection_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET last_synced_at = now(), last_error = NULL,
             park_count = CASE WHEN parked_reason IS NULL THEN 0 ELSE park_count END,
             parked_at = CASE WHEN parked_reason IS NULL THEN NULL ELSE parked_at END
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// One batch of `connections rotate-key`, committed on its own.
#[derive(Debug, Default)]
pub struct Resealed {
    /// Rows the batch looked at; none means the rotation is complete.
    pub examined: usize,
    /// Connections whose token is now sealed with the current key.
    pub rewritten: usize,
    /// Connections whose token no configured key opens, with why.
    pub failed: Vec<(String, TokenError)>,
}

/// Re-encrypts, in one transaction, up to `limit` tokens that are not yet
/// sealed with the current key and bound to their row, leaving out the
/// connections in `skip` (those that failed before). Rows already done are
/// never selected again, so a rotation killed mid-way resumes where it was.
pub async fn reseal_batch(
    pool: &PgPool,
    keys: &KeyRing,
    limit: i64,
    skip: &[String],
) -> Result<Resealed, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, Vec<u8>, String, bool)> = sqlx::query_as(
        "SELECT connection_id, access_token, token_key_id, token_bound FROM connections
         WHERE (token_key_id <> $1 OR NOT token_bound) AND connection_id <> ALL($2)
         ORDER BY connection_id LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(keys.current_id())
    .bind(skip)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut outcome = Resealed {
        examined: rows.len(),
        ..Resealed::default()
    };
    for (connection_id, stored, key_id, bound) in rows {
        let token = match keys.open(&connection_id, &key_id, &stored, bound) {
            Ok(token) => token,
            Err(error) => {
                outcome.failed.push((connection_id, error));
                continue;
            }
        };
        let sealed = keys.seal(&connection_id, &token);
        sqlx::query(
            "UPDATE connections SET access_token = $2, token_key_id = $3, token_bound = true
             WHERE connection_id = $1",
        )
        .bind(&connection_id)
        .bind(sealed.ciphertext)
        .bind(sealed.key_id)
        .execute(&mut *tx)
        .await?;
        outcome.rewritten += 1;
    }
    tx.commit().await?;
    Ok(outcome)
}
