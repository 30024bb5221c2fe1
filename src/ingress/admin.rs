//! The admin API: the dead-letter queue operations of `finch-webhooks dlq`
//! and `events show` over HTTP, JSON in and out, under `/admin/`.
//!
//! Mounted only when `ADMIN_TOKEN` is set, so without one every `/admin/`
//! path is a plain 404. Every route, the OpenAPI document included, needs
//! `Authorization: Bearer <token>`: the document names internal operations
//! and is of use only to someone who may call them.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use tokio::sync::Mutex;
use utoipa::OpenApi as _;

use crate::dlq::{
    self, DlqError, FilterError, FilterParams, Listing, PurgeReport, ReplayOptions, ReplayReport,
    Shown,
};
use crate::queue;
use crate::store::events::{self, EventRecord};

#[derive(Clone)]
pub struct AdminState {
    /// SHA-256 of the token: comparing digests takes the same time whatever
    /// the length of the guess, so not even the length leaks.
    token_digest: [u8; 32],
    amqp_url: String,
    pool: PgPool,
    /// One DLQ operation at a time in this process: a scan holds every message
    /// it has not finished with, so a concurrent one would see only the rest.
    exclusive: Arc<Mutex<()>>,
}

pub fn router(token: &SecretString, amqp_url: String, pool: PgPool) -> Router {
    let state = AdminState {
        token_digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        amqp_url,
        pool,
        exclusive: Arc::new(Mutex::new(())),
    };
    Router::new()
        .route("/admin/dlq", get(list_dlq))
        .route("/admin/dlq/replay", post(replay_dlq))
        .route("/admin/dlq/purge", post(purge_dlq))
        .route("/admin/dlq/{event_id}", get(show_dlq))
        .route("/admin/events/{event_id}", get(show_event))
        .route("/admin/openapi.json", get(openapi))
        // route_layer: only matched routes ask for the token; the rest 404.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return AdminError::Unauthorized.into_response();
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if bool::from(digest.ct_eq(&state.token_digest)) {
        next.run(request).await
    } else {
        tracing::warn!("admin API called with a wrong token");
        AdminError::Unauthorized.into_response()
    }
}

/// Failures, as short machine-readable codes in the ingress's style.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    InvalidRequest {
        field: Option<&'static str>,
        message: String,
    },
    #[error("purge needs \"confirm\": true")]
    ConfirmationRequired,
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Error body: `error` is a stable code; the other fields help a person.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `not_found`, `invalid_request`, `confirmation_required`,
    /// `broker_unavailable`, `database_unavailable` or `internal_error`.
    pub error: String,
    pub field: Option<String>,
    pub message: Option<String>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" })),
            Self::NotFound => (StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
            Self::InvalidRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_request", "field": field, "message": message }),
            ),
            Self::ConfirmationRequired => (
                StatusCode::BAD_REQUEST,
                json!({ "error": "confirmation_required", "field": "confirm", "message": self.to_string() }),
            ),
            Self::Unavailable(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": format!("{what}_unavailable") }),
            ),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal_error" }),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<FilterError> for AdminError {
    fn from(error: FilterError) -> Self {
        Self::InvalidRequest {
            field: Some(error.field),
            message: error.to_string(),
        }
    }
}

impl From<DlqError> for AdminError {
    fn from(error: DlqError) -> Self {
        match error {
            DlqError::Store(crate::store::StoreError::Unavailable(_)) => {
                Self::Unavailable("database")
            }
            DlqError::Broker(_) | DlqError::Interrupted { .. } => {
                tracing::warn!(%error, "admin DLQ operation failed at the broker");
                Self::Unavailable("broker")
            }
            other => Self::Internal(other.into()),
        }
    }
}

fn invalid_body(rejection: impl std::fmt::Display) -> AdminError {
    AdminError::InvalidRequest {
        field: None,
        message: rejection.to_string(),
    }
}

impl AdminState {
    /// Runs a DLQ operation on a connection of its own, in a task of its own:
    /// a client that hangs up does not cut a replay or purge short.
    async fn with_broker<T, F, Fut>(&self, operation: F) -> Result<T, AdminError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<lapin::Connection>, PgPool) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, DlqError>> + Send,
    {
        let state = self.clone();
        tokio::spawn(async move {
            let _only_one = state.exclusive.lock().await;
            let connection = Arc::new(
                queue::connect(&state.amqp_url)
                    .await
                    .map_err(|_| AdminError::Unavailable("broker"))?,
            );
            queue::declare_topology(&connection, &queue::DEFAULT_RETRY_DELAYS)
                .await
                .map_err(|_| AdminError::Unavailable("broker"))?;
            let outcome = operation(connection.clone(), state.pool.clone()).await;
            connection
                .close(200, "admin request done".into())
                .await
                .ok();
            Ok(outcome?)
        })
        .await
        .map_err(|error| AdminError::Internal(error.into()))?
    }
}

