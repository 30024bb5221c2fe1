//! `/console/dead-letters`: the DLQ grouped by reason and connection,
//! replays run as background jobs at a chosen rate, and purges that need a
//! typed confirmation.
//!
//! Both actions carry the count the operator saw and never take more
//! messages than that, so a DLQ that grew meanwhile does not widen them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use serde::{Deserialize, Serialize};

use super::session::SignedIn;
use super::{redirect, ConsoleError, ConsoleState};
use crate::ops::dlq::{self, ReplayOptions};
use crate::ops::{Filter, OpsError, Selection};
use crate::queue;
use crate::store::console as store;
use crate::telemetry::ErrorChain;

/// Messages listed individually (the counts cover every match).
const LISTED: usize = 100;
/// Fastest replay the console offers, in messages per second.
const MAX_RATE: u32 = 10_000;
/// How often a running replay's progress is written for the page to read.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Which dead letters: the [`Filter`] fields, blank meaning "any".
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(super) struct Choice {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    reason: String,
    /// RFC 3339, or a duration ago such as 2h.
    #[serde(default)]
    since: String,
}

impl Choice {
    fn filter(&self, limit: Option<usize>) -> Filter {
        let given = |value: &str| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
        Filter {
            event_type: given(&self.event_type),
            connection: given(&self.connection),
            reason: given(&self.reason),
            since: given(&self.since),
            limit,
        }
    }

    fn selection(&self, limit: Option<usize>) -> Result<Selection, ConsoleError> {
        Ok(self.filter(limit).resolve(chrono::Utc::now())?)
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(flatten)]
    choice: Choice,
    /// Shown after a purge: how many went.
    purged: Option<u64>,
}

