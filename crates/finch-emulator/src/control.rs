//! The emulator's own controls, for tests and benchmarks: the Finch clock,
//! connections from specs, scoped faults, lost webhooks, provider changes,
//! reconnects that change ids, snapshots and the change log. Each is a method
//! on `Shared` (which `RunningEmulator` exposes) and a `/_emulator/*` route.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use finch_core::Product;

use super::api::{require_client, AppState, FinchJson};
use super::changelog::ChangeRecord;
use super::error::ApiError;
use super::faults::{Fault, FaultKind, FaultScope};
use super::model::{PayStatement, Person, Statements};
use super::seed;
use super::spec::ConnectionSpec;
use super::state::{iso, random_token, Shared, TokenInfo};

/// A connection made from a spec, with what a client needs to read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedConnection {
    pub connection_id: String,
    pub company_id: String,
    pub account_id: String,
    /// One per entity; name one in `entity_ids[]=` when there are several.
    pub entity_ids: Vec<String>,
    pub access_token: String,
}

/// A change made at the provider, visible after the next sync or refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ProviderChange {
    /// A new hire; their id is returned.
    Hire,
    /// The person stays in the directory, inactive, with an end date.
    Terminate { individual_id: String },
    /// The person is purged from the provider: `*.deleted` at the next sync.
    Delete { individual_id: String },
    /// A new title: an `employment.updated` (and no other product).
    Retitle {
        individual_id: String,
        title: String,
    },
    /// An off-cycle payroll for the entity's people, paid today.
    Payroll { entity_index: usize },
    /// The payment disappears with its statements.
    DeletePayment { payment_id: String },
}

/// What `/employer/*` serves for one entity of a connection, every product,
/// every payment (whatever its date), as JSON bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitySnapshot {
    pub entity_id: String,
    pub company: Value,
    pub directory: Vec<Value>,
    pub individuals: Vec<Value>,
    pub employments: Vec<Value>,
    pub payments: Vec<Value>,
    /// Pay statements by payment id.
    pub pay_statements: BTreeMap<String, Vec<Value>>,
}

/// A connection's served data, for diffing a mirror against; `None` data
/// while its first sync has not landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub connection_id: String,
    /// Finch time of the snapshot.
    pub at: DateTime<Utc>,
    /// When the served data was retrieved from the provider (`Finch-Data-Retrieved`).
    pub data_retrieved: Option<DateTime<Utc>>,
    pub entities: Vec<EntitySnapshot>,
}

