//! `/healthz`, `/readyz` and `/metrics`, the same routes for every role. A
//! role supplies a [`Probe`]: what it needs to be ready, and its metrics.
//! [`router`] and [`metrics_router`] are apart so that a role can keep its
//! metrics off a public port.
//!
//! `/healthz` answers while the process serves HTTP (liveness). `/readyz`
//! answers 200 `{"status": "ready", ...}` when every required check passes
//! and 503 `{"status": "not_ready", ...}` otherwise, with each check's state
//! beside the status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

/// How long `/readyz` waits for Postgres before calling it unreachable.
const POSTGRES_TIMEOUT: Duration = Duration::from_secs(2);

/// What a role reports about itself.
pub trait Probe: Send + Sync + 'static {
    /// The checks behind `/readyz`.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
    /// The role's metrics, in Prometheus text exposition.
    fn metrics(&self) -> String;
}

/// The answer of `/readyz`: ready unless a required check failed, and what
/// each check found.
#[derive(Debug, Clone)]
pub struct Readiness {
    ready: bool,
    /// Each check's or fact's name and state, as the body shows them.
    report: Map<String, Value>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self {
            ready: true,
            report: Map::new(),
        }
    }

    /// A check the role cannot work without: reported as `up` or `down`,
    /// and not ready while it fails.
    pub fn require(mut self, name: &str, ok: bool, up: &str, down: &str) -> Self {
        self.ready &= ok;
        self.report
            .insert(name.to_owned(), Value::from(if ok { up } else { down }));
        self
    }

    /// A fact reported for operators that does not decide readiness.
    pub fn report(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.report.insert(name.to_owned(), value.into());
        self
    }
}

/// Whether Postgres answers a trivial query in time.
pub async fn postgres_answers(pool: &PgPool) -> bool {
    tokio::time::timeout(
        POSTGRES_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool),
    )
    .await
    .is_ok_and(|result| result.is_ok())
}

/// `/healthz` and `/readyz`, answering for `probe`.
pub fn router<P: Probe>(probe: Arc<P>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz::<P>))
        .with_state(probe)
}

/// `/metrics`, answering for `probe`.
pub fn metrics_router<P: Probe>(probe: Arc<P>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<P>))
        .with_state(probe)
}

async fn readyz<P: Probe>(State(probe): State<Arc<P>>) -> impl IntoResponse {
    let Readiness { ready, mut report } = probe.readiness().await;
    report.insert(
        "status".to_owned(),
        Value::from(if ready { "ready" } else { "not_ready" }),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Value::Object(report)))
}

async fn metrics<P: Probe>(State(probe): State<Arc<P>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probe.metrics(),
    )
}
