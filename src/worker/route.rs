//! From a delivery to the work it asks for: read and classify the event,
//! find its connection, then either queue its Finch reads with the
//! [`scheduler`](super::scheduler) or start its handler ([`account`],
//! [`job`]). Anything that cannot be routed is settled at once.

use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
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

/// Routes one delivery to the work it needs.
pub(super) async fn intake(
    ctx: &Arc<Context>,
    delivery: lapin::message::Delivery,
    done: &mpsc::UnboundedSender<Arc<Message>>,
) {
    let (message, parsed) = Message::from_delivery(delivery, done.clone());
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
            message.attach(1);
            let span = message.span.clone();
            ctx.tracker.spawn(
                account::updated(ctx.clone(), connection.clone(), message.clone(), status)
                    .instrument(span),
            );
        }
        Action::Job {
            job_id,
            manual,
            kind,
        } => {
            message.attach(1);
            let span = message.span.clone();
            ctx.tracker.spawn(
                job::check(
                    ctx.clone(),
                    connection.clone(),
                    message.clone(),
                    job_id,
                    manual,
                    kind,
                )
                .instrument(span),
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
fn payment_window(ctx: &Context, pay_date: Option<NaiveDate>) -> (NaiveDate, NaiveDate) {
    let days = Days::new(u64::from(ctx.config.payment_window_days));
    let center = pay_date.unwrap_or_else(|| Utc::now().date_naive());
    (center - days, center + days)
}
