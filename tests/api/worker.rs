//! The worker against real Postgres and RabbitMQ: dead-lettering, the
//! dead-letter contract, the shared rate budget and the write rules of the
//! data copy.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use finch_webhooks::config::Settings;
use finch_webhooks::finch::Product;
use finch_webhooks::queue::{DEAD_LETTER_QUEUE, WORK_QUEUE};
use finch_webhooks::store::budget::{Grant, RateBudget};
use finch_webhooks::store::finch_data::{
    self, ChangeKind, Changes, Entity, Freshness, Item, Scope,
};
use finch_webhooks::worker::Application;
use lapin::types::AMQPValue;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{event_body, eventually, queue_len, take_all, unique, TestEnv, TestIngress};

/// A connection read as a whole, as every single-entity one is.
const WHOLE: Entity<'static> = Entity {
    stamp: "",
    only: None,
};

pub const TOKEN_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A worker running in this process.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn worker_settings(env: &TestEnv, finch_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut all = vec![
        ("finch_token_key", TOKEN_KEY),
        ("finch_api_base_url", finch_url),
        ("worker_listen_addr", "127.0.0.1:0"),
        ("coalesce_window_ms", "300"),
        ("worker_retry_delays", "1s"),
    ];
    all.extend_from_slice(overrides);
    env.settings(&all)
}

impl TestWorker {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings.worker().expect("valid worker config"))
            .await
            .expect("worker starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            stopped.await.ok();
        }));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("worker task")
                .expect("worker stops cleanly");
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

pub fn header<'a>(
    message: &'a lapin::message::BasicGetMessage,
    key: &str,
) -> Option<&'a AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(key))
}

pub fn header_text(message: &lapin::message::BasicGetMessage, key: &str) -> Option<String> {
    match header(message, key)? {
        AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        _ => None,
    }
}

pub async fn event_state(pool: &PgPool, event_id: &str) -> (bool, Option<String>, i32) {
    let (processed, reason, attempts): (bool, Option<String>, i32) = sqlx::query_as(
        "SELECT processed_at IS NOT NULL, dead_letter_reason, attempts FROM webhook_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await
    .unwrap();
    (processed, reason, attempts)
}

#[tokio::test]
async fn an_event_for_an_unknown_connection_is_dead_lettered_with_the_contract_headers() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let worker = TestWorker::start(worker_settings(&env, "http://127.0.0.1:9", &[])).await;
    let event_id = unique("evt");
    let response = ingress
        .deliver(&event_id, &event_body("individual.updated", "conn_nobody"))
        .await;
    assert!(response.status().is_success());
    eventually(
        Duration::from_secs(20),
        "the event is dead-lettered",
        || async { queue_len(&amqp, DEAD_LETTER_QUEUE).await == 1 },
    )
    .await;
    let messages = take_all(&amqp, DEAD_LETTER_QUEUE).await;
    let message = &messages[0];
    let properties = &message.delivery.properties;
    assert_eq!(message.delivery.routing_key.as_str(), "unknown_connection");
    assert_eq!(properties.message_id().as_ref().unwrap().as_str(), event_id);
    assert_eq!(
        properties.kind().as_ref().unwrap().as_str(),
        "individual.updated"
    );
    assert!(properties.timestamp().is_some());
    assert_eq!(
        header_text(message, "dead_letter_reason").as_deref(),
        Some("unknown_connection")
    );
    assert_eq!(
        header_text(message, "connection_id").as_deref(),
        Some("conn_nobody")
    );
    assert!(header_text(message, "dead_lettered_at").is_some());
    assert!(header_text(message, "last_error").is_some());
    assert!(matches!(
        header(message, "attempts"),
        Some(AMQPValue::LongLongInt(1))
    ));
    assert!(matches!(
        header(message, "replay_count"),
        Some(AMQPValue::LongLongInt(0))
    ));
    match header(message, "error_history") {
        Some(AMQPValue::FieldArray(history)) => assert_eq!(history.as_slice().len(), 1),
        other => panic!("error_history: {other:?}"),
    }
    assert_eq!(
        message.delivery.data,
        event_body("individual.updated", "conn_nobody").as_bytes()
    );
    // The worker records the dead letter once the broker confirmed it.
    eventually(
        Duration::from_secs(10),
        "the dead letter is recorded",
        || async { event_state(&ingress.pool, &event_id).await.1.is_some() },
    )
    .await;
    let (processed, reason, attempts) = event_state(&ingress.pool, &event_id).await;
    assert!(!processed);
    assert_eq!(reason.as_deref(), Some("unknown_connection"));
    assert_eq!(attempts, 1);
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0);
    worker.stop().await;
    ingress.stop().await;
}

