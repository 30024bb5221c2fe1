//! `bench sync`: the worker against the emulator with Finch's real rate
//! limits (multiplied by `--rate-limit-scale` in both, which compresses time
//! without changing how many requests fit in a window). Each scenario gets a
//! fresh database and a fresh emulator; events are published to
//! `finch.events` exactly as the ingress does (with their `webhook_events`
//! rows), so the figures are the worker's own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use finch_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::finch::{FinchClient, Product};
use crate::queue::{OutgoingEvent, Publisher};
use crate::store::budget::RateBudget;
use crate::store::events::{self, NewEvent};
use crate::store::finch_data;
use crate::worker;

const BENCH_TOKEN_KEY: &str = "YmVuY2gtb25seS10b2tlbi1rZXktMzItYnl0ZXMtISE=";

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Scenarios to run, comma-separated (1 payrun, 2 first sync, 3 many connections, 4 = 3 with two workers).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    pub scenarios: Vec<u8>,
    /// Multiplies Finch's published per-minute limits in the emulator and the worker alike.
    #[arg(long, default_value_t = 10.0)]
    pub rate_limit_scale: f64,
    /// Employees in scenarios 1 and 2.
    #[arg(long, default_value_t = 1000)]
    pub employees: usize,
    /// Connections in scenarios 3 and 4.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// individual.updated events per connection in scenarios 3 and 4.
    #[arg(long, default_value_t = 40)]
    pub per_connection: usize,
    /// Give up on a scenario after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

struct Event {
    event_type: &'static str,
    connection_id: String,
    data: Value,
}

pub async fn run(args: SyncArgs, settings: &Settings) -> anyhow::Result<()> {
    for scenario in &args.scenarios {
        let report = match scenario {
            1 => payrun(&args, settings).await?,
            2 => first_sync(&args, settings).await?,
            3 => many_connections(&args, settings, 1).await?,
            4 => many_connections(&args, settings, 2).await?,
            other => anyhow::bail!("no scenario {other}"),
        };
        println!("{report}");
    }
    Ok(())
}

/// A fresh database and emulator, with every emulator connection registered.
struct Stage {
    emulator: RunningEmulator,
    pool: PgPool,
    settings: Settings,
    database_url: String,
    finch: FinchClient,
    budget: RateBudget,
}

async fn stage(
    args: &SyncArgs,
    settings: &Settings,
    connections: usize,
    employees: usize,
) -> anyhow::Result<Stage> {
    let emulator = Emulator::start(EmulatorConfig {
        connections,
        employees,
        rate_limit_scale: args.rate_limit_scale,
        pay_statement_delay: Duration::ZERO,
        sync_duration: Duration::from_millis(50),
        // Fresh ids every run, so nothing left on a shared broker can touch them.
        seed: rand::random(),
        ..EmulatorConfig::default()
    })
    .await?;
    let mut url = url::Url::parse(&settings.database_url()?)?;
    url.set_path(&format!("finch_bench_{}", uuid::Uuid::new_v4().simple()));
    let database_url = url.to_string();
    let scale = |limit: u32| {
        ((f64::from(limit) * args.rate_limit_scale).round().max(1.0) as u32).to_string()
    };
    let overrides: Vec<(String, String)> = vec![
        ("database_url".into(), database_url.clone()),
        ("finch_api_base_url".into(), emulator.base_url().to_owned()),
        ("finch_token_key".into(), BENCH_TOKEN_KEY.into()),
        ("worker_listen_addr".into(), "127.0.0.1:0".into()),
        ("rate_limit_company".into(), scale(20)),
        ("rate_limit_directory".into(), scale(20)),
        ("rate_limit_individual".into(), scale(20)),
        ("rate_limit_employment".into(), scale(20)),
        ("rate_limit_payment".into(), scale(12)),
        ("rate_limit_pay_statement".into(), scale(12)),
        ("amqp_url".into(), settings.amqp_url()?),
    ];
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let settings = Settings::with_overrides(&overrides)?;
    let config = settings.worker()?;
    crate::store::create_database_if_missing(&database_url).await?;
    let pool = crate::store::connect(&database_url, 4).await?;
    crate::store::migrate(&pool).await?;
    let finch = FinchClient::new(&config.finch);
    for seeded in emulator.connections() {
        let token = SecretString::from(seeded.access_token.clone());
        crate::ops::connections::add(&pool, &config.token_keys, &finch, &token).await?;
    }
    let budget = RateBudget::new(pool.clone(), &config.rate_limits);
    budget.prepare().await?;
    Ok(Stage {
        emulator,
        pool,
        settings,
        database_url,
        finch,
        budget,
    })
}

