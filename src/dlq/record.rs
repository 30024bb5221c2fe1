//! An event's lifecycle as `webhook_events` records it, and the marks that
//! replays and purges leave there.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::store::StoreError;

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

/// Counts a confirmed replay of each event.
pub async fn mark_replayed(pool: &PgPool, event_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_events
         SET replay_count = replay_count + 1, last_replayed_at = now()
         WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_purged(pool: &PgPool, event_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_events SET purged_at = now() WHERE event_id = ANY($1)")
        .bind(event_ids)
        .execute(pool)
        .await?;
    Ok(())
}
