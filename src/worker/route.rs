//! From a delivery to the work it asks for: read and classify the event,
//! find its connection, then either queue its Finch reads with the
//! [`scheduler`](super::scheduler) or start its handler ([`account`],
//! [`job`]). Anything that cannot be routed is settled at once.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
use futures::FutureExt as _;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::action::{self, Action};
use super::message::{Failure, Message};
use super::scheduler::{Follow, For, Priority, Target};
use super::{account, job, Context};
use crate::finch::Product;
use crate::queue::contract::reasons;
use crate::store::connections::ConnectionRow;
use crate::store::{parking, watermarks};
use crate::telemetry::ErrorChain;

/// Routes one delivery to the work it needs. A panic while routing is a
/// bug that this one message must not turn into a stopped consumer: the
/// message is dead-lettered as `internal_error` and the next one is read.
pub(super) async fn intake(
    ctx: &Arc<Context>,
    delivery: lapin::message::Delivery,
    done: &mpsc::UnboundedSender<Arc<Message>>,
) {
    let (message, parsed) = Message::from_delivery(delivery, done.clone());
    let routed = AssertUnwindSafe(route(ctx, &message, parsed))
        .catch_unwind()
        .await;
    if let Err(panic) = routed {
        // The intake's own hold is still on the message: a panic cannot
        // come after the final settle below.
        message.settle(Err(panicked(&message, panic.as_ref())));
    }
}

/// Runs a message's handler on the worker's tracker; a panic in it settles
/// its piece of the message as `internal_error` instead of leaving the
/// message unacknowledged for ever.
fn spawn_handler(
    ctx: &Arc<Context>,
    message: &Arc<Message>,
    handler: impl Future<Output = ()> + Send + 'static,
) {
    message.attach(1);
    let guarded = {
        let message = message.clone();
        async move {
            if let Err(panic) = AssertUnwindSafe(handler).catch_unwind().await {
                message.settle(Err(panicked(&message, panic.as_ref())));
            }
        }
    };
    ctx.tracker.spawn(guarded.instrument(message.span.clone()));
}

/// Logs a panic in a message's handling and says what the DLQ records.
fn panicked(message: &Message, panic: &(dyn Any + Send)) -> Failure {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(
        event_id = %message.event_id,
        event_type = %message.event_type,
        panic = %text,
        "the worker panicked handling an event; dead-lettering it"
    );
    Failure::dead_letter(
        reasons::INTERNAL_ERROR,
        format!("the worker panicked: {text}"),
    )
}

