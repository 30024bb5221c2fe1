//! Fleet freshness against real Postgres, RabbitMQ and the emulator: what a
//! daily Finch sync costs, each failure class's retry horizon, reconciliation
//! sweeps, deletions only after complete passes, and the scheduler shared by
//! worker processes.

use std::time::Duration;

use finch_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use finch_webhooks::config::Settings;
use finch_webhooks::finch::Product;
use finch_webhooks::queue::contract::RESYNC_EVENT_TYPE;
use finch_webhooks::queue::{OutgoingEvent, Publisher, DEAD_LETTER_QUEUE};
use finch_webhooks::store::budget::{Grant, RateBudget};
use finch_webhooks::store::events::NewEvent;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{eventually, queue_len, take_all, unique, TestEnv};
use crate::worker::{event_state, worker_settings, TestWorker};

const VERSION: &str = "2020-09-17";

/// An emulator, its connections registered, and a subscriber on `finch.synced`.
struct Fleet {
    env: TestEnv,
    emulator: RunningEmulator,
    pool: PgPool,
    amqp: lapin::Connection,
    /// A queue bound to every `finch.synced` routing key.
    synced: String,
}

impl Fleet {
    async fn new(config: EmulatorConfig) -> Self {
        let env = TestEnv::new().await;
        let amqp = env.amqp().await;
        let pool = env.pool().await;
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let synced = unique("synced");
        let channel = amqp.create_channel().await.unwrap();
        channel
            .queue_declare(
                synced.as_str().into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                synced.as_str().into(),
                "finch.synced".into(),
                "#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let fleet = Self {
            env,
            emulator,
            pool,
            amqp,
            synced,
        };
        let config = fleet.settings(&[]).worker().unwrap();
        let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
        for seeded in fleet.emulator.connections() {
            let token = secrecy::SecretString::from(seeded.access_token.clone());
            finch_webhooks::ops::connections::add(&fleet.pool, &config.token_keys, &finch, &token)
                .await
                .expect("connection registers");
        }
        fleet
    }

    fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let mut all = vec![("scheduler_tick_ms", "200")];
        all.extend_from_slice(overrides);
        worker_settings(&self.env, self.emulator.base_url(), &all)
    }

    fn connection(&self, index: usize) -> (String, String) {
        let seeded = &self.emulator.connections()[index];
        (seeded.connection_id.clone(), seeded.access_token.clone())
    }

    async fn finch(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
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

    /// Sets the connection's status at the emulator (pending, reauth, ...).
    async fn set_status(&self, token: &str, status: &str) {
        self.finch(
            reqwest::Method::PUT,
            "/sandbox/connections/accounts",
            token,
            json!({ "connection_status": status }),
        )
        .await;
    }

    /// Publishes events as the ingress would, with their `webhook_events` rows.
    async fn publish(&self, events: &[(&str, &str, Value)]) -> Vec<String> {
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

    /// A full sync of the connection, as `connections resync` queues it.
    async fn full_sync(&self, connection_id: &str) -> Vec<String> {
        self.publish(&[(RESYNC_EVENT_TYPE, connection_id, Value::Null)])
            .await
    }

    /// Requests the emulator served, on every `/employer/*` and `/jobs` route.
    fn requests(&self) -> u64 {
        self.emulator
            .stats()
            .requests
            .iter()
            .filter(|(route, _)| route.contains("/employer/") || route.contains("/jobs"))
            .map(|(_, statuses)| statuses.values().sum::<u64>())
            .sum()
    }

    fn requests_to(&self, route: &str) -> u64 {
        self.emulator
            .stats()
            .requests
            .get(route)
            .map_or(0, |statuses| statuses.values().sum())
    }

    /// `finch.synced` messages published so far with this routing key.
    async fn announced(&self, routing_key: &str) -> Vec<Value> {
        take_all(&self.amqp, &self.synced)
            .await
            .into_iter()
            .filter(|m| m.delivery.routing_key.as_str() == routing_key)
            .map(|m| serde_json::from_slice(&m.delivery.data).unwrap())
            .collect()
    }

    async fn parked(&self, connection_id: &str) -> Parked {
        sqlx::query_as(
            "SELECT parked_reason, status, resume_at IS NOT NULL, park_count, last_error
             FROM connections WHERE connection_id = $1",
        )
        .bind(connection_id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn count(&self, sql: &str, connection_id: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(connection_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn people(&self, table: &str, connection_id: &str) -> i64 {
        self.count(
            &format!(
                "SELECT count(*) FROM {table} WHERE connection_id = $1 AND deleted_at IS NULL"
            ),
            connection_id,
        )
        .await
    }
}

/// `(parked_reason, status, has a resume time, park_count, last_error)`.
type Parked = (Option<String>, String, bool, i32, Option<String>);

#[tokio::test]
async fn a_daily_sync_with_no_changes_costs_no_request_and_records_finchs_freshness() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 5,
        sync_duration: Duration::from_millis(50),
        pay_statement_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, _) = fleet.connection(0);
    let worker = TestWorker::start(fleet.settings(&[])).await;
    let first = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&first).await;
    assert_eq!(fleet.people("finch_employments", &connection_id).await, 5);
    let before = fleet.requests();

    let job_id = fleet.emulator.sync(&connection_id).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = fleet
        .publish(&[(
            "job.data_sync_all.completed",
            &connection_id,
            json!({"job_id": job_id, "job_url": "https://elsewhere.example/jobs/x"}),
        )])
        .await;
    fleet.all_processed(&ids).await;
    assert_eq!(
        fleet.requests() - before,
        0,
        "Finch's daily sync announces its changes itself: nothing is reread"
    );
    let (status, synced): (String, bool) = sqlx::query_as(
        "SELECT j.status, c.finch_synced_at IS NOT NULL FROM finch_jobs j
         JOIN connections c USING (connection_id) WHERE j.job_id = $1",
    )
    .bind(&job_id)
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), synced), ("complete", true));
    worker.stop().await;
}