impl Stage {
    /// A setup or verification read, through the shared budget so that it
    /// never causes a 429 of its own.
    async fn paid(&self, product: Product) {
        let stop = CancellationToken::new();
        crate::worker::scheduler::acquire_budget(&self.budget, product, None, &stop).await;
    }

    fn token(&self, index: usize) -> SecretString {
        SecretString::from(self.emulator.connections()[index].access_token.clone())
    }

    async fn directory_ids(&self, index: usize) -> anyhow::Result<Vec<String>> {
        self.paid(Product::Directory).await;
        let page = self
            .finch
            .directory_page(&self.token(index), 10_000, 0)
            .await?;
        Ok(page.body["individuals"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn finish(self) {
        self.emulator.shutdown().await;
        self.pool.close().await;
        let Ok(mut admin_url) = url::Url::parse(&self.database_url) else {
            return;
        };
        let name = admin_url.path().trim_start_matches('/').to_owned();
        // Dropped from another database: one cannot drop the one connected to.
        admin_url.set_path("postgres");
        if let Ok(admin) = crate::store::connect(admin_url.as_str(), 1).await {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&admin)
                .await
                .ok();
            admin.close().await;
        }
    }
}

/// Requests the emulator served on `/employer/*`, by route, and its 429s.
fn employer_requests(emulator: &RunningEmulator) -> (HashMap<String, u64>, u64) {
    let stats = emulator.stats();
    let mut routes = HashMap::new();
    for (route, statuses) in &stats.requests {
        if route.contains("/employer/") {
            routes.insert(route.clone(), statuses.values().sum());
        }
    }
    (routes, stats.rate_limited)
}

struct Outcome {
    elapsed: Duration,
    processed: i64,
    dead_lettered: i64,
    requests: HashMap<String, u64>,
    rate_limited: u64,
    /// Per connection: time from publishing to its last event's commit.
    waits: Vec<Duration>,
}

/// Publishes `events` as the ingress would and runs `workers` workers until
/// every event is processed or dead-lettered.
async fn drive(
    args: &SyncArgs,
    stage: &Stage,
    events: Vec<Event>,
    workers: usize,
) -> anyhow::Result<Outcome> {
    let mut running = Vec::new();
    for _ in 0..workers {
        let app = worker::Application::build(stage.settings.worker()?).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        running.push((stop, task));
    }
    let (requests_before, limited_before) = employer_requests(&stage.emulator);
    let connection = crate::queue::connect(&stage.settings.amqp_url()?).await?;
    crate::queue::declare_topology(&connection, &stage.settings.retry_delays()?).await?;
    let publisher = Publisher::open(&connection).await?;
    let started_at: DateTime<Utc> = Utc::now();
    let started = Instant::now();
    let total = events.len() as i64;
    for chunk in events.chunks(1000) {
        let mut stored = Vec::new();
        let mut outgoing = Vec::new();
        for event in chunk {
            let event_id = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let body = Bytes::from(
                json!({
                    "company_id": "bench",
                    "account_id": "bench",
                    "connection_id": event.connection_id,
                    "event_type": event.event_type,
                    "data": event.data,
                })
                .to_string(),
            );
            stored.push(NewEvent {
                event_id: event_id.clone(),
                event_type: Some(event.event_type.to_owned()),
                connection_id: Some(event.connection_id.clone()),
                finch_timestamp: Utc::now().timestamp(),
                body: body.clone(),
                dead_letter_reason: None,
                traceparent: None,
            });
            outgoing.push(OutgoingEvent {
                event_id,
                event_type: Some(event.event_type.to_owned()),
                connection_id: Some(event.connection_id.clone()),
                body,
                dead_letter_reason: None,
                traceparent: None,
            });
        }
        crate::store::events::insert_batch(&stage.pool, &stored).await?;
        for result in publisher.publish_all(&outgoing).await {
            result?;
        }
    }
    connection.close(200, "published".into()).await.ok();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let (processed, dead_lettered) = loop {
        let tally = events::tally(&stage.pool).await?;
        if tally.processed + tally.dead_lettered >= total || Instant::now() > deadline {
            break (tally.processed, tally.dead_lettered);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last = events::last_processed_at(&stage.pool).await?;
    let elapsed = last.map_or(started.elapsed(), |last| {
        (last - started_at).to_std().unwrap_or_default()
    });
    let waits: Vec<Duration> = events::last_processed_per_connection(&stage.pool, started_at)
        .await?
        .into_iter()
        .map(|secs| Duration::from_secs_f64(secs.max(0.0)))
        .collect();
    for (stop, task) in running {
        stop.cancel();
        task.await??;
    }
    let (requests_after, limited_after) = employer_requests(&stage.emulator);
    let requests = requests_after
        .into_iter()
        .map(|(route, count)| {
            let before = requests_before.get(&route).copied().unwrap_or(0);
            (route, count - before)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    Ok(Outcome {
        elapsed,
        processed,
        dead_lettered,
        requests,
        rate_limited: limited_after - limited_before,
        waits,
    })
}

/// Compares stored rows with what Finch serves now; returns mismatches.
async fn compare(
    pool: &PgPool,
    table: &str,
    connection_id: &str,
    key: &str,
    expected: HashMap<String, Value>,
) -> anyhow::Result<usize> {
    let rows: Vec<(String, Value)> = sqlx::query_as(&format!(
        "SELECT {key}, data FROM {table} WHERE connection_id = $1 AND deleted_at IS NULL"
    ))
    .bind(connection_id)
    .fetch_all(pool)
    .await?;
    let stored: HashMap<String, Value> = rows.into_iter().collect();
    let mut mismatches = 0;
    for (id, value) in &expected {
        if stored.get(id) != Some(value) {
            mismatches += 1;
        }
    }
    mismatches += stored
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .count();
    Ok(mismatches)
}

fn batch_bodies(body: &Value, id_key: &str) -> HashMap<String, Value> {
    body["responses"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|r| r["code"].as_u64().unwrap_or(200) == 200)
                .filter_map(|r| Some((r[id_key].as_str()?.to_owned(), r["body"].clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn render(
    name: &str,
    outcome: &Outcome,
    lower_bound: u64,
    target: &str,
    mismatches: usize,
    total: usize,
) -> String {
    let made: u64 = outcome.requests.values().sum();
    let mut routes: Vec<_> = outcome.requests.iter().collect();
    routes.sort();
    let detail: Vec<String> = routes.iter().map(|(r, c)| format!("{r}={c}")).collect();
    format!(
        "{name}\n  events processed:      {}/{total} ({} dead-lettered)\n  Finch requests made:   {made} ({})\n  lower bound:           {lower_bound} (target {target})\n  429s received:         {}\n  time until copy equal: {:.2}s ({})\n",
        outcome.processed,
        outcome.dead_lettered,
        detail.join(", "),
        outcome.rate_limited,
        outcome.elapsed.as_secs_f64(),
        if mismatches == 0 { "verified row by row".to_owned() } else { format!("{mismatches} rows DIFFER") },
    )
}

async fn payrun(args: &SyncArgs, settings: &Settings) -> anyhow::Result<String> {
    let stage = stage(args, settings, 1, args.employees).await?;
    let connection_id = stage.emulator.connections()[0].connection_id.clone();
    let token = stage.token(0);
    let created: Value = reqwest::Client::new()
        .post(format!("{}/sandbox/payment", stage.emulator.base_url()))
        .header("Finch-API-Version", crate::finch::API_VERSION)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&token))
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let payment_id = created["payment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pay_date = created["pay_date"].clone();
    stage.emulator.sync(&connection_id)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let people = stage.directory_ids(0).await?;
    let mut events = vec![Event {
        event_type: "payment.created",
        connection_id: connection_id.clone(),
        data: json!({ "payment_id": payment_id, "pay_date": pay_date }),
    }];
    events.extend(people.iter().map(|individual| Event {
        event_type: "pay_statement.created",
        connection_id: connection_id.clone(),
        data: json!({ "payment_id": payment_id, "individual_id": individual }),
    }));
    let total = events.len();
    let outcome = drive(args, &stage, events, 1).await?;
    stage.paid(Product::PayStatement).await;
    let statements = stage
        .finch
        .pay_statements(&token, &[(payment_id.clone(), 0)], 10_000)
        .await?;
    let expected: HashMap<String, Value> = statements.body["responses"][0]["body"]
        ["pay_statements"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| Some((s["individual_id"].as_str()?.to_owned(), s.clone())))
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT individual_id, data FROM finch_pay_statements WHERE payment_id = $1 AND deleted_at IS NULL",
    )
    .bind(&payment_id)
    .fetch_all(&stage.pool)
    .await?;
    let stored: HashMap<String, Value> = rows.into_iter().collect();
    let mismatches = expected
        .iter()
        .filter(|(k, v)| stored.get(*k) != Some(v))
        .count()
        + stored.len().saturating_sub(expected.len());
    let report = render(
        &format!(
            "1. payrun: 1 payment.created + {} pay_statement.created",
            people.len()
        ),
        &outcome,
        2,
        "<= 3",
        mismatches,
        total,
    );
    stage.finish().await;
    Ok(report)
}

async fn first_sync(args: &SyncArgs, settings: &Settings) -> anyhow::Result<String> {
    let stage = stage(args, settings, 1, args.employees).await?;
    let connection_id = stage.emulator.connections()[0].connection_id.clone();
    let people = stage.directory_ids(0).await?;
    let mut events = Vec::new();
    for individual in &people {
        for event_type in [
            "directory.created",
            "individual.created",
            "employment.created",
        ] {
            events.push(Event {
                event_type,
                connection_id: connection_id.clone(),
                data: json!({ "individual_id": individual }),
            });
        }
    }
    let total = events.len();
    let outcome = drive(args, &stage, events, 1).await?;
    let token = stage.token(0);
    let mut mismatches = 0;
    stage.paid(Product::Directory).await;
    let directory = stage.finch.directory_page(&token, 10_000, 0).await?;
    let expected: HashMap<String, Value> = directory.body["individuals"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|i| Some((i["id"].as_str()?.to_owned(), i.clone())))
                .collect()
        })
        .unwrap_or_default();
    mismatches += compare(
        &stage.pool,
        finch_data::table(Product::Directory),
        &connection_id,
        "individual_id",
        expected,
    )
    .await?;
    for product in [Product::Individual, Product::Employment] {
        stage.paid(product).await;
        let response = stage
            .finch
            .individuals_batch(product, &token, &people)
            .await?;
        let expected = batch_bodies(&response.body, "individual_id");
        mismatches += compare(
            &stage.pool,
            finch_data::table(product),
            &connection_id,
            "individual_id",
            expected,
        )
        .await?;
    }
    let pages = people
        .len()
        .div_ceil(stage.settings.directory_page_size as usize)
        .max(1) as u64;
    let report = render(
        &format!(
            "2. first sync: directory/individual/employment.created x {}",
            people.len()
        ),
        &outcome,
        2 + pages,
        &format!("<= {} (6 + {pages} directory pages)", 6 + pages),
        mismatches,
        total,
    );
    stage.finish().await;
    Ok(report)
}

async fn many_connections(
    args: &SyncArgs,
    settings: &Settings,
    workers: usize,
) -> anyhow::Result<String> {
    let stage = stage(args, settings, args.connections, args.per_connection).await?;
    let mut people = Vec::new();
    for index in 0..args.connections {
        people.push(stage.directory_ids(index).await?);
    }
    let mut events = Vec::new();
    // Interleaved: one event of each connection in turn.
    for round in 0..args.per_connection {
        for (index, seeded) in stage.emulator.connections().iter().enumerate() {
            if let Some(individual) = people[index].get(round) {
                events.push(Event {
                    event_type: "individual.updated",
                    connection_id: seeded.connection_id.clone(),
                    data: json!({ "individual_id": individual }),
                });
            }
        }
    }
    let total = events.len();
    let outcome = drive(args, &stage, events, workers).await?;
    let mut mismatches = 0;
    for (index, seeded) in stage.emulator.connections().iter().enumerate() {
        stage.paid(Product::Individual).await;
        let response = stage
            .finch
            .individuals_batch(Product::Individual, &stage.token(index), &people[index])
            .await?;
        let expected = batch_bodies(&response.body, "individual_id");
        mismatches += compare(
            &stage.pool,
            finch_data::table(Product::Individual),
            &seeded.connection_id,
            "individual_id",
            expected,
        )
        .await?;
    }
    let mut waits = outcome.waits.clone();
    waits.sort();
    let median = waits.get(waits.len() / 2).copied().unwrap_or_default();
    let max = waits.last().copied().unwrap_or_default();
    let min = waits.first().copied().unwrap_or_default();
    let name = if workers == 1 {
        format!(
            "3. {} connections x {} individual.updated, interleaved",
            args.connections, args.per_connection
        )
    } else {
        format!("4. scenario 3 with {workers} workers sharing the budget")
    };
    let mut report = render(
        &name,
        &outcome,
        args.connections as u64,
        &format!("<= {}", 2 * args.connections),
        mismatches,
        total,
    );
    report.push_str(&format!(
        "  per-connection wait:   min {:.2}s, median {:.2}s, max {:.2}s (max/median {:.2})\n",
        min.as_secs_f64(),
        median.as_secs_f64(),
        max.as_secs_f64(),
        max.as_secs_f64() / median.as_secs_f64().max(0.001)
    ));
    stage.finish().await;
    Ok(report)
}
