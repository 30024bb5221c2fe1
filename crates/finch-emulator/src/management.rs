//! Management endpoints (`/auth/token`, `/introspect`, `/disconnect`, jobs)
//! and the emulator's own `/_emulator/*` helpers.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{require_client, token_connection, AppState, FinchJson};
use super::error::ApiError;
use super::state::{default_products, iso, Job, NewConnection, Shared};
use super::sync::SyncRefused;

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    code: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[allow(dead_code)]
    redirect_uri: Option<String>,
}

/// `POST /auth/token`: client credentials in the body, as the SDK sends them.
pub async fn token(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    match (body.client_id.as_deref(), body.client_secret.as_deref()) {
        (Some(id), Some(secret)) => {
            if !shared.client_matches(id, secret) {
                return Err(ApiError::invalid_client());
            }
        }
        _ => require_client(&shared, &headers)?,
    }
    let code = body
        .code
        .ok_or_else(|| ApiError::bad_request("`code` is required"))?;
    let (access_token, connection_id) = shared
        .exchange_code(&code)
        .ok_or_else(ApiError::invalid_grant)?;
    let world = shared.world();
    let connection = &world.connections[&connection_id];
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "client_type": "sandbox",
        "connection_type": "finch",
        "connection_id": connection_id,
        "company_id": connection.source.company_id,
        "account_id": connection.source.account_id,
        "entity_ids": connection.entity_ids,
        "products": connection.products,
        "provider_id": connection.provider_id,
        "customer_id": null,
        "customer_name": null,
    })))
}

fn status_message(status: &str) -> &'static str {
    match status {
        "pending" => {
            "The employer has created a token, and we are waiting for access to its provider."
        }
        "processing" => "We are pulling the employer's data for the first time.",
        "reauth" => "The employer needs to reconnect their system through Finch Connect.",
        "error_permissions" => "The employer added Finch with improper permissions.",
        "error_no_account_setup" => "The employer has not added Finch to their system yet.",
        "disconnected" => "All accounts for this employer have been disconnected.",
        _ => "The connection is set up and Finch is able to access the required data.",
    }
}

pub async fn introspect(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::missing_token)?
        .trim()
        .to_owned();
    let world = shared.world();
    let info = world
        .tokens
        .get(&token)
        .ok_or_else(ApiError::invalid_token)?;
    let c = world
        .connections
        .get(&info.connection_id)
        .ok_or_else(ApiError::invalid_token)?;
    let last_sync = c.data_retrieved.map(iso);
    let status = json!({
        "status": c.status,
        "last_successful_sync": last_sync,
        "message": status_message(&c.status),
    });
    Ok(Json(json!({
        "id": info.token_id,
        "client_id": shared.config.client_id,
        "client_type": "sandbox",
        "connection_id": c.source.connection_id,
        "connection_status": status,
        "connection_type": "finch",
        "products": c.products,
        "provider_id": c.provider_id,
        "payroll_provider_id": c.provider_id,
        "account_id": c.source.account_id,
        "company_id": c.source.company_id,
        "authentication_methods": [{
            "type": c.authentication_type,
            "connection_status": status,
            "products": c.products,
        }],
        "entities": c.entity_ids.iter().enumerate().map(|(i, id)| json!({
            "id": id,
            "name": entity_name(c.provider.company.legal_name.as_deref(), i, c.entity_ids.len()),
            "source_id": null,
            "status": c.status,
        })).collect::<Vec<_>>(),
        "manual": c.is_assisted(),
        "customer_id": null,
        "customer_name": null,
        "customer_email": null,
        "username": "good_user",
    })))
}

/// Entities of a multi-entity connection are told apart by a number after the company name.
fn entity_name(company: Option<&str>, index: usize, entities: usize) -> Option<String> {
    let company = company?;
    Some(if entities > 1 {
        format!("{company} ({})", index + 1)
    } else {
        company.to_owned()
    })
}

pub async fn disconnect(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    shared.disconnect(&connection_id);
    Ok(Json(json!({ "status": "success" })))
}

