//! The emulated world: connections, their provider and synced states, tokens,
//! authorization codes and jobs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, NaiveDate, Utc};
use finch_core::Product;
use rand::rngs::StdRng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::changelog::ChangeLog;
use super::clock::{span, FinchClock};
use super::error::ApiError;
use super::faults::FaultBook;
use super::model::{Dataset, PaymentRecord, Person};
use super::ratelimit::RateLimiter;
use super::seed;
use super::spec::{ConnectionKind, ConnectionSpec, PayFrequency};
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
    /// One id per entity; more than one makes `entity_ids` mandatory on reads.
    pub entity_ids: Vec<String>,
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
    /// Payments whose statements answer 202 until this Finch time.
    pub statements_ready_at: HashMap<String, DateTime<Utc>>,
    /// Generates the data sandbox calls add, so it too follows the seed.
    pub rng: StdRng,
    /// How the next `data_sync_all` jobs end (`PUT /sandbox/jobs/configuration`).
    pub job_completion: String,
    /// Start times (Finch time) of recent refreshes, for the per-connection hourly quota.
    pub refreshes: VecDeque<DateTime<Utc>>,
    pub running_job: Option<String>,
    /// Finch's own refresh cadence (24 h automated, 7 days assisted); `None`
    /// for connections that only sync when asked, as in Finch's sandbox.
    pub refresh_every: Option<std::time::Duration>,
    /// The payroll calendar new payments follow at each refresh, with its stagger.
    pub payroll: Option<(PayFrequency, u32)>,
    /// Pay runs up to this day are in the provider already.
    pub paid_through: NaiveDate,
    /// Finch time of the last refresh, from which daily churn is counted.
    pub last_refresh: DateTime<Utc>,
    /// Item webhooks of this many coming changes are lost on the way.
    pub lose_item_webhooks: usize,
}

impl Connection {
    pub fn is_assisted(&self) -> bool {
        self.authentication_type == "assisted"
    }

    pub fn has_product(&self, product: &str) -> bool {
        self.products.iter().any(|p| p == product)
    }

    pub fn entity_id(&self) -> &str {
        &self.entity_ids[0]
    }

    /// Which entity a person belongs to: stable for the person's id, so
    /// every read, snapshot and webhook agrees.
    pub fn entity_of_person(&self, person_id: &str) -> usize {
        entity_index(person_id, self.entity_ids.len())
    }

