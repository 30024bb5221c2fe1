//! `/admin/connections...`: every connection's sync status, as
//! `connections list` and `connections show` print it (never a token).

use axum::extract::{Path, State};
use axum::Json;

use super::{AdminError, AdminState, ErrorBody};
use crate::ops::connections::{self, ConnectionStatus};

/// Every connection with its sync status, oldest first.
#[utoipa::path(
    get,
    path = "/admin/connections",
    responses(
        (status = 200, description = "Every stored connection and its sync status", body = [ConnectionStatus]),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 500, description = "Internal error (logged)", body = ErrorBody),
        (status = 503, description = "Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub(super) async fn list(
    State(state): State<AdminState>,
) -> Result<Json<Vec<ConnectionStatus>>, AdminError> {
    Ok(Json(connections::list(&state.pool).await?))
}

/// One connection's sync status: per product the last successful read,
/// Finch-Data-Retrieved and the last error; the next sweep; why and since
/// when it is parked.
#[utoipa::path(
    get,
    path = "/admin/connections/{connection_id}",
    params(("connection_id" = String, Path, description = "Finch connection id")),
    responses(
        (status = 200, description = "The connection's sync status", body = ConnectionStatus),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
        (status = 500, description = "Internal error (logged)", body = ErrorBody),
        (status = 503, description = "Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(connection_id): Path<String>,
) -> Result<Json<ConnectionStatus>, AdminError> {
    Ok(Json(
        connections::status(&state.pool, &connection_id).await?,
    ))
}
