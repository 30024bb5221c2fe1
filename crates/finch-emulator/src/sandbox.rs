//! `/sandbox/*`: endpoints that change the provider state. Nothing here is
//! visible through `/employer/*` until a sync copies it over, as in Finch's sandbox.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{Duration as Days, NaiveDate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::api::{require_client, token_connection, AppState, FinchJson};
use super::error::ApiError;
use super::management::start_sync;
use super::model::{
    Contribution, Deduction, Earning, Money, PayStatement, PaymentRecord, Statements,
};
use super::seed::{self, PayRun};
use super::spec::PayFrequency;
use super::state::{default_products, Connection, NewConnection};

const AUTH_TYPES: &[&str] = &["api_token", "assisted", "credential", "oauth"];
const STATUSES: &[&str] = &[
    "pending",
    "processing",
    "connected",
    "error_no_account_setup",
    "error_permissions",
    "reauth",
];
const COMPLETION_STATUSES: &[&str] = &["complete", "reauth_error", "permissions_error", "error"];

#[derive(Debug, Deserialize)]
pub struct CreateConnection {
    provider_id: Option<String>,
    authentication_type: Option<String>,
    employee_size: Option<usize>,
    products: Option<Vec<String>>,
}

fn auth_type(value: Option<String>) -> Result<String, ApiError> {
    let value = value.unwrap_or_else(|| "credential".to_owned());
    if AUTH_TYPES.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "`authentication_type` must be one of {AUTH_TYPES:?}"
        )))
    }
}

pub async fn create_connection(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<CreateConnection>,
) -> Result<Json<Value>, ApiError> {
    require_client(&shared, &headers)?;
    let provider_id = body
        .provider_id
        .ok_or_else(|| ApiError::bad_request("`provider_id` is required"))?;
    let spec = NewConnection {
        provider_id,
        authentication_type: auth_type(body.authentication_type)?,
        employee_size: body.employee_size.unwrap_or(20).min(10_000),
        products: body.products.unwrap_or_else(default_products),
    };
    let created = shared.create_connection(&spec);
    Ok(Json(json!({
        "access_token": created.access_token,
        "token_type": "bearer",
        "connection_id": created.connection_id,
        "company_id": created.company_id,
        "account_id": created.account_id,
        "entity_id": created.entity_ids[0],
        "authentication_type": spec.authentication_type,
        "products": spec.products,
        "provider_id": spec.provider_id,
    })))
}

fn account_json(c: &Connection) -> Value {
    json!({
        "connection_id": c.source.connection_id,
        "company_id": c.source.company_id,
        "account_id": c.source.account_id,
        "entity_id": c.entity_id(),
        "authentication_type": c.authentication_type,
        "products": c.products,
        "provider_id": c.provider_id,
    })
}

#[derive(Debug, Deserialize)]
pub struct CreateAccount {
    company_id: String,
    provider_id: String,
}

/// A new token for an existing company/provider pair.
pub async fn create_account(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<CreateAccount>,
) -> Result<Json<Value>, ApiError> {
    require_client(&shared, &headers)?;
    let connection_id = {
        let world = shared.world();
        world
            .connections
            .values()
            .find(|c| c.source.company_id == body.company_id && c.provider_id == body.provider_id)
            .map(|c| c.source.connection_id.clone())
            .ok_or_else(|| {
                ApiError::not_found(
                    "item_not_found",
                    "No connection for that company and provider",
                )
            })?
    };
    let code = shared
        .issue_code(&connection_id)
        .ok_or_else(ApiError::invalid_grant)?;
    let (token, _) = shared
        .exchange_code(&code)
        .ok_or_else(ApiError::invalid_grant)?;
    let world = shared.world();
    let mut account = account_json(&world.connections[&connection_id]);
    account["access_token"] = json!(token);
    Ok(Json(account))
}

#[derive(Debug, Deserialize)]
pub struct UpdateAccount {
    connection_status: Option<String>,
}

pub async fn update_account(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<UpdateAccount>,
) -> Result<Json<Value>, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    if let Some(status) = body.connection_status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::bad_request(format!(
                "`connection_status` must be one of {STATUSES:?}"
            )));
        }
        shared.set_status(&connection_id, &status)?;
    }
    let world = shared.world();
    Ok(Json(account_json(&world.connections[&connection_id])))
}

/// Applies the keys of `patch` that `target` has, leaving `protected` ones alone.
fn merge<T: Serialize + DeserializeOwned>(
    target: &T,
    patch: &Map<String, Value>,
    protected: &[&str],
) -> Result<T, ApiError> {
    let mut value = serde_json::to_value(target).expect("records serialise");
    let object = value.as_object_mut().expect("records are objects");
    for (key, new) in patch {
        if object.contains_key(key) && !protected.contains(&key.as_str()) {
            object.insert(key.clone(), new.clone());
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("Invalid field: {e}")))
}

