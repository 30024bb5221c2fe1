//! The emulated world: connections, their provider and synced states, tokens,
//! authorization codes and jobs, and the data sync that turns differences
//! between provider and synced state into webhook events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use finch_core::Product;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::model::{Dataset, PaymentRecord};
use super::ratelimit::RateLimiter;
use super::seed;
use super::stats::Stats;
use super::webhooks::{Dispatcher, EventSource, Outgoing};
use super::EmulatorConfig;

/// Products a connection gets unless told otherwise: every data product.
pub fn default_products() -> Vec<String> {
    Product::ALL
        .iter()
        .map(|product| product.permission().to_owned())
        .collect()
}

/// Providers the seeded connections rotate through, with their auth method.
const SEEDED_PROVIDERS: &[(&str, &str)] = &[
    ("gusto", "oauth"),
    ("bamboo_hr", "api_token"),
    ("adp_workforce_now", "credential"),
    ("justworks", "credential"),
    ("rippling", "oauth"),
];

/// Seed stream offset for connections made at runtime, away from seeded ones.
const RUNTIME_STREAMS: u64 = 1 << 20;

#[derive(Debug)]
pub struct Connection {
    pub source: EventSource,
    pub entity_id: String,
    pub provider_id: String,
    pub authentication_type: String,
    pub products: Vec<String>,
    pub status: String,
    /// The employer's payroll system, which sandbox endpoints change.
    pub provider: Dataset,
    /// What `/employer/*` serves; `None` until the first sync.
    pub synced: Option<Dataset>,
    pub data_retrieved: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_result: &'static str,
    /// Payments whose statements answer 202 until this instant.
    pub statements_ready_at: HashMap<String, Instant>,
    /// Generates the data sandbox calls add, so it too follows the seed.
    pub rng: StdRng,
    /// How the next `data_sync_all` jobs end (`PUT /sandbox/jobs/configuration`).
    pub job_completion: String,
    /// Start times of recent refreshes, for the per-connection hourly quota.
    pub refreshes: VecDeque<Instant>,
    pub running_job: Option<String>,
}

impl Connection {
    pub fn is_assisted(&self) -> bool {
        self.authentication_type == "assisted"
    }

    pub fn has_product(&self, product: &str) -> bool {
        self.products.iter().any(|p| p == product)
    }

    fn account_updated(&self) -> Outgoing {
        Outgoing::new(
            &self.source,
            "account.updated",
            json!({
                "status": self.status,
                "authentication_method": { "type": self.authentication_type },
            }),
        )
    }
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub connection_id: String,
    /// What `/introspect` reports as `id`; never the token itself.
    pub token_id: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub job_id: String,
    pub connection_id: String,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct World {
    pub connections: HashMap<String, Connection>,
    /// Seeded connections first, then in order of creation.
    pub order: Vec<String>,
    pub tokens: HashMap<String, TokenInfo>,
    /// Authorization code -> connection id; each code works once.
    pub codes: HashMap<String, String>,
    pub jobs: HashMap<String, Job>,
    next_stream: u64,
}

/// What a new connection should look like.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub provider_id: String,
    pub authentication_type: String,
    pub employee_size: usize,
    pub products: Vec<String>,
}

/// A connection as created, with its first token.
#[derive(Debug, Clone)]
pub struct Created {
    pub connection_id: String,
    pub company_id: String,
    pub account_id: String,
    pub entity_id: String,
    pub company_name: String,
    pub access_token: String,
}

