//! From due work to committed data: one Finch request (or a few pages),
//! one transaction, per-item outcomes for the messages that wait on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use super::message::{Failure, Message};
use super::scheduler::{self, Lane, Target, Work};
use super::Context;
use crate::finch::{ErrorClass, FinchError, FinchResponse, Product};
use crate::queue::reasons;
use crate::store::connections::{self, Connection, ConnectionRow};
use crate::store::finch_data::{self, Changes, Freshness, Item, Scope};
use crate::store::StoreError;

/// Runs a product's dispatcher until the worker stops.
pub async fn dispatch(ctx: Arc<Context>, lane: Arc<Lane>) {
    let product = lane.product;
    let window = scheduler::Window {
        quiet: ctx.config.coalesce_window,
        longest: ctx.config.coalesce_max,
    };
    let max_items = match product {
        Product::PayStatement => ctx.config.pay_statement_batch_max,
        _ => usize::MAX,
    };
    loop {
        if !scheduler::wait_for_due(&lane, window, &ctx.stop).await {
            return;
        }
        let permit = tokio::select! {
            permit = ctx.in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = ctx.stop.cancelled() => return,
        };
        let Some(waited) = scheduler::acquire_budget(&ctx.budget, product, &ctx.stop).await else {
            return;
        };
        ctx.metrics
            .rate_limit_wait
            .get_or_create(&crate::metrics::ProductLabel {
                product: product.as_str(),
            })
            .inc_by(waited.as_secs_f64());
        // Chosen only now, so the batch holds whatever arrived meanwhile.
        let Some((connection_id, work)) = lane.take_next(window, max_items) else {
            continue;
        };
        let events = work.whole.len() + work.items.values().map(Vec::len).sum::<usize>();
        ctx.metrics.batch_size.observe(events as f64);
        let span = batch_span(product, &connection_id, &work);
        ctx.tracker
            .spawn(execute(ctx.clone(), product, connection_id, work, permit).instrument(span));
    }
}

/// Most traces one batch span links to; the rest are counted, not linked.
const MAX_LINKED_EVENTS: usize = 64;

/// The span of one batch: a child of its first event's processing span (so
/// that event's trace reaches the Finch call), linked to the other events'.
fn batch_span(product: Product, connection_id: &str, work: &Work) -> tracing::Span {
    let mut waiters = work
        .whole
        .iter()
        .map(|(waiter, _)| waiter)
        .chain(work.items.values().flatten());
    let events = work.whole.len() + work.items.values().map(Vec::len).sum::<usize>();
    let make = |parent: Option<&tracing::Span>| {
        tracing::info_span!(
            parent: parent.and_then(tracing::Span::id),
            "sync",
            otel.name = format!("sync {}", product.as_str()),
            finch.product = product.as_str(),
            connection_id,
            events,
        )
    };
    let Some(first) = waiters.next() else {
        return make(None);
    };
    let span = make(Some(&first.span));
    for other in waiters.take(MAX_LINKED_EVENTS) {
        crate::telemetry::link_span(&span, &other.span);
    }
    span
}

/// Settles every waiter of `work` with the same outcome.
fn settle_all(work: &Work, outcome: &Result<(), Failure>) {
    for (waiter, _) in &work.whole {
        waiter.settle(outcome.clone());
    }
    for waiters in work.items.values() {
        for waiter in waiters {
            waiter.settle(outcome.clone());
        }
    }
}

fn store_failure(error: &StoreError) -> Failure {
    Failure::retry(format!("could not commit: {error}"))
}

async fn execute(
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
            settle_all(&work, &Err(failure));
            return;
        }
        Err(error) => {
            settle_all(&work, &Err(Failure::retry(error.to_string())));
            return;
        }
    };
    if connection.row.is_parked() {
        for (waiter, _) in &work.whole {
            waiter.note(format!("skipped: connection is {}", connection.row.status));
        }
        settle_all(&work, &Ok(()));
        return;
    }
    let mut spend = Spend { prepaid: true };
    match product {
        Product::Company => company(&ctx, &connection, work).await,
        Product::Directory => directory(&ctx, &connection, work, &mut spend).await,
        Product::Individual | Product::Employment => {
            individuals(&ctx, &connection, product, work).await;
        }
        Product::Payment => payments(&ctx, &connection, work).await,
        Product::PayStatement => pay_statements(&ctx, &connection, work, &mut spend).await,
    }
}

/// The first request of a task was paid for by the dispatcher; later pages
/// take their own.
struct Spend {
    prepaid: bool,
}