fn with_connection<R>(
    shared: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Connection) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let connection_id = token_connection(shared, headers)?;
    let mut world = shared.world();
    let connection = world
        .connections
        .get_mut(&connection_id)
        .ok_or_else(ApiError::invalid_token)?;
    f(connection)
}

pub async fn update_company(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(patch): FinchJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    with_connection(&shared, &headers, |c| {
        c.provider.company = merge(&c.provider.company, &patch, &["id"])?;
        Ok(Json(json!(c.provider.company)))
    })
}

pub async fn create_directory(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let items = match body {
        Value::Array(items) => items,
        // An empty body means "one generated person", which is handy from curl.
        Value::Object(map) if map.is_empty() => vec![Value::Object(Map::new())],
        _ => {
            return Err(ApiError::bad_request(
                "The body must be an array of individuals",
            ))
        }
    };
    let today = shared.today();
    with_connection(&shared, &headers, |c| {
        let mut created = Vec::new();
        for item in items {
            let patch = item
                .as_object()
                .cloned()
                .ok_or_else(|| ApiError::bad_request("Each individual must be an object"))?;
            // Fields left out are generated, so a bare `{}` is a realistic new hire.
            let mut hire =
                seed::new_hire(&mut c.rng, &c.provider.company, &c.provider.people, today);
            hire.individual = merge(&hire.individual, &patch, &["id"])?;
            hire.employment = merge(&hire.employment, &patch, &["id"])?;
            let mut combined = serde_json::to_value(&hire.employment).expect("records serialise");
            if let (Some(target), Value::Object(individual)) = (
                combined.as_object_mut(),
                serde_json::to_value(&hire.individual).expect("records serialise"),
            ) {
                target.extend(individual);
            }
            created.push(combined);
            c.provider.people.push(std::sync::Arc::new(hire));
        }
        Ok(Json(Value::Array(created)))
    })
}

pub async fn update_individual(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    FinchJson(patch): FinchJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    with_connection(&shared, &headers, |c| {
        let person = c.provider.person_mut(&id).ok_or_else(|| {
            ApiError::not_found(
                "individual_not_found",
                format!("No individual with id '{id}'"),
            )
        })?;
        person.individual = merge(&person.individual, &patch, &["id"])?;
        person.names_from_individual();
        Ok(Json(json!(person.individual)))
    })
}

pub async fn update_employment(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    FinchJson(patch): FinchJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    with_connection(&shared, &headers, |c| {
        let person = c.provider.person_mut(&id).ok_or_else(|| {
            ApiError::not_found(
                "individual_not_found",
                format!("No individual with id '{id}'"),
            )
        })?;
        person.employment = merge(&person.employment, &patch, &["id"])?;
        person.names_from_employment();
        Ok(Json(json!(person.employment)))
    })
}

#[derive(Debug, Deserialize)]
pub struct CreatePayment {
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    pay_statements: Option<Vec<StatementInput>>,
}