    pub fn account_updated(&self) -> Outgoing {
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

/// FNV-1a over the id: a spread that does not depend on the process.
pub fn entity_index(id: &str, entities: usize) -> usize {
    if entities <= 1 {
        return 0;
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % entities as u64) as usize
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

/// Something that happens at a Finch time, without anyone asking.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    /// A `data_sync_all` job ends.
    FinishJob(String),
    /// Finch's scheduled refresh of a connection (daily or weekly).
    Refresh(String),
    /// A first sync that answered 202 so far lands.
    FirstSync(String),
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
    /// What is due when, in Finch time; `Shared::run_due` works through it.
    pub agenda: BinaryHeap<Reverse<(DateTime<Utc>, u64, Task)>>,
    /// Keeps agenda entries of the same time in the order they were added.
    pub agenda_seq: u64,
    next_stream: u64,
}

impl World {
    pub fn schedule(&mut self, at: DateTime<Utc>, task: Task) {
        self.agenda_seq += 1;
        self.agenda.push(Reverse((at, self.agenda_seq, task)));
    }
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
    pub entity_ids: Vec<String>,
    pub company_name: String,
    pub access_token: String,
}

/// How a connection is built: from the seeded start-up set, a sandbox call,
/// or a spec with its own calendar and cadence.
enum Origin<'a> {
    Seeded,
    Sandbox,
    Spec(&'a ConnectionSpec),
}

/// The running emulator's state, shared by handlers and background tasks.
pub struct Shared {
    pub config: EmulatorConfig,
    /// Finch time, for every schedule, delay and window.
    pub clock: FinchClock,
    /// Injected failures by scope and Finch-time window.
    pub faults: FaultBook,
    /// Every change that became visible at Finch, announced or not.
    pub changes: ChangeLog,
    pub base_url: String,
    pub stats: Arc<Stats>,
    pub limiter: RateLimiter,
    pub dispatcher: Dispatcher,
    pub world: Mutex<World>,
    /// Drives fault injection, seeded so a benchmark run can be repeated.
    pub fault_rng: Mutex<StdRng>,
    /// Set when a benchmark winds down: Finch's scheduled refreshes stop
    /// changing data, so what is already announced can drain.
    pub refreshes_stopped: std::sync::atomic::AtomicBool,
    pub cancel: CancellationToken,
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

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Converts a Finch-time duration into the wall-clock time it takes here.
    pub fn scaled(&self, finch_time: std::time::Duration) -> std::time::Duration {
        let rate = self.clock.rate();
        let rate = if rate > 0.0 {
            rate
        } else {
            self.config.time_scale
        };
        finch_time.div_f64(rate)
    }

    pub fn job_url(&self, job_id: &str) -> String {
        format!("{}/jobs/automated/{job_id}", self.base_url)
    }

    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Builds a connection's provider data. Seeded connections get a payment
    /// history since the configured start; sandbox ones get one payment paid
    /// today, as Finch's sandbox does; spec ones get their calendar's history.
    fn build_connection(
        &self,
        world: &mut World,
        spec: &NewConnection,
        origin: Origin<'_>,
    ) -> Created {
        let stream = match origin {
            Origin::Seeded => world.next_stream,
            _ => RUNTIME_STREAMS + world.next_stream,
        };
        world.next_stream += 1;
        let mut rng = seed::stream(self.config.seed, stream);
        let stamp = self.now();
        let today = stamp.date_naive();
        let company = seed::company(&mut rng);
        let people: Vec<Arc<Person>> = seed::people(&mut rng, &company, spec.employee_size, today)
            .into_iter()
            .map(Arc::new)
            .collect();
        let entities = match origin {
            Origin::Spec(s) => s.entities,
            _ => 1,
        };
        // The people do not change while the history is made, so every
        // payment of an entity shares one staff list.
        let staffs: Vec<Arc<Vec<Arc<Person>>>> = (0..entities)
            .map(|entity| {
                Arc::new(
                    people
                        .iter()
                        .filter(|p| entity_index(p.id(), entities) == entity)
                        .cloned()
                        .collect(),
                )
            })
            .collect();
        let history = |frequency: PayFrequency, stagger: u32, since: NaiveDate| {
            frequency
                .pay_runs(stagger, since, today)
                .into_iter()
                .flat_map(|run| (0..entities).map(move |entity| (run, entity)))
                .map(|(run, entity)| {
                    // Entity bits stay below the 32 the stream is shifted by.
                    let mut prng = seed::payment_stream(
                        self.config.seed,
                        stream ^ ((entity as u64) << 28),
                        run.pay_date,
                    );
                    let mut record = seed::payment_of(&mut prng, staffs[entity].clone(), run);
                    record.entity = entity;
                    record
                })
                .collect::<Vec<PaymentRecord>>()
        };
        let payments: Vec<PaymentRecord> = match origin {
            Origin::Seeded => history(PayFrequency::BiWeekly, 0, self.config.history_start),
            Origin::Sandbox => vec![seed::payment(
                &mut rng,
                &people,
                seed::PayRun::paid_on(today),
            )],
            Origin::Spec(s) => history(
                s.pay_frequency,
                s.pay_stagger,
                today - chrono::Duration::days(i64::from(s.history_days)),
            ),
        };
        let source = EventSource {
            company_id: company.id.clone(),
            account_id: seed::uuid(&mut rng),
            connection_id: seed::uuid(&mut rng),
        };
        let entity_ids: Vec<String> = (0..entities).map(|_| seed::uuid(&mut rng)).collect();
        let company_name = company.legal_name.clone().unwrap_or_default();
        let provider = Dataset {
            company,
            people,
            payments,
        };
        let assisted = spec.authentication_type == "assisted";
        let pending = match origin {
            Origin::Spec(s) => s.first_sync_pending_for,
            // A sandbox assisted connection waits for `PUT /sandbox/connections/accounts`.
            _ if assisted => Some(std::time::Duration::MAX),
            _ => None,
        };
        let readable = pending.is_none();
        let status = match (assisted, readable) {
            (true, true) | (false, _) => "connected",
            (true, false) if matches!(origin, Origin::Spec(_)) => "processing",
            (true, false) => "pending",
        };
        let (refresh_every, payroll) = match origin {
            Origin::Spec(s) => (
                Some(match s.kind {
                    ConnectionKind::Automated => self.config.automated_refresh,
                    ConnectionKind::Assisted => self.config.assisted_refresh,
                }),
                Some((s.pay_frequency, s.pay_stagger)),
            ),
            // Seeded and sandbox connections refresh on `--sync-interval`, if set.
            _ => (self.config.sync_interval, None),
        };
        let connection = Connection {
            source: source.clone(),
            entity_ids: entity_ids.clone(),
            provider_id: spec.provider_id.clone(),
            authentication_type: spec.authentication_type.clone(),
            products: spec.products.clone(),
            status: status.to_owned(),
            // Automated connections are readable at once: Finch serves live
            // data until its initial sync lands, which is the same data.
            synced: readable.then(|| provider.clone()),
            data_retrieved: readable.then_some(stamp),
            last_attempt: readable.then_some(stamp),
            last_result: "success",
            provider,
            statements_ready_at: HashMap::new(),
            rng,
            job_completion: "complete".to_owned(),
            refreshes: VecDeque::new(),
            running_job: None,
            refresh_every,
            payroll,
            paid_through: today,
            last_refresh: stamp,
            lose_item_webhooks: 0,
        };
        let id = source.connection_id.clone();
        if let Some(every) = refresh_every {
            // Spread over the cadence by creation order, so the fleet's
            // refreshes do not all land at once.
            let slot = (world.next_stream * 7_919) % 1_000;
            let offset = span(every.mul_f64(slot as f64 / 1_000.0));
            world.schedule(
                stamp + offset.max(chrono::Duration::seconds(1)),
                Task::Refresh(id.clone()),
            );
        }
        if let (Some(wait), Origin::Spec(_)) = (pending, &origin) {
            world.schedule(stamp + span(wait), Task::FirstSync(id.clone()));
        }
        let token = random_token("emu_");
        world.tokens.insert(
            token.clone(),
            TokenInfo {
                connection_id: id.clone(),
                token_id: uuid::Uuid::new_v4().to_string(),
            },
        );
        world.order.push(id.clone());
        world.connections.insert(id, connection);
        Created {
            connection_id: source.connection_id,
            company_id: source.company_id,
            account_id: source.account_id,
            entity_ids,
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
                self.build_connection(&mut world, &spec, Origin::Seeded)
            })
            .collect()
    }

    /// `POST /sandbox/connections`: a new connection, announced with `account.updated`.
    pub fn create_connection(&self, spec: &NewConnection) -> Created {
        let (created, event) = {
            let mut world = self.world();
            let created = self.build_connection(&mut world, spec, Origin::Sandbox);
            let event = world.connections[&created.connection_id].account_updated();
            (created, event)
        };
        self.dispatcher.emit(vec![event]);
        created
    }

    /// A connection made from a spec: its own calendar, cadence and entities.
    pub fn add_connection(&self, spec: &ConnectionSpec) -> Created {
        let assisted = spec.kind == ConnectionKind::Assisted;
        let new = NewConnection {
            provider_id: spec
                .provider_id
                .clone()
                .unwrap_or_else(|| if assisted { "paychex_flex" } else { "gusto" }.to_owned()),
            authentication_type: if assisted { "assisted" } else { "credential" }.to_owned(),
            employee_size: spec.employees,
            products: default_products(),
        };
        let (created, event) = {
            let mut world = self.world();
            let created = self.build_connection(&mut world, &new, Origin::Spec(spec));
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
                    let stamp = self.clock.now();
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
}