/// The running emulator's state, shared by handlers and background tasks.
pub struct Shared {
    pub config: EmulatorConfig,
    pub base_url: String,
    pub stats: Arc<Stats>,
    pub limiter: RateLimiter,
    pub dispatcher: Dispatcher,
    pub world: Mutex<World>,
    /// Drives fault injection, seeded so a benchmark run can be repeated.
    pub fault_rng: Mutex<StdRng>,
    pub cancel: CancellationToken,
}

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An opaque token nobody could guess; random, not seeded.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("world lock")
    }

    /// Converts a Finch-time duration into the wall-clock time it takes here.
    pub fn scaled(&self, finch_time: Duration) -> Duration {
        finch_time.div_f64(self.config.time_scale)
    }

    pub fn job_url(&self, job_id: &str) -> String {
        format!("{}/jobs/automated/{job_id}", self.base_url)
    }

    pub fn today(&self) -> NaiveDate {
        Utc::now().date_naive()
    }

    /// Builds a connection's provider data. Seeded connections get a payment
    /// history since the configured start; runtime ones get one payment paid
    /// today, as Finch's sandbox does.
    fn build_connection(&self, world: &mut World, spec: &NewConnection, seeded: bool) -> Created {
        let stream = if seeded {
            world.next_stream
        } else {
            RUNTIME_STREAMS + world.next_stream
        };
        world.next_stream += 1;
        let mut rng = seed::stream(self.config.seed, stream);
        let today = self.today();
        let company = seed::company(&mut rng);
        let people = seed::people(&mut rng, &company, spec.employee_size, today);
        let payments: Vec<PaymentRecord> = if seeded {
            seed::pay_runs(self.config.history_start, today)
                .into_iter()
                .map(|run| {
                    let mut prng = seed::payment_stream(self.config.seed, stream, run.pay_date);
                    seed::payment(&mut prng, &people, run)
                })
                .collect()
        } else {
            vec![seed::payment(
                &mut rng,
                &people,
                seed::PayRun::paid_on(today),
            )]
        };
        let source = EventSource {
            company_id: company.id.clone(),
            account_id: seed::uuid(&mut rng),
            connection_id: seed::uuid(&mut rng),
        };
        let entity_id = seed::uuid(&mut rng);
        let company_name = company.legal_name.clone().unwrap_or_default();
        let provider = Dataset {
            company,
            people,
            payments,
        };
        let assisted = spec.authentication_type == "assisted";
        let stamp = now();
        let connection = Connection {
            source: source.clone(),
            entity_id: entity_id.clone(),
            provider_id: spec.provider_id.clone(),
            authentication_type: spec.authentication_type.clone(),
            products: spec.products.clone(),
            status: if assisted { "pending" } else { "connected" }.to_owned(),
            // Automated connections are readable at once: Finch serves live
            // data until its initial sync lands, which is the same data.
            synced: (!assisted).then(|| provider.clone()),
            data_retrieved: (!assisted).then_some(stamp),
            last_attempt: (!assisted).then_some(stamp),
            last_result: "success",
            provider,
            statements_ready_at: HashMap::new(),
            rng,
            job_completion: "complete".to_owned(),
            refreshes: VecDeque::new(),
            running_job: None,
        };
        let token = random_token("emu_");
        world.tokens.insert(
            token.clone(),
            TokenInfo {
                connection_id: source.connection_id.clone(),
                token_id: uuid::Uuid::new_v4().to_string(),
            },
        );
        world.order.push(source.connection_id.clone());
        world
            .connections
            .insert(source.connection_id.clone(), connection);
        Created {
            connection_id: source.connection_id,
            company_id: source.company_id,
            account_id: source.account_id,
            entity_id,
            company_name,
            access_token: token,
        }
    }

    /// The connections `--connections` asks for, made before the server starts.
    pub fn seed_connections(&self) -> Vec<Created> {
        let mut world = self.world();
        (0..self.config.connections)
            .map(|i| {
                let (provider, auth) = SEEDED_PROVIDERS[i % SEEDED_PROVIDERS.len()];
                let spec = NewConnection {
                    provider_id: provider.to_owned(),
                    authentication_type: auth.to_owned(),
                    employee_size: self.config.employees,
                    products: default_products()
                        .into_iter()
                        .chain(["ssn".to_owned()])
                        .collect(),
                };
                self.build_connection(&mut world, &spec, true)
            })
            .collect()
    }

    /// `POST /sandbox/connections`: a new connection, announced with `account.updated`.
    pub fn create_connection(&self, spec: &NewConnection) -> Created {
        let (created, event) = {
            let mut world = self.world();
            let created = self.build_connection(&mut world, spec, false);
            let event = world.connections[&created.connection_id].account_updated();
            (created, event)
        };
        self.dispatcher.emit(vec![event]);
        created
    }

    /// A single-use authorization code for `POST /auth/token`.
    pub fn issue_code(&self, connection_id: &str) -> Option<String> {
        let mut world = self.world();
        if !world.connections.contains_key(connection_id) {
            return None;
        }
        let code = random_token("code_");
        world.codes.insert(code.clone(), connection_id.to_owned());
        Some(code)
    }

    /// Exchanges a code for a new token. A reconnect through Finch Connect
    /// repairs a broken connection, so a connection in `reauth` becomes
    /// `connected` again.
    pub fn exchange_code(&self, code: &str) -> Option<(String, String)> {
        let (token, connection_id, event) = {
            let mut world = self.world();
            let connection_id = world.codes.remove(code)?;
            let token = random_token("emu_");
            world.tokens.insert(
                token.clone(),
                TokenInfo {
                    connection_id: connection_id.clone(),
                    token_id: uuid::Uuid::new_v4().to_string(),
                },
            );
            let connection = world.connections.get_mut(&connection_id)?;
            let event = if connection.status == "reauth" || connection.status == "disconnected" {
                connection.status = "connected".to_owned();
                Some(connection.account_updated())
            } else {
                None
            };
            (token, connection_id, event)
        };
        self.dispatcher.emit(event.into_iter().collect());
        Some((token, connection_id))
    }

    /// The connection a bearer token belongs to.
    pub fn connection_for_token(&self, token: &str) -> Result<String, ApiError> {
        self.world()
            .tokens
            .get(token)
            .map(|t| t.connection_id.clone())
            .ok_or_else(ApiError::invalid_token)
    }

    /// `PUT /sandbox/connections/accounts`. Becoming `connected` for the first
    /// time makes the data readable, as Finch's team finishing an assisted setup does.
    pub fn set_status(&self, connection_id: &str, status: &str) -> Result<(), ApiError> {
        let event = {
            let mut world = self.world();
            let connection = world
                .connections
                .get_mut(connection_id)
                .ok_or_else(ApiError::invalid_token)?;
            if connection.status == status {
                None
            } else {
                connection.status = status.to_owned();
                if status == "connected" && connection.synced.is_none() {
                    let stamp = now();
                    connection.synced = Some(connection.provider.clone());
                    connection.data_retrieved = Some(stamp);
                    connection.last_attempt = Some(stamp);
                    connection.last_result = "success";
                }
                Some(connection.account_updated())
            }
        };
        self.dispatcher.emit(event.into_iter().collect());
        Ok(())
    }

    /// `POST /disconnect`: every token of the connection stops working.
    pub fn disconnect(&self, connection_id: &str) {
        let event = {
            let mut world = self.world();
            world.tokens.retain(|_, t| t.connection_id != connection_id);
            world.codes.retain(|_, c| c != connection_id);
            world.connections.get_mut(connection_id).map(|c| {
                c.status = "disconnected".to_owned();
                c.account_updated()
            })
        };
        self.dispatcher.emit(event.into_iter().collect());
    }

    /// Allowed refreshes per hour and how many are left, as jobs endpoints report them.
    pub fn refresh_quota(&self, connection: &mut Connection) -> (u32, u32) {
        let allowed = self.config.refreshes_per_hour;
        let window = self.scaled(Duration::from_secs(3600));
        let now = Instant::now();
        while connection
            .refreshes
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            connection.refreshes.pop_front();
        }
        let used = u32::try_from(connection.refreshes.len()).unwrap_or(u32::MAX);
        (allowed, allowed.saturating_sub(used))
    }

    /// Enqueues a `data_sync_all` job. While one runs, its id is returned
    /// instead of a new one, as Finch does; `Err` carries when to retry once
    /// the hourly quota is spent. `counted` is false for scheduled syncs.
    pub fn enqueue_sync(
        self: &Arc<Self>,
        connection_id: &str,
        counted: bool,
    ) -> Result<SyncTicket, SyncRefused> {
        let job_id = {
            let mut world = self.world();
            let Some(connection) = world.connections.get_mut(connection_id) else {
                return Err(SyncRefused::UnknownConnection);
            };
            let (allowed, remaining) = self.refresh_quota(connection);
            if let Some(job_id) = connection.running_job.clone() {
                return Ok(SyncTicket {
                    job_id,
                    allowed,
                    remaining,
                });
            }
            if counted && allowed > 0 && remaining == 0 {
                let oldest = connection
                    .refreshes
                    .front()
                    .copied()
                    .unwrap_or_else(Instant::now);
                let wait = self.scaled(Duration::from_secs(3600))
                    - oldest.elapsed().min(self.scaled(Duration::from_secs(3600)));
                return Err(SyncRefused::Quota {
                    allowed,
                    retry_at: now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                });
            }
            if counted {
                connection.refreshes.push_back(Instant::now());
            }
            let job_id = uuid::Uuid::new_v4().to_string();
            connection.running_job = Some(job_id.clone());
            world.jobs.insert(
                job_id.clone(),
                Job {
                    job_id: job_id.clone(),
                    connection_id: connection_id.to_owned(),
                    status: "pending",
                    created_at: now(),
                    started_at: None,
                    completed_at: None,
                },
            );
            job_id
        };
        let shared = self.clone();
        let spawned_job = job_id.clone();
        tokio::spawn(async move {
            if let Some(job) = shared.world().jobs.get_mut(&spawned_job) {
                job.status = "in_progress";
                job.started_at = Some(now());
            }
            let duration = shared.scaled(shared.config.sync_duration);
            tokio::select! {
                () = shared.cancel.cancelled() => {}
                () = tokio::time::sleep(duration) => shared.finish_sync(&spawned_job),
            }
        });
        let (allowed, remaining) = {
            let mut world = self.world();
            let connection = world
                .connections
                .get_mut(connection_id)
                .expect("connection exists");
            self.refresh_quota(connection)
        };
        Ok(SyncTicket {
            job_id,
            allowed,
            remaining,
        })
    }

    /// Ends a sync job as the sandbox job configuration says, copying provider
    /// to synced state on success and emitting the events.
    fn finish_sync(&self, job_id: &str) {
        Stats::bump(&self.stats.syncs);
        let events = {
            let mut world = self.world();
            let World {
                connections, jobs, ..
            } = &mut *world;
            let Some(job) = jobs.get_mut(job_id) else {
                return;
            };
            let Some(connection) = connections.get_mut(&job.connection_id) else {
                return;
            };
            connection.running_job = None;
            let stamp = now();
            connection.last_attempt = Some(stamp);
            let mut events = Vec::new();
            let outcome = connection.job_completion.clone();
            job.status = match outcome.as_str() {
                "complete" => "complete",
                "reauth_error" => "reauth_error",
                "permissions_error" => "permissions_error",
                _ => "error",
            };
            job.completed_at = Some(stamp);
            if outcome == "complete" {
                let changes = match &connection.synced {
                    Some(old) => diff(old, &connection.provider),
                    None => Vec::new(),
                };
                for change in &changes {
                    if let Change::NewPayment(payment_id) = change {
                        let ready = Instant::now() + self.scaled(self.config.pay_statement_delay);
                        connection
                            .statements_ready_at
                            .insert(payment_id.clone(), ready);
                    }
                }
                connection.synced = Some(connection.provider.clone());
                connection.data_retrieved = Some(stamp);
                connection.last_result = "success";
                // Finch sends data-change webhooks for automated connections only.
                if !connection.is_assisted() {
                    events.extend(
                        changes
                            .into_iter()
                            .flat_map(|c| c.events(&connection.source)),
                    );
                }
            } else {
                connection.last_result = "error";
                let status = match outcome.as_str() {
                    "reauth_error" => Some("reauth"),
                    "permissions_error" => Some("error_permissions"),
                    _ => None,
                };
                if let Some(status) = status {
                    if connection.status != status {
                        connection.status = status.to_owned();
                        events.push(connection.account_updated());
                    }
                }
            }
            if !connection.is_assisted() {
                events.push(Outgoing::new(
                    &connection.source,
                    "job.data_sync_all.completed",
                    json!({ "job_id": job_id, "job_url": self.job_url(job_id) }),
                ));
            }
            events
        };
        self.dispatcher.emit(events);
    }

    /// Scheduled syncs every `--sync-interval`, like Finch's daily refresh.
    pub fn start_sync_timer(self: &Arc<Self>) {
        let Some(interval) = self.config.sync_interval else {
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let period = shared.scaled(interval).max(Duration::from_millis(10));
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let due: Vec<String> = {
                    let world = shared.world();
                    world
                        .order
                        .iter()
                        .filter(|id| {
                            world
                                .connections
                                .get(*id)
                                .is_some_and(|c| c.status == "connected")
                        })
                        .cloned()
                        .collect()
                };
                for id in due {
                    let _ = shared.enqueue_sync(&id, false);
                }
            }
        });
    }

    /// Rolls the dice for `--error-rate` and `--upstream-error-rate`.
    pub fn injected_fault(&self) -> Option<ApiError> {
        let (errors, upstream) = (self.config.error_rate, self.config.upstream_error_rate);
        if errors <= 0.0 && upstream <= 0.0 {
            return None;
        }
        let roll: f64 = self.fault_rng.lock().expect("fault rng lock").random();
        if roll < errors {
            Stats::bump(&self.stats.faults_500);
            Some(ApiError::server_error())
        } else if roll < errors + upstream {
            Stats::bump(&self.stats.faults_502);
            Some(ApiError::upstream())
        } else {
            None
        }
    }

    /// A `test` event to every target, as the dashboard's Test button sends.
    pub fn emit_test(&self, connection_id: Option<&str>) -> Option<String> {
        let event = {
            let world = self.world();
            let id = connection_id
                .map(str::to_owned)
                .or_else(|| world.order.first().cloned())?;
            let connection = world.connections.get(&id)?;
            Outgoing::new(&connection.source, "test", json!({}))
        };
        let id = event.id.clone();
        self.dispatcher.emit(vec![event]);
        Some(id)
    }
}

