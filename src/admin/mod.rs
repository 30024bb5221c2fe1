//! The admin listener (`ADMIN_LISTEN_ADDR`): the operations of
//! [`crate::ops`] over HTTP, JSON in and out, under `/admin/`, beside the
//! ingress's `/metrics`. [`router`] is the one place its routes are built;
//! the public port never serves any of them.
//!
//! The API is mounted only when `ADMIN_TOKEN` is set, so without one every
//! `/admin/` path is a plain 404. Every route, the OpenAPI document
//! included, needs `Authorization: Bearer <token>`: the document names
//! internal operations and is of use only to someone who may call them.
//! Wrong tokens are throttled per client ([`throttle`]).
//!
//! The operator console ([`crate::console`]) is served with the API, under
//! `/console/`.

mod auth;
mod connections;
mod dlq;
mod error;
mod events;
pub(crate) mod throttle;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::Mutex;
use utoipa::OpenApi as _;

pub use dlq::{PurgeRequest, ReplayRequest};
pub use error::{AdminError, ErrorBody};

use crate::ops::OpsError;
use crate::queue;
use crate::secret_url::SecretUrl;

#[derive(Clone)]
pub struct AdminState {
    /// SHA-256 of the token: comparing digests takes the same time whatever
    /// the length of the guess, so not even the length leaks.
    token_digest: [u8; 32],
    amqp_url: SecretUrl,
    /// The retry ladder of the settings, declared with the topology.
    retry_delays: Arc<[Duration]>,
    pool: PgPool,
    /// One DLQ operation at a time in this process: a scan holds every message
    /// it has not finished with, so a concurrent one would see only the rest.
    exclusive: Arc<Mutex<()>>,
    /// Counts wrong tokens per client and refuses those over the allowance.
    throttle: Arc<throttle::AuthThrottle>,
}

/// What the admin API needs from the settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Bearer token of `/admin/`; `None` leaves the API unmounted (404).
    pub token: Option<SecretString>,
    /// The DLQ operations open a broker connection of their own per request.
    pub amqp_url: SecretUrl,
    /// The retry ladder of the settings, declared with the topology.
    pub retry_delays: Vec<Duration>,
    /// Wrong tokens one client may present per minute before it gets 429.
    pub auth_failures_per_minute: NonZeroU32,
    /// The console served with the API.
    pub console: crate::config::ConsoleConfig,
}

/// Every route of the admin listener: `metrics` (the role's `/metrics`,
/// open to whoever reaches the port, as Prometheus expects) and, when a
/// token is set, the admin API.
pub fn router(settings: AdminSettings, pool: PgPool, metrics: Router) -> Router {
    match &settings.token {
        Some(token) => metrics.merge(api(token, settings.clone(), pool)),
        None => metrics,
    }
}

fn api(token: &SecretString, settings: AdminSettings, pool: PgPool) -> Router {
    let state = AdminState {
        token_digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        amqp_url: settings.amqp_url,
        retry_delays: settings.retry_delays.into(),
        pool,
        exclusive: Arc::new(Mutex::new(())),
        throttle: throttle::AuthThrottle::start(settings.auth_failures_per_minute),
    };
    Router::new()
        .route("/admin/dlq", get(dlq::list))
        .route("/admin/dlq/replay", post(dlq::replay))
        .route("/admin/dlq/purge", post(dlq::purge))
        .route("/admin/dlq/{event_id}", get(dlq::show))
        .route("/admin/events/{event_id}", get(events::show))
        .route("/admin/connections", get(connections::list))
        .route("/admin/connections/{connection_id}", get(connections::show))
        .route("/admin/openapi.json", get(openapi))
        // route_layer: only matched routes ask for the token; the rest 404.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state.clone())
        .merge(crate::console::router(state.console_deps(settings.console)))
}

impl AdminState {
    /// The console shares the token, the broker settings and the DLQ lock.
    fn console_deps(&self, config: crate::config::ConsoleConfig) -> crate::console::ConsoleDeps {
        crate::console::ConsoleDeps {
            pool: self.pool.clone(),
            amqp_url: self.amqp_url.clone(),
            retry_delays: self.retry_delays.clone(),
            token_digest: self.token_digest,
            exclusive: self.exclusive.clone(),
            throttle: self.throttle.clone(),
            config,
        }
    }

    /// Runs a DLQ operation on a connection of its own, in a task of its own:
    /// a client that hangs up does not cut a replay or purge short.
    async fn with_broker<T, F, Fut>(&self, operation: F) -> Result<T, AdminError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<lapin::Connection>, PgPool) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, OpsError>> + Send,
    {
        let state = self.clone();
        tokio::spawn(async move {
            let _only_one = state.exclusive.lock().await;
            let connection = Arc::new(
                queue::connect(state.amqp_url.expose())
                    .await
                    .map_err(|_| AdminError::Unavailable("broker"))?,
            );
            queue::declare_topology(&connection, &state.retry_delays)
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

/// This document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    responses(
        (status = 200, description = "OpenAPI 3.1 document of the admin API", content_type = "application/json"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this client; retry after Retry-After seconds", body = ErrorBody),
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
        description = "Dead-letter queue, event lookups and connections' sync status. Every route needs `Authorization: Bearer <ADMIN_TOKEN>`."
    ),
    paths(
        dlq::list,
        dlq::show,
        dlq::replay,
        dlq::purge,
        events::show,
        connections::list,
        connections::show,
        openapi
    ),
    modifiers(&BearerAuth, &FilterExtended)
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

/// [`Filter`](crate::ops::Filter) refuses unknown fields, which its derived
/// schema states as `additionalProperties: false`. The request bodies extend
/// it (`allOf`) with fields of their own, which that would forbid; they refuse
/// unknown fields themselves.
struct FilterExtended;

impl utoipa::Modify for FilterExtended {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let filter = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("Filter"));
        if let Some(RefOr::T(Schema::Object(filter))) = filter {
            filter.additional_properties = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    #[test]
    fn request_bodies_are_documented_as_the_filter_plus_their_own_fields() {
        let document = serde_json::to_value(super::AdminApi::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        assert!(schemas["Filter"]["properties"]["since"].is_object());
        assert!(
            schemas["Filter"].get("additionalProperties").is_none(),
            "{}",
            schemas["Filter"]
        );
        let replay = &schemas["ReplayRequest"]["allOf"];
        assert_eq!(replay[0]["$ref"], "#/components/schemas/Filter");
        assert_eq!(replay[1]["$ref"], "#/components/schemas/ReplayOptions");
        let purge = &schemas["PurgeRequest"]["allOf"];
        assert_eq!(purge[0]["$ref"], "#/components/schemas/Filter");
        assert!(purge[1]["properties"]["confirm"].is_object());
    }
}
