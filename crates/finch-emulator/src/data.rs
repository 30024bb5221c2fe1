//! `/employer/*`: the synced data, with Finch's paging and batch semantics.

use super::api::{data_access, data_headers, AppState, FinchJson};
use super::error::{data_sync_in_progress, item_not_found, ApiError};
use super::faults::FaultKind;
use super::model::{Dataset, Person};
use super::state::{Connection, World};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use finch_core::Product;
use serde::Deserialize;
use serde_json::{json, Value};

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

/// The part of a connection's data one request may see: everything, or one
/// entity's people and payments when the request names an entity.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub connection: &'a Connection,
    pub entity: Option<usize>,
}

impl View<'_> {
    pub fn sees_person(&self, person: &Person) -> bool {
        self.entity
            .is_none_or(|e| self.connection.entity_of_person(person.id()) == e)
    }

    pub fn sees_entity(&self, entity: usize) -> bool {
        self.entity.is_none_or(|e| e == entity)
    }
}

pub async fn company(
    State(shared): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::Company).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
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
    uri: Uri,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::Directory).await?;
    let limit = number(paging.limit.as_deref(), "limit", 100)?.min(10_000);
    let offset = number(paging.offset.as_deref(), "offset", 0)?;
    let ends_early = offset > 0
        && shared.faults.shapes(
            shared.now(),
            Product::Directory,
            &access.connection_id,
            FaultKind::DirectoryEndsEarly,
        );
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
    let view = View {
        connection,
        entity: access.entity,
    };
    let people: Vec<&Person> = data
        .people
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| view.sees_person(p))
        .collect();
    let individuals: Vec<_> = people
        .iter()
        .skip(offset)
        .take(if ends_early { 0 } else { limit })
        .map(|p| p.directory_entry())
        .collect();
    Ok(respond(
        connection,
        json!({
            "individuals": individuals,
            "paging": { "count": people.len(), "offset": offset },
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
    uri: Uri,
    FinchJson(body): FinchJson<IndividualRequests>,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::Individual).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
    let view = View {
        connection,
        entity: access.entity,
    };
    let with_ssn = connection.has_product("ssn")
        && body
            .options
            .unwrap_or_default()
            .include
            .iter()
            .any(|i| i == "ssn");
    let responses = per_individual(&body.requests, |individual_id| {
        data.person(individual_id)
            .filter(|p| view.sees_person(p))
            .map(|person| {
                let mut individual = person.individual_body();
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
    uri: Uri,
    FinchJson(body): FinchJson<EmploymentRequests>,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::Employment).await?;
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
    let view = View {
        connection,
        entity: access.entity,
    };
    let responses = per_individual(&body.requests, |individual_id| {
        data.person(individual_id)
            .filter(|p| view.sees_person(p))
            .map(|person| json!(person.employment_body()))
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
    uri: Uri,
    Query(range): Query<DateRange>,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::Payment).await?;
    let start = required_date(range.start_date.as_deref(), "start_date")?;
    let end = required_date(range.end_date.as_deref(), "end_date")?;
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
    let view = View {
        connection,
        entity: access.entity,
    };
    let payments: Vec<_> = data
        .payments
        .iter()
        .filter(|r| view.sees_entity(r.entity))
        .filter(|r| r.payment.pay_date >= start && r.payment.pay_date <= end)
        .map(|r| r.payment_body())
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
    uri: Uri,
    FinchJson(body): FinchJson<PayStatementRequests>,
) -> Result<Response, ApiError> {
    let access = data_access(&shared, &headers, &uri, Product::PayStatement).await?;
    if body.requests.len() > MAX_PAY_STATEMENT_REQUESTS {
        return Err(ApiError::bad_request(format!(
            "At most {MAX_PAY_STATEMENT_REQUESTS} payment ids per request"
        )));
    }
    let now = shared.now();
    let world = shared.world();
    let (connection, data) = synced(&world, &access.connection_id)?;
    let view = View {
        connection,
        entity: access.entity,
    };
    let responses: Vec<Value> = body
        .requests
        .iter()
        .map(|r| {
            let Some(record) = data
                .payment(&r.payment_id)
                .filter(|r| view.sees_entity(r.entity))
            else {
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
            let page: Vec<_> = record
                .statements
                .list()
                .into_iter()
                .skip(offset)
                .take(limit)
                .collect();
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
