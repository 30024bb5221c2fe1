//! Every way a delivery can fail, and the response each gets. Bodies carry a
//! short machine-readable code; internals are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::signature::VerifyError;
use crate::telemetry::ErrorChain;

pub type Result<T, E = IngressError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("verification failed")]
    Verify(#[from] VerifyError),
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request body could not be read")]
    UnreadableBody,
    /// Postgres could not durably store the event: Finch must retry later.
    #[error("event store unavailable")]
    Unavailable { retry_after_secs: u64 },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Verify(error) if error.is_client_format_error() => StatusCode::BAD_REQUEST,
            Self::Verify(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The metric label for this outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Verify(_) | Self::UnreadableBody | Self::MethodNotAllowed => "rejected",
            Self::PayloadTooLarge { .. } => "too_large",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "error",
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Self::Verify(
                error @ (VerifyError::MissingHeader(name) | VerifyError::MalformedHeader(name)),
            ) => {
                json!({ "error": error.code(), "header": name })
            }
            Self::Verify(error) => json!({ "error": error.code() }),
            Self::PayloadTooLarge { limit } => {
                json!({ "error": "payload_too_large", "limit_bytes": limit })
            }
            Self::UnreadableBody => json!({ "error": "unreadable_body" }),
            Self::Unavailable { .. } => json!({ "error": "temporarily_unavailable" }),
            Self::MethodNotAllowed => json!({ "error": "method_not_allowed" }),
            Self::Internal(_) => json!({ "error": "internal_error" }),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(error) => {
                tracing::error!(error = %ErrorChain(error.as_ref()), "webhook delivery failed")
            }
            Self::Unavailable { .. } => {
                tracing::warn!("event store unavailable; answered 503 so Finch retries")
            }
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        match self {
            Self::Unavailable { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::MethodNotAllowed => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_reason_once() {
        let refused = IngressError::from(VerifyError::NoMatchingSignature);
        let shown = format!("{:#}", anyhow::Error::new(refused));
        assert_eq!(shown, "verification failed: no signature matches");
    }
}
