//! The HTTP surface: routes, the checks every Finch request goes through, and
//! the response headers Finch adds.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use finch_core::Product;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::ratelimit::Limited;
use super::state::{iso, Connection, Shared};
use super::{control, data, management, sandbox};

pub type AppState = Arc<Shared>;

pub const API_VERSION_HEADER: &str = "finch-api-version";

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route(Product::Company.path(), get(data::company))
        .route(Product::Directory.path(), get(data::directory))
        .route(Product::Individual.path(), post(data::individuals))
        .route(Product::Employment.path(), post(data::employments))
        .route(Product::Payment.path(), get(data::payments))
        .route(Product::PayStatement.path(), post(data::pay_statements))
        .route("/auth/token", post(management::token))
        .route("/introspect", get(management::introspect))
        .route("/disconnect", post(management::disconnect))
        .route(
            "/jobs/automated",
            post(management::create_job).get(management::list_jobs),
        )
        .route("/jobs/automated/{job_id}", get(management::get_job))
        .route("/jobs/manual/{job_id}", get(management::get_manual_job))
        .route("/sandbox/connections", post(sandbox::create_connection))
        .route(
            "/sandbox/connections/accounts",
            post(sandbox::create_account).put(sandbox::update_account),
        )
        .route("/sandbox/company", put(sandbox::update_company))
        .route("/sandbox/directory", post(sandbox::create_directory))
        .route("/sandbox/individual/{id}", put(sandbox::update_individual))
        .route("/sandbox/employment/{id}", put(sandbox::update_employment))
        .route("/sandbox/payment", post(sandbox::create_payment))
        .route("/sandbox/jobs", post(sandbox::create_job))
        .route(
            "/sandbox/jobs/configuration",
            get(sandbox::get_job_configuration).put(sandbox::put_job_configuration),
        )
        .route("/_emulator/stats", get(management::stats))
        .route("/_emulator/authorize", post(management::authorize))
        .route("/_emulator/test-webhook", post(management::test_webhook))
        .merge(control::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(require_api_version))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_and_tag,
        ))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::not_found("item_not_found", "No such endpoint")
}

/// Stamps `Finch-Request-Id` on every response and counts it for the stats.
async fn count_and_tag(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let route = format!(
        "{} {}",
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("(unmatched)", MatchedPath::as_str)
    );
    let in_flight = InFlight::enter(&shared.stats.in_flight);
    let mut response = next.run(request).await;
    drop(in_flight);
    shared
        .stats
        .record_request(route, response.status().as_u16());
    let id = uuid::Uuid::new_v4().to_string();
    response.headers_mut().insert(
        HeaderName::from_static("finch-request-id"),
        HeaderValue::from_str(&id).expect("a uuid is a valid header value"),
    );
    response
}

/// Counts a request as in flight until it is answered or its client goes
/// away (which drops the handler mid-way).
struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicU64) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Finch requires `Finch-API-Version` on every request; the emulator's own
/// endpoints under `/_emulator/` do not.
async fn require_api_version(request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/_emulator/")
        && !request.headers().contains_key(API_VERSION_HEADER)
    {
        return ApiError::bad_request("The Finch-API-Version header is required").into_response();
    }
    next.run(request).await
}

/// A JSON body whose rejection is a Finch error rather than axum's text.
pub struct FinchJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FinchJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::bad_request("The request body could not be read"))?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map(FinchJson)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::missing_token)
}

/// The connection behind the request's bearer token.
pub fn token_connection(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    shared.connection_for_token(bearer(headers)?)
}

