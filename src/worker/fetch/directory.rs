//! `/employer/directory`: every page, then the people no page listed are
//! marked deleted; for a full sync, everyone listed is read next.

use chrono::Utc;
use serde_json::Value;

use super::{fail_all, freshness, items_by_id, store_failure};
use crate::finch::Product;
use crate::store::connections::Connection;
use crate::store::finch_data::Scope;
use crate::worker::commit::{commit, Write};
use crate::worker::dispatch::Spend;
use crate::worker::scheduler::{Target, Work};
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work, spend: &mut Spend) {
    let fetched_at = Utc::now();
    let page_size = ctx.config.directory_page_size;
    let mut entries: Vec<Value> = Vec::new();
    let mut fresh = None;
    let mut offset: u64 = 0;
    loop {
        if !spend.take(ctx, Product::Directory).await {
            return;
        }
        let page = match ctx
            .finch
            .directory_page(&connection.token, page_size, offset)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                return fail_all(ctx, Product::Directory, connection, &work, &error).await
            }
        };
        fresh.get_or_insert_with(|| freshness(&page, fetched_at));
        let individuals = page
            .body
            .get("individuals")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
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
        if got == 0 || !more {
            break;
        }
    }
    let (items, ids) = items_by_id(entries);
    let fresh = fresh.expect("at least one page was read");
    let writes = vec![
        Write::Upsert(Product::Directory, items),
        Write::Delete(
            Product::Directory,
            Scope::AllExcept {
                present: ids.clone(),
            },
        ),
    ];
    match commit(
        ctx,
        &connection.row.connection_id,
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
                if !follow || ids.is_empty() {
                    continue;
                }
                for (product, permission) in [
                    (Product::Individual, "individual"),
                    (Product::Employment, "employment"),
                ] {
                    if connection.row.has_product(permission) {
                        ctx.scheduler.submit(
                            product,
                            &connection.row.connection_id,
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