#[derive(Debug, Deserialize)]
pub struct JobRequest {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Shared by `POST /jobs/automated` and `POST /sandbox/jobs`.
pub fn start_sync(
    shared: &AppState,
    connection_id: &str,
    kind: Option<&str>,
) -> Result<Response, ApiError> {
    match kind {
        Some("data_sync_all") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Job type `{other}` is not supported by the emulator"
            )))
        }
        None => return Err(ApiError::bad_request("`type` is required")),
    }
    match shared.enqueue_sync(connection_id, true) {
        Ok(ticket) => Ok(Json(json!({
            "job_id": ticket.job_id,
            "job_url": shared.job_url(&ticket.job_id),
            "allowed_refreshes": ticket.allowed,
            "remaining_refreshes": ticket.remaining,
        }))
        .into_response()),
        Err(SyncRefused::UnknownConnection) => Err(ApiError::invalid_token()),
        // The docs do not show this refusal; the SDK's response type has `retry_at`
        // and an optional `job_id`, so the refusal carries both alongside the error schema.
        Err(SyncRefused::Quota { allowed, retry_at }) => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "code": 429,
                "name": "rate_limit_exceeded_error",
                "message": "The hourly data sync refresh limit for this connection has been reached",
                "job_id": null,
                "job_url": null,
                "allowed_refreshes": allowed,
                "remaining_refreshes": 0,
                "retry_at": iso(retry_at),
            })),
        )
            .into_response()),
    }
}

pub async fn create_job(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<JobRequest>,
) -> Result<Response, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    start_sync(&shared, &connection_id, body.kind.as_deref())
}

fn job_json(shared: &Shared, job: &Job) -> Value {
    json!({
        "job_id": job.job_id,
        "job_url": shared.job_url(&job.job_id),
        "type": "data_sync_all",
        "status": job.status,
        "created_at": iso(job.created_at),
        "scheduled_at": null,
        "started_at": job.started_at.map(iso),
        "completed_at": job.completed_at.map(iso),
        "params": null,
    })
}

pub async fn get_job(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    let world = shared.world();
    let job = world
        .jobs
        .get(&job_id)
        .filter(|j| j.connection_id == connection_id)
        .ok_or_else(|| {
            ApiError::not_found("item_not_found", format!("No job with id '{job_id}'"))
        })?;
    Ok(Json(job_json(&shared, job)))
}

pub async fn list_jobs(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    let mut world = shared.world();
    let mut jobs: Vec<&Job> = world
        .jobs
        .values()
        .filter(|j| j.connection_id == connection_id)
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
    let data: Vec<Value> = jobs.into_iter().map(|j| job_json(&shared, j)).collect();
    let connection = world
        .connections
        .get_mut(&connection_id)
        .ok_or_else(ApiError::invalid_token)?;
    let (allowed, remaining) = shared.refresh_quota(connection);
    Ok(Json(json!({
        "data": data,
        "meta": { "quotas": { "data_sync_all": {
            "allowed_refreshes": allowed,
            "remaining_refreshes": remaining,
        }}},
    })))
}

/// Manual jobs come from deductions, which the emulator does not cover, so
/// every id is unknown; the token is still checked first.
pub async fn get_manual_job(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    token_connection(&shared, &headers)?;
    Err(ApiError::not_found(
        "item_not_found",
        format!("No manual job with id '{job_id}'"),
    ))
}

pub async fn stats(State(shared): State<AppState>) -> Json<Value> {
    Json(json!(shared.stats.snapshot()))
}

#[derive(Debug, Deserialize, Default)]
pub struct AuthorizeRequest {
    connection_id: Option<String>,
    provider_id: Option<String>,
    authentication_type: Option<String>,
    employee_size: Option<usize>,
    products: Option<Vec<String>>,
}

/// Stands in for Finch Connect: returns an authorization code for an existing
/// connection (a reconnect) or for a new one, to exchange at `/auth/token`.
pub async fn authorize(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<AuthorizeRequest>,
) -> Result<Json<Value>, ApiError> {
    require_client(&shared, &headers)?;
    let connection_id = match body.connection_id {
        Some(id) => id,
        None => {
            let spec = NewConnection {
                provider_id: body.provider_id.unwrap_or_else(|| "gusto".to_owned()),
                authentication_type: body
                    .authentication_type
                    .unwrap_or_else(|| "credential".to_owned()),
                employee_size: body.employee_size.unwrap_or(20),
                products: body.products.unwrap_or_else(default_products),
            };
            shared.create_connection(&spec).connection_id
        }
    };
    let code = shared.issue_code(&connection_id).ok_or_else(|| {
        ApiError::not_found("item_not_found", format!("No connection '{connection_id}'"))
    })?;
    Ok(Json(
        json!({ "code": code, "connection_id": connection_id }),
    ))
}

#[derive(Debug, Deserialize, Default)]
pub struct TestWebhookRequest {
    connection_id: Option<String>,
}

/// Sends a `test` event to every webhook target, like the dashboard's Test button.
pub async fn test_webhook(
    State(shared): State<AppState>,
    FinchJson(body): FinchJson<TestWebhookRequest>,
) -> Result<Json<Value>, ApiError> {
    let event_id = shared
        .emit_test(body.connection_id.as_deref())
        .ok_or_else(|| ApiError::not_found("item_not_found", "No such connection"))?;
    Ok(Json(json!({ "event_id": event_id })))
}
