//! `/employer/payment`: the payments of a date range; those of the range
//! no longer listed are marked deleted (their statements with them). A full
//! sync reads the statements of every payment next; a sweep only those of
//! payments the read created or changed, or whose statements were never
//! stored. A read that reaches back to the watermark moves it forward.

use std::collections::BTreeSet;

use chrono::Utc;

use super::{fail_all, freshness, items_by_id, store_failure};
use crate::finch::Product;
use crate::store::connections::Connection;
use crate::store::finch_data::{self, ChangeKind, Scope};
use crate::store::watermarks;
use crate::telemetry::ErrorChain;
use crate::worker::commit::{commit, Write};
use crate::worker::scheduler::{Follow, For, Target, Work};
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work) {
    let finch = ctx.finch.for_entity(work.entity.as_deref());
    let entity = work.entity.clone();
    let id = &connection.row.connection_id;
    let today = Utc::now().date_naive();
    let (start, end) = work.range.unwrap_or_else(|| {
        crate::worker::route::window_around(today, ctx.config.payment_window_days)
    });
    let fetched_at = Utc::now();
    let response = match finch.payments(&connection.token, start, end).await {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, Product::Payment, connection, work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let (items, ids) = items_by_id(response.body.as_array().cloned().unwrap_or_default());
    // Finch's copy holds nothing paid after it last read the provider (an
    // assisted connection's copy can be days old), so the watermark goes no
    // further than that day, on Finch's own clock.
    let read_up_to = fresh
        .data_retrieved_at
        .map_or(today, |retrieved| retrieved.date_naive().min(today));
    // Contiguous with what was read before: everything up to then is now read.
    let read_through = match watermarks::payments_read_through(&ctx.pool, id).await {
        Ok(Some(mark)) if start <= mark => Some(end.min(read_up_to)),
        Ok(None) if start <= ctx.config.full_sync_since => Some(end.min(read_up_to)),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "could not read the payments watermark");
            None
        }
    };
    let writes = vec![
        Write::Upsert(Product::Payment, items),
        Write::Delete(
            Product::Payment,
            Scope::PaidBetween {
                start,
                end,
                present: ids.clone(),
            },
        ),
        Write::Watermark(Product::Payment, read_through),
    ];
    let changes = match commit(
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
        Ok(changes) => changes,
        Err(error) => return work.settle(&Err(store_failure(&error))),
    };
    if connection.row.has_product("pay_statement") {
        let mut changed: Option<Vec<String>> = None;
        for (waiter, follow) in &work.whole {
            let wanted = match follow {
                Follow::None => continue,
                Follow::All => ids.clone(),
                Follow::Changed => {
                    if changed.is_none() {
                        changed = Some(new_or_changed(ctx, id, &changes, start, end).await);
                    }
                    changed.clone().unwrap_or_default()
                }
            };
            if wanted.is_empty() {
                continue;
            }
            ctx.scheduler.submit(
                Product::PayStatement,
                For {
                    connection_id: id,
                    entity: work.entity.as_deref(),
                    priority: work.priority,
                },
                Target::Items(wanted),
                waiter,
            );
        }
    }
    work.settle(&Ok(()));
}

/// Payments whose statements may differ from what is stored: created or
/// updated by this read, or never given statements.
async fn new_or_changed(
    ctx: &Context,
    connection_id: &str,
    changes: &finch_data::Changes,
    start: chrono::NaiveDate,
    end: chrono::NaiveDate,
) -> Vec<String> {
    let mut ids: BTreeSet<String> = [ChangeKind::Created, ChangeKind::Updated]
        .into_iter()
        .flat_map(|kind| changes.ids(Product::Payment, kind))
        .filter_map(|key| key.into_iter().next())
        .collect();
    match finch_data::payments_without_statements(&ctx.pool, connection_id, start, end).await {
        Ok(missing) => ids.extend(missing),
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "could not look for payments without statements");
        }
    }
    ids.into_iter().collect()
}
