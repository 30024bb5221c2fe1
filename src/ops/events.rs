//! An event's lifecycle as `webhook_events` records it: received, published,
//! processed or dead-lettered, replays and purges.

use sqlx::PgPool;

use super::OpsError;
pub use crate::store::console::{EventDetail, EventSearch, EventStatus};
use crate::store::events;
pub use crate::store::events::{EventRecord, EventStep, Stage};

/// The stored record of `event_id` (never its body), if there is one.
pub async fn show(pool: &PgPool, event_id: &str) -> Result<Option<EventRecord>, OpsError> {
    Ok(events::find(pool, event_id).await?)
}

/// One page of matching events, newest first, and whether more follow.
pub async fn search(
    pool: &PgPool,
    search: &EventSearch,
) -> Result<(Vec<EventRecord>, bool), OpsError> {
    let mut found = crate::store::console::search_events(pool, search).await?;
    let more = found.len() > search.page_size.max(1) as usize;
    found.truncate(search.page_size.max(1) as usize);
    Ok((found, more))
}

/// An event's record with its body and trail, if it is stored.
pub async fn detail(
    pool: &PgPool,
    event_id: &str,
) -> Result<Option<(EventRecord, EventDetail)>, OpsError> {
    let Some(record) = events::find(pool, event_id).await? else {
        return Ok(None);
    };
    Ok(crate::store::console::event_detail(pool, event_id)
        .await?
        .map(|detail| (record, detail)))
}

/// Every processing attempt of an event with its outcome, and its replays,
/// oldest first.
pub async fn steps(pool: &PgPool, event_id: &str) -> Result<Vec<EventStep>, OpsError> {
    Ok(events::steps(pool, event_id).await?)
}