impl ConsoleState {
    /// Runs a DLQ operation on a broker connection of its own, one at a
    /// time in this process (shared with the admin API).
    async fn with_dlq<T, F, Fut>(&self, operation: F) -> Result<T, ConsoleError>
    where
        F: FnOnce(Arc<lapin::Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpsError>>,
    {
        let _only_one = self.exclusive.lock().await;
        run_on_broker(self, operation).await
    }

    /// As `with_dlq`, but `None` at once while another operation (a replay
    /// job, a purge) holds the DLQ, so that a page never waits behind a
    /// replay paced over minutes.
    async fn with_dlq_if_free<T, F, Fut>(&self, operation: F) -> Result<Option<T>, ConsoleError>
    where
        F: FnOnce(Arc<lapin::Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpsError>>,
    {
        let Ok(_only_one) = self.exclusive.try_lock() else {
            return Ok(None);
        };
        run_on_broker(self, operation).await.map(Some)
    }
}

async fn run_on_broker<T, F, Fut>(state: &ConsoleState, operation: F) -> Result<T, ConsoleError>
where
    F: FnOnce(Arc<lapin::Connection>) -> Fut,
    Fut: std::future::Future<Output = Result<T, OpsError>>,
{
    let connection = Arc::new(broker(state).await?);
    let outcome = operation(connection.clone()).await;
    connection.close(200, "console done".into()).await.ok();
    Ok(outcome?)
}

async fn broker(state: &ConsoleState) -> Result<lapin::Connection, ConsoleError> {
    let connection = queue::connect(state.amqp_url.expose())
        .await
        .map_err(OpsError::from)?;
    queue::declare_topology(&connection, &state.retry_delays)
        .await
        .map_err(OpsError::from)?;
    Ok(connection)
}

pub(super) async fn list(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let selection = query.choice.selection(Some(LISTED))?;
    let listing = state
        .with_dlq_if_free(|connection| async move { dlq::list(&connection, &selection).await })
        .await?;
    let jobs = store::recent_replay_jobs(&state.pool, 10).await?;
    state.page(
        "dead_letters.html",
        &signed_in,
        "dead-letters",
        minijinja::context! {
            choice => &query.choice,
            listing => listing.as_ref().map(minijinja::Value::from_serialize),
            busy => listing.is_none(),
            purged => query.purged,
            jobs => jobs,
            max_rate => MAX_RATE,
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct ReplayForm {
    csrf: Option<String>,
    #[serde(flatten)]
    choice: Choice,
    /// How many matched when the operator confirmed.
    expected: u64,
    /// Messages per second.
    rate: u32,
}

pub(super) async fn replay(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Form(form): Form<ReplayForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(form.csrf.as_deref())?;
    if form.expected == 0 {
        return Err(ConsoleError::Invalid("nothing to replay".into()));
    }
    if !(1..=MAX_RATE).contains(&form.rate) {
        return Err(ConsoleError::Invalid(format!(
            "rate must be between 1 and {MAX_RATE} messages per second"
        )));
    }
    let expected = usize::try_from(form.expected)
        .map_err(|_| ConsoleError::Invalid("too many messages".into()))?;
    let selection = form.choice.selection(Some(expected))?;
    let filter = serde_json::to_value(&form.choice).map_err(anyhow::Error::from)?;
    let rate = i32::try_from(form.rate).unwrap_or(i32::MAX);
    let id = store::create_replay_job(&state.pool, &filter, rate, form.expected as i64).await?;
    tracing::info!(
        job = id,
        expected,
        rate = form.rate,
        "console replay started"
    );
    tokio::spawn(run_replay(state.clone(), id, selection, form.rate));
    Ok(redirect(&format!("/replays/{id}")))
}

/// Runs one replay job to its end, writing its progress as it goes.
async fn run_replay(state: ConsoleState, id: i64, selection: Selection, rate: u32) {
    let replayed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let pool = state.pool.clone();
        let replayed = replayed.clone();
        async move {
            let mut written = 0;
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let now = replayed.load(Ordering::Relaxed);
                if now != written
                    && store::record_replay_progress(&pool, id, now as i64)
                        .await
                        .is_ok()
                {
                    written = now;
                }
            }
        }
    });
    let outcome = state
        .with_dlq(|connection| {
            let pool = state.pool.clone();
            let replayed = replayed.clone();
            async move {
                dlq::replay_reporting(
                    &connection,
                    Some(&pool),
                    &selection,
                    ReplayOptions {
                        dry_run: false,
                        rate: Some(rate),
                    },
                    &mut |done| replayed.store(done, Ordering::Relaxed),
                )
                .await
            }
        })
        .await;
    writer.abort();
    let (done, skipped, error) = match &outcome {
        Ok(report) => (report.replayed, report.skipped, None),
        Err(error) => {
            tracing::warn!(job = id, error = %ErrorChain(error), "console replay failed");
            (replayed.load(Ordering::Relaxed), 0, Some(error.to_string()))
        }
    };
    if let Err(error) = store::finish_replay_job(
        &state.pool,
        id,
        done as i64,
        skipped as i64,
        error.as_deref(),
    )
    .await
    {
        tracing::warn!(job = id, error = %ErrorChain(&error), "console replay outcome not recorded");
    }
}

pub(super) async fn job(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, ConsoleError> {
    let job = store::replay_job(&state.pool, id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    state.page(
        "replay_job.html",
        &signed_in,
        "dead-letters",
        minijinja::context! { job => job },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct PurgeForm {
    csrf: Option<String>,
    #[serde(flatten)]
    choice: Choice,
    expected: u64,
    /// Must read `purge <expected>`.
    #[serde(default)]
    confirmation: String,
}

pub(super) async fn purge(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Form(form): Form<PurgeForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(form.csrf.as_deref())?;
    let wanted = format!("purge {}", form.expected);
    if form.expected == 0 || form.confirmation.trim() != wanted {
        return Err(ConsoleError::Invalid(format!(
            "nothing was purged: type \"{wanted}\" to confirm"
        )));
    }
    let expected = usize::try_from(form.expected)
        .map_err(|_| ConsoleError::Invalid("too many messages".into()))?;
    let selection = form.choice.selection(Some(expected))?;
    let pool = state.pool.clone();
    let report = state
        .with_dlq(
            |connection| async move { dlq::purge(&connection, Some(&pool), &selection).await },
        )
        .await?;
    tracing::info!(purged = report.purged, "console purge");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("purged", &report.purged.to_string());
    Ok(redirect(&format!("/dead-letters?{}", query.finish())))
}
