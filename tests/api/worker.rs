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
    self, ChangeKind, Changes, Freshness, Item, Resource, Scope,
};
use finch_webhooks::worker::Application;
use lapin::types::AMQPValue;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{event_body, eventually, queue_len, take_all, unique, TestEnv, TestIngress};

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

    /// Stops abruptly, as a crash would: nothing is drained.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
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
    let (processed, reason, attempts) = event_state(&ingress.pool, &event_id).await;
    assert!(!processed);
    assert_eq!(reason.as_deref(), Some("unknown_connection"));
    assert_eq!(attempts, 1);
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0);
    worker.stop().await;
    ingress.stop().await;
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
                Resource::Individual,
                "conn",
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
        Resource::Individual,
        "conn",
        &gone,
        fresh,
        &mut changes,
    )
    .await
    .unwrap();
    finch_data::mark_deleted(
        &mut tx,
        Resource::Individual,
        "conn",
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