impl Shared {
    /// Moves Finch time forward and runs everything that came due meanwhile,
    /// in order. Returns the new Finch time.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        self.clock.advance(by);
        self.run_due();
        self.now()
    }

    pub fn add_spec_connection(&self, spec: &ConnectionSpec) -> Result<AddedConnection, String> {
        spec.validate()?;
        let created = self.add_connection(spec);
        Ok(AddedConnection {
            connection_id: created.connection_id,
            company_id: created.company_id,
            account_id: created.account_id,
            entity_ids: created.entity_ids,
            access_token: created.access_token,
        })
    }

    pub fn inject_fault(&self, scope: FaultScope, kind: FaultKind, lasting: Duration) {
        self.faults.add(scope, kind, self.now(), lasting);
    }

    /// The item webhooks of the connection's next `changes` changes are lost.
    pub fn lose_webhooks(&self, connection_id: &str, changes: usize) -> Result<(), ApiError> {
        let mut world = self.world();
        let connection = world
            .connections
            .get_mut(connection_id)
            .ok_or_else(|| unknown_connection(connection_id))?;
        connection.lose_item_webhooks += changes;
        Ok(())
    }

    /// Changes the provider state; returns the id of what it created, if anything.
    pub fn change_provider(
        &self,
        connection_id: &str,
        change: &ProviderChange,
    ) -> Result<Option<String>, ApiError> {
        let today = self.today();
        let mut world = self.world();
        let connection = world
            .connections
            .get_mut(connection_id)
            .ok_or_else(|| unknown_connection(connection_id))?;
        let entities = connection.entity_ids.len();
        let provider = &mut connection.provider;
        let missing = |id: &str| {
            ApiError::not_found(
                "individual_not_found",
                format!("No individual with id '{id}'"),
            )
        };
        match change {
            ProviderChange::Hire => {
                let hire = seed::new_hire(
                    &mut connection.rng,
                    &provider.company,
                    &provider.people,
                    today,
                );
                let id = hire.id().to_owned();
                provider.people.push(std::sync::Arc::new(hire));
                Ok(Some(id))
            }
            ProviderChange::Terminate { individual_id } => {
                let person = provider
                    .person_mut(individual_id)
                    .ok_or_else(|| missing(individual_id))?;
                person.employment.is_active = Some(false);
                person.employment.employment_status = Some("terminated".to_owned());
                person.employment.end_date = Some(seed::date(today));
                Ok(None)
            }
            ProviderChange::Delete { individual_id } => {
                let before = provider.people.len();
                provider.people.retain(|p| p.id() != individual_id);
                if provider.people.len() == before {
                    return Err(missing(individual_id));
                }
                Ok(None)
            }
            ProviderChange::Retitle {
                individual_id,
                title,
            } => {
                let person = provider
                    .person_mut(individual_id)
                    .ok_or_else(|| missing(individual_id))?;
                person.employment.title = Some(title.clone());
                Ok(None)
            }
            ProviderChange::Payroll { entity_index } => {
                if *entity_index >= entities {
                    return Err(ApiError::bad_request(format!(
                        "The connection has {entities} entities"
                    )));
                }
                let staff: Vec<_> = provider
                    .people
                    .iter()
                    .filter(|p| super::state::entity_index(p.id(), entities) == *entity_index)
                    .cloned()
                    .collect();
                let mut record =
                    seed::payment(&mut connection.rng, &staff, seed::PayRun::paid_on(today));
                record.entity = *entity_index;
                let id = record.payment.id.clone();
                provider.payments.push(record);
                Ok(Some(id))
            }
            ProviderChange::DeletePayment { payment_id } => {
                let before = provider.payments.len();
                provider.payments.retain(|r| &r.payment.id != payment_id);
                if provider.payments.len() == before {
                    return Err(ApiError::not_found(
                        "payment_not_found",
                        format!("No payment with id '{payment_id}'"),
                    ));
                }
                Ok(None)
            }
        }
    }

    /// A reconnect after which Finch knows every person and payment by a new
    /// id (a different authentication method, per Finch's docs). The served
    /// data changes at once, unannounced, and the connection gets a new token
    /// (the old one keeps working) and an `account.updated`.
    pub fn reconnect_with_new_ids(&self, connection_id: &str) -> Result<String, ApiError> {
        let stamp = self.now();
        let (token, records, event) = {
            let mut world = self.world();
            let connection = world
                .connections
                .get_mut(connection_id)
                .ok_or_else(|| unknown_connection(connection_id))?;
            let mut renamed: HashMap<String, String> = HashMap::new();
            let rng = &mut connection.rng;
            let mut new_id = |old: &str| {
                renamed
                    .entry(old.to_owned())
                    .or_insert_with(|| seed::uuid(rng))
                    .clone()
            };
            let provider = &mut connection.provider;
            let people_ids: Vec<String> =
                provider.people.iter().map(|p| p.id().to_owned()).collect();
            for old in &people_ids {
                new_id(old);
            }
            for person in &mut provider.people {
                let person = std::sync::Arc::make_mut(person);
                let id = new_id(person.id());
                person.individual.id = id.clone();
                person.employment.id = id;
                if let Some(manager) = person.employment.manager.as_mut() {
                    manager.id = new_id(&manager.id);
                }
            }
            let renamed_people: HashMap<String, std::sync::Arc<Person>> = provider
                .people
                .iter()
                .map(|p| (p.id().to_owned(), p.clone()))
                .collect();
            for record in &mut provider.payments {
                record.payment.id = new_id(&record.payment.id);
                record.statements = match &record.statements {
                    Statements::Stored(list) => Statements::Stored(std::sync::Arc::new(
                        list.iter()
                            .map(|s| PayStatement {
                                individual_id: new_id(&s.individual_id),
                                ..s.clone()
                            })
                            .collect(),
                    )),
                    Statements::Derived {
                        seed,
                        frequency,
                        paid,
                    } => Statements::Derived {
                        seed: *seed,
                        frequency: *frequency,
                        paid: std::sync::Arc::new(
                            paid.iter()
                                .map(|p| {
                                    let id = new_id(p.id());
                                    renamed_people.get(&id).cloned().unwrap_or_else(|| {
                                        // Paid once, gone from the provider since.
                                        let mut former = Person::clone(p);
                                        former.individual.id = id.clone();
                                        former.employment.id = id;
                                        std::sync::Arc::new(former)
                                    })
                                })
                                .collect(),
                        ),
                    },
                };
            }
            let old = connection.synced.clone();
            let mut records = Vec::new();
            if let Some(old) = old {
                for change in super::sync::diff(&old, &connection.provider) {
                    records.extend(change.records(connection, stamp, false));
                }
            }
            connection.synced = Some(connection.provider.clone());
            connection.statements_ready_at.clear();
            connection.data_retrieved = Some(stamp);
            connection.status = "connected".to_owned();
            let event = connection.account_updated();
            let token = random_token("emu_");
            world.tokens.insert(
                token.clone(),
                TokenInfo {
                    connection_id: connection_id.to_owned(),
                    token_id: uuid::Uuid::new_v4().to_string(),
                },
            );
            (token, records, event)
        };
        self.changes.extend(records);
        self.dispatcher.emit(vec![event]);
        Ok(token)
    }

    /// What `/employer/*` serves for the connection now.
    pub fn snapshot(&self, connection_id: &str) -> Result<Snapshot, ApiError> {
        let at = self.now();
        let world = self.world();
        let connection = world
            .connections
            .get(connection_id)
            .ok_or_else(|| unknown_connection(connection_id))?;
        let mut entities = Vec::new();
        if let Some(data) = &connection.synced {
            for (index, entity_id) in connection.entity_ids.iter().enumerate() {
                let people: Vec<_> = data
                    .people
                    .iter()
                    .filter(|p| connection.entity_of_person(p.id()) == index)
                    .collect();
                let payments: Vec<_> = data.payments.iter().filter(|r| r.entity == index).collect();
                entities.push(EntitySnapshot {
                    entity_id: entity_id.clone(),
                    company: json!(data.company),
                    directory: people.iter().map(|p| json!(p.directory_entry())).collect(),
                    individuals: people
                        .iter()
                        .map(|p| {
                            let mut individual = p.individual.clone();
                            individual.ssn = None;
                            json!(individual)
                        })
                        .collect(),
                    employments: people.iter().map(|p| json!(p.employment)).collect(),
                    payments: payments.iter().map(|r| json!(r.payment_body())).collect(),
                    pay_statements: payments
                        .iter()
                        .map(|r| {
                            (
                                r.payment.id.clone(),
                                r.statements.list().iter().map(|s| json!(s)).collect(),
                            )
                        })
                        .collect(),
                });
            }
        }
        Ok(Snapshot {
            connection_id: connection_id.to_owned(),
            at,
            data_retrieved: connection.data_retrieved,
            entities,
        })
    }

    /// People and payments the providers hold, over all connections.
    pub fn fleet_size(&self) -> (usize, usize) {
        let world = self.world();
        world
            .connections
            .values()
            .fold((0, 0), |(people, payments), c| {
                (
                    people + c.provider.people.len(),
                    payments + c.provider.payments.len(),
                )
            })
    }

    /// Every connection id, in order of creation.
    pub fn connection_ids(&self) -> Vec<String> {
        self.world().order.clone()
    }
}

