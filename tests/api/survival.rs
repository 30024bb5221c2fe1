//! No single event or panic stops the pipeline: the outbox relay is
//! restarted and gives up its lock, a panic while handling one message
//! dead-letters that message and the worker reads on, and a replayed dead
//! letter gets a fresh retry schedule. The panics are injected into the
//! real binaries through FAILPOINTS (development builds only).

use std::process::Stdio;
use std::time::Duration;

use finch_webhooks::config::Settings;
use finch_webhooks::ops::dlq::{self, ReplayOptions};
use finch_webhooks::ops::Selection;
use finch_webhooks::queue::contract::Headers as _;
use finch_webhooks::queue::{OutgoingEvent, Publisher, DEAD_LETTER_QUEUE};
use finch_webhooks::store::connections::{self, NewConnection};
use finch_webhooks::store::events::NewEvent;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::*;
use crate::worker::{event_state, worker_settings, TestWorker, TOKEN_KEY};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Nothing listens here: every Finch request fails at once, retryably.
fn dead_finch_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Advisory locks held right now in the test database.
async fn advisory_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_outbox_relay_is_restarted_releases_its_lock_and_readyz_says_so() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    // Left for the relay: older than the grace, never published.
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, connection_id, finch_timestamp, body, received_at)
         VALUES ('msg_stranded', 'directory.created', 'conn-1', now(), '{}', now() - interval '1 minute')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let port = free_port();
    let admin_port = free_port();
    let _serve = binary(&env)
        .arg("serve")
        .env("FINCH_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("OUTBOX_POLL_INTERVAL_MS", "50")
        .env("FAILPOINTS", "outbox-relay-round=3*panic")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");

    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let mut saw_stopped = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, ready)) = get_json(&client, &readyz).await {
            if ready["outbox_relay"] == "stopped" {
                assert_eq!(status, 503, "not ready while the relay is down: {ready}");
                saw_stopped = true;
            }
            if saw_stopped && status == 200 && ready["outbox_backlog"] == 0 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never recovered (saw it stopped: {saw_stopped})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = client
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("finch_webhooks_ingress_outbox_relay_restarts_total 3"),
        "three panics, three restarts:\n{metrics}"
    );
    let work: Vec<String> = take_all(&amqp, finch_webhooks::queue::WORK_QUEUE)
        .await
        .iter()
        .map(|message| {
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(work, ["msg_stranded"], "the restarted relay published it");
    eventually(
        Duration::from_secs(5),
        "no advisory lock left behind by the panicked rounds",
        || async { advisory_locks(&pool).await == 0 },
    )
    .await;
}

/// Stores a connection the worker holds a token for, without asking Finch.
async fn register_connection(pool: &PgPool, connection_id: &str) {
    let settings = Settings::with_overrides(&[("finch_token_key", TOKEN_KEY)]).unwrap();
    let key = settings.token_keys().unwrap();
    let products: Vec<String> = ["company", "directory", "payment", "pay_statement"]
        .map(String::from)
        .to_vec();
    connections::upsert(
        pool,
        &key,
        &NewConnection {
            connection_id,
            token: &secrecy::SecretString::from("token-of-a-test-connection"),
            provider_id: Some("gusto"),
            products: &products,
            status: "connected",
        },
    )
    .await
    .unwrap();
}

/// Publishes an event as the ingress would, with its `webhook_events` row.
async fn publish_event(
    pool: &PgPool,
    amqp: &lapin::Connection,
    event_type: &str,
    connection_id: &str,
    data: serde_json::Value,
) -> String {
    let event_id = unique("evt");
    let body = bytes::Bytes::from(
        json!({"connection_id": connection_id, "event_type": event_type, "data": data}).to_string(),
    );
    finch_webhooks::store::events::insert_batch(
        pool,
        &[NewEvent {
            event_id: event_id.clone(),
            event_type: Some(event_type.to_owned()),
            connection_id: Some(connection_id.to_owned()),
            finch_timestamp: now(),
            body: body.clone(),
            dead_letter_reason: None,
            traceparent: None,
        }],
    )
    .await
    .unwrap();
    let publisher = Publisher::open(amqp).await.unwrap();
    for result in publisher
        .publish_all(&[OutgoingEvent {
            event_id: event_id.clone(),
            event_type: Some(event_type.to_owned()),
            connection_id: Some(connection_id.to_owned()),
            body,
            dead_letter_reason: None,
            traceparent: None,
        }])
        .await
    {
        result.unwrap();
    }
    publisher.close().await;
    event_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_handling_one_message_dead_letters_it_as_internal_error_and_the_worker_reads_on() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    register_connection(&pool, "conn-panic").await;
    let port = free_port();
    let _worker = binary(&env)
        .arg("worker")
        .env("FINCH_TOKEN_KEY", TOKEN_KEY)
        .env("FINCH_API_BASE_URL", dead_finch_url())
        .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("WORKER_RETRY_DELAYS", "1s")
        .env("FAILPOINTS", "worker-payment-window=panic")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    eventually(Duration::from_secs(30), "the worker consumes", || async {
        get_json(&client, &readyz)
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;

    let payment = publish_event(
        &pool,
        &amqp,
        "payment.created",
        "conn-panic",
        json!({"payment_id": "pay-1", "pay_date": "2024-03-01"}),
    )
    .await;
    let next = publish_event(&pool, &amqp, "test", "conn-panic", json!({})).await;

    eventually(
        Duration::from_secs(20),
        "the payment event is dead-lettered",
        || async { event_state(&pool, &payment).await.1.is_some() },
    )
    .await;
    assert_eq!(
        event_state(&pool, &payment).await.1.as_deref(),
        Some("internal_error")
    );
    eventually(
        Duration::from_secs(20),
        "the next event is processed",
        || async { event_state(&pool, &next).await.0 },
    )
    .await;
    let dead = take_all(&amqp, DEAD_LETTER_QUEUE).await;
    assert_eq!(dead.len(), 1);
    let table = dead[0].delivery.properties.headers().clone().unwrap();
    assert_eq!(
        table.text("dead_letter_reason").as_deref(),
        Some("internal_error")
    );
    assert!(table
        .text("last_error")
        .is_some_and(|error| error.contains("panicked")));
    let (status, ready) = get_json(&client, &readyz).await.unwrap();
    assert_eq!((status, &ready["rabbitmq"]), (200, &json!("consuming")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_date_at_the_end_of_the_calendar_is_handled_without_a_panic() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    register_connection(&pool, "conn-far").await;
    let finch = dead_finch_url();
    let worker = TestWorker::start(worker_settings(
        &env,
        &finch,
        &[("worker_max_attempts", "1")],
    ))
    .await;
    let far = publish_event(
        &pool,
        &amqp,
        "payment.created",
        "conn-far",
        json!({"payment_id": "pay-far", "pay_date": "+262142-12-30"}),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the far payment is settled",
        || async { event_state(&pool, &far).await.1.is_some() },
    )
    .await;
    assert_eq!(
        event_state(&pool, &far).await.1.as_deref(),
        Some("retries_exhausted"),
        "its window reached the Finch request, which failed like any other"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_event_that_exhausted_its_retries_gets_the_full_schedule_again() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    register_connection(&pool, "conn-replay").await;
    let finch = dead_finch_url();
    let settings = worker_settings(
        &env,
        &finch,
        &[
            ("worker_max_attempts", "3"),
            // Past the message's attempts, so 5xx never park the connection first.
            ("server_error_retries", "10"),
            ("worker_retry_delays", "100ms"),
            ("coalesce_window_ms", "50"),
        ],
    );
    let worker = TestWorker::start(settings).await;
    let event_id = publish_event(&pool, &amqp, "company.updated", "conn-replay", json!({})).await;

    let dead_letter_after = |round: &'static str| {
        let (amqp, event_id) = (&amqp, event_id.clone());
        async move {
            eventually(Duration::from_secs(30), round, || async {
                queue_len(amqp, DEAD_LETTER_QUEUE).await == 1
            })
            .await;
            let listing = dlq::list(amqp, &Selection::default()).await.unwrap();
            let letter = listing
                .messages
                .into_iter()
                .find(|letter| letter.event_id.as_deref() == Some(event_id.as_str()))
                .expect("the event is in the DLQ");
            (letter.reason, letter.attempts, letter.replay_count)
        }
    };
    assert_eq!(
        dead_letter_after("exhausted the first time").await,
        ("retries_exhausted".to_owned(), Some(3), 0)
    );

    let report = dlq::replay(
        &amqp,
        Some(&pool),
        &Selection::default(),
        ReplayOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(
        dead_letter_after("exhausted again after the replay").await,
        ("retries_exhausted".to_owned(), Some(3), 1),
        "three attempts again, not one"
    );
    // The lifecycle keeps every attempt with its outcome, and the replay.
    let steps: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT kind, attempt FROM webhook_event_steps WHERE event_id = $1 ORDER BY at, step_id",
    )
    .bind(&event_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let round = [
        ("retrying".to_owned(), Some(1)),
        ("retrying".to_owned(), Some(2)),
        ("dead_lettered".to_owned(), Some(3)),
    ];
    let mut expected = round.to_vec();
    expected.push(("replayed".to_owned(), None));
    expected.extend(round);
    assert_eq!(steps, expected);
    worker.stop().await;
}