#[tokio::test]
async fn a_first_sync_still_pending_parks_the_connection_for_its_horizon_and_never_reaches_the_dlq()
{
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 3,
        sync_duration: Duration::from_millis(50),
        pay_statement_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = fleet.connection(0);
    fleet.set_status(&token, "pending").await;
    // The 14 days of Finch's SLA, compressed: 1 s backoff, 3 s horizon.
    let settings = fleet.settings(&[
        ("pending_backoff", "1s"),
        ("park_backoff_max", "1s"),
        ("pending_horizon", "3s"),
    ]);
    let worker = TestWorker::start(settings).await;
    let ids = fleet
        .publish(&[("company.updated", &connection_id, Value::Null)])
        .await;
    fleet.all_processed(&ids).await;
    let (reason, _, resumes, count, _) = fleet.parked(&connection_id).await;
    assert_eq!(reason.as_deref(), Some("pending"));
    assert!(resumes, "a pending first sync is tried again by itself");
    assert_eq!(count, 1);
    let (_, _, attempts) = event_state(&fleet.pool, &ids[0]).await;
    assert_eq!(
        attempts, 1,
        "acknowledged at once, not spun through retry queues"
    );

    // Resumed and parked again with growing counts until the horizon ends the series.
    eventually(
        Duration::from_secs(30),
        "the horizon passes and the connection waits for an operator",
        || async {
            let (reason, _, resumes, count, _) = fleet.parked(&connection_id).await;
            reason.as_deref() == Some("pending") && !resumes && count > 1
        },
    )
    .await;
    let (reason, _, resumes, count, last_error) = fleet.parked(&connection_id).await;
    assert_eq!(reason.as_deref(), Some("pending"));
    assert!(!resumes);
    assert!(
        count >= 2,
        "tried again before the horizon (parks: {count})"
    );
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("connections resync")),
        "{last_error:?}"
    );
    assert_eq!(queue_len(&fleet.amqp, DEAD_LETTER_QUEUE).await, 0);
    let parked = fleet.announced("connection.parked").await;
    assert!(
        parked.len() >= 2,
        "every park is announced ({})",
        parked.len()
    );
    assert_eq!(parked[0]["reason"], "pending");
    assert_eq!(parked[0]["connection_id"], connection_id.as_str());

    // Finch finishes; an operator's resync lifts the park and reads everything.
    fleet.set_status(&token, "connected").await;
    let resync = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&resync).await;
    eventually(Duration::from_secs(30), "the copy fills", || async {
        fleet.people("finch_employments", &connection_id).await == 3
    })
    .await;
    assert_eq!(fleet.parked(&connection_id).await.0, None);
    let resumed = fleet.announced("connection.resumed").await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["previous_reason"], "pending");
    worker.stop().await;
}