/// `/readyz` of a worker: status code and body.
async fn worker_readiness(base: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_worker_is_ready_only_while_consuming_and_serves_its_health_and_metrics() {
    let env = TestEnv::new().await;
    let broker = crate::helpers::rabbitmq_amqp_addr();
    let outage = crate::helpers::Outage::proxy(&broker).await;
    outage.set_up(false);
    let amqp_via_proxy = outage.rewrite(&env.amqp_url, &broker);
    let settings = worker_settings(
        &env,
        "http://127.0.0.1:9",
        &[("amqp_url", amqp_via_proxy.as_str())],
    );
    let app = Application::build(settings.worker().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        stopped.await.ok();
    }));

    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(
        worker_readiness(&base).await,
        (
            503,
            json!({"status": "not_ready", "postgres": "ok", "rabbitmq": "disconnected"})
        )
    );

    outage.set_up(true);
    eventually(
        Duration::from_secs(15),
        "the worker consumes once the broker is back",
        || async { worker_readiness(&base).await.0 == 200 },
    )
    .await;
    assert_eq!(
        worker_readiness(&base).await,
        (
            200,
            json!({"status": "ready", "postgres": "ok", "rabbitmq": "consuming"})
        )
    );
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let metrics = metrics.text().await.unwrap();
    for expected in [
        "# TYPE finch_webhooks_worker_processing_latency_seconds histogram",
        "finch_webhooks_worker_retries_total 0",
        "finch_webhooks_worker_synced_notifications_total 0",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("finch_webhooks_ingress_"),
        "a role shows only its own metrics"
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn test_and_unknown_event_types_are_recorded_and_acknowledged() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let worker = TestWorker::start(worker_settings(&env, "http://127.0.0.1:9", &[])).await;
    let ids = [unique("evt"), unique("evt")];
    ingress
        .deliver(&ids[0], &event_body("test", "conn_x"))
        .await;
    ingress
        .deliver(&ids[1], &event_body("hologram.materialized", "conn_x"))
        .await;
    for id in &ids {
        eventually(
            Duration::from_secs(20),
            "the event is processed",
            || async { event_state(&ingress.pool, id).await.0 },
        )
        .await;
    }
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);
    worker.stop().await;
    ingress.stop().await;
}

fn limits(per_window: u32, window_ms: u64) -> finch_webhooks::config::RateLimits {
    finch_webhooks::config::RateLimits {
        company: per_window,
        directory: per_window,
        individual: per_window,
        employment: per_window,
        payment: per_window,
        pay_statement: per_window,
        window: Duration::from_millis(window_ms),
        margin: Duration::ZERO,
        pause: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn the_rate_budget_is_shared_by_every_holder_and_slides() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let budgets: Vec<Arc<RateBudget>> = (0..3)
        .map(|_| Arc::new(RateBudget::new(pool.clone(), &limits(5, 1500))))
        .collect();
    budgets[0].prepare().await.unwrap();
    let mut tasks = Vec::new();
    for budget in &budgets {
        for _ in 0..4 {
            let budget = budget.clone();
            tasks.push(tokio::spawn(async move {
                budget.try_acquire(Product::Individual).await.unwrap()
            }));
        }
    }
    let mut granted = 0;
    let mut waits = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Grant::Granted => granted += 1,
            Grant::Wait(wait) => waits.push(wait),
        }
    }
    assert_eq!(granted, 5, "exactly the limit, across all holders");
    assert!(waits.iter().all(|w| *w <= Duration::from_millis(1500)));
    // Another product has its own budget.
    assert_eq!(
        budgets[1].try_acquire(Product::Payment).await.unwrap(),
        Grant::Granted
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        budgets[2].try_acquire(Product::Individual).await.unwrap(),
        Grant::Granted
    );
    // A 429 stops the product for everyone.
    budgets[0].pause(Product::Company, None).await.unwrap();
    assert!(matches!(
        budgets[1].try_acquire(Product::Company).await.unwrap(),
        Grant::Wait(wait) if wait > Duration::from_secs(50)
    ));
}