/// Messages listed by `GET /admin/dlq` when the request sets no limit.
const LIST_DEFAULT_LIMIT: usize = 1_000;

/// List dead-lettered messages (never bodies) and counts by reason; at most
/// 1,000 messages unless `limit` says otherwise.
#[utoipa::path(
    get,
    path = "/admin/dlq",
    params(FilterParams),
    responses(
        (status = 200, description = "Matching messages in queue order", body = Listing),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "RabbitMQ unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
async fn list_dlq(
    State(state): State<AdminState>,
    query: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Json<Listing>, AdminError> {
    let Query(mut params) = query.map_err(invalid_body)?;
    // Counts always cover every match; the lines are capped so that a deep
    // DLQ does not turn into a response of hundreds of megabytes.
    params.limit = params.limit.or(Some(LIST_DEFAULT_LIMIT));
    let filter = params.resolve(chrono::Utc::now())?;
    let listing = state
        .with_broker(move |connection, _| async move { dlq::list(&connection, &filter).await })
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
        (status = 404, description = "Neither in the DLQ nor in webhook_events", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
async fn show_dlq(
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

/// Body of `POST /admin/dlq/replay`: the filters of `GET /admin/dlq`, plus options.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub event_type: Option<String>,
    pub connection: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 time, or a duration ago such as `2h`.
    pub since: Option<String>,
    pub limit: Option<usize>,
    /// Count what would be replayed, changing nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Republishes per second (at least 1); unlimited if absent.
    pub rate: Option<u32>,
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
        (status = 503, description = "RabbitMQ or Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
async fn replay_dlq(
    State(state): State<AdminState>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<ReplayReport>, AdminError> {
    let Json(request) = body.map_err(invalid_body)?;
    if request.rate == Some(0) {
        return Err(AdminError::InvalidRequest {
            field: Some("rate"),
            message: "rate must be at least 1 message per second".into(),
        });
    }
    let filter = FilterParams {
        event_type: request.event_type,
        connection: request.connection,
        reason: request.reason,
        since: request.since,
        limit: request.limit,
    }
    .resolve(chrono::Utc::now())?;
    let options = ReplayOptions {
        dry_run: request.dry_run,
        rate: request.rate,
    };
    let report = state
        .with_broker(move |connection, pool| async move {
            dlq::replay(&connection, Some(&pool), &filter, options).await
        })
        .await?;
    Ok(Json(report))
}

/// Body of `POST /admin/dlq/purge`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    pub event_type: Option<String>,
    pub connection: Option<String>,
    pub reason: Option<String>,
    pub since: Option<String>,
    pub limit: Option<usize>,
    /// Must be `true`: the API's `--yes`.
    #[serde(default)]
    pub confirm: bool,
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
        (status = 503, description = "RabbitMQ or Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "dlq"
)]
async fn purge_dlq(
    State(state): State<AdminState>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<PurgeReport>, AdminError> {
    let Json(request) = body.map_err(invalid_body)?;
    if !request.confirm {
        return Err(AdminError::ConfirmationRequired);
    }
    let filter = FilterParams {
        event_type: request.event_type,
        connection: request.connection,
        reason: request.reason,
        since: request.since,
        limit: request.limit,
    }
    .resolve(chrono::Utc::now())?;
    let report = state
        .with_broker(move |connection, pool| async move {
            dlq::purge(&connection, Some(&pool), &filter).await
        })
        .await?;
    Ok(Json(report))
}

/// The lifecycle of one event from `webhook_events` (no body).
#[utoipa::path(
    get,
    path = "/admin/events/{event_id}",
    params(("event_id" = String, Path, description = "Finch event id")),
    responses(
        (status = 200, description = "The stored event", body = EventRecord),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 503, description = "Postgres unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "events"
)]
async fn show_event(
    State(state): State<AdminState>,
    Path(event_id): Path<String>,
) -> Result<Json<EventRecord>, AdminError> {
    match events::find(&state.pool, &event_id).await {
        Ok(Some(record)) => Ok(Json(record)),
        Ok(None) => Err(AdminError::NotFound),
        Err(error) => Err(DlqError::from(error).into()),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    responses(
        (status = 200, description = "OpenAPI 3.1 document of the admin API", content_type = "application/json"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "meta"
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminApi::openapi())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "finch-webhooks admin API",
        description = "Dead-letter queue and event lookups. Every route needs `Authorization: Bearer <ADMIN_TOKEN>`."
    ),
    paths(list_dlq, show_dlq, replay_dlq, purge_dlq, show_event, openapi),
    modifiers(&BearerAuth)
)]
pub struct AdminApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}
