//! `/employer/payment`: the payments of a date range; those of the range
//! no longer listed are marked deleted, and a full sync reads the pay
//! statements of every payment next.

use chrono::Utc;

use super::{fail_all, freshness, items_by_id, store_failure};
use crate::finch::Product;
use crate::store::connections::Connection;
use crate::store::finch_data::Scope;
use crate::worker::commit::{commit, Write};
use crate::worker::scheduler::{Target, Work};
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work) {
    let (start, end) = work.range.unwrap_or_else(|| {
        crate::worker::route::window_around(Utc::now().date_naive(), ctx.config.payment_window_days)
    });
    let fetched_at = Utc::now();
    let response = match ctx.finch.payments(&connection.token, start, end).await {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, Product::Payment, connection, &work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let (items, ids) = items_by_id(response.body.as_array().cloned().unwrap_or_default());
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
    ];
    match commit(
        ctx,
        &connection.row.connection_id,
        fresh,
        writes,
        1,
        work.requests(),
    )
    .await
    {
        Ok(_) => {
            if connection.row.has_product("pay_statement") && !ids.is_empty() {
                for (waiter, follow) in &work.whole {
                    if *follow {
                        ctx.scheduler.submit(
                            Product::PayStatement,
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