#[tokio::test]
async fn every_product_lands_in_its_table_and_is_announced_under_its_finch_name() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let individual = json!({"individual_id": "i1"});
    let expected: [(Product, &str, &str, &[&str], serde_json::Value); 6] = [
        (Product::Company, "finch_company", "company", &[], json!({})),
        (
            Product::Directory,
            "finch_directory",
            "directory",
            &["i1"],
            individual.clone(),
        ),
        (
            Product::Individual,
            "finch_individuals",
            "individual",
            &["i1"],
            individual.clone(),
        ),
        (
            Product::Employment,
            "finch_employments",
            "employment",
            &["i1"],
            individual,
        ),
        (
            Product::Payment,
            "finch_payments",
            "payment",
            &["p1"],
            json!({"payment_id": "p1"}),
        ),
        (
            Product::PayStatement,
            "finch_pay_statements",
            "pay_statement",
            &["p1", "i1"],
            json!({"payment_id": "p1", "individual_id": "i1"}),
        ),
    ];
    for (product, table, name, key_values, ids) in expected {
        let key_values: Vec<String> = key_values.iter().map(|&id| id.to_owned()).collect();
        let mut tx = pool.begin().await.unwrap();
        let mut changes = Changes::default();
        finch_data::upsert(
            &mut tx,
            product,
            "conn",
            WHOLE,
            &[Item {
                ids: key_values,
                data: json!({"pay_date": "2024-01-05"}),
            }],
            Freshness {
                data_retrieved_at: None,
                fetched_at: Utc::now(),
            },
            &mut changes,
        )
        .await
        .unwrap();
        let notifications = finch_data::queue_notifications(&mut tx, "conn", &changes)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(finch_data::table(product), table);
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE connection_id = 'conn'"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(rows, 1, "{table}");
        assert_eq!(notifications.len(), 1, "{name}");
        assert_eq!(notifications[0].routing_key, format!("{name}.created"));
        assert_eq!(notifications[0].body["resource"], name);
        assert_eq!(notifications[0].body["ids"], json!([ids]));
    }
}

#[tokio::test]
async fn older_responses_never_overwrite_newer_data_and_changes_are_announced_once() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let at = |secs| Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap();
    let write = |data: serde_json::Value, retrieved: i64, fetched: i64| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let mut changes = Changes::default();
            finch_data::upsert(
                &mut tx,
                Product::Individual,
                "conn",
                WHOLE,
                &[Item {
                    ids: vec!["ind".into()],
                    data,
                }],
                Freshness {
                    data_retrieved_at: Some(at(retrieved)),
                    fetched_at: at(fetched),
                },
                &mut changes,
            )
            .await
            .unwrap();
            let notifications = finch_data::queue_notifications(&mut tx, "conn", &changes)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (changes, notifications)
        }
    };
    let (changes, notifications) = write(json!({"v": 1}), 10, 11).await;
    assert_eq!(changes.count(ChangeKind::Created), 1);
    assert_eq!(notifications[0].routing_key, "individual.created");
    assert_eq!(
        notifications[0].body["ids"],
        json!([{"individual_id": "ind"}])
    );
    let (changes, _) = write(json!({"v": 1}), 20, 21).await;
    assert!(changes.is_empty(), "same data is not a change");
    let (changes, _) = write(json!({"v": 0}), 5, 30).await;
    assert!(changes.is_empty(), "an older response is ignored");
    let (changes, notifications) = write(json!({"v": 2}), 40, 41).await;
    assert_eq!(changes.count(ChangeKind::Updated), 1);
    assert_eq!(notifications[0].routing_key, "individual.updated");
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM finch_individuals WHERE connection_id = 'conn'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, json!({"v": 2}));

    let mut tx = pool.begin().await.unwrap();
    let mut changes = Changes::default();
    let fresh = Freshness {
        data_retrieved_at: Some(at(50)),
        fetched_at: at(50),
    };
    let gone = Scope::Exactly(vec![vec!["ind".into()]]);
    finch_data::mark_deleted(
        &mut tx,
        Product::Individual,
        "conn",
        None,
        &gone,
        fresh,
        &mut changes,
    )
    .await
    .unwrap();
    finch_data::mark_deleted(
        &mut tx,
        Product::Individual,
        "conn",
        None,
        &gone,
        fresh,
        &mut changes,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        changes.count(ChangeKind::Deleted),
        1,
        "deleting twice announces once"
    );
}

