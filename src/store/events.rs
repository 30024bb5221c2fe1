//! The `webhook_events` table: dedupe on insert, the outbox the relay drains,
//! and each event's lifecycle as operators read and mark it.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::StoreError;

/// An authenticated delivery about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    pub finch_timestamp: i64,
    pub body: Bytes,
    /// Set when the event goes straight to the dead-letter queue.
    pub dead_letter_reason: Option<&'static str>,
    /// Trace context of the request that delivered it.
    pub traceparent: Option<String>,
}

/// A stored event that still has to reach RabbitMQ.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnpublishedEvent {
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    pub body: Vec<u8>,
    pub dead_letter_reason: Option<String>,
    pub traceparent: Option<String>,
}

/// Inserts a batch in one statement and one commit; returns the ids that were
/// new. An id already in the table is a duplicate and is left untouched, and
/// the primary key decides that atomically, so concurrent deliveries of one id
/// insert exactly one row.
pub async fn insert_batch(
    pool: &PgPool,
    events: &[NewEvent],
) -> Result<HashSet<String>, StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut connections = Vec::with_capacity(events.len());
    let mut timestamps = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    let mut reasons = Vec::with_capacity(events.len());
    let mut traceparents = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.event_id.as_str());
        types.push(event.event_type.as_deref());
        connections.push(event.connection_id.as_deref());
        timestamps.push(event.finch_timestamp as f64);
        bodies.push(event.body.as_ref());
        reasons.push(event.dead_letter_reason);
        traceparents.push(event.traceparent.as_deref());
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO webhook_events
             (event_id, event_type, connection_id, finch_timestamp, body, dead_letter_reason, traceparent)
         SELECT id, type, connection, to_timestamp(ts), body, reason, trace
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[], $6::text[], $7::text[])
              AS batch(id, type, connection, ts, body, reason, trace)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&connections)
    .bind(&timestamps)
    .bind(&bodies)
    .bind(&reasons)
    .bind(&traceparents)
    .fetch_all(pool)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Records that the broker confirmed these events.
pub async fn mark_published(pool: &PgPool, event_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_events SET published_at = now()
         WHERE event_id = ANY($1) AND published_at IS NULL",
    )
    .bind(event_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// The oldest unpublished events received at least `grace` ago.
pub async fn unpublished(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<UnpublishedEvent>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT event_id, event_type, connection_id, body, dead_letter_reason, traceparent
         FROM webhook_events
         WHERE published_at IS NULL AND received_at <= now() - make_interval(secs => $1)
         ORDER BY received_at, event_id
         LIMIT $2",
    )
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// How many stored events have not reached RabbitMQ yet.
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE published_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// Where an event stands, judged from the latest thing that happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Stored, not yet confirmed by the broker (waiting in the outbox).
    Received,
    /// In the work queue, not yet processed.
    Published,
    Processed,
    DeadLettered,
    /// Republished from the DLQ; the worker has not finished with it yet.
    Replayed,
    /// Deleted from the DLQ by an operator.
    Purged,
}

/// One row of `webhook_events`, without the body.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    pub finch_timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
    pub dead_letter_reason: Option<String>,
    pub attempts: i32,
    pub replay_count: i32,
    pub last_replayed_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
    pub body_bytes: i32,
    /// Judged from the times above when read, so that readers need not.
    #[sqlx(skip)]
    pub stage: Option<Stage>,
}

impl EventRecord {
    /// The stage of the most recent step. The ingress dead-letters
    /// unparseable bodies on publishing without setting `dead_lettered_at`,
    /// so for those the publish is the dead-lettering.
    pub fn current_stage(&self) -> Stage {
        let dead_lettered_at = self
            .dead_lettered_at
            .or(self.dead_letter_reason.as_ref().and(self.published_at));
        let steps = [
            (self.published_at, Stage::Published),
            (self.processed_at, Stage::Processed),
            (dead_lettered_at, Stage::DeadLettered),
            (self.last_replayed_at, Stage::Replayed),
            (self.purged_at, Stage::Purged),
        ];
        steps
            .into_iter()
            .filter_map(|(at, stage)| at.map(|at| (at, stage)))
            // On equal times the later step in the list wins.
            .max_by_key(|(at, _)| *at)
            .map_or(Stage::Received, |(_, stage)| stage)
    }
}

