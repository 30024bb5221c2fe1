//! Committing what a batch read: every write and the notifications of its
//! changes in one transaction, then the notifications published.

use super::{notify, Context};
use crate::finch::Product;
use crate::store::connections::{self, ConnectionRow};
use crate::store::finch_data::{self, Changes, Entity, Freshness, Item, Scope};
use crate::store::watermarks;
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

/// One change to the copy.
pub(super) enum Write {
    Upsert(Product, Vec<Item>),
    Delete(Product, Scope),
    /// The product was read successfully (for payments: every pay date up
    /// to the date given).
    Watermark(Product, Option<chrono::NaiveDate>),
}

/// Applies the writes and queues their notifications in one transaction,
/// then publishes the notifications. `requests` (Finch requests the batch
/// took) and `events` (events it serves) only go into its `refetched` line.
#[tracing::instrument(
    name = "commit finch data",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", writes = writes.len())
)]
pub(super) async fn commit(
    ctx: &Context,
    connection: &ConnectionRow,
    entity: Option<&str>,
    fresh: Freshness,
    writes: Vec<Write>,
    requests: u32,
    events: usize,
) -> Result<Changes, StoreError> {
    let connection_id = connection.connection_id.as_str();
    // Rows carry the entity they were read for; deletions stay within it.
    let stamp = connection.row_entity(entity);
    let scope = Entity {
        stamp: &stamp,
        only: entity,
    };
    let mut tx = ctx.pool.begin().await?;
    let mut changes = Changes::default();
    for write in &writes {
        match write {
            Write::Upsert(product, items) => {
                finch_data::upsert(
                    &mut tx,
                    *product,
                    connection_id,
                    scope,
                    items,
                    fresh,
                    &mut changes,
                )
                .await?;
            }
            Write::Watermark(product, read_through) => {
                watermarks::record_success(
                    &mut tx,
                    connection_id,
                    *product,
                    fresh.data_retrieved_at,
                    *read_through,
                )
                .await?;
            }
            Write::Delete(product, scope_of_write) => {
                finch_data::mark_deleted(
                    &mut tx,
                    *product,
                    connection_id,
                    entity,
                    scope_of_write,
                    fresh,
                    &mut changes,
                )
                .await?;
            }
        }
    }
    let notifications = finch_data::queue_notifications(&mut tx, connection_id, &changes).await?;
    tx.commit().await?;
    let items: usize = writes
        .iter()
        .map(|write| match write {
            Write::Upsert(_, items) => items.len(),
            Write::Delete(..) | Write::Watermark(..) => 0,
        })
        .sum();
    let product = writes.first().map_or("", |write| match write {
        Write::Upsert(product, _) | Write::Delete(product, _) | Write::Watermark(product, _) => {
            product.as_str()
        }
    });
    tracing::info!(product, connection_id, items, requests, events, "refetched");
    if let Err(error) = connections::mark_synced(&ctx.pool, connection_id).await {
        tracing::warn!(error = %ErrorChain(&error), "could not record the sync time");
    }
    notify::publish(ctx, notifications).await;
    Ok(changes)
}
