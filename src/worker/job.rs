//! `job.*`: Finch's automated and manual jobs. A completed data sync
//! means a full refetch; a job still running is retried; one that failed is
//! recorded on the connection.

use std::sync::Arc;

use super::message::{Failure, Message};
use super::{finch_failure, route, Context};
use crate::store::connections;
use crate::store::finch_data;
use crate::telemetry::ErrorChain;

/// `job.*`: reads the job; a completed data sync means a full refetch.
pub(super) async fn check(
    ctx: Arc<Context>,
    connection: Arc<connections::Connection>,
    message: Arc<Message>,
    job_id: String,
    manual: bool,
    kind: String,
) {
    let row = &connection.row;
    let response = match ctx.finch.job(&connection.token, manual, &job_id).await {
        Ok(response) => response,
        Err(error) => {
            finch_failure::apply(&ctx, None, row, &error).await;
            return message.settle(Err(Failure::from_finch(&error)));
        }
    };
    if let Err(error) = finch_data::record_job(
        &ctx.pool,
        &row.connection_id,
        &job_id,
        &kind,
        &response.body,
    )
    .await
    {
        return message.settle(Err(Failure::retry(ErrorChain(&error).to_string())));
    }
    let status = response
        .body
        .get("status")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let outcome = if manual {
        Ok(())
    } else {
        match status.as_str() {
            "complete" if row.is_parked() => {
                message.note(format!("skipped: connection is {}", row.status));
                Ok(())
            }
            "complete" => {
                route::full_sync(&ctx, row, &message);
                Ok(())
            }
            "pending" | "in_progress" => {
                Err(Failure::retry(format!("job {job_id} is still {status}")))
            }
            _ => {
                let note = format!("job {job_id} ended {status}");
                tracing::warn!(connection_id = %row.connection_id, %job_id, %status, "Finch job did not complete");
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
                Ok(())
            }
        }
    };
    message.settle(outcome);
}