pub struct SyncTicket {
    pub job_id: String,
    pub allowed: u32,
    pub remaining: u32,
}

pub enum SyncRefused {
    UnknownConnection,
    Quota {
        allowed: u32,
        retry_at: DateTime<Utc>,
    },
}

/// One difference between synced and provider state, as Finch reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Company,
    Person {
        id: String,
        action: &'static str,
        endpoints: Vec<Product>,
    },
    NewPayment(String),
    PaymentEvent {
        id: String,
        pay_date: String,
        action: &'static str,
        statements: Vec<String>,
    },
}

impl Change {
    fn events(self, source: &EventSource) -> Vec<Outgoing> {
        match self {
            // Company events carry no data.
            Change::Company => vec![Outgoing::new(
                source,
                &format!("{}.updated", Product::Company.permission()),
                Value::Null,
            )],
            Change::Person {
                id,
                action,
                endpoints,
            } => endpoints
                .into_iter()
                .map(|endpoint| {
                    Outgoing::new(
                        source,
                        &format!("{}.{action}", endpoint.permission()),
                        json!({ "individual_id": id }),
                    )
                })
                .collect(),
            Change::NewPayment(_) => Vec::new(),
            Change::PaymentEvent {
                id,
                pay_date,
                action,
                statements,
            } => {
                let mut events = vec![Outgoing::new(
                    source,
                    &format!("{}.{action}", Product::Payment.permission()),
                    json!({ "payment_id": id, "pay_date": webhook_pay_date(&pay_date) }),
                )];
                // One event per pay statement: a 20-person payrun gives 20.
                events.extend(statements.into_iter().map(|individual_id| {
                    Outgoing::new(
                        source,
                        &format!("{}.{action}", Product::PayStatement.permission()),
                        json!({ "payment_id": id, "individual_id": individual_id }),
                    )
                }));
                events
            }
        }
    }
}

