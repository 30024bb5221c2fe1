//! What the operator console keeps and reads beyond the other tables'
//! own queries: sign-in sessions, replay jobs, event search, and the
//! per-connection summaries of its pages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::events::EventRecord;
use super::StoreError;

/// A signed-in browser, found by the digest of its cookie.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// Forms must send it back.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session, and forgets the expired ones on the way.
pub async fn create_session(
    pool: &PgPool,
    id_digest: &[u8],
    csrf_token: &str,
    ttl: std::time::Duration,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= now()")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO console_sessions (id_digest, csrf_token, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(id_digest)
    .bind(csrf_token)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// The session of this digest, unless it has expired.
pub async fn find_session(pool: &PgPool, id_digest: &[u8]) -> Result<Option<Session>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT csrf_token, expires_at FROM console_sessions
         WHERE id_digest = $1 AND expires_at > now()",
    )
    .bind(id_digest)
    .fetch_optional(pool)
    .await?)
}

pub async fn delete_session(pool: &PgPool, id_digest: &[u8]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM console_sessions WHERE id_digest = $1")
        .bind(id_digest)
        .execute(pool)
        .await?;
    Ok(())
}

/// A console replay and how far it got.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReplayJob {
    pub id: i64,
    /// The operator's filter, as submitted.
    pub filter: serde_json::Value,
    pub rate: i32,
    pub expected: i64,
    pub replayed: i64,
    pub skipped: i64,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// What stopped a failed job (never a secret: a broker or database cause).
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str =
    "id, filter, rate, expected, replayed, skipped, state, error, started_at, finished_at";

pub async fn create_replay_job(
    pool: &PgPool,
    filter: &serde_json::Value,
    rate: i32,
    expected: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO console_replay_jobs (filter, rate, expected) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(filter)
    .bind(rate)
    .bind(expected)
    .fetch_one(pool)
    .await?)
}

pub async fn record_replay_progress(
    pool: &PgPool,
    id: i64,
    replayed: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE console_replay_jobs SET replayed = $2 WHERE id = $1")
        .bind(id)
        .bind(replayed)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn finish_replay_job(
    pool: &PgPool,
    id: i64,
    replayed: i64,
    skipped: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE console_replay_jobs
         SET replayed = $2, skipped = $3, error = $4, finished_at = now(),
             state = CASE WHEN $4::text IS NULL THEN 'done' ELSE 'failed' END
         WHERE id = $1",
    )
    .bind(id)
    .bind(replayed)
    .bind(skipped)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Jobs a process that stopped mid-replay left `running`: they are not.
pub async fn abandon_running_jobs(pool: &PgPool, except: &[i64]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE console_replay_jobs
         SET state = 'failed', error = 'the process running it stopped', finished_at = now()
         WHERE state = 'running' AND started_at < now() - interval '1 hour' AND NOT (id = ANY($1))",
    )
    .bind(except)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn replay_job(pool: &PgPool, id: i64) -> Result<Option<ReplayJob>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM console_replay_jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn recent_replay_jobs(pool: &PgPool, limit: i64) -> Result<Vec<ReplayJob>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM console_replay_jobs ORDER BY id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Where an event is, as the events search asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// In the outbox, not yet confirmed by the broker.
    Stored,
    /// Published, no attempt finished yet.
    Published,
    Processed,
    /// Failed at least once, neither processed nor dead-lettered since.
    Retrying,
    DeadLettered,
}

impl EventStatus {
    pub const ALL: [Self; 5] = [
        Self::Stored,
        Self::Published,
        Self::Processed,
        Self::Retrying,
        Self::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Published => "published",
            Self::Processed => "processed",
            Self::Retrying => "retrying",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// The condition on `webhook_events` that selects this status; a
    /// processed replay is processed, a replayed event not yet handled again
    /// is published.
    fn condition(self) -> &'static str {
        match self {
            Self::Stored => "published_at IS NULL",
            Self::Published => {
                "published_at IS NOT NULL AND processed_at IS NULL AND attempts = 0
                 AND (coalesce(dead_lettered_at, published_at) <= coalesce(last_replayed_at, '-infinity')
                      OR (dead_lettered_at IS NULL AND dead_letter_reason IS NULL))"
            }
            Self::Processed => {
                "processed_at IS NOT NULL
                 AND processed_at >= coalesce(dead_lettered_at, '-infinity')"
            }
            Self::Retrying => {
                "published_at IS NOT NULL AND processed_at IS NULL AND attempts > 0
                 AND dead_lettered_at IS NULL AND dead_letter_reason IS NULL"
            }
            Self::DeadLettered => {
                "(dead_lettered_at IS NOT NULL OR (dead_letter_reason IS NOT NULL AND published_at IS NOT NULL))
                 AND coalesce(dead_lettered_at, published_at) > coalesce(processed_at, '-infinity')
                 AND coalesce(dead_lettered_at, published_at) > coalesce(last_replayed_at, '-infinity')
                 AND purged_at IS NULL"
            }
        }
    }
}