#[tokio::test]
async fn account_setup_and_permission_errors_park_the_connection_as_reauth_does() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 2,
        employees: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let (setup, setup_token) = fleet.connection(0);
    let (permissions, permissions_token) = fleet.connection(1);
    fleet
        .set_status(&setup_token, "error_no_account_setup")
        .await;
    fleet
        .set_status(&permissions_token, "error_permissions")
        .await;
    let worker = TestWorker::start(fleet.settings(&[])).await;
    let ids = fleet
        .publish(&[
            ("company.updated", &setup, Value::Null),
            ("company.updated", &permissions, Value::Null),
        ])
        .await;
    fleet.all_processed(&ids).await;
    let (reason, status, resumes, _, _) = fleet.parked(&setup).await;
    assert_eq!(
        (reason.as_deref(), status.as_str(), resumes),
        (
            Some("account_setup_required"),
            "error_no_account_setup",
            false
        )
    );
    let (reason, status, resumes, _, _) = fleet.parked(&permissions).await;
    assert_eq!(
        (reason.as_deref(), status.as_str(), resumes),
        (
            Some("insufficient_account_permissions"),
            "error_permissions",
            false
        )
    );
    // Later events cost nothing while parked.
    let before = fleet.requests_to("GET /employer/company");
    let later = fleet
        .publish(&[("company.updated", &setup, Value::Null)])
        .await;
    fleet.all_processed(&later).await;
    assert_eq!(fleet.requests_to("GET /employer/company"), before);
    assert_eq!(queue_len(&fleet.amqp, DEAD_LETTER_QUEUE).await, 0);

    // The employer fixes it: account.updated resumes and reads everything.
    fleet.set_status(&setup_token, "connected").await;
    let ids = fleet
        .publish(&[("account.updated", &setup, json!({"status": "connected"}))])
        .await;
    fleet.all_processed(&ids).await;
    assert_eq!(fleet.parked(&setup).await.0, None);
    assert_eq!(fleet.people("finch_employments", &setup).await, 2);
    worker.stop().await;
}

#[tokio::test]
async fn server_errors_retry_briefly_then_park_the_connection_with_a_backoff() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 2,
        error_rate: 1.0,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, _) = fleet.connection(0);
    let worker = TestWorker::start(fleet.settings(&[
        ("server_error_retries", "2"),
        ("server_error_backoff", "1h"),
    ]))
    .await;
    let ids = fleet
        .publish(&[("company.updated", &connection_id, Value::Null)])
        .await;
    fleet.all_processed(&ids).await;
    let (_, _, attempts) = event_state(&fleet.pool, &ids[0]).await;
    assert_eq!(attempts, 2, "one retry-queue attempt, then the park");
    let (reason, _, resumes, count, last_error) = fleet.parked(&connection_id).await;
    assert_eq!(
        (reason.as_deref(), resumes, count),
        (Some("server_error"), true, 1)
    );
    assert!(last_error.is_some_and(|e| e.contains("500")));
    let resume_in: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM resume_at - now())::float8 FROM connections WHERE connection_id = $1",
    )
    .bind(&connection_id)
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert!(
        (3000.0..=3600.0).contains(&resume_in),
        "backs off for hours, not seconds ({resume_in} s)"
    );
    assert_eq!(queue_len(&fleet.amqp, DEAD_LETTER_QUEUE).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn an_application_rate_limit_pauses_its_product_and_the_work_waits_without_retry_queues() {
    // Finch lets 2 individual requests a minute through; the worker believes in 20.
    let fleet = Fleet::new(EmulatorConfig {
        connections: 4,
        employees: 1,
        rate_limit_scale: 0.1,
        ..EmulatorConfig::default()
    })
    .await;
    let worker = TestWorker::start(fleet.settings(&[
        ("rate_limit_individual", "20"),
        ("rate_limit_pause_secs", "2"),
        ("rate_limit_window_ms", "1000"),
    ]))
    .await;
    let mut events = Vec::new();
    for index in 0..4 {
        let (connection_id, _) = fleet.connection(index);
        events.push((
            "individual.updated",
            connection_id,
            json!({"individual_id": uuid::Uuid::new_v4().to_string()}),
        ));
    }
    let events: Vec<_> = events
        .iter()
        .map(|(t, c, d)| (*t, c.as_str(), d.clone()))
        .collect();
    let ids = fleet.publish(&events).await;
    eventually(Duration::from_secs(20), "Finch refuses one", || async {
        fleet.emulator.stats().rate_limited >= 1
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the product is paused for every worker",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT blocked_until IS NOT NULL FROM finch_rate_limits WHERE product = 'individual'",
            )
            .fetch_one(&fleet.pool)
            .await
            .unwrap()
        },
    )
    .await;
    let other: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM finch_rate_limits WHERE product <> 'individual' AND blocked_until IS NOT NULL",
    )
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(other, 0, "other products go on");
    // The emulator's window is a minute: the last ones land once it slides.
    for id in &ids {
        eventually(
            Duration::from_secs(150),
            "every event is processed",
            || async { event_state(&fleet.pool, id).await.0 },
        )
        .await;
        let (_, _, attempts) = event_state(&fleet.pool, id).await;
        assert_eq!(attempts, 1, "a 429 costs no retry-queue attempt");
    }
    assert_eq!(queue_len(&fleet.amqp, DEAD_LETTER_QUEUE).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn sweeps_take_only_the_budget_the_reserve_leaves_and_events_take_the_rest() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let budget = RateBudget::new(
        pool.clone(),
        &finch_webhooks::config::RateLimits {
            company: 4,
            directory: 4,
            individual: 4,
            employment: 4,
            payment: 4,
            pay_statement: 4,
            window: Duration::from_secs(60),
            margin: Duration::ZERO,
            pause: Duration::from_secs(1),
        },
    );
    budget.prepare().await.unwrap();
    let mut sweep_grants = 0;
    for _ in 0..4 {
        if budget
            .try_acquire_below(Product::Company, 0.5)
            .await
            .unwrap()
            == Grant::Granted
        {
            sweep_grants += 1;
        }
    }
    assert_eq!(sweep_grants, 2, "sweeps stop at half the window");
    let mut event_grants = 0;
    for _ in 0..4 {
        if budget.try_acquire(Product::Company).await.unwrap() == Grant::Granted {
            event_grants += 1;
        }
    }
    assert_eq!(event_grants, 2, "events still find the reserve");
}