fn unknown_connection(id: &str) -> ApiError {
    ApiError::not_found("item_not_found", format!("No connection '{id}'"))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/clock", get(clock))
        .route("/_emulator/clock/advance", post(advance))
        .route("/_emulator/clock/pace", post(pace))
        .route("/_emulator/rate-limits", post(rate_limits))
        .route("/_emulator/refreshes/stop", post(stop_refreshes))
        .route("/_emulator/connections", post(add_connection))
        .route(
            "/_emulator/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route(
            "/_emulator/connections/{id}/lose-webhooks",
            post(lose_webhooks),
        )
        .route("/_emulator/connections/{id}/changes", post(change))
        .route("/_emulator/connections/{id}/sync", post(sync))
        .route(
            "/_emulator/connections/{id}/reconnect-with-new-ids",
            post(reconnect),
        )
        .route("/_emulator/connections/{id}/snapshot", get(snapshot))
        .route("/_emulator/changes", get(changes))
}

fn clock_json(shared: &Shared) -> Value {
    json!({
        "now": iso(shared.now()),
        "time_scale": shared.clock.rate(),
        "frozen": shared.clock.is_frozen(),
    })
}

async fn clock(State(shared): State<AppState>) -> Json<Value> {
    Json(clock_json(&shared))
}

#[derive(Debug, Deserialize)]
pub struct AdvanceRequest {
    /// Finch seconds to move forward.
    seconds: f64,
}

async fn advance(
    State(shared): State<AppState>,
    FinchJson(body): FinchJson<AdvanceRequest>,
) -> Result<Json<Value>, ApiError> {
    if !(body.seconds.is_finite() && body.seconds >= 0.0) {
        return Err(ApiError::bad_request("`seconds` must be zero or positive"));
    }
    shared.advance(Duration::from_secs_f64(body.seconds));
    Ok(Json(clock_json(&shared)))
}

