//! `account.updated`: the connection's status, from Finch rather than from
//! the event; a connection that is `connected` again gets a full sync.

use std::sync::Arc;

use super::message::{Failure, Message};
use super::route::{self, Depth};
use super::Context;
use crate::finch::ErrorClass;
use crate::store::connections;
use crate::telemetry::ErrorChain;

/// `account.updated`: events arrive out of order, so the status comes from
/// `/introspect`, not from the event; `connected` starts a full sync.
pub(super) async fn updated(
    ctx: Arc<Context>,
    connection: Arc<connections::Connection>,
    message: Arc<Message>,
    event_status: Option<String>,
) {
    let id = connection.row.connection_id.clone();
    let outcome = match ctx.finch.introspect(&connection.token).await {
        Ok(info) => {
            let status = info.status().to_owned();
            let updated = connections::update_details(
                &ctx.pool,
                &id,
                info.provider(),
                &info.products,
                &status,
            )
            .await;
            let updated = match updated {
                Ok(()) => {
                    connections::record_introspection(
                        &ctx.pool,
                        &id,
                        info.kind(),
                        &info.entity_ids(),
                        info.last_successful_sync(),
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            ctx.connections.invalidate(&id);
            match updated {
                Ok(()) => {
                    tracing::info!(connection_id = %id, status = %status, "connection status updated");
                    if status == "connected" {
                        if let Err(failure) =
                            route::resume(&ctx, &id, "account.updated: connected").await
                        {
                            message.settle(Err(failure));
                            return;
                        }
                        match connections::find(&ctx.pool, &id).await {
                            Ok(Some(row)) => route::sync(&ctx, &row, &message, Depth::Full).await,
                            Ok(None) => message.note("connection removed meanwhile"),
                            Err(error) => {
                                message.settle(Err(Failure::retry(ErrorChain(&error).to_string())));
                                return;
                            }
                        }
                    }
                    Ok(())
                }
                Err(error) => Err(Failure::retry(ErrorChain(&error).to_string())),
            }
        }
        Err(error) if error.class() == ErrorClass::Retry => Err(Failure::from_finch(&error)),
        Err(error) => {
            // The token no longer works: the event's status is all we know.
            let status = event_status.unwrap_or_else(|| "reauth".to_owned());
            tracing::warn!(connection_id = %id, %status, %error, "introspection refused; using the event's status");
            ctx.connections.invalidate(&id);
            connections::set_status(&ctx.pool, &id, &status, Some(&error.to_string()))
                .await
                .map_err(|error| Failure::retry(ErrorChain(&error).to_string()))
        }
    };
    message.settle(outcome);
}
