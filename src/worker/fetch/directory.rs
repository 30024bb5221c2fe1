//! `/employer/directory`: every page; only a complete pass (every page up
//! to `paging.count`) marks the people no page listed as deleted, in the
//! directory and in the individual and employment tables (a reconnect that
//! changed Finch's ids leaves none of the old ids behind). For a full sync
//! or a sweep, everyone listed is read next.

use chrono::Utc;
use serde_json::Value;

use super::{fail_all, freshness, items_by_id, store_failure};
use crate::finch::Product;
use crate::store::connections::Connection;
use crate::store::finch_data::Scope;
use crate::worker::commit::{commit, Write};
use crate::worker::dispatch::Spend;
use crate::worker::scheduler::{For, Target, Work};
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work, spend: &mut Spend) {
    let finch = ctx.finch.for_entity(work.entity.as_deref());
    let entity = work.entity.clone();
    let fetched_at = Utc::now();
    let page_size = ctx.config.directory_page_size;
    let mut entries: Vec<Value> = Vec::new();
    let mut fresh = None;
    let mut offset: u64 = 0;
    // Proven only by reading every page: a page that ends early or a body
    // without `individuals` leaves the pass incomplete, and nobody deleted.
    let mut complete = false;
    loop {
        if !spend.take(ctx, Product::Directory).await {
            return;
        }
        let page = match finch
            .directory_page(&connection.token, page_size, offset)
            .await
        {
            Ok(page) => page,
            Err(error) => return fail_all(ctx, Product::Directory, connection, work, &error).await,
        };
        fresh.get_or_insert_with(|| freshness(&page, fetched_at));
        let Some(individuals) = page
            .body
            .get("individuals")
            .and_then(Value::as_array)
            .cloned()
        else {
            tracing::warn!(
                connection_id = %connection.row.connection_id,
                offset,
                "a directory page without `individuals`: the pass is incomplete, nobody is deleted"
            );
            break;
        };
        let count = page
            .body
            .get("paging")
            .and_then(|p| p.get("count"))
            .and_then(Value::as_u64);
        let got = individuals.len() as u64;
        entries.extend(individuals);
        offset += got;
        let more = match count {
            Some(count) => offset < count,
            None => got >= u64::from(page_size),
        };
        if !more {
            complete = true;
            break;
        }
        if got == 0 {
            tracing::warn!(
                connection_id = %connection.row.connection_id,
                offset,
                count,
                "an empty directory page before paging.count: the pass is incomplete, nobody is deleted"
            );
            break;
        }
    }
    let (items, ids) = items_by_id(entries);
    let fresh = fresh.expect("at least one page was read");
    let mut writes = vec![Write::Upsert(Product::Directory, items)];
    if complete {
        for product in [Product::Directory, Product::Individual, Product::Employment] {
            writes.push(Write::Delete(
                product,
                Scope::AllExcept {
                    present: ids.clone(),
                },
            ));
        }
        writes.push(Write::Watermark(Product::Directory, None));
    }
    match commit(
        ctx,
        &connection.row,
        entity.as_deref(),
        fresh,
        writes,
        spend.requests(),
        work.requests(),
    )
    .await
    {
        Ok(_) => {
            // A full sync reads everyone the directory lists.
            for (waiter, follow) in &work.whole {
                if !follow.any() || ids.is_empty() {
                    continue;
                }
                for (product, permission) in [
                    (Product::Individual, "individual"),
                    (Product::Employment, "employment"),
                ] {
                    if connection.row.has_product(permission) {
                        ctx.scheduler.submit(
                            product,
                            For {
                                connection_id: &connection.row.connection_id,
                                entity: work.entity.as_deref(),
                                priority: work.priority,
                            },
                            Target::Items(ids.clone()),
                            waiter,
                        );
                    }
                }
            }
            work.settle(&Ok(()));
        }
        Err(error) => work.settle(&Err(store_failure(&error))),
    }
}