#[derive(Debug, Deserialize)]
pub struct PaceRequest {
    /// Finch seconds per wall second from now on; 0 freezes the clock.
    time_scale: f64,
}

async fn pace(
    State(shared): State<AppState>,
    FinchJson(body): FinchJson<PaceRequest>,
) -> Result<Json<Value>, ApiError> {
    if !(body.time_scale.is_finite() && body.time_scale >= 0.0) {
        return Err(ApiError::bad_request(
            "`time_scale` must be zero or positive",
        ));
    }
    shared.clock.set_rate(body.time_scale);
    Ok(Json(clock_json(&shared)))
}

#[derive(Debug, Deserialize)]
pub struct RateLimitRequest {
    /// Multiplies Finch's limits from now on; 0 turns them off.
    scale: f64,
}

async fn rate_limits(
    State(shared): State<AppState>,
    FinchJson(body): FinchJson<RateLimitRequest>,
) -> Result<Json<Value>, ApiError> {
    if !(body.scale.is_finite() && body.scale >= 0.0) {
        return Err(ApiError::bad_request("`scale` must be zero or positive"));
    }
    shared.limiter.set_scale(body.scale);
    let limits: serde_json::Map<String, Value> = Product::ALL
        .into_iter()
        .map(|product| {
            (
                product.as_str().to_owned(),
                json!(shared.limiter.limit(product)),
            )
        })
        .collect();
    Ok(Json(json!({ "scale": body.scale, "per_minute": limits })))
}

async fn stop_refreshes(State(shared): State<AppState>) -> Json<Value> {
    shared.stop_refreshes();
    Json(json!({ "refreshes": "stopped" }))
}

async fn add_connection(
    State(shared): State<AppState>,
    headers: HeaderMap,
    FinchJson(spec): FinchJson<ConnectionSpec>,
) -> Result<Json<AddedConnection>, ApiError> {
    require_client(&shared, &headers)?;
    shared
        .add_spec_connection(&spec)
        .map(Json)
        .map_err(ApiError::bad_request)
}

#[derive(Debug, Deserialize)]
pub struct FaultRequest {
    scope: FaultScope,
    kind: FaultKind,
    /// Finch seconds the fault lasts from now.
    seconds: f64,
}

async fn add_fault(
    State(shared): State<AppState>,
    FinchJson(body): FinchJson<FaultRequest>,
) -> Result<Json<Vec<Fault>>, ApiError> {
    if !(body.seconds.is_finite() && body.seconds > 0.0) {
        return Err(ApiError::bad_request("`seconds` must be positive"));
    }
    shared.inject_fault(body.scope, body.kind, Duration::from_secs_f64(body.seconds));
    Ok(Json(shared.faults.list()))
}

async fn list_faults(State(shared): State<AppState>) -> Json<Vec<Fault>> {
    Json(shared.faults.list())
}

async fn clear_faults(State(shared): State<AppState>) -> Json<Vec<Fault>> {
    shared.faults.clear();
    Json(Vec::new())
}

#[derive(Debug, Deserialize)]
pub struct LoseRequest {
    changes: usize,
}

async fn lose_webhooks(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    FinchJson(body): FinchJson<LoseRequest>,
) -> Result<Json<Value>, ApiError> {
    shared.lose_webhooks(&id, body.changes)?;
    Ok(Json(
        json!({ "connection_id": id, "lost_changes": body.changes }),
    ))
}

async fn change(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    FinchJson(body): FinchJson<ProviderChange>,
) -> Result<Json<Value>, ApiError> {
    let created = shared.change_provider(&id, &body)?;
    Ok(Json(json!({ "connection_id": id, "created_id": created })))
}

async fn sync(
    State(shared): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match shared.enqueue_sync(&id, false) {
        Ok(ticket) => Ok(Json(json!({ "job_id": ticket.job_id }))),
        Err(_) => Err(unknown_connection(&id)),
    }
}

async fn reconnect(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_client(&shared, &headers)?;
    let token = shared.reconnect_with_new_ids(&id)?;
    Ok(Json(json!({ "connection_id": id, "access_token": token })))
}

async fn snapshot(
    State(shared): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    shared.snapshot(&id).map(Json)
}

#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    #[serde(default)]
    since: u64,
}

async fn changes(
    State(shared): State<AppState>,
    Query(query): Query<ChangesQuery>,
) -> Json<Vec<ChangeRecord>> {
    Json(shared.changes.since(query.since))
}