impl Spend {
    async fn take(&mut self, ctx: &Context, product: Product) -> bool {
        if std::mem::take(&mut self.prepaid) {
            return true;
        }
        match scheduler::acquire_budget(&ctx.budget, product, &ctx.stop).await {
            Some(waited) => {
                ctx.metrics
                    .rate_limit_wait
                    .get_or_create(&crate::metrics::ProductLabel {
                        product: product.as_str(),
                    })
                    .inc_by(waited.as_secs_f64());
                true
            }
            None => false,
        }
    }
}

/// A failed request: pause the product after a 429, park the connection
/// after `reauthenticate_user`, and settle everyone waiting.
async fn fail_all(
    ctx: &Context,
    product: Product,
    connection: &Connection,
    work: &Work,
    error: &FinchError,
) {
    handle_side_effects(ctx, Some(product), &connection.row, error).await;
    settle_all(work, &Err(Failure::from_finch(error)));
}

pub async fn handle_side_effects(
    ctx: &Context,
    product: Option<Product>,
    connection: &ConnectionRow,
    error: &FinchError,
) {
    if let (Some(product), Some(429)) = (product, error.status()) {
        tracing::warn!(
            product = product.as_str(),
            connection_id = %connection.connection_id,
            finch_code = error.finch_code().unwrap_or(""),
            finch_request_id = error.request_id().unwrap_or(""),
            "Finch rate-limited us; pausing the product for every worker"
        );
        if let Err(store) = ctx.budget.pause(product, error.retry_after()).await {
            tracing::warn!(error = %store, "could not record the rate-limit pause");
        }
    }
    if error.class() == ErrorClass::Reauthenticate {
        tracing::error!(
            connection_id = %connection.connection_id,
            finch_request_id = error.request_id().unwrap_or(""),
            "Finch says the employer must reconnect (401 reauthenticate_user): \
             the connection is parked as `reauth` until it is added again"
        );
        if let Err(store) = connections::set_status(
            &ctx.pool,
            &connection.connection_id,
            "reauth",
            Some(&error.to_string()),
        )
        .await
        {
            tracing::warn!(error = %store, "could not park the connection");
        }
        ctx.connections.invalidate(&connection.connection_id);
    }
}

fn freshness(response: &FinchResponse, fetched_at: chrono::DateTime<Utc>) -> Freshness {
    Freshness {
        data_retrieved_at: response.data_retrieved_at,
        fetched_at,
    }
}

enum Write {
    Upsert(Product, Vec<Item>),
    Delete(Product, Scope),
}

/// Applies the writes and queues their notifications in one transaction,
/// then publishes the notifications.
#[tracing::instrument(
    name = "commit finch data",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", writes = writes.len())
)]
async fn commit(
    ctx: &Context,
    connection_id: &str,
    fresh: Freshness,
    writes: Vec<Write>,
) -> Result<Changes, StoreError> {
    let mut tx = ctx.pool.begin().await?;
    let mut changes = Changes::default();
    for write in &writes {
        match write {
            Write::Upsert(product, items) => {
                finch_data::upsert(&mut tx, *product, connection_id, items, fresh, &mut changes)
                    .await?;
            }
            Write::Delete(product, scope) => {
                finch_data::mark_deleted(
                    &mut tx,
                    *product,
                    connection_id,
                    scope,
                    fresh,
                    &mut changes,
                )
                .await?;
            }
        }
    }
    let notifications = finch_data::queue_notifications(&mut tx, connection_id, &changes).await?;
    tx.commit().await?;
    if let Err(error) = connections::mark_synced(&ctx.pool, connection_id).await {
        tracing::warn!(%error, "could not record the sync time");
    }
    super::publish_notifications(ctx, notifications).await;
    Ok(changes)
}

fn string_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

async fn company(ctx: &Context, connection: &Connection, work: Work) {
    let fetched_at = Utc::now();
    let response = match ctx.finch.company(&connection.token).await {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, Product::Company, connection, &work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let item = Item {
        ids: Vec::new(),
        data: response.body,
    };
    let outcome = commit(
        ctx,
        &connection.row.connection_id,
        fresh,
        vec![Write::Upsert(Product::Company, vec![item])],
    )
    .await
    .map(drop)
    .map_err(|error| store_failure(&error));
    settle_all(&work, &outcome);
}

async fn directory(ctx: &Context, connection: &Connection, work: Work, spend: &mut Spend) {
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
    let items: Vec<Item> = entries
        .into_iter()
        .filter_map(|entry| {
            string_field(&entry, "id").map(|id| Item {
                ids: vec![id],
                data: entry,
            })
        })
        .collect();
    let ids: Vec<String> = items.iter().map(|item| item.ids[0].clone()).collect();
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
    match commit(ctx, &connection.row.connection_id, fresh, writes).await {
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
            settle_all(&work, &Ok(()));
        }
        Err(error) => settle_all(&work, &Err(store_failure(&error))),
    }
}

