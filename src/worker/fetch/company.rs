//! `/employer/company`: one request, one row.

use chrono::Utc;

use super::{fail_all, freshness, store_failure};
use crate::finch::Product;
use crate::store::connections::Connection;
use crate::store::finch_data::Item;
use crate::worker::commit::{commit, Write};
use crate::worker::scheduler::Work;
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work) {
    let finch = ctx.finch.for_entity(work.entity.as_deref());
    let entity = work.entity.clone();
    let fetched_at = Utc::now();
    let response = match finch.company(&connection.token).await {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, Product::Company, connection, work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let item = Item {
        ids: Vec::new(),
        data: response.body,
    };
    let outcome = commit(
        ctx,
        &connection.row,
        entity.as_deref(),
        fresh,
        vec![
            Write::Upsert(Product::Company, vec![item]),
            Write::Watermark(Product::Company, None),
        ],
        1,
        work.requests(),
    )
    .await
    .map(drop)
    .map_err(|error| store_failure(&error));
    work.settle(&outcome);
}
