//! Why a console request failed, as a page a person can read. An outage
//! answers 503; a bug answers 500 and is logged, never described.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::ops::{FilterError, OpsError};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, or an expired one: go to the sign-in page.
    #[error("sign in first")]
    SignInNeeded,
    #[error(
        "this form is out of date or did not come from the console; reload the page and try again"
    )]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    /// `RabbitMQ` or `the database`.
    #[error("{0} is unavailable; try again shortly")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::SignInNeeded => return super::redirect("/sign-in"),
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(error) => {
                tracing::error!(error = %ErrorChain(error.as_ref()), "console request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            Self::Internal(_) => {
                "Something went wrong; the details are in the service's log.".to_owned()
            }
            other => other.to_string(),
        };
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{code} · finch-webhooks console</title>\
             <link rel=\"stylesheet\" href=\"{prefix}/static/console.css\"></head>\
             <body><main class=\"narrow\"><h1>{code}</h1><p role=\"alert\">{message}</p>\
             <p><a href=\"{prefix}/\">Back to the overview</a></p></main></body></html>",
            code = status.as_u16(),
            prefix = super::PREFIX,
            message = escape(&message),
        );
        (status, Html(page)).into_response()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %ErrorChain(&error), "console: database unavailable");
                Self::Unavailable("the database")
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<FilterError> for ConsoleError {
    fn from(error: FilterError) -> Self {
        Self::Invalid(error.to_string())
    }
}

impl From<OpsError> for ConsoleError {
    fn from(error: OpsError) -> Self {
        match error {
            OpsError::Filter(error) => error.into(),
            OpsError::UnknownConnection(_) => Self::NotFound,
            OpsError::Store(error) => error.into(),
            OpsError::Broker(_) | OpsError::Interrupted { .. } | OpsError::Publish(_) => {
                tracing::warn!(error = %ErrorChain(&error), "console: RabbitMQ failed");
                Self::Unavailable("RabbitMQ")
            }
            other => Self::Internal(other.into()),
        }
    }
}