// ---------------------------------------------------------------------------
// Against the emulator
// ---------------------------------------------------------------------------

use finch_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use finch_webhooks::queue::{OutgoingEvent, Publisher};
use finch_webhooks::store::events::NewEvent;

const VERSION: &str = "2020-09-17";

/// An emulator, a worker pointed at it, and the emulator's connections registered.
struct Scene {
    env: TestEnv,
    emulator: RunningEmulator,
    pool: PgPool,
    amqp: lapin::Connection,
}

impl Scene {
    async fn new(config: EmulatorConfig) -> Self {
        let env = TestEnv::new().await;
        let amqp = env.amqp().await;
        let pool = env.pool().await;
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let scene = Self {
            env,
            emulator,
            pool,
            amqp,
        };
        let settings = scene.settings(&[]);
        let config = settings.worker().unwrap();
        let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
        for seeded in scene.emulator.connections() {
            let token = secrecy::SecretString::from(seeded.access_token.clone());
            finch_webhooks::ops::connections::add(&scene.pool, &config.token_keys, &finch, &token)
                .await
                .expect("connection registers");
        }
        scene
    }

    fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        worker_settings(&self.env, self.emulator.base_url(), overrides)
    }

    fn connection(&self, index: usize) -> (String, String) {
        let seeded = &self.emulator.connections()[index];
        (seeded.connection_id.clone(), seeded.access_token.clone())
    }

    async fn finch(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.emulator.base_url()))
            .header("Finch-API-Version", VERSION)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Publishes events as the ingress would, with their `webhook_events` rows.
    async fn publish(&self, events: &[(&str, &str, serde_json::Value)]) -> Vec<String> {
        let publisher = Publisher::open(&self.amqp).await.unwrap();
        let mut stored = Vec::new();
        let mut outgoing = Vec::new();
        for (event_type, connection_id, data) in events {
            let event_id = unique("evt");
            let body = bytes::Bytes::from(
                json!({"connection_id": connection_id, "event_type": event_type, "data": data})
                    .to_string(),
            );
            stored.push(NewEvent {
                event_id: event_id.clone(),
                event_type: Some((*event_type).to_owned()),
                connection_id: Some((*connection_id).to_owned()),
                finch_timestamp: crate::helpers::now(),
                body: body.clone(),
                dead_letter_reason: None,
                traceparent: None,
            });
            outgoing.push(OutgoingEvent {
                event_id,
                event_type: Some((*event_type).to_owned()),
                connection_id: Some((*connection_id).to_owned()),
                body,
                dead_letter_reason: None,
                traceparent: None,
            });
        }
        finch_webhooks::store::events::insert_batch(&self.pool, &stored)
            .await
            .unwrap();
        for result in publisher.publish_all(&outgoing).await {
            result.unwrap();
        }
        outgoing.into_iter().map(|event| event.event_id).collect()
    }

    async fn all_processed(&self, ids: &[String]) {
        for id in ids {
            eventually(
                Duration::from_secs(60),
                "every event is processed",
                || async { event_state(&self.pool, id).await.0 },
            )
            .await;
        }
    }

    /// Waits until `event_id` is recorded as dead-lettered, then takes the
    /// DLQ, which holds that one message.
    async fn only_dead_letter(&self, event_id: &str) -> lapin::message::BasicGetMessage {
        eventually(
            Duration::from_secs(20),
            "the event is dead-lettered",
            || async { event_state(&self.pool, event_id).await.1.is_some() },
        )
        .await;
        let mut messages = take_all(&self.amqp, DEAD_LETTER_QUEUE).await;
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    fn employer_requests(&self, route: &str) -> u64 {
        self.emulator
            .stats()
            .requests
            .get(route)
            .map_or(0, |statuses| statuses.values().sum())
    }
}