/// Basic `client_id:client_secret`, as the sandbox connection endpoints take.
pub fn require_client(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let credentials = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| BASE64.decode(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(ApiError::invalid_client)?;
    let (id, secret) = credentials
        .split_once(':')
        .ok_or_else(ApiError::invalid_client)?;
    if shared.client_matches(id, secret) {
        Ok(())
    } else {
        Err(ApiError::invalid_client())
    }
}

/// Who a data request reads as: the connection, and the entity it named.
#[derive(Debug, Clone)]
pub struct Access {
    pub connection_id: String,
    /// Index into the connection's entity ids; `None` reads every entity
    /// (only single-entity connections may leave it out).
    pub entity: Option<usize>,
}

/// The `entity_ids` a request names: `entity_ids[]=` as the official SDK
/// sends them, or plain repeated `entity_ids=`.
fn requested_entities(uri: &Uri) -> Vec<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "entity_ids" || key == "entity_ids[]")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// Finch's rule, as the SDK documents it: exactly one entity id per request,
/// required when the connection has more than one entity, optional otherwise.
fn entity_of(connection: &Connection, uri: &Uri) -> Result<Option<usize>, ApiError> {
    let requested = requested_entities(uri);
    match requested.as_slice() {
        [] if connection.entity_ids.len() > 1 => Err(ApiError::entity_required(
            "`entity_ids` is required for a connection with more than one entity",
        )),
        [] => Ok(None),
        [one] => connection
            .entity_ids
            .iter()
            .position(|e| e == one)
            .map(Some)
            .ok_or_else(|| {
                ApiError::entity_required(format!("`entity_ids` names an unknown entity '{one}'"))
            }),
        _ => Err(ApiError::entity_required(
            "`entity_ids` accepts a maximum of one entity id per request",
        )),
    }
}

/// Everything a `/employer/*` request passes before it sees data, in the
/// order Finch applies it: token, product scope, rate limits, injected
/// faults, then the connection's state and the entity it names.
pub async fn data_access(
    shared: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    product: Product,
) -> Result<Access, ApiError> {
    let connection_id = token_connection(shared, headers)?;
    {
        let world = shared.world();
        let connection = world
            .connections
            .get(&connection_id)
            .ok_or_else(ApiError::invalid_token)?;
        if !connection.has_product(product.permission()) {
            return Err(ApiError::insufficient_scope(product));
        }
    }
    shared.stats.record_data_request(product, &connection_id);
    let now = shared.now();
    if let Err(limited) = shared.limiter.check(product, now) {
        let (code, wait) = match limited {
            Limited::Application(wait) => ("finch_application_rl", wait),
            Limited::Ip(wait) => ("finch_api_ip_rl", wait),
        };
        shared.stats.record_rate_limited(product, code);
        return Err(ApiError::rate_limited(code, shared.scaled(wait)));
    }
    if let Some(error) =
        shared
            .faults
            .hit(now, product, &connection_id)
            .and_then(|(kind, until)| {
                kind.error(shared.scaled((until - now).to_std().unwrap_or_default()))
            })
    {
        if let Some(code) = error.finch_code.filter(|_| error.status.as_u16() == 429) {
            shared.stats.record_rate_limited(product, code);
        }
        return Err(error);
    }
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    if let Some(fault) = shared.injected_fault() {
        return Err(fault);
    }
    let world = shared.world();
    let connection = world
        .connections
        .get(&connection_id)
        .ok_or_else(ApiError::invalid_token)?;
    match connection.status.as_str() {
        "pending" | "processing" => return Err(ApiError::authorization_pending()),
        "reauth" => return Err(ApiError::reauthenticate()),
        "error_no_account_setup" => return Err(ApiError::account_setup_required()),
        "error_permissions" => return Err(ApiError::permissions()),
        "disconnected" => return Err(ApiError::invalid_token()),
        _ => {}
    }
    if connection.synced.is_none() {
        return Err(ApiError::authorization_pending());
    }
    let entity = entity_of(connection, uri)?;
    Ok(Access {
        connection_id,
        entity,
    })
}

/// `Finch-Data-Retrieved` and the last-attempt headers of a data response.
pub fn data_headers(connection: &Connection) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(t) = connection.data_retrieved {
        set("finch-data-retrieved", iso(t));
    }
    if let Some(t) = connection.last_attempt {
        set("finch-last-attempted-update-date", iso(t));
    }
    set(
        "finch-last-attempted-update-result",
        connection.last_result.to_owned(),
    );
    headers
}
