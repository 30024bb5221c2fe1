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
use super::scheduler::Target;
use super::{account, job, Context};
use crate::finch::Product;
use crate::queue::contract::reasons;
use crate::store::connections::ConnectionRow;
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
        } => {
            spawn_handler(
                ctx,
                &message,
                job::check(
                    ctx.clone(),
                    connection.clone(),
                    message.clone(),
                    job_id,
                    manual,
                    kind,
                ),
            );
        }
        // Events for a connection Finch cannot serve are acknowledged: the
        // full sync that follows its reconnection reads everything anyway.
        _ if row.is_parked() => message.note(format!("skipped: connection is {}", row.status)),
        Action::FullSync => full_sync(ctx, row, &message),
        Action::Company => {
            ctx.scheduler.submit(
                Product::Company,
                &connection_id,
                Target::Whole { follow: false },
                &message,
            );
        }
        Action::Directory => {
            ctx.scheduler.submit(
                Product::Directory,
                &connection_id,
                Target::Whole { follow: false },
                &message,
            );
        }
        Action::Individual { individual_id } => {
            ctx.scheduler.submit(
                Product::Individual,
                &connection_id,
                Target::Items(vec![individual_id]),
                &message,
            );
        }
        Action::Employment { individual_id } => {
            ctx.scheduler.submit(
                Product::Employment,
                &connection_id,
                Target::Items(vec![individual_id]),
                &message,
            );
        }
        Action::Payment { pay_date } => {
            let (start, end) = payment_window(ctx, pay_date);
            ctx.scheduler.submit(
                Product::Payment,
                &connection_id,
                Target::Range {
                    start,
                    end,
                    follow: false,
                },
                &message,
            );
        }
        Action::PayStatement { payment_id } => {
            ctx.scheduler.submit(
                Product::PayStatement,
                &connection_id,
                Target::Items(vec![payment_id]),
                &message,
            );
        }
        Action::Record => {}
    }
    // Releases the intake's own hold on the message.
    message.settle(Ok(()));
}

/// Queues everything a full sync reads, for the products the connection
/// granted; directory and payments bring their follow-up reads.
pub(super) fn full_sync(ctx: &Context, connection: &ConnectionRow, waiter: &Arc<Message>) {
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
        let end = Utc::now()
            .date_naive()
            .checked_add_days(Days::new(62))
            .unwrap_or(NaiveDate::MAX);
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