#[tokio::test]
async fn a_lost_webhook_is_repaired_by_the_next_sweep() {
    // The emulator has no webhook target: every change it makes is a lost webhook.
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 3,
        sync_duration: Duration::from_millis(50),
        pay_statement_delay: Duration::ZERO,
        history_start: (chrono::Utc::now() - chrono::Duration::days(100)).date_naive(),
        rate_limit_scale: 0.0,
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, token) = fleet.connection(0);
    // Two payments a request: rereading every payment's statements would
    // show. The budget is ample, so the sweep need not wait for the reserve.
    let batch = ("pay_statement_batch_max", "2");
    let ample = ("rate_limit_pay_statement", "1000");
    let worker = TestWorker::start(fleet.settings(&[batch, ample])).await;
    let first = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&first).await;
    let payments_before = fleet.people("finch_payments", &connection_id).await;
    let statements_before = fleet.people("finch_pay_statements", &connection_id).await;
    worker.stop().await;

    // A hire and a payrun at the provider, never announced.
    fleet
        .finch(
            reqwest::Method::POST,
            "/sandbox/directory",
            &token,
            json!([{}]),
        )
        .await;
    let created = fleet
        .finch(reqwest::Method::POST, "/sandbox/payment", &token, json!({}))
        .await;
    let payment_id = created["payment_id"].as_str().unwrap().to_owned();
    fleet.emulator.sync(&connection_id).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = fleet
        .finch(
            reqwest::Method::POST,
            "/employer/pay-statement",
            &token,
            json!({"requests": [{"payment_id": payment_id}]}),
        )
        .await;
    let paid = served["responses"][0]["body"]["pay_statements"]
        .as_array()
        .map_or(0, Vec::len) as i64;
    assert!(paid > 0);
    let statements_before_sweep = fleet.requests_to("POST /employer/pay-statement");

    // A worker whose cadence makes the connection due at once.
    sqlx::query("UPDATE connections SET next_sweep_at = now()")
        .execute(&fleet.pool)
        .await
        .unwrap();
    let worker = TestWorker::start(fleet.settings(&[("sweep_every", "1h"), batch, ample])).await;
    eventually(
        Duration::from_secs(60),
        "the sweep finds the hire and the payrun",
        || async {
            fleet.people("finch_employments", &connection_id).await == 4
                && fleet.people("finch_payments", &connection_id).await == payments_before + 1
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the payrun's statements are read",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM finch_pay_statements WHERE payment_id = $1",
            )
            .bind(&payment_id)
            .fetch_one(&fleet.pool)
            .await
            .unwrap()
                == paid
        },
    )
    .await;
    assert_eq!(
        fleet.people("finch_pay_statements", &connection_id).await,
        statements_before + paid
    );
    assert_eq!(
        fleet.requests_to("POST /employer/pay-statement") - statements_before_sweep,
        1,
        "only the new payrun's statements are read, not every payment's"
    );
    // The sweep is recorded when its message is acknowledged, just after the commit.
    eventually(
        Duration::from_secs(10),
        "the sweep recorded and the next one a cadence away",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT last_swept_at IS NOT NULL AND next_sweep_at > now() + interval '30 minutes'
                 FROM connections WHERE connection_id = $1",
            )
            .bind(&connection_id)
            .fetch_one(&fleet.pool)
            .await
            .unwrap()
        },
    )
    .await;
    worker.stop().await;
}

