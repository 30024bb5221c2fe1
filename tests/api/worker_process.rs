//! The real worker process stopped in the middle of its work: SIGKILL while
//! a batch request is in flight loses nothing and applies nothing twice once
//! a replacement runs; SIGTERM while a request is in flight lets it finish,
//! acknowledges its messages and hands every other message back.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use finch_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use finch_webhooks::queue::{SYNCED_EXCHANGE, WORK_QUEUE};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::admin_listener::free_port;
use crate::helpers::*;
use crate::worker::{worker_settings, TOKEN_KEY};

/// The worker binary against this environment and emulator; killed if dropped.
fn spawn_worker(env: &TestEnv, emulator: &RunningEmulator) -> tokio::process::Child {
    binary(env)
        .arg("worker")
        .env("FINCH_TOKEN_KEY", TOKEN_KEY)
        .env("FINCH_API_BASE_URL", emulator.base_url())
        .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WORKER_RETRY_DELAYS", "1s")
        .env("COALESCE_WINDOW_MS", "100")
        .env("SHUTDOWN_TIMEOUT_SECS", "15")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker binary starts")
}

/// Registers every seeded connection, as `connections add` would.
async fn register(env: &TestEnv, emulator: &RunningEmulator, pool: &PgPool) {
    let config = worker_settings(env, emulator.base_url(), &[])
        .worker()
        .unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    for seeded in emulator.connections() {
        let token = secrecy::SecretString::from(seeded.access_token.clone());
        finch_webhooks::ops::connections::add(pool, &config.token_keys, &finch, &token)
            .await
            .expect("connection registers");
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn message_ids(messages: &[lapin::message::BasicGetMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .filter_map(|m| m.delivery.properties.message_id().clone())
        .map(|id| id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 10,
        // Long enough to kill the worker while its batch request is out.
        latency: Duration::from_secs(3),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    register(&env, &emulator, &ingress.pool).await;
    let seeded = &emulator.connections()[0];
    let directory: Value = reqwest::Client::new()
        .get(format!("{}/employer/directory", emulator.base_url()))
        .header("Finch-API-Version", "2020-09-17")
        .bearer_auth(&seeded.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let individuals: BTreeSet<String> = directory["individuals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|individual| individual["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(individuals.len(), 10);

    // Every notification the copy announces, to count what was applied.
    let notifications = unique("fw_test_synced");
    let channel = amqp.create_channel().await.unwrap();
    channel
        .queue_declare(
            notifications.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            notifications.as_str().into(),
            SYNCED_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    for individual_id in &individuals {
        let body = json!({
            "connection_id": seeded.connection_id,
            "event_type": "individual.updated",
            "data": { "individual_id": individual_id },
        })
        .to_string();
        let response = ingress.deliver(&unique("evt_kill"), &body).await;
        assert_eq!(response.status(), 200);
    }
    eventually(Duration::from_secs(10), "all events queued", || async {
        queue_len(&amqp, WORK_QUEUE).await == 10
    })
    .await;

    let mut doomed = spawn_worker(&env, &emulator);
    eventually(
        Duration::from_secs(30),
        "the worker's batch request is in flight",
        || async { emulator.stats().in_flight >= 1 },
    )
    .await;
    doomed.start_kill().expect("SIGKILL is sent");
    let killed = doomed.wait().await.unwrap();
    assert_eq!(killed.signal(), Some(9), "the worker died of SIGKILL");
    let pool = &ingress.pool;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
        )
        .await,
        0,
        "killed before any event was done"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM finch_individuals").await,
        0,
        "killed before the batch was applied"
    );

    let mut replacement = spawn_worker(&env, &emulator);
    eventually(
        Duration::from_secs(60),
        "the replacement processes every event",
        || async {
            count(
                pool,
                "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL",
            )
            .await
                == 10
        },
    )
    .await;
    let stored: BTreeSet<String> =
        sqlx::query_scalar("SELECT individual_id FROM finch_individuals WHERE connection_id = $1")
            .bind(&seeded.connection_id)
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(stored, individuals, "nothing lost");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM webhook_events WHERE attempts > 1 OR dead_lettered_at IS NOT NULL"
        )
        .await,
        0,
        "a redelivery after a crash is a fresh attempt, not a failure"
    );
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0);

    // Each individual announced once: applied once, by the replacement.
    let mut announced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while announced.len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "notifications of all ten: {announced:?}"
        );
        for message in take_all(&amqp, &notifications).await {
            let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
            if body["resource"] != "individual" {
                continue;
            }
            for id in body["ids"].as_array().unwrap() {
                announced
                    .entry(id["individual_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(body["change"].as_str().unwrap().to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late: Vec<String> = take_all(&amqp, &notifications)
        .await
        .iter()
        .map(|message| String::from_utf8_lossy(&message.delivery.data).into_owned())
        .collect();
    assert!(late.is_empty(), "late notifications: {late:?}");
    for (individual_id, changes) in &announced {
        assert_eq!(changes, &["created"], "{individual_id}");
    }
    replacement.start_kill().ok();
    replacement.wait().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lands_while_a_request_is_in_flight_which_finishes_and_is_acknowledged() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 4,
        employees: 5,
        // Requests stay in flight long enough for SIGTERM to land during one.
        latency: Duration::from_secs(3),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    register(&env, &emulator, &ingress.pool).await;

    let mut event_ids = Vec::new();
    for round in 0..50 {
        for seeded in emulator.connections() {
            let event_id = format!("msg_wterm_{round}_{}", &seeded.connection_id[..8]);
            let event_type = ["company.updated", "directory.updated"][round % 2];
            let response = ingress
                .deliver(&event_id, &event_body(event_type, &seeded.connection_id))
                .await;
            assert_eq!(response.status(), 200);
            event_ids.push(event_id);
        }
    }
    eventually(Duration::from_secs(10), "all events published", || async {
        queue_len(&amqp, WORK_QUEUE).await as usize == event_ids.len()
    })
    .await;

    let worker = spawn_worker(&env, &emulator);
    eventually(
        Duration::from_secs(30),
        "a Finch request is in flight",
        || async { emulator.stats().in_flight >= 1 },
    )
    .await;
    let pool = &ingress.pool;
    let signalled_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .unwrap();
    let done_before = count(
        pool,
        "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL",
    )
    .await;
    let in_flight_at_signal = emulator.stats().in_flight;
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert_eq!(done_before, 0, "SIGTERM came before any event was done");
    assert!(in_flight_at_signal >= 1, "and while a request was out");

    let exited = worker.wait_with_output().await.unwrap();
    assert!(
        exited.status.success(),
        "worker exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&exited.stderr)
    );
    assert_eq!(
        emulator.stats().in_flight,
        0,
        "no request abandoned at exit"
    );

    let processed: BTreeSet<String> = sqlx::query_scalar(
        "SELECT event_id FROM webhook_events WHERE processed_at IS NOT NULL AND processed_at >= $1",
    )
    .bind(signalled_at)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        !processed.is_empty(),
        "the request in flight at SIGTERM was finished and its events done"
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
        )
        .await as usize,
        processed.len(),
        "everything done was done after the signal"
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM webhook_events WHERE dead_lettered_at IS NOT NULL"
        )
        .await,
        0,
        "stopping is not a failure"
    );
    let requeued = message_ids(&take_all(&amqp, WORK_QUEUE).await);
    let acknowledged: Vec<_> = processed.difference(&requeued).collect();
    assert!(
        !acknowledged.is_empty(),
        "work finished during the drain was acknowledged before exit, not handed back"
    );
    let lost: Vec<&String> = event_ids
        .iter()
        .filter(|id| !processed.contains(*id) && !requeued.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "neither done nor back on the queue: {lost:?}"
    );
}
