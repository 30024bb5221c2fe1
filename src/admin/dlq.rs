//! `/admin/dlq...`: list, show, replay and purge dead letters.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::invalid_body;
use super::{AdminError, AdminState, ErrorBody};
use crate::ops::dlq::{self, Listing, PurgeReport, ReplayOptions, ReplayReport, Shown};
use crate::ops::Filter;

/// Messages listed by `GET /admin/dlq` when the request sets no limit.
const LIST_DEFAULT_LIMIT: usize = 1_000;

/// List dead-lettered messages (never bodies) and counts by reason; at most
/// 1,000 messages unless `limit` says otherwise.
#[utoipa::path(
    get,
    path = "/admin/dlq",
    params(Filter),
    responses(
        (status = 200, description = "Matching messages in queue order", body = Listing),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
        (status = 503, description = "RabbitMQ unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(super) async fn list(
    State(state): State<AdminState>,
    query: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Listing>, AdminError> {
    let Query(mut filter) = query.map_err(invalid_body)?;
    // Counts always cover every match; the lines are capped so that a deep
    // DLQ does not turn into a response of hundreds of megabytes.
    filter.limit = filter.limit.or(Some(LIST_DEFAULT_LIMIT));
    let selection = filter.resolve(chrono::Utc::now())?;
    let listing = state
        .with_broker(move |connection, _| async move { dlq::list(&connection, &selection).await })
        .await?;
    Ok(Json(listing))
}

/// One event's copies in the DLQ (bodies included: they hold employee data)
/// and its stored record.
#[utoipa::path(
    get,
    path = "/admin/dlq/{event_id}",
    params(("event_id" = String, Path, description = "Finch event id")),
    responses(
        (status = 200, description = "The event's DLQ copies and record", body = Shown),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
        (status = 404, description = "Neither in the DLQ nor in webhook_events", body = ErrorBody),
        (status = 500, description = "Internal error (logged)", body = ErrorBody),
        (status = 503, description = "RabbitMQ or Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(event_id): Path<String>,
) -> Result<Json<Shown>, AdminError> {
    let shown = state
        .with_broker(move |connection, pool| async move {
            dlq::show(&connection, Some(&pool), &event_id).await
        })
        .await?;
    if shown.is_empty() {
        return Err(AdminError::NotFound);
    }
    Ok(Json(shown))
}

/// Body of `POST /admin/dlq/replay`: the filters of `GET /admin/dlq`, plus
/// how to replay, side by side in one object.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReplayRequest {
    #[serde(flatten)]
    pub filter: Filter,
    #[serde(flatten)]
    pub options: ReplayOptions,
    /// Whatever no field above took, which the handler refuses: a misspelt
    /// filter must not silently widen the operation.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Republish matching messages to the work exchange, each removed from the
/// DLQ once the broker confirmed its copy. Answers when the replay is done.
#[utoipa::path(
    post,
    path = "/admin/dlq/replay",
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "Replay finished", body = ReplayReport),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
        (status = 503, description = "RabbitMQ or Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(super) async fn replay(
    State(state): State<AdminState>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<ReplayReport>, AdminError> {
    let Json(request) = body.map_err(invalid_body)?;
    refuse_unknown(&request.unknown)?;
    if request.options.rate == Some(0) {
        return Err(AdminError::InvalidRequest {
            field: Some("rate"),
            message: "rate must be at least 1 message per second".into(),
        });
    }
    let selection = request.filter.resolve(chrono::Utc::now())?;
    let options = request.options;
    let report = state
        .with_broker(move |connection, pool| async move {
            dlq::replay(&connection, Some(&pool), &selection, options).await
        })
        .await?;
    Ok(Json(report))
}

/// Body of `POST /admin/dlq/purge`: the filters of `GET /admin/dlq` and the
/// confirmation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PurgeRequest {
    #[serde(flatten)]
    pub filter: Filter,
    /// Must be `true`: the API's `--yes`.
    #[serde(default)]
    pub confirm: bool,
    /// Whatever no field above took, which the handler refuses: a misspelt
    /// filter must not silently widen the operation.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Delete matching messages (all of them without filters).
#[utoipa::path(
    post,
    path = "/admin/dlq/purge",
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "Purge finished", body = PurgeReport),
        (status = 400, description = "Invalid request, or confirm not true", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
        (status = 503, description = "RabbitMQ or Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
pub(super) async fn purge(
    State(state): State<AdminState>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<PurgeReport>, AdminError> {
    let Json(request) = body.map_err(invalid_body)?;
    refuse_unknown(&request.unknown)?;
    if !request.confirm {
        return Err(AdminError::ConfirmationRequired);
    }
    let selection = request.filter.resolve(chrono::Utc::now())?;
    let report = state
        .with_broker(move |connection, pool| async move {
            dlq::purge(&connection, Some(&pool), &selection).await
        })
        .await?;
    Ok(Json(report))
}

/// A misspelt filter must be refused, not ignored: it would widen a replay
/// or purge. Serde cannot deny unknown fields across `flatten`, so the
/// request bodies collect what no field took and it is refused here.
fn refuse_unknown(unknown: &BTreeMap<String, serde_json::Value>) -> Result<(), AdminError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(name) => Err(AdminError::InvalidRequest {
            field: None,
            message: format!("unknown field `{name}`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::Query;
    use clap::Parser as _;
    use serde_json::json;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        options: ReplayOptions,
    }

    #[test]
    fn flags_query_string_and_json_bodies_read_one_filter_alike() {
        let expected = Filter {
            event_type: Some("employment.updated".into()),
            connection: Some("conn-1".into()),
            reason: Some("reauthenticate_user".into()),
            since: Some("2h".into()),
            limit: Some(5),
        };
        let flags = Flags::try_parse_from([
            "dlq",
            "--event-type",
            "employment.updated",
            "--connection",
            "conn-1",
            "--reason",
            "reauthenticate_user",
            "--since",
            "2h",
            "--limit",
            "5",
            "--dry-run",
            "--rate",
            "10",
        ])
        .unwrap();
        assert_eq!(flags.filter, expected);
        assert_eq!(
            (flags.options.dry_run, flags.options.rate),
            (true, Some(10))
        );

        let uri = "/admin/dlq?event_type=employment.updated&connection=conn-1\
                   &reason=reauthenticate_user&since=2h&limit=5"
            .parse()
            .unwrap();
        let Query(query) = Query::<Filter>::try_from_uri(&uri).unwrap();
        assert_eq!(query, expected);

        let fields = json!({
            "event_type": "employment.updated",
            "connection": "conn-1",
            "reason": "reauthenticate_user",
            "since": "2h",
            "limit": 5,
        });
        let mut body = fields.clone();
        body["dry_run"] = json!(true);
        body["rate"] = json!(10);
        let replay: ReplayRequest = serde_json::from_value(body).unwrap();
        assert_eq!(replay.filter, expected);
        assert_eq!(
            (replay.options.dry_run, replay.options.rate),
            (true, Some(10))
        );
        assert!(replay.unknown.is_empty(), "{:?}", replay.unknown);
        let mut body = fields;
        body["confirm"] = json!(true);
        let purge: PurgeRequest = serde_json::from_value(body).unwrap();
        assert_eq!(purge.filter, expected);
        assert!(purge.confirm && purge.unknown.is_empty());
    }

    #[test]
    fn a_misspelt_filter_is_refused_never_dropped() {
        let uri = "/admin/dlq?conection=conn-1".parse().unwrap();
        assert!(Query::<Filter>::try_from_uri(&uri).is_err());
        let replay: ReplayRequest =
            serde_json::from_value(json!({"conection": "conn-1", "dry_run": true})).unwrap();
        assert_eq!(replay.filter, Filter::default());
        assert!(refuse_unknown(&replay.unknown).is_err());
        let purge: PurgeRequest =
            serde_json::from_value(json!({"confirm": true, "reasn": "x"})).unwrap();
        assert!(refuse_unknown(&purge.unknown).is_err());
    }
}
