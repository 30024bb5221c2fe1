//! An event's lifecycle as `webhook_events` records it: received, published,
//! processed or dead-lettered, replays and purges.

use sqlx::PgPool;

use super::OpsError;
use crate::store::events;
pub use crate::store::events::{EventRecord, Stage};

/// The stored record of `event_id` (never its body), if there is one.
pub async fn show(pool: &PgPool, event_id: &str) -> Result<Option<EventRecord>, OpsError> {
    Ok(events::find(pool, event_id).await?)
}
