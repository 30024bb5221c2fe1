//! One dispatcher per product: waits until some connection's collected
//! work is due, takes a request from the shared rate budget, and only then
//! picks whose batch goes out (see [`scheduler`]), which
//! [`fetch`] then reads and commits.

use std::sync::Arc;

use tracing::Instrument as _;

use std::time::Duration;

use super::scheduler::{self, Lane, Priority, Work};
use super::{fetch, Context};
use crate::finch::Product;
use crate::metrics::ProductLabel;
use crate::store::budget::Grant;
use crate::telemetry::ErrorChain;

/// Longest a dispatcher with only sweep work sleeps before asking the
/// budget again (event work wakes it sooner).
const SWEEP_RECHECK: Duration = Duration::from_secs(1);

/// Runs a product's dispatcher until the worker stops.
pub(super) async fn run(ctx: Arc<Context>, lane: Arc<Lane>) {
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
        if lane.event_work_due(window) {
            if !take_budget(&ctx, product, None).await {
                return;
            }
        } else {
            // Only sweeps are due: they take what the reserve leaves, or wait.
            let wait = match ctx
                .budget
                .try_acquire_below(product, ctx.config.fleet.sweep_reserve)
                .await
            {
                Ok(Grant::Granted) => None,
                Ok(Grant::Wait(wait)) => Some(wait.min(SWEEP_RECHECK)),
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), product = product.as_str(), "rate budget unavailable");
                    Some(SWEEP_RECHECK)
                }
            };
            if let Some(wait) = wait {
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = lane.changed() => {}
                    () = ctx.stop.cancelled() => return,
                }
                continue;
            }
        }
        // Chosen only now, so the batch holds whatever arrived meanwhile.
        let Some((connection_id, work)) = lane.take_next(window, max_items, true) else {
            continue;
        };
        ctx.metrics.batch_size.observe(work.requests() as f64);
        let span = batch_span(product, &connection_id, &work);
        ctx.tracker
            .spawn(fetch::run(ctx.clone(), product, connection_id, work, permit).instrument(span));
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
    let events = work.requests();
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

/// The first request of a batch was paid for by the dispatcher; later pages
/// take their own (a sweep's only below the reserve).
pub(super) struct Spend {
    /// Whether the dispatcher's request is still unused.
    prepaid: bool,
    /// Requests granted so far, for the batch's `refetched` line.
    granted: u32,
    /// A sweep's share limit: it takes budget only below it.
    below_reserve: Option<f64>,
}

impl Spend {
    /// For a batch the dispatcher took a request for.
    pub(super) fn prepaid(ctx: &Context, priority: Priority) -> Self {
        Self {
            prepaid: true,
            granted: 0,
            below_reserve: (priority == Priority::Sweep).then_some(ctx.config.fleet.sweep_reserve),
        }
    }

    /// Requests this batch has been granted.
    pub(super) fn requests(&self) -> u32 {
        self.granted
    }

    /// One request's budget: the prepaid one first, then from the shared
    /// budget; false once the worker stops.
    pub(super) async fn take(&mut self, ctx: &Context, product: Product) -> bool {
        let granted = std::mem::take(&mut self.prepaid)
            || take_budget(ctx, product, self.below_reserve).await;
        self.granted += u32::from(granted);
        granted
    }
}

/// Takes one request from the shared budget, counting the wait; false
/// once the worker stops.
async fn take_budget(ctx: &Context, product: Product, below_reserve: Option<f64>) -> bool {
    let Some(waited) =
        scheduler::acquire_budget(&ctx.budget, product, below_reserve, &ctx.stop).await
    else {
        return false;
    };
    ctx.metrics
        .rate_limit_wait
        .get_or_create(&ProductLabel {
            product: product.as_str(),
        })
        .inc_by(waited.as_secs_f64());
    true
}