/// One event's record (never its body), with its stage judged.
pub async fn find(pool: &PgPool, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
    let record: Option<EventRecord> = sqlx::query_as(
        "SELECT event_id, event_type, connection_id, finch_timestamp, received_at,
                published_at, processed_at, dead_lettered_at, dead_letter_reason,
                attempts, replay_count, last_replayed_at, purged_at,
                octet_length(body) AS body_bytes
         FROM webhook_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(record.map(|mut record| {
        record.stage = Some(record.current_stage());
        record
    }))
}

/// Counts a confirmed replay of each event. Replays are recorded in batches
/// after their confirms, so the worker may already have processed (or tried)
/// the replayed copy: the replay then happened before that, and is dated
/// just before it so that the event reads as processed and its steps in
/// order.
pub async fn mark_replayed(pool: &PgPool, event_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "WITH replayed AS (
             UPDATE webhook_events
             SET replay_count = replay_count + 1,
                 last_replayed_at = CASE
                     WHEN processed_at > coalesce(dead_lettered_at, published_at, '-infinity')
                     THEN least(now(), processed_at - interval '1 microsecond')
                     ELSE now() END
             WHERE event_id = ANY($1)
             RETURNING event_id, last_replayed_at
         )
         INSERT INTO webhook_event_steps (event_id, at, kind)
         SELECT r.event_id,
                least(r.last_replayed_at, (
                    SELECT min(s.at) - interval '1 microsecond' FROM webhook_event_steps s
                    WHERE s.event_id = r.event_id
                      AND s.at > coalesce((
                          SELECT max(d.at) FROM webhook_event_steps d
                          WHERE d.event_id = r.event_id
                            AND d.kind IN ('dead_lettered', 'replayed')
                      ), '-infinity')
                )),
                'replayed'
         FROM replayed r",
    )
    .bind(event_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// One step the pipeline took with an event (`webhook_event_steps`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventStep {
    pub at: DateTime<Utc>,
    /// `processed`, `retrying`, `dead_lettered` or `replayed`.
    pub kind: String,
    /// The processing attempt it ended; none for a replay.
    pub attempt: Option<i32>,
    pub detail: Option<String>,
}

/// An event's steps, oldest first.
pub async fn steps(pool: &PgPool, event_id: &str) -> Result<Vec<EventStep>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at, kind, attempt, detail FROM webhook_event_steps
         WHERE event_id = $1 ORDER BY at, step_id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?)
}

/// Marks events an operator deleted from the DLQ.
pub async fn mark_purged(pool: &PgPool, event_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_events SET purged_at = now() WHERE event_id = ANY($1)")
        .bind(event_ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many events of one benchmark run (ids starting with `prefix`) are stored.
pub async fn count_run(pool: &PgPool, prefix: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE starts_with(event_id, $1)")
            .bind(prefix)
            .fetch_one(pool)
            .await?,
    )
}

/// Removes one benchmark run's events.
pub async fn delete_run(pool: &PgPool, prefix: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM webhook_events WHERE starts_with(event_id, $1)")
        .bind(prefix)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many events are stored, processed and dead-lettered.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Tally {
    pub stored: i64,
    pub processed: i64,
    pub dead_lettered: i64,
}

pub async fn tally(pool: &PgPool) -> Result<Tally, StoreError> {
    Ok(sqlx::query_as(
        "SELECT count(*) AS stored, count(processed_at) AS processed,
                count(dead_lettered_at) AS dead_lettered
         FROM webhook_events",
    )
    .fetch_one(pool)
    .await?)
}

pub async fn last_processed_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT max(processed_at) FROM webhook_events")
            .fetch_one(pool)
            .await?,
    )
}

/// For each connection, seconds from `since` to its last processed event.
pub async fn last_processed_per_connection(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<f64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT extract(epoch FROM max(processed_at) - $1)::float8 FROM webhook_events
         WHERE processed_at IS NOT NULL GROUP BY connection_id",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// An event the worker finished, as `webhook_events` records it.
#[derive(Debug, Clone, Copy)]
pub struct Processed<'a> {
    pub event_id: &'a str,
    /// Processing attempts, this one included.
    pub attempts: i32,
    /// A remark kept in `last_error` though the event succeeded (a skip).
    pub note: Option<&'a str>,
}

/// Records finished events, in one statement.
pub async fn mark_processed(pool: &PgPool, events: &[Processed<'_>]) -> Result<(), StoreError> {
    let ids: Vec<&str> = events.iter().map(|event| event.event_id).collect();
    let attempts: Vec<i32> = events.iter().map(|event| event.attempts).collect();
    let notes: Vec<Option<&str>> = events.iter().map(|event| event.note).collect();
    sqlx::query(
        "WITH processed AS (
             UPDATE webhook_events e SET processed_at = now(), attempts = u.attempts, last_error = u.note
             FROM UNNEST($1::text[], $2::int[], $3::text[]) AS u(id, attempts, note)
             WHERE e.event_id = u.id
             RETURNING e.event_id, e.attempts, e.last_error
         )
         INSERT INTO webhook_event_steps (event_id, kind, attempt, detail)
         SELECT event_id, 'processed', attempts, last_error FROM processed",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&notes)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt of an event that will be retried.
pub async fn record_failed_attempt(
    pool: &PgPool,
    event_id: &str,
    attempts: i32,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH failed AS (
             UPDATE webhook_events SET attempts = $2, last_error = $3 WHERE event_id = $1
             RETURNING event_id
         )
         INSERT INTO webhook_event_steps (event_id, kind, attempt, detail)
         SELECT event_id, 'retrying', $2, $3 FROM failed",
    )
    .bind(event_id)
    .bind(attempts)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the worker dead-lettered an event, and why.
pub async fn mark_dead_lettered(
    pool: &PgPool,
    event_id: &str,
    reason: &str,
    attempts: i32,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH dead AS (
             UPDATE webhook_events SET dead_lettered_at = now(), dead_letter_reason = $2,
                 attempts = $3, last_error = $4
             WHERE event_id = $1
             RETURNING event_id
         )
         INSERT INTO webhook_event_steps (event_id, kind, attempt, detail)
         SELECT event_id, 'dead_lettered', $3, $2 || ': ' || $4 FROM dead",
    )
    .bind(event_id)
    .bind(reason)
    .bind(attempts)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