/// `finch-webhooks worker` as a process of its own, against this fleet.
fn worker_process(fleet: &Fleet, overrides: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = crate::helpers::binary(&fleet.env);
    command
        .arg("worker")
        .env("FINCH_API_BASE_URL", fleet.emulator.base_url())
        .env("FINCH_TOKEN_KEY", crate::worker::TOKEN_KEY)
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("WORKER_RETRY_DELAYS", "1s")
        .env("COALESCE_WINDOW_MS", "300")
        .env("SCHEDULER_TICK_MS", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (key, value) in overrides {
        command.env(key.to_ascii_uppercase(), value);
    }
    command.spawn().expect("the worker binary starts")
}

/// The pid in the scheduler lease's holder, if any worker holds it.
async fn scheduler_pid(pool: &PgPool) -> Option<u32> {
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT holder FROM worker_leases WHERE name = 'sweep_scheduler' AND expires_at > now()",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    holder?.split('-').nth(1)?.parse().ok()
}

#[tokio::test]
async fn two_worker_processes_share_one_scheduler_and_one_budget_and_hand_over_when_one_dies() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 6,
        employees: 2,
        pay_statement_delay: Duration::ZERO,
        history_start: (chrono::Utc::now() - chrono::Duration::days(20)).date_naive(),
        ..EmulatorConfig::default()
    })
    .await;
    let settings = [("sweep_every", "20s"), ("scheduler_lease_secs", "2")];
    let mut a = worker_process(&fleet, &settings);
    let mut b = worker_process(&fleet, &settings);
    let pids = [a.id().unwrap(), b.id().unwrap()];
    eventually(
        Duration::from_secs(20),
        "one worker holds the scheduler",
        || async { scheduler_pid(&fleet.pool).await.is_some() },
    )
    .await;
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM worker_leases")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(leases, 1);
    let leader = scheduler_pid(&fleet.pool).await.unwrap();
    assert!(pids.contains(&leader));

    // Every connection is swept once, the reads spread over both workers
    // and the one shared budget: Finch never refuses one.
    eventually(
        Duration::from_secs(90),
        "every connection is swept",
        || async {
            sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT connection_id) FROM finch_employments WHERE deleted_at IS NULL",
        )
        .fetch_one(&fleet.pool)
        .await
        .unwrap()
            == 6
        },
    )
    .await;
    // A sweep is recorded once its messages are finalized, just after the commits.
    eventually(
        Duration::from_secs(15),
        "every sweep is recorded as finished",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM connections WHERE last_swept_at IS NOT NULL",
            )
            .fetch_one(&fleet.pool)
            .await
            .unwrap()
                == 6
        },
    )
    .await;
    assert_eq!(
        fleet.requests_to("GET /employer/company"),
        6,
        "each swept once"
    );
    assert_eq!(fleet.emulator.stats().rate_limited, 0);

    // The scheduler's process dies: the other takes the lease over.
    let (dying, surviving) = if pids[0] == leader {
        (&mut a, pids[1])
    } else {
        (&mut b, pids[0])
    };
    dying.kill().await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the other worker takes over",
        || async { scheduler_pid(&fleet.pool).await == Some(surviving) },
    )
    .await;
    a.kill().await.ok();
    b.kill().await.ok();
}