/// Reads one batch item: `(id, code, body)`.
/// The per-item answers of a batch response (none when it has no list).
fn batch_items(response: &FinchResponse) -> Vec<Value> {
    response
        .body
        .get("responses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn batch_item<'a>(response: &'a Value, id_key: &str) -> Option<(String, u16, &'a Value)> {
    let id = string_field(response, id_key)?;
    let body = response.get("body").unwrap_or(&Value::Null);
    let code = response
        .get("code")
        .and_then(Value::as_u64)
        .map_or(200, |code| code as u16);
    Some((id, code, body))
}

async fn individuals(ctx: &Context, connection: &Connection, product: Product, work: Work) {
    let ids: Vec<String> = work.items.keys().cloned().collect();
    let fetched_at = Utc::now();
    let response = match ctx
        .finch
        .individuals_batch(product, &connection.token, &ids)
        .await
    {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, product, connection, &work, &error).await,
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
    ];
    match commit(ctx, &connection.row.connection_id, fresh, writes).await {
        Ok(_) => {
            for (id, waiters) in &work.items {
                let outcome = failures.get(id).cloned().map_or(Ok(()), Err);
                for waiter in waiters {
                    waiter.settle(outcome.clone());
                }
            }
        }
        Err(error) => settle_all(&work, &Err(store_failure(&error))),
    }
}

async fn payments(ctx: &Context, connection: &Connection, work: Work) {
    let today = Utc::now().date_naive();
    let (start, end) = work.range.unwrap_or((
        today - Days::new(u64::from(ctx.config.payment_window_days)),
        today + Days::new(u64::from(ctx.config.payment_window_days)),
    ));
    let fetched_at = Utc::now();
    let response = match ctx.finch.payments(&connection.token, start, end).await {
        Ok(response) => response,
        Err(error) => return fail_all(ctx, Product::Payment, connection, &work, &error).await,
    };
    let fresh = freshness(&response, fetched_at);
    let list = response.body.as_array().cloned().unwrap_or_default();
    let items: Vec<Item> = list
        .into_iter()
        .filter_map(|payment| {
            string_field(&payment, "id").map(|id| Item {
                ids: vec![id],
                data: payment,
            })
        })
        .collect();
    let ids: Vec<String> = items.iter().map(|item| item.ids[0].clone()).collect();
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
    match commit(ctx, &connection.row.connection_id, fresh, writes).await {
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
            settle_all(&work, &Ok(()));
        }
        Err(error) => settle_all(&work, &Err(store_failure(&error))),
    }
}

async fn pay_statements(ctx: &Context, connection: &Connection, work: Work, spend: &mut Spend) {
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
        let response = match ctx
            .finch
            .pay_statements(&connection.token, &pending, page_size)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return fail_all(ctx, Product::PayStatement, connection, &work, &error).await
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
        return settle_all(&work, &Ok(()));
    };
    let mut writes = Vec::new();
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
    match commit(ctx, &connection.row.connection_id, fresh, writes).await {
        Ok(_) => {
            for (payment_id, waiters) in &work.items {
                let outcome = failures.get(payment_id).cloned().map_or(Ok(()), Err);
                for waiter in waiters {
                    waiter.settle(outcome.clone());
                }
            }
        }
        Err(error) => settle_all(&work, &Err(store_failure(&error))),
    }
}

/// Queues everything a full sync reads, for the products the connection
/// granted; directory and payments bring their follow-up reads.
pub fn submit_full_sync(ctx: &Context, connection: &ConnectionRow, waiter: &Arc<Message>) {
    let id = &connection.connection_id;
    if connection.has_product("company") {
        ctx.scheduler.submit(
            Product::Company,
            id,
            Target::Whole { follow: false },
            waiter,
        );
    }
    if connection.has_product("directory") {
        ctx.scheduler.submit(
            Product::Directory,
            id,
            Target::Whole { follow: true },
            waiter,
        );
    }
    if connection.has_product("payment") {
        // Far enough ahead to include payments already scheduled.
        let end = Utc::now().date_naive() + Days::new(62);
        ctx.scheduler.submit(
            Product::Payment,
            id,
            Target::Range {
                start: ctx.config.full_sync_since,
                end,
                follow: true,
            },
            waiter,
        );
    }
}

/// The payment window a `payment.*` event asks for.
pub fn payment_window(ctx: &Context, pay_date: Option<NaiveDate>) -> (NaiveDate, NaiveDate) {
    let days = Days::new(u64::from(ctx.config.payment_window_days));
    let center = pay_date.unwrap_or_else(|| Utc::now().date_naive());
    (center - days, center + days)
}
