//! What a failed Finch request changes beyond the messages waiting on it:
//! a 429 pauses the product for every worker, `reauthenticate_user` parks
//! the connection until it is added again.

use super::Context;
use crate::finch::{ErrorClass, FinchError, Product};
use crate::store::connections::{self, ConnectionRow};
use crate::telemetry::ErrorChain;

/// Pauses the product after a 429 (when the request was for one) and parks
/// the connection after `reauthenticate_user`.
pub(super) async fn apply(
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
            tracing::warn!(error = %ErrorChain(&store), "could not record the rate-limit pause");
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
            tracing::warn!(error = %ErrorChain(&store), "could not park the connection");
        }
        ctx.connections.invalidate(&connection.connection_id);
    }
}
