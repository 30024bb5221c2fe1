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
    // Fails only if someone removed it in the meantime.
    show(pool, &connection_id).await
}

/// Every stored connection, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ConnectionRow>, OpsError> {
    Ok(connections::list(pool).await?)
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
