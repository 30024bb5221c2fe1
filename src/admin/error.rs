//! Failures of admin requests, as short machine-readable codes in the
//! ingress's style. An outage answers 503; anything else unexpected (a bug)
//! answers 500 and is logged, never described to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ops::{FilterError, OpsError};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// Too many wrong tokens from this client: it may try again after `retry_after`.
    #[error("too many wrong tokens; try again later")]
    TooManyFailures { retry_after: std::time::Duration },
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    InvalidRequest {
        field: Option<&'static str>,
        message: String,
    },
    #[error("purge needs \"confirm\": true")]
    ConfirmationRequired,
    /// `broker` or `database`: the dependency that is out.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Error body: `error` is a stable code; the other fields help a person.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `too_many_failures`, `not_found`, `invalid_request`, `confirmation_required`,
    /// `broker_unavailable`, `database_unavailable` or `internal_error`.
    pub error: String,
    pub field: Option<String>,
    pub message: Option<String>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" })),
            Self::TooManyFailures { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "error": "too_many_failures" }),
            ),
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
                tracing::error!(error = %ErrorChain(error.as_ref()), "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal_error" }),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyFailures { retry_after } => {
                // Whole seconds, rounded up, so a client that waits is let in.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
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

impl From<OpsError> for AdminError {
    fn from(error: OpsError) -> Self {
        match error {
            OpsError::Filter(error) => error.into(),
            OpsError::UnknownConnection(_) => Self::NotFound,
            OpsError::Store(StoreError::Unavailable(_)) => {
                tracing::warn!(error = %ErrorChain(&error), "admin request: database unavailable");
                Self::Unavailable("database")
            }
            OpsError::Broker(_) | OpsError::Interrupted { .. } | OpsError::Publish(_) => {
                tracing::warn!(error = %ErrorChain(&error), "admin request failed at the broker");
                Self::Unavailable("broker")
            }
            // A query bug, a token the key cannot open, Finch refusing: not an outage.
            other => Self::Internal(other.into()),
        }
    }
}

/// A request body or query string that could not be read as the route's type.
pub(super) fn invalid_body(rejection: impl std::fmt::Display) -> AdminError {
    AdminError::InvalidRequest {
        field: None,
        message: rejection.to_string(),
    }
}
