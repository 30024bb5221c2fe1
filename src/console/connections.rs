//! `/console/connections`: each connection's status, freshness and recent
//! failures, and a resync.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::session::{CsrfOnly, SignedIn};
use super::{redirect, ConsoleError, ConsoleState};
use crate::ops::{connection_health, connections};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Shown after a resync was queued: for which connection.
    resynced: Option<String>,
}

pub(super) async fn list(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let connections = connection_health::list(&state.pool).await?;
    state.page(
        "connections.html",
        &signed_in,
        "connections",
        minijinja::context! {
            connections => connections,
            resynced => query.resynced,
        },
    )
}

pub(super) async fn resync(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(connection_id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(form.csrf())?;
    connections::resync(
        &state.pool,
        state.amqp_url.expose(),
        &state.retry_delays,
        &connection_id,
    )
    .await?;
    tracing::info!(connection_id, "console resync queued");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("resynced", &connection_id);
    Ok(redirect(&format!("/connections?{}", query.finish())))
}
