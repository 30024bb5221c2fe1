//! Finch's error schema (`code`, `name`, `finch_code`, `message`) and the
//! errors the emulator answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use finch_core::Product;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub name: &'static str,
    pub finch_code: Option<&'static str>,
    pub message: String,
    /// Wall-clock wait sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        name: &'static str,
        finch_code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            name,
            finch_code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "code": self.status.as_u16(),
            "name": self.name,
            "message": self.message,
        });
        if let Some(code) = self.finch_code {
            body["finch_code"] = json!(code);
        }
        // Finch's 429 bodies also carry the status twice more (Rate Limits guide).
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            body["statusCode"] = json!(429);
            body["status"] = json!(429);
        }
        body
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("invalid_request"),
            message,
        )
    }

    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_request_error",
            None,
            "The access token is missing from the Authorization header",
        )
    }

    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token_error",
            None,
            "The access token is invalid",
        )
    }

    pub fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client_error",
            None,
            "The client credentials are invalid",
        )
    }

    pub fn invalid_grant() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant_error",
            None,
            "The authorization code is invalid",
        )
    }

    pub fn reauthenticate() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("reauthenticate_user"),
            "Please reauthenticate user",
        )
    }

    pub fn account_setup_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("account_setup_required"),
            "The user needs to connect their employment system",
        )
    }

    pub fn permissions() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "error_permissions",
            Some("insufficient_account_permissions"),
            "The third-party admin account lacks the permissions this request needs",
        )
    }

    pub fn insufficient_scope(product: Product) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope_error",
            None,
            format!(
                "The access token does not have the `{}` product",
                product.as_str()
            ),
        )
    }

    /// Assisted connections answer this until Finch has set them up.
    pub fn authorization_pending() -> Self {
        Self::new(
            StatusCode::ACCEPTED,
            "authorization_pending",
            Some("pending"),
            "Authorization to this company's data is pending",
        )
    }

    pub fn not_found(finch_code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            Some(finch_code),
            message,
        )
    }

    /// A 429 with the `finch_code` of its kind and a wall-clock `Retry-After`.
    pub fn rate_limited(finch_code: &'static str, retry_after: std::time::Duration) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded_error",
            Some(finch_code),
            if finch_code == "upstream_rate_limit_exceeded" {
                "The upstream provider's rate limit was exceeded"
            } else {
                "Too many requests for token"
            },
        );
        error.retry_after = Some(retry_after);
        error
    }

    /// What a multi-entity connection answers a read that names no (or an unknown) entity.
    pub fn entity_required(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_request"),
            message,
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "Internal server error",
        )
    }

    pub fn upstream() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway_error",
            Some("upstream_provider_error"),
            "The upstream provider returned an unexpected error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

/// Per-item error inside a 200 batch response.
pub fn item_not_found(finch_code: &'static str, what: &str, id: &str) -> Value {
    ApiError::not_found(
        finch_code,
        format!("The {what} with id '{id}' could not be found"),
    )
    .body()
}

/// The per-item 202 of a payment whose statements are still being fetched.
/// Its message is a literal in the SDK's types, so it must match exactly.
pub fn data_sync_in_progress() -> Value {
    json!({
        "code": 202,
        "name": "accepted",
        "finch_code": "data_sync_in_progress",
        "message": "The pay statements for this payment are being fetched. Please check back later.",
    })
}
