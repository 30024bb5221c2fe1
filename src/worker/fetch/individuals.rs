//! `/employer/individual` and `/employment`: one batch request for every
//! id due; each id settles with its own answer, a 404 meaning deleted.

use std::collections::{HashMap, HashSet};

use chrono::Utc;

use super::{batch_item, batch_items, fail_all, freshness, store_failure};
use crate::finch::{FinchError, Product};
use crate::store::connections::Connection;
use crate::store::finch_data::{Item, Scope};
use crate::worker::commit::{commit, Write};
use crate::worker::message::Failure;
use crate::worker::scheduler::Work;
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, product: Product, work: Work) {
    let finch = ctx.finch.for_entity(work.entity.as_deref());
    let entity = work.entity.clone();
    let ids: Vec<String> = work.items.keys().cloned().collect();
    let fetched_at = Utc::now();
    let response = match finch
        .individuals_batch(product, &connection.token, &ids)
        .await
    {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, product, connection, work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let mut items = Vec::new();
    let mut gone = Vec::new();
    let mut failures: HashMap<String, Failure> = HashMap::new();
    let mut answered = HashSet::new();
    let responses = batch_items(&response);
    for entry in &responses {
        let Some((id, code, body)) = batch_item(entry, "individual_id") else {
            continue;
        };
        answered.insert(id.clone());
        match code {
            200 => items.push(Item {
                ids: vec![id],
                data: body.clone(),
            }),
            // Finch no longer knows this individual: confirmed deleted.
            404 => gone.push(vec![id]),
            _ => {
                let error = FinchError::from_item(code, body, response.request_id.as_deref());
                failures.insert(id, Failure::from_finch(&error));
            }
        }
    }
    for id in &ids {
        if !answered.contains(id) {
            failures.insert(
                id.clone(),
                Failure::retry("the id was missing from Finch's batch response"),
            );
        }
    }
    let writes = vec![
        Write::Upsert(product, items),
        Write::Delete(product, Scope::Exactly(gone)),
        Write::Watermark(product, None),
    ];
    match commit(
        ctx,
        &connection.row,
        entity.as_deref(),
        fresh,
        writes,
        1,
        work.requests(),
    )
    .await
    {
        Ok(_) => work.settle_items(&failures),
        Err(error) => work.settle(&Err(store_failure(&error))),
    }
}
