//! Reading a due batch from Finch and committing it, one file per product
//! family:
//!
//! - [`company`]: the company, whole.
//! - [`directory`]: every page of the directory; unlisted people are
//!   deleted, and a full sync goes on to read everyone listed.
//! - [`individuals`]: individual and employment batches, by individual id.
//! - [`payments`]: a date range; a full sync goes on to the pay statements.
//! - [`pay_statements`]: batches by payment id, each payment paged.
//!
//! Each settles the messages waiting on its batch once the commit is done.

pub mod company;
pub mod directory;
pub mod individuals;
pub mod pay_statements;
pub mod payments;

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::dispatch::Spend;
use super::finch_failure::{self, Handling};
use super::message::Failure;
use super::scheduler::Work;
use super::Context;
use crate::finch::{FinchError, FinchResponse, Product};
use crate::queue::contract::reasons;
use crate::store::connections::Connection;
use crate::store::finch_data::{Freshness, Item};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

/// Reads and commits one batch, holding `_permit` (a slot of the worker's
/// in-flight limit) until done.
pub(super) async fn run(
    ctx: Arc<Context>,
    product: Product,
    connection_id: String,
    work: Work,
    _permit: OwnedSemaphorePermit,
) {
    let connection = match ctx.connections.get(&connection_id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            let failure = Failure::dead_letter(
                reasons::UNKNOWN_CONNECTION,
                "no access token is stored for this connection",
            );
            work.settle(&Err(failure));
            return;
        }
        Err(error) => {
            work.settle(&Err(Failure::retry(ErrorChain(&error).to_string())));
            return;
        }
    };
    if connection.row.is_parked() {
        for (waiter, _) in &work.whole {
            waiter.note(format!(
                "skipped: connection is {}",
                connection.row.parked_because()
            ));
        }
        work.settle(&Ok(()));
        return;
    }
    if let Some(until) = connection.row.paused_until {
        let left = (until - Utc::now()).to_std().unwrap_or_default();
        if !left.is_zero() {
            // The provider's limit for this connection: wait it out in memory.
            ctx.scheduler
                .lane(product)
                .put_back(&connection_id, work, Some(left));
            return;
        }
    }
    let mut spend = Spend::prepaid(&ctx, work.priority);
    match product {
        Product::Company => company::fetch(&ctx, &connection, work).await,
        Product::Directory => directory::fetch(&ctx, &connection, work, &mut spend).await,
        Product::Individual | Product::Employment => {
            individuals::fetch(&ctx, &connection, product, work).await;
        }
        Product::Payment => payments::fetch(&ctx, &connection, work).await,
        Product::PayStatement => pay_statements::fetch(&ctx, &connection, work, &mut spend).await,
    }
}

/// A failed request: its class's rule (see [`horizon`](super::horizon))
/// pauses a scope and puts the work back, parks the connection, or
/// settles everyone waiting.
async fn fail_all(
    ctx: &Context,
    product: Product,
    connection: &Connection,
    work: Work,
    error: &FinchError,
) {
    let handling = finch_failure::apply(
        ctx,
        Some(product),
        &connection.row,
        error,
        work.max_attempt(),
    )
    .await;
    match handling {
        Handling::Settle(outcome) => work.settle(&outcome),
        Handling::Acknowledge(note) => work.acknowledge(&note),
        Handling::Wait { hold } => {
            ctx.scheduler
                .lane(product)
                .put_back(&connection.row.connection_id, work, hold);
        }
    }
}

fn freshness(response: &FinchResponse, fetched_at: chrono::DateTime<Utc>) -> Freshness {
    Freshness {
        data_retrieved_at: response.data_retrieved_at,
        fetched_at,
    }
}

fn store_failure(error: &StoreError) -> Failure {
    Failure::retry(format!("could not commit: {}", ErrorChain(error)))
}

fn string_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Entries that carry their own `id`, as items keyed by it, and those ids in
/// the same order; an entry without one is passed over.
fn items_by_id(entries: Vec<Value>) -> (Vec<Item>, Vec<String>) {
    let items: Vec<Item> = entries
        .into_iter()
        .filter_map(|entry| {
            string_field(&entry, "id").map(|id| Item {
                ids: vec![id],
                data: entry,
            })
        })
        .collect();
    let ids = items.iter().map(|item| item.ids[0].clone()).collect();
    (items, ids)
}

/// The per-item answers of a batch response (none when it has no list).
fn batch_items(response: &FinchResponse) -> Vec<Value> {
    response
        .body
        .get("responses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Reads one batch item: `(id, code, body)`.
fn batch_item<'a>(response: &'a Value, id_key: &str) -> Option<(String, u16, &'a Value)> {
    let id = string_field(response, id_key)?;
    let body = response.get("body").unwrap_or(&Value::Null);
    let code = response
        .get("code")
        .and_then(Value::as_u64)
        .map_or(200, |code| code as u16);
    Some((id, code, body))
}
