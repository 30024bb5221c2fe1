//! `GET /console/`: the overview, refreshed by itself.

use axum::extract::State;
use axum::response::Response;

use super::session::SignedIn;
use super::{ConsoleError, ConsoleState};
use crate::ops::overview;

/// Minutes of ingress answers the overview shows.
const MINUTES: u32 = 15;

pub(super) async fn show(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
) -> Result<Response, ConsoleError> {
    let overview = overview::overview(
        &state.pool,
        state.amqp_url.expose(),
        &state.retry_delays,
        &state.config.rate_limits,
        MINUTES,
    )
    .await?;
    let minutes: Vec<_> = overview
        .minutes
        .iter()
        .rev()
        .map(|minute| {
            minijinja::context! {
                minute => minute.minute,
                accepted => minute.accepted,
                duplicate => minute.duplicate,
                unparseable => minute.unparseable,
                refused_total => minute.refused_total(),
                refused => overview.refusal_reasons.iter()
                    .map(|reason| minute.refused.get(reason).copied().unwrap_or(0))
                    .collect::<Vec<_>>(),
            }
        })
        .collect();
    state.page(
        "overview.html",
        &signed_in,
        "overview",
        minijinja::context! {
            refresh_secs => state.config.refresh.as_secs(),
            minutes => minutes,
            overview => overview,
        },
    )
}
