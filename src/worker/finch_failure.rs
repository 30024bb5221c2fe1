//! What a failed Finch request changes beyond the messages waiting on it,
//! by the failure class's rule ([`horizon`]): a pause of its scope, a
//! parked connection, or just a retry or a dead letter.

use std::time::Duration;

use chrono::Utc;

use super::horizon::{self, Parking, Rule, Scope};
use super::message::Failure;
use super::{notify, Context};
use crate::finch::{FailureClass, FinchError, Product};
use crate::store::connections::{self, ConnectionRow};
use crate::store::parking::{self, Park};
use crate::store::watermarks;
use crate::telemetry::ErrorChain;

/// What becomes of the work that met the failure.
#[derive(Debug)]
pub(super) enum Handling {
    /// Its waiters settle with this outcome.
    Settle(Result<(), Failure>),
    /// Its waiters are done: the connection is parked and the sweep that
    /// resumes it reads everything they asked for.
    Acknowledge(String),
    /// It waits in memory for the pause to end; `hold` when the pause is
    /// the connection's own (other connections go on).
    Wait { hold: Option<Duration> },
}

/// Applies the rule of the error's class. `attempts` is the highest
/// delivery attempt among the waiting messages; `product` is `None` for
/// requests outside the data products (jobs, introspection).
pub(super) async fn apply(
    ctx: &Context,
    product: Option<Product>,
    connection: &ConnectionRow,
    error: &FinchError,
    attempts: i64,
) -> Handling {
    let class = error.failure_class();
    let id = &connection.connection_id;
    if let Some(product) = product {
        if let Err(store) =
            watermarks::record_error(&ctx.pool, id, product, &error.to_string()).await
        {
            tracing::warn!(error = %ErrorChain(&store), "could not record the failed read");
        }
    }
    let retry = || Handling::Settle(Err(Failure::from_finch(error)));
    match horizon::rule(class, &ctx.config) {
        Rule::Retry => retry(),
        Rule::DeadLetter(reason) => {
            let mut failure = Failure::from_finch(error);
            failure.disposition = super::message::Disposition::DeadLetter(reason);
            Handling::Settle(Err(failure))
        }
        Rule::Pause {
            scope,
            default_pause,
        } => {
            let pause = horizon::pause_for(error.retry_after(), default_pause);
            tracing::warn!(
                connection_id = %id,
                product = product.map_or("", Product::as_str),
                finch_code = class.as_str(),
                finch_request_id = error.request_id().unwrap_or(""),
                pause_secs = pause.as_secs(),
                scope = ?scope,
                "Finch rate-limited us; pausing the scope for every worker"
            );
            let recorded = match (scope, product) {
                (Scope::Product, Some(product)) => ctx.budget.pause(product, Some(pause)).await,
                (Scope::Product, None) => Ok(()),
                (Scope::Everything, _) => ctx.budget.pause_all(pause).await,
                (Scope::Connection, _) => {
                    let paused = connections::pause_until(&ctx.pool, id, pause).await;
                    ctx.connections.invalidate(id);
                    paused
                }
            };
            if let Err(store) = recorded {
                tracing::warn!(error = %ErrorChain(&store), "could not record the rate-limit pause");
            }
            if product.is_none() {
                // Only the product lanes can hold work in memory.
                return retry();
            }
            Handling::Wait {
                hold: (scope == Scope::Connection).then_some(pause),
            }
        }
        Rule::RetryThenPark { retries, park } => {
            if attempts < i64::from(retries) {
                retry()
            } else {
                park_connection(ctx, connection, class, &park, error).await
            }
        }
        Rule::Park(park) => park_connection(ctx, connection, class, &park, error).await,
    }
}

/// Parks the connection with the class's backoff and horizon, announces
/// it, and says what becomes of the waiting messages.
async fn park_connection(
    ctx: &Context,
    connection: &ConnectionRow,
    class: FailureClass,
    parking: &Parking,
    error: &FinchError,
) -> Handling {
    let id = &connection.connection_id;
    let now = Utc::now();
    let series = match parking::series(&ctx.pool, id).await {
        Ok(series) => series,
        Err(store) => {
            tracing::warn!(error = %ErrorChain(&store), "could not read the connection's failures");
            return Handling::Settle(Err(Failure::retry(ErrorChain(&store).to_string())));
        }
    };
    let count = series.map_or(0, |s| s.park_count).max(0) as u32 + 1;
    let since = series.and_then(|s| s.parked_at).unwrap_or(now);
    let resume_at = horizon::resume_at(
        parking,
        count,
        since,
        now,
        ctx.config.fleet.park_backoff_max,
    );
    let past_horizon = parking.backoff.is_some() && resume_at.is_none();
    let error_text = if past_horizon {
        format!(
            "{error}; still failing after {}, so the connection waits for `connections resync`",
            humantime::format_duration(parking.horizon.unwrap_or_default())
        )
    } else {
        error.to_string()
    };
    let park = Park {
        reason: class.as_str(),
        status: parking.status,
        resume_at,
        error: &error_text,
    };
    match parking::park(&ctx.pool, id, &park).await {
        Ok(notifications) => {
            if !notifications.is_empty() {
                tracing::warn!(
                    connection_id = %id,
                    reason = class.as_str(),
                    resume_at = resume_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
                    attempt = count,
                    finch_request_id = error.request_id().unwrap_or(""),
                    "connection parked"
                );
            }
            notify::publish(ctx, notifications).await;
        }
        Err(store) => {
            tracing::warn!(error = %ErrorChain(&store), "could not park the connection");
            return Handling::Settle(Err(Failure::retry(ErrorChain(&store).to_string())));
        }
    }
    ctx.connections.invalidate(id);
    match parking.dead_letter {
        Some(_) => Handling::Settle(Err(Failure::from_finch(error))),
        None => Handling::Acknowledge(format!("skipped: connection parked ({})", class.as_str())),
    }
}