/// The Webhooks chapter shows a payment event's `pay_date` as `MM-DD-YYYY`
/// ("10-23-2023"), unlike the API's `YYYY-MM-DD`; we send what it shows.
fn webhook_pay_date(iso_date: &str) -> String {
    iso_date.parse::<NaiveDate>().map_or_else(
        |_| iso_date.to_owned(),
        |d| d.format("%m-%d-%Y").to_string(),
    )
}

/// Every change between two states, in the order Finch's chapter lists
/// endpoints: company, people (directory, individual, employment), payments.
pub fn diff(old: &Dataset, new: &Dataset) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.company != new.company {
        changes.push(Change::Company);
    }
    for person in &new.people {
        match old.person(person.id()) {
            None => changes.push(Change::Person {
                id: person.id().to_owned(),
                action: "created",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment],
            }),
            Some(before) => {
                let mut endpoints = Vec::new();
                if before.directory_entry() != person.directory_entry() {
                    endpoints.push(Product::Directory);
                }
                if before.individual != person.individual {
                    endpoints.push(Product::Individual);
                }
                if before.employment != person.employment {
                    endpoints.push(Product::Employment);
                }
                if !endpoints.is_empty() {
                    changes.push(Change::Person {
                        id: person.id().to_owned(),
                        action: "updated",
                        endpoints,
                    });
                }
            }
        }
    }
    for person in &old.people {
        if new.person(person.id()).is_none() {
            changes.push(Change::Person {
                id: person.id().to_owned(),
                action: "deleted",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment],
            });
        }
    }
    for record in &new.payments {
        if old.payment(&record.payment.id).is_none() {
            changes.push(Change::NewPayment(record.payment.id.clone()));
            changes.push(Change::PaymentEvent {
                id: record.payment.id.clone(),
                pay_date: record.payment.pay_date.clone(),
                action: "created",
                statements: record
                    .statements
                    .iter()
                    .map(|s| s.individual_id.clone())
                    .collect(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        let mut rng = seed::stream(5, 5);
        let company = seed::company(&mut rng);
        let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
        let people = seed::people(&mut rng, &company, 5, today);
        let payments = vec![seed::payment(
            &mut rng,
            &people,
            seed::PayRun::paid_on(today),
        )];
        Dataset {
            company,
            people,
            payments,
        }
    }

    #[test]
    fn no_change_no_events() {
        let data = dataset();
        assert!(diff(&data, &data.clone()).is_empty());
    }

    #[test]
    fn a_new_hire_is_created_on_three_endpoints() {
        let old = dataset();
        let mut new = old.clone();
        let mut rng = seed::stream(5, 6);
        let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
        let hire = seed::new_hire(&mut rng, &new.company, &new.people, today);
        let id = hire.id().to_owned();
        new.people.push(hire);
        assert_eq!(
            diff(&old, &new),
            vec![Change::Person {
                id,
                action: "created",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment]
            }]
        );
    }

    #[test]
    fn a_title_change_is_an_employment_update_only() {
        let old = dataset();
        let mut new = old.clone();
        new.people[1].employment.title = Some("Chief Vibes Officer".into());
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0], Change::Person { endpoints, .. } if endpoints == &vec![Product::Employment])
        );
    }

    #[test]
    fn webhook_pay_dates_follow_the_docs() {
        assert_eq!(webhook_pay_date("2023-10-23"), "10-23-2023");
    }
}