async fn stored(
    pool: &PgPool,
    table: &str,
    connection_id: &str,
) -> std::collections::HashMap<String, serde_json::Value> {
    sqlx::query_as::<_, (String, serde_json::Value)>(&format!(
        "SELECT individual_id, data FROM {table} WHERE connection_id = $1 AND deleted_at IS NULL"
    ))
    .bind(connection_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn a_sandbox_change_flows_from_webhook_to_the_copy_and_is_announced() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 5,
        webhook_urls: vec![ingress.url("/webhooks/finch")],
        webhook_secrets: vec![crate::helpers::SECRET.to_owned()],
        sync_duration: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let amqp = env.amqp().await;
    let channel = amqp.create_channel().await.unwrap();
    let subscriber = unique("subscriber");
    channel
        .queue_declare(
            subscriber.as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            subscriber.as_str().into(),
            "finch.synced".into(),
            "company.*".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let settings = worker_settings(&env, emulator.base_url(), &[]);
    let config = settings.worker().unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    let seeded = &emulator.connections()[0];
    let token = secrecy::SecretString::from(seeded.access_token.clone());
    finch_webhooks::ops::connections::add(&ingress.pool, &config.token_keys, &finch, &token)
        .await
        .unwrap();
    finch_webhooks::ops::connections::resync(
        &ingress.pool,
        &env.amqp_url,
        &config.retry_delays,
        &seeded.connection_id,
    )
    .await
    .unwrap();
    let worker = TestWorker::start(settings).await;
    let pool = ingress.pool.clone();
    eventually(
        Duration::from_secs(30),
        "the full sync fills the copy",
        || async {
            stored(&pool, "finch_employments", &seeded.connection_id)
                .await
                .len()
                == 5
        },
    )
    .await;

    let client = reqwest::Client::new();
    let put = |path: &str, body: serde_json::Value| {
        client
            .request(
                reqwest::Method::PUT,
                format!("{}{path}", emulator.base_url()),
            )
            .header("Finch-API-Version", VERSION)
            .bearer_auth(&seeded.access_token)
            .json(&body)
    };
    put("/sandbox/company", json!({"legal_name": "Renamed Inc"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    emulator.sync(&seeded.connection_id).unwrap();
    eventually(
        Duration::from_secs(30),
        "the new name reaches finch_company",
        || async {
            sqlx::query_scalar::<_, Option<String>>("SELECT data->>'legal_name' FROM finch_company")
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten()
                .as_deref()
                == Some("Renamed Inc")
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "a company.updated notification",
        || async {
            take_all(&amqp, &subscriber)
                .await
                .iter()
                .any(|m| m.delivery.routing_key.as_str() == "company.updated")
        },
    )
    .await;
    // The worker records processed_at after the data and the notification.
    let processed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_events WHERE event_type = 'company.updated' AND processed_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    eventually(
        Duration::from_secs(10),
        "the company.updated event is recorded as processed",
        || async { processed().await >= 1 },
    )
    .await;
    assert!(processed().await >= 1);
    worker.stop().await;
    ingress.stop().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn out_of_order_and_duplicate_events_give_the_same_data_as_finch_serves() {
    let scene = Scene::new(EmulatorConfig {
        connections: 1,
        employees: 6,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = scene.connection(0);
    let directory = scene
        .finch(
            reqwest::Method::GET,
            "/employer/directory",
            &token,
            json!(null),
        )
        .await;
    let ids: Vec<String> = directory["individuals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let worker = TestWorker::start(scene.settings(&[])).await;
    let mut events = Vec::new();
    // Updates before creations, every event twice, and a deletion for someone who exists.
    for id in ids.iter().rev() {
        for event_type in [
            "employment.updated",
            "employment.created",
            "employment.updated",
            "employment.deleted",
        ] {
            events.push((
                event_type,
                connection_id.as_str(),
                json!({"individual_id": id}),
            ));
        }
    }
    let mut twice = events.clone();
    twice.extend(events);
    let published = scene.publish(&twice).await;
    scene.all_processed(&published).await;
    let served = scene
        .finch(reqwest::Method::POST, "/employer/employment", &token, json!({"requests": ids.iter().map(|id| json!({"individual_id": id})).collect::<Vec<_>>()}))
        .await;
    let expected: std::collections::HashMap<String, serde_json::Value> = served["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["individual_id"].as_str().unwrap().to_owned(),
                r["body"].clone(),
            )
        })
        .collect();
    assert_eq!(
        stored(&scene.pool, "finch_employments", &connection_id).await,
        expected
    );
    assert!(
        scene.employer_requests("POST /employer/employment") <= 3,
        "48 events coalesce into a request or two"
    );
    worker.stop().await;
}

#[tokio::test]
async fn pay_statements_still_syncing_answer_202_and_are_retried_until_they_land() {
    let scene = Scene::new(EmulatorConfig {
        connections: 1,
        employees: 3,
        pay_statement_delay: Duration::from_secs(3),
        sync_duration: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = scene.connection(0);
    let created = scene
        .finch(reqwest::Method::POST, "/sandbox/payment", &token, json!({}))
        .await;
    let payment_id = created["payment_id"].as_str().unwrap().to_owned();
    scene.emulator.sync(&connection_id).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = TestWorker::start(scene.settings(&[])).await;
    let ids = scene
        .publish(&[(
            "pay_statement.created",
            &connection_id,
            json!({"payment_id": payment_id}),
        )])
        .await;
    scene.all_processed(&ids).await;
    let (_, _, attempts) = event_state(&scene.pool, &ids[0]).await;
    assert!(
        attempts >= 2,
        "the first attempt met a 202 (attempts {attempts})"
    );
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finch_pay_statements WHERE payment_id = $1")
            .bind(&payment_id)
            .fetch_one(&scene.pool)
            .await
            .unwrap();
    assert_eq!(count, 3);
    worker.stop().await;
}

#[tokio::test]
async fn reauthenticate_user_parks_the_connection_and_dead_letters_without_a_retry_loop() {
    let scene = Scene::new(EmulatorConfig {
        connections: 1,
        employees: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = scene.connection(0);
    scene
        .finch(
            reqwest::Method::PUT,
            "/sandbox/connections/accounts",
            &token,
            json!({"connection_status": "reauth"}),
        )
        .await;
    let worker = TestWorker::start(scene.settings(&[])).await;
    let first = scene
        .publish(&[("company.updated", &connection_id, json!(null))])
        .await;
    let message = scene.only_dead_letter(&first[0]).await;
    assert_eq!(
        header_text(&message, "dead_letter_reason").as_deref(),
        Some("reauthenticate_user")
    );
    assert_eq!(
        header_text(&message, "finch_code").as_deref(),
        Some("reauthenticate_user")
    );
    assert!(matches!(
        header(&message, "http_status"),
        Some(AMQPValue::LongLongInt(401))
    ));
    assert!(header_text(&message, "finch_request_id").is_some());
    let status: String =
        sqlx::query_scalar("SELECT status FROM connections WHERE connection_id = $1")
            .bind(&connection_id)
            .fetch_one(&scene.pool)
            .await
            .unwrap();
    assert_eq!(status, "reauth");
    // Later events for the parked connection cost no request.
    let before = scene.employer_requests("GET /employer/company");
    let later = scene
        .publish(&[("company.updated", &connection_id, json!(null))])
        .await;
    scene.all_processed(&later).await;
    assert_eq!(scene.employer_requests("GET /employer/company"), before);
    worker.stop().await;
}

#[tokio::test]
async fn a_failed_commit_is_dead_lettered_with_the_database_cause_named_once() {
    let scene = Scene::new(EmulatorConfig {
        connections: 1,
        employees: 1,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, _) = scene.connection(0);
    // The table a company commit writes, gone: the commit fails as a query bug would.
    sqlx::query("ALTER TABLE finch_company RENAME TO finch_company_elsewhere")
        .execute(&scene.pool)
        .await
        .unwrap();
    let worker = TestWorker::start(scene.settings(&[("worker_max_attempts", "1")])).await;
    let ids = scene
        .publish(&[("company.updated", &connection_id, json!(null))])
        .await;
    let message = scene.only_dead_letter(&ids[0]).await;
    assert_eq!(
        header_text(&message, "dead_letter_reason").as_deref(),
        Some("retries_exhausted")
    );
    let cause = "relation \"finch_company\" does not exist";
    let last_error = header_text(&message, "last_error").unwrap();
    assert!(
        last_error.starts_with("could not commit: database query failed: "),
        "{last_error}"
    );
    assert_eq!(last_error.matches(cause).count(), 1, "{last_error}");
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM webhook_events WHERE event_id = $1")
            .bind(&ids[0])
            .fetch_one(&scene.pool)
            .await
            .unwrap();
    assert_eq!(recorded.as_deref(), Some(last_error.as_str()));
    worker.stop().await;
}

#[tokio::test]
async fn two_workers_share_one_rate_budget_and_never_see_a_429() {
    // Finch's limit scaled down to 5 individual requests a minute.
    let scene = Scene::new(EmulatorConfig {
        connections: 10,
        employees: 1,
        rate_limit_scale: 0.25,
        ..EmulatorConfig::default()
    })
    .await;
    let limits = [("rate_limit_individual", "5")];
    let mut events = Vec::new();
    for index in 0..10 {
        let (connection_id, _) = scene.connection(index);
        // Any id will do: the request is what is counted (an unknown one is a 404 item).
        let id = uuid::Uuid::new_v4().to_string();
        events.push((
            "individual.updated",
            connection_id,
            json!({"individual_id": id}),
        ));
    }
    let a = TestWorker::start(scene.settings(&limits)).await;
    let b = TestWorker::start(scene.settings(&limits)).await;
    let events: Vec<_> = events
        .iter()
        .map(|(t, c, d)| (*t, c.as_str(), d.clone()))
        .collect();
    scene.publish(&events).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = scene.employer_requests("POST /employer/individual");
    assert_eq!(sent, 5, "the two workers together spend exactly the budget");
    assert_eq!(scene.emulator.stats().rate_limited, 0);
    a.stop().await;
    b.stop().await;
}

async fn count(pool: &PgPool, sql: &str, connection_id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(connection_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_event_type_does_what_the_table_says() {
    let scene = Scene::new(EmulatorConfig {
        connections: 1,
        employees: 3,
        pay_statement_delay: Duration::ZERO,
        sync_duration: Duration::from_millis(50),
        history_start: (Utc::now() - chrono::Duration::days(40)).date_naive(),
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = scene.connection(0);
    let conn = connection_id.as_str();
    let worker = TestWorker::start(scene.settings(&[])).await;

    // account.updated (connected): status from /introspect, then a full sync.
    let ids = scene
        .publish(&[("account.updated", conn, json!({"status": "connected"}))])
        .await;
    scene.all_processed(&ids).await;
    let pool = &scene.pool;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_company WHERE connection_id = $1",
            conn
        )
        .await,
        1
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_directory WHERE connection_id = $1",
            conn
        )
        .await,
        3
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_individuals WHERE connection_id = $1",
            conn
        )
        .await,
        3
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_employments WHERE connection_id = $1",
            conn
        )
        .await,
        3
    );
    let payments = count(
        pool,
        "SELECT count(*) FROM finch_payments WHERE connection_id = $1",
        conn,
    )
    .await;
    assert!(payments >= 1);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_pay_statements WHERE connection_id = $1",
            conn
        )
        .await,
        payments * 3
    );

    // job.data_sync_all.completed: the job is read and recorded, then a full sync.
    let job_id = scene.emulator.sync(conn).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = scene
        .publish(&[(
            "job.data_sync_all.completed",
            conn,
            json!({"job_id": job_id, "job_url": "https://elsewhere.example/jobs/x"}),
        )])
        .await;
    scene.all_processed(&ids).await;
    let status: String = sqlx::query_scalar("SELECT status FROM finch_jobs WHERE job_id = $1")
        .bind(&job_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(status, "complete");

    // payment.* and pay_statement.*: a new payrun.
    let created = scene
        .finch(reqwest::Method::POST, "/sandbox/payment", &token, json!({}))
        .await;
    let payment_id = created["payment_id"].as_str().unwrap().to_owned();
    scene.emulator.sync(conn).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = scene
        .publish(&[
            (
                "payment.created",
                conn,
                json!({"payment_id": payment_id, "pay_date": created["pay_date"]}),
            ),
            (
                "pay_statement.created",
                conn,
                json!({"payment_id": payment_id}),
            ),
        ])
        .await;
    scene.all_processed(&ids).await;
    let stored_payment: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finch_payments WHERE payment_id = $1")
            .bind(&payment_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(stored_payment, 1);

    // company.updated, directory.*: refetched.
    scene
        .finch(
            reqwest::Method::PUT,
            "/sandbox/company",
            &token,
            json!({"legal_name": "Table Row Inc"}),
        )
        .await;
    scene
        .finch(
            reqwest::Method::POST,
            "/sandbox/directory",
            &token,
            json!([{}]),
        )
        .await;
    scene.emulator.sync(conn).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = scene
        .publish(&[
            ("company.updated", conn, json!(null)),
            ("directory.created", conn, json!({"individual_id": "x"})),
        ])
        .await;
    scene.all_processed(&ids).await;
    let name: String = sqlx::query_scalar(
        "SELECT data->>'legal_name' FROM finch_company WHERE connection_id = $1",
    )
    .bind(conn)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(name, "Table Row Inc");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM finch_directory WHERE connection_id = $1",
            conn
        )
        .await,
        4
    );

    // individual.deleted for someone Finch no longer knows: deleted_at set.
    let gone = stored(pool, "finch_individuals", conn)
        .await
        .into_keys()
        .next()
        .unwrap();
    sqlx::query("UPDATE finch_individuals SET individual_id = 'ghost' WHERE individual_id = $1")
        .bind(&gone)
        .execute(pool)
        .await
        .unwrap();
    let ids = scene
        .publish(&[(
            "individual.deleted",
            conn,
            json!({"individual_id": "ghost"}),
        )])
        .await;
    scene.all_processed(&ids).await;
    let deleted: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM finch_individuals WHERE individual_id = 'ghost'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(deleted);

    // job.benefit_*: read from the manual jobs endpoint (the emulator knows no
    // manual jobs, so Finch's 404 dead-letters it as a client error).
    let ids = scene
        .publish(&[(
            "job.benefit_enroll.completed",
            conn,
            json!({"job_id": "b1"}),
        )])
        .await;
    eventually(
        Duration::from_secs(20),
        "the benefit job event is settled",
        || async { event_state(pool, &ids[0]).await.1.is_some() },
    )
    .await;
    assert_eq!(
        event_state(pool, &ids[0]).await.1.as_deref(),
        Some("finch_client_error")
    );
    worker.stop().await;
}