async fn route(ctx: &Arc<Context>, message: &Arc<Message>, parsed: super::message::Parsed) {
    let message = message.clone();
    let Some(body) = parsed
        .body
        .filter(|_| !parsed.event_id.is_empty() && !parsed.event_type.is_empty())
    else {
        return message.settle(Err(Failure::dead_letter(
            reasons::UNPARSEABLE,
            "not a Finch event: no id, no type or a body that is not JSON",
        )));
    };
    let action = match action::classify(&parsed.event_type, &body) {
        Ok(action) => action,
        Err(problem) => {
            return message.settle(Err(Failure::dead_letter(reasons::UNPARSEABLE, problem)));
        }
    };
    message.set_label(action.label());
    if !action.needs_connection() {
        return message.settle(Ok(()));
    }
    let Some(connection_id) = parsed.connection_id else {
        return message.settle(Err(Failure::dead_letter(
            reasons::UNKNOWN_CONNECTION,
            "the event names no connection",
        )));
    };
    let connection = match ctx.connections.get(&connection_id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            return message.settle(Err(Failure::dead_letter(
                reasons::UNKNOWN_CONNECTION,
                "no access token is stored for this connection",
            )));
        }
        Err(error) => return message.settle(Err(Failure::retry(ErrorChain(&error).to_string()))),
    };
    let row = &connection.row;
    // Finch names the entity a change belongs to; only that one is read.
    let event_entity = body
        .get("entity_id")
        .or_else(|| body.get("data").and_then(|data| data.get("entity_id")))
        .and_then(serde_json::Value::as_str)
        .filter(|entity| row.entity_ids.len() > 1 && row.entity_ids.iter().any(|e| e == entity))
        .map(str::to_owned);
    let event_entity = event_entity.as_deref();
    match action {
        Action::AccountUpdated { status } => {
            spawn_handler(
                ctx,
                &message,
                account::updated(ctx.clone(), connection.clone(), message.clone(), status),
            );
        }
        Action::Job {
            job_id,
            manual,
            kind,
            completed,
        } => {
            spawn_handler(
                ctx,
                &message,
                job::check(
                    ctx.clone(),
                    connection.clone(),
                    message.clone(),
                    job::Job {
                        id: job_id,
                        manual,
                        kind,
                        completed,
                        body: body.get("data").cloned().unwrap_or_default(),
                    },
                ),
            );
        }
        // An operator's resync lifts the worker's own park first.
        Action::FullSync if row.parked_reason.is_some() && !row.is_parked_by_finch() => {
            let handler = {
                let ctx = ctx.clone();
                let row = row.clone();
                let waiter = message.clone();
                async move {
                    let outcome = resume(&ctx, &row.connection_id, "connections resync").await;
                    if outcome.is_ok() {
                        sync(&ctx, &row, &waiter, Depth::Full).await;
                    }
                    waiter.settle(outcome);
                }
            };
            spawn_handler(ctx, &message, handler);
        }
        // Events for a connection Finch cannot serve are acknowledged: the
        // sync that follows its reconnection or resume reads everything anyway.
        _ if row.is_parked() => {
            message.note(format!("skipped: connection is {}", row.parked_because()))
        }
        Action::FullSync | Action::Sweep => {
            let depth = if matches!(action, Action::Sweep) {
                Depth::Sweep
            } else {
                Depth::Full
            };
            message.attach(1);
            let span = message.span.clone();
            let ctx = ctx.clone();
            let row = row.clone();
            let waiter = message.clone();
            ctx.tracker.clone().spawn(
                async move {
                    sync(&ctx, &row, &waiter, depth).await;
                    waiter.settle(Ok(()));
                }
                .instrument(span),
            );
        }
        Action::Company => {
            let target = || Target::Whole {
                follow: Follow::None,
            };
            submit_event(ctx, row, event_entity, Product::Company, target, &message);
        }
        Action::Directory => {
            let target = || Target::Whole {
                follow: Follow::None,
            };
            submit_event(ctx, row, event_entity, Product::Directory, target, &message);
        }
        Action::Individual { individual_id } => {
            let target = || Target::Items(vec![individual_id.clone()]);
            submit_event(
                ctx,
                row,
                event_entity,
                Product::Individual,
                target,
                &message,
            );
        }
        Action::Employment { individual_id } => {
            let target = || Target::Items(vec![individual_id.clone()]);
            submit_event(
                ctx,
                row,
                event_entity,
                Product::Employment,
                target,
                &message,
            );
        }
        Action::Payment { pay_date } => {
            let (start, end) = payment_window(ctx, pay_date);
            let target = || Target::Range {
                start,
                end,
                follow: Follow::None,
            };
            submit_event(ctx, row, event_entity, Product::Payment, target, &message);
        }
        Action::PayStatement { payment_id } => {
            let target = || Target::Items(vec![payment_id.clone()]);
            submit_event(
                ctx,
                row,
                event_entity,
                Product::PayStatement,
                target,
                &message,
            );
        }
        Action::Record => {}
    }
    // Releases the intake's own hold on the message.
    message.settle(Ok(()));
}

/// Queues an event's read: for the event's entity when it names one of a
/// multi-entity connection's, else for every entity the connection reads.
fn submit_event(
    ctx: &Context,
    row: &ConnectionRow,
    event_entity: Option<&str>,
    product: Product,
    target: impl Fn() -> Target,
    waiter: &Arc<Message>,
) {
    let entities = match event_entity {
        Some(entity) => vec![Some(entity.to_owned())],
        None => row.read_entities(),
    };
    for entity in &entities {
        let to = For {
            connection_id: &row.connection_id,
            entity: entity.as_deref(),
            priority: Priority::Event,
        };
        ctx.scheduler.submit(product, to, target(), waiter);
    }
}

