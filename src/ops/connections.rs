//! The connections (employers) the worker holds tokens for: add, list, show,
//! resync, disconnect and remove. Tokens go in and never come out: nothing
//! here returns one.

use bytes::Bytes;
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

use super::OpsError;
use crate::finch::token::KeyRing;
use crate::finch::FinchClient;
use crate::queue::contract::RESYNC_EVENT_TYPE;
use crate::queue::{OutgoingEvent, Publisher};
pub use crate::store::connections::ConnectionRow;
use crate::store::connections::{self, NewConnection};
use crate::store::watermarks;
pub use crate::store::watermarks::Watermark;

/// Asks Finch who a token belongs to and stores it, encrypted.
pub async fn add(
    pool: &PgPool,
    keys: &KeyRing,
    finch: &FinchClient,
    token: &SecretString,
) -> Result<ConnectionRow, OpsError> {
    let info = finch.introspect(token).await?;
    let connection_id = info.connection_id.clone().ok_or(OpsError::NoConnectionId)?;
    connections::upsert(
        pool,
        keys,
        &NewConnection {
            connection_id: &connection_id,
            token,
            provider_id: info.provider(),
            products: &info.products,
            status: info.status(),
        },
    )
    .await?;
    connections::record_introspection(
        pool,
        &connection_id,
        info.kind(),
        &info.entity_ids(),
        info.last_successful_sync(),
    )
    .await?;
    // Fails only if someone removed it in the meantime.
    show(pool, &connection_id).await
}

/// A connection and its sync status, as an operator reads it: per product
/// the last successful read, Finch's freshness and the last error; when
/// the next sweep is due; why it is parked, since when and until when.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConnectionStatus {
    #[serde(flatten)]
    pub connection: ConnectionRow,
    /// `syncing`, `parked` (by the worker) or Finch's own status when it serves no data.
    pub sync_state: String,
    /// One entry per product read at least once.
    pub products_status: Vec<Watermark>,
}

impl ConnectionStatus {
    fn new(connection: ConnectionRow, products_status: Vec<Watermark>) -> Self {
        let sync_state = if connection.parked_reason.is_some() {
            "parked".to_owned()
        } else if connection.is_parked_by_finch() {
            connection.status.clone()
        } else {
            "syncing".to_owned()
        };
        Self {
            connection,
            sync_state,
            products_status,
        }
    }
}

/// Every stored connection with its sync status, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ConnectionStatus>, OpsError> {
    let rows = connections::list(pool).await?;
    let ids: Vec<String> = rows.iter().map(|row| row.connection_id.clone()).collect();
    let mut marks: std::collections::HashMap<String, Vec<Watermark>> =
        std::collections::HashMap::new();
    for (id, mark) in watermarks::of_connections(pool, &ids).await? {
        marks.entry(id).or_default().push(mark);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let products = marks.remove(&row.connection_id).unwrap_or_default();
            ConnectionStatus::new(row, products)
        })
        .collect())
}

/// One connection with its sync status.
pub async fn status(pool: &PgPool, connection_id: &str) -> Result<ConnectionStatus, OpsError> {
    let row = show(pool, connection_id).await?;
    let products = watermarks::of_connection(pool, connection_id).await?;
    Ok(ConnectionStatus::new(row, products))
}

pub async fn show(pool: &PgPool, connection_id: &str) -> Result<ConnectionRow, OpsError> {
    connections::find(pool, connection_id)
        .await?
        .ok_or_else(|| OpsError::UnknownConnection(connection_id.to_owned()))
}

/// Calls Finch's /disconnect with the stored token, which ends the
/// connection for the employer too; the stored token is kept.
pub async fn disconnect(
    pool: &PgPool,
    keys: &KeyRing,
    finch: &FinchClient,
    connection_id: &str,
) -> Result<(), OpsError> {
    let connection = connections::get(pool, keys, connection_id)
        .await?
        .ok_or_else(|| OpsError::UnknownConnection(connection_id.to_owned()))?;
    finch.disconnect(&connection.token).await?;
    Ok(())
}

/// Forgets a connection and its token; its data stays in the `finch_*` tables.
pub async fn remove(pool: &PgPool, connection_id: &str) -> Result<(), OpsError> {
    if connections::remove(pool, connection_id).await? {
        Ok(())
    } else {
        Err(OpsError::UnknownConnection(connection_id.to_owned()))
    }
}

/// Queues a full refetch of a stored connection's data.
pub async fn resync(
    pool: &PgPool,
    amqp_url: &str,
    retry_delays: &[std::time::Duration],
    connection_id: &str,
) -> Result<(), OpsError> {
    show(pool, connection_id).await?;
    let connection = crate::queue::connect(amqp_url).await?;
    crate::queue::declare_topology(&connection, retry_delays).await?;
    let publisher = Publisher::open(&connection).await?;
    let body = json!({
        "connection_id": connection_id,
        "event_type": RESYNC_EVENT_TYPE,
        "data": null,
    });
    let event = OutgoingEvent {
        event_id: format!("resync_{}", uuid::Uuid::new_v4().simple()),
        event_type: Some(RESYNC_EVENT_TYPE.to_owned()),
        connection_id: Some(connection_id.to_owned()),
        body: Bytes::from(body.to_string()),
        dead_letter_reason: None,
        traceparent: None,
    };
    let result = publisher.publish_all(std::slice::from_ref(&event)).await;
    connection.close(200, "queued".into()).await.ok();
    for outcome in result {
        outcome?;
    }
    Ok(())
}

/// What `rotate-key` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Rotation {
    /// Tokens re-encrypted by this run.
    pub rewritten: usize,
    /// Batches committed by this run.
    pub batches: usize,
    /// Connections whose token no configured key opens, with why; left as they were.
    pub failed: Vec<(String, String)>,
}

/// Re-encrypts every token with the current key of `keys`, bound to its
/// connection, `batch_size` rows per committed transaction. Killed at any
/// point, it loses nothing (a batch commits whole or not at all), and a
/// rerun continues with the rows not yet done. Tokens written before the
/// binding existed are rewritten too, even when already on the current key.
pub async fn rotate_key(
    pool: &PgPool,
    keys: &KeyRing,
    batch_size: i64,
    mut progress: impl FnMut(&Rotation),
) -> Result<Rotation, OpsError> {
    let mut rotation = Rotation::default();
    let mut skip: Vec<String> = Vec::new();
    loop {
        let batch = connections::reseal_batch(pool, keys, batch_size, &skip).await?;
        if batch.examined == 0 {
            return Ok(rotation);
        }
        rotation.rewritten += batch.rewritten;
        rotation.batches += 1;
        for (connection_id, error) in batch.failed {
            skip.push(connection_id.clone());
            rotation.failed.push((connection_id, error.to_string()));
        }
        progress(&rotation);
    }
}
