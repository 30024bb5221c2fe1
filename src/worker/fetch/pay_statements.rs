//! `/employer/pay-statement`: one batch request for every payment due,
//! following each payment's pages; a payment's statements no longer listed
//! are marked deleted, all of them when Finch no longer knows the payment.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde_json::Value;

use super::{batch_item, batch_items, fail_all, freshness, store_failure, string_field};
use crate::finch::{FinchError, Product};
use crate::store::connections::Connection;
use crate::store::finch_data::{Item, Scope};
use crate::worker::commit::{commit, Write};
use crate::worker::dispatch::Spend;
use crate::worker::message::Failure;
use crate::worker::scheduler::Work;
use crate::worker::Context;

pub(super) async fn fetch(ctx: &Context, connection: &Connection, work: Work, spend: &mut Spend) {
    let finch = ctx.finch.for_entity(work.entity.as_deref());
    let entity = work.entity.clone();
    let page_size = ctx.config.pay_statement_page_size;
    let fetched_at = Utc::now();
    let mut pending: Vec<(String, u64)> = work.items.keys().map(|id| (id.clone(), 0)).collect();
    let mut statements: HashMap<String, Vec<Value>> = HashMap::new();
    let mut complete: Vec<String> = Vec::new();
    let mut not_found: Vec<String> = Vec::new();
    let mut failures: HashMap<String, Failure> = HashMap::new();
    let mut fresh = None;
    while !pending.is_empty() {
        if !spend.take(ctx, Product::PayStatement).await {
            return;
        }
        let response = match finch
            .pay_statements(&connection.token, &pending, page_size)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return fail_all(ctx, Product::PayStatement, connection, work, &error).await
            }
        };
        fresh.get_or_insert_with(|| freshness(&response, fetched_at));
        let offsets: HashMap<String, u64> = pending.iter().cloned().collect();
        let mut next = Vec::new();
        let mut answered = HashSet::new();
        let responses = batch_items(&response);
        for entry in &responses {
            let Some((payment_id, code, body)) = batch_item(entry, "payment_id") else {
                continue;
            };
            answered.insert(payment_id.clone());
            match code {
                200 => {
                    let page = body
                        .get("pay_statements")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let count = body
                        .get("paging")
                        .and_then(|p| p.get("count"))
                        .and_then(Value::as_u64);
                    let offset = offsets.get(&payment_id).copied().unwrap_or(0) + page.len() as u64;
                    let more = !page.is_empty() && count.is_some_and(|count| offset < count);
                    statements
                        .entry(payment_id.clone())
                        .or_default()
                        .extend(page);
                    if more {
                        next.push((payment_id, offset));
                    } else {
                        complete.push(payment_id);
                    }
                }
                404 => not_found.push(payment_id),
                _ => {
                    let error = FinchError::from_item(code, body, response.request_id.as_deref());
                    failures.insert(payment_id, Failure::from_finch(&error));
                }
            }
        }
        for (payment_id, _) in &pending {
            if !answered.contains(payment_id) {
                failures.insert(
                    payment_id.clone(),
                    Failure::retry("the payment was missing from Finch's batch response"),
                );
            }
        }
        pending = next;
    }
    let Some(fresh) = fresh else {
        return work.settle(&Ok(()));
    };
    let mut writes = vec![Write::Watermark(Product::PayStatement, None)];
    for payment_id in &complete {
        let list = statements.remove(payment_id).unwrap_or_default();
        let items: Vec<Item> = list
            .into_iter()
            .filter_map(|statement| {
                string_field(&statement, "individual_id").map(|individual| Item {
                    ids: vec![payment_id.clone(), individual],
                    data: statement,
                })
            })
            .collect();
        let present = items.iter().map(|item| item.ids[1].clone()).collect();
        writes.push(Write::Upsert(Product::PayStatement, items));
        writes.push(Write::Delete(
            Product::PayStatement,
            Scope::OfPayment {
                payment_id: payment_id.clone(),
                present,
            },
        ));
    }
    for payment_id in not_found {
        writes.push(Write::Delete(
            Product::PayStatement,
            Scope::OfPayment {
                payment_id,
                present: Vec::new(),
            },
        ));
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
        Ok(_) => work.settle_items(&failures),
        Err(error) => work.settle(&Err(store_failure(&error))),
    }
}