/// How much a sync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    /// Everything, ignoring watermarks: a first sync, a reconnect (Finch's
    /// ids may have changed) or an operator's resync.
    Full,
    /// A reconciliation: company, directory and everyone in it, payments
    /// from the watermark minus the overlap, and only the statements of
    /// payments new or changed. Sent only when no event work is due.
    Sweep,
}

/// Queues what a sync reads, for the products the connection granted;
/// directory and payments bring their follow-up reads.
pub(super) async fn sync(
    ctx: &Context,
    connection: &ConnectionRow,
    waiter: &Arc<Message>,
    depth: Depth,
) {
    let id = &connection.connection_id;
    let (priority, follow) = match depth {
        Depth::Full => (Priority::Event, Follow::All),
        Depth::Sweep => (Priority::Sweep, Follow::Changed),
    };
    let entities = connection.read_entities();
    let each = |product: Product, target: &dyn Fn() -> Target| {
        for entity in &entities {
            let to = For {
                connection_id: id,
                entity: entity.as_deref(),
                priority,
            };
            ctx.scheduler.submit(product, to, target(), waiter);
        }
    };
    if connection.has_product("company") {
        each(Product::Company, &|| Target::Whole {
            follow: Follow::None,
        });
    }
    if connection.has_product("directory") {
        each(Product::Directory, &|| Target::Whole {
            follow: Follow::All,
        });
    }
    if connection.has_product("payment") {
        let since = ctx.config.full_sync_since;
        let start = match depth {
            Depth::Full => since,
            Depth::Sweep => match watermarks::payments_read_through(&ctx.pool, id).await {
                Ok(Some(mark)) => {
                    (mark - Days::new(u64::from(ctx.config.fleet.payment_overlap_days))).max(since)
                }
                Ok(None) => since,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "could not read the payments watermark; reading from the start");
                    since
                }
            },
        };
        // Far enough ahead to include payments already scheduled.
        let end = Utc::now()
            .date_naive()
            .checked_add_days(Days::new(62))
            .unwrap_or(NaiveDate::MAX);
        each(Product::Payment, &|| Target::Range { start, end, follow });
    }
}

/// Lifts the worker's park of a connection and announces it.
pub(super) async fn resume(ctx: &Context, connection_id: &str, why: &str) -> Result<(), Failure> {
    let notification = parking::resume(&ctx.pool, connection_id, why)
        .await
        .map_err(|error| Failure::retry(ErrorChain(&error).to_string()))?;
    ctx.connections.invalidate(connection_id);
    if let Some(notification) = notification {
        tracing::info!(connection_id, why, "connection resumed");
        super::notify::publish(ctx, vec![notification]).await;
    }
    Ok(())
}

/// The payment window a `payment.*` event asks for.
fn payment_window(ctx: &Context, pay_date: Option<NaiveDate>) -> (NaiveDate, NaiveDate) {
    // Development builds can be told to panic here, to prove a panic costs
    // one message and not the consumer.
    fail::fail_point!("worker-payment-window");
    let center = pay_date.unwrap_or_else(|| Utc::now().date_naive());
    window_around(center, ctx.config.payment_window_days)
}

/// `days` either side of `center`, cut at the calendar's ends: a pay date
/// near chrono's limits comes from a hostile or broken event, and must not
/// panic the worker.
pub(super) fn window_around(center: NaiveDate, days: u32) -> (NaiveDate, NaiveDate) {
    let days = Days::new(u64::from(days));
    (
        center.checked_sub_days(days).unwrap_or(NaiveDate::MIN),
        center.checked_add_days(days).unwrap_or(NaiveDate::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_at_the_calendars_ends_is_cut_there_instead_of_panicking() {
        assert_eq!(
            window_around(NaiveDate::MAX, 7),
            (NaiveDate::MAX - Days::new(7), NaiveDate::MAX)
        );
        assert_eq!(
            window_around(NaiveDate::MIN, 7),
            (NaiveDate::MIN, NaiveDate::MIN + Days::new(7))
        );
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        assert_eq!(
            window_around(day, 1),
            (
                NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
                NaiveDate::from_ymd_opt(2024, 3, 2).unwrap()
            )
        );
    }
}
