//! `/admin/events/...`: an event's lifecycle from `webhook_events`.

use axum::extract::{Path, State};
use axum::Json;

use super::{AdminError, AdminState, ErrorBody};
use crate::ops::events::{self, EventRecord};

/// The lifecycle of one event from `webhook_events` (no body).
#[utoipa::path(
    get,
    path = "/admin/events/{event_id}",
    params(("event_id" = String, Path, description = "Finch event id")),
    responses(
        (status = 200, description = "The stored event", body = EventRecord),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 500, description = "Internal error (logged)", body = ErrorBody),
        (status = 503, description = "Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "events"
)]
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(event_id): Path<String>,
) -> Result<Json<EventRecord>, AdminError> {
    events::show(&state.pool, &event_id)
        .await?
        .map(Json)
        .ok_or(AdminError::NotFound)
}
