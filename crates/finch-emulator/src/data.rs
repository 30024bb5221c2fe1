//! `/employer/*`: the synced data, with Finch's paging and batch semantics.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use finch_core::Product;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::api::{data_access, data_headers, AppState, FinchJson};
use super::error::{data_sync_in_progress, item_not_found, ApiError};
use super::model::Dataset;
use super::state::{Connection, World};

/// Most payment ids one pay-statement request may carry.
const MAX_PAY_STATEMENT_REQUESTS: usize = 10;

fn synced<'a>(
    world: &'a World,
    connection_id: &str,
) -> Result<(&'a Connection, &'a Dataset), ApiError> {
    let connection = world
        .connections
        .get(connection_id)
        .ok_or_else(ApiError::invalid_token)?;
    let data = connection
        .synced
        .as_ref()
        .ok_or_else(ApiError::authorization_pending)?;
    Ok((connection, data))
}

fn respond(connection: &Connection, body: Value) -> Response {
    (data_headers(connection), Json(body)).into_response()
}

pub async fn company(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::Company).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    Ok(respond(connection, json!(data.company)))
}

#[derive(Debug, Deserialize)]
pub struct Paging {
    limit: Option<String>,
    offset: Option<String>,
}

fn number(value: Option<&str>, name: &str, default: usize) -> Result<usize, ApiError> {
    value.map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| ApiError::bad_request(format!("`{name}` must be a non-negative integer")))
    })
}

pub async fn directory(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::Directory).await?;
    let limit = number(paging.limit.as_deref(), "limit", 100)?.min(10_000);
    let offset = number(paging.offset.as_deref(), "offset", 0)?;
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    let individuals: Vec<_> = data
        .people
        .iter()
        .skip(offset)
        .take(limit)
        .map(|p| p.directory_entry())
        .collect();
    Ok(respond(
        connection,
        json!({
            "individuals": individuals,
            "paging": { "count": data.people.len(), "offset": offset },
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct IndividualRequests {
    requests: Vec<IndividualRequest>,
    #[serde(default)]
    options: Option<IndividualOptions>,
}

#[derive(Debug, Deserialize)]
pub struct IndividualRequest {
    individual_id: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct IndividualOptions {
    #[serde(default)]
    include: Vec<String>,
}

pub async fn individuals(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<IndividualRequests>,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::Individual).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    let with_ssn = connection.has_product("ssn")
        && body
            .options
            .unwrap_or_default()
            .include
            .iter()
            .any(|i| i == "ssn");
    let responses = per_individual(&body.requests, |individual_id| {
        data.person(individual_id).map(|person| {
            let mut individual = person.individual.clone();
            if !with_ssn {
                individual.ssn = None;
            }
            json!(individual)
        })
    });
    Ok(respond(connection, json!({ "responses": responses })))
}

#[derive(Debug, Deserialize)]
pub struct EmploymentRequests {
    requests: Vec<IndividualRequest>,
}

pub async fn employments(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<EmploymentRequests>,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::Employment).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    let responses = per_individual(&body.requests, |individual_id| {
        data.person(individual_id)
            .map(|person| json!(person.employment))
    });
    Ok(respond(connection, json!({ "responses": responses })))
}

/// A batch answer as Finch gives it: one item per requested individual, with
/// its own `code`, and a per-item 404 for an id the employer does not have.
fn per_individual(
    requests: &[IndividualRequest],
    body_of: impl Fn(&str) -> Option<Value>,
) -> Vec<Value> {
    requests
        .iter()
        .map(|r| match body_of(&r.individual_id) {
            Some(body) => json!({ "individual_id": r.individual_id, "code": 200, "body": body }),
            None => json!({
                "individual_id": r.individual_id,
                "code": 404,
                "body": item_not_found("individual_not_found", "individual", &r.individual_id),
            }),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct DateRange {
    start_date: Option<String>,
    end_date: Option<String>,
}

fn required_date(value: Option<&str>, name: &str) -> Result<NaiveDate, ApiError> {
    let value = value.ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))?;
    value
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{name}` must be a date in YYYY-MM-DD format")))
}

pub async fn payments(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(range): Query<DateRange>,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::Payment).await?;
    let start = required_date(range.start_date.as_deref(), "start_date")?;
    let end = required_date(range.end_date.as_deref(), "end_date")?;
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    let payments: Vec<_> = data
        .payments
        .iter()
        .filter(|r| {
            r.payment
                .pay_date
                .parse::<NaiveDate>()
                .is_ok_and(|d| d >= start && d <= end)
        })
        .map(|r| &r.payment)
        .collect();
    Ok(respond(connection, json!(payments)))
}

#[derive(Debug, Deserialize)]
pub struct PayStatementRequests {
    requests: Vec<PayStatementRequest>,
}

#[derive(Debug, Deserialize)]
pub struct PayStatementRequest {
    payment_id: String,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub async fn pay_statements(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<PayStatementRequests>,
) -> Result<Response, ApiError> {
    let id = data_access(&shared, &headers, Product::PayStatement).await?;
    if body.requests.len() > MAX_PAY_STATEMENT_REQUESTS {
        return Err(ApiError::bad_request(format!(
            "At most {MAX_PAY_STATEMENT_REQUESTS} payment ids per request"
        )));
    }
    let world = shared.world();
    let (connection, data) = synced(&world, &id)?;
    let now = Instant::now();
    let responses: Vec<Value> = body
        .requests
        .iter()
        .map(|r| {
            let Some(record) = data.payment(&r.payment_id) else {
                return json!({
                    "payment_id": r.payment_id,
                    "code": 404,
                    "body": item_not_found("payment_not_found", "payment", &r.payment_id),
                });
            };
            if connection
                .statements_ready_at
                .get(&r.payment_id)
                .is_some_and(|ready| *ready > now)
            {
                return json!({ "payment_id": r.payment_id, "code": 202, "body": data_sync_in_progress() });
            }
            let offset = r.offset.unwrap_or(0);
            let limit = r.limit.unwrap_or(100).min(5_000);
            let page: Vec<_> = record.statements.iter().skip(offset).take(limit).collect();
            json!({
                "payment_id": r.payment_id,
                "code": 200,
                "body": {
                    "paging": { "count": record.statements.len(), "offset": offset },
                    "pay_statements": page,
                },
            })
        })
        .collect();
    Ok(respond(connection, json!({ "responses": responses })))
}