/// What the events page searches by; every criterion given must match.
#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    /// Exact event id.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    pub status: Option<EventStatus>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// Zero-based page of `page_size` rows, newest first.
    pub page: u32,
    pub page_size: u32,
}

const RECORD_COLUMNS: &str = "event_id, event_type, connection_id, finch_timestamp, received_at, \
     published_at, processed_at, dead_lettered_at, dead_letter_reason, attempts, replay_count, \
     last_replayed_at, purged_at, octet_length(body) AS body_bytes";

/// One page of matching events (one more than the page size, so the caller
/// knows whether there is a next page), newest first, stages judged.
pub async fn search_events(
    pool: &PgPool,
    search: &EventSearch,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {RECORD_COLUMNS} FROM webhook_events WHERE true"
    ));
    if let Some(id) = &search.event_id {
        query.push(" AND event_id = ").push_bind(id.clone());
    }
    if let Some(event_type) = &search.event_type {
        query
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
    if let Some(connection) = &search.connection_id {
        query
            .push(" AND connection_id = ")
            .push_bind(connection.clone());
    }
    if let Some(status) = search.status {
        query.push(" AND (").push(status.condition()).push(")");
    }
    if let Some(from) = search.from {
        query.push(" AND received_at >= ").push_bind(from);
    }
    if let Some(to) = search.to {
        query.push(" AND received_at < ").push_bind(to);
    }
    let size = i64::from(search.page_size.max(1));
    query
        .push(" ORDER BY received_at DESC, event_id DESC LIMIT ")
        .push_bind(size + 1)
        .push(" OFFSET ")
        .push_bind(i64::from(search.page) * size);
    let records: Vec<EventRecord> = query.build_query_as().fetch_all(pool).await?;
    Ok(records
        .into_iter()
        .map(|mut record| {
            record.stage = Some(record.current_stage());
            record
        })
        .collect())
}

/// What an event's page shows beyond its record: the body and the trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventDetail {
    pub body: Vec<u8>,
    pub traceparent: Option<String>,
    /// Why the latest attempt failed, or the worker's remark on a skip.
    pub last_error: Option<String>,
}

pub async fn event_detail(
    pool: &PgPool,
    event_id: &str,
) -> Result<Option<EventDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT body, traceparent, last_error FROM webhook_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?)
}

/// Events dead-lettered and not replayed, purged or processed since, by
/// reason: the store's view of the DLQ, cheap enough to refresh often.
pub async fn dead_lettered_by_reason(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT coalesce(dead_letter_reason, 'unknown'), count(*) FROM webhook_events
         WHERE {} GROUP BY 1 ORDER BY 2 DESC, 1",
        EventStatus::DeadLettered.condition()
    ))
    .fetch_all(pool)
    .await?)
}

pub async fn connections_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM connections GROUP BY 1 ORDER BY 2 DESC, 1")
            .fetch_all(pool)
            .await?,
    )
}

/// Per connection and Finch product: when we last read it and when Finch
/// last read it from the provider (Finch-Data-Retrieved).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProductFreshness {
    pub connection_id: String,
    /// Finch's name for the product (`company`, `directory`, ...).
    pub product: String,
    pub last_read_at: Option<DateTime<Utc>>,
    pub data_retrieved_at: Option<DateTime<Utc>>,
}

pub async fn product_freshness(pool: &PgPool) -> Result<Vec<ProductFreshness>, StoreError> {
    const TABLES: [(&str, &str); 6] = [
        ("company", "finch_company"),
        ("directory", "finch_directory"),
        ("individual", "finch_individuals"),
        ("employment", "finch_employments"),
        ("payment", "finch_payments"),
        ("pay_statement", "finch_pay_statements"),
    ];
    let union = TABLES
        .iter()
        .map(|(product, table)| {
            format!(
                "SELECT connection_id, '{product}' AS product, max(fetched_at) AS last_read_at,
                        max(data_retrieved_at) AS data_retrieved_at
                 FROM {table} GROUP BY connection_id"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    Ok(
        sqlx::query_as(&format!("{union} ORDER BY connection_id, product"))
            .fetch_all(pool)
            .await?,
    )
}

/// A recent failure of one connection's events.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RecentError {
    pub connection_id: String,
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// The latest few failures per connection.
pub async fn recent_errors(
    pool: &PgPool,
    per_connection: i64,
) -> Result<Vec<RecentError>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT connection_id, event_id, at, error FROM (
             SELECT connection_id, event_id,
                    coalesce(dead_lettered_at, received_at) AS at,
                    coalesce(dead_letter_reason || ': ', '') || coalesce(last_error, '') AS error,
                    row_number() OVER (PARTITION BY connection_id
                                       ORDER BY coalesce(dead_lettered_at, received_at) DESC) AS n
             FROM webhook_events
             WHERE connection_id IS NOT NULL AND processed_at IS NULL
               AND (last_error IS NOT NULL OR dead_letter_reason IS NOT NULL)
         ) recent WHERE n <= $1 ORDER BY connection_id, at DESC",
    )
    .bind(per_connection)
    .fetch_all(pool)
    .await?)
}
