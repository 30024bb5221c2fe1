//! `job.*`: Finch's automated and manual jobs. A completed data sync costs
//! no request: Finch sends an item event for every change its sync found,
//! so the job only records Finch's freshness; a connection never read yet
//! gets its first full sync. A job still running is retried; one that
//! failed is recorded on the connection.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Value};

use super::finch_failure::{self, Handling};
use super::message::{Failure, Message};
use super::route::{self, Depth};
use super::Context;
use crate::store::connections::{self, ConnectionRow};
use crate::store::{finch_data, watermarks};
use crate::telemetry::ErrorChain;

/// A `job.*` event.
pub(super) struct Job {
    /// Finch's job id, from the event.
    pub id: String,
    /// A manual (benefits) job, read from `/jobs/manual`.
    pub manual: bool,
    /// The job type: `data_sync_all`, `initial_data_sync_*`, `benefit_*`.
    pub kind: String,
    /// The event already says it finished successfully.
    pub completed: bool,
    /// The event's `data`, recorded when the job is not read.
    pub body: Value,
}

pub(super) async fn check(
    ctx: Arc<Context>,
    connection: Arc<connections::Connection>,
    message: Arc<Message>,
    job: Job,
) {
    let row = &connection.row;
    if !job.manual && job.completed {
        let mut data = match job.body {
            Value::Object(map) => Value::Object(map),
            _ => json!({}),
        };
        data["status"] = json!("complete");
        let outcome = finished(&ctx, row, &message, &job.id, &job.kind, &data).await;
        return message.settle(outcome);
    }
    let response = match ctx.finch.job(&connection.token, job.manual, &job.id).await {
        Ok(response) => response,
        Err(error) => {
            let handling = finch_failure::apply(&ctx, None, row, &error, message.attempt()).await;
            let outcome = match handling {
                Handling::Settle(outcome) => outcome,
                Handling::Acknowledge(note) => {
                    message.note(note);
                    Ok(())
                }
                Handling::Wait { .. } => Err(Failure::from_finch(&error)),
            };
            return message.settle(outcome);
        }
    };
    let status = response
        .body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let outcome = if job.manual {
        record(&ctx, row, &job.id, &job.kind, &response.body).await
    } else {
        match status.as_str() {
            "complete" => finished(&ctx, row, &message, &job.id, &job.kind, &response.body).await,
            "pending" | "in_progress" => record(&ctx, row, &job.id, &job.kind, &response.body)
                .await
                .and(Err(Failure::retry(format!(
                    "job {} is still {status}",
                    job.id
                )))),
            _ => {
                let recorded = record(&ctx, row, &job.id, &job.kind, &response.body).await;
                let note = format!("job {} ended {status}", job.id);
                tracing::warn!(connection_id = %row.connection_id, job_id = %job.id, %status, "Finch job did not complete");
                let new_status = if status == "reauth_error" {
                    "reauth"
                } else {
                    row.status.as_str()
                };
                if let Err(error) =
                    connections::set_status(&ctx.pool, &row.connection_id, new_status, Some(&note))
                        .await
                {
                    tracing::warn!(error = %ErrorChain(&error), "could not record the job result");
                }
                ctx.connections.invalidate(&row.connection_id);
                message.note(note);
                recorded
            }
        }
    };
    message.settle(outcome);
}

/// A data sync finished at Finch: record it and Finch's freshness; read
/// everything only if this connection was never read.
async fn finished(
    ctx: &Context,
    row: &ConnectionRow,
    message: &Arc<Message>,
    job_id: &str,
    kind: &str,
    data: &Value,
) -> Result<(), Failure> {
    record(ctx, row, job_id, kind, data).await?;
    let id = &row.connection_id;
    if let Err(error) = connections::record_finch_sync(&ctx.pool, id, Utc::now()).await {
        tracing::warn!(error = %ErrorChain(&error), "could not record Finch's sync time");
    }
    if row.is_parked() {
        message.note(format!("skipped: connection is {}", row.parked_because()));
        return Ok(());
    }
    let never_read = watermarks::of_connection(&ctx.pool, id)
        .await
        .map_err(|error| Failure::retry(ErrorChain(&error).to_string()))?
        .iter()
        .all(|mark| mark.last_success_at.is_none());
    if never_read {
        route::sync(ctx, row, message, Depth::Full).await;
    }
    Ok(())
}

async fn record(
    ctx: &Context,
    row: &ConnectionRow,
    job_id: &str,
    kind: &str,
    data: &Value,
) -> Result<(), Failure> {
    finch_data::record_job(&ctx.pool, &row.connection_id, job_id, kind, data)
        .await
        .map_err(|error| Failure::retry(ErrorChain(&error).to_string()))
}