#[derive(Debug, Deserialize)]
struct StatementInput {
    individual_id: String,
    #[serde(default)]
    earnings: Vec<EarningInput>,
    #[serde(default)]
    taxes: Vec<TaxInput>,
    #[serde(default)]
    employee_deductions: Vec<DeductionInput>,
    #[serde(default)]
    employer_contributions: Vec<ContributionInput>,
    gross_pay: Option<i64>,
    net_pay: Option<i64>,
    payment_method: Option<String>,
    total_hours: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct EarningInput {
    amount: Option<i64>,
    hours: Option<f64>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaxInput {
    amount: Option<i64>,
    employer: Option<bool>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeductionInput {
    amount: Option<i64>,
    name: Option<String>,
    pre_tax: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContributionInput {
    amount: Option<i64>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl StatementInput {
    /// Fills in what the caller left out so the statement still adds up.
    fn into_statement(self) -> PayStatement {
        let earnings: Vec<Earning> = self
            .earnings
            .into_iter()
            .map(|e| Earning {
                name: e.name.unwrap_or_else(|| "Salary".to_owned()),
                kind: e.kind.unwrap_or_else(|| "salary".to_owned()),
                amount: e.amount.unwrap_or(0),
                currency: "usd",
                hours: e.hours,
            })
            .collect();
        let taxes: Vec<super::model::Tax> = self
            .taxes
            .into_iter()
            .map(|t| super::model::Tax {
                name: t.name.unwrap_or_else(|| "Tax".to_owned()),
                kind: t.kind.unwrap_or_else(|| "federal".to_owned()),
                employer: t.employer.unwrap_or(false),
                amount: t.amount.unwrap_or(0),
                currency: "usd",
            })
            .collect();
        let deductions: Vec<Deduction> = self
            .employee_deductions
            .into_iter()
            .map(|d| Deduction {
                name: d.name.unwrap_or_else(|| "Deduction".to_owned()),
                kind: d.kind,
                pre_tax: d.pre_tax.unwrap_or(false),
                amount: d.amount.unwrap_or(0),
                currency: "usd",
            })
            .collect();
        let contributions: Vec<Contribution> = self
            .employer_contributions
            .into_iter()
            .map(|c| Contribution {
                name: c.name.unwrap_or_else(|| "Contribution".to_owned()),
                kind: c.kind,
                amount: c.amount.unwrap_or(0),
                currency: "usd",
            })
            .collect();
        let gross = self
            .gross_pay
            .unwrap_or_else(|| earnings.iter().map(|e| e.amount).sum());
        let withheld: i64 = taxes.iter().filter(|t| !t.employer).map(|t| t.amount).sum();
        let deducted: i64 = deductions.iter().map(|d| d.amount).sum();
        let hours = self.total_hours.or_else(|| {
            let hours: f64 = earnings.iter().filter_map(|e| e.hours).sum();
            (hours > 0.0).then_some(hours)
        });
        PayStatement {
            individual_id: self.individual_id,
            kind: "regular_payroll".to_owned(),
            payment_method: self
                .payment_method
                .unwrap_or_else(|| "direct_deposit".to_owned()),
            total_hours: hours,
            gross_pay: Money::usd(gross),
            net_pay: Money::usd(self.net_pay.unwrap_or(gross - withheld - deducted)),
            earnings,
            taxes,
            employee_deductions: deductions,
            employer_contributions: contributions,
        }
    }
}

/// A new payment with one statement per employee (generated unless given).
pub async fn create_payment(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<CreatePayment>,
) -> Result<Json<Value>, ApiError> {
    let today = shared.today();
    let run = match (body.start_date, body.end_date) {
        (None, None) => PayRun::paid_on(today),
        (start, end) => {
            let end = end.unwrap_or_else(|| start.unwrap_or(today) + Days::days(13));
            let start = start.unwrap_or(end - Days::days(13));
            if start > end {
                return Err(ApiError::bad_request("`start_date` is after `end_date`"));
            }
            PayRun {
                start,
                end,
                pay_date: end,
                frequency: PayFrequency::BiWeekly,
            }
        }
    };
    with_connection(&shared, &headers, |c| {
        let record = match body.pay_statements {
            Some(inputs) => {
                if let Some(unknown) = inputs
                    .iter()
                    .find(|s| c.provider.person(&s.individual_id).is_none())
                {
                    return Err(ApiError::bad_request(format!(
                        "Unknown individual_id '{}'",
                        unknown.individual_id
                    )));
                }
                PaymentRecord::new(
                    seed::uuid(&mut c.rng),
                    &run,
                    Statements::Stored(std::sync::Arc::new(
                        inputs
                            .into_iter()
                            .map(StatementInput::into_statement)
                            .collect(),
                    )),
                    0,
                )
            }
            None => seed::payment(&mut c.rng, &c.provider.people, run),
        };
        let response = json!({
            "payment_id": record.payment.id,
            "pay_date": record.payment.pay_date,
        });
        c.provider.payments.push(record);
        Ok(Json(response))
    })
}

#[derive(Debug, Deserialize)]
pub struct JobRequest {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn create_job(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<JobRequest>,
) -> Result<Response, ApiError> {
    let connection_id = token_connection(&shared, &headers)?;
    start_sync(&shared, &connection_id, body.kind.as_deref())
}

pub async fn get_job_configuration(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    with_connection(&shared, &headers, |c| {
        Ok(Json(
            json!([{ "type": "data_sync_all", "completion_status": c.job_completion }]),
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct JobConfiguration {
    #[serde(rename = "type")]
    kind: String,
    completion_status: String,
}

pub async fn put_job_configuration(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(body): FinchJson<JobConfiguration>,
) -> Result<Json<Value>, ApiError> {
    if body.kind != "data_sync_all" {
        return Err(ApiError::bad_request("`type` must be `data_sync_all`"));
    }
    if !COMPLETION_STATUSES.contains(&body.completion_status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "`completion_status` must be one of {COMPLETION_STATUSES:?}"
        )));
    }
    with_connection(&shared, &headers, |c| {
        c.job_completion = body.completion_status.clone();
        Ok(Json(
            json!({ "type": "data_sync_all", "completion_status": c.job_completion }),
        ))
    })
}