#[tokio::test]
async fn sync_status_shows_each_products_reads_and_the_park_in_the_cli_and_the_admin_api() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 2,
        employees: 2,
        pay_statement_delay: Duration::ZERO,
        history_start: (chrono::Utc::now() - chrono::Duration::days(20)).date_naive(),
        ..EmulatorConfig::default()
    })
    .await;
    let (synced, _) = fleet.connection(0);
    let (parked, parked_token) = fleet.connection(1);
    fleet.set_status(&parked_token, "pending").await;
    let worker = TestWorker::start(fleet.settings(&[])).await;
    let mut ids = fleet.full_sync(&synced).await;
    ids.extend(fleet.full_sync(&parked).await);
    fleet.all_processed(&ids).await;
    worker.stop().await;

    let (ok, stdout, stderr) =
        crate::helpers::run(&fleet.env, &["connections", "show", &synced, "--json"]).await;
    assert!(ok, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["sync_state"], "syncing");
    assert!(status["next_sweep_at"].is_null() || status["next_sweep_at"].is_string());
    let products: Vec<&str> = status["products_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mark| mark["product"].as_str().unwrap())
        .collect();
    assert_eq!(
        products,
        [
            "company",
            "directory",
            "employment",
            "individual",
            "pay-statement",
            "payment"
        ]
    );
    for mark in status["products_status"].as_array().unwrap() {
        assert!(mark["last_success_at"].is_string(), "{mark}");
        assert!(
            mark["data_retrieved_at"].is_string(),
            "Finch-Data-Retrieved: {mark}"
        );
    }
    let payments = &status["products_status"][5];
    assert!(payments["read_through"].is_string(), "{payments}");

    let (ok, stdout, _) = crate::helpers::run(&fleet.env, &["connections", "list"]).await;
    assert!(ok);
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&parked))
        .unwrap();
    assert!(line.contains("parked"), "{line}");
    assert!(line.contains("pending since"), "{line}");

    let token = "an-admin-token-long-enough";
    let ingress = crate::helpers::TestIngress::start(&fleet.env, &[("admin_token", token)]).await;
    let response = reqwest::Client::new()
        .get(ingress.admin_url(&format!("/admin/connections/{parked}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["sync_state"], "parked");
    assert_eq!(status["parked_reason"], "pending");
    assert!(status["parked_at"].is_string());
    assert!(status["resume_at"].is_string());
    assert!(status["last_error"].as_str().unwrap().contains("202"));
    assert!(status.get("access_token").is_none());
    let response = reqwest::Client::new()
        .get(ingress.admin_url("/admin/connections"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let all: Vec<Value> = response.json().await.unwrap();
    assert_eq!(all.len(), 2);
    let missing = reqwest::Client::new()
        .get(ingress.admin_url("/admin/connections/nobody"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    ingress.stop().await;
}

/// Registers a connection the emulator made from a spec.
async fn register(fleet: &Fleet, added: &finch_emulator::AddedConnection) {
    let config = fleet.settings(&[]).worker().unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    let token = secrecy::SecretString::from(added.access_token.clone());
    finch_webhooks::ops::connections::add(&fleet.pool, &config.token_keys, &finch, &token)
        .await
        .expect("connection registers");
}

#[tokio::test]
async fn a_multi_entity_connection_is_read_per_entity_and_every_row_names_its_entity() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 0,
        pay_statement_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    let added = fleet
        .emulator
        .add_connection(finch_emulator::ConnectionSpec {
            entities: 2,
            history_days: 30,
            ..finch_emulator::ConnectionSpec::automated(8)
        })
        .unwrap();
    assert_eq!(added.entity_ids.len(), 2);
    register(&fleet, &added).await;
    let connection_id = added.connection_id.clone();
    let worker = TestWorker::start(fleet.settings(&[])).await;
    let ids = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&ids).await;
    let refused: u64 = fleet
        .emulator
        .stats()
        .requests
        .values()
        .filter_map(|statuses| statuses.get(&400))
        .sum();
    assert_eq!(refused, 0, "every read names one entity");
    let snapshot = fleet.emulator.snapshot(&connection_id).unwrap();
    for entity in &snapshot.entities {
        for (table, expected) in [
            ("finch_directory", entity.directory.len()),
            ("finch_employments", entity.employments.len()),
            ("finch_payments", entity.payments.len()),
            (
                "finch_pay_statements",
                entity.pay_statements.values().map(Vec::len).sum(),
            ),
        ] {
            let stored: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE connection_id = $1 AND entity_id = $2 AND deleted_at IS NULL"
            ))
            .bind(&connection_id)
            .bind(&entity.entity_id)
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
            assert_eq!(stored, expected as i64, "{table} of {}", entity.entity_id);
        }
    }
    let companies: i64 = fleet
        .count(
            "SELECT count(*) FROM finch_company WHERE connection_id = $1",
            &connection_id,
        )
        .await;
    assert_eq!(companies, 2, "one company row per entity");
    let unnamed: i64 = fleet
        .count(
            "SELECT (SELECT count(*) FROM finch_directory WHERE connection_id = $1 AND entity_id = '')
                  + (SELECT count(*) FROM finch_payments WHERE connection_id = $1 AND entity_id = '')",
            &connection_id,
        )
        .await;
    assert_eq!(unnamed, 0);

    // A webhook naming one entity reads that entity only.
    let before = fleet.requests_to("GET /employer/company");
    let ids = fleet
        .publish(&[(
            "company.updated",
            &connection_id,
            json!({"entity_id": added.entity_ids[0]}),
        )])
        .await;
    fleet.all_processed(&ids).await;
    assert_eq!(fleet.requests_to("GET /employer/company") - before, 1);
    worker.stop().await;
}

#[tokio::test]
async fn an_ip_penalty_pauses_every_product_and_an_upstream_limit_only_its_connection() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 2,
        employees: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let (limited, _) = fleet.connection(0);
    let (other, _) = fleet.connection(1);
    let worker = TestWorker::start(fleet.settings(&[])).await;

    // The provider of one connection limits it: only that connection waits.
    fleet.emulator.inject_fault(
        finch_emulator::FaultScope::Connection(limited.clone()),
        finch_emulator::FaultKind::UpstreamRateLimit,
        Duration::from_secs(3),
    );
    let ids = fleet
        .publish(&[
            ("company.updated", &limited, Value::Null),
            ("company.updated", &other, Value::Null),
        ])
        .await;
    fleet.all_processed(&ids[1..]).await;
    let paused: bool = sqlx::query_scalar(
        "SELECT coalesce(paused_until > now(), false) FROM connections WHERE connection_id = $1",
    )
    .bind(&limited)
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert!(paused, "the connection waits out Retry-After");
    let blocked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finch_rate_limits WHERE blocked_until > now()")
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    assert_eq!(blocked, 0, "no product is paused for one provider's limit");
    fleet.all_processed(&ids[..1]).await;
    assert_eq!(
        event_state(&fleet.pool, &ids[0]).await.2,
        1,
        "no retry queue"
    );

    // Finch's IP penalty: every product pauses for Retry-After.
    fleet.emulator.inject_fault(
        finch_emulator::FaultScope::Application,
        finch_emulator::FaultKind::IpRateLimit,
        Duration::from_secs(3),
    );
    let ids = fleet
        .publish(&[("company.updated", &other, Value::Null)])
        .await;
    eventually(
        Duration::from_secs(10),
        "every product is paused",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM finch_rate_limits WHERE blocked_until > now()",
            )
            .fetch_one(&fleet.pool)
            .await
            .unwrap()
                == 6
        },
    )
    .await;
    fleet.all_processed(&ids).await;
    assert_eq!(
        event_state(&fleet.pool, &ids[0]).await.2,
        1,
        "no retry queue"
    );
    assert_eq!(queue_len(&fleet.amqp, DEAD_LETTER_QUEUE).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_reconnect_with_new_ids_leaves_no_old_id_alive_in_any_table() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 3,
        pay_statement_delay: Duration::ZERO,
        history_start: (chrono::Utc::now() - chrono::Duration::days(30)).date_naive(),
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, _) = fleet.connection(0);
    let worker = TestWorker::start(fleet.settings(&[])).await;
    let ids = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&ids).await;
    let old_payments = fleet.people("finch_payments", &connection_id).await;
    assert!(old_payments > 0);

    let token = fleet
        .emulator
        .reconnect_with_new_ids(&connection_id)
        .unwrap();
    let config = fleet.settings(&[]).worker().unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    finch_webhooks::ops::connections::add(
        &fleet.pool,
        &config.token_keys,
        &finch,
        &secrecy::SecretString::from(token),
    )
    .await
    .unwrap();
    let ids = fleet
        .publish(&[(
            "account.updated",
            &connection_id,
            json!({"status": "connected"}),
        )])
        .await;
    fleet.all_processed(&ids).await;

    let snapshot = fleet.emulator.snapshot(&connection_id).unwrap();
    let entity = &snapshot.entities[0];
    for (table, expected) in [
        ("finch_directory", entity.directory.len()),
        ("finch_individuals", entity.individuals.len()),
        ("finch_employments", entity.employments.len()),
        ("finch_payments", entity.payments.len()),
        (
            "finch_pay_statements",
            entity.pay_statements.values().map(Vec::len).sum(),
        ),
    ] {
        assert_eq!(
            fleet.people(table, &connection_id).await,
            expected as i64,
            "live rows of {table}"
        );
    }
    let old_people_deleted = fleet
        .count(
            "SELECT count(*) FROM finch_employments WHERE connection_id = $1 AND deleted_at IS NOT NULL",
            &connection_id,
        )
        .await;
    assert_eq!(
        old_people_deleted, 3,
        "every old id is gone from employment too"
    );
    let old_statements_deleted = fleet
        .count(
            "SELECT count(*) FROM finch_pay_statements WHERE connection_id = $1 AND deleted_at IS NOT NULL",
            &connection_id,
        )
        .await;
    assert_eq!(
        old_statements_deleted,
        old_payments * 3,
        "statements follow their payments"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_directory_that_ends_before_paging_count_deletes_nobody() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 1,
        employees: 5,
        pay_statement_delay: Duration::ZERO,
        history_start: (chrono::Utc::now() - chrono::Duration::days(30)).date_naive(),
        ..EmulatorConfig::default()
    })
    .await;
    let (connection_id, _) = fleet.connection(0);
    // Pages of two, so five people take three pages and an early end has
    // people behind it.
    let worker = TestWorker::start(fleet.settings(&[("directory_page_size", "2")])).await;
    let first = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&first).await;
    for table in ["finch_directory", "finch_individuals", "finch_employments"] {
        assert_eq!(fleet.people(table, &connection_id).await, 5, "{table}");
    }

    fleet.emulator.inject_fault(
        finch_emulator::FaultScope::Connection(connection_id.clone()),
        finch_emulator::FaultKind::DirectoryEndsEarly,
        Duration::from_secs(3600),
    );
    let directory_pages = || {
        fleet
            .emulator
            .stats()
            .requests
            .iter()
            .filter(|(route, _)| route.contains("/employer/directory"))
            .map(|(_, statuses)| statuses.values().sum::<u64>())
            .sum::<u64>()
    };
    let pages_before = directory_pages();
    let short = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&short).await;
    assert_eq!(
        directory_pages() - pages_before,
        2,
        "the pass stops at the first empty page before paging.count"
    );
    for table in ["finch_directory", "finch_individuals", "finch_employments"] {
        assert_eq!(
            fleet.people(table, &connection_id).await,
            5,
            "nobody leaves {table} after an incomplete pass"
        );
        assert_eq!(
            fleet
                .count(
                    &format!(
                        "SELECT count(*) FROM {table} WHERE connection_id = $1 AND deleted_at IS NOT NULL"
                    ),
                    &connection_id,
                )
                .await,
            0,
            "no row of {table} is marked deleted"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_assisted_connection_is_swept_after_each_of_finchs_refreshes_and_only_then() {
    let fleet = Fleet::new(EmulatorConfig {
        connections: 0,
        freeze_clock: true,
        pay_statement_delay: Duration::ZERO,
        sync_duration: Duration::ZERO,
        rate_limit_scale: 0.0,
        ..EmulatorConfig::default()
    })
    .await;
    let added = fleet
        .emulator
        .add_connection(finch_emulator::ConnectionSpec {
            // No payday within the week, so the hire is the refresh's only change.
            pay_frequency: finch_emulator::PayFrequency::Monthly,
            history_days: 30,
            ..finch_emulator::ConnectionSpec::assisted(5)
        })
        .unwrap();
    register(&fleet, &added).await;
    let connection_id = added.connection_id.clone();
    let kind = fleet
        .count(
            "SELECT CASE WHEN kind = 'assisted' THEN 1 ELSE 0 END::bigint FROM connections WHERE connection_id = $1",
            &connection_id,
        )
        .await;
    assert_eq!(kind, 1, "registered as assisted");
    // Checks come on their own cadence, not the weekly sweep's.
    let worker = TestWorker::start(
        fleet.settings(&[("assisted_check_every", "300ms"), ("sweep_every", "7d")]),
    )
    .await;
    let first = fleet.full_sync(&connection_id).await;
    fleet.all_processed(&first).await;

    let last_swept = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_swept_at FROM connections WHERE connection_id = $1",
        )
        .bind(&connection_id)
        .fetch_one(&fleet.pool)
        .await
        .unwrap()
    };
    // The first check finds a refresh no sweep has read yet.
    eventually(Duration::from_secs(30), "the first sweep", || async {
        last_swept().await.is_some()
    })
    .await;
    let swept_once = last_swept().await;
    let introspections = fleet.requests_to("GET /introspect");
    let reads = fleet.requests();
    eventually(
        Duration::from_secs(30),
        "three more checks of Finch's refresh",
        || async { fleet.requests_to("GET /introspect") >= introspections + 3 },
    )
    .await;
    assert_eq!(last_swept().await, swept_once, "no refresh, no sweep");
    assert_eq!(fleet.requests(), reads, "checks read no data");

    // Finch's weekly refresh brings a hire that no webhook announces.
    fleet
        .emulator
        .change_provider(&connection_id, finch_emulator::ProviderChange::Hire)
        .unwrap();
    fleet.emulator.advance(Duration::from_secs(7 * 86_400));
    let refreshed = fleet.emulator.snapshot(&connection_id).unwrap();
    assert_eq!(refreshed.entities[0].directory.len(), 6);
    eventually(
        Duration::from_secs(30),
        "the sweep reads the hire",
        || async { fleet.people("finch_employments", &connection_id).await == 6 },
    )
    .await;
    eventually(Duration::from_secs(10), "the sweep is recorded", || async {
        last_swept().await > swept_once
    })
    .await;
    let read_refresh: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT swept_finch_sync_at FROM connections WHERE connection_id = $1")
            .bind(&connection_id)
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    let served = refreshed.data_retrieved.unwrap();
    assert_eq!(
        read_refresh.map(|at| at.timestamp_millis()),
        Some(served.timestamp_millis()),
        "the sweep is known to have read Finch's latest refresh"
    );
    let swept_twice = last_swept().await;
    let introspections = fleet.requests_to("GET /introspect");
    eventually(
        Duration::from_secs(30),
        "three more checks after the sweep",
        || async { fleet.requests_to("GET /introspect") >= introspections + 3 },
    )
    .await;
    assert_eq!(last_swept().await, swept_twice, "one sweep per refresh");
    worker.stop().await;
}
